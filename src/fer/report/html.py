"""The project's HTML report: one self-contained file (figures inlined as base64 PNG,
inline CSS, no script, no external URL), readable offline."""

from __future__ import annotations

import base64
import csv
import json
import datetime as _dt
import html
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fer.data.aligned import load_aligned
from fer.report import figures
from fer.report.provenance import provenance
from fer.utils.io import read_json, write_text

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{margin-bottom:.2em} h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.8em}
table{border-collapse:collapse;margin:.6em 0;font-size:.92em} th,td{border:1px solid #ccc;padding:.3em .6em;text-align:right}
th{background:#f3f3f3} td.l,th.l{text-align:left} .note{background:#fff8e1;border-left:4px solid #f0b400;padding:.5em .8em}
.grid img{width:720px;image-rendering:pixelated} pre{background:#f6f6f6;padding:.8em;overflow-x:auto;font-size:.85em} img{max-width:100%} .muted{color:#777}
"""

METRICS = (("test/acc", "accuracy"), ("test/mean_class_acc", "mean-class accuracy"), ("test/macro_f1", "macro-F1"))


@dataclass
class MethodResult:
    """One row of the results table: a method's per-fold metrics and its summary."""

    name: str
    description: str
    summary: dict[str, Any]
    folds: list[dict[str, Any]] = field(default_factory=list)
    paired: dict[str, Any] | None = None  # paired test of test/acc against the baseline
    wall_seconds: list[float | None] = field(default_factory=list)  # per fold: training wall time (logs), None: no log
    #: why the row has no paired test against the baseline (e.g. a different budget); '' otherwise
    unpaired: str = ""


def fold_epochs(folds: Sequence[Mapping[str, Any]]) -> list[Any]:
    """Each fold's recogniser budget (the metrics' ``epochs``; None where absent)."""
    return [f.get("epochs") for f in folds]


def unequal_budget(folds: Sequence[Mapping[str, Any]], reference: Sequence[Mapping[str, Any]]) -> str:
    """Why a row cannot be paired with the reference row at equal budget: '' when every
    fold trained the same epochs as the reference's fold, else e.g. 'budget 60 epochs vs
    40'. Rows compared in a paired test must have equal budgets (rows that continue a
    trained network, finetune.start: accnn, train longer and are paired with their own
    control instead)."""
    a, b = fold_epochs(folds), fold_epochs(reference)
    if a == b:
        return ""

    def text(v: list[Any]) -> str:
        u = sorted({str(x) for x in v})
        return u[0] if len(u) == 1 else "/".join(str(x) for x in v)

    return f"budget {text(a)} epochs vs {text(b)}"


def training_seconds(log: Path) -> float | None:
    """A training job's wall time from its JSON-lines training log: the sum of the
    ``seconds`` of its epochs or steps (None when the log is absent, e.g. after
    ``dvc pull`` into a fresh clone: wall times are kept in logs/, not in artifacts)."""
    try:
        lines = log.read_text().splitlines()
    except FileNotFoundError:
        return None
    rows = [json.loads(line) for line in lines if line.strip()]
    secs = [float(r["seconds"]) for r in rows if isinstance(r.get("seconds"), (int, float))]
    return sum(secs) if secs else None


def wall_time_text(seconds: Sequence[float | None]) -> str:
    """'4.1 min (3.9-4.4)': median training wall time over folds and its range; 'n/a'
    without logs; '(k of n folds)' when only some folds have a log."""
    known = sorted(x for x in seconds if x is not None)
    if not known:
        return "n/a"

    def fmt(x: float) -> str:
        return f"{x / 60:.1f} min" if x >= 90 else f"{x:.0f} s" if x >= 10 else f"{x:.1f} s"

    text = fmt(known[len(known) // 2])
    if len(known) > 1:
        text += f" ({fmt(known[0])}-{fmt(known[-1])})"
    if len(known) < len(seconds):
        text += f" ({len(known)} of {len(seconds)} folds)"
    return text


@dataclass
class FesganSection:
    """What the report shows of FESGAN: per-fold sample grids and losses, synthetic-set
    quality, the identity network."""

    grids: list[dict[str, Path]]  # per fold: {"real": png path, "prior": png path}
    losses: list[dict[str, Any]]  # per fold: the pretraining's final loss terms
    synthetic: list[dict[str, Any]]  # per fold: synthetic-set quality metrics
    identity: list[dict[str, Any]]  # identity-network metrics: one network (the corpus's) or one per fold
    note: str = ""  # how this run's FESGAN departs from the paper (plain text), shown first
    identity_source: str = "the face-recognition corpus's identities"  # what the identity network learned


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


class Raw(str):
    """A table cell that is HTML already (not escaped again)."""


def _cell(c: Any) -> str:
    return c if isinstance(c, Raw) else html.escape(str(c))


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]], left: int = 1) -> str:
    h = "".join(f'<th class="{"l" if i < left else ""}">{html.escape(str(c))}</th>' for i, c in enumerate(header))
    body = []
    for r in rows:
        body.append("<tr>" + "".join(
            f'<td class="{"l" if i < left else ""}">{_cell(c)}</td>' for i, c in enumerate(r)) + "</tr>")
    return f"<table><tr>{h}</tr>{''.join(body)}</table>"


def _p(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def paired_cells(pt: Mapping[str, Any] | None, *, wins: bool = False, unpaired: str = "") -> list[str]:
    """A paired test's table cells (``fer.metrics.stats.paired_test``): the mean
    difference in points, optionally wins/losses, the t-test and Wilcoxon p-values; empty
    cells for the reference row (``pt`` None); ``not paired: <unpaired>`` and empty cells
    for a row that has no paired test because of ``unpaired`` (``unequal_budget``'s
    reason), whatever ``pt`` is."""
    n = 4 if wins else 3
    if unpaired:
        return [f"not paired: {unpaired}"] + [""] * (n - 1)
    if pt is None:
        return [""] * n
    diff = [f"{100 * pt['mean_diff']:+.2f}"] + ([f"{pt['wins']}/{pt['losses']}"] if wins else [])
    return diff + [_p(pt["t_p"]), _p(pt["wilcoxon_p"])]


def _file_img(path: Path, alt: str) -> str:
    if not Path(path).is_file():
        return f"<p>({html.escape(alt)}: missing)</p>"
    return f'<div class="grid">{_img(Path(path).read_bytes(), alt)}</div>'


def mean_std_cell(stats: Mapping[str, Any] | None) -> str:
    """``mean ± std`` in percent of a summary's metric (``{"mean", "std", ...}``)."""
    if not stats:
        return "n/a"
    return f"{100 * stats['mean']:.2f} ± {100 * stats['std']:.2f}"


def read_curve(path: str | Path) -> list[dict[str, float]]:
    with open(path, newline="") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def protocol_html(fold_doc: Mapping[str, Any], has_subjects: bool = True) -> str:
    """The sentence under the folds table: which protocol (folds.json ``protocol``) made
    the folds, with the official split's sizes."""
    if fold_doc.get("protocol", "subject_kfold") != "official":
        return ("<p>Subject-independent: no subject appears in two parts of one fold (checked when the folds are "
                "written).</p>")
    sizes = fold_doc.get("split_sizes", {})
    text = (f"<p>Protocol: the dataset's official split (folds.protocol official), one fold: train "
            f"{sizes.get('train')}, validation {sizes.get('val')}, test {sizes.get('test')} images. ")
    if has_subjects:
        return text + "No subject appears in two parts (checked when the folds are written).</p>"
    return text + ("The dataset has no subject ids: the parts are separated by image, as the official split "
                   "defines them.</p>")


def alignment_qa_html(qa_rows: Sequence[Mapping[str, str]], info: Mapping[str, Any]) -> list[str]:
    """The alignment QA section: counts over the images, the failed images, and what the
    dataset's reader did not read as an image (qa.csv rows with status ``skipped``: files
    beside the images, rows the dataset marks as no expression), counted by reason."""
    parts: list[str] = []
    skipped = Counter(r["reason"].split(":", 1)[0] for r in qa_rows if r["status"] == "skipped")
    qa_rows = [r for r in qa_rows if r["status"] != "skipped"]  # files the reader did not read as images
    status = Counter(r["status"] for r in qa_rows)
    sources = Counter(r["landmark_source"] for r in qa_rows if r["status"] == "ok")
    parts.append(_table(["input images", "aligned", "failed", "failure fraction", "landmark sources", "residual median", "residual p95"], [[
        len(qa_rows), status.get("ok", 0), status.get("failed", 0), f"{info.get('failure_fraction', 0):.3f}",
        ", ".join(f"{k}: {v}" for k, v in sorted(sources.items())),
        _fmt(info.get("residual_median")), _fmt(info.get("residual_p95"))]]))
    failed = [r for r in qa_rows if r["status"] != "ok"]
    if failed:
        parts.append(f"<p>{len(failed)} image(s) failed alignment and are not in the training data:</p>")
        parts.append(_table(["file", "reason"], [[r["path"], r["reason"]] for r in failed[:50]]))
        if len(failed) > 50:
            parts.append(f"<p>... and {len(failed) - 50} more (see data/aligned/qa.csv).</p>")
    else:
        parts.append("<p>No image failed alignment.</p>")
    if skipped:
        parts.append(f"<p>{sum(skipped.values())} file(s) or row(s) of the dataset were not read as images "
                     "(status skipped in data/aligned/qa.csv):</p>")
        parts.append(_table(["reason", "count"], [[k, v] for k, v in sorted(skipped.items())]))
    return parts


def build_report(
    *,
    methods: Sequence[MethodResult],
    curves: Mapping[str, Sequence[Mapping[str, float]]],
    images: str | Path,
    manifest: str | Path,
    qa: str | Path,
    meta: str | Path,
    folds: str | Path,
    params: Mapping[str, Any],
    faces_per_class: int,
    seed: int,
    out: str | Path,
    status_note: str = "",
    fesgan: FesganSection | None = None,
    extra_sections: Sequence[str] = (),
) -> None:
    """Render reports/index.html from the pipeline's artifacts. ``extra_sections`` are
    ready HTML fragments (``fer.report.sections``) placed after the FESGAN section."""
    data = load_aligned(images, manifest, meta)
    fold_doc = read_json(folds)
    classes = data.classes
    with open(qa, newline="") as f:
        qa_rows = list(csv.DictReader(f))
    parts: list[str] = []
    prov = provenance()
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts.append("<h1>Facial expression recognition with scarce labels</h1>")
    git = prov["git"]
    dirty = " (with uncommitted changes)" if git["dirty"] else ""
    parts.append(f'<p class="muted">Generated {now} from commit <code>{html.escape(str(git["commit"]))}</code>{dirty}. '
                 f"Dataset format <code>{html.escape(params['data']['format'])}</code>, "
                 f"{len(data.images)} aligned images of {len(set(data.subjects.tolist()))} subjects, "
                 f"{len(classes)} classes.</p>")
    if status_note:
        parts.append(f'<p class="note">{html.escape(status_note)}</p>')

    # Results
    parts.append("<h2>Results (mean ± std over subject-independent test folds, %)</h2>")
    rows = []
    for m in methods:
        s = m.summary["metrics"]
        pt = m.paired
        vs = paired_cells(pt, wins=True, unpaired=m.unpaired)
        rows.append([m.name] + [mean_std_cell(s.get(k)) for k, _ in METRICS]
                    + [mean_std_cell(s.get("test/last_epoch_acc")), m.summary["n_folds"], budget_text(m.folds),
                       Raw(f'<span class="wall">{html.escape(wall_time_text(m.wall_seconds))}</span>')] + vs)
    parts.append(_table(["method"] + [n for _, n in METRICS]
                        + ["accuracy, last epoch", "folds", "budget: epochs (selected, median)",
                           "training wall time per fold (median, range)",
                           "Δ accuracy vs baseline", "folds better/worse", "paired t p", "Wilcoxon p"], rows))
    parts.append("<p>Budget: the recogniser's training epochs per fold and, in brackets, the median selected "
                 "(best-validation) epoch. <b>still rising</b> marks a row whose validation accuracy reached a new "
                 "best in the last fifth of its epochs on some folds: its budget may have stopped it while it was "
                 "still learning. Rows compared in a paired test train the same number of epochs over the labelled "
                 "images (params validation enforces it, and a row whose folds trained other epochs than the "
                 "baseline's gets no paired test: 'not paired'; the corpus row and its control with finetune.start: "
                 "accnn continue the trained AC-CNN, so they are paired with each other in the corpus section). "
                 "Wall time: the training job's epochs (or steps) as its "
                 "log under logs/ records them, on this run's machine and thread count (compute.threads); a "
                 "generator's own pre-training (FESGAN, which the joint rows start from) is a separate job, not "
                 "counted here; n/a where the logs are absent (e.g. results pulled from a DVC remote).</p>")
    parts.append("<p>Each fold's model is selected on a validation split of subjects inside that fold's training part; "
                 "the test fold is used once, for these numbers. 'Last epoch' is the model after the final epoch, "
                 "shown for comparison only (never used for selection). The paired tests compare per-fold test "
                 "accuracies with the baseline's on the same folds and seeds; with few folds they have little power.</p>")
    parts.append(_table(["method", "what it is"], [[m.name, m.description] for m in methods], left=2))
    for m in methods:
        parts.append(f"<details><summary>{html.escape(m.name)}: per fold and confusion matrix</summary>")
        frows = [[f"fold {i}"] + [f"{100 * fm[k]:.2f}" for k, _ in METRICS] + [fm.get("best_epoch", ""), fm.get("n_train", ""),
                  fm.get("n_val", ""), fm.get("n_test", "")] for i, fm in enumerate(m.folds)]
        parts.append(_table(["fold"] + [n for _, n in METRICS] + ["selected epoch", "train", "val", "test"], frows))
        pooled = m.summary.get("pooled_confusion")
        if pooled:
            parts.append(_img(figures.confusion_figure(pooled, classes, f"{m.name}: pooled over test folds"),
                              f"{m.name} confusion matrix"))
        parts.append("</details>")
    if curves:
        parts.append("<h2>Training curves</h2>")
        parts.append(_img(figures.curves_figure(curves), "training curves"))

    if fesgan is not None:
        parts.append(_fesgan_html(fesgan))
    parts.extend(extra_sections)

    # Data
    parts.append("<h2>Aligned faces per class</h2>")
    parts.append(_img(figures.faces_grid(data.images, data.labels, classes, faces_per_class, seed), "aligned faces"))
    counts = Counter(data.labels.tolist())
    parts.append(_table(["class", "images", "subjects"], [
        [c, counts.get(i, 0), len(set(data.subjects[data.labels == i].tolist()))] for i, c in enumerate(classes)]))

    parts.append("<h2>Alignment QA</h2>")
    parts.extend(alignment_qa_html(qa_rows, data.meta))

    parts.append("<h2>Folds</h2>")
    frows = []
    for row in fold_doc["summary"]:
        frows.append([f"fold {row['fold']}"] + [f"{row[p]['subjects']} / {row[p]['images']}" for p in ("train", "val", "test")])
    parts.append(_table(["fold", "train subjects / images", "val subjects / images", "test subjects / images"], frows))
    parts.append(protocol_html(fold_doc, bool(data.meta.get("has_subjects", True))))

    parts.append("<h2>Parameters</h2>")
    parts.append(f"<pre>{html.escape(yaml.safe_dump(dict(params), sort_keys=False))}</pre>")
    parts.append("<h2>Provenance</h2>")
    parts.append(_table(["package", "version"], sorted(prov["packages"].items())))
    parts.append(_table(["device", "value"], [[k, str(v)] for k, v in prov["device"].items()]))

    doc = (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>FER pipeline report</title>"
           f"<style>{CSS}</style></head><body>{''.join(parts)}</body></html>")
    write_text(out, doc)


def budget_text(folds: Sequence[Mapping[str, Any]]) -> str:
    """'40 (31)' -- epochs per fold (a range when they differ) and the median selected
    epoch -- plus 'still rising on k/n folds' when validation was still improving."""
    epochs = sorted({int(f["epochs"]) for f in folds if "epochs" in f})
    if not epochs:
        return "n/a"
    best = sorted(int(f["best_epoch"]) for f in folds if "best_epoch" in f)
    text = (str(epochs[0]) if len(epochs) == 1 else f"{epochs[0]}-{epochs[-1]}")
    if best:
        text += f" ({best[len(best) // 2]})"
    rising = sum(bool(f.get("val/still_rising")) for f in folds)
    if rising:
        text += f", still rising on {rising}/{len(folds)} folds"
    return text


def _fmt(x: Any) -> str:
    return "n/a" if x is None else f"{float(x):.3f}"


SYNTH_COLUMNS = (
    ("synth/expr_acc", "expression acc. of synthetic images"),
    ("synth/real_expr_acc", "same classifier on real training images"),
    ("synth/fid_recognizer", "Fréchet distance (classifier features)"),
    ("synth/prior_nn_dist_median", "prior identities: median NN distance to training faces"),
    ("synth/prior_distinct_nn_subjects", "distinct nearest training subjects"),
    ("synth/prior_pairwise_ratio", "prior/real pairwise identity distance"),
)


def _num(x: Any) -> str:
    if isinstance(x, bool) or x is None:
        return str(x)
    if isinstance(x, int):
        return str(x)
    if isinstance(x, float):
        return f"{x:.3f}"
    return html.escape(str(x))


def _fesgan_html(f: FesganSection) -> str:
    parts = ["<h2>FESGAN: samples, pretraining losses, synthetic-set quality</h2>"]
    if f.note:
        parts.append(f'<p class="note">{html.escape(f.note)}</p>')
    if f.grids:
        parts.append("<p>Sample grids of fold 0 from the EMA generator (rows: identities; columns: target "
                     "expressions). Real identities: each row re-expresses a training image (first column). "
                     "Prior identities: each row is an identity code drawn from the prior.</p>")
        g = f.grids[0]
        parts.append("<h3>Real identities, re-expressed</h3>" + _file_img(g["real"], "real identities"))
        parts.append("<h3>Prior (new) identities</h3>" + _file_img(g["prior"], "prior identities"))
        for k, g in enumerate(f.grids[1:], start=1):
            parts.append(f"<details><summary>fold {k} sample grids</summary>"
                         + _file_img(g["real"], f"fold {k} real") + _file_img(g["prior"], f"fold {k} prior")
                         + "</details>")
    if f.synthetic:
        parts.append("<h3>Synthetic set quality (per fold)</h3>")
        keys = [k for k, _ in SYNTH_COLUMNS if any(k in q for q in f.synthetic)]
        names = dict(SYNTH_COLUMNS)
        rows = [[f"fold {i}"] + [_num(q.get(k)) for k in keys] for i, q in enumerate(f.synthetic)]
        parts.append(_table(["fold"] + [names[k] for k in keys], rows))
        feats = {str(q.get("synth/identity_features")) for q in f.synthetic}
        parts.append("<p>Expression accuracy: the fold's baseline (trained on that fold's real training images only) "
                     "classifies the synthetic images by their target expression. Fréchet distance between its "
                     "penultimate features of real training and synthetic images. Identity measures use the "
                     f"{html.escape(', '.join(sorted(feats)))} features.</p>")
    if f.losses:
        keys = sorted({k for l in f.losses for k, v in l.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})
        parts.append("<details><summary>FESGAN pretraining: final loss terms per fold</summary>")
        parts.append(_table(["fold"] + keys, [[f"fold {i}"] + [_num(l.get(k)) for k in keys] for i, l in enumerate(f.losses)]))
        parts.append("</details>")
    if f.identity:
        parts.append(f"<p>Identity network (FESGAN's identity-preservation loss), trained on "
                     f"{html.escape(f.identity_source)}:</p>")
        keys = sorted({k for m in f.identity for k in m})
        names = ["corpus"] if len(f.identity) == 1 else [f"fold {i}" for i in range(len(f.identity))]
        parts.append(_table(["network"] + keys, [[n] + [_num(m.get(k)) for k in keys] for n, m in zip(names, f.identity)]))
    return "".join(parts)
