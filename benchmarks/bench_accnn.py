"""Benchmark: AC-CNN alternatives against the small VGG baseline, accuracy and cost.

Issue 12 asks for an AC-CNN within 2 points of the baseline on the demo at no more than a
third of its multiply-accumulates, measuring alternatives of the affinity module and the
stem. This script, in a workspace where the pipeline has aligned the data and made the
folds (``make run``, or just its ``align`` and ``make_folds`` jobs), trains, per seed and
fold, the baseline (params.yaml's ``baseline`` section) and every variant below with
params.yaml's ``accnn`` recipe (epochs, optimiser, augmentation: equal budgets), selects
the epoch on the fold's validation split and tests on its test split, exactly as rule
train_accnn does (``fer.methods.baseline.run_baseline_fold``), then prints per variant its
parameters, MACs per face and their ratio to the baseline's, test accuracy per fold and
seed, the mean, and the paired difference to the baseline on the same folds and seeds.

Variants (``--variants``, comma-separated ``name`` or ``name:width``):

* ``shipped``: the AC-CNN as shipped (``fer.models.accnn``: a two-convolution stem, four
  residual modules of two separable convolutions + channel affinity, mini-Xception's
  layout, and a 1x1 expansion head to 24 x width at the final 4x4 grid; 101,499
  parameters, 16.5M MACs);
* ``v2``: the second design (shipped from 1929847 to 57eac3f, ``ACCNNV2`` below: the same
  without the head, every module's affinity descriptors on 8x8 cells; 49,787 parameters,
  16.7M MACs; its initial weights are that class's);
* ``xhead``: ``v2`` with the shipped head appended (the shipped network, its head and
  classifier drawn after ``v2``'s weights: other initial draws than ``shipped``);
* ``dwfanin``: ``v2`` with its depthwise kernels drawn with Kaiming's fan-in;
* ``xcep``: the ``v2`` layout built by replacing ``v1``'s stem and stages (the benchmark's
  first measurement of it: the same network, other initial draws);
* ``v1``: the first design (shipped until 1929847, ``ACCNNV1`` below: one 3x3 stem
  convolution, three stages of two modules of depthwise 3x3 + pointwise 1x1 + channel
  affinity, max-pool before a stage's first module; 37,933 parameters, 15.1M MACs);
  every variant below modifies it;
* ``noaff``: the same with the affinity's gamma frozen at 0 (no affinity mixing);
* ``lean``: affinity only in the second module of each stage, descriptors on 4x4;
* ``deep4_lean``: ``lean`` plus a fourth stage (16 x width at 4x4);
* ``ir2``: inverted-residual modules (MobileNetV2: 1x1 expansion x2, depthwise 3x3,
  linear 1x1 projection) + channel affinity;
* ``nodrop``: ``v1`` without dropout before the classifier;
* ``stem2_lean``: a two-convolution stem at full resolution (width/2, then width
  channels) and the affinity only in the stride-1 module of each stage, on 4x4
  descriptors (39,026 parameters, 14.0M MACs: the MACs of four affinity mixings moved to
  full-resolution features);
* ``stem2_all``: the same stem, the affinity in every module but stage 1's (17.3M MACs).
* ``head``: MobileNetV3's efficient last stage: a 1x1 expansion (BN, ReLU) of the last
  stage's 8 x width features to 18 x width at the final 8x8 grid, before the global
  pooling (76,493 parameters, 17.5M MACs: a third of the baseline's);
* ``head_lean``: the same to 24 x width, the affinity dropped from stage 1's two modules
  (89,643 parameters, 16.0M MACs);
* ``s2``: ``v1`` with a stride-2 stem (the stages at 16, 8, 4 px), paying for more width
  (``s2:32``: 140,365 parameters, 16.4M MACs).

Seeds (``--seeds``) replace params.yaml's ``seed`` (fold K trains with seed + K, as the
pipeline does); the demo's folds are small (294 training and 126 test faces), so
compare variants over several seeds: on the demo, one configuration's 4-fold mean moved by
about 4 points between two initialisations of the same network with the same seed
(README, "Choices").

``--skip-baseline`` trains the variants only (the baseline's numbers for the same seeds
and folds are then the ones of an earlier run: same seed, same machine, same numbers).
Run in the workspace of another dataset (its ``data/aligned`` and ``data/folds.json``),
``--variants shipped`` with two seeds measures how far the shipped AC-CNN moves when only
its initialisation, batch order and augmentation draws change, on the same folds (README,
"Scarce labels").

``--keep-runs`` keeps every run's model, metrics and training curve (``curve.csv``: the
training and validation accuracy per epoch) under ``OUT/runs``.

Usage: ``python benchmarks/bench_accnn.py --variants shipped,v2 --seeds 0,1000``
(about 80-150 s per fold, variant and seed on one thread of a shared 2-core machine).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from fer.data.aligned import load_aligned
from fer.data.budgets import load_split
from fer.data.folds import split_indices
from fer.methods.baseline import run_baseline_fold
from fer.models import build_model
from fer.models.accnn import ACCNN, ACModule, ChannelAffinity
from fer.models.complexity import count_macs, count_parameters
from fer.params import load_params, section
from fer.training.protocol import FoldOutputs, prepare_fold

SCHEMA = Path(__file__).resolve().parents[1] / "workflow" / "schemas" / "params.schema.yaml"


class ACModuleV1(nn.Module):
    """The first design's AC module (shipped until this round): depthwise 3x3 + pointwise 1x1
    (BN, ReLU) + channel affinity.

    ``ACModuleV1(in_ch, out_ch, stride)`` maps (N, in_ch, H, W) to
    (N, out_ch, ceil(H / stride), ceil(W / stride)); a residual shortcut is added when the
    shape is unchanged (stride 1, in_ch == out_ch).
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, *, pool: int = 8, tau: float = 0.2) -> None:
        super().__init__()
        if in_ch < 1 or out_ch < 1:
            raise ValueError(f"ACModule channels must be >= 1, got {in_ch}, {out_ch}")
        if stride not in (1, 2):
            raise ValueError(f"ACModule stride must be 1 or 2, got {stride}")
        self.in_ch, self.out_ch, self.stride = int(in_ch), int(out_ch), int(stride)
        self.pool: nn.Module = nn.MaxPool2d(2, ceil_mode=True) if stride == 2 else nn.Identity()
        self.depthwise = nn.Conv2d(in_ch, in_ch, 3, padding=1, groups=in_ch, bias=False)
        self.bn1 = nn.BatchNorm2d(in_ch)
        self.pointwise = nn.Conv2d(in_ch, out_ch, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.affinity = ChannelAffinity(pool=pool, tau=tau)
        self.residual = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.depthwise(self.pool(x))))
        out = self.relu(self.bn2(self.pointwise(out)))
        out = self.affinity(out)
        return out + x if self.residual else out


