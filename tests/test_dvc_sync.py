"""dvc.yaml is generated from the Snakefile (fer.workflow.dvcgen): the committed file must
equal a fresh render, and its stage graph must be Snakemake's rule graph."""

from __future__ import annotations

import difflib
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

import dvcgen

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DVC_YAML = ROOT / "dvc.yaml"


def _run(cmd: list[str], cwd: Path) -> str:
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", DVC_NO_ANALYTICS="1")
    proc = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=120)
    assert proc.returncode == 0, f"`{' '.join(cmd)}` failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@pytest.fixture(scope="module")
def committed() -> dict:
    assert DVC_YAML.exists(), "dvc.yaml is missing: run `make dvc-yaml`"
    return yaml.safe_load(DVC_YAML.read_text())


@pytest.fixture(scope="module")
def fresh_text() -> str:
    return dvcgen.dump(dvcgen.render(ROOT))


def _dot_edges(dot: str) -> set[tuple[str, str]]:
    """(upstream, downstream) rule names from `snakemake --rulegraph` dot output."""
    labels = dict(re.findall(r'^\s*(\d+)\s*\[label\s*=\s*"([^"]+)"', dot, flags=re.M))
    return {(labels[a], labels[b]) for a, b in re.findall(r"^\s*(\d+)\s*->\s*(\d+)", dot, flags=re.M)}


# ----------------------------------------------------------------------------- the real project
def test_committed_dvc_yaml_is_a_fresh_render(fresh_text):
    current = DVC_YAML.read_text() if DVC_YAML.exists() else ""
    if current != fresh_text:
        diff = "".join(
            difflib.unified_diff(
                current.splitlines(True), fresh_text.splitlines(True), "dvc.yaml (committed)", "dvc.yaml (fresh render)"
            )
        )
        pytest.fail(f"dvc.yaml is out of date with the Snakefile: run `make dvc-yaml`\n{diff}")


def test_stage_graph_is_the_rulegraph(committed):
    dot = _run([str(BIN / "snakemake"), "--rulegraph", "--cores", "1"], ROOT)
    smk = _dot_edges(dot)
    staged_rules = {dvcgen.stage_rule(n) for n in committed["stages"]}
    smk = {(a, b) for a, b in smk if a in staged_rules and b in staged_rules}  # drop the `all` target
    assert smk, dot
    # plus the render's own edges: the DAG check before every stage (no Snakemake job
    # depends on it; the Snakefile runs it in onstart)
    check = {(dvcgen.DAG_CHECK_RULE, r) for r in staged_rules - {dvcgen.DAG_CHECK_RULE}}
    assert dvcgen.rule_edges(committed) == smk | check


def test_dvc_reads_the_same_graph(committed, tmp_path):
    """DVC's own reading of dvc.yaml (`dvc dag --dot`, in a scratch DVC repo holding only
    dvc.yaml and params.yaml) gives the same stage edges."""
    for name in ("dvc.yaml", "params.yaml"):
        (tmp_path / name).write_text((ROOT / name).read_text())
    _run([str(BIN / "dvc"), "init", "--no-scm", "-q"], tmp_path)
    dot = _run([str(BIN / "dvc"), "dag", "--dot"], tmp_path)
    edges = set(re.findall(r'"([^"]+)"\s*->\s*"([^"]+)"', dot))
    assert edges and edges == dvcgen.stage_edges(committed), dot


def test_stage_params_exist_in_params_yaml(committed):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())

    def has(dotted: str) -> bool:
        node = params
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                return False
            node = node[part]
        return True

    for name, stage in committed["stages"].items():
        for entry in stage.get("params", []):
            keys = [entry] if isinstance(entry, str) else [k for v in entry.values() for k in v]
            for key in keys:
                assert has(key), f"stage {name}: params key {key!r} is not in params.yaml"


