import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "workflow" / "scripts"
SCHEMA = ROOT / "workflow" / "schemas" / "params.schema.yaml"
PARAMS = ROOT / "params.yaml"

# Let tests import the thin scripts' shared helper (workflow/scripts/_common.py).
if str(SCRIPTS) not in sys.path:
    sys.path.insert(0, str(SCRIPTS))
