"""FERSNet (M3): ConvFLU gate equations, conditional synthesis, the sharing layouts, the
training pairs, and tiny end-to-end runs of the four ablation rows (outputs, determinism,
exact resume). Tiny data: 16x16 gray faces, 8 subjects x 3 expressions x 2 images; a
tiny frozen stand-in identity embedder (never the real identity network)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import fer.methods.fersnet as fm
import fer.training.driver as driver
from conftest import make_fold
from fer.methods.fersnet import (
    FERSNET_CURVE_COLUMNS,
    FERSNET_METRIC_KEYS,
    draw_targets,
    frozen_recognition,
    load_fersnet,
    pair_candidates,
    run_fersnet_fold,
)
from fer.models.fersnet import ConvFLU, FERSNet, FERSNetRecognizer, PatchDiscriminator
from fer.losses.fersnet import synthesis_loss
from fer.params import FLIP_ONLY, FersnetParams, build, to_dict
from fer.training.checkpoint import load_weights
from fer.training.protocol import FoldOutputs

K = 3
SIZE = 16
CLASSES = ["anger", "happiness", "surprise"]


def tiny_data() -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """8 subjects x 3 classes x 2 images; class = bright quadrant; subject = offset."""
    rng = np.random.default_rng(0)
    xs, ys, ss = [], [], []
    for s in range(8):
        for c in range(K):
            for _ in range(2):
                x = rng.integers(0, 50, (SIZE, SIZE, 1)) + 10 * s
                r, col = divmod(c, 2)
                x[r * 8 : (r + 1) * 8, col * 8 : (col + 1) * 8] += 140
                xs.append(x.clip(0, 255).astype(np.uint8))
                ys.append(c)
                ss.append(f"S{s:02d}")
    subj = np.asarray(ss)
    split = {
        "train": np.flatnonzero(np.isin(subj, ["S00", "S01", "S02", "S03"])),
        "val": np.flatnonzero(np.isin(subj, ["S04", "S05"])),
        "test": np.flatnonzero(np.isin(subj, ["S06", "S07"])),
    }
    return np.stack(xs), np.asarray(ys, dtype=np.int64), subj, split


X, Y, S, SPLIT = tiny_data()


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny convolutions are slower with several threads (and the CI box is shared)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class TinyIdentity(nn.Module):
    """Frozen stand-in identity embedder: (N, 1, 16, 16) in [-1, 1] -> unit (N, 8)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(123)
        self.conv = nn.Conv2d(1, 8, 4, stride=4)
        self.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.conv(x).mean(dim=(2, 3)), dim=1)  # N, 8


def tiny_cfg(**kw: Any) -> FersnetParams:
    base = {"width": 4, "stages": 2, "epochs": 1, "batch_size": 8, "disc_width": 4, "disc_layers": 2,
            "grid_rows": 2, "lr": 1e-3}
    base.update(kw)
    return build(FersnetParams, base)


def run(tmp: Path, variant: str, cfg: FersnetParams, *, tag: str = "", init: Path | None = None,
        resume: Path | None = None, identity: nn.Module | None = None) -> dict[str, Any]:
    name = f"{variant}{tag}"
    out = FoldOutputs(model=tmp / f"{name}.pt", metrics=tmp / f"{name}.json", curve=tmp / f"{name}.csv",
                      resume=resume, log=tmp / f"{name}.jsonl")
    return run_fersnet_fold(
        make_fold(X, Y, SPLIT, CLASSES, seed=7, subjects=S), cfg, out, variant=variant,
        identity=identity if identity is not None else (None if variant == "single" else TinyIdentity()),
        init_weights=init, out_dir=tmp / name,
    )


# ----------------------------------------------------------------------------- ConvFLU
def _set(conv: nn.Conv2d, weights: list[float], bias: float | None = None) -> None:
    with torch.no_grad():
        conv.weight.copy_(torch.tensor(weights).view_as(conv.weight))
        if conv.bias is not None:
            conv.bias.fill_(0.0 if bias is None else bias)