def test_commands_have_no_double_space(committed):
    """DVC writes dvc.lock with long lines folded, which loses one space of a double space:
    the stage would then read as 'changed command' (optional options carry their own
    leading space instead; workflow/rules/common.smk, start_arg)."""
    assert [n for n, st in committed["stages"].items() if "  " in st["cmd"]] == []


def test_stage_names_are_valid(committed):
    for name in committed["stages"]:
        assert "@" not in name
        assert re.fullmatch(r"[A-Za-z0-9_\-]+", name), name


def test_every_rule_with_outputs_has_stages(committed):
    """Every rule of the Snakefile but the `all` target has stages in dvc.yaml, except
    train_identity_fold, which only a run without a corpus (corpus.root '') uses: the
    shipped params have one (that DAG is rendered and run in tests/test_readers_end_to_end.py)."""
    from workflow_helpers import snakemake_rules

    rules = {dvcgen.stage_rule(n) for n in committed["stages"]}
    assert rules == snakemake_rules(ROOT) - {"all", "train_identity_fold"}


# ----------------------------------------------------------------------------- the generator on a toy
TOY_SNAKEFILE = textwrap.dedent(
    '''
    configfile: "params.yaml"

    def declare(*keys):
        cfg = {}
        for k in keys:
            node, out = config, cfg
            parts = k.split(".")
            for p in parts[:-1]:
                node = node[p]
                out = out.setdefault(p, {})
            out[parts[-1]] = node[parts[-1]]
        return {"declared": ",".join(keys), "cfg": cfg}

    FOLDS = [0, 1, 10]

    rule all:
        input: "summary.json", "fig.png"

    rule make:
        input: "code/make.py"
        output: directory("data/raw")
        params: **declare("seed", "make")
        log: "logs/make.log"
        shell: "mkdir -p data/raw logs && touch SENTINEL && echo {params.declared} > {log}"

    rule train:
        input: raw="data/raw", code="code/train.py"
        output:
            model="models/fold-{fold}.pt",
            metrics="metrics/fold-{fold}.json",
            plots="plots/fold-{fold}.csv",
        params: **declare("seed", "train.lr")
        log: "logs/train/fold-{fold}.log"
        shell: "python code/train.py --fold {wildcards.fold} --keys {params.declared} --model {output.model} > {log} 2>&1"

    rule summarize:
        input: expand("metrics/fold-{fold}.json", fold=FOLDS), expand("metrics/fold-{fold}.json", fold=FOLDS)
        output:
            metrics="summary.json",
            fig=report("fig.png", category="x"),
        log: "logs/summarize.log"
        shell: "cat {input} > {output.metrics} && touch {output.fig} 2> {log}"
    '''
)


@pytest.fixture
def toy(tmp_path) -> Path:
    (tmp_path / "Snakefile").write_text(TOY_SNAKEFILE)
    (tmp_path / "params.yaml").write_text("seed: 1\nmake: {n: 2}\ntrain: {lr: 0.1, epochs: 3}\n")
    (tmp_path / "code").mkdir()
    for f in ("make.py", "train.py"):
        (tmp_path / "code" / f).write_text("")
    return tmp_path


