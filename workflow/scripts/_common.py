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


def fold_context(args: argparse.Namespace, p: DeclaredParams):
    """The set-up every per-fold training script shares: claim the device, seed with the
    fold's seed (``seed + fold``: every method of a fold starts from the same seed), load
    the aligned set and the fold's split. Returns (device, seed, data, split)."""
    from fer.data.aligned import load_aligned
    from fer.data.folds import split_indices
    from fer.utils.device import select_device
    from fer.utils.io import read_json
    from fer.utils.seed import seed_everything

    compute = p.get("compute")
    device = select_device(compute["device"], compute["threads"])
    seed = p.get("seed") + args.fold
    seed_everything(seed)
    data = load_aligned(args.images, args.manifest, args.meta)
    split = split_indices(data.subjects, read_json(args.folds)["folds"][args.fold])
    return device, seed, data, split
