# The one description of the pipeline's DAG. dvc.yaml is generated from it
# (`make dvc-yaml`), and tests/test_dvc_sync.py fails when the two disagree.
#
#   snakemake --cores all --resources gpu=2     # two GPU jobs at once, one device each
#   dvc repro / dvc exp run -S baseline.lr=0.01 # same jobs, same commands, via dvc.yaml
#
# Every rule runs one thin command-line script (workflow/scripts/) that reads only the
# params.yaml keys the rule declares (see declare() in workflow/rules/common.smk).

configfile: "params.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/baseline.smk"
include: "workflow/rules/fesgan.smk"
include: "workflow/rules/corpus.smk"
include: "workflow/rules/comparison.smk"
include: "workflow/rules/report.smk"


report: "workflow/report/workflow.rst"


rule all:
    input:
        "reports/index.html",
        expand("metrics/{method}/summary.json", method=FULL_METHODS),
    default_target: True