def test_toy_render(toy):
    doc = dvcgen.render(toy)
    stages = doc["stages"]
    assert list(stages) == ["make", "train__fold-0", "train__fold-1", "train__fold-10", "summarize"]
    assert not (toy / "SENTINEL").exists() and not (toy / "data").exists(), "the render ran a job"

    make = stages["make"]
    assert make["cmd"] == "mkdir -p data/raw logs && touch SENTINEL && echo seed,make > logs/make.log"
    assert make["deps"] == ["code/make.py"]
    assert make["params"] == ["seed", "make"]
    assert make["outs"] == ["data/raw"]

    t1 = stages["train__fold-1"]
    assert t1["cmd"] == (
        "python code/train.py --fold 1 --keys seed,train.lr --model models/fold-1.pt > logs/train/fold-1.log 2>&1"
    )
    assert t1["deps"] == ["code/train.py", "data/raw"]
    assert t1["params"] == ["seed", "train.lr"]
    assert t1["outs"] == ["models/fold-1.pt"]
    assert t1["metrics"] == [{"metrics/fold-1.json": {"cache": False}}]
    assert t1["plots"] == [{"plots/fold-1.csv": {"cache": False, "x": "epoch"}}]

    summ = stages["summarize"]
    assert summ["deps"] == ["metrics/fold-0.json", "metrics/fold-1.json", "metrics/fold-10.json"]  # de-duplicated
    assert "params" not in summ
    assert summ["metrics"] == [{"summary.json": {"cache": False}}]
    assert summ["outs"] == ["fig.png"]
    assert "fig.png" in doc["plots"]
    curve_ids = [next(iter(p)) for p in doc["plots"] if isinstance(p, dict)]
    assert curve_ids == [f"train_{k}" for k in dvcgen.CURVE_PLOTS]

    assert dvcgen.rule_edges(doc) == {("make", "train"), ("train", "summarize")}


def test_toy_dump_is_deterministic_and_valid(toy):
    a = dvcgen.dump(dvcgen.render(toy))
    b = dvcgen.dump(dvcgen.render(toy))
    assert a == b
    assert a.startswith("#") and "make dvc-yaml" in a.splitlines()[1] + a.splitlines()[0]
    assert yaml.safe_load(a) == dvcgen.render(toy)


def test_toy_check_cli(toy, capsys):
    out = toy / "dvc.yaml"
    assert dvcgen.main(["--workdir", str(toy), "--check", str(out)]) == 1  # missing
    assert dvcgen.main(["--workdir", str(toy), "--out", str(out)]) == 0
    assert dvcgen.main(["--workdir", str(toy), "--check", str(out)]) == 0
    out.write_text(out.read_text().replace("--fold 1", "--fold 2"))
    capsys.readouterr()
    assert dvcgen.main(["--workdir", str(toy), "--check", str(out)]) == 1
    diff = capsys.readouterr().out
    assert "-    cmd: python code/train.py --fold 2" in diff and "+    cmd: python code/train.py --fold 1" in diff


def test_toy_rejects_rules_without_shell(tmp_path):
    (tmp_path / "Snakefile").write_text(
        'rule all:\n    input: "a.txt"\n\n'
        'rule a:\n    output: "a.txt"\n    log: "a.log"\n    run:\n        shell("touch {output}")\n'
    )
    with pytest.raises(dvcgen.DvcGenError, match="rule a: .*no shell"):
        dvcgen.render(tmp_path)


def test_stage_name_sanitised():
    assert dvcgen.stage_name("train", [("fold", "3")]) == "train__fold-3"
    assert dvcgen.stage_name("r", [("a", "0.5"), ("b", "x@y")]) == "r__a-0_5__b-x_y"


# ----------------------------------------------------------------------------- the DAG check
CHECKED_SNAKEFILE = textwrap.dedent(
    '''
    configfile: "params.yaml"

    rule all:
        input: expand("out/{n}.txt", n=range(config["n"]))

    rule check_dag:
        input: "params.yaml", "Snakefile"
        output: "data/dag.ok"
        log: "logs/check_dag.log"
        shell: "python render.py --check dvc.yaml --stamp {output} > {log} 2>&1"

    rule make:
        output: "out/{n}.txt"
        params: declared="msg", cfg={"msg": config["msg"]}  # as declare() makes them
        log: "logs/{n}.log"
        shell: "echo {wildcards.n} $(sed -n 's/^msg: //p' params.yaml) > {output}"
    '''
)


