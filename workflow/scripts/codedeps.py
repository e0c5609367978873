"""The code a pipeline script runs: its import closure inside the project.

A rule's code inputs are derived, not typed: the script itself, every helper module beside
it that it imports (``_common``), and every ``fer`` module reachable through ``import``
statements -- at module level or inside functions, so lazily imported code counts too --
plus the ``__init__.py`` of every package on the way (importing ``fer.params.sections``
runs ``fer/__init__.py`` and ``fer/params/__init__.py``). Found by walking the syntax tree
(``ast``), so nothing is executed. Paths are relative to the project root (the current
directory: Snakemake and DVC run in it), sorted.
"""

from __future__ import annotations

import ast
from functools import lru_cache
from pathlib import Path

PACKAGE = "fer"

__all__ = ["code_files", "module_file"]


def module_file(name: str, root: Path) -> Path | None:
    """The source file of a ``fer`` module or package under ``root``, or None."""
    parts = name.split(".")
    if parts[0] != PACKAGE:
        return None
    base = root.joinpath("src", *parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imported_names(path: Path) -> set[str]:
    """Every module name an ``import`` in ``path`` can load (``from a import b``: both
    ``a`` and ``a.b``, as ``b`` may be a submodule)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _with_parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


@lru_cache(maxsize=None)
def _closure(path: Path, root: Path) -> frozenset[Path]:
    scripts = root / "workflow" / "scripts"
    seen: set[Path] = set()
    todo = [path]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        for name in _imported_names(current):
            local = scripts / f"{name}.py"
            if current.parent == scripts and "." not in name and local.is_file():
                todo.append(local)  # a helper beside the scripts (_common)
                continue
            for part in _with_parents(name):
                f = module_file(part, root)
                if f is not None:
                    todo.append(f)
    return frozenset(seen)


def code_files(script: str | Path, root: str | Path | None = None) -> list[str]:
    """The script and its import closure in the project at ``root`` (default: the current
    directory), relative to the root, sorted."""
    base = Path(root or Path.cwd()).resolve()
    path = Path(script)
    if not path.is_absolute():
        path = base / path
    return sorted(str(p.relative_to(base)) for p in _closure(path.resolve(), base))
