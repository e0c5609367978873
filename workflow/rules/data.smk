# Data: demo generation (default data source), alignment into a compact array, folds.


rule make_demo:
    """Generate the demo data: a labelled expression set and an unlabelled corpus,
    written in the csv dataset layout (no download)."""
    input:
        code=code("make_demo"),
    output:
        directory("data/demo"),
    params:
        **declare("data_seed", "demo"),
    log:
        "logs/make_demo.log",
    shell:
        "mkdir -p logs && python workflow/scripts/make_demo.py --keys {params.declared} "
        "--out {output} "
        + TO_LOG


# The content fingerprints of the two image inputs (workflow/scripts/_dataset.py). Both
# tools evaluate them on every run: Snakemake when it reads the Snakefile (common.smk
# rewrites a fingerprint file that no longer matches its data; this job makes a missing
# one), DVC because an output named `fingerprint` makes an always_changed stage (dvcgen.py).
# The file changes only when the content did, so alignment re-runs exactly then. No
# `cfg` param and ancient() code: a changed key or script must not re-run alignment by
# itself (the file's content decides); the job still reads only its declared keys.


rule fingerprint_dataset:
    """Check the labelled dataset (its list of images; the classes, subjects and folds
    params.yaml asks of it) and write its content fingerprint, which alignment depends on."""
    input:
        demo=demo_output(),
        code=ancient(code("fingerprint")),
    output:
        fingerprint=fingerprint_file("dataset"),
    params:
        declared=",".join(CHECK_KEYS["dataset"]),
    log:
        "logs/fingerprint_dataset.log",
    shell:
        "mkdir -p logs && python workflow/scripts/fingerprint.py --input dataset --keys {params.declared} "
        "--out {output.fingerprint} "
        + TO_LOG


rule fingerprint_corpus:
    """Check the face-recognition corpus (its list of images) and write its content
    fingerprint, which the corpus alignment depends on."""
    input:
        demo=demo_output(),
        code=ancient(code("fingerprint")),
    output:
        fingerprint=fingerprint_file("corpus"),
    params:
        declared=",".join(CHECK_KEYS["corpus"]),
    log:
        "logs/fingerprint_corpus.log",
    shell:
        "mkdir -p logs && python workflow/scripts/fingerprint.py --input corpus --keys {params.declared} "
        "--out {output.fingerprint} "
        + TO_LOG


rule align:
    """Read the dataset (demo, csv or folders format), align every face to the 5-point
    template and write one uint8 array, the manifest, and a per-image QA table. The QA
    table and every failure also go to logs/align/, which a failed job keeps."""
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
        "--out-dir data/aligned --metrics {output.metrics} --evidence-dir logs/align "
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
        **declare("data_seed", "folds"),
    log:
        "logs/make_folds.log",
    shell:
        "mkdir -p logs && python workflow/scripts/make_folds.py --keys {params.declared} "
        "--manifest {input.manifest} --meta {input.meta} --out {output.folds} "
        + TO_LOG


rule make_budgets:
    """Label budgets (labels.budgets): per fold and budget, the training subjects that keep
    their expression labels (subject-grouped, class-stratified, nested, at least one
    subject per class), the validation subjects carved from them, and the unlabelled rest
    of the training part. Only jobs of the budget splits (K-bJ) read it, so the folds with
    all labels do not re-run when a budget changes."""
    input:
        manifest="data/aligned/manifest.csv",
        meta="data/aligned/meta.json",
        folds="data/folds.json",
        code=code("make_budgets"),
    output:
        budgets="data/budgets.json",
    params:
        **declare("data_seed", "labels", "folds.val_fraction"),
    log:
        "logs/make_budgets.log",
    shell:
        "mkdir -p logs && python workflow/scripts/make_budgets.py --keys {params.declared} "
        "--manifest {input.manifest} --meta {input.meta} --folds {input.folds} --out {output.budgets} "
        + TO_LOG
