# Expression-guided clustering of the face-recognition corpus into pseudo-labels, the
# AC-CNN, and fine-tuning on real + pseudo-labelled data (Fang et al., Sensors 2023).
# Per fold, everything learns from the fold's training part only.

CORPUS_METHODS = ["accnn", "accnn_corpus", "accnn_continued"]
# finetune.start accnn: the corpus row continues the fold's trained AC-CNN, and the row
# accnn_continued (rule continue_accnn) is its control (fer.params.rows.continued_budget).
START_ACCNN = config["finetune"]["start"] == "accnn"


def continued_start_input(wildcards):
    """The corpus row's start: the fold's trained AC-CNN (finetune.start: accnn; both tools
    track its content, so a re-trained AC-CNN re-runs the rows that continue it), else the
    accnn section's init file (start_input)."""
    if START_ACCNN:
        return {"accnn_model": f"models/accnn/fold-{wildcards.fold}.pt"}
    return start_input("accnn")(wildcards)


def continued_start_arg(wildcards):
    """`` --accnn-model <file>`` (finetune.start: accnn) or the init's `` --start <file>``
    (optional: leading space, common.smk)."""
    if START_ACCNN:
        return f" --accnn-model models/accnn/fold-{wildcards.fold}.pt"
    return start_arg("accnn")(wildcards)


def clustering_embedder(wildcards):
    """Round 0 embeds the corpus with the fold's joint recogniser (clustering.embedder:
    full) or its baseline."""
    return f"models/{config['clustering']['embedder']}/fold-{wildcards.fold}.pt"


def finetune_synthetic(wildcards):
    """The fold's FESGAN synthetic set joins the fine-tuning when its weight is > 0."""
    if config["finetune"]["synthetic_weight"] > 0:
        return {"synthetic": f"data/synthetic/fold-{wildcards.fold}/images.npy"}
    return {}


def finetune_synthetic_arg(wildcards):
    if config["finetune"]["synthetic_weight"] > 0:
        return f" --synthetic-dir data/synthetic/fold-{wildcards.fold}"  # optional: leading space (common.smk)
    return ""


def corpus_truth_input():
    """The corpus's hidden expression truth (corpus.truth), read only by the pseudo-label
    evaluation: for the demo it lies inside the generator's output folder; none when
    corpus.truth is '' (an empty path would make Snakemake warn on every run)."""
    if not config["corpus"]["truth"]:
        return []
    if config["data"]["format"] == "demo":
        return "data/demo"
    return config["corpus"]["truth"]


# corpus.root '' with label budgets and clustering.in_domain: the corpus row runs at the
# budgets only and clusters the fold's unlabelled in-domain faces alone (PLAN.budget_only).
HAS_CORPUS = bool(config["corpus"]["root"])


def corpus_inputs(wildcards):
    """The aligned corpus, when there is one (the clustering pool's first part)."""
    if not HAS_CORPUS:
        return {}
    return {"corpus_images": "data/aligned_corpus/images.npy", "corpus_manifest": "data/aligned_corpus/manifest.csv",
            "corpus_meta": "data/aligned_corpus/meta.json"}


def corpus_args(wildcards):
    """The corpus options of the clustering scripts (optional: leading space, common.smk)."""
    i = corpus_inputs(wildcards)
    return "".join(f" --{k.replace('_', '-')} {v}" for k, v in i.items())


# Real corpora usually have no expression truth (corpus.truth: ''): no pseudo-label
# quality then, the report says so.
HAS_CORPUS_TRUTH = bool(config["corpus"]["truth"])


