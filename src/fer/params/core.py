"""params.yaml: strict validation and declared-key access.

The pipeline has one parameter file. It is validated against a JSON Schema (unknown keys
and wrong types are errors) and then built section by section into the typed dataclasses
of :mod:`fer.params.sections` (range checks a schema cannot express). Every stage reads
it through a :class:`DeclaredParams` view that only exposes the keys the stage declared:
reading an undeclared key raises, so no hidden dependency can slip past Snakemake's or
DVC's re-run logic.

This module knows nothing about Snakemake or about where the pipeline writes its files;
the schema path and the key lists come in as arguments.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from fer.params import sections as _s
from fer.params.coerce import ParamsError, build, field_key
from fer.params.rows import budget_problems, init_problems, row_plan_problems

__all__ = [
    "SECTIONS",
    "DeclaredParams",
    "ParamsError",
    "get",
    "load_params",
    "load_yaml",
    "section",
    "subset",
    "validate_params",
]

#: params.yaml section -> its dataclass (``seed`` is a top-level integer).
SECTIONS: dict[str, type] = {
    "demo": _s.DemoParams,
    "data": _s.DataParams,
    "align": _s.AlignParams,
    "folds": _s.FoldsParams,
    "labels": _s.LabelsParams,
    "corpus": _s.CorpusParams,
    "compute": _s.ComputeParams,
    "baseline": _s.RecognizerParams,
    "identity": _s.RecognizerParams,
    "fesgan": _s.FesganParams,
    "synthesis": _s.SynthesisParams,
    "joint": _s.JointParams,
    "rdbp": _s.RdbpParams,
    "clustering": _s.ClusteringParams,
    "accnn": _s.RecognizerParams,
    "finetune": _s.FinetuneParams,
    "dgcn": _s.DgcnParams,
    "fersnet": _s.FersnetParams,
    "fixmatch": _s.FixmatchParams,
    "report": _s.ReportParams,
}


def load_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML file whose top level is a mapping."""
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
    """Validate ``params`` against the schema, then build every section's dataclass;
    raise :class:`ParamsError` listing every problem."""
    import jsonschema

    schema = load_yaml(schema_path)
    validator = _strict_validator(jsonschema)(schema)
    errors = sorted(validator.iter_errors(dict(params)), key=lambda e: list(e.absolute_path))
    if errors:
        lines = []
        for err in errors:
            where = ".".join(str(p) for p in err.absolute_path) or "<top level>"
            lines.append(f"  {where}: {err.message}")
        raise ParamsError(f"{source} is invalid:\n" + "\n".join(lines))
    problems = []
    for name, cls in SECTIONS.items():
        if name in params:
            try:
                build(cls, params[name], name)
            except ParamsError as e:
                problems.append(f"  {e}")
    if all(k in params for k in ("baseline", "accnn", "finetune", "dgcn", "fersnet")) and not problems:
        problems += [f"  {line}" for line in budget_problems(params)]
    if all(k in params for k in ("baseline", "accnn", "identity")) and not problems:
        problems += [f"  {line}" for line in init_problems(params)]
    if all(k in params for k in ("methods", "corpus", "data", "clustering", "finetune")) and not problems:
        problems += [f"  {line}" for line in row_plan_problems(params)]
    data = params.get("data", {})
    regex = data.get("subject_regex")
    if regex:  # '' = the dataset has no subject ids (folders format)
        try:
            if re.compile(regex).groups < 1:
                problems.append("  data.subject_regex needs one capture group")
        except re.error as e:
            problems.append(f"  data.subject_regex {regex!r}: {e}")
    if problems:
        raise ParamsError(f"{source} is invalid:\n" + "\n".join(problems))


def _strict_validator(jsonschema: Any) -> type:
    """Draft 2020-12, except that ``type: integer`` means an integer: JSON Schema counts
    ``2.0`` as one, params.yaml does not (``folds.n_folds: 2.0`` is an error, as in the
    sections' dataclasses)."""
    base = jsonschema.Draft202012Validator
    checker = base.TYPE_CHECKER.redefine(
        "integer", lambda _checker, value: isinstance(value, int) and not isinstance(value, bool)
    )
    return jsonschema.validators.extend(base, type_checker=checker)


