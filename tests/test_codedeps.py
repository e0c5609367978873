"""Code dependencies are derived, not typed: every stage's code inputs in dvc.yaml are its
script's import closure (workflow/scripts/codedeps.py), and that closure holds every
project file the script really imports (the end-to-end run records the imports of every
stage's process too: tests/test_workflow.py::test_stages_import_only_declared_code)."""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

import dvcgen
from codedeps import code_files

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "workflow" / "scripts"
#: Scripts that are helpers or tools, not a stage's command.
HELPERS = {"_common.py", "_fold.py", "codedeps.py", "dvcgen.py"}
SCRIPT_IN_CMD = re.compile(r"\bpython (workflow/scripts/\w+\.py)\b")


def _stages() -> dict:
    return yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]  # a fresh render: tests/test_dvc_sync.py


def _code_deps(stage: dict) -> list[str]:
    return sorted(d for d in stage.get("deps", []) if d.endswith(".py"))


def stage_scripts() -> dict[str, str]:
    """Stage name -> the script its command runs."""
    out = {}
    for name, st in _stages().items():
        m = SCRIPT_IN_CMD.search(st["cmd"])
        assert m, f"stage {name}: no `python workflow/scripts/<x>.py` in its command: {st['cmd']}"
        out[name] = m.group(1)
    return out


def test_every_stage_declares_exactly_its_scripts_import_closure():
    stages = _stages()
    for name, script in stage_scripts().items():
        if dvcgen.stage_rule(name) == dvcgen.DAG_CHECK_RULE:
            continue  # depends on every code file: below
        assert _code_deps(stages[name]) == code_files(script, ROOT), (
            f"stage {name}: its code inputs are not the import closure of {script}; give the rule "
            f"`code=code(\"{Path(script).stem}\")` (workflow/rules/common.smk) instead of a typed list"
        )


def test_dag_check_depends_on_every_code_file_the_render_reads():
    """The DAG check re-runs when anything that shapes dvc.yaml changes: every script
    (a stage's code inputs are its closure) and every fer module."""
    check = _stages()[dvcgen.DAG_CHECK_RULE]
    deps = set(check["deps"])
    every = {str(p.relative_to(ROOT)) for p in [*SCRIPTS.glob("*.py"), *(ROOT / "src" / "fer").rglob("*.py")]}
    assert every <= deps, sorted(every - deps)
    assert {"Snakefile", "params.yaml", "workflow/schemas/params.schema.yaml"} <= deps
    assert {str(p.relative_to(ROOT)) for p in (ROOT / "workflow" / "rules").glob("*.smk")} <= deps


def test_every_stage_depends_on_the_dag_check():
    for name, st in _stages().items():
        if name != dvcgen.DAG_CHECK_RULE:
            assert dvcgen.DAG_CHECK_STAMP in st.get("deps", []), name


# The import-time check: each stage script is imported (its module body runs, `__main__`
# does not) in one fresh interpreter, with the project's modules forgotten between scripts,
# and every project file that got loaded is listed.
_IMPORT_PROBE = textwrap.dedent(
    """
    import json, os, runpy, sys
    root, scripts = sys.argv[1], sys.argv[2:]
    sys.path.insert(0, os.path.join(root, "workflow", "scripts"))
    src = os.path.join(root, "src") + os.sep
    mine = os.path.join(root, "workflow", "scripts") + os.sep

    def project_files():
        out = set()
        for m in list(sys.modules.values()):
            f = getattr(m, "__file__", None)
            if f and (os.path.abspath(f).startswith(src) or os.path.abspath(f).startswith(mine)):
                out.add(os.path.relpath(os.path.abspath(f), root))
        return out

    result = {}
    for script in scripts:
        for name, m in list(sys.modules.items()):  # forget the project's modules
            f = getattr(m, "__file__", None)
            if f and (os.path.abspath(f).startswith(src) or os.path.abspath(f).startswith(mine)):
                del sys.modules[name]
        runpy.run_path(os.path.join(root, script), run_name="fer_import_probe")
        result[script] = sorted(project_files() | {script})
    print(json.dumps(result))
    """
)


