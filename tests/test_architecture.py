"""The package layers of docs/architecture.md, enforced: every import inside ``fer`` goes to
the same or a lower layer, nothing in ``fer`` imports Snakemake or knows the pipeline's
paths, and the dvc.yaml generator lives on the workflow side."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from conftest import ROOT

SRC = ROOT / "src"

#: The layers, lowest first (docs/architecture.md): a module may import its own layer and
#: the layers below it. A module's layer is that of its longest listed package prefix.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("base", ("fer", "fer.utils", "fer.labels", "fer.metrics")),
    ("params", ("fer.params",)),
    ("data", ("fer.data", "fer.align")),
    ("networks", ("fer.models", "fer.losses")),
    ("training", ("fer.training",)),
    ("evaluation", ("fer.evaluation", "fer.clustering")),
    ("methods", ("fer.methods",)),
    ("report", ("fer.report",)),
]


def layer_of(module: str) -> int:
    best, level = -1, -1
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > best:
                best, level = len(p), i
    assert level >= 0, f"{module} is in no layer of docs/architecture.md"
    return level


def modules() -> dict[str, Path]:
    out = {}
    for f in sorted((SRC / "fer").rglob("*.py")):
        name = ".".join(f.relative_to(SRC).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = f
    return out


def imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            assert node.level == 0, f"{path}: relative import"
            found.add(node.module)
    return found


def test_imports_never_run_up_the_layers() -> None:
    bad = []
    for name, path in modules().items():
        for imported in imports(path):
            if imported.split(".")[0] == "fer" and layer_of(imported) > layer_of(name):
                bad.append(f"{name} ({LAYERS[layer_of(name)][0]}) imports {imported} "
                           f"({LAYERS[layer_of(imported)][0]})")
    assert not bad, "\n".join(bad)


def test_nothing_below_methods_imports_methods() -> None:
    methods = [n for n, _ in LAYERS].index("methods")
    for name, path in modules().items():
        if layer_of(name) < methods:
            assert not any(i.startswith("fer.methods") for i in imports(path)), name


def test_fer_knows_no_snakemake_and_no_pipeline_paths() -> None:
    for name, path in modules().items():
        assert not any(i.split(".")[0] in ("snakemake", "dvc") for i in imports(path)), name
        text = path.read_text()
        assert not re.search(r"[\"']data/demo", text), f"{name} names a demo path"
    assert not (SRC / "fer" / "workflow").exists()
    assert (ROOT / "workflow" / "scripts" / "dvcgen.py").is_file()


def test_every_package_is_in_a_layer_and_the_doc_lists_them() -> None:
    doc = (ROOT / "docs" / "architecture.md").read_text()
    for _, prefixes in LAYERS:
        for p in prefixes:
            if p != "fer":
                short = p.removeprefix("fer.")
                assert any(f"`{form}`" in doc for form in (f"{short}/", f"{short}.py", p)), p
    for name in modules():
        layer_of(name)