def load_params(path: str | Path, schema_path: str | Path) -> dict[str, Any]:
    """Read and validate the parameter file."""
    params = load_yaml(path)
    validate_params(params, schema_path, source=str(path))
    return params


def get(params: Mapping[str, Any], dotted: str) -> Any:
    """The value under a dotted key (``"rdbp.lambda"``); ParamsError when absent."""
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
        value = copy.deepcopy(get(params, key))
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


def section(params: Mapping[str, Any], name: str) -> Any:
    """Section ``name`` of a full parameter mapping as its dataclass."""
    if name not in SECTIONS:
        raise ParamsError(f"{name!r} is not a params.yaml section (sections: {sorted(SECTIONS)})")
    return build(SECTIONS[name], get(params, name), name)


class DeclaredParams:
    """Read-only view of the declared keys of a parameter set.

    ``keys`` are dotted paths (a section such as ``baseline`` or one key such as
    ``align.size``). :meth:`get` returns a plain value under a declared key,
    :meth:`section` a whole section as its dataclass; both raise :class:`ParamsError`
    for anything undeclared.
    """

    def __init__(self, params: Mapping[str, Any], keys: Iterable[str]):
        self.keys = tuple(k for k in keys if k)
        for k in self.keys:
            get(params, k)  # every declared key must exist
        self._params = params

    def _declared(self, dotted: str) -> bool:
        return any(dotted == k or dotted.startswith(k + ".") for k in self.keys)

    def _refuse(self, dotted: str) -> ParamsError:
        return ParamsError(
            f"the stage reads params key {dotted!r} but declares only {list(self.keys)}; "
            "add it to the rule's declared keys"
        )

    def get(self, dotted: str) -> Any:
        """The plain value under a declared key (a copy)."""
        if not self._declared(dotted):
            raise self._refuse(dotted)
        return copy.deepcopy(get(self._params, dotted))

    def value(self, dotted: str) -> Any:
        """The value under a declared ``section.key``, typed as the section's dataclass
        field (an ``int`` for a float field becomes a float, a list a tuple)."""
        import dataclasses

        from fer.params.coerce import coerce_value

        name, _, key = dotted.partition(".")
        if name not in SECTIONS or not key or "." in key:
            raise ParamsError(f"{dotted!r} is not a section.key of params.yaml")
        fields = {field_key(f.name): f for f in dataclasses.fields(SECTIONS[name])}
        if key not in fields:
            raise ParamsError(f"params section {name!r} has no key {key!r}")
        return coerce_value(str(fields[key].type), self.get(dotted), dotted)

    def section(self, name: str, overrides: Mapping[str, Any] | None = None) -> Any:
        """Section ``name`` as its dataclass. Every key of the section must be declared
        (the section itself, or each key) or given in ``overrides``, which replace the
        params.yaml values (a row's fixed choices, e.g. ``{"stop_gradient": False}``)."""
        if name not in SECTIONS:
            raise ParamsError(f"{name!r} is not a params.yaml section (sections: {sorted(SECTIONS)})")
        overrides = dict(overrides or {})
        values: dict[str, Any] = {}
        import dataclasses

        for f in dataclasses.fields(SECTIONS[name]):
            key = field_key(f.name)
            if key in overrides:
                values[key] = overrides.pop(key)
            elif self._declared(f"{name}.{key}"):
                values[key] = copy.deepcopy(get(self._params, f"{name}.{key}"))
            else:
                raise self._refuse(f"{name}.{key}")
        if overrides:
            raise ParamsError(f"overrides of unknown keys {sorted(overrides)} in section {name!r}")
        return build(SECTIONS[name], values, name)

    def as_dict(self) -> dict[str, Any]:
        """The declared keys as a nested dict."""
        return subset(self._params, self.keys)