def test_convflu_matches_hand_computation() -> None:
    flu = ConvFLU(1, 1, kernel_size=1)
    # x direction: r_x = s(0.5 fx - 1 fy), z_x = s(2 fx + 0.3 fy), F~x = tanh(1.5 (r_x fy) - 0.7 fx)
    _set(flu.w_r_x, [0.5, -1.0]); _set(flu.w_z_x, [2.0, 0.3]); _set(flu.w_x, [1.5]); _set(flu.u_x, [-0.7])
    # y direction: r_y = s(-0.2 fx + 0.4 fy), z_y = s(1 fx - 1 fy), F~y = tanh(0.9 (r_y fx) + 1.1 fy)
    _set(flu.w_r_y, [-0.2, 0.4]); _set(flu.w_z_y, [1.0, -1.0]); _set(flu.w_y, [0.9]); _set(flu.u_y, [1.1])
    fx = torch.tensor([[[[0.3, -1.2], [2.0, 0.0]]]])  # 1, 1, 2, 2
    fy = torch.tensor([[[[1.0, 0.5], [-0.4, 3.0]]]])
    out_x, out_y = flu(fx, fy)
    sig, tanh = torch.sigmoid, torch.tanh
    r_x, z_x = sig(0.5 * fx - fy), sig(2 * fx + 0.3 * fy)
    exp_x = (1 - z_x) * fx + z_x * tanh(1.5 * (r_x * fy) - 0.7 * fx)
    r_y, z_y = sig(-0.2 * fx + 0.4 * fy), sig(fx - fy)
    exp_y = (1 - z_y) * fy + z_y * tanh(0.9 * (r_y * fx) + 1.1 * fy)
    torch.testing.assert_close(out_x, exp_x, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(out_y, exp_y, rtol=1e-6, atol=1e-6)
    g = flu.gates(fx, fy)
    torch.testing.assert_close(g.z_x, z_x)
    torch.testing.assert_close(g.r_y, r_y)


@pytest.mark.parametrize("kernel", [1, 3])
def test_convflu_closed_and_open_gates(kernel: int) -> None:
    torch.manual_seed(0)
    flu = ConvFLU(3, 5, kernel_size=kernel)
    fx, fy = torch.randn(2, 3, 6, 6), torch.randn(2, 5, 6, 6)
    with torch.no_grad():
        flu.w_z_x.weight.zero_(); flu.w_z_x.bias.fill_(-1e4)  # z_x = 0
        flu.w_z_y.weight.zero_(); flu.w_z_y.bias.fill_(1e4)  # z_y = 1
    out_x, out_y = flu(fx, fy)
    assert torch.equal(out_x, fx)  # closed gate: own branch passes through unchanged
    g = flu.gates(fx, fy)
    assert torch.equal(g.z_x, torch.zeros_like(fx)) and torch.equal(g.z_y, torch.ones_like(fy))
    assert torch.equal(out_y, g.cand_y)  # open gate: fully replaced by the candidate
    assert not torch.allclose(out_y, fy)
    with pytest.raises(ValueError, match="channels"):
        flu(fy, fx)
    with pytest.raises(ValueError, match="kernel_size"):
        ConvFLU(2, 2, kernel_size=5)


# ----------------------------------------------------------------------------- FERSNet
def test_sharing_layouts() -> None:
    single = FERSNet(K, 1, 4, input_size=16, sharing="single", stages=2)
    hard = FERSNet(K, 1, 4, input_size=16, sharing="hard", stages=2)
    gated = FERSNet(K, 1, 4, input_size=16, sharing="gated", stages=2)
    flus = lambda m: [x for x in m.modules() if isinstance(x, ConvFLU)]  # noqa: E731
    assert single.decoder is None and single.syn_stages is None and not flus(single)
    assert not any("decoder" in n or "syn" in n for n, _ in single.named_parameters())
    assert hard.decoder is not None and not flus(hard) and hard.syn_stages is None
    assert len(flus(gated)) == gated.stages == 2 and gated.syn_stages is not None
    x, e = torch.randn(4, 1, 16, 16), torch.eye(K)[[0, 1, 2, 0]]
    logits, syn = single(x, None)
    assert logits.shape == (4, K) and syn is None
    for m in (hard, gated):
        logits, syn = m(x, e)
        assert logits.shape == (4, K) and syn is not None and syn.shape == x.shape
        assert syn.abs().max() <= 1
        m.eval()
        torch.testing.assert_close(m.classify(x), m(x, e)[0])
        torch.testing.assert_close(FERSNetRecognizer(m)(x), m.classify(x))
        assert m.features(x).shape == (4, m.feature_dim)
    with pytest.raises(ValueError, match="one-hot"):
        hard(x, None)
    with pytest.raises(ValueError, match="multiple"):
        FERSNet(K, 1, 4, input_size=18, stages=2)


def test_conditional_synthesis_depends_on_target() -> None:
    torch.manual_seed(0)
    net = FERSNet(K, 1, 4, input_size=16, sharing="gated", stages=2).eval()
    x = torch.randn(2, 1, 16, 16)
    e0, e1 = torch.eye(K)[[0, 0]], torch.eye(K)[[2, 2]]
    with torch.no_grad():
        a, b = net.synthesise(x, e0), net.synthesise(x, e1)
    assert (a - b).abs().max() > 1e-4
    for adain in net.decoder.adain_layers():
        (s0, t0), (s1, t1) = adain.params(e0), adain.params(e1)
        assert not torch.allclose(s0, s1) and not torch.allclose(t0, t1)


def test_residual_synthesis_starts_at_the_prototype_edit() -> None:
    torch.manual_seed(0)
    net = FERSNet(K, 1, 4, input_size=16, sharing="gated", stages=2, synthesis="residual").eval()
    assert net.offsets is not None and net.offsets.shape == (K, 1, 16, 16)
    protos = torch.randn(K, 1, 16, 16)
    net.init_offsets(protos)
    x = torch.randn(3, 1, 16, 16)
    e, a = torch.eye(K)[[1, 2, 0]], torch.eye(K)[[0, 0, 2]]
    with torch.no_grad():
        out = net.synthesise(x, e, a)
        _, fwd = net(x, e, a)
    # the decoder's output convolution starts at zero: the edit is the offsets' change alone
    want = x + torch.stack([protos[1] - protos[0], protos[2] - protos[0], protos[0] - protos[2]])
    torch.testing.assert_close(out, want)
    torch.testing.assert_close(fwd, want)
    with torch.no_grad():
        same = net.synthesise(x, a, a)
    torch.testing.assert_close(same, x)  # to its own expression: unchanged at the start
    with pytest.raises(ValueError, match="source expression"):
        net.synthesise(x, e)
    with pytest.raises(ValueError, match="offsets of shape"):
        net.init_offsets(torch.zeros(K, 1, 8, 8))
    with pytest.raises(ValueError, match="only synthesis='residual'"):
        FERSNet(K, 1, 4, input_size=16, sharing="gated", stages=2).init_offsets(protos)
    assert FERSNet(K, 1, 4, input_size=16, sharing="single", stages=2, synthesis="residual").offsets is None
    with pytest.raises(ValueError, match="synthesis must be"):
        FERSNet(K, 1, 4, input_size=16, synthesis="warp")


def test_residual_offsets_learn_without_weight_decay() -> None:
    net = FERSNet(K, 1, 4, input_size=16, sharing="gated", stages=2, synthesis="residual")
    cfg = tiny_cfg(synthesis="residual")
    setup = fm._setup(FERSNetRecognizer(net), cfg, 24, lr=1e-3, milestones=(), device=torch.device("cpu"))
    groups = setup.optimizer.param_groups
    assert [g["weight_decay"] for g in groups] == [cfg.weight_decay, 0.0]
    assert groups[1]["params"] == [net.offsets]
    assert sum(len(g["params"]) for g in groups) == len(list(net.parameters()))
    unet = FERSNet(K, 1, 4, input_size=16, sharing="gated", stages=2)
    assert len(fm._setup(FERSNetRecognizer(unet), tiny_cfg(synthesis="unet"), 24, lr=1e-3, milestones=(),
                         device=torch.device("cpu")).optimizer.param_groups) == 1


def test_patch_discriminator_is_conditional() -> None:
    torch.manual_seed(0)
    d = PatchDiscriminator(1, K, width=4, n_layers=2)
    x = torch.randn(2, 1, 16, 16)
    out0, out1 = d(x, torch.eye(K)[[0, 0]]), d(x, torch.eye(K)[[1, 1]])
    assert out0.shape == (2, 1, 4, 4)
    assert not torch.allclose(out0, out1)


# ------------------------------------------------------------------------------- pairs
def test_pairs_same_subject_other_expression() -> None:
    y = np.array([0, 1, 2, 0, 0, 1, 2])
    s = np.array(["a", "a", "a", "b", "b", "c", "d"])
    cand, counts = pair_candidates(y, s)
    assert counts.tolist() == [2, 2, 2, 0, 0, 0, 0]
    for i in range(len(y)):
        c = cand[i, : counts[i]]
        assert np.all(s[c] == s[i]) and np.all(y[c] != y[i])
        assert np.all(cand[i, counts[i] :] == -1)
    g = torch.Generator().manual_seed(0)
    idx = torch.tensor([0, 1, 3, 2, 6])
    tgt, valid = draw_targets(torch.from_numpy(cand), torch.from_numpy(counts), idx, g)
    assert valid.tolist() == [True, True, False, True, False]
    assert tgt[2] == 3 and tgt[4] == 6  # no pair: maps to itself
    for i, t in zip(idx.tolist(), tgt.tolist(), strict=True):
        if counts[i]:
            assert s[t] == s[i] and y[t] != y[i]


def test_pairs_come_from_the_train_split_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[np.ndarray, np.ndarray]] = []
    orig = fm.pair_candidates

    def spy(labels: np.ndarray, subjects: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        seen.append((np.asarray(labels).copy(), np.asarray(subjects).copy()))
        return orig(labels, subjects)

    monkeypatch.setattr(fm, "pair_candidates", spy)
    run(tmp_path, "hard", tiny_cfg())
    assert len(seen) == 1
    labels, subjects = seen[0]
    assert len(labels) == len(SPLIT["train"])
    np.testing.assert_array_equal(subjects, S[SPLIT["train"]])
    np.testing.assert_array_equal(labels, Y[SPLIT["train"]])


def test_residual_rows_start_from_training_prototypes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With ``synthesis: residual`` the offsets start at proto_scale x the prototypes of
    the TRAIN split (never validation or test faces); the rows train, save and reload with
    their offsets, and the synth row synthesises with the source expressions."""
    seen: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    orig = fm.expression_prototypes

    def spy(images: np.ndarray, labels: np.ndarray, num_classes: int, subjects: np.ndarray | None = None) -> torch.Tensor:
        seen.append((images.copy(), np.asarray(labels).copy(), np.asarray(subjects).copy()))
        return orig(images, labels, num_classes, subjects)

    monkeypatch.setattr(fm, "expression_prototypes", spy)
    init: dict[str, torch.Tensor] = {}
    orig_init = FERSNet.init_offsets

    def record(self: FERSNet, offsets: torch.Tensor) -> None:
        init["offsets"] = offsets.clone()
        orig_init(self, offsets)

    monkeypatch.setattr(FERSNet, "init_offsets", record)
    cfg = tiny_cfg(synthesis="residual", proto_scale=2.0, w_cycle=0.5)  # the cycle edits back from b to a
    m = run(tmp_path, "gated", cfg)
    assert float(_curve(tmp_path / "gated.csv")[0]["G/cycle"]) > 0
    assert len(seen) == 1
    images, labels, subjects = seen[0]
    tr = SPLIT["train"]
    np.testing.assert_array_equal(images, X[tr])
    np.testing.assert_array_equal(labels, Y[tr])
    np.testing.assert_array_equal(subjects, S[tr])
    torch.testing.assert_close(init["offsets"], 2.0 * orig(X[tr], Y[tr], K, S[tr]))
    net, meta = load_fersnet(tmp_path / "gated.pt")
    assert meta["synthesis"] == "residual" and net.synthesis == "residual" and net.offsets is not None
    assert not torch.equal(net.offsets.detach(), init["offsets"])  # learned from there
    assert m["synth_val/expr_acc"] is not None
    s = run(tmp_path, "synth", tiny_cfg(synthesis="residual", synth_per_image=0), init=tmp_path / "gated.pt")
    assert s["synth/n_images"] == len(tr) * (K - 1)
    with pytest.raises(ValueError, match="gated FERSNet"):  # a residual model is not a unet row's source
        run(tmp_path, "synth", tiny_cfg(synthesis="unet", synth_per_image=0), tag="-u", init=tmp_path / "gated.pt")


# ----------------------------------------------------------------------------- config
def test_config_strict_and_milestones() -> None:
    cfg = build(FersnetParams, {"lr_milestones": [150, 400], "epochs": 500, "augment": {"hflip": False}})
    assert cfg.lr_milestones == (150, 400) and cfg.augment.hflip is False
    assert cfg.augment.rotate_deg == 0 and FersnetParams().augment == FLIP_ONLY
    assert to_dict(cfg)["lr_milestones"] == [150, 400]
    with pytest.raises(ValueError, match="fersnet.*nope"):
        build(FersnetParams, {"nope": 1}, "fersnet")
    with pytest.raises(ValueError, match="augment.*nope"):
        build(FersnetParams, {"augment": {"nope": 1}}, "fersnet")
    with pytest.raises(ValueError, match="increasing"):
        build(FersnetParams, {"lr_milestones": [5, 3]})
    with pytest.raises(ValueError, match="gate_kernel"):
        FersnetParams(gate_kernel=2)
    with pytest.raises(ValueError, match="synthesis"):
        FersnetParams(synthesis="warp")
    with pytest.raises(ValueError, match="proto_scale"):
        FersnetParams(proto_scale=-1.0)
    f = fm._milestone_factor
    assert [f(s, steps_per_epoch=10, milestones=(2, 4)) for s in (0, 19, 20, 39, 40)] == pytest.approx(
        [1, 1, 0.1, 0.1, 0.01]
    )


# ---------------------------------------------------------------------- end to end
def _curve(path: Path) -> list[dict[str, str]]:
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("synthesis", ["residual", "unet"])
def test_four_rows_write_outputs(tmp_path: Path, synthesis: str) -> None:
    cfg = tiny_cfg(synthesis=synthesis, w_cycle=0.5 if synthesis == "unet" else 0.0)  # the two presets
    for variant in ("single", "hard", "gated"):
        m = run(tmp_path, variant, cfg)
        assert tuple(m) == FERSNET_METRIC_KEYS and m["variant"] == variant
        assert tuple(json.loads((tmp_path / f"{variant}.json").read_text())) == FERSNET_METRIC_KEYS
        rows = _curve(tmp_path / f"{variant}.csv")
        assert tuple(rows[0]) == FERSNET_CURVE_COLUMNS and len(rows) == 1
        report = json.loads((tmp_path / variant / "synthesis.json").read_text())
        assert report["has_synthesis"] == (variant != "single")
        assert (tmp_path / variant / "synthesis_grid.png").exists() == (variant != "single")
        net, meta = load_fersnet(tmp_path / f"{variant}.pt")
        assert meta["sharing"] == variant and net.sharing == variant and net.synthesis == synthesis
        assert m["n_test"] == len(SPLIT["test"])
    assert float(_curve(tmp_path / "hard.csv")[0]["G/l1"]) > 0
    assert (float(_curve(tmp_path / "hard.csv")[0]["G/cycle"]) > 0) == (cfg.w_cycle > 0)
    assert float(_curve(tmp_path / "gated.csv")[0]["gate/z_rec"]) > 0
    assert float(_curve(tmp_path / "single.csv")[0]["G/l1"]) == 0
    from PIL import Image

    grid = np.asarray(Image.open(tmp_path / "gated" / "synthesis_grid.png"))
    assert grid.shape == (2 * (SIZE + 2) + 2, (K + 1) * (SIZE + 2) + 2)  # 2 rows, source + K

    m = run(tmp_path, "synth", tiny_cfg(synthesis=synthesis, synth_per_image=0), init=tmp_path / "gated.pt")
    assert tuple(m) == FERSNET_METRIC_KEYS
    n_train = len(SPLIT["train"])
    assert m["synth/n_images"] == n_train * (K - 1)  # every image into both other expressions
    assert 0 <= m["synth/expr_acc"] <= 1
    _, meta = load_weights(tmp_path / "synth.pt")
    assert meta["variant"] == "synth" and meta["sharing"] == "gated"


# ---------------------------------------------------------------- expression term
def test_expression_term_is_the_target_cross_entropy_and_off_at_zero() -> None:
    """w_expr x CE(R(I_syn), b) is added last; with the critic not given it is 0 and the
    objective is the authors' (the same total as before the term existed)."""
    torch.manual_seed(0)
    syn, tgt = torch.rand(4, 1, 8, 8) * 2 - 1, torch.rand(4, 1, 8, 8) * 2 - 1
    b = torch.tensor([0, 2, 1, 2])
    logits = torch.randn(4, K)
    cls = torch.tensor(0.7)
    cfg = tiny_cfg(w_expr=2.5)
    total, terms = synthesis_loss(cls, syn, tgt, fp=cfg, expression=lambda im: logits, target_labels=b)
    by_hand = -torch.log_softmax(logits, 1)[torch.arange(4), b].mean()
    assert torch.allclose(terms["G/expr"], by_hand)
    l1 = (syn - tgt).abs().mean()
    assert torch.allclose(total, cls + cfg.w_l1 * l1 + 2.5 * by_hand)
    total0, terms0 = synthesis_loss(cls, syn, tgt, fp=cfg)
    assert float(terms0["G/expr"]) == 0 and torch.equal(total0, cls + cfg.w_l1 * l1)
    with pytest.raises(ValueError, match="target expressions"):
        synthesis_loss(cls, syn, tgt, fp=cfg, expression=lambda im: logits)


def test_expression_critic_trains_the_images_only_and_leaves_the_recogniser_as_it_was() -> None:
    """The critic is the recognition path in eval mode with detached weights: its logits
    equal the eval-mode recogniser's, the loss's gradient reaches the images and no
    parameter, and the BatchNorm statistics and the train mode are unchanged."""
    torch.manual_seed(1)
    net = FERSNet(K, 1, 4, input_size=SIZE, sharing="gated", stages=2, synthesis="residual")
    model = FERSNetRecognizer(net).train()
    buffers = {k: b.clone() for k, b in model.named_buffers()}
    images = (torch.rand(5, 1, SIZE, SIZE) * 2 - 1).requires_grad_(True)
    logits = frozen_recognition(model)(images)
    assert model.training and all(m.training for m in model.modules())
    F.cross_entropy(logits, torch.tensor([0, 1, 2, 0, 1])).backward()
    assert images.grad is not None and float(images.grad.abs().sum()) > 0
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(b, buffers[k]) for k, b in model.named_buffers())
    assert net.gate_means() is None  # the critic's pass left no gate log behind
    with torch.no_grad():
        assert torch.allclose(logits, model.eval()(images))


