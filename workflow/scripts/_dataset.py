"""The pipeline's two image inputs, on the workflow side: the labelled dataset
(``data.root``) and the face-recognition corpus (``corpus.root``).

For each input (``dataset``, ``corpus``):

* its **content fingerprint** (:mod:`fer.data.fingerprint`) is the file
  ``data/fingerprints/<input>.json``, the output of rule ``fingerprint_<input>``
  (workflow/rules/data.smk), and alignment depends on it instead of on the folder (whose
  own time stamp says nothing about the files inside); the hash cache that spares
  re-hashing an unchanged set is ``state/fingerprints/<input>.sqlite``;
* **the checks that can be made before any job**: its list of images is read and
  validated (:mod:`fer.data.manifest`: missing files, unknown labels, paths leaving the
  root, images listed twice, empty class folders, ...) and what params.yaml asks of it is
  checked (:mod:`fer.data.checks`: the classes and subjects the methods need, the folds).

Both happen where each tool looks before it runs anything:

* Snakemake, when it reads the Snakefile (workflow/rules/common.smk calls
  :func:`preflight`): a failed check stops it before any job; a fingerprint file that no
  longer matches the data is rewritten there and then, so it is newer than what
  alignment made from it and alignment and everything after it re-run (Snakemake also
  compares the file's checksum with the one it recorded: the same content re-runs
  nothing). A missing fingerprint is left to the fingerprint job, unless alignment's
  output exists (Snakemake would not re-make a missing intermediate file then);
* DVC, where the fingerprint stages are ``always_changed`` (workflow/scripts/dvcgen.py)
  and run first: workflow/scripts/fingerprint.py makes the same checks and rewrites the
  file only when the content changed, so DVC re-runs alignment exactly then.

With ``data.format: demo`` both inputs are written by make_demo: before it has run there
is nothing to check, and the fingerprint job (after make_demo) makes the checks.

Reading a 400k-image list and checking it takes seconds, and Snakemake reads the
Snakefile for every command (``-n`` included), so a passed check is remembered
(``state/fingerprints/checked.json``) under the digest of everything its result depends
on: the input's fingerprint (every file's path, size and content), the params.yaml keys
the check reads and the code that checks (every file of workflow/scripts/fingerprint.py's
import closure). Any change of those checks again; a failed check is never remembered.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

from _common import ROOT
from codedeps import code_files

from fer.data.checks import check_requirements, summarise
from fer.data.fingerprint import Fingerprint, FingerprintStats, compute_fingerprint, save_fingerprint
from fer.data.formats import read_corpus, read_labelled
from fer.data.manifest import DatasetError, resolve_classes
from fer.params import DeclaredParams, RowPlan, plan_rows
from fer.utils.digest import digest
from fer.utils.io import write_json

#: The two image inputs.
INPUTS = ("dataset", "corpus")
#: The params.yaml key of each input's root folder.
ROOT_KEYS = {"dataset": "data.root", "corpus": "corpus.root"}
#: The params.yaml keys each input's checks read (the fingerprint rule declares them).
CHECK_KEYS = {"dataset": ("data", "folds", "dgcn.reference_target", "methods", "corpus.root", "clustering.embedder",
                          "finetune.synthetic_weight", "finetune.start", "baseline.init", "accnn.init", "labels.budgets",
                          "clustering.in_domain"),
              "corpus": ("corpus.root",)}
#: Files the tools write into folders: not dataset content (Snakemake marks directory() outputs).
TOOL_MARKERS = (".snakemake_timestamp",)
#: What each input is for, in messages about a missing one.
NEEDED_FOR = {
    "dataset": "the labelled expression dataset (format csv: labels.csv with columns image, subject, expression; "
    "format folders: one folder per class)",
    "corpus": "the face-recognition corpus (labels.csv with columns image, subject, or one folder per identity): "
    "the identity network (FESGAN's identity loss, FERSNet's identity term) and the corpus rows (accnn_corpus) "
    "need it; corpus.root: '' runs without one (README, \"Run what you have\")",
}


def fingerprint_file(which: str) -> str:
    """The fingerprint file of input ``which`` (a pipeline output)."""
    return f"data/fingerprints/{which}.json"


def hash_cache(which: str) -> str:
    """The hash cache of input ``which`` (workflow state, not an output)."""
    return f"state/fingerprints/{which}.sqlite"


#: Where passed checks are remembered (workflow state).
CHECKED = "state/fingerprints/checked.json"


def input_root(which: str, view: DeclaredParams) -> Path:
    return Path(view.get(ROOT_KEYS[which]))


@lru_cache(maxsize=1)
def _code_digest() -> str:
    """SHA-256 of the code that checks and fingerprints (fingerprint.py's import closure)."""
    h = hashlib.sha256()
    for rel in code_files("workflow/scripts/fingerprint.py", ROOT):
        h.update(rel.encode() + b"\0" + (ROOT / rel).read_bytes() + b"\0")
    return h.hexdigest()


def _checked() -> dict[str, str]:
    try:
        memo = json.loads(Path(CHECKED).read_text())
    except (FileNotFoundError, ValueError):
        return {}
    return memo if isinstance(memo, dict) else {}


def checked_fingerprint(which: str, view: DeclaredParams) -> tuple[Fingerprint, FingerprintStats, str]:
    """The fingerprint of input ``which`` once its checks passed (:func:`check_input`;
    skipped when they passed before for the same content, params and code: module
    docstring). Returns (fingerprint, how it was computed, a one-line summary)."""
    root = input_root(which, view)
    _require_folder(which, root)
    fp, stats = compute_fingerprint(root, hash_cache(which), TOOL_MARKERS)
    key = digest(fp.text(), view.as_dict(), _code_digest())
    memo = _checked()
    if memo.get(which) == key:
        return fp, stats, f"{which} {root}: unchanged since its checks passed"
    summary = check_input(which, view)
    memo[which] = key
    write_json(CHECKED, memo)
    return fp, stats, summary


def _require_folder(which: str, root: Path) -> None:
    if not root.is_dir():
        raise DatasetError(
            f"{ROOT_KEYS[which]} in params.yaml is {str(root)!r}, "
            f"{'not a folder' if root.exists() else 'which does not exist'}: it must be {NEEDED_FOR[which]}"
        )


def check_input(which: str, view: DeclaredParams) -> str:
    """Read and check input ``which`` with the declared params ``view`` (keys
    :data:`CHECK_KEYS`); raise :class:`DatasetError` naming the files or keys at fault.
    Returns a one-line summary."""
    root = input_root(which, view)
    _require_folder(which, root)
    if which == "corpus":
        records = read_corpus(root).records
        return f"corpus {root}: {len(records)} images of {len({r.subject for r in records})} identities"
    data = view.section("data")
    found = read_labelled(data)
    records = found.records
    classes = resolve_classes(records, data.classes)
    summary = summarise(records, classes, has_subjects=found.has_subjects)
    plan = plan_rows(view.as_dict())
    check_requirements(summary, view.section("folds"), view.get("dgcn.reference_target"), where=str(root),
                       rows=plan.rows)
    return (
        f"dataset {root}: {summary.n_images} images, {len(summary.labels_by_subject)} subjects, "
        f"classes {', '.join(classes)}"
    )


def preflight(params: Mapping[str, Any], made_from: Mapping[str, str], plan: RowPlan) -> list[str]:
    """Snakemake's look before any job (module docstring): check both inputs (the corpus
    only when the rows ``plan`` runs read it), and rewrite a fingerprint file that no
    longer matches its input. ``made_from[input]`` is a file
    made from the input (alignment's output): when it exists, a missing fingerprint is
    written too. Returns what was rewritten (one line each); raises
    :class:`DatasetError` on a failed check."""
    demo = params["data"]["format"] == "demo"
    notes = []
    for which in INPUTS:
        view = DeclaredParams(params, CHECK_KEYS[which])
        if which == "corpus" and not plan.uses_corpus:
            continue
        root = input_root(which, view)
        if demo and not root.exists():
            continue  # make_demo writes it; the fingerprint job checks it
        fp, _, _ = checked_fingerprint(which, view)
        out = Path(fingerprint_file(which))
        if out.exists() or Path(made_from[which]).exists():
            if save_fingerprint(out, fp):
                notes.append(f"{root} changed: {out} rewritten, so what is made from it will be made again")
    return notes
