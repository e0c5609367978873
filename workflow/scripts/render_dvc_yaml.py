"""Render dvc.yaml from the Snakefile (`make dvc-yaml`), or check that it is up to date.

    python workflow/scripts/render_dvc_yaml.py --out dvc.yaml     # write (atomic)
    python workflow/scripts/render_dvc_yaml.py --check dvc.yaml   # exit 1 + unified diff if stale

The work is done by dvcgen.py beside this script (one DVC stage per Snakemake job).
"""

import sys

import _common  # noqa: F401  (first: one line naming the fix when this python lacks the project)
from dvcgen import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
