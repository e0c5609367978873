"""Report sections of the corpus method (M4) and of the two comparison methods (M2, M3).

Each function returns an HTML fragment for ``fer.report.html.build_report``'s
``extra_sections``; figures are inlined (base64 PNG), nothing refers to a URL.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fer.report.html import _file_img, _img, _num, _table, budget_text, mean_std_cell, paired_cells, unequal_budget

if TYPE_CHECKING:  # annotations only: the report stage's import closure stays as it is
    from fer.params import FersnetParams, FesganParams

#: Pseudo-label quality columns (keys of ``fer.clustering.quality.pseudo_label_quality``).
QUALITY_COLUMNS: tuple[tuple[str, str], ...] = (
    ("pseudo/acc_kept", "accuracy of kept pseudo-labels"),
    ("pseudo/acc_all", "accuracy of all pseudo-labels"),
    ("pseudo/coverage", "coverage (kept fraction)"),
    ("pseudo/rejected", "rejected fraction"),
    ("pseudo/rejected_unknown", "rejected: share of no labelled class"),
    ("pseudo/assigned_unknown", "assigned: share of no labelled class"),
    ("cluster/nmi", "NMI"),
    ("cluster/purity", "purity"),
)


def _mean_std(values: Sequence[float]) -> str:
    v = np.asarray([float(x) for x in values if x is not None], dtype=float)
    if v.size == 0:
        return "n/a"
    return f"{v.mean():.3f} ± {v.std(ddof=1) if v.size > 1 else 0.0:.3f}"


def round_dirs(rounds_dir: Path) -> list[Path]:
    """The ``round-R`` folders of a fine-tuning run, in round order."""
    dirs = [d for d in Path(rounds_dir).glob("round-*") if d.is_dir() and d.name[6:].isdigit()]
    return sorted(dirs, key=lambda d: int(d.name[6:]))


def quality_table(quality: Mapping[str, Any]) -> str:
    """Pseudo-label quality per round: mean ± std over folds, then per fold and round."""
    folds: list[list[dict[str, Any]]] = quality["folds"]
    n_rounds = max(len(f) for f in folds)
    rows = []
    for r in range(n_rounds):
        at_r = [f[r] for f in folds if len(f) > r]
        rows.append([f"round {r}", len(at_r)] + [_mean_std([q.get(k) for q in at_r]) for k, _ in QUALITY_COLUMNS])
    out = [_table(["round", "folds"] + [n for _, n in QUALITY_COLUMNS], rows)]
    detail = []
    for k, f in enumerate(folds):
        for q in f:
            kept = q.get("pseudo/kept_per_class")
            detail.append([f"fold {k}", f"round {q['round']}"] + [_num(q.get(key)) for key, _ in QUALITY_COLUMNS]
                          + [", ".join(str(x) for x in kept) if isinstance(kept, list) else "n/a"])
    out.append("<details><summary>per fold and round</summary>"
               + _table(["fold", "round"] + [n for _, n in QUALITY_COLUMNS] + ["kept per class"], detail, left=2)
               + "</details>")
    return "".join(out)


def _counts(s: Mapping[str, Any], key: str, num_classes: int) -> list[int] | None:
    v = s.get(key)
    return [int(x) for x in v] if isinstance(v, list) and len(v) == num_classes else None


def pseudo_counts(stats: Sequence[Mapping[str, Any]], rounds: Sequence[Path], classes: Sequence[str]) -> list[dict[str, Any]]:
    """Assigned, kept and rejected pseudo-label counts per fold, round and class.

    Round 0 of fold k comes from ``stats[k]`` (the round-0 clustering, metrics/pseudo); round
    R >= 1 from ``rounds[k]/round-R/stats.json`` (the re-clustering rounds of the
    fine-tuning). Each entry: fold, round, and per-class lists ``assigned`` (= kept + not
    kept), ``kept``, ``rejected`` (by best class; None when the stats predate rejection), and
    ``check``: the pseudo-labels' score on the fold's validation faces (stats ``check``;
    None when the clustering had none)."""
    from fer.utils.io import read_json

    c = len(classes)
    out: list[dict[str, Any]] = []
    for k, s0 in enumerate(stats):
        per_round: list[tuple[int, Mapping[str, Any]]] = [(0, s0)]
        if k < len(rounds):
            per_round += [(int(d.name[6:]), read_json(d / "stats.json")) for d in round_dirs(rounds[k])
                          if int(d.name[6:]) > 0 and (d / "stats.json").is_file()]
        for r, s in per_round:
            out.append({"fold": k, "round": r, "assigned": _counts(s, "assigned_per_class", c),
                        "kept": _counts(s, "kept_per_class", c), "rejected": _counts(s, "rejected_per_class", c),
                        "check": s.get("check") if isinstance(s.get("check"), dict) else None})
    return out


def counts_table(counts: Sequence[Mapping[str, Any]], classes: Sequence[str]) -> str:
    """Per round, summed over folds: totals and per class 'assigned / kept / rejected', and
    the pseudo-labels' accuracy on the validation faces with its reliability (chance-corrected;
    what ``finetune.validation_weighting`` scales the pseudo-label weight by), mean over
    folds; the per-fold rows folded below."""

    def check_cells(checks: Sequence[Mapping[str, Any] | None]) -> list[str]:
        got = [ch for ch in checks if ch is not None]
        if not got or len(got) != len(checks):
            return ["n/a", "n/a"]
        accs = [ch.get("acc_assigned") for ch in got]
        acc = "n/a" if any(a is None for a in accs) else f"{100 * float(np.mean(accs)):.1f} %"
        return [acc, f"{float(np.mean([ch['reliability'] for ch in got])):.2f}"]

    def total(v: list[int] | None) -> str:
        return "n/a" if v is None else str(sum(v))

    def cells(e: Mapping[str, Any], checks: Sequence[Mapping[str, Any] | None]) -> list[str]:
        a, kp, rj = e["assigned"], e["kept"], e["rejected"]
        nk = None if a is None or kp is None else [x - y for x, y in zip(a, kp, strict=True)]
        per_class = [" / ".join("n/a" if v is None else str(v[i]) for v in (a, kp, rj)) for i in range(len(classes))]
        return [total(a), total(kp), total(nk), total(rj)] + check_cells(checks) + per_class

    def add(x: list[int] | None, y: list[int] | None) -> list[int] | None:
        return None if x is None or y is None else [i + j for i, j in zip(x, y, strict=True)]

    header = (["assigned", "kept", "not kept", "rejected", "val. accuracy", "reliability"]
              + [f"{c} (a / k / r)" for c in classes])
    summed: dict[int, dict[str, Any]] = {}
    n_folds: dict[int, int] = {}
    for e in counts:
        r = e["round"]
        if r not in summed:
            summed[r] = {key: e[key] for key in ("assigned", "kept", "rejected")}
            n_folds[r] = 1
        else:
            summed[r] = {key: add(summed[r][key], e[key]) for key in ("assigned", "kept", "rejected")}
            n_folds[r] += 1
    rows = [[f"round {r}", n_folds[r]] + cells(summed[r], [e.get("check") for e in counts if e["round"] == r])
            for r in sorted(summed)]
    detail = [[f"fold {e['fold']}", f"round {e['round']}"] + cells(e, [e.get("check")]) for e in counts]
    return (_table(["round", "folds"] + header, rows)
            + "<details><summary>per fold and round</summary>"
            + _table(["fold", "round"] + header, detail, left=2) + "</details>")


def corpus_ablation(by_name: Mapping[str, Mapping[str, Any]], start: str = "scratch") -> list[list[str]]:
    """The corpus section's ablation rows from the rows' summaries (``by_name``): row,
    accuracy, budget, then the paired test of ``test/acc`` against the row's equal-budget
    reference. ``start`` is ``finetune.start``: with ``scratch`` the corpus row is paired
    with ``accnn`` (both train the baseline's budget); with ``accnn`` it is paired with its
    control ``accnn_continued`` (both continue the trained AC-CNN for the same extra epochs),
    and ``accnn`` is shown for reference without a test (a shorter budget)."""
    from fer.metrics.stats import paired_test

    reference = "accnn_continued" if start == "accnn" else "accnn"
    order = ("accnn", "accnn_continued", "accnn_corpus") if start == "accnn" else ("accnn", "accnn_corpus")
    ref = by_name[reference]
    rows = []
    for name in order:
        s = by_name[name]
        acc = s["metrics"]["test/acc"]
        if name == reference:
            cells = ["reference", "", ""]
        elif name == "accnn_corpus":
            why = unequal_budget(s["per_fold"], ref["per_fold"])
            if why:  # the rules make them equal; a mismatch is a stale or hand-made artifact
                raise ValueError(f"the corpus row and its reference {reference} differ in {why}: re-run the pipeline")
            cells = paired_cells(paired_test(acc["values"], ref["metrics"]["test/acc"]["values"]))
        else:
            cells = paired_cells(None, unpaired=unequal_budget(s["per_fold"], ref["per_fold"]))
        rows.append([name, mean_std_cell(acc), budget_text(s["per_fold"]), *cells])
    return rows


def corpus_section(
    *,
    stats: Sequence[Mapping[str, Any]],
    quality: Mapping[str, Any] | None,
    rounds: Sequence[Path],
    classes: Sequence[str],
    complexity: Sequence[Mapping[str, Any]],
    ablation: Sequence[Sequence[Any]],
    first_round: str = "mixed",
    keep_start: bool = False,
    start: str = "scratch",
) -> str:
    """M4: round-0 clustering, pseudo-label quality per round, a 2-D map of the corpus
    embeddings coloured by pseudo-label, the corpus ablation and the AC-CNN's size;
    ``first_round``, ``keep_start`` and ``start`` are the finetune section's (said in the
    text); ``ablation``: :func:`corpus_ablation`'s rows."""
    from fer.clustering.guided import read_pseudo_labels
    from fer.clustering.map2d import map_png

    parts = ["<h2>Expression-guided clustering of the corpus and the AC-CNN (Fang et al., 2023)</h2>"]
    parts.append("<p>Per fold, the fold's recogniser embeds the unlabelled face-recognition corpus and the fold's "
                 "labelled training images (never its validation or test images); FAISS k-means under expression "
                 "guidance turns clusters into expression pseudo-labels; the most confident, class-balanced ones "
                 "join the AC-CNN's fine-tuning. Later rounds re-embed and re-cluster with the fine-tuned AC-CNN.</p>")
    if first_round == "real":
        parts.append("<p>finetune.first_round = real: round 0 trained the AC-CNN on the labelled training images "
                     "only (its round-0 pseudo-labels below were made but not trained on); round 1 re-clustered the "
                     "corpus with it, and rounds 1 and later fine-tuned it on real and pseudo-labelled images.</p>")
    if start == "accnn":
        parts.append("<p>finetune.start = accnn: the corpus row continued each fold's trained AC-CNN (row accnn) "
                     "for (finetune.rounds + 1) x finetune.epochs more epochs on real and pseudo-labelled images. "
                     "Its control, row accnn_continued, continued the same network for the same epochs with the "
                     "same seeds and schedule on the labelled images only, so the two differ by the corpus alone "
                     "and are paired with each other (row accnn has a shorter budget and is shown for reference). "
                     "Their budget counts the AC-CNN's own epochs and the continuation's; their selected epoch counts "
                     "within the continuation (0: no epoch beat the start on validation, which was kept).</p>")
    if keep_start:
        which = "in every round, the first included," if start == "accnn" else "in every round after the first,"
        parts.append(f"<p>finetune.keep_start = true: {which} the weights the round started from competed in its validation selection (epoch 0), so a "
                     "round that did not beat them on the validation faces left the network as it was.</p>")
    parts.append("<h3>Without corpus / with corpus</h3>")
    parts.append(_table(["row", "accuracy", "budget: epochs (selected, median)", "Δ vs reference", "paired t p",
                         "Wilcoxon p"], ablation))
    parts.append("<h3>Pseudo-labels per class and round: assigned, kept, rejected</h3>")
    parts.append(counts_table(pseudo_counts(stats, rounds, classes), classes))
    q = next((s.get("config", {}).get("reject_quantile") for s in stats), None)
    rule = ("rejection was off (clustering.reject_quantile = 1): every corpus face was assigned a class"
            if q is None or q >= 1 else
            f"clustering.reject_quantile = {q}: a face farther from its best class's labelled anchor than that "
            "quantile of the fold's training images' own distances to it was rejected")
    parts.append("<p>Every corpus face is either rejected (\"none of these\": no pseudo-label; counted under its "
                 "nearest class) or assigned a class; of the assigned ones, the selection keeps the most confident "
                 f"per class (assigned = kept + not kept). Summed over folds; {html.escape(rule)}. Calibrated per "
                 "fold on the fold's labelled training images only.</p>")
    parts.append("<h3>Pseudo-label quality per round</h3>")
    if quality is None:
        parts.append("<p>The corpus has no expression truth (params corpus.truth is empty), so the pseudo-labels "
                     "cannot be scored; this is the normal case for a real face-recognition corpus.</p>")
    else:
        parts.append(quality_table(quality))
        parts.append("<p>Scored against the corpus's hidden expression truth, which only this evaluation reads "
                     "(no training or clustering step has it as an input). Coverage: share of the corpus whose "
                     "pseudo-label is kept. NMI and purity: of the clusters against the truth.</p>")
    keys = ("guidance", "k", "n", "n_kept", "n_train", "subsampled", "used_gpu", "objective")
    parts.append("<details><summary>round-0 clustering per fold</summary>"
                 + _table(["fold"] + list(keys), [[f"fold {i}"] + [_num(s.get(k)) for k in keys]
                                                  for i, s in enumerate(stats)])
                 + "</details>")
    if rounds:
        dirs = round_dirs(rounds[0])
        if dirs:
            last = dirs[-1]
            pl = read_pseudo_labels(last, classes)
            with np.load(last / "map.npz") as m:
                idx, xy = m["idx"], m["xy"]
            title = f"fold 0, {last.name}: corpus embeddings (t-SNE) coloured by pseudo-label (grey: not kept or rejected)"
            parts.append("<h3>Map of the corpus embeddings</h3>")
            parts.append(_img(map_png(xy, pl.label[idx], classes, title, kept=pl.kept[idx]), "corpus embedding map"))
    parts.append("<h3>Model size</h3>")
    parts.append(_table(["architecture", "width", "parameters", "multiply-accumulates per image"],
                        [[r["arch"], r["width"], f"{r['params']:,}", f"{r['macs']:,}"] for r in complexity]))
    parts.append("<p>The AC module is the project's reading of the paper's affinity convolution (its exact "
                 "definition is not public): two depthwise-separable convolutions, the channel affinity, a max-pool and "
                 "a projection shortcut (mini-Xception's residual module); see <code>fer.models.accnn</code>. Counts are for one aligned input "
                 "image at the pipeline's resolution; ResNet-18 at its standard widths for reference.</p>")
    return "".join(parts)


