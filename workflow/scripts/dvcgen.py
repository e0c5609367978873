"""Render dvc.yaml from the Snakefile: one DVC stage per Snakemake job.

The Snakefile is the one description of the pipeline's DAG; dvc.yaml is derived from it
(``make dvc-yaml``) and ``tests/test_dvc_sync.py`` fails when the committed file differs
from a fresh render. The render plans the DAG only: no job runs, no output has to exist.

What goes into a stage (one per job needed by the default target, plus the DAG check
below, with ``forceall`` so every job is listed even when its outputs already exist):

* name: the rule name, or ``rule__wc-value`` (``__``-joined per wildcard) for wildcard jobs,
  e.g. ``train_baseline__fold-3``. DVC reserves ``@`` (foreach/matrix) and rejects other
  punctuation except ``_`` and ``-``; such characters in wildcard values become ``_``.
* ``cmd``: the job's shell command formatted by Snakemake (``Job.shellcmd``, the same
  ``snakemake.utils.format`` call with the same job variables that ``shell()`` makes when
  the job runs), so both tools run the same string.
* ``deps``: the job's inputs (code files included), sorted and de-duplicated.
* ``params``: the params.yaml keys the rule declares (``declare()`` in
  workflow/rules/common.smk puts ``declared="a,b.c"`` and ``cfg=<dict>`` on the rule;
  see :func:`_declared_keys`), in declared order. DVC reads them from params.yaml; a
  section name stands for every key under it.
* outputs, typed by the rule's output names and flags:
  ``metrics`` -> ``metrics`` (cache: false); ``plots`` -> ``plots`` (cache: false,
  ``x: epoch``); a ``.png`` wrapped in ``report()`` -> a plain (cached) out, so that
  ``dvc checkout`` and experiments restore it (reports/ is git-ignored), and it is listed
  under the top-level ``plots:`` so ``dvc plots show`` renders it as an image; anything
  else (``directory()`` outputs included) -> ``outs``. Logs are not outputs.
* an output named ``fingerprint`` (:data:`FINGERPRINT_OUTPUT`; a dataset's content
  fingerprint, workflow/scripts/_dataset.py) -> ``{path: {cache: false, persist: true}}``,
  and its stage gets ``always_changed: true``: DVC re-evaluates it on every run, the
  command rewrites the file only when the content changed (``persist`` keeps DVC from
  deleting it first), so the stages that depend on it re-run exactly then. Snakemake
  re-evaluates the same fingerprint when it reads the Snakefile (workflow/rules/common.smk).
* top-level ``plots:``: per rule with ``plots`` outputs, one curve plot per group of
  :data:`CURVE_PLOTS` (x: epoch) across all of that rule's CSVs (e.g. all folds), plus
  the report images.

Rules without outputs (the ``all`` target) have no stage. A rule that has outputs but no
``shell:`` command cannot be rendered and is an error.

**The DAG check.** dvc.yaml is rendered for one params.yaml: the number of folds, the
dataset and corpus roots and the rules' code files shape it. So that it cannot drift from
params.yaml unnoticed, the Snakefile has a rule :data:`DAG_CHECK_RULE` (workflow/rules/
common.smk) whose command is this module's ``--check dvc.yaml --stamp`` (a fresh render
compared with dvc.yaml; on a difference it exits 1 naming ``make dvc-yaml``) and whose
inputs are everything the render reads (the Snakefile, the rules, params.yaml, the
scripts, the schema, every ``fer`` module). The render gives every other stage its output
(:data:`DAG_CHECK_STAMP`) as a dependency, so it is the first stage of every ``dvc repro``
and ``dvc exp run``, and any change to what shapes the DAG re-runs it. Its stamp never
changes, so a passing check re-runs nothing downstream. The render makes its output
``persist: true``, which turns DVC's run cache off for that one stage: a run-cache hit
(the same params.yaml and code as an earlier run) would restore the stamp without running
the check, whatever dvc.yaml says now.

**Under Snakemake no job depends on the stamp**; the Snakefile runs the same check in its
``onstart`` handler (:func:`check_before_jobs`), before the first job, whenever the stamp
is missing or older than one of the check's inputs. Measured (snakemake 9.27.1): with
the stamp as an ``ancient`` input of every rule, a run after any edit of params.yaml or of
a code file ran the check *and nothing else*. Snakemake's ``DAG.update_needrun`` skips the
own checks (mtime, params, code) of every job downstream of a job that must run
("masked"), and then does not propagate the need to run across an edge whose files are
all ``ancient``; so the stale jobs were never looked at, the run reported success, and
:func:`record_in_dvc` then recorded their old outputs as current in dvc.lock. A rule that
lists the stamp itself is an error (:class:`DvcGenError`).

**One state after a Snakemake run** (:func:`record_in_dvc`): the Snakefile's
``onsuccess`` handler records the outputs of every job of the finished run's DAG in
dvc.lock (what ``dvc commit --force`` of their stages does, through DVC's Python API), so
DVC knows them as Snakemake does.

Snakemake internals used (pinned: snakemake == 9.27.1, checked at run time):

* ``snakemake.api.SnakemakeApi(OutputSettings(...)).workflow(...)`` returns a
  ``WorkflowApi``; its private property ``_workflow`` includes the Snakefile and returns
  the ``snakemake.workflow.Workflow``; ``workflow.rules`` (their ``name``) and
  ``workflow.default_target`` (the rule name) name the targets.
  ``WorkflowApi.dag(DAGSettings(targets=..., forceall=True))`` sets
  ``workflow.dag_settings`` (done through the public ``dag()`` call).
* ``Workflow._prepare_dag(forceall=True, ignore_incomplete=True, lock_warn_only=True,
  nolock=True)`` builds the ``DAG`` object for those targets (the same call that
  ``printrulegraph`` makes) and ``Workflow._build_dag()`` runs ``dag.init()`` and the
  checkpoint update; the DAG is then ``workflow.dag``. Neither executes a job nor takes
  the working-directory lock.
* ``DAG.toposorted()`` -> list of layers of ``Job`` (a topological order; each layer is
  sorted here by rule name and natural wildcard order for a stable file).
* ``Job``: ``rule`` (``rule.name``), ``wildcards_dict``, ``shellcmd``, ``input``,
  ``output``, ``params`` (``params.items()``); ``job.output._get_names()`` (private
  ``Namedlist`` method, yields ``(name, (start, end))``) maps output positions to their
  names; output flags via ``snakemake.io.is_flagged(f, "directory" | "report")``.
* ``workflow.config``: the config Snakemake loaded (``configfile: "params.yaml"``).
* Logging is silenced with ``OutputSettings(quiet={Quietness.ALL},
  log_level_override=WARNING, enable_file_logging=False)``.
"""

