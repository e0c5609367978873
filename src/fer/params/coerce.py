"""The one coercion helper: a (YAML) mapping <-> a frozen parameter dataclass.

Every parameter dataclass of :mod:`fer.params.sections` is built by :func:`build` and
written back by :func:`to_dict`, so the rules are the same for every section:

* an unknown key is an error naming ``section.key`` and the known keys;
* values are checked against the field's annotation: ``bool``, ``int`` (an integer only:
  ``2.0`` is refused, as is ``true``; a count written as a float is a typo or a computed
  value, and ``range(2.0)`` would fail later far from the key), ``float`` (an ``int``
  becomes a float), ``str``, ``tuple[int, ...]`` / ``tuple[str, ...]`` (from a list),
  ``dict[str, str]``, or another parameter dataclass (from a nested mapping);
* a key missing from the mapping keeps the field's default (library use; the pipeline's
  params.yaml always has every key: the schema requires them); inside a nested mapping
  the missing keys keep the values of the field's default object (FERSNet's flip-only
  augmentation stays flip-only when one key is given);
* a field named after a Python keyword carries a trailing underscore: the params.yaml key
  ``lambda`` is the field ``lambda_`` (PEP 8's convention), and :func:`to_dict` writes it
  back as ``lambda``.

Range checks live in each dataclass's ``__post_init__`` (raising ``ValueError``);
:func:`build` turns any error into :class:`ParamsError`, which is a ``ValueError``.
"""

from __future__ import annotations

import dataclasses
import keyword
from collections.abc import Mapping
from typing import Any, TypeVar

__all__ = ["ParamsError", "build", "coerce_value", "field_key", "to_dict"]

T = TypeVar("T")


class ParamsError(ValueError):
    """params.yaml is invalid, or a stage read a key it did not declare."""


def field_key(name: str) -> str:
    """The params.yaml key of a dataclass field (``lambda_`` -> ``lambda``)."""
    if name.endswith("_") and keyword.iskeyword(name[:-1]):
        return name[:-1]
    return name


def _param_classes() -> dict[str, type]:
    from fer.params import sections

    return {name: obj for name, obj in vars(sections).items() if dataclasses.is_dataclass(obj)}


def _coerce(typ: str, value: Any, where: str, base: Any = None) -> Any:
    if typ == "bool":
        if not isinstance(value, bool):
            raise ParamsError(f"{where} must be true or false, got {value!r}")
        return value
    if typ == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ParamsError(f"{where} must be an integer, got {value!r}")
        return value
    if typ == "float":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ParamsError(f"{where} must be a number, got {value!r}")
        return float(value)
    if typ == "str":
        if not isinstance(value, str):
            raise ParamsError(f"{where} must be a string, got {value!r}")
        return value
    if typ.startswith("tuple[") and typ.endswith(", ...]"):
        if not isinstance(value, list | tuple):
            raise ParamsError(f"{where} must be a list, got {value!r}")
        item = typ[len("tuple[") : -len(", ...]")]
        return tuple(_coerce(item, v, f"{where}[{i}]") for i, v in enumerate(value))
    if typ == "dict[str, str]":
        if not isinstance(value, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
            raise ParamsError(f"{where} must be a mapping of strings to strings, got {value!r}")
        return dict(value)
    cls = _param_classes().get(typ)
    if cls is not None:
        if isinstance(value, cls):
            return value
        return build(cls, value, where, base=base)
    raise TypeError(f"{where}: unsupported parameter type {typ!r}")


def coerce_value(typ: str, value: Any, where: str) -> Any:
    """One value checked and converted to the annotation ``typ`` (module docstring)."""
    return _coerce(typ, value, where)


def build(cls: type[T], mapping: Mapping[str, Any], where: str | None = None, *, base: Any = None) -> T:
    """Build the parameter dataclass ``cls`` from ``mapping`` (module docstring).

    ``where`` names the section in error messages (``"baseline"``, ``"fersnet.augment"``;
    default: the class name);
    ``base``, an instance of ``cls``, supplies the keys the mapping lacks (default: the
    class's own defaults).
    """
    where = where or cls.__name__
    if not isinstance(mapping, Mapping):
        raise ParamsError(f"{where} must be a mapping, got {type(mapping).__name__}")
    fields = {field_key(f.name): f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    if base is not None:
        kwargs = {f.name: getattr(base, f.name) for f in fields.values()}
    for key, value in mapping.items():
        if key not in fields:
            raise ParamsError(f"unknown key {where}.{key!r} (known: {sorted(fields)})")
        f = fields[key]
        kwargs[f.name] = _coerce(str(f.type), value, f"{where}.{key}", _field_default(f))
    try:
        return cls(**kwargs)
    except ParamsError:
        raise
    except (TypeError, ValueError) as e:
        raise ParamsError(str(e)) from e


def _field_default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return None


def to_dict(obj: Any) -> dict[str, Any]:
    """A parameter dataclass as the plain nested dict params.yaml would hold (field
    order kept, tuples as lists, nested dataclasses as mappings)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        out[field_key(f.name)] = _plain(getattr(obj, f.name))
    return out


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_dict(value)
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value
