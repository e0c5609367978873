# Helpers shared by the rules: parameter validation, the checks of the image inputs and
# their fingerprints, declared keys, code dependencies; the check that dvc.yaml is a fresh
# render (rule check_dag), and the record of every Snakemake run's outputs in dvc.lock
# (onsuccess), so that both tools share one state.
import os
import sys
from glob import glob

sys.path.insert(0, os.path.abspath("workflow/scripts"))  # the scripts' helpers (_common, codedeps, dvcgen)

from _common import check_pipeline_params
from _dataset import CHECK_KEYS, fingerprint_file, preflight
from codedeps import code_files
from dvcgen import (
    DAG_CHECK_RULE,
    DAG_CHECK_STAMP,
    DvcGenError,
    check_before_jobs,
    dag_check_command,
    record_in_dvc,
)
from snakemake.exceptions import WorkflowError
from fer.params import ParamsError, load_yaml, plan_rows, subset, validate_params

PARAMS_FILE = "params.yaml"
SCHEMA_FILE = "workflow/schemas/params.schema.yaml"

# params.yaml is the one parameter file: refuse --config / --configfile, whose nested
# values would never reach the scripts (they read params.yaml, like DVC does).
if config != load_yaml(PARAMS_FILE):
    raise ParamsError(
        "snakemake --config/--configfile are refused: edit params.yaml "
        "(or use `dvc exp run -S key=value`), the one parameter file"
    )
validate_params(config, SCHEMA_FILE, source=PARAMS_FILE)
check_pipeline_params(config, PARAMS_FILE)
# The rows this run trains (params.yaml methods, checked against the data and the corpus:
# fer.params.plan_rows): the DAG, dvc.yaml and the report follow it.
PLAN = plan_rows(config)
# Before any job: the dataset and (when a row that runs needs it) the corpus are read and
# checked against what params.yaml asks of them, and a content fingerprint that no longer
# matches its data is rewritten, so that alignment and everything after it re-run
# (workflow/scripts/_dataset.py).
for _note in preflight(
    config, made_from={"dataset": "data/aligned/meta.json", "corpus": "data/aligned_corpus/meta.json"}, plan=PLAN
):
    print(_note, file=sys.stderr)


def identity_model(wildcards):
    """The identity network a fold's FESGAN / FERSNet job uses: the one trained on the
    face-recognition corpus, or (corpus.root '') the fold's own, trained on the fold's
    training subjects."""
    if PLAN.identity == "corpus":
        return "models/identity/identity.pt"
    # A label budget's split uses its fold's network: identities are not expression labels,
    # and the fold's training subjects are the budget's labelled + unlabelled ones.
    return f"models/identity/fold-{wildcards.fold.split('-')[0]}.pt"


def start_input(section):
    """The start file of a recogniser section (params ``init``) as an input of its rules:
    the identity network (``identity``: the fold's, or the corpus's) or the file named;
    nothing for ``scratch``. Both tools track its content."""

    def inputs(wildcards):
        init = config[section]["init"]
        if init == "scratch":
            return {}
        return {"init": identity_model(wildcards) if init == "identity" else init}

    return inputs


def start_arg(section):
    """`` --start <file>`` for a recogniser section whose ``init`` is not scratch, else
    nothing. Optional options start with their space and follow the previous word directly
    in the shell command ("...{wildcards.fold}{params.start} --images"): no double space,
    which DVC's dvc.lock does not keep (its YAML folds long lines), so the command would
    read as changed."""

    def arg(wildcards):
        init = start_input(section)(wildcards)
        return f" --start {init['init']}" if init else ""

    return arg


# folds.protocol official: one fold, the dataset's own split (fer.data.folds.official_fold).
FOLDS = [0] if config["folds"]["protocol"] == "official" else list(range(config["folds"]["n_folds"]))
# Label budgets (labels.budgets, fer.data.budgets): every per-fold job also runs for the
# split "K-bJ", fold K with only budget slot J's labels (data/budgets.json). Keys name
# slots, not fractions, so that changing a fraction keeps the DAG and re-runs only what
# depends on it.
BUDGETS = list(config["labels"]["budgets"])
BUDGET_SLOTS = list(range(1, len(BUDGETS) + 1))
BUDGET_SPLITS = {j: [f"{k}-b{j}" for k in FOLDS] for j in BUDGET_SLOTS}