def test_dag_check_stage_is_rendered_first_without_run_cache(tmp_path):
    (tmp_path / "Snakefile").write_text(CHECKED_SNAKEFILE)
    (tmp_path / "params.yaml").write_text("n: 2\nmsg: a\n")
    doc = dvcgen.render(tmp_path)
    assert list(doc["stages"])[0] == dvcgen.DAG_CHECK_RULE
    # persist: DVC keeps no run cache for the check, so it cannot be skipped by a cache hit
    assert doc["stages"][dvcgen.DAG_CHECK_RULE]["outs"] == [{dvcgen.DAG_CHECK_STAMP: {"persist": True}}]
    assert all(dvcgen.DAG_CHECK_STAMP in doc["stages"][f"make__n-{n}"]["deps"] for n in (0, 1))


def test_a_rule_that_lists_the_dag_check_stamp_is_refused(tmp_path):
    """The render adds the stamp to every DVC stage; a rule listing it under Snakemake would
    bring back the run that executes the check and nothing else (dvcgen.py)."""
    snakefile = CHECKED_SNAKEFILE.replace('output: "out/{n}.txt"', 'input: ancient("data/dag.ok")\n    output: "out/{n}.txt"')
    (tmp_path / "Snakefile").write_text(snakefile)
    (tmp_path / "params.yaml").write_text("n: 2\nmsg: a\n")
    with pytest.raises(dvcgen.DvcGenError, match=r"\['make'\] list data/dag.ok"):
        dvcgen.render(tmp_path)


ONSTART_CHECK = textwrap.dedent(
    '''
    import sys
    sys.path.insert(0, {scripts!r})
    from dvcgen import check_before_jobs
    onstart:
        check_before_jobs(["params.yaml", "Snakefile"])
    '''
)


def test_an_edit_of_params_reruns_its_jobs_in_one_snakemake_run(tmp_path):
    """Regression: with the stamp an ``ancient`` input of every rule, the first `snakemake`
    after an edit of params.yaml ran the DAG check and nothing else (Snakemake masks the
    jobs downstream of one that must run and does not cross all-ancient edges), so the
    jobs the edit made stale kept their old outputs and the run said it was done. Now the
    check runs in onstart: the same edit re-runs exactly its jobs at once; a stale dvc.yaml
    stops the run before any job, naming the fix."""
    snakefile = ONSTART_CHECK.format(scripts=str(ROOT / "workflow" / "scripts")) + CHECKED_SNAKEFILE
    (tmp_path / "Snakefile").write_text(snakefile)
    (tmp_path / "params.yaml").write_text("n: 2\nmsg: a\n")
    (tmp_path / "dvc.yaml").write_text(dvcgen.dump(dvcgen.render(tmp_path)))
    smk = [str(BIN / "snakemake"), "--cores", "1"]
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")

    def snakemake() -> subprocess.CompletedProcess:
        return subprocess.run(smk, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)

    def ok() -> str:
        proc = snakemake()
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc.stdout + proc.stderr

    ok()
    stamp = tmp_path / dvcgen.DAG_CHECK_STAMP
    assert stamp.read_text() == dvcgen.STAMP_TEXT
    assert (tmp_path / "out" / "1.txt").read_text() == "1 a\n"
    assert "Nothing to be done" in ok()

    (tmp_path / "params.yaml").write_text("n: 2\nmsg: b\n")  # dvc.yaml unchanged: the params are keys, not stages
    out = ok()
    assert (tmp_path / "out" / "1.txt").read_text() == "1 b\n", out
    assert (tmp_path / "out" / "0.txt").read_text() == "0 b\n", out
    assert stamp.stat().st_mtime_ns >= (tmp_path / "params.yaml").stat().st_mtime_ns  # the check ran and passed
    assert "Nothing to be done" in ok()

    (tmp_path / "params.yaml").write_text("n: 3\nmsg: b\n")  # a new job: dvc.yaml is now stale
    proc = snakemake()
    assert proc.returncode != 0
    assert "run `make dvc-yaml`" in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    assert not (tmp_path / "out" / "2.txt").exists()


