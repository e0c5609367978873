# FESGAN + joint training with the RDBP intra-class loss (Yan et al., TMM 2020), and the
# identity network its identity-preservation loss needs (trained on the corpus, or per
# fold on the fold's training subjects when there is no corpus).

from fer.params import JOINT_ROWS

# Ablation rows trained by train_joint, the params keys each one reads and its fixed
# choices: one table (fer/params/rows.py) that the script reads too.
JOINT_VARIANTS = list(JOINT_ROWS)


wildcard_constraints:
    variant="|".join(JOINT_VARIANTS),


def joint_declared(wildcards):
    return declare(*JOINT_ROWS[wildcards.variant].keys)["declared"]


def joint_cfg(wildcards):
    return declare(*JOINT_ROWS[wildcards.variant].keys)["cfg"]


def joint_source(wildcards):
    """static trains on the fold's fixed synthetic set; the joint rows on its generator."""
    if JOINT_ROWS[wildcards.variant].source == "synthetic_set":
        return f"data/synthetic/fold-{wildcards.fold}/images.npy"
    return f"models/fesgan/fold-{wildcards.fold}.pt"


def joint_source_arg(wildcards):
    if JOINT_ROWS[wildcards.variant].source == "synthetic_set":
        return f"--synthetic-dir data/synthetic/fold-{wildcards.fold}"
    return f"--generator models/fesgan/fold-{wildcards.fold}.pt"


rule align_corpus:
    """Align the unlabelled face-recognition corpus with the same settings as the labelled
    set (its hidden expression truth is never read)."""
    input:
        dataset=corpus_input(),
        code=code("align"),
    output:
        images="data/aligned_corpus/images.npy",
        manifest="data/aligned_corpus/manifest.csv",
        qa="data/aligned_corpus/qa.csv",
        meta="data/aligned_corpus/meta.json",
        metrics="metrics/align_corpus.json",
    params:
        **declare("corpus", "align"),
    log:
        "logs/align_corpus.log",
    shell:
        "mkdir -p logs && python workflow/scripts/align.py --corpus --keys {params.declared} "
        "--out-dir data/aligned_corpus --metrics {output.metrics} --evidence-dir logs/align_corpus "
        + TO_LOG


rule train_identity:
    """Identity network: a closed-set identity classifier over the corpus identities;
    its features are FESGAN's identity-preservation space."""
    input:
        unpack(start_input("identity")),
        images="data/aligned_corpus/images.npy",
        manifest="data/aligned_corpus/manifest.csv",
        meta="data/aligned_corpus/meta.json",
        code=code("train_identity"),
    output:
        model="models/identity/identity.pt",
        metrics="metrics/identity/identity.json",
        plots="plots/identity/identity.csv",
    params:
        **declare("seed", "identity", "compute"),
        start=start_arg("identity"),
    resources:
        gpu=1,
    threads: GPU_JOB_THREADS
    log:
        "logs/train_identity.log",
    shell:
        "mkdir -p logs && python workflow/scripts/train_identity.py --keys {params.declared} "
        "--images {input.images} --manifest {input.manifest} --meta {input.meta}{params.start} "
        "--model {output.model} --metrics {output.metrics} --curve {output.plots} "
        "--resume-dir state/resume/identity "
        + TO_LOG


rule train_identity_fold:
    """Without a face-recognition corpus (corpus.root ''): the fold's identity network, a
    closed-set identity classifier over the fold's TRAINING subjects only (never its
    validation or test subjects; one held-out image per subject for model selection)."""
    wildcard_constraints:
        fold=r"\d+",
    input:
        unpack(start_input("identity")),
        images="data/aligned/images.npy",
        manifest="data/aligned/manifest.csv",
        meta="data/aligned/meta.json",
        folds="data/folds.json",
        code=code("train_identity"),
    output:
        model="models/identity/fold-{fold}.pt",
        metrics="metrics/identity/fold-{fold}.json",
        plots="plots/identity/fold-{fold}.csv",
    params:
        **declare("seed", "identity", "compute"),
        start=start_arg("identity"),
    resources:
        gpu=1,
    threads: GPU_JOB_THREADS
    log:
        "logs/train_identity/fold-{fold}.log",
    shell:
        "mkdir -p logs/train_identity && python workflow/scripts/train_identity.py --keys {params.declared} "
        "--images {input.images} --manifest {input.manifest} --meta {input.meta} "
        "--folds {input.folds} --fold {wildcards.fold}{params.start} "
        "--model {output.model} --metrics {output.metrics} --curve {output.plots} "
        "--resume-dir state/resume/identity "
        + TO_LOG


