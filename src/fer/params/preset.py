"""Presets: partial parameter files merged into params.yaml, comments kept."""

from __future__ import annotations

import copy
import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from fer.params.core import ParamsError, load_yaml, validate_params

__all__ = ["apply_preset"]


def apply_preset(params_path: str | Path, preset_path: str | Path, schema_path: str | Path) -> dict[str, tuple[Any, Any]]:
    """Merge a partial parameter file into ``params_path`` (comments kept), validate the
    result against the schema, then write it. Returns ``{dotted key: (old, new)}``."""
    from ruamel.yaml import YAML

    from fer.utils.io import write_text

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
    buf = io.StringIO()
    rt.dump(doc, buf)
    text = buf.getvalue()
    validate_params(yaml.safe_load(text), schema_path, source=f"{params_path} with {preset_path}")
    write_text(params_path, text)
    return changed
