# Baseline: a standard CNN trained on real data only, per fold.


rule train_baseline:
    """Train on the fold's training subjects, select the epoch on its validation
    subjects, evaluate once on its test subjects."""
    input:
        images="data/aligned/images.npy",
        manifest="data/aligned/manifest.csv",
        meta="data/aligned/meta.json",
        folds="data/folds.json",
        code=code("train_baseline", "methods/baseline.py", "models", "training", "evaluation", "utils"),
    output:
        model="models/baseline/fold-{fold}.pt",
        metrics="metrics/baseline/fold-{fold}.json",
        plots="plots/baseline/fold-{fold}.csv",
    params:
        **declare("seed", "baseline", "compute"),
    resources:
        gpu=1,
    threads: 4
    log:
        "logs/train_baseline/fold-{fold}.log",
    shell:
        "mkdir -p logs/train_baseline && python workflow/scripts/train_baseline.py "
        "--keys {params.declared} --fold {wildcards.fold} --images {input.images} "
        "--manifest {input.manifest} --meta {input.meta} --folds {input.folds} "
        "--model {output.model} --metrics {output.metrics} --curve {output.plots} "
        "--resume-dir state/resume/baseline "
        "--train-log logs/train_baseline/fold-{wildcards.fold}.jsonl "
        + TO_LOG


rule summarize_baseline:
    """Mean and standard deviation over folds, pooled confusion matrix figure."""
    input:
        fold_metrics=expand("metrics/baseline/fold-{fold}.json", fold=FOLDS),
        meta="data/aligned/meta.json",
        code=code("summarize", "evaluation", "report/figures.py"),
    output:
        metrics="metrics/baseline/summary.json",
        figure=report(
            "reports/figures/baseline_confusion.png",
            caption="../report/confusion.rst",
            category="Baseline",
        ),
    log:
        "logs/summarize_baseline.log",
    shell:
        "mkdir -p logs && python workflow/scripts/summarize.py --method baseline "
        "--meta {input.meta} --out {output.metrics} --figure {output.figure} "
        "{input.fold_metrics} "
        + TO_LOG