rule train_fesgan:
    """FESGAN pretraining on the fold's training subjects only (test and validation
    subjects never reach the GAN)."""
    input:
        images="data/aligned/images.npy",
        manifest="data/aligned/manifest.csv",
        meta="data/aligned/meta.json",
        folds=folds_input,
        identity=identity_model,
        code=code("train_fesgan"),
    output:
        model="models/fesgan/fold-{fold}.pt",
        metrics="metrics/fesgan/fold-{fold}.json",
        results=directory("results/fesgan/fold-{fold}"),
    params:
        **declare("seed", "fesgan", "compute"),
    resources:
        gpu=1,
    threads: GPU_JOB_THREADS
    log:
        "logs/train_fesgan/fold-{fold}.log",
    shell:
        "mkdir -p logs/train_fesgan && python workflow/scripts/train_fesgan.py "
        "--keys {params.declared} --fold {wildcards.fold} --images {input.images} "
        "--manifest {input.manifest} --meta {input.meta} --folds {input.folds} "
        "--identity {input.identity} --model {output.model} --metrics {output.metrics} "
        "--results-dir {output.results} --resume-dir state/resume/fesgan "
        "--train-log logs/train_fesgan/fold-{wildcards.fold}.jsonl "
        + TO_LOG


rule synthesize:
    """Class-balanced synthetic set of the fold (prior and re-expressed training
    identities) and its quality under the fold's real-data classifier."""
    input:
        images="data/aligned/images.npy",
        manifest="data/aligned/manifest.csv",
        meta="data/aligned/meta.json",
        folds=folds_input,
        generator="models/fesgan/fold-{fold}.pt",
        classifier="models/baseline/fold-{fold}.pt",
        identity=identity_model,
        code=code("synthesize"),
    output:
        images="data/synthetic/fold-{fold}/images.npy",
        manifest="data/synthetic/fold-{fold}/manifest.csv",
        meta="data/synthetic/fold-{fold}/meta.json",
        metrics="metrics/synthetic/fold-{fold}.json",
    params:
        **declare("seed", "synthesis", "compute"),
    resources:
        gpu=1,
    threads: GPU_JOB_THREADS
    log:
        "logs/synthesize/fold-{fold}.log",
    shell:
        "mkdir -p logs/synthesize && python workflow/scripts/synthesize.py "
        "--keys {params.declared} --fold {wildcards.fold} --images {input.images} "
        "--manifest {input.manifest} --meta {input.meta} --folds {input.folds} "
        "--generator {input.generator} --classifier {input.classifier} --identity {input.identity} "
        "--out-dir data/synthetic/fold-{wildcards.fold} --metrics {output.metrics} "
        + TO_LOG


rule train_joint:
    """The ablation rows: + static synthetic set, + joint training, + joint with the
    intra-class loss without RDBP, and the full method (joint + RDBP). Same recogniser
    settings (params section baseline), folds and seeds as the baseline."""
    input:
        unpack(start_input("baseline")),
        images="data/aligned/images.npy",
        manifest="data/aligned/manifest.csv",
        meta="data/aligned/meta.json",
        folds=folds_input,
        source=joint_source,
        code=code("train_joint"),
    output:
        model="models/{variant}/fold-{fold}.pt",
        metrics="metrics/{variant}/fold-{fold}.json",
        plots="plots/{variant}/fold-{fold}.csv",
    params:
        declared=joint_declared,
        cfg=joint_cfg,
        source=joint_source_arg,
        start=start_arg("baseline"),
    resources:
        gpu=1,
    threads: GPU_JOB_THREADS
    log:
        "logs/train_joint/{variant}-fold-{fold}.log",
    shell:
        "mkdir -p logs/train_joint && python workflow/scripts/train_joint.py "
        "--keys {params.declared} --variant {wildcards.variant} --fold {wildcards.fold} "
        "--images {input.images} --manifest {input.manifest} --meta {input.meta} "
        "--folds {input.folds} {params.source}{params.start} --model {output.model} "
        "--metrics {output.metrics} --curve {output.plots} "
        "--resume-dir state/resume/{wildcards.variant} "
        "--train-log logs/train_joint/{wildcards.variant}-fold-{wildcards.fold}.jsonl "
        + TO_LOG
