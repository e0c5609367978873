"""What params.yaml asks of the dataset, checked before any job runs.

The rows that run are planned from params.yaml (``methods``, ``fer.params.plan_rows``), so
what they need from the data is known as soon as params.yaml and the dataset's list of
images are: the workflow calls
:func:`check_requirements` when Snakemake reads the Snakefile and in the first DVC stage,
so a dataset that cannot work stops the run at once, not an hour in. Each problem names
the params.yaml key or the data it is about and says what fixes it:

* ``dgcn.reference_target: neutral`` (the generative-contrastive rows with a reference compare a face with
  its subject's neutral face) needs a ``neutral`` class and a neutral image of every
  subject; ``subject_mean`` needs neither;
* FERSNet learns to turn a subject's face into its other expressions, so pairs of one
  subject's images with two different expressions must exist in every fold's training
  part: with fewer than two such subjects some fold has none;
* the folds: enough subjects for ``folds.n_folds`` subject-independent folds and for the
  validation split of each fold's training part (:func:`fer.data.folds.fold_plan_problems`);
  subject ids for ``subject_kfold`` (a dataset without them is refused:
  :data:`fer.data.folds.NO_SUBJECTS`); an official split of every image for ``official``.

What can still differ at job time (images that fail to align, the actual folds drawn) is
checked again by the stages themselves.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

from fer.data.files import DatasetError
from fer.data.folds import NO_SUBJECTS, fold_plan_problems
from fer.data.manifest import Record
from fer.params import ALL_ROWS, FoldsParams

__all__ = ["DatasetSummary", "check_requirements", "requirement_problems", "summarise"]

MAX_NAMED = 10


@dataclass(frozen=True)
class DatasetSummary:
    """What the checks need to know about a labelled dataset."""

    classes: tuple[str, ...]
    n_images: int
    images_per_class: Mapping[str, int]
    labels_by_subject: Mapping[str, frozenset[str]]
    has_subjects: bool = True  # False: every image is its own subject
    splits: Mapping[str, int] = field(default_factory=dict)  # images per official split


def summarise(records: Sequence[Record], classes: Sequence[str], has_subjects: bool = True) -> DatasetSummary:
    """The summary of a labelled dataset's records and its class list."""
    by_subject: dict[str, set[str]] = defaultdict(set)
    for r in records:
        if r.label is not None:
            by_subject[r.subject].add(r.label)
    counts = Counter(r.label for r in records if r.label is not None)
    return DatasetSummary(
        classes=tuple(classes),
        n_images=len(records),
        images_per_class={c: counts.get(c, 0) for c in classes},
        labels_by_subject={s: frozenset(v) for s, v in sorted(by_subject.items())},
        has_subjects=has_subjects,
        splits=dict(sorted(Counter(r.split for r in records if r.split).items())),
    )


def _named(items: Sequence[str]) -> str:
    shown = ", ".join(items[:MAX_NAMED])
    return shown + (f", ... ({len(items) - MAX_NAMED} more)" if len(items) > MAX_NAMED else "")


def requirement_problems(
    summary: DatasetSummary, folds: FoldsParams, reference_target: str, rows: Collection[str] = ALL_ROWS
) -> list[str]:
    """Every way the dataset cannot meet what params.yaml asks (module docstring); empty
    when it can. ``reference_target`` is ``dgcn.reference_target``; ``rows`` the rows that
    run (``fer.params.plan_rows``): a row's needs are checked only when it runs."""
    problems: list[str] = []
    subjects = summary.labels_by_subject
    if reference_target == "neutral" and ({"dgcn_generated", "dgcn_real"} & set(rows)):
        if "neutral" not in summary.classes:
            problems.append(
                f"dgcn.reference_target is 'neutral', but the dataset has no neutral class (its classes: "
                f"{', '.join(summary.classes)}): the generative-contrastive rows take each subject's neutral face "
                "as the reference. Set dgcn.reference_target: subject_mean in params.yaml (the subject's mean "
                "face; for datasets without neutral images), or add neutral images"
            )
        else:
            lacking = [s for s, labels in subjects.items() if "neutral" not in labels]
            if lacking:
                problems.append(
                    f"dgcn.reference_target is 'neutral', but {len(lacking)} of {len(subjects)} subjects have no "
                    f"neutral image ({_named(lacking)}): the generative-contrastive rows need every subject's "
                    "neutral face. Set dgcn.reference_target: subject_mean in params.yaml, or add their neutral images"
                )
    paired = [s for s, labels in subjects.items() if len(labels) >= 2]
    if len(paired) < 2 and any(r.startswith("fersnet_") for r in rows):
        problems.append(
            f"{len(paired)} subject(s) have images of two or more expressions ({_named(paired) or 'none'}): FERSNet "
            "learns to turn a subject's face into the same subject's other expressions and needs such subjects in "
            "every fold's training part, so at least 2 (each is the test subject of one fold). Use a dataset with "
            "several expressions per subject (subject ids: data.subject_regex for folders, the subject column for csv)"
        )
    if folds.protocol == "official":
        if not summary.splits:
            problems.append(
                "folds.protocol is 'official' but the dataset has no official split: use folds.protocol: "
                "subject_kfold, or a layout that carries the split (data.format folders with train/ and test/ "
                "folders, fer2013, rafdb, affectnet)"
            )
        elif summary.splits and sum(summary.splits.values()) != summary.n_images:
            problems.append(
                f"folds.protocol is 'official' but only {sum(summary.splits.values())} of {summary.n_images} "
                "images have an official split"
            )
        return problems
    if not summary.has_subjects:
        problems.append(NO_SUBJECTS)
        return problems
    problems.extend(fold_plan_problems(len(subjects), folds.n_folds, folds.val_fraction))
    if summary.images_per_class and max(summary.images_per_class.values()) < folds.n_folds:
        problems.append(
            f"every class has fewer images than folds.n_folds = {folds.n_folds} "
            f"({dict(summary.images_per_class)}): stratified folds cannot be drawn; use fewer folds or more images"
        )
    return problems


def check_requirements(
    summary: DatasetSummary, folds: FoldsParams, reference_target: str, where: str, rows: Collection[str] = ALL_ROWS
) -> None:
    """Raise :class:`DatasetError` listing :func:`requirement_problems` (``where`` names
    the dataset in the message)."""
    problems = requirement_problems(summary, folds, reference_target, rows)
    if problems:
        listed = "\n".join(f"  {p}" for p in problems)
        raise DatasetError(
            f"the dataset {where} cannot run the pipeline as params.yaml sets it up "
            f"({summary.n_images} images, {len(summary.labels_by_subject)} subjects):\n{listed}",
            problems,
        )