from __future__ import annotations

import argparse
import copy
import difflib
import logging
import os
import re
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

#: The snakemake version whose internals this module uses.
SNAKEMAKE_VERSION = "9.27.1"

HEADER = (
    "# GENERATED FILE - do not edit by hand.\n"
    "# Rendered from the Snakefile by `make dvc-yaml` (workflow/scripts/render_dvc_yaml.py,\n"
    "# workflow/scripts/dvcgen.py) for the current params.yaml: one stage per Snakemake job,\n"
    "# same commands, deps = job inputs, params = the keys each rule declares.\n"
    "# Edit the rules (workflow/rules/*.smk) and re-render; tests/test_dvc_sync.py fails when\n"
    "# this file differs from a fresh render.\n"
)

#: Top-level curve plots drawn for every rule output named ``plots`` (CSV, one row per
#: epoch): plot-id suffix -> y columns. The columns must exist in the CSV
#: (see fer.training.protocol.CURVE_COLUMNS).
CURVE_PLOTS: dict[str, tuple[str, ...]] = {
    "loss": ("train/loss", "val/loss"),
    "accuracy": ("train/acc", "val/acc", "val/mean_class_acc"),
}
CURVE_X = "epoch"

#: Output name of a content fingerprint: an always-changed stage, its output persisted.
FINGERPRINT_OUTPUT = "fingerprint"

