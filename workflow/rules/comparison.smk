# The two comparison methods, under the baseline's folds, seeds and metrics:
# deep generative-contrastive networks (Kim et al., arXiv 1703.07140) and FERSNet,
# multi-task recognition + synthesis with selective feature sharing (Zhao et al., ICPR 2020).

# Ablation rows. dgcn: the reference the contrastive representation compares the query
# with. fersnet: the authors' rows (single task, hard sharing, gated sharing, gated +
# synthetic images).
from fer.params import DGCN_REFERENCES, FERSNET_VARIANTS

COMPARISON_METHODS = [f"dgcn_{r}" for r in DGCN_REFERENCES] + [f"fersnet_{v}" for v in FERSNET_VARIANTS]


wildcard_constraints:
    reference="|".join(DGCN_REFERENCES),
    fersnet_variant="|".join(FERSNET_VARIANTS),


def fersnet_inputs(wildcards):
    """Every row but single task needs the identity network (identity feature term); the
    + synthetic row starts from the fold's gated model and its synthesis branch."""
    inputs = {}
    if wildcards.fersnet_variant != "single":
        inputs["identity"] = identity_model(wildcards)
    if wildcards.fersnet_variant == "synth":
        inputs["init"] = f"models/fersnet_gated/fold-{wildcards.fold}.pt"
    return inputs


def fersnet_args(wildcards):
    args = []
    if wildcards.fersnet_variant != "single":
        args.append(f"--identity {identity_model(wildcards)}")
    if wildcards.fersnet_variant == "synth":
        args.append(f"--init models/fersnet_gated/fold-{wildcards.fold}.pt")
    return "".join(f" {a}" for a in args)  # optional: leading space (common.smk, start_arg)


rule train_dgcn:
    """Generative-contrastive network, one reference row, one fold: reference generator,
    contrastive encoder on (query, reference), classifier on the embedding difference."""
    input:
        images="data/aligned/images.npy",
        manifest="data/aligned/manifest.csv",
        meta="data/aligned/meta.json",
        folds=folds_input,
        code=code("train_dgcn"),
    output:
        model="models/dgcn_{reference}/fold-{fold}.pt",
        metrics="metrics/dgcn_{reference}/fold-{fold}.json",
        plots="plots/dgcn_{reference}/fold-{fold}.csv",
        results=directory("results/dgcn_{reference}/fold-{fold}"),
    params:
        **declare("seed", "baseline", "dgcn", "compute"),
    resources:
        gpu=1,
    threads: GPU_JOB_THREADS
    log:
        "logs/train_dgcn/{reference}-fold-{fold}.log",
    shell:
        "mkdir -p logs/train_dgcn && python workflow/scripts/train_dgcn.py "
        "--keys {params.declared} --reference {wildcards.reference} --fold {wildcards.fold} "
        "--images {input.images} --manifest {input.manifest} --meta {input.meta} --folds {input.folds} "
        "--model {output.model} --metrics {output.metrics} --curve {output.plots} --out-dir {output.results} "
        "--resume-dir state/resume/dgcn_{wildcards.reference} "
        "--train-log logs/train_dgcn/{wildcards.reference}-fold-{wildcards.fold}.jsonl "
        + TO_LOG


rule train_fersnet:
    """FERSNet, one ablation row, one fold: recognition and synthesis branches with
    ConvFLU gates (or the single-task / hard-sharing rows), the synthesis branch
    conditioned on the target expression."""
    input:
        unpack(fersnet_inputs),
        images="data/aligned/images.npy",
        manifest="data/aligned/manifest.csv",
        meta="data/aligned/meta.json",
        folds=folds_input,
        code=code("train_fersnet"),
    output:
        model="models/fersnet_{fersnet_variant}/fold-{fold}.pt",
        metrics="metrics/fersnet_{fersnet_variant}/fold-{fold}.json",
        plots="plots/fersnet_{fersnet_variant}/fold-{fold}.csv",
        results=directory("results/fersnet_{fersnet_variant}/fold-{fold}"),
    params:
        **declare("seed", "fersnet", "compute"),
        extra=fersnet_args,
    resources:
        gpu=1,
    threads: GPU_JOB_THREADS
    log:
        "logs/train_fersnet/{fersnet_variant}-fold-{fold}.log",
    shell:
        "mkdir -p logs/train_fersnet && python workflow/scripts/train_fersnet.py "
        "--keys {params.declared} --variant {wildcards.fersnet_variant} --fold {wildcards.fold} "
        "--images {input.images} --manifest {input.manifest} --meta {input.meta} --folds {input.folds}"
        "{params.extra} --model {output.model} --metrics {output.metrics} --curve {output.plots} "
        "--out-dir {output.results} --resume-dir state/resume/fersnet_{wildcards.fersnet_variant} "
        "--train-log logs/train_fersnet/{wildcards.fersnet_variant}-fold-{wildcards.fold}.jsonl "
        + TO_LOG


rule probe_fersnet:
    """Does the fold's gated FERSNet render the expression it is asked for? Its synthesis
    branch re-expresses the fold's validation faces; the fold's baseline judges them."""
    input:
        images="data/aligned/images.npy",
        manifest="data/aligned/manifest.csv",
        meta="data/aligned/meta.json",
        folds=folds_input,
        fersnet="models/fersnet_gated/fold-{fold}.pt",
        classifier="models/baseline/fold-{fold}.pt",
        identity=identity_model,
        code=code("probe_fersnet"),
    output:
        metrics="metrics/fersnet_synthesis/fold-{fold}.json",
    params:
        **declare("seed", "compute"),
    resources:
        gpu=1,
    threads: GPU_JOB_THREADS
    log:
        "logs/probe_fersnet/fold-{fold}.log",
    shell:
        "mkdir -p logs/probe_fersnet && python workflow/scripts/probe_fersnet.py --keys {params.declared} "
        "--fold {wildcards.fold} --images {input.images} --manifest {input.manifest} --meta {input.meta} "
        "--folds {input.folds} --fersnet {input.fersnet} --classifier {input.classifier} "
        "--identity {input.identity} --metrics {output.metrics} "
        + TO_LOG
