"""The alignment stage: dataset in (any supported format), aligned array + manifest out.

Reads and validates the dataset (``fer.data.manifest``: unknown labels, missing files
and unparseable subject ids are errors), aligns every image (``fer.align.pipeline``),
writes the artifact and the QA table, and only then fails when more images failed than
``max_failure_fraction`` allows, so the QA table is there to read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fer.align.pipeline import AlignRecord, align_records, check_failures, write_aligned
from fer.data.manifest import DatasetError, read_csv_dataset, read_dataset, resolve_classes
from fer.params import AlignParams, CorpusParams, DataParams
from fer.utils.io import read_json, write_json


def run_alignment_stage(
    data: DataParams, align: AlignParams, out_dir: str | Path, metrics_path: str | Path
) -> dict[str, Any]:
    """Run the stage for the ``data`` and ``align`` params sections; return summary metrics."""
    records = read_dataset(
        data.format,
        data.root,
        subject_regex=data.subject_regex,
        image_extensions=data.image_extensions,
        label_map=data.label_map,
    )
    classes = resolve_classes(records, data.classes)
    return _align_and_write(records, classes, align, out_dir, metrics_path, "align")


def run_corpus_alignment_stage(
    corpus: CorpusParams, align: AlignParams, out_dir: str | Path, metrics_path: str | Path
) -> dict[str, Any]:
    """Align the unlabelled face-recognition corpus (csv layout: ``labels.csv`` with
    columns image, subject; any expression column is ignored, never read) with the same
    alignment settings as the labelled set."""
    records = read_csv_dataset(corpus.root, labelled=False)
    return _align_and_write(records, [], align, out_dir, metrics_path, "align_corpus")


def _align_and_write(
    records: list, classes: list[str], cfg: AlignParams, out_dir: str | Path, metrics_path: str | Path,
    prefix: str,
) -> dict[str, Any]:
    inputs = [AlignRecord(r.path, r.subject, r.label, r.landmarks_path) for r in records]
    output = align_records(inputs, cfg, progress=True)
    write_aligned(out_dir, output, inputs, cfg, classes)
    meta = read_json(Path(out_dir) / "meta.json")
    # Every class must keep images after alignment (an empty class cannot be learned or tested).
    kept_labels = {inputs[i].label for i in output.kept}
    empty = [c for c in classes if c not in kept_labels]
    summary = {
        f"{prefix}/n_input": meta["n_input"],
        f"{prefix}/n_ok": meta["n_ok"],
        f"{prefix}/n_failed": meta["n_failed"],
        f"{prefix}/failure_fraction": meta["failure_fraction"],
        f"{prefix}/residual_median": meta.get("residual_median"),
        f"{prefix}/residual_p95": meta.get("residual_p95"),
    }
    write_json(metrics_path, summary)
    check_failures(output, cfg, qa_path=Path(out_dir) / "qa.csv")
    if not output.kept:
        raise DatasetError(f"no image could be aligned (see {Path(out_dir) / 'qa.csv'})")
    if empty:
        raise DatasetError(f"classes {empty} have no image left after alignment (see {Path(out_dir) / 'qa.csv'})")
    return summary