def folds_input(wildcards):
    """The split file a per-fold job reads: data/folds.json for fold K with all labels,
    data/budgets.json for a budget split K-bJ."""
    return "data/budgets.json" if "-b" in wildcards.fold else "data/folds.json"


wildcard_constraints:
    fold=r"\d+(-b\d+)?",

# Threads of a training job: compute.threads, a parameter rather than the scheduler's
# share of the cores, because CPU results depend on the thread count (same params, same
# numbers, under Snakemake and DVC alike).
GPU_JOB_THREADS = config["compute"]["threads"]

# Every job writes its output to its log; on failure the log's tail goes to stderr, so
# `dvc repro` (which shows only the exit status) shows the error too.
TO_LOG = "> {log} 2>&1 || (tail -n 30 {log} >&2; exit 1)"


def declare(*keys):
    """The params.yaml keys a rule reads: drives Snakemake's params re-run trigger (cfg),
    the DVC stage's params (params.declared, read by the dvc.yaml generator;
    "keys" is a reserved name in Snakemake) and what the script may
    read (--keys {params.declared})."""
    return {"declared": ",".join(keys), "cfg": subset(config, keys)}


def code(script):
    """Code files a rule depends on, derived from its script's import closure inside the
    project (workflow/scripts/codedeps.py): the script, its helpers, every fer module it
    can import. Listed file by file, because Snakemake judges a directory input by the
    directory's own mtime. (No rule lists the DAG check's stamp: rule check_dag below.)"""
    return code_files(f"workflow/scripts/{script}.py")


def dag_inputs():
    """Everything the render of dvc.yaml reads: the Snakefile and its rules, params.yaml
    and its schema, every script (the rules' code inputs are their import closures) and
    every fer module. When none of them changed, dvc.yaml cannot have become stale."""
    files = ["Snakefile", PARAMS_FILE, SCHEMA_FILE, *glob("workflow/rules/*.smk"), *glob("workflow/scripts/*.py"),
             *glob("src/fer/**/*.py", recursive=True)]
    return sorted(set(files))


def corpus_input():
    """What the corpus alignment depends on: the content fingerprint of the unlabelled
    corpus (corpus.root), not the folder, whose own time stamp says nothing about the
    files inside."""
    return fingerprint_file("corpus")


def dataset_input():
    """What the alignment depends on: the content fingerprint of the dataset (data.root:
    the demo generator's output, or the user's dataset for the csv and folders formats)."""
    return fingerprint_file("dataset")


def demo_output():
    """The demo generator's output folder with data.format demo (the image inputs are in
    it), nothing otherwise."""
    return ["data/demo"] if config["data"]["format"] == "demo" else []


rule check_dag:
    """dvc.yaml is a fresh render of the Snakefile for params.yaml (`make dvc-yaml`), or
    the run stops here, before any other job, naming that command. Under DVC it is the
    first stage of every `dvc repro` and `dvc exp run` (the render makes every other stage
    depend on its output) and it re-runs whenever anything that shapes the DAG changed
    (the number of folds, the dataset or corpus root, a rule, a script's imports); its
    output never changes, so a passing check re-runs nothing downstream. Under Snakemake no
    job depends on it: onstart below runs the same command before the first job (with the
    stamp as an input of every rule, Snakemake ran only the check after an edit of
    params.yaml or the code, and not the jobs the edit made stale: dvcgen.py says why)."""
    input:
        dag_inputs(),
    output:
        DAG_CHECK_STAMP,
    log:
        "logs/check_dag.log",
    shell:
        "mkdir -p logs && python " + " ".join(dag_check_command(stamp="{output}")) + " " + TO_LOG


onstart:
    # The DAG check before any job (rule check_dag's command, when its stamp is missing or
    # older than one of its inputs): a stale dvc.yaml stops the run here, naming the fix.
    try:
        check_before_jobs(dag_inputs())
    except DvcGenError as e:
        raise WorkflowError(str(e)) from None


onsuccess:
    # One state for both tools: DVC records what this run made (and what it found up to
    # date) in dvc.lock, so `dvc status` is clean and `dvc exp run` re-runs only what a
    # changed parameter affects; and the DAG check, which onstart ran (or found fresh) for
    # the current inputs. Outside a DVC repository there is nothing to record.
    recorded = record_in_dvc(workflow.dag.jobs, also=(DAG_CHECK_RULE,))
    if recorded:
        print(f"DVC: recorded the outputs of {len(recorded)} stages in dvc.lock (dvc commit -f)", file=sys.stderr)