#: Name of the rule param holding the declared keys as a nested dict (common.smk).
CFG_PARAM = "cfg"
#: Name of the param holding the comma-separated declared keys (common.smk). Not ``keys``:
#: snakemake's Namedlist reserves that name ("keys is reserved for internal use").
KEYS_PARAM = "declared"

_INVALID_NAME_CHARS = re.compile(r"[^A-Za-z0-9_\-]")

#: The rule whose command checks that dvc.yaml is a fresh render (workflow/rules/common.smk).
DAG_CHECK_RULE = "check_dag"
#: Its output, an input of every other rule: written when the check passes, never changes.
DAG_CHECK_STAMP = "data/dag.ok"
#: The check's script; its command line is :func:`dag_check_command`, for the rule and for
#: :func:`check_before_jobs` alike.
DAG_CHECK_SCRIPT = "workflow/scripts/render_dvc_yaml.py"
STAMP_TEXT = "dvc.yaml was a fresh render of the Snakefile for params.yaml when the last stage began\n"
#: The command that brings dvc.yaml up to date.
FIX = "make dvc-yaml"


class DvcGenError(RuntimeError):
    """The Snakefile breaks a convention the generator relies on."""


@dataclass
class JobInfo:
    """What the generator needs from one Snakemake job."""

    rule: str
    wildcards: list[tuple[str, str]]
    cmd: str | None
    inputs: list[str]
    outputs: list[tuple[str, str | None, frozenset[str]]]  # path, name, flags
    keys: list[str]

    @property
    def name(self) -> str:
        return stage_name(self.rule, self.wildcards)


def stage_name(rule: str, wildcards: Sequence[tuple[str, str]]) -> str:
    """``rule`` or ``rule__wc-value[__wc2-value2]``; only characters DVC allows."""
    parts = [rule] + [f"{k}-{v}" for k, v in wildcards]
    return _INVALID_NAME_CHARS.sub("_", "__".join(parts))


