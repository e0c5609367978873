# Summaries per method and the HTML report: self-contained, readable offline.

# The rows this run trains (params.yaml methods: PLAN, common.smk), under the same folds,
# seeds and metrics (the report's comparison table).
assert set(PLAN.rows) <= {"baseline", *JOINT_VARIANTS, *CORPUS_METHODS, *COMPARISON_METHODS, "fixmatch"}
METHODS = list(PLAN.rows)
# The rows that also run with all labels (the corpus row without a corpus runs at the
# label budgets only: PLAN.budget_only).
FULL_METHODS = list(PLAN.full_rows)


wildcard_constraints:
    method="|".join(METHODS),
    slot=r"\d+",


def per_fold(pattern, when):
    """``pattern`` for every fold when ``when`` (a report section whose row runs), else nothing."""
    return expand(pattern, fold=FOLDS) if when else []


# Which of the report's sections have their rows in this run.
HAS_FESGAN = any(v in PLAN.rows for v in JOINT_VARIANTS)
HAS_CORPUS_ROWS = PLAN.corpus_row_with_all_labels


def identity_metrics():
    """The identity network's metrics, when a FESGAN row used it (the FESGAN section)."""
    if not HAS_FESGAN:
        return []
    if PLAN.identity == "corpus":
        return ["metrics/identity/identity.json"]
    return expand("metrics/identity/fold-{fold}.json", fold=FOLDS)


def method_fold_metrics(wildcards):
    return expand("metrics/{method}/fold-{fold}.json", method=wildcards.method, fold=FOLDS)


def budget_fold_metrics(wildcards):
    """A row's metrics on every fold at budget slot J (split keys K-bJ)."""
    return expand("metrics/{method}/fold-{split}.json", method=wildcards.method,
                  split=BUDGET_SPLITS[int(wildcards.slot)])


#: The report's optional inputs (rule report); each is passed as --<name with dashes>.
REPORT_SECTIONS = ("synthetic", "fesgan", "fesgan_results", "identity", "pseudo", "pseudo_quality", "corpus_rounds",
                   "dgcn_results", "fersnet_results", "fersnet_synthesis", "budgets", "budget_summaries",
                   "budget_pseudo_quality")


def report_section_args(wildcards, input):
    """The options of the report's sections whose rows run (an empty section has no option,
    so the command has no trace of it: the same text under Snakemake and DVC)."""
    return "".join(f" --{name.replace('_', '-')} {' '.join(input[name])}" for name in REPORT_SECTIONS
                   if list(input[name]))


rule summarize:
    """Mean and standard deviation over folds, pooled confusion matrix figure."""
    input:
        fold_metrics=method_fold_metrics,
        meta="data/aligned/meta.json",
        folds="data/folds.json",
        code=code("summarize"),
    output:
        metrics="metrics/{method}/summary.json",
        figure=report(
            "reports/figures/{method}_confusion.png",
            caption="../report/confusion.rst",
            category="Confusion matrices",
        ),
    log:
        "logs/summarize/{method}.log",
    shell:
        "mkdir -p logs/summarize && python workflow/scripts/summarize.py --method {wildcards.method} "
        "--meta {input.meta} --folds {input.folds} --out {output.metrics} --figure {output.figure} "
        "{input.fold_metrics} "
        + TO_LOG


rule summarize_budget:
    """A row's mean and standard deviation over folds at one label budget (slot J of
    labels.budgets), with the budget's fractions."""
    input:
        fold_metrics=budget_fold_metrics,
        meta="data/aligned/meta.json",
        budgets="data/budgets.json",
        code=code("summarize"),
    output:
        metrics="metrics/{method}/summary-b{slot}.json",
    log:
        "logs/summarize/{method}-b{slot}.log",
    shell:
        "mkdir -p logs/summarize && python workflow/scripts/summarize.py --method {wildcards.method} "
        "--meta {input.meta} --folds {input.budgets} --budget-slot {wildcards.slot} --out {output.metrics} "
        "{input.fold_metrics} "
        + TO_LOG


rule report:
    """reports/index.html: comparison table with paired tests, confusion matrices,
    training curves, FESGAN sample grids, synthetic-set quality, pseudo-label quality per
    round with a 2-D map of the corpus, model sizes, the comparison methods' sample grids,
    aligned faces per class, alignment QA, folds, params and provenance."""
    input:
        summaries=expand("metrics/{method}/summary.json", method=FULL_METHODS),
        curves=expand("plots/baseline/fold-{fold}.csv", fold=FOLDS),
        synthetic=per_fold("metrics/synthetic/fold-{fold}.json", HAS_FESGAN),
        fesgan=per_fold("metrics/fesgan/fold-{fold}.json", HAS_FESGAN),
        fesgan_results=per_fold("results/fesgan/fold-{fold}", HAS_FESGAN),
        identity=identity_metrics(),
        pseudo=per_fold("metrics/pseudo/fold-{fold}.json", HAS_CORPUS_ROWS),
        pseudo_quality=["metrics/pseudo_quality.json"] if HAS_CORPUS_TRUTH and HAS_CORPUS_ROWS else [],
        corpus_rounds=per_fold("results/accnn_corpus/fold-{fold}", HAS_CORPUS_ROWS),
        dgcn_results=per_fold("results/dgcn_generated/fold-{fold}", "dgcn_generated" in PLAN.rows),
        fersnet_results=per_fold("results/fersnet_gated/fold-{fold}", "fersnet_gated" in PLAN.rows),
        fersnet_synthesis=per_fold("metrics/fersnet_synthesis/fold-{fold}.json", "fersnet_gated" in PLAN.rows),
        budgets=["data/budgets.json"] if BUDGETS else [],
        budget_summaries=expand("metrics/{method}/summary-b{slot}.json", slot=BUDGET_SLOTS, method=METHODS),
        budget_pseudo_quality=expand("metrics/pseudo_quality-b{slot}.json", slot=BUDGET_SLOTS)
        if PLAN.has_corpus_rows and config["clustering"]["in_domain"] else [],
        images="data/aligned/images.npy",
        manifest="data/aligned/manifest.csv",
        qa="data/aligned/qa.csv",
        meta="data/aligned/meta.json",
        folds="data/folds.json",
        code=code("report"),
    output:
        html=report("reports/index.html", caption="../report/index.rst", category="Report"),
    params:
        **declare("seed", "data_seed", "methods", "demo", "data", "align", "folds", "labels", "corpus", "compute", "baseline", "identity",
                  "fesgan", "synthesis", "joint", "rdbp", "clustering", "accnn", "finetune", "dgcn", "fersnet", "fixmatch", "report"),
        sections=report_section_args,
    log:
        "logs/report.log",
    shell:
        "mkdir -p logs && python workflow/scripts/report.py --keys {params.declared} "
        "--summaries {input.summaries} --curves {input.curves}{params.sections} "
        "--folds {input.folds} --images {input.images} --manifest {input.manifest} "
        "--qa {input.qa} --meta {input.meta} --out {output.html} "
        + TO_LOG
