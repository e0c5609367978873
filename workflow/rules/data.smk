# Data: demo generation (default data source), alignment into a compact array, folds.


rule make_demo:
    """Generate the demo data: a labelled expression set and an unlabelled corpus,
    written in the csv dataset layout (no download)."""
    input:
        code=code("make_demo"),
    output:
        directory("data/demo"),
    params:
        **declare("seed", "demo"),
    log:
        "logs/make_demo.log",
    shell:
        "mkdir -p logs && python workflow/scripts/make_demo.py --keys {params.declared} "
        "--out {output} "
        + TO_LOG


rule align:
    """Read the dataset (demo, csv or folders format), align every face to the 5-point
    template and write one uint8 array, the manifest, and a per-image QA table."""
    input:
        dataset=dataset_input(),
        code=code("align"),
    output:
        images="data/aligned/images.npy",
        manifest="data/aligned/manifest.csv",
        qa="data/aligned/qa.csv",
        meta="data/aligned/meta.json",
        metrics="metrics/align.json",
    params:
        **declare("data", "align"),
    log:
        "logs/align.log",
    shell:
        "mkdir -p logs && python workflow/scripts/align.py --keys {params.declared} "
        "--out-dir data/aligned --metrics {output.metrics} "
        + TO_LOG


rule make_folds:
    """Subject-independent stratified folds, each with a validation split by subject
    inside its training part."""
    input:
        manifest="data/aligned/manifest.csv",
        meta="data/aligned/meta.json",
        code=code("make_folds"),
    output:
        folds="data/folds.json",
    params:
        **declare("seed", "folds"),
    log:
        "logs/make_folds.log",
    shell:
        "mkdir -p logs && python workflow/scripts/make_folds.py --keys {params.declared} "
        "--manifest {input.manifest} --meta {input.meta} --out {output.folds} "
        + TO_LOG
