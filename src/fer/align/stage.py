"""The alignment stage: dataset in (any supported format), aligned array + manifest out.

Reads and validates the dataset (``fer.data.formats.read_labelled``, any ``data.format``:
unknown labels, missing files and unparseable subject ids are errors; files that are not
images and rows the dataset marks as no expression are listed as ``skipped`` rows of the
QA table), aligns every image (``fer.align.pipeline``),
writes the evidence (QA table, list of failures) into ``evidence_dir``, then checks:
more failed images than ``max_failure_fraction`` allows, no image aligned, or a class
left without images stops the stage *before* any declared output is written. Only then
are the aligned set and the metrics written, all together.

``evidence_dir`` is a folder that is not an output of the stage (the workflow passes the
job's log folder, ``logs/align``): what is in it survives a failed stage, and the error
message points there. It holds, after every run, only that run's files: ``qa.csv`` and
``failures.txt`` (:func:`fer.align.pipeline.write_evidence`) once the images were
aligned, or ``problems.txt`` (every problem of the dataset's list, when reading it
failed).
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any

from fer.align.pipeline import (
    AlignOutput,
    AlignRecord,
    align_records,
    check_failures,
    failure_kind,
    write_aligned,
    write_evidence,
)
from fer.data.formats import read_corpus, read_labelled
from fer.data.manifest import DatasetError, DatasetRead, Record, resolve_classes
from fer.params import AlignParams, CorpusParams, DataParams
from fer.utils.io import write_text

log = logging.getLogger(__name__)

EVIDENCE_FILES = ("qa.csv", "failures.txt", "problems.txt")


def _clear_evidence(evidence_dir: Path) -> None:
    for name in EVIDENCE_FILES:
        (evidence_dir / name).unlink(missing_ok=True)


def _read_or_report(read, evidence_dir: Path) -> Any:
    """``read()``; a :class:`DatasetError` is re-raised with every problem written to
    ``evidence_dir/problems.txt`` and the message pointing there."""
    try:
        return read()
    except DatasetError as e:
        path = evidence_dir / "problems.txt"
        write_text(path, "\n".join(e.problems) + "\n")
        raise DatasetError(f"{e}\n(all {len(e.problems)} problem(s) are listed in {path})", e.problems) from e


def run_alignment_stage(
    data: DataParams,
    align: AlignParams,
    out_dir: str | Path,
    metrics_path: str | Path,
    evidence_dir: str | Path,
) -> dict[str, Any]:
    """Run the stage for the ``data`` and ``align`` params sections; return summary metrics."""
    evidence = Path(evidence_dir)
    _clear_evidence(evidence)

    def read() -> tuple[DatasetRead, list[str]]:
        found = read_labelled(data)
        return found, resolve_classes(found.records, data.classes)

    found, classes = _read_or_report(read, evidence)
    if found.skipped:
        kinds = Counter(failure_kind(reason) for _, reason in found.skipped)
        log.info("not read as images (listed in qa.csv as skipped): %s", dict(sorted(kinds.items())))
    return _align_and_write(found.records, classes, align, out_dir, metrics_path, "align", evidence, found)


def run_corpus_alignment_stage(
    corpus: CorpusParams,
    align: AlignParams,
    out_dir: str | Path,
    metrics_path: str | Path,
    evidence_dir: str | Path,
) -> dict[str, Any]:
    """Align the unlabelled face-recognition corpus (``fer.data.formats.read_corpus``:
    ``labels.csv`` with columns image, subject, whose expression column if any is never
    read, or one folder per identity) with the same alignment settings as the labelled set."""
    evidence = Path(evidence_dir)
    _clear_evidence(evidence)
    found = _read_or_report(lambda: read_corpus(corpus.root), evidence)
    return _align_and_write(found.records, [], align, out_dir, metrics_path, "align_corpus", evidence, found)


def _summary(output: AlignOutput, prefix: str) -> dict[str, Any]:
    import numpy as np

    residuals = np.array(
        [r["residual"] for r in output.qa if r["status"] == "ok" and r["residual"] is not None], dtype=np.float64
    )
    return {
        f"{prefix}/n_input": output.n_input,
        f"{prefix}/n_ok": output.n_input - output.n_failed,
        f"{prefix}/n_failed": output.n_failed,
        f"{prefix}/failure_fraction": output.failure_fraction,
        f"{prefix}/n_skipped": len(output.skipped),
        f"{prefix}/residual_median": float(np.median(residuals)) if residuals.size else None,
        f"{prefix}/residual_p95": float(np.percentile(residuals, 95)) if residuals.size else None,
    }


def _align_and_write(
    records: list[Record],
    classes: list[str],
    cfg: AlignParams,
    out_dir: str | Path,
    metrics_path: str | Path,
    prefix: str,
    evidence_dir: Path,
    found: DatasetRead | None = None,
) -> dict[str, Any]:
    inputs = [
        AlignRecord(r.path, r.subject, r.label, r.landmarks_path, r.split, r.points, r.crop, r.pixels, r.box)
        for r in records
    ]
    output = align_records(inputs, cfg, progress=True)
    if found is not None:
        output.has_subjects = found.has_subjects
        output.skipped = [
            {"path": path, "subject": "", "label": None, "split": None, "status": "skipped", "reason": reason,
             "landmark_source": ""}
            for path, reason in found.skipped
        ]
    write_evidence(evidence_dir, output, cfg)
    check_failures(output, cfg)
    where = f"see {output.qa_path}"
    if not output.kept:
        raise DatasetError(f"no image could be aligned ({where})")
    # Every class must keep images after alignment (an empty class cannot be learned or tested).
    kept_labels = {inputs[i].label for i in output.kept}
    empty = [c for c in classes if c not in kept_labels]
    if empty:
        raise DatasetError(f"classes {empty} have no image left after alignment ({where})")
    summary = _summary(output, prefix)
    write_aligned(out_dir, output, inputs, cfg, classes, extra_json={metrics_path: summary})
    return summary
