# Baseline: a standard CNN trained on real data only, per fold.


rule train_baseline:
    """Train on the fold's training subjects, select the epoch on its validation
    subjects, evaluate once on its test subjects."""
    input:
        unpack(start_input("baseline")),
        images="data/aligned/images.npy",
        manifest="data/aligned/manifest.csv",
        meta="data/aligned/meta.json",
        folds=folds_input,
        code=code("train_recognizer"),
    output:
        model="models/baseline/fold-{fold}.pt",
        metrics="metrics/baseline/fold-{fold}.json",
        plots="plots/baseline/fold-{fold}.csv",
    params:
        **declare("seed", "baseline", "compute"),
        start=start_arg("baseline"),
    resources:
        gpu=1,
    threads: GPU_JOB_THREADS
    log:
        "logs/train_baseline/fold-{fold}.log",
    shell:
        "mkdir -p logs/train_baseline && python workflow/scripts/train_recognizer.py --section baseline "
        "--keys {params.declared} --fold {wildcards.fold}{params.start} --images {input.images} "
        "--manifest {input.manifest} --meta {input.meta} --folds {input.folds} "
        "--model {output.model} --metrics {output.metrics} --curve {output.plots} "
        "--resume-dir state/resume/baseline "
        "--train-log logs/train_baseline/fold-{wildcards.fold}.jsonl "
        + TO_LOG


rule train_fixmatch:
    """FixMatch on the baseline's recogniser: labelled images (weak view) plus the fold's
    unlabelled in-domain part (a label budget's hidden-label subjects) through weak and
    strong views, confidence-thresholded pseudo-labels. Same folds, seeds, epochs and
    validation-based selection as the baseline."""
    input:
        unpack(start_input("baseline")),
        images="data/aligned/images.npy",
        manifest="data/aligned/manifest.csv",
        meta="data/aligned/meta.json",
        folds=folds_input,
        code=code("train_fixmatch"),
    output:
        model="models/fixmatch/fold-{fold}.pt",
        metrics="metrics/fixmatch/fold-{fold}.json",
        plots="plots/fixmatch/fold-{fold}.csv",
    params:
        **declare("seed", "baseline", "fixmatch", "compute"),
        start=start_arg("baseline"),
    resources:
        gpu=1,
    threads: GPU_JOB_THREADS
    log:
        "logs/train_fixmatch/fold-{fold}.log",
    shell:
        "mkdir -p logs/train_fixmatch && python workflow/scripts/train_fixmatch.py "
        "--keys {params.declared} --fold {wildcards.fold}{params.start} --images {input.images} "
        "--manifest {input.manifest} --meta {input.meta} --folds {input.folds} "
        "--model {output.model} --metrics {output.metrics} --curve {output.plots} "
        "--resume-dir state/resume/fixmatch "
        "--train-log logs/train_fixmatch/fold-{wildcards.fold}.jsonl "
        + TO_LOG
