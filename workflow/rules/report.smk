# Summaries per method and the HTML report: self-contained, readable offline.

# Every method under the same folds, seeds and metrics (the report's comparison table).
METHODS = ["baseline", *JOINT_VARIANTS, *CORPUS_METHODS, *COMPARISON_METHODS]


wildcard_constraints:
    method="|".join(METHODS),


def method_fold_metrics(wildcards):
    return expand("metrics/{method}/fold-{fold}.json", method=wildcards.method, fold=FOLDS)


def pseudo_quality_arg(wildcards):
    """The pseudo-label quality table exists only when the corpus has expression truth."""
    return "--pseudo-quality metrics/pseudo_quality.json" if HAS_CORPUS_TRUTH else ""


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


rule report:
    """reports/index.html: comparison table with paired tests, confusion matrices,
    training curves, FESGAN sample grids, synthetic-set quality, pseudo-label quality per
    round with a 2-D map of the corpus, model sizes, the comparison methods' sample grids,
    aligned faces per class, alignment QA, folds, params and provenance."""
    input:
        summaries=expand("metrics/{method}/summary.json", method=METHODS),
        curves=expand("plots/baseline/fold-{fold}.csv", fold=FOLDS),
        synthetic=expand("metrics/synthetic/fold-{fold}.json", fold=FOLDS),
        fesgan=expand("metrics/fesgan/fold-{fold}.json", fold=FOLDS),
        fesgan_results=expand("results/fesgan/fold-{fold}", fold=FOLDS),
        identity="metrics/identity/identity.json",
        pseudo=expand("metrics/pseudo/fold-{fold}.json", fold=FOLDS),
        pseudo_quality=["metrics/pseudo_quality.json"] if HAS_CORPUS_TRUTH else [],
        corpus_rounds=expand("results/accnn_corpus/fold-{fold}", fold=FOLDS),
        dgcn_results=expand("results/dgcn_generated/fold-{fold}", fold=FOLDS),
        fersnet_results=expand("results/fersnet_gated/fold-{fold}", fold=FOLDS),
        fersnet_synthesis=expand("metrics/fersnet_synthesis/fold-{fold}.json", fold=FOLDS),
        images="data/aligned/images.npy",
        manifest="data/aligned/manifest.csv",
        qa="data/aligned/qa.csv",
        meta="data/aligned/meta.json",
        folds="data/folds.json",
        code=code("report"),
    output:
        html=report("reports/index.html", caption="../report/index.rst", category="Report"),
    params:
        **declare("seed", "demo", "data", "align", "folds", "corpus", "compute", "baseline", "identity",
                  "fesgan", "synthesis", "joint", "rdbp", "clustering", "accnn", "finetune", "dgcn", "fersnet", "report"),
        quality=pseudo_quality_arg,
    log:
        "logs/report.log",
    shell:
        "mkdir -p logs && python workflow/scripts/report.py --keys {params.declared} "
        "--summaries {input.summaries} --curves {input.curves} --synthetic {input.synthetic} "
        "--fesgan {input.fesgan} --fesgan-results {input.fesgan_results} --identity {input.identity} "
        "--pseudo {input.pseudo} {params.quality} --corpus-rounds {input.corpus_rounds} "
        "--dgcn-results {input.dgcn_results} --fersnet-results {input.fersnet_results} "
        "--fersnet-synthesis {input.fersnet_synthesis} "
        "--folds {input.folds} --images {input.images} --manifest {input.manifest} "
        "--qa {input.qa} --meta {input.meta} --out {output.html} "
        + TO_LOG