def test_scripts_import_nothing_outside_their_closure():
    scripts = sorted(set(stage_scripts().values()))
    proc = subprocess.run([sys.executable, "-c", _IMPORT_PROBE, str(ROOT), *scripts], capture_output=True,
                          text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    loaded = json.loads(proc.stdout.strip().splitlines()[-1])
    for script, files in loaded.items():
        assert "src/fer/params/core.py" in files, (script, files)  # the probe saw the project's modules
        missing = sorted(set(files) - set(code_files(script, ROOT)))
        assert not missing, f"{script} imports {missing}, which its code inputs (codedeps) do not list"


def test_every_stage_script_imports_common_first():
    """_common checks the interpreter before anything outside the standard library is
    imported: a stage started with a `python` that lacks the project says so in one line."""
    for script in sorted(set(stage_scripts().values())):
        tree = ast.parse((ROOT / script).read_text())
        for node in tree.body:
            if isinstance(node, ast.ImportFrom) and node.module == "__future__":
                continue
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                if any(n.split(".")[0] == "_common" for n in names):
                    break
                outside = [n for n in names if n.split(".")[0] not in sys.stdlib_module_names]
                assert not outside, f"{script} imports {outside} before _common"
        else:
            pytest.fail(f"{script} never imports _common")


def test_a_python_without_the_project_is_named_in_one_line(tmp_path):
    """A stage run by an interpreter that cannot import fer exits with one line telling
    the user to activate the environment (not a traceback)."""
    bare = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True, timeout=120)
    proc = subprocess.run([str(bare / "bin" / "python"), str(SCRIPTS / "make_folds.py"), "--keys", "data_seed,folds"],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "make_folds.py" in lines[0] and "source .venv/bin/activate" in lines[0], lines[0]
    assert "Traceback" not in proc.stderr


# ----------------------------------------------------------------------------- codedeps on a toy project
def test_closure_follows_lazy_imports_helpers_and_package_inits(tmp_path):
    (tmp_path / "workflow" / "scripts").mkdir(parents=True)
    pkg = tmp_path / "src" / "fer"
    (pkg / "sub").mkdir(parents=True)
    for f, text in {
        pkg / "__init__.py": "",
        pkg / "sub" / "__init__.py": "",
        pkg / "sub" / "a.py": "def f():\n    from fer.sub import b  # lazy\n    return b\n",
        pkg / "sub" / "b.py": "import fer.c\n",
        pkg / "c.py": "",
        pkg / "unused.py": "",
        tmp_path / "workflow" / "scripts" / "_helper.py": "import fer.c\n",
        tmp_path / "workflow" / "scripts" / "stage.py": "import _helper\nfrom fer.sub.a import f\n",
    }.items():
        f.write_text(text)
    assert code_files("workflow/scripts/stage.py", tmp_path) == [
        "src/fer/__init__.py", "src/fer/c.py", "src/fer/sub/__init__.py", "src/fer/sub/a.py", "src/fer/sub/b.py",
        "workflow/scripts/_helper.py", "workflow/scripts/stage.py",
    ]


_WHICH_FER = "import sys; sys.path.insert(0, 'workflow/scripts'); import _common, fer; print(fer.__file__)"


def test_the_scripts_run_their_own_checkouts_package(tmp_path: Path) -> None:
    """The code dependencies are this checkout's files, so a stage must run them: a second
    copy of the project (its workflow/ and src/), run with this environment (whose
    editable install points at the first), imports fer from its own src/. A process that
    imported another copy of fer first is refused, naming both places, when the two
    copies' code differs (the same bytes are accepted: the tests render copies of the
    project in-process)."""
    copy = tmp_path / "second-clone"
    for part in ("workflow/scripts", "src/fer"):
        shutil.copytree(ROOT / part, copy / part, ignore=shutil.ignore_patterns("__pycache__"))
    proc = subprocess.run([sys.executable, "-c", _WHICH_FER], cwd=copy, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert Path(proc.stdout.strip()).resolve() == (copy / "src" / "fer" / "__init__.py").resolve()

    # the copy's code differs from the installed one (a clone on another commit)
    init = copy / "src" / "fer" / "__init__.py"
    init.write_text(init.read_text() + "\n# another commit\n")
    env_fer = subprocess.run([sys.executable, "-c", "import fer; print(fer.__file__)"], cwd=copy,
                             capture_output=True, text=True, check=True).stdout.strip()
    assert Path(env_fer).resolve().parent != (copy / "src" / "fer").resolve()  # the installed copy is another
    first = "import fer; " + _WHICH_FER  # the environment's fer imported first
    proc = subprocess.run([sys.executable, "-c", first], cwd=copy, capture_output=True, text=True)
    assert proc.returncode != 0
    where = Path(env_fer).resolve().parent
    assert f"imported fer from {where}, whose code differs from this checkout's {(copy / 'src' / 'fer').resolve()}" \
        in proc.stderr, proc.stderr