class ACCNNV1(ACCNN):
    """The first AC-CNN (shipped until this round; commit d3ed36b's fer.models.accnn): a
    3x3 stem convolution + three stages of two ``ACModuleV1``, with ``ACCNN``'s head,
    initialisation and contract (the same initial weights as that commit's class)."""

    def _layers(self) -> tuple[nn.Module, nn.Module, int]:
        w = self.width
        stem = nn.Sequential(nn.Conv2d(self.in_channels, w, 3, padding=1, bias=False), nn.BatchNorm2d(w),
                             nn.ReLU(inplace=True))
        stages = nn.Sequential(
            ACModuleV1(w, 2 * w, 2),
            ACModuleV1(2 * w, 2 * w, 1),
            ACModuleV1(2 * w, 4 * w, 2),
            ACModuleV1(4 * w, 4 * w, 1),
            ACModuleV1(4 * w, 8 * w, 2),
            ACModuleV1(8 * w, 8 * w, 1),
        )
        return stem, stages, 8 * w


def two_conv_stem(in_channels: int, h: int) -> nn.Sequential:
    """The second design's and ``xcep``'s stem: two 3x3 convolutions (BN, ReLU) to ``h``
    channels at full resolution (the shipped class's stem, built in the same order)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, h, 3, padding=1, bias=False), nn.BatchNorm2d(h), nn.ReLU(inplace=True),
        nn.Conv2d(h, h, 3, padding=1, bias=False), nn.BatchNorm2d(h), nn.ReLU(inplace=True))


class ACCNNV2(ACCNN):
    """The second AC-CNN (shipped from 1929847 to 57eac3f): ``ACCNN`` without the 1x1
    expansion head (features: the last module's 8 x width channels) and with every
    module's affinity descriptors on 8x8 cells (the same initial weights as 57eac3f's
    class)."""

    def _layers(self) -> tuple[nn.Module, nn.Module, int]:
        w, h = self.width, self.width // 2
        stem = two_conv_stem(self.in_channels, h)
        stages = nn.Sequential(ACModule(h, w), ACModule(w, 2 * w), ACModule(2 * w, 4 * w), ACModule(4 * w, 8 * w),
                               nn.ReLU())
        return stem, stages, 8 * w


class InvertedResidual(nn.Module):
    """[2x2 max-pool] -> 1x1 expansion (BN, ReLU) -> depthwise 3x3 (BN, ReLU) -> 1x1
    projection (BN) -> channel affinity -> + x (same shape) or ReLU."""

    def __init__(self, cin: int, cout: int, stride: int = 1, expand: int = 2) -> None:
        super().__init__()
        h = cin * expand
        self.pool: nn.Module = nn.MaxPool2d(2, ceil_mode=True) if stride == 2 else nn.Identity()
        self.expand = nn.Sequential(nn.Conv2d(cin, h, 1, bias=False), nn.BatchNorm2d(h), nn.ReLU(inplace=True))
        self.dw = nn.Sequential(nn.Conv2d(h, h, 3, padding=1, groups=h, bias=False), nn.BatchNorm2d(h),
                                nn.ReLU(inplace=True))
        self.project = nn.Sequential(nn.Conv2d(h, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.affinity = ChannelAffinity()
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.affinity(self.project(self.dw(self.expand(self.pool(x)))))
        return out + x if self.residual else torch.relu(out)


class XceptionAC(nn.Module):
    """mini-Xception's residual module (Arriaga et al. 2017, a 60k-parameter FER network):
    two depthwise-separable 3x3 convolutions (BN; ReLU between), the channel affinity,
    a 3x3 stride-2 max-pool, plus a strided 1x1 projection shortcut (BN)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.sep1 = nn.Sequential(nn.Conv2d(cin, cin, 3, padding=1, groups=cin, bias=False),
                                  nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))
        self.sep2 = nn.Sequential(nn.Conv2d(cout, cout, 3, padding=1, groups=cout, bias=False),
                                  nn.Conv2d(cout, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.affinity = ChannelAffinity()
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=2, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.affinity(self.sep2(self.sep1(x)))) + self.short(x)


def build_variant(kind: str, num_classes: int, in_channels: int, width: int, input_size: int) -> nn.Module:
    """The AC-CNN variant ``kind`` (module docstring), freshly initialised."""
    if kind == "shipped":
        return ACCNN(num_classes, in_channels, width, input_size=input_size)
    if kind in ("v2", "dwfanin", "xhead"):
        net = ACCNNV2(num_classes, in_channels, width, input_size=input_size)
        if kind == "xhead":
            # MobileNetV3's efficient last stage on the shipped layout: a 1x1 expansion (BN,
            # ReLU) of the last module's 8 x width features to 24 x width at the final 4x4
            # grid before the pooling; paid for by computing the last two modules' affinity
            # descriptors on 4x4 instead of 8x8 cells (the shipped draws kept, the head and
            # the classifier drawn after them)
            w, e = width, 24 * width
            for m in list(net.stages)[2:4]:
                m.affinity.pool = 4
            net.stages = nn.Sequential(*net.stages, nn.Sequential(
                nn.Conv2d(8 * w, e, 1, bias=False), nn.BatchNorm2d(e), nn.ReLU(inplace=True)))
            net.feature_dim = e
            net.fc = nn.Linear(e, num_classes)
            for m in list(net.stages)[-1].modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.normal_(net.fc.weight, 0.0, 0.01)
            nn.init.zeros_(net.fc.bias)
        if kind == "dwfanin":
            # the depthwise 3x3 kernels drawn with Kaiming's fan-in (9 inputs per output)
            # instead of the fan-out of all C x 9 outputs that PyTorch computes for a grouped
            # convolution's (C, 1, 3, 3) weight (sqrt(C) x smaller draws: 4 x at C = 16);
            # everything else keeps the shipped class's draws
            for m in net.modules():
                if isinstance(m, nn.Conv2d) and m.groups > 1:
                    nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
        return net
    if kind == "first":  # its name in earlier rounds' commands (README)
        kind = "v1"
    net = ACCNNV1(num_classes, in_channels, width, input_size=input_size)
    w = width
    if kind == "noaff":
        for m in net.modules():
            if isinstance(m, ChannelAffinity):
                m.gamma.requires_grad_(False)
    elif kind in ("lean", "deep4_lean"):
        if kind == "deep4_lean":
            net.stages = nn.Sequential(*net.stages, ACModuleV1(8 * w, 16 * w, 2), ACModuleV1(16 * w, 16 * w, 1))
            net.feature_dim = 16 * w
            net.fc = nn.Linear(16 * w, num_classes)
        for m in net.stages:
            m.affinity.pool = 4
        for m in list(net.stages)[::2][:3]:
            m.affinity = nn.Identity()
    elif kind == "ir2":
        net.stages = nn.Sequential(
            InvertedResidual(w, 2 * w, 2), InvertedResidual(2 * w, 2 * w),
            InvertedResidual(2 * w, 4 * w, 2), InvertedResidual(4 * w, 4 * w),
            InvertedResidual(4 * w, 8 * w, 2), InvertedResidual(8 * w, 8 * w))
    elif kind == "nodrop":
        net.dropout = nn.Dropout(0.0)
    elif kind in ("stem2_lean", "stem2_all"):
        h = max(1, w // 2)
        net.stem = nn.Sequential(
            nn.Conv2d(in_channels, h, 3, padding=1, bias=False), nn.BatchNorm2d(h), nn.ReLU(inplace=True),
            nn.Conv2d(h, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True))
        mods = list(net.stages)
        if kind == "stem2_lean":
            for m in mods[1::2]:
                m.affinity.pool = 4
            for m in mods[0::2]:
                m.affinity = nn.Identity()
        else:
            for m in mods[:2]:
                m.affinity = nn.Identity()
    elif kind in ("head", "head_lean"):
        # MobileNetV3's efficient last stage: a 1x1 expansion of the last stage's features
        # (BN, ReLU) at the final 8x8 grid before the global pooling, widening the embedding
        # from 8w to 18w (head_lean: 24w, the affinity dropped from stage 1's two modules).
        e = 24 * w if kind == "head_lean" else 18 * w
        if kind == "head_lean":
            for m in list(net.stages)[:2]:
                m.affinity = nn.Identity()
        net.stages = nn.Sequential(*net.stages, nn.Sequential(
            nn.Conv2d(8 * w, e, 1, bias=False), nn.BatchNorm2d(e), nn.ReLU(inplace=True)))
        net.feature_dim = e
        net.fc = nn.Linear(e, num_classes)
    elif kind == "s2":
        # a stride-2 stem (ResNet's and MobileNet's downsampling at the input): the 3x3 stem
        # runs at half resolution, the three stages at 16, 8 and 4 (the small VGG's final
        # grid), and the MACs saved at full resolution pay for twice the width (s2:32:
        # 140,365 parameters, 16.4M MACs)
        net.stem = nn.Sequential(nn.Conv2d(in_channels, w, 3, stride=2, padding=1, bias=False),
                                 nn.BatchNorm2d(w), nn.ReLU(inplace=True))
    elif kind == "xcep":
        # mini-Xception's layout with the affinity in every module: a two-convolution stem
        # at full resolution (w/2 channels), four residual modules of w, 2w, 4w, 8w
        h = max(1, w // 2)
        net.stem = two_conv_stem(in_channels, h)
        net.stages = nn.Sequential(XceptionAC(h, w), XceptionAC(w, 2 * w), XceptionAC(2 * w, 4 * w),
                                   XceptionAC(4 * w, 8 * w), nn.ReLU())
    elif kind != "v1":
        raise SystemExit(f"unknown variant {kind!r} (shipped, v2, xhead, dwfanin, v1, noaff, lean, deep4_lean, ir2, nodrop, "
                         "stem2_lean, stem2_all, head, head_lean, s2, xcep)")
    # new modules: initialised like the rest
    if kind in ("lean", "deep4_lean", "ir2", "stem2_lean", "stem2_all", "head", "head_lean", "s2", "xcep"):
        net._init_weights()
    return net


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--aligned", default="data/aligned", help="the aligned set (images.npy, manifest.csv, meta.json)")
    ap.add_argument("--folds-file", default="data/folds.json")
    ap.add_argument("--folds", default="0,1,2,3", help="fold numbers")
    ap.add_argument("--seeds", default="0", help="comma-separated values of params.yaml's seed")
    ap.add_argument("--variants", default="shipped,v1")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="build/bench_accnn", help="results.json goes here")
    ap.add_argument("--skip-baseline", action="store_true",
                    help="do not train the baseline (no paired difference is printed)")
    ap.add_argument("--keep-runs", action="store_true",
                    help="keep every run's model, metrics and training curve under OUT/runs/VARIANT-SEED-FOLD "
                         "(default: a temporary folder, deleted at the end)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    params = load_params(args.params, SCHEMA)
    base_cfg, acc_cfg = section(params, "baseline"), section(params, "accnn")
    a = Path(args.aligned)
    data = load_aligned(a / "images.npy", a / "manifest.csv", a / "meta.json")
    size, channels = data.images.shape[1], data.images.shape[3]
    folds = [int(k) for k in args.folds.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    specs = ([] if args.skip_baseline else [("baseline", base_cfg.width)]) + [
        (v.split(":")[0], int(v.split(":")[1]) if ":" in v else acc_cfg.width) for v in args.variants.split(",") if v]

    def model_of(name: str, width: int) -> nn.Module:
        if name == "baseline":
            return build_model(base_cfg.arch, len(data.classes), channels, width, input_size=size)
        return build_variant(name, len(data.classes), channels, width, size)

    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as scratch:
        tmp = str(Path(args.out) / "runs") if args.keep_runs else scratch
        for name, width in specs:
            key = f"{name}:{width}"
            cfg = base_cfg if name == "baseline" else dataclasses.replace(acc_cfg, width=width)
            probe = model_of(name, width)
            acc: dict[str, list[float]] = {}
            for seed in seeds:
                for k in folds:
                    split = split_indices(data.subjects, load_split(args.folds_file, str(k)))
                    fold = prepare_fold(data.images, data.labels, split, data.classes, device="cpu", seed=seed + k)
                    torch.manual_seed(seed + k)
                    model = model_of(name, width)
                    fold.build_recognizer = lambda _cfg, m=model: m  # type: ignore[method-assign]
                    out = Path(tmp) / f"{key}-{seed}-{k}"
                    m = run_baseline_fold(fold, cfg, FoldOutputs(out / "model.pt", out / "metrics.json",
                                                                 out / "curve.csv", None, None))
                    acc.setdefault(str(seed), []).append(float(m["test/acc"]))
                    print(f"{key} seed {seed} fold {k}: test acc {100 * m['test/acc']:.1f}", flush=True)
            results[key] = {"params": count_parameters(probe), "macs": count_macs(probe, (channels, size, size)),
                            "test_acc": acc}
    base = results.get(f"baseline:{base_cfg.width}")
    print(f"\n{'variant':16s} {'params':>8s} {'MACs':>7s} {'x base':>6s}  test acc % per seed (folds)   mean   "
          "vs baseline (paired)")
    for key, r in results.items():
        per_seed = "  ".join(f"s{s}: " + "/".join(f"{100 * v:.1f}" for v in vals) for s, vals in r["test_acc"].items())
        flat = np.array([v for vals in r["test_acc"].values() for v in vals])
        if base is None:
            print(f"{key:16s} {r['params']:8d} {r['macs'] / 1e6:6.1f}M {'':6s}  {per_seed}  {100 * flat.mean():5.1f}")
            continue
        ref = np.array([v for vals in base["test_acc"].values() for v in vals])
        print(f"{key:16s} {r['params']:8d} {r['macs'] / 1e6:6.1f}M {r['macs'] / base['macs']:6.2f}  {per_seed}  "
              f"{100 * flat.mean():5.1f}  {100 * (flat - ref).mean():+5.1f}")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "results.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
