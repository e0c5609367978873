"""Shared plumbing of the thin command-line scripts: argument parsing, logging, and the
declared-params view (a script may read only the params.yaml keys its rule declares)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from fer.config import DeclaredParams, load_params

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = ROOT / "workflow" / "schemas" / "params.schema.yaml"


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--params", default="params.yaml", help="the parameter file (default: params.yaml)")
    p.add_argument("--keys", default="", help="comma-separated params keys this stage declares")
    return p


def setup_logging() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )


def declared(args: argparse.Namespace) -> DeclaredParams:
    """Validate the whole parameter file, then expose only the declared keys."""
    params = load_params(args.params, SCHEMA)
    return DeclaredParams(params, [k for k in args.keys.split(",") if k])
