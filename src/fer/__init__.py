"""fer: facial expression recognition when labelled data is scarce.

All pipeline logic lives in this package; the Snakemake rules call thin command-line
scripts in ``workflow/scripts/`` that parse paths, load their declared parameters and
call one function of this package. Nothing here knows about Snakemake or params.yaml.
"""

__version__ = "0.1.0"