rule train_accnn:
    """The AC-CNN on real data only (the 'without corpus' row). Same protocol and
    budget as the baseline."""
    input:
        unpack(start_input("accnn")),
        images="data/aligned/images.npy",
        manifest="data/aligned/manifest.csv",
        meta="data/aligned/meta.json",
        folds=folds_input,
        code=code("train_recognizer"),
    output:
        model="models/accnn/fold-{fold}.pt",
        metrics="metrics/accnn/fold-{fold}.json",
        plots="plots/accnn/fold-{fold}.csv",
    params:
        **declare("seed", "accnn", "compute"),
        start=start_arg("accnn"),
    resources:
        gpu=1,
    threads: GPU_JOB_THREADS
    log:
        "logs/train_accnn/fold-{fold}.log",
    shell:
        "mkdir -p logs/train_accnn && python workflow/scripts/train_recognizer.py --section accnn "
        "--keys {params.declared} --fold {wildcards.fold}{params.start} --images {input.images} "
        "--manifest {input.manifest} --meta {input.meta} --folds {input.folds} "
        "--model {output.model} --metrics {output.metrics} --curve {output.plots} "
        "--resume-dir state/resume/accnn "
        "--train-log logs/train_accnn/fold-{wildcards.fold}.jsonl "
        + TO_LOG


rule cluster_corpus:
    """Round 0: embed the corpus and the fold's labelled training images with the fold's
    recogniser, cluster with FAISS k-means under expression guidance, keep confident,
    class-balanced pseudo-labels. Never reads validation/test images or the corpus's
    hidden expression truth."""
    input:
        unpack(corpus_inputs),
        images="data/aligned/images.npy",
        manifest="data/aligned/manifest.csv",
        meta="data/aligned/meta.json",
        folds=folds_input,
        recogniser=clustering_embedder,
        code=code("cluster_corpus"),
    output:
        pseudo=directory("results/pseudo/fold-{fold}"),
        metrics="metrics/pseudo/fold-{fold}.json",
    params:
        **declare("seed", "clustering", "compute"),
        corpus=corpus_args,
    resources:
        gpu=1,
    threads: GPU_JOB_THREADS
    log:
        "logs/cluster_corpus/fold-{fold}.log",
    shell:
        "mkdir -p logs/cluster_corpus && python workflow/scripts/cluster_corpus.py "
        "--keys {params.declared} --fold {wildcards.fold} --images {input.images} "
        "--manifest {input.manifest} --meta {input.meta} --folds {input.folds}{params.corpus} "
        "--recogniser {input.recogniser} "
        "--out-dir {output.pseudo} --metrics {output.metrics} --work-dir state/work/cluster_corpus/fold-{wildcards.fold} "
        + TO_LOG


rule finetune_accnn:
    """The 'with corpus' row: the AC-CNN trained on real + pseudo-labelled corpus images
    (+ the fold's synthetic set when finetune.synthetic_weight > 0), with optional
    re-clustering rounds (cluster -> train -> re-cluster), from scratch or, with
    finetune.start: accnn, from the fold's trained AC-CNN."""
    input:
        unpack(finetune_synthetic),
        unpack(continued_start_input),
        unpack(corpus_inputs),
        images="data/aligned/images.npy",
        manifest="data/aligned/manifest.csv",
        meta="data/aligned/meta.json",
        folds=folds_input,
        pseudo="results/pseudo/fold-{fold}",
        code=code("finetune_accnn"),
    output:
        model="models/accnn_corpus/fold-{fold}.pt",
        metrics="metrics/accnn_corpus/fold-{fold}.json",
        plots="plots/accnn_corpus/fold-{fold}.csv",
        rounds=directory("results/accnn_corpus/fold-{fold}"),
    params:
        **declare("seed", "accnn", "finetune", "clustering", "compute"),
        synthetic=finetune_synthetic_arg,
        start=continued_start_arg,
        corpus=corpus_args,
    resources:
        gpu=1,
    threads: GPU_JOB_THREADS
    log:
        "logs/finetune_accnn/fold-{fold}.log",
    shell:
        "mkdir -p logs/finetune_accnn && python workflow/scripts/finetune_accnn.py "
        "--keys {params.declared} --fold {wildcards.fold} --images {input.images} "
        "--manifest {input.manifest} --meta {input.meta} --folds {input.folds}{params.corpus} "
        "--pseudo {input.pseudo}{params.synthetic}{params.start} "
        "--model {output.model} --metrics {output.metrics} --curve {output.plots} --out-dir {output.rounds} "
        "--resume-dir state/resume/accnn_corpus/fold-{wildcards.fold} "
        "--train-log logs/finetune_accnn/fold-{wildcards.fold}.jsonl "
        + TO_LOG


