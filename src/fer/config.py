"""Parameters: strict validation and declared-key access.

The pipeline has one parameter file. It is validated against a JSON Schema (unknown keys
and wrong types are errors), and every stage reads it through a :class:`DeclaredParams`
view that only exposes the keys the stage declared: reading an undeclared key raises, so
no hidden dependency can slip past Snakemake's or DVC's re-run logic.

This module knows nothing about Snakemake; the schema path and the key lists come in as
arguments.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import yaml


class ParamsError(ValueError):
    """params.yaml is invalid or a stage read a key it did not declare."""


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except FileNotFoundError as e:
        raise ParamsError(f"{path}: parameter file not found") from e
    except yaml.YAMLError as e:
        raise ParamsError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ParamsError(f"{path}: expected a mapping at the top level")
    return data


def validate_params(params: Mapping[str, Any], schema_path: str | Path, source: str = "params.yaml") -> None:
    """Validate ``params`` against the schema; raise :class:`ParamsError` listing every problem."""
    schema = load_yaml(schema_path)
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(dict(params)), key=lambda e: list(e.absolute_path))
    if errors:
        lines = []
        for err in errors:
            where = ".".join(str(p) for p in err.absolute_path) or "<top level>"
            lines.append(f"  {where}: {err.message}")
        raise ParamsError(f"{source} is invalid:\n" + "\n".join(lines))
    _check_cross_field(params, source)


def _check_cross_field(params: Mapping[str, Any], source: str) -> None:
    """Constraints a JSON Schema cannot express."""
    demo = params.get("demo", {})
    if demo and demo.get("intensity_min", 0) > demo.get("intensity_max", 1):
        raise ParamsError(f"{source} is invalid: demo.intensity_min > demo.intensity_max")
    data = params.get("data", {})
    if data.get("format") == "demo" and data.get("root") != "data/demo/expr":
        raise ParamsError(
            f"{source} is invalid: data.format is demo, so data.root must be data/demo/expr "
            f"(got {data.get('root')!r}); use format csv or folders for your own data"
        )
    corpus = params.get("corpus", {})
    if data.get("format") == "demo" and corpus and corpus.get("root") != "data/demo/corpus":
        raise ParamsError(
            f"{source} is invalid: data.format is demo, so corpus.root must be data/demo/corpus "
            f"(got {corpus.get('root')!r})"
        )
    demo_truth = "data/demo/corpus_truth.csv"
    if data.get("format") == "demo" and corpus and corpus.get("truth") not in (demo_truth, ""):
        raise ParamsError(
            f"{source} is invalid: data.format is demo, so corpus.truth must be {demo_truth} or '' "
            f"(got {corpus.get('truth')!r})"
        )
    if data.get("format") not in (None, "demo") and str(corpus.get("root", "")).startswith("data/demo"):
        raise ParamsError(
            f"{source} is invalid: corpus.root {corpus.get('root')!r} is written by the demo generator, which "
            "runs only with data.format demo; point corpus.root at your face-recognition corpus (csv layout: "
            "labels.csv with columns image, subject)"
        )
    if data.get("format") not in (None, "demo") and str(corpus.get("truth", "")).startswith("data/demo"):
        raise ParamsError(
            f"{source} is invalid: corpus.truth {corpus.get('truth')!r} is written by the demo generator; set it "
            "to your corpus's expression truth (csv with columns image, expression) or '' when there is none"
        )
    regex = data.get("subject_regex")
    if regex is not None:
        import re

        try:
            compiled = re.compile(regex)
        except re.error as e:
            raise ParamsError(f"{source} is invalid: data.subject_regex {regex!r}: {e}") from e
        if compiled.groups < 1:
            raise ParamsError(f"{source} is invalid: data.subject_regex needs one capture group")


def load_params(path: str | Path, schema_path: str | Path) -> dict[str, Any]:
    params = load_yaml(path)
    validate_params(params, schema_path, source=str(path))
    return params


def _get(params: Mapping[str, Any], dotted: str) -> Any:
    node: Any = params
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            raise ParamsError(f"params has no key {dotted!r}")
        node = node[part]
    return node


def subset(params: Mapping[str, Any], keys: Iterable[str]) -> dict[str, Any]:
    """The declared part of ``params`` as a nested dict (what a rule depends on)."""
    out: dict[str, Any] = {}
    for key in keys:
        value = copy.deepcopy(_get(params, key))
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


class DeclaredParams:
    """Read-only view of the declared keys of a parameter set.

    ``keys`` are dotted paths (a section such as ``baseline`` or one key such as
    ``align.size``). :meth:`get` returns a value under a declared key and raises
    :class:`ParamsError` for anything else.
    """

    def __init__(self, params: Mapping[str, Any], keys: Iterable[str]):
        self.keys = tuple(k for k in keys if k)
        for k in self.keys:
            _get(params, k)  # every declared key must exist
        self._params = params

    def _declared(self, dotted: str) -> bool:
        return any(dotted == k or dotted.startswith(k + ".") for k in self.keys)

    def get(self, dotted: str) -> Any:
        if not self._declared(dotted):
            raise ParamsError(
                f"the stage reads params key {dotted!r} but declares only {list(self.keys)}; "
                "add it to the rule's declared keys"
            )
        return copy.deepcopy(_get(self._params, dotted))

    def as_dict(self) -> dict[str, Any]:
        return subset(self._params, self.keys)


def apply_preset(params_path: str | Path, preset_path: str | Path, schema_path: str | Path) -> dict[str, tuple[Any, Any]]:
    """Merge a partial parameter file into ``params_path`` (comments kept), validate the
    result against the schema, then write it. Returns ``{dotted key: (old, new)}``."""
    from ruamel.yaml import YAML

    preset = load_yaml(preset_path)
    rt = YAML()
    rt.preserve_quotes = True
    with open(params_path) as f:
        doc = rt.load(f)
    changed: dict[str, tuple[Any, Any]] = {}

    def merge(node: Any, patch: Mapping[str, Any], prefix: str) -> None:
        for key, value in patch.items():
            dotted = f"{prefix}{key}"
            if key not in node:
                raise ParamsError(f"{preset_path}: unknown key {dotted!r} (not in {params_path})")
            if isinstance(value, Mapping):
                if not isinstance(node[key], Mapping):
                    raise ParamsError(f"{preset_path}: {dotted!r} is not a section")
                merge(node[key], value, dotted + ".")
            else:
                if node[key] != value:
                    changed[dotted] = (copy.deepcopy(node[key]), value)
                node[key] = value

    merge(doc, preset, "")
    plain = yaml.safe_load(_dump_roundtrip(rt, doc))
    validate_params(plain, schema_path, source=f"{params_path} with {preset_path}")
    from fer.utils.io import write_text

    write_text(params_path, _dump_roundtrip(rt, doc))
    return changed


def _dump_roundtrip(rt: Any, doc: Any) -> str:
    import io

    buf = io.StringIO()
    rt.dump(doc, buf)
    return buf.getvalue()
