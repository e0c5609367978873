"""Shared plumbing of the thin command-line scripts: argument parsing, logging, the
declared-params view (a script may read only the params.yaml keys its rule declares), and
the pipeline's own rules about params.yaml (where the demo generator writes).

This is the workflow side: it knows the pipeline's paths; ``fer`` does not.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any


#: The checkout these scripts belong to.
ROOT = Path(__file__).resolve().parents[2]


def require_project_environment() -> None:
    """Exit with one line naming the fix when this ``python`` cannot import the project
    (a stage started outside the project's environment: ``python`` is the system's, not
    ``.venv``'s), or imports ``fer`` from somewhere other than this checkout's ``src/``.
    Every script (and the Snakefile) imports this module before anything outside the
    standard library, so this is the first thing a stage checks.

    ``fer`` is imported from ``ROOT/src`` (put first on ``sys.path``), whatever the
    environment's installed copy points at: the rules' code dependencies are this
    checkout's files (workflow/scripts/codedeps.py), so the code that runs must be them.
    (An editable install made from another clone of the project would otherwise run that
    clone's code while the DAG tracked this one's: measured, a `make install` in a second
    clone sharing the environment re-pointed it silently.)"""
    src = ROOT / "src"
    if str(src) not in sys.path:
        sys.path.insert(0, str(src))
    script = Path(sys.argv[0]).name or "this stage"
    try:
        import fer.params  # fer and its dependencies: numpy, yaml, jsonschema, ... (binds ``fer``)
    except ImportError as e:
        sys.exit(
            f"{script}: this python ({sys.executable}) cannot import the project ({e}): activate the project's "
            "environment first (`source .venv/bin/activate`; `make install` creates it), then re-run"
        )

    here = Path(fer.__file__).resolve().parent
    if here != src / "fer" and not _same_python_files(here, src / "fer"):
        sys.exit(
            f"{script}: this process imported fer from {here}, whose code differs from this checkout's "
            f"{src / 'fer'} (it was imported before workflow/scripts/_common.py put src/ first): the pipeline's "
            "code dependencies are this checkout's files, so it refuses to run another copy's code"
        )


def _same_python_files(a: Path, b: Path) -> bool:
    """Whether two package folders hold the same ``.py`` files with the same bytes (the
    tests render copies of the project in a process that imported the original)."""
    files_a = sorted(p.relative_to(a) for p in a.rglob("*.py"))
    files_b = sorted(p.relative_to(b) for p in b.rglob("*.py"))
    return files_a == files_b and all((a / f).read_bytes() == (b / f).read_bytes() for f in files_a)


require_project_environment()

from fer.params import DeclaredParams, ParamsError, load_params  # noqa: E402

SCHEMA = ROOT / "workflow" / "schemas" / "params.schema.yaml"

#: Where make_demo writes the demo data (the Snakefile's make_demo output).
DEMO_DIR = "data/demo"
DEMO_ROOT = f"{DEMO_DIR}/expr"
DEMO_CORPUS = f"{DEMO_DIR}/corpus"
DEMO_TRUTH = f"{DEMO_DIR}/corpus_truth.csv"


def check_pipeline_params(params: Mapping[str, Any], source: str = "params.yaml") -> None:
    """The pipeline's rules about params.yaml that the schema cannot express: with
    ``data.format: demo`` the dataset and corpus are the demo generator's output; with
    your own data they must not point into it."""
    data, corpus = params.get("data", {}), params.get("corpus", {})
    demo = data.get("format") == "demo"
    if demo and data.get("root") != DEMO_ROOT:
        raise ParamsError(
            f"{source} is invalid: data.format is demo, so data.root must be {DEMO_ROOT} "
            f"(got {data.get('root')!r}); use format csv or folders for your own data"
        )
    if demo and corpus and corpus.get("root") not in (DEMO_CORPUS, ""):
        raise ParamsError(
            f"{source} is invalid: data.format is demo, so corpus.root must be {DEMO_CORPUS} or '' (no corpus) "
            f"(got {corpus.get('root')!r})"
        )
    if corpus and corpus.get("root") == "" and corpus.get("truth"):
        raise ParamsError(
            f"{source} is invalid: corpus.truth is {corpus.get('truth')!r} but corpus.root is '' (no corpus): "
            "set corpus.truth: ''"
        )
    if demo and corpus and corpus.get("truth") not in (DEMO_TRUTH, ""):
        raise ParamsError(
            f"{source} is invalid: data.format is demo, so corpus.truth must be {DEMO_TRUTH} or '' "
            f"(got {corpus.get('truth')!r})"
        )
    if not demo and str(corpus.get("root", "")).startswith(DEMO_DIR):
        raise ParamsError(
            f"{source} is invalid: corpus.root {corpus.get('root')!r} is written by the demo generator, which "
            "runs only with data.format demo; point corpus.root at your face-recognition corpus (labels.csv with "
            "columns image, subject, or one folder per identity), or set it to '' to run without one"
        )
    problems = init_file_problems(params)
    if problems:
        raise ParamsError(f"{source} is invalid:\n" + "\n".join(f"  {p}" for p in problems))
    if not demo and str(corpus.get("truth", "")).startswith(DEMO_DIR):
        raise ParamsError(
            f"{source} is invalid: corpus.truth {corpus.get('truth')!r} is written by the demo generator; set it "
            "to your corpus's expression truth (csv with columns image, expression) or '' when there is none"
        )


def init_file_problems(params: Mapping[str, Any]) -> list[str]:
    """A recogniser's ``init`` that names a file: it must be a relative path inside the
    project (so that both tools track its content, and a clone finds it) and exist."""
    problems = []
    for section in ("baseline", "identity", "accnn"):
        init = params.get(section, {}).get("init")
        if init in (None, "scratch", "identity"):
            continue
        path = Path(init)
        if path.is_absolute() or ".." in path.parts:
            problems.append(f"{section}.init {init!r} must be a path inside the project (e.g. pretrained/x.pth): "
                            "copy or link the file there, so that Snakemake and DVC track its content")
        elif not path.is_file():
            problems.append(f"{section}.init {init!r} is not a file (scratch, identity, or a state-dict file; "
                            "README 'Face-pretrained starts')")
    return problems


def load_pipeline_params(path: str | Path = "params.yaml") -> dict[str, Any]:
    """params.yaml validated against the schema, its sections' types and the pipeline's rules."""
    params = load_params(path, SCHEMA)
    check_pipeline_params(params, str(path))
    return params


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--params", default="params.yaml", help="the parameter file (default: params.yaml)")
    p.add_argument("--keys", default="", help="comma-separated params keys this stage declares")
    return p


def setup_logging() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )


def declared(args: argparse.Namespace) -> DeclaredParams:
    """Validate the whole parameter file, then expose only the declared keys."""
    return DeclaredParams(load_pipeline_params(args.params), [k for k in args.keys.split(",") if k])


@contextlib.contextmanager
def reported_errors(*errors: type[BaseException]) -> Iterator[None]:
    """Errors in the user's data or params.yaml end the script with their message and
    exit status 1, not with a Python traceback: ``ParamsError`` and the ``errors`` the
    script names (``DatasetError``, ``FoldError``, ...; passed in, so that this module
    imports nothing more). Anything else (a bug) keeps its traceback."""
    try:
        yield
    except (ParamsError, *errors) as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None


def require_accnn_start(args: argparse.Namespace, start: str, init: str) -> None:
    """The corpus row and its control: with ``finetune.start: accnn`` the rules pass
    ``--accnn-model`` (the fold's trained AC-CNN, whose own start was accnn.init) and no
    ``--start``; with ``scratch``, ``--start`` exactly when accnn.init is not scratch."""
    model = getattr(args, "accnn_model", None)
    if (start == "accnn") != bool(model):
        raise SystemExit(f"finetune.start is {start!r} but --accnn-model is {model!r}: run the stage through "
                         "Snakemake or DVC, which pass the trained AC-CNN")
    if start == "accnn":
        if getattr(args, "start", None):
            raise SystemExit("finetune.start is 'accnn': the start is --accnn-model (which began from accnn.init), "
                             "not --start")
        return
    require_start(args, "accnn", init)


def require_start(args: argparse.Namespace, section: str, init: str) -> None:
    """The rules pass ``--start`` exactly when ``<section>.init`` is not scratch: a
    mismatch (a hand-written command) would silently train from the wrong start."""
    start = getattr(args, "start", None)
    if (init != "scratch") != bool(start):
        raise SystemExit(f"{section}.init is {init!r} but --start is {start!r}: run the stage through Snakemake or "
                         "DVC, which pass the start file")