def grids_section(title: str, text: str, dirs: Sequence[Path]) -> str:
    """A method's sample grids: every PNG of fold 0's results folder, the other folds folded."""
    parts = [f"<h2>{html.escape(title)}</h2>", f"<p>{html.escape(text)}</p>"]
    for k, d in enumerate(dirs):
        pngs = sorted(Path(d).glob("*.png"))
        if not pngs:
            continue
        imgs = "".join(_file_img(p, f"fold {k} {p.stem}") for p in pngs)
        parts.append(imgs if k == 0 else f"<details><summary>fold {k}</summary>{imgs}</details>")
    return "".join(parts)


#: The level a generator's faces should reach: their expression accuracy under the fold's
#: real-only recogniser, as a fraction of that recogniser's accuracy on real faces of unseen
#: subjects (the fold's validation split).
GENERATOR_TARGET_RATIO = 0.8


def generator_probe_section(synthetic: Sequence[Mapping[str, Any]], fersnet: Sequence[Mapping[str, Any]]) -> str:
    """Do the generators render the expression they are asked for? Per fold: FESGAN's
    synthetic set in its two halves (prior identities, re-expressed training faces) and
    FERSNet's synthesis branch (``fer.evaluation.generators`` via rule probe_fersnet), each
    judged by the fold's baseline, next to that recogniser's accuracy on the fold's real
    validation faces; the ratio and the identity cosine to the source face."""

    def ratio(x: Any) -> str:
        return "n/a" if x is None else f"{float(x):.2f}"

    rows: list[list[Any]] = []
    ratios: dict[str, list[float]] = {"FESGAN prior": [], "FESGAN re-expressed": [], "FERSNet synthesis": []}
    for k, q in enumerate(synthetic):
        for name, key in (("FESGAN prior", "_prior"), ("FESGAN re-expressed", "_reexpressed")):
            r = q.get(f"synth/expr_acc_ratio{key}")
            if r is not None:
                ratios[name].append(float(r))
            label = name
            if key == "_reexpressed" and q.get("synth/n_neutral_sources") is not None:
                label = f"{name} ({q['synth/n_neutral_sources']} of {q.get('synth/n_reexpressed', '?')} from neutral)"
            rows.append([f"fold {k}", label, _num(q.get(f"synth/expr_acc{key}")), _num(q.get("synth/real_val_acc")),
                         ratio(r), _num(q.get("synth/reexp_identity_cos")) if key == "_reexpressed" else "",
                         _num(q.get(f"synth/fid_recognizer{key}")), _num(q.get("synth/fid_real_halves"))])
    for k, f in enumerate(fersnet):
        r = f.get("fersnet_synth/expr_acc_ratio")
        if r is not None:
            ratios["FERSNet synthesis"].append(float(r))
        rows.append([f"fold {k}", "FERSNet synthesis", _num(f.get("fersnet_synth/expr_acc")),
                     _num(f.get("fersnet_synth/real_val_acc")), ratio(r), _num(f.get("fersnet_synth/identity_cos")),
                     _num(f.get("fersnet_synth/fid")), ""])
    parts = ["<h2>Generators: do their faces show the expression asked for?</h2>",
             "<p>Each generator's faces are classified by the fold's baseline (trained on that fold's real training "
             "images only) against the expression they were made for, next to the same recogniser's accuracy on the "
             "fold's real validation faces (subjects it never saw): a ratio of 1 means the synthetic faces are as "
             f"recognisable as real unseen ones; the project's target is {GENERATOR_TARGET_RATIO} (mean over folds). "
             "FESGAN's re-expressed faces are training faces edited into another expression, from the subject's "
             "neutral face where it has one (synthesis.reexpress_from: neutral; the row says how many); FERSNet's "
             "are the validation faces edited from every expression into every other, the harder edit. "
             "Identity: cosine between the identity network's embeddings of a re-expressed face and its source face. "
             "Fréchet distance in the recogniser's penultimate features to real faces (FESGAN: the fold's training "
             "faces; FERSNet: the validation faces it re-expressed); the last column "
             "is the distance between two random halves of the real training set (the sampling-noise floor).</p>"]
    summary = []
    for name, vals in ratios.items():
        if vals:
            mean = float(np.mean(vals))
            verdict = "reaches" if mean >= GENERATOR_TARGET_RATIO else "below"
            summary.append([name, f"{mean:.2f}", f"{min(vals):.2f}-{max(vals):.2f}", f"{verdict} {GENERATOR_TARGET_RATIO}"])
    if summary:
        parts.append(_table(["generator", "expression ratio, mean over folds", "range", "target"], summary))
    parts.append(_table(["fold", "generator", "expression acc.", "recogniser on real val.", "ratio",
                         "identity cos to source", "Fréchet distance", "real halves"], rows, left=2))
    return "".join(parts)