def test_check_writes_the_stamp_only_when_fresh_and_names_the_fix(tmp_path, capsys):
    (tmp_path / "Snakefile").write_text(CHECKED_SNAKEFILE)
    (tmp_path / "params.yaml").write_text("n: 2\nmsg: a\n")
    out, stamp = tmp_path / "dvc.yaml", tmp_path / "data" / "dag.ok"
    assert dvcgen.main(["--workdir", str(tmp_path), "--out", str(out)]) == 0
    assert dvcgen.main(["--workdir", str(tmp_path), "--check", str(out), "--stamp", str(stamp)]) == 0
    assert stamp.read_text() == dvcgen.STAMP_TEXT
    stamp.unlink()
    (tmp_path / "params.yaml").write_text("n: 3\nmsg: a\n")  # the DAG grows a job; dvc.yaml does not
    capsys.readouterr()
    assert dvcgen.main(["--workdir", str(tmp_path), "--check", str(out), "--stamp", str(stamp)]) == 1
    assert not stamp.exists()
    err = capsys.readouterr().err
    assert "out of date" in err and "run `make dvc-yaml`" in err and "adds 1 stages (make__n-2)" in err, err
    with pytest.raises(SystemExit):
        dvcgen.main(["--workdir", str(tmp_path), "--out", str(out), "--stamp", str(stamp)])


# ----------------------------------------------------------------------------- one state after Snakemake
RECORDING_SNAKEFILE = textwrap.dedent(
    '''
    import sys
    sys.path.insert(0, {scripts!r})
    from dvcgen import record_in_dvc

    rule all:
        input: "b.txt"

    rule a:
        output: "a.txt"
        log: "logs/a.log"
        shell: "echo a > {{output}}"

    rule b:
        input: "a.txt"
        output: "b.txt"
        log: "logs/b.log"
        shell: "cat {{input}} > {{output}}"

    onsuccess:
        print("recorded:", ",".join(record_in_dvc(workflow.dag.jobs)))
    '''
)


def test_a_snakemake_run_records_exactly_its_own_stages_in_dvc_lock(tmp_path):
    """After `snakemake a.txt` DVC knows stage a and not b (b never ran: recording it
    would make DVC believe a missing output is up to date); after the full run, `dvc
    status` is clean with no `dvc commit` by hand. Outside a DVC repository nothing is
    recorded and the run still succeeds."""
    (tmp_path / "Snakefile").write_text(RECORDING_SNAKEFILE.format(scripts=str(ROOT / "workflow" / "scripts")))
    (tmp_path / "dvc.yaml").write_text(dvcgen.dump(dvcgen.render(tmp_path)))
    smk = [str(BIN / "snakemake"), "--cores", "1"]

    plain = tmp_path / "plain"
    plain.mkdir()
    for name in ("Snakefile", "dvc.yaml"):
        (plain / name).write_text((tmp_path / name).read_text())
    assert "recorded: \n" in _run(smk, plain)

    _run(["git", "-c", "init.defaultBranch=main", "init", "-q"], tmp_path)
    _run([str(BIN / "dvc"), "init", "-q"], tmp_path)
    _run([str(BIN / "dvc"), "config", "core.analytics", "false"], tmp_path)
    assert "recorded: a\n" in _run([*smk, "a.txt"], tmp_path)
    status = _run([str(BIN / "dvc"), "status"], tmp_path)
    assert "b:" in status and "a:" not in status, status
    assert "recorded: a,b\n" in _run(smk, tmp_path)
    assert "Data and pipelines are up to date" in _run([str(BIN / "dvc"), "status"], tmp_path)


def test_the_dag_check_before_jobs_runs_the_check_rules_command():
    """``check_before_jobs`` (Snakemake's onstart) and rule check_dag (the DVC stage) run
    one command line, :func:`dvcgen.dag_check_command`: the committed dvc.yaml's check
    stage runs exactly it."""
    doc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    cmd = doc["stages"][dvcgen.DAG_CHECK_RULE]["cmd"]
    assert f"python {' '.join(dvcgen.dag_check_command())} > " in cmd, cmd
    assert (ROOT / dvcgen.dag_check_command()[0]).is_file()