def test_expression_term_changes_training_and_is_logged(tmp_path: Path) -> None:
    m0 = run(tmp_path, "gated", tiny_cfg(), tag="0")
    m1 = run(tmp_path, "gated", tiny_cfg(w_expr=1.0), tag="1")
    assert float(_curve(tmp_path / "gated0.csv")[0]["G/expr"]) == 0
    assert float(_curve(tmp_path / "gated1.csv")[0]["G/expr"]) > 0
    w0, _ = load_weights(tmp_path / "gated0.pt")
    w1, _ = load_weights(tmp_path / "gated1.pt")
    assert any(not torch.equal(w0[k], w1[k]) for k in w0)
    assert m0["n_test"] == m1["n_test"]


def test_synthetic_set_is_class_balanced() -> None:
    torch.manual_seed(0)
    net = FERSNet(K, 1, 4, input_size=16, sharing="gated", stages=2)
    tr = SPLIT["train"][:-2]  # unbalanced real labels
    xs, ys, src = fm.synthesise_set(net, X[tr], Y[tr], num_classes=K, per_image=0, seed=0, device="cpu")
    assert xs.dtype == np.uint8 and xs.shape[1:] == X.shape[1:]
    assert np.all(ys != Y[tr][src])
    total = np.bincount(Y[tr], minlength=K) + np.bincount(ys, minlength=K)
    assert np.all(total == len(tr))