def rows_not_run_section(plan: Any, methods: Any) -> str:
    """Which rows of the comparison this report lacks, and why: rows that params.yaml's
    ``methods`` did not select, selected rows that cannot run on this data
    (``fer.params.RowPlan.absent``: no corpus to cluster, no subject ids, ...), and rows
    that run at the label budgets only (``RowPlan.budget_only``)."""
    from fer.params import ALL_ROWS

    rows = [[r, plan.absent[r]] for r in ALL_ROWS if r in plan.absent]
    if methods != "all":
        rows += [[r, "not selected (params.yaml methods)"] for r in ALL_ROWS if r not in methods]
    partial = [[r, why] for r, why in plan.budget_only.items()]
    parts = []
    if rows:
        parts += ["<h2>Rows not in this report</h2>",
                  "<p>The comparison has these further rows; this run did not train them.</p>",
                  _table(["row", "why it did not run"], rows, left=2)]
    if partial:
        parts += ["<h2>Rows at the label budgets only</h2>",
                  "<p>These rows ran at every label budget (section \"Label budgets\") but not with all labels, so "
                  "they are missing from the results table above the budget curve.</p>",
                  _table(["row", "why"], partial, left=2)]
    return "".join(parts)


def budget_section(
    full: Sequence[Mapping[str, Any]], budgets: Mapping[str, Any], by_budget: Sequence[Mapping[str, Any]],
    pseudo_quality: Sequence[Mapping[str, Any]] = (),
) -> str:
    """Accuracy against label budget (``labels.budgets``, fer.data.budgets): the curve of
    every row (fold mean, fold spread as a band), one table per budget with each row's
    paired tests against the baseline AT THE SAME BUDGET, and the split sizes.

    ``full``: the rows' summaries with all labels; ``by_budget``: their budget summaries
    (``labels`` recorded by summarize.py); ``budgets``: data/budgets.json;
    ``pseudo_quality``: per budget slot, the quality of the pseudo-labels of the in-domain
    unlabelled faces that the corpus row clustered (rule pseudo_quality_budget)."""
    from fer.metrics.stats import paired_test
    from fer.report.figures import budget_curve_figure

    fractions = [float(f) for f in budgets["budgets"]]
    levels: list[tuple[float, str, list[Mapping[str, Any]]]] = [(1.0, "all labels", list(full))]
    for slot, f in enumerate(fractions, start=1):
        rows = [s for s in by_budget if s["labels"]["slot"] == slot]
        levels.append((f, f"{100 * f:g} % labels (slot {slot})", rows))
    points: dict[str, list[tuple[float, Sequence[float], Sequence[float]]]] = {}
    tables = []
    for f, title, rows in sorted(levels, key=lambda t: t[0]):
        base = next((s for s in rows if s["method"] == "baseline"), None)
        body = []
        for s in rows:
            acc = s["metrics"]["test/acc"]
            mca = s["metrics"]["test/mean_class_acc"]
            points.setdefault(s["method"], []).append((f, acc["values"], mca["values"]))
            why = "" if base is None or s is base else unequal_budget(s.get("per_fold", []), base.get("per_fold", []))
            pt = None if base is None or s is base or why else paired_test(acc["values"],
                                                                           base["metrics"]["test/acc"]["values"])
            actual = s.get("labels", {}).get("labelled_fraction")
            body.append([s["method"], "1" if actual is None else f"{np.mean(actual):.3f}",
                         mean_std_cell(acc), mean_std_cell(mca),
                         *paired_cells(pt, unpaired=why)])
        tables.append(f"<h3>{html.escape(title)}</h3>" + _table(
            ["row", "labelled fraction (actual, fold mean)", "test acc. %", "mean-class acc. %",
             "vs baseline, same budget", "paired t p", "Wilcoxon p"], body))
    quality_rows = []
    for slot, doc in enumerate(pseudo_quality, start=1):
        for r in range(max(len(f) for f in doc["folds"])):
            at = [f[r] for f in doc["folds"] if len(f) > r]
            quality_rows.append([f"{100 * fractions[slot - 1]:g} %", r,
                                 int(np.mean([q["n_in_domain"] for q in at])),
                                 _mean_std([q["pseudo/acc_kept"] for q in at]),
                                 _mean_std([q["pseudo/acc_all"] for q in at]),
                                 _mean_std([q["pseudo/coverage"] for q in at])])
    quality = [] if not quality_rows else [
        "<h3>Pseudo-labels of the unlabelled in-domain faces</h3>",
        "<p>The corpus row (clustering.in_domain) clusters each budget split's unlabelled in-domain faces with the "
        "face-recognition corpus (alone, without one: corpus.root ''); their pseudo-labels scored against their "
        "hidden labels (read only by this evaluation stage), mean ± std over folds, per clustering round.</p>",
        _table(["budget", "round", "in-domain faces", "accuracy of kept", "accuracy of assigned", "coverage (kept)"],
               quality_rows, left=2)]
    sizes = [[key, f"{100 * s['fraction']:g} %", f"{s['labelled_fraction']:.3f}", budgets["summary"][key]["train"],
              budgets["summary"][key]["val"], budgets["summary"][key]["unlabelled"], budgets["summary"][key]["test"]]
             for key, s in budgets["splits"].items()]
    return "".join([
        "<h2>Label budgets: accuracy against the labelled fraction</h2>",
        "<p>Every row is trained again per fold with only a fraction of the fold's training images labelled "
        "(params.yaml labels.budgets): whole subjects keep or lose their labels (images, for a dataset without "
        "subject ids), drawn class-stratified with at least one subject per class, nested (a smaller budget's "
        "labelled subjects are inside a larger one's), seeded. Validation (model selection) is carved from the "
        "labelled subjects only; the test part is the fold's own, the same at every budget. The rest of the "
        "training part is unlabelled in-domain data: its expression labels are masked before any method sees the "
        "fold. The FixMatch row learns from its images; the identity network, where it is trained per fold, uses "
        "every training subject's identity, which is not an expression label; the corpus row clusters them with "
        "the face-recognition corpus, or alone without one (clustering.in_domain), and trains on those kept as "
        "pseudo-labelled; FESGAN pretraining (fesgan.unlabelled_ratio) shows them to its discriminator's real/fake "
        "head and its latent-code terms, the terms that need no expression label (the project's extension; its "
        "rows' recognisers and joint stage train on labelled and synthetic faces only); the other rows have no "
        "unlabelled term by design. Every row keeps its epoch budget over its (smaller) labelled set, FESGAN its "
        "iterations. "
        "The band is the fold spread (mean ± standard deviation).</p>",
        _img(budget_curve_figure(points), "accuracy against label budget"),
        *tables,
        *quality,
        "<h3>Budget splits (images per part)</h3>",
        _table(["split", "budget", "labelled fraction", "train", "val", "unlabelled", "test"], sizes),
    ])


