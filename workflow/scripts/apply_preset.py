"""Apply a preset (a partial params file, e.g. presets/paper.yaml) to params.yaml.

The merged file keeps params.yaml's comments and is validated against the schema before it
is written: a preset with an unknown key or a wrong type changes nothing.
"""

import argparse
import sys
from pathlib import Path

from _common import SCHEMA

from fer.params import ParamsError, apply_preset

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("preset", type=Path)
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = ap.parse_args()
    try:
        changed = apply_preset(args.params, args.preset, SCHEMA)
    except ParamsError as e:
        sys.exit(str(e))
    for key, (old, new) in changed.items():
        print(f"{key}: {old!r} -> {new!r}")
    print(f"{args.params}: {len(changed)} value(s) changed; if folds.n_folds changed, run `make dvc-yaml`")