rule continue_accnn:
    """Row accnn_continued (finetune.start: accnn only): the fold's trained AC-CNN trained
    the corpus row's extra rounds and epochs on the labelled images only, with the same
    seeds and schedule: the corpus row's control at equal budget."""
    input:
        unpack(finetune_synthetic),
        images="data/aligned/images.npy",
        manifest="data/aligned/manifest.csv",
        meta="data/aligned/meta.json",
        folds=folds_input,
        accnn_model="models/accnn/fold-{fold}.pt",
        code=code("continue_accnn"),
    output:
        model="models/accnn_continued/fold-{fold}.pt",
        metrics="metrics/accnn_continued/fold-{fold}.json",
        plots="plots/accnn_continued/fold-{fold}.csv",
    params:
        **declare("seed", "accnn", "finetune", "compute"),
        synthetic=finetune_synthetic_arg,
    resources:
        gpu=1,
    threads: GPU_JOB_THREADS
    log:
        "logs/continue_accnn/fold-{fold}.log",
    shell:
        "mkdir -p logs/continue_accnn && python workflow/scripts/continue_accnn.py "
        "--keys {params.declared} --fold {wildcards.fold} --images {input.images} "
        "--manifest {input.manifest} --meta {input.meta} --folds {input.folds} "
        "--accnn-model {input.accnn_model}{params.synthetic} "
        "--model {output.model} --metrics {output.metrics} --curve {output.plots} "
        "--resume-dir state/resume/accnn_continued/fold-{wildcards.fold} "
        "--train-log logs/continue_accnn/fold-{wildcards.fold}.jsonl "
        + TO_LOG


rule pseudo_quality:
    """Pseudo-label quality per fold and round against the corpus's hidden expression
    truth (evaluation only: no training rule reads the truth)."""
    input:
        truth=corpus_truth_input(),
        corpus_manifest="data/aligned_corpus/manifest.csv",
        meta="data/aligned/meta.json",
        pseudo=expand("results/pseudo/fold-{fold}", fold=FOLDS),
        rounds=expand("results/accnn_corpus/fold-{fold}", fold=FOLDS),
        code=code("pseudo_quality"),
    output:
        metrics="metrics/pseudo_quality.json",
    params:
        **declare("corpus.truth"),
    log:
        "logs/pseudo_quality.log",
    shell:
        "mkdir -p logs && python workflow/scripts/pseudo_quality.py --keys {params.declared} "
        "--corpus-manifest {input.corpus_manifest} --meta {input.meta} "
        "--pseudo {input.pseudo} --rounds {input.rounds} --out {output.metrics} "
        + TO_LOG


def budget_pseudo_dirs(pattern):
    def dirs(wildcards):
        return expand(pattern, split=BUDGET_SPLITS[int(wildcards.slot)])

    return dirs


rule pseudo_quality_budget:
    """At a label budget with clustering.in_domain: the pseudo-label quality of the fold's
    unlabelled in-domain faces that joined the clustering pool, against their hidden labels
    in the aligned manifest, per fold and round (evaluation only: no training rule reads
    those labels; the per-fold scripts get them masked)."""
    wildcard_constraints:
        slot=r"\d+",
    input:
        manifest="data/aligned/manifest.csv",
        meta="data/aligned/meta.json",
        pseudo=budget_pseudo_dirs("results/pseudo/fold-{split}"),
        rounds=budget_pseudo_dirs("results/accnn_corpus/fold-{split}"),
        code=code("pseudo_quality"),
    output:
        metrics="metrics/pseudo_quality-b{slot}.json",
    params:
        **declare("clustering.in_domain"),
    log:
        "logs/pseudo_quality-b{slot}.log",
    shell:
        "mkdir -p logs && python workflow/scripts/pseudo_quality.py --keys {params.declared} "
        "--in-domain-manifest {input.manifest} --meta {input.meta} "
        "--pseudo {input.pseudo} --rounds {input.rounds} --out {output.metrics} "
        + TO_LOG