def fersnet_departures(fs: FersnetParams) -> str:
    """The sentences of the FERSNet synthesis section that say where the run departs
    from the authors' design (``fersnet.synthesis``, ``w_cycle``, ``w_expr``), each
    named with the key that controls it; a leading space, so it follows a sentence."""
    if fs.synthesis == "residual":
        note = (
            " Departure from the authors' decoder, to learn within the budget (fersnet.synthesis: residual): the "
            "U-Net's output is added to the source face, plus learned class offsets (target minus source "
            f"expression) started at {fs.proto_scale:g} x the expression prototypes of the fold's training faces"
            + ("; the cycle term is off (fersnet.w_cycle 0, authors 0.5)" if fs.w_cycle == 0 else "")
            + ". The encoders, ConvFLU gates, conditioning and the other losses are the authors'."
        )
    else:
        note = " The authors' decoder (fersnet.synthesis: unet): the U-Net draws the face."
    if fs.w_expr > 0:
        note += (
            f" Added to the authors' losses (fersnet.w_expr {fs.w_expr:g}): an expression term, the cross-entropy "
            "of each synthesised face's target expression under the network's own recognition branch, frozen "
            "for the term (it trains the synthesis path only).")
    return note


def fesgan_departures(fg: FesganParams) -> str:
    """The FESGAN section's note on how faces are re-expressed (``fesgan.reexpress``) and
    which of the project's terms are on, each named with its key."""
    if fg.reexpress == "edit":
        return (
            "Departure from the paper, to learn within the budget (fesgan.reexpress: edit): real faces are edited "
            "by a skip-connected residual editor conditioned on source and target expression, with learned class "
            f"offsets started at {fg.proto_scale:g} x the expression prototypes of the fold's training faces; "
            "prior identities are rendered at the mean expression and edited the same way"
            + (f"; an L1 term toward the prototype edit (w_proto {fg.w_proto:g})" if fg.w_proto > 0 else "")
            + (f"; a cycle term (w_cycle {fg.w_cycle:g})" if fg.w_cycle > 0 else "")
            + (f"; {fg.d_warmup} warm-up iterations of the discriminator's expression head" if fg.d_warmup else "")
            + ("; DiffAugment" if fg.diffaugment else "")
            + f". {fg.iterations} iterations. With fesgan.reexpress: code (the paper preset) faces are redrawn from "
            "the identity code, as the paper describes."
        )
    return (f"The paper's reading (fesgan.reexpress: code): faces are rendered from the identity code; "
            f"{fg.iterations} iterations.")
