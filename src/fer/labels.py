"""Canonical expression label set and the mapping of dataset class names onto it.

The literature uses subsets of eight names: the six basic expressions, neutral and
contempt. A dataset uses its own subset, and a model's output layer has exactly the
dataset's classes, in canonical order (or the order given in ``data.classes``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

#: The eight canonical names, in the order used for class indices and reports.
CANONICAL: tuple[str, ...] = (
    "anger",
    "contempt",
    "disgust",
    "fear",
    "happiness",
    "sadness",
    "surprise",
    "neutral",
)

#: The seven classes the demo generator draws (6 basic + neutral).
BASIC7: tuple[str, ...] = ("anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral")

#: Spellings found in public datasets' folder and file names.
SYNONYMS: dict[str, str] = {
    "angry": "anger",
    "anger": "anger",
    "an": "anger",
    "contempt": "contempt",
    "contemptuous": "contempt",
    "co": "contempt",
    "disgust": "disgust",
    "disgusted": "disgust",
    "di": "disgust",
    "fear": "fear",
    "fearful": "fear",
    "afraid": "fear",
    "scared": "fear",
    "fe": "fear",
    "happiness": "happiness",
    "happy": "happiness",
    "happy_": "happiness",
    "joy": "happiness",
    "ha": "happiness",
    "sadness": "sadness",
    "sad": "sadness",
    "sa": "sadness",
    "surprise": "surprise",
    "surprised": "surprise",
    "su": "surprise",
    "neutral": "neutral",
    "ne": "neutral",
}


class UnknownLabelError(ValueError):
    """A class name that maps to no canonical expression."""


def canonical_label(name: str, extra: Mapping[str, str] | None = None, where: str = "") -> str:
    """Map a dataset's class name to its canonical name.

    ``extra`` holds user-given synonyms (``data.label_map``) and is checked first; its
    values must themselves be canonical names. ``where`` names the file or folder the
    name came from, for the error message.
    """
    key = name.strip().lower()
    if extra:
        lowered = {k.strip().lower(): v for k, v in extra.items()}
        if key in lowered:
            target = lowered[key]
            if target not in CANONICAL:
                raise UnknownLabelError(
                    f"data.label_map maps {name!r} to {target!r}, which is not one of {list(CANONICAL)}"
                )
            return target
    if key in SYNONYMS:
        return SYNONYMS[key]
    loc = f" (in {where})" if where else ""
    raise UnknownLabelError(
        f"unknown expression label {name!r}{loc}; known names are {list(CANONICAL)} and their "
        f"usual spellings; add a mapping under data.label_map in params.yaml for other names"
    )


def dataset_classes(found: Iterable[str], requested: Iterable[str] = ()) -> list[str]:
    """Return the dataset's ordered class list.

    With ``requested`` empty: the canonical names present in ``found``, in canonical order.
    Otherwise: ``requested`` as given (canonicalised), and every requested class must be
    present (an empty class is an error), and every found class must be requested.
    """
    found_set = set(found)
    req = [canonical_label(r, where="data.classes") for r in requested]
    if not req:
        return [c for c in CANONICAL if c in found_set]
    if len(set(req)) != len(req):
        raise ValueError(f"data.classes lists a class twice: {req}")
    empty = [c for c in req if c not in found_set]
    if empty:
        raise ValueError(f"data.classes names classes with no images in the dataset: {empty}")
    extra = sorted(found_set - set(req))
    if extra:
        raise ValueError(
            f"the dataset has images of classes not listed in data.classes: {extra}; "
            "list them too, or remove those images from the input"
        )
    return req