def test_bad_inputs(tmp_path: Path) -> None:
    cfg = tiny_cfg()
    with pytest.raises(ValueError, match="variant"):
        run(tmp_path, "gated2", cfg)
    with pytest.raises(ValueError, match="identity"):
        run_fersnet_fold(make_fold(X, Y, SPLIT, CLASSES, subjects=S), cfg,
                         FoldOutputs(model=tmp_path / "a.pt", metrics=tmp_path / "a.json", curve=tmp_path / "a.csv"),
                         variant="gated", identity=None, init_weights=None, out_dir=tmp_path / "a")
    with pytest.raises(ValueError, match="init_weights"):
        run(tmp_path, "synth", cfg)
    run(tmp_path, "hard", cfg)
    with pytest.raises(ValueError, match="gated FERSNet"):
        run(tmp_path, "synth", cfg, init=tmp_path / "hard.pt")


def test_same_seed_same_metrics_and_exact_resume(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tiny_cfg(epochs=2)
    a = run(tmp_path, "gated", cfg, tag="-a")
    b = run(tmp_path, "gated", cfg, tag="-b")
    assert a == b
    state_a, _ = load_weights(tmp_path / "gated-a.pt")

    resume = tmp_path / "gated-c.resume.pt"
    calls = {"n": 0}
    orig = driver.train_epoch

    def killed_after_first_epoch(*args: Any, **kw: Any) -> dict[str, float]:
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("simulated kill")
        return orig(*args, **kw)

    monkeypatch.setattr(driver, "train_epoch", killed_after_first_epoch)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, "gated", cfg, tag="-c", resume=resume)
    assert resume.exists()
    monkeypatch.setattr(driver, "train_epoch", orig)
    c = run(tmp_path, "gated", cfg, tag="-c", resume=resume)
    assert not resume.exists()
    assert c == a
    state_c, _ = load_weights(tmp_path / "gated-c.pt")
    assert state_a.keys() == state_c.keys()
    assert all(torch.equal(state_a[k], state_c[k]) for k in state_a)
    assert _curve(tmp_path / "gated-c.csv") != [] and len(_curve(tmp_path / "gated-c.csv")) == 2


def test_report_names_every_departure_from_the_authors_with_its_key() -> None:
    from fer.report.sections import fersnet_departures

    default = fersnet_departures(tiny_cfg())
    assert "fersnet.synthesis: residual" in default and "fersnet.w_cycle 0" in default
    assert "w_expr" not in default
    with_term = fersnet_departures(tiny_cfg(w_expr=0.5))
    assert with_term.startswith(default) and "fersnet.w_expr 0.5" in with_term
    authors = fersnet_departures(tiny_cfg(synthesis="unet", w_cycle=0.5))
    assert "fersnet.synthesis: unet" in authors and "residual" not in authors and "w_cycle" not in authors