def _natural(value: str) -> tuple:
    """Sort key: numbers compare as numbers (fold-10 after fold-2)."""
    return tuple((0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", value) if t)


def _job_sort_key(job: JobInfo) -> tuple:
    return (job.rule, tuple((k, _natural(v)) for k, v in job.wildcards))


# ----------------------------------------------------------------------------- params
def _has_key(params: Mapping[str, Any], dotted: str) -> bool:
    node: Any = params
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False
        node = node[part]
    return True


def _subset(params: Mapping[str, Any], keys: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in keys:
        node: Any = params
        for part in key.split("."):
            node = node[part]
        target = out
        parts = key.split(".")
        for part in parts[:-1]:
            target = target.setdefault(part, {})
        target[parts[-1]] = copy.deepcopy(node)
    return out


def _split_keys(value: str) -> list[str]:
    return [k.strip() for k in value.split(",") if k.strip()]


def _declared_keys(rule: str, params: Sequence[tuple[str, Any]], config: Mapping[str, Any]) -> list[str]:
    """The params.yaml keys a rule declares.

    ``declare()`` puts two params on a rule: the keys as one comma-separated string
    (named :data:`KEYS_PARAM`) and ``cfg``, the declared part of the config. Should the
    keys param be renamed, the one string param whose keys reproduce ``cfg`` is used.
    A rule without ``cfg`` and without a keys param declares none. Every key must exist
    in params.yaml.
    """
    named = dict(params)
    cfg = named.get(CFG_PARAM)
    candidates: list[tuple[str, list[str]]] = []
    for name, value in params:
        if name == CFG_PARAM or not isinstance(value, str):
            continue
        keys = _split_keys(value)
        if name == KEYS_PARAM:
            candidates = [(name, keys)]
            break
        if cfg is not None and keys and all(_has_key(config, k) for k in keys) and _subset(config, keys) == cfg:
            candidates.append((name, keys))
    if not candidates:
        if cfg is not None and cfg != {}:
            raise DvcGenError(
                f"rule {rule}: has a {CFG_PARAM!r} param but no comma-separated keys param that "
                "produces it (declare the keys with declare() from workflow/rules/common.smk)"
            )
        return []
    if len(candidates) > 1:
        names = [n for n, _ in candidates]
        raise DvcGenError(f"rule {rule}: several params could be the declared keys: {names}")
    keys = candidates[0][1]
    for k in keys:
        if not _has_key(config, k):
            raise DvcGenError(f"rule {rule}: declared params key {k!r} is not in params.yaml")
    if len(set(keys)) != len(keys):
        raise DvcGenError(f"rule {rule}: declared params keys repeat: {keys}")
    return keys


# ----------------------------------------------------------------------------- snakemake
def _check_snakemake_version() -> None:
    import snakemake

    if snakemake.__version__ != SNAKEMAKE_VERSION:
        raise DvcGenError(
            f"fer.workflow.dvcgen uses snakemake {SNAKEMAKE_VERSION} internals, found "
            f"{snakemake.__version__}: check the internals listed in its docstring and update the pin"
        )


def collect_jobs(workdir: str | Path = ".", snakefile: str = "Snakefile") -> tuple[list[JobInfo], dict[str, Any]]:
    """Plan the DAG of the default target and, when the Snakefile has one, the
    :data:`DAG_CHECK_RULE` (forceall; no other rule depends on it), and return its jobs in
    topological order (layers, each sorted by rule and natural wildcard order) and the
    config."""
    _check_snakemake_version()
    from snakemake.api import SnakemakeApi
    from snakemake.io import is_flagged
    from snakemake.settings.enums import Quietness
    from snakemake.settings.types import DAGSettings, OutputSettings, ResourceSettings

    workdir = Path(workdir).resolve()
    snakefile_path = Path(snakefile)
    if not snakefile_path.is_absolute():
        snakefile_path = workdir / snakefile_path
    if not snakefile_path.exists():
        raise DvcGenError(f"Snakefile not found: {snakefile_path}")

    output_settings = OutputSettings(
        dryrun=True,
        quiet={Quietness.ALL},
        log_level_override=logging.WARNING,
        enable_file_logging=False,
    )
    cwd = os.getcwd()
    try:
        with SnakemakeApi(output_settings) as api:
            wf_api = api.workflow(
                resource_settings=ResourceSettings(cores=1),
                snakefile=snakefile_path,
                workdir=workdir,
            )
            workflow = wf_api._workflow
            # the default target, plus the DAG check (no Snakemake job depends on it: DVC's
            # stages get its stamp from the render, _dag_check_stamp_dep)
            targets = frozenset()
            if DAG_CHECK_RULE in {r.name for r in workflow.rules} and workflow.default_target is not None:
                targets = frozenset({workflow.default_target, DAG_CHECK_RULE})
            wf_api.dag(DAGSettings(targets=targets, forceall=True))  # sets workflow.dag_settings
            workflow._prepare_dag(forceall=True, ignore_incomplete=True, lock_warn_only=True, nolock=True)
            workflow._build_dag()
            dag = workflow.dag
            config = copy.deepcopy(dict(workflow.config))

            layers = [list(layer) for layer in dag.toposorted()]
            ordered: list[JobInfo] = []
            for layer in layers:
                layer_infos = []
                for job in layer:
                    names: dict[int, str] = {}
                    for name, (start, end) in job.output._get_names():
                        for i in range(start, start + 1 if end is None else end):
                            names[i] = name
                    outputs = []
                    for i, f in enumerate(job.output):
                        flags = frozenset(fl for fl in ("directory", "report") if is_flagged(f, fl))
                        outputs.append((str(f), names.get(i), flags))
                    params = list(job.params.items())
                    info = JobInfo(
                        rule=job.rule.name,
                        wildcards=[(str(k), str(v)) for k, v in job.wildcards_dict.items()],
                        cmd=job.shellcmd,
                        inputs=[str(f) for f in job.input],
                        outputs=outputs,
                        keys=_declared_keys(job.rule.name, params, config),
                    )
                    layer_infos.append(info)
                layer_infos.sort(key=_job_sort_key)
                ordered.extend(layer_infos)
    finally:
        os.chdir(cwd)
    return ordered, config


# ----------------------------------------------------------------------------- render
def _stage(job: JobInfo, also: Sequence[str] = ()) -> dict[str, Any]:
    """The DVC stage of ``job``; ``also``: dependencies beyond its inputs (the DAG check's stamp)."""
    if job.cmd is None:
        raise DvcGenError(f"rule {job.rule}: has outputs but no shell: command (run:/script: cannot go in dvc.yaml)")
    stage: dict[str, Any] = {"cmd": job.cmd.strip()}
    if any(name == FINGERPRINT_OUTPUT for _, name, _ in job.outputs):
        stage["always_changed"] = True
    deps = sorted({*job.inputs, *also})
    if deps:
        stage["deps"] = deps
    if job.keys:
        stage["params"] = list(job.keys)
    outs: list[Any] = []
    metrics: list[Any] = []
    plots: list[Any] = []
    for path, name, flags in job.outputs:
        if job.rule == DAG_CHECK_RULE:
            outs.append({path: {"persist": True}})  # no run cache: the check always really runs
        elif "directory" in flags:
            outs.append(path)
        elif name == FINGERPRINT_OUTPUT:
            outs.append({path: {"cache": False, "persist": True}})
        elif name == "metrics":
            metrics.append({path: {"cache": False}})
        elif name == "plots":
            plots.append({path: {"cache": False, "x": CURVE_X}})
        else:
            outs.append(path)
    if outs:
        stage["outs"] = outs
    if metrics:
        stage["metrics"] = metrics
    if plots:
        stage["plots"] = plots
    return stage


def _top_level_plots(jobs: Sequence[JobInfo]) -> list[Any]:
    curves: dict[str, list[str]] = {}
    images: list[str] = []
    for job in jobs:
        for path, name, flags in job.outputs:
            if name == "plots" and "directory" not in flags:
                curves.setdefault(job.rule, []).append(path)
            elif "report" in flags and path.lower().endswith(".png"):
                images.append(path)
    plots: list[Any] = []
    for rule in sorted(curves):
        for suffix, columns in CURVE_PLOTS.items():
            plots.append(
                {
                    f"{rule}_{suffix}": {
                        "template": "linear",
                        "x": CURVE_X,
                        "y": {path: list(columns) for path in curves[rule]},
                    }
                }
            )
    plots.extend(sorted(images))
    return plots


def render(workdir: str | Path = ".", snakefile: str = "Snakefile") -> dict:
    """The dvc.yaml document for the Snakefile in ``workdir`` and its params.yaml."""
    jobs, _config = collect_jobs(workdir, snakefile)
    stamp = _dag_check_stamp_dep(jobs)
    jobs = sorted(jobs, key=lambda job: job.rule != DAG_CHECK_RULE)  # the check first (stable: topological order kept)
    stages: dict[str, Any] = {}
    for job in jobs:
        if not job.outputs:
            if job.cmd is not None:
                raise DvcGenError(f"rule {job.rule}: a shell command without outputs cannot be a DVC stage")
            continue  # a pure target such as `all`
        if "__" in job.rule:
            raise DvcGenError(f"rule {job.rule}: '__' separates rule and wildcards in stage names")
        name = job.name
        if "@" in name:  # cannot happen after sanitising; kept as a guard
            raise DvcGenError(f"stage name {name!r} contains '@'")
        if name in stages:
            raise DvcGenError(f"two jobs map to the same stage name {name!r}")
        stages[name] = _stage(job, () if job.rule == DAG_CHECK_RULE else stamp)
    doc: dict[str, Any] = {"stages": stages}
    plots = _top_level_plots(jobs)
    if plots:
        doc["plots"] = plots
    return doc


def _dag_check_stamp_dep(jobs: Sequence[JobInfo]) -> tuple[str, ...]:
    """The dependency every stage but the check gets: :data:`DAG_CHECK_STAMP` when the
    Snakefile has a :data:`DAG_CHECK_RULE`, so that ``dvc repro`` runs the check before any
    stage. Snakemake jobs do not depend on it (the Snakefile runs the check in ``onstart``,
    before its first job; the module docstring says why). A rule that lists the stamp
    itself is refused: it would bring back what that avoids."""
    if not any(job.rule == DAG_CHECK_RULE for job in jobs):
        return ()
    listed = sorted({job.rule for job in jobs if job.rule != DAG_CHECK_RULE and DAG_CHECK_STAMP in job.inputs})
    if listed:
        raise DvcGenError(
            f"rules {listed} list {DAG_CHECK_STAMP} (the output of rule {DAG_CHECK_RULE}) as an input: remove it; "
            "the render adds it to every DVC stage, and under Snakemake the check runs in onstart"
        )
    return (DAG_CHECK_STAMP,)


class _Dumper(yaml.SafeDumper):
    """Block style, lists indented under their key."""

    def increase_indent(self, flow: bool = False, indentless: bool = False):  # noqa: ARG002
        return super().increase_indent(flow, False)


def dump(doc: dict) -> str:
    """YAML text of a rendered document, with the generated-file header."""
    body = yaml.dump(
        doc,
        Dumper=_Dumper,
        sort_keys=False,
        default_flow_style=False,
        width=2**31 - 1,
        allow_unicode=True,
    )
    return HEADER + body


# ----------------------------------------------------------------------------- graph helpers
def stage_rule(name: str) -> str:
    """Rule name of a stage name (``train_baseline__fold-3`` -> ``train_baseline``)."""
    return name.split("__", 1)[0]


def _paths(entries: Sequence[Any]) -> list[str]:
    out = []
    for e in entries or []:
        out.extend(e.keys() if isinstance(e, Mapping) else [e])
    return [str(p) for p in out]


def stage_edges(doc: Mapping[str, Any]) -> set[tuple[str, str]]:
    """(upstream stage, downstream stage) for each dep that is (inside) another stage's output."""
    stages = doc.get("stages", {})
    producer: dict[str, str] = {}
    for name, st in stages.items():
        for p in _paths(st.get("outs", [])) + _paths(st.get("metrics", [])) + _paths(st.get("plots", [])):
            producer[os.path.normpath(p)] = name
    edges = set()
    for name, st in stages.items():
        for dep in st.get("deps", []):
            d = os.path.normpath(dep)
            for out, up in producer.items():
                if d == out or d.startswith(out + os.sep) or out.startswith(d + os.sep):
                    if up != name:
                        edges.add((up, name))
    return edges


def rule_edges(doc: Mapping[str, Any]) -> set[tuple[str, str]]:
    """:func:`stage_edges` collapsed to rule names."""
    return {(stage_rule(a), stage_rule(b)) for a, b in stage_edges(doc)}


# ----------------------------------------------------------------------------- DVC state after Snakemake
def dag_check_command(dvc_yaml: str = "dvc.yaml", stamp: str = DAG_CHECK_STAMP) -> list[str]:
    """The DAG check's command line after ``python``: rule check_dag's shell command (with
    ``stamp="{output}"``) and :func:`check_before_jobs` run this one list, so the two
    cannot drift apart."""
    return [DAG_CHECK_SCRIPT, "--check", dvc_yaml, "--stamp", stamp]


def check_before_jobs(inputs: Sequence[str], workdir: str | Path = ".", dvc_yaml: str = "dvc.yaml") -> bool:
    """The DAG check under Snakemake (the Snakefile's ``onstart``, before the first job):
    when :data:`DAG_CHECK_STAMP` is missing or older than one of ``inputs`` (the check
    rule's inputs), run the check rule's command (``render_dvc_yaml.py --check dvc.yaml
    --stamp``, in a fresh interpreter: it plans the DAG with Snakemake's API) and raise
    :class:`DvcGenError` with its message when dvc.yaml is stale. Returns whether it ran."""
    workdir = Path(workdir)
    stamp = workdir / DAG_CHECK_STAMP
    if stamp.exists():
        made = stamp.stat().st_mtime_ns
        if all((workdir / f).stat().st_mtime_ns <= made for f in inputs if (workdir / f).exists()):
            return False
    script, *args = dag_check_command(dvc_yaml)
    script_path = Path(__file__).resolve().with_name(Path(script).name)  # this checkout's, from any workdir
    proc = subprocess.run(
        [sys.executable, str(script_path), "--workdir", str(workdir), *args],
        cwd=workdir, capture_output=True, text=True,
    )
    if proc.returncode != 0:
        raise DvcGenError(proc.stderr.strip() or f"the DAG check exited with {proc.returncode}")
    return True


def record_in_dvc(jobs: Sequence[Any], workdir: str | Path = ".", also: Sequence[str] = ()) -> list[str]:
    """Record the outputs of ``jobs`` (Snakemake ``Job`` objects: every job of a
    successfully finished run's DAG, those that ran and those that were up to date) in
    dvc.lock, as ``dvc commit --force <their stages>`` would. Returns the stage names
    (empty outside a DVC repository: nothing to record). Raises :class:`DvcGenError`
    naming the cause when DVC fails.

    Only the run's own jobs are recorded (and the stages named in ``also`` that dvc.yaml
    has: the DAG check, which the Snakefile's onstart ran or found fresh): a stage outside
    the run's targets may be out of date, and committing it would make DVC believe
    otherwise. The commit goes through
    DVC's Python API (``dvc.repo.Repo``, ``lock_repo``, ``stage.collect_granular``,
    ``Stage.save`` / ``commit``, ``dvcfile.dump_stages``: the body of
    ``dvc.repo.commit.commit`` with ``force`` and ``relink=False``, pinned dvc 3.67.1: the
    outputs stay the files the jobs wrote, their mtimes in the order the jobs ran, so the
    next ``snakemake`` finds nothing to do) so that dvc.yaml is
    read and dvc.lock written once: ``dvc commit -f`` with one target per stage
    re-collects and rewrites them per target (measured: 200 s for the 56 stages of the
    tests' tiny pipeline, against 13 s here, on a loaded 2-core machine)."""
    workdir = Path(workdir)
    names = sorted(
        {
            stage_name(job.rule.name, [(str(k), str(v)) for k, v in job.wildcards_dict.items()])
            for job in jobs
            if len(job.output) and job.shellcmd is not None
        }
    )
    if not names or not (workdir / ".dvc").is_dir():
        return []
    try:
        names = _commit_stages([*names, *also], workdir, optional=also)
    except Exception as e:  # DVC's errors: a lock held by another dvc, a missing output, ...
        raise DvcGenError(
            f"every job succeeded, but recording the outputs of {len(names)} stages in dvc.lock failed: "
            f"{type(e).__name__}: {e}\nUntil they are recorded, DVC would re-run those stages: fix the cause, "
            "then run `dvc commit -f`."
        ) from e
    return names


def _commit_stages(names: Sequence[str], workdir: Path, optional: Sequence[str] = ()) -> list[str]:
    """``dvc commit --force`` of the stages ``names`` of ``workdir``'s dvc.yaml, in one pass;
    those also in ``optional`` only where dvc.yaml has them. Returns the names committed."""
    from dvc.repo import Repo, lock_repo

    wanted = set(names)
    with Repo(str(workdir)) as repo, lock_repo(repo):
        infos = [info for info in repo.stage.collect_granular() if info.stage.name in wanted]
        missing = wanted - {info.stage.name for info in infos} - set(optional)
        if missing:
            raise DvcGenError(f"dvc.yaml has no stages {sorted(missing)[:5]}: it is out of date, run `{FIX}`")
        by_file: dict[Any, list[Any]] = {}
        for info in infos:
            info.stage.save()
            # relink=False: the outputs are copied into the cache and left in place untouched.
            # With relink=True (`dvc commit`'s default) DVC re-creates every output from the cache
            # (a fresh copy with the default copy cache type), in dvc.yaml's stage order, so
            # inputs could end newer than the outputs made from them: the next `snakemake`
            # re-ran training jobs of a run that had just finished (measured on a 27-job run).
            info.stage.commit(filter_info=info.filter_info, relink=False)
            by_file.setdefault(info.stage.dvcfile.path, []).append(info.stage)
        for stages in by_file.values():
            stages[0].dvcfile.dump_stages(stages, update_pipeline=False)
    return sorted({info.stage.name for info in infos})


# ----------------------------------------------------------------------------- CLI
#: Errors of the user's inputs that the Snakefile raises while it is parsed (the preflight
#: checks of the dataset against params.yaml, params validation): under DVC they surface in
#: the DAG check, the first stage, and are printed as they are.
INPUT_ERRORS = ("DatasetError", "ParamsError")

def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="render_dvc_yaml.py",
        description="Render dvc.yaml from the Snakefile (one DVC stage per Snakemake job).",
    )
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--out", metavar="DVC_YAML", help="write the rendered file here (atomic)")
    mode.add_argument(
        "--check", metavar="DVC_YAML", help="exit 1 with a unified diff when this file differs from a fresh render"
    )
    ap.add_argument("--workdir", default=".", help="project root holding the Snakefile and params.yaml")
    ap.add_argument("--snakefile", default="Snakefile")
    ap.add_argument(
        "--stamp", metavar="PATH", help="with --check: write this file when the check passes (the DAG check stage)"
    )
    args = ap.parse_args(argv)
    if args.stamp and not args.check:
        ap.error("--stamp goes with --check")

    try:
        text = dump(render(args.workdir, args.snakefile))
    except Exception as e:  # snakemake parse/DAG errors, convention violations
        if type(e).__name__ in INPUT_ERRORS:  # the dataset or params.yaml: the user's problem, said plainly
            print(f"error: {e}", file=sys.stderr)
        else:
            print(f"render_dvc_yaml: cannot render dvc.yaml: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    if args.out:
        from fer.utils.io import write_text

        write_text(args.out, text)
        print(f"wrote {args.out}", file=sys.stderr)
        return 0
    path = Path(args.check)
    current = path.read_text() if path.exists() else ""
    if current == text:
        if args.stamp:
            from fer.utils.io import write_text

            write_text(args.stamp, STAMP_TEXT)
        print(f"{path} is up to date", file=sys.stderr)
        return 0
    diff = difflib.unified_diff(
        current.splitlines(keepends=True),
        text.splitlines(keepends=True),
        fromfile=f"{path} (committed)",
        tofile=f"{path} (fresh render)",
    )
    sys.stdout.writelines(diff)
    sys.stdout.flush()
    print(f"\n{stale_message(path, current, yaml.safe_load(text))}", file=sys.stderr)
    return 1


def _names(names: Sequence[str], limit: int = 3) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def stale_message(path: str | Path, current_text: str, fresh: Mapping[str, Any]) -> str:
    """One paragraph: the command that fixes a stale ``path`` first, then how its text
    ``current_text`` differs from the fresh render ``fresh``, stage by stage."""
    try:
        current = yaml.safe_load(current_text) or {}
    except yaml.YAMLError:
        current = {}
    old = current.get("stages", {}) if isinstance(current, Mapping) else {}
    new = fresh.get("stages", {})
    parts = []
    if added := [n for n in new if n not in old]:
        parts.append(f"adds {len(added)} stages ({_names(added)})")
    if removed := [n for n in old if n not in new]:
        parts.append(f"drops {len(removed)} ({_names(removed)})")
    if changed := [n for n in new if n in old and old[n] != new[n]]:
        parts.append(f"changes {len(changed)} ({_names(changed)})")
    what = "a fresh render " + ", ".join(parts) if parts else "its text differs from a fresh render (diff above)"
    return (
        f"{path} is out of date for params.yaml and the rules: run `{FIX}`, then your command again. "
        f"({what}.)"
    )


if __name__ == "__main__":
    sys.exit(main())
