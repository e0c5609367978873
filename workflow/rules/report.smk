# The HTML report: self-contained, readable offline.


rule report:
    """reports/index.html: results table, confusion matrices, aligned faces per class,
    alignment QA, training curves, params and provenance."""
    input:
        summary="metrics/baseline/summary.json",
        fold_metrics=expand("metrics/baseline/fold-{fold}.json", fold=FOLDS),
        curves=expand("plots/baseline/fold-{fold}.csv", fold=FOLDS),
        images="data/aligned/images.npy",
        manifest="data/aligned/manifest.csv",
        qa="data/aligned/qa.csv",
        meta="data/aligned/meta.json",
        folds="data/folds.json",
        code=code("report", "report"),
    output:
        html=report("reports/index.html", caption="../report/index.rst", category="Report"),
    params:
        **declare("seed", "demo", "data", "align", "folds", "compute", "baseline", "report"),
    log:
        "logs/report.log",
    shell:
        "mkdir -p logs && python workflow/scripts/report.py --keys {params.declared} "
        "--summary {input.summary} --folds {input.folds} --images {input.images} "
        "--manifest {input.manifest} --qa {input.qa} --meta {input.meta} "
        "--fold-metrics {input.fold_metrics} --curves {input.curves} "
        "--out {output.html} "
        + TO_LOG
