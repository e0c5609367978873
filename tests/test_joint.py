"""Joint training of recogniser and generator (M1): the four ablation variants, outputs
with the baseline's keys, generator updates, labels of generated images, exact resume,
determinism and the test-split protocol. Tiny data (16x16 gray, class = bright quadrant),
a tiny stand-in conditional generator (never the real FESGAN)."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn as nn

import fer.losses.rdbp as rdbp_module
import fer.methods.joint as joint
import fer.training.protocol as protocol
from conftest import assert_same_state, make_fold, outputs, quadrant_data, random_split, recognizer
from fer.methods.joint import GeneratorTraining, generator_path, run_joint_fold, train_joint
from fer.models import build_model
from fer.params import RdbpParams, RecognizerParams
from fer.training.checkpoint import load_weights
from fer.training.inference import predict
from fer.training.protocol import CURVE_COLUMNS, METRIC_KEYS, model_from_weights
from fer.training.samplers import CycledSet, n_per_batch

K = 3
SIZE = 16
Z_DIM = 8
CLASSES = ["anger", "happiness", "surprise"]


X, Y = quadrant_data(120, 3, K)
SPLIT = random_split(120, 72, 24)
TRAIN = (X[SPLIT["train"]], Y[SPLIT["train"]])
VAL = (X[SPLIT["val"]], Y[SPLIT["val"]])
STATIC = quadrant_data(30, 11, K)  # stands in for a pre-generated class-balanced set


class TinyGenerator(nn.Module):
    """Stand-in conditional generator: (z (N, z_dim), one-hot (N, K)) -> (N, 1, 16, 16)."""

    def __init__(self, record: Callable[[torch.Tensor, torch.Tensor], None] | None = None):
        super().__init__()
        self.z_dim = Z_DIM
        self.net = nn.Sequential(nn.Linear(Z_DIM + K, 32), nn.ReLU(), nn.Linear(32, SIZE * SIZE))
        self.record = record  # a function: deepcopy keeps the same one

    def forward(self, z: torch.Tensor, expr: torch.Tensor) -> torch.Tensor:
        if self.record is not None:
            self.record(z, expr)
        out = torch.tanh(self.net(torch.cat([z, expr], 1)))  # N, 256
        return out.view(-1, 1, SIZE, SIZE)  # N, 1, 16, 16


def tiny_generator(record: Callable[[torch.Tensor, torch.Tensor], None] | None = None) -> TinyGenerator:
    torch.manual_seed(42)
    return TinyGenerator(record)


def train_cfg(**overrides: Any) -> RecognizerParams:
    return recognizer(**overrides)


TRAINING = GeneratorTraining(lr=1e-4, anchor_weight=1.0)
#: The ablation rows the pipeline runs: (uses a generator, the rdbp section or None).
VARIANTS: dict[str, tuple[bool, RdbpParams | None]] = {
    "static": (False, None),
    "joint": (True, None),
    "joint_intra": (True, RdbpParams(lambda_=0.5, stop_gradient=False)),
    "full": (True, RdbpParams(lambda_=0.5, stop_gradient=True)),
}


def variant_args(name: str) -> dict[str, Any]:
    uses_gen, rdbp = VARIANTS[name]
    return {
        "synth_ratio": 0.5,
        "rdbp": rdbp,
        "generator": tiny_generator() if uses_gen else None,
        "training": TRAINING if uses_gen else None,
        "synthetic": None if uses_gen else STATIC,
    }


def new_recogniser(cfg: RecognizerParams, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(cfg.arch, K, 1, cfg.width, input_size=SIZE)


def run_train_joint(cfg: RecognizerParams, variant: str, resume: Path | None = None, seed: int = 0,
                    **kw: Any) -> tuple[nn.Module, joint.JointResult]:
    model = new_recogniser(cfg, seed)
    res = train_joint(model, TRAIN, VAL, cfg, num_classes=K, device="cpu", seed=seed, resume_path=resume,
                      **variant_args(variant), **kw)
    return model, res


def fold() -> protocol.Fold:
    return make_fold(X, Y, SPLIT, CLASSES)


# ----------------------------------------------------------------------------- config
def test_synthetic_batch_size() -> None:
    assert n_per_batch(32, 0.5) == 16 and n_per_batch(3, 0.1) == 1
    assert n_per_batch(5, 0.5) == 3  # round half up
    with pytest.raises(ValueError, match="synth_ratio"):
        train_joint(new_recogniser(train_cfg()), TRAIN, VAL, train_cfg(), num_classes=K, device="cpu", seed=0,
                    resume_path=None, **{**variant_args("joint"), "synth_ratio": 0.0})


# ------------------------------------------------------------------------- variants
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_variant_writes_baseline_outputs(tmp_path: Path, variant: str) -> None:
    out = outputs(tmp_path)
    metrics = run_joint_fold(fold(), train_cfg(), out, **variant_args(variant))
    assert not out.resume.exists()
    on_disk = json.loads(out.metrics.read_text())
    assert on_disk == metrics
    assert list(metrics) == [*METRIC_KEYS, "n_synthetic_per_step"]
    assert (metrics["n_train"], metrics["n_val"], metrics["n_test"]) == (72, 24, 24)
    assert metrics["n_synthetic_per_step"] == 8  # round(0.5 * 16)
    assert np.array(metrics["test/confusion"]).sum() == 24
    for key in ("test/acc", "test/mean_class_acc", "test/macro_f1", "test/last_epoch_acc"):
        assert 0.0 <= metrics[key] <= 1.0

    with open(out.curve, newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == [*CURVE_COLUMNS, *joint.JOINT_TERMS]
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    intra = [float(r["train/intra"]) for r in rows]
    if VARIANTS[variant][1] is not None:
        assert all(v > 0 for v in intra)
    else:
        assert all(v == 0 for v in intra)
    assert all(float(r["train/cls_syn"]) > 0 and float(r["train/cls_real"]) > 0 for r in rows)
    anchor = [float(r["G/anchor"]) for r in rows]
    assert all(v > 0 for v in anchor) if variant != "static" else all(v == 0 for v in anchor)
    log_rows = [json.loads(line) for line in out.log.read_text().splitlines()]
    assert [r["epoch"] for r in log_rows] == [1, 2]

    raw = torch.load(out.model, weights_only=True)
    assert set(raw) == {"state_dict", "meta"}
    meta = raw["meta"]
    assert meta["arch"] == "vgg_small" and meta["classes"] == CLASSES
    assert meta["best_epoch"] == metrics["best_epoch"] and meta["seed"] == 0
    model, _ = model_from_weights(out.model)  # the baseline's loader works as is
    pred = predict(model, X[SPLIT["test"]], "cpu").argmax(1)
    assert float((pred == Y[SPLIT["test"]]).mean()) == pytest.approx(metrics["test/acc"])

    gen_file = generator_path(out.model)
    assert gen_file.name == "fold-0.generator.pt"
    if variant == "static":
        assert not gen_file.exists() and meta["generator"] is None
    else:
        torch.load(gen_file, weights_only=True)
        state, gmeta = load_weights(gen_file)
        assert meta["generator"]["file"] == gen_file.name
        assert gmeta["z_dim"] == Z_DIM and gmeta["epoch"] == metrics["best_epoch"]
        assert gmeta["training"] == {"lr": TRAINING.lr, "anchor_weight": TRAINING.anchor_weight}
        TinyGenerator().load_state_dict(state)
    rdbp = VARIANTS[variant][1]
    assert meta["rdbp"] == (None if rdbp is None else {"lambda": 0.5, "stop_gradient": rdbp.stop_gradient,
                                                         "anchor": "class_mean"})


def test_test_split_is_used_only_at_the_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[str] = []
    real_train, real_forward = joint.train_joint, protocol.forward_store

    def spy_train(model, train, val, *args, **kw):  # type: ignore[no-untyped-def]
        assert np.array_equal(train[0], X[SPLIT["train"]])
        assert np.array_equal(val[0], X[SPLIT["val"]]) and np.array_equal(val[1], Y[SPLIT["val"]])
        events.append("train")
        return real_train(model, train, val, *args, **kw)

    def spy_forward(model, store, *args, **kw):  # type: ignore[no-untyped-def]
        assert torch.equal(store.images, torch.from_numpy(X[SPLIT["test"]]).permute(0, 3, 1, 2))
        events.append("predict-test")
        return real_forward(model, store, *args, **kw)

    monkeypatch.setattr(joint, "train_joint", spy_train)
    monkeypatch.setattr(protocol, "forward_store", spy_forward)  # the shared test step
    run_joint_fold(fold(), train_cfg(epochs=1), outputs(tmp_path), **variant_args("static"))
    assert events == ["train", "predict-test", "predict-test"]


def test_rejects_bad_inputs(tmp_path: Path) -> None:
    out = outputs(tmp_path, log=False)
    args = variant_args("joint")
    with pytest.raises(ValueError, match="exactly one"):
        run_joint_fold(fold(), train_cfg(), out, **{**args, "generator": None})
    with pytest.raises(ValueError, match="exactly one"):
        run_joint_fold(fold(), train_cfg(), out, **{**args, "synthetic": STATIC})
    with pytest.raises(ValueError, match="synthetic images"):
        run_joint_fold(fold(), train_cfg(), out,
                       **{**args, "generator": None, "synthetic": (STATIC[0][:, :8], STATIC[1])})
    big = TinyGenerator()
    big.forward = lambda z, e: torch.zeros(len(z), 1, 8, 8)  # type: ignore[method-assign]
    with pytest.raises(ValueError, match="generator output"):
        run_joint_fold(fold(), train_cfg(), out, **{**args, "generator": big})
    assert not any(tmp_path.iterdir())


# ------------------------------------------------------------------------ generator
def test_joint_updates_a_copy_of_the_generator() -> None:
    cfg = train_cfg()
    args = variant_args("joint")
    original = {k: v.clone() for k, v in args["generator"].state_dict().items()}
    res = train_joint(new_recogniser(cfg), TRAIN, VAL, cfg, num_classes=K, device="cpu", seed=0,
                      resume_path=None, **args)
    assert_same_state(args["generator"].state_dict(), original)  # the caller's is untouched
    assert res.generator is not None and res.generator_best_state is not None
    trained = res.generator.state_dict()
    assert any(not torch.equal(trained[k], original[k]) for k in original)
    assert any(not torch.equal(res.generator_best_state[k], original[k]) for k in original)


def test_frozen_generator_is_not_updated() -> None:
    cfg = train_cfg()
    args = {**variant_args("full"), "training": None}
    original = {k: v.clone() for k, v in args["generator"].state_dict().items()}
    res = train_joint(new_recogniser(cfg), TRAIN, VAL, cfg, num_classes=K, device="cpu", seed=0,
                      resume_path=None, **args)
    assert res.generator is not None
    assert_same_state(res.generator.state_dict(), original)
    assert all(r["G/anchor"] == 0 and r["train/intra"] > 0 for r in res.fit.history)


def test_generated_labels_are_the_target_expressions() -> None:
    # A generator that paints the target class into the image: label c -> value c / 2.
    class Painter(nn.Module):
        z_dim = 4

        def forward(self, z: torch.Tensor, expr: torch.Tensor) -> torch.Tensor:
            assert z.min() >= -1 and z.max() <= 1 and torch.equal(expr.sum(1), torch.ones(len(z)))
            value = expr.argmax(1).float() / 2 * 2 - 1  # [-1, 1] for the generator's range
            return value.view(-1, 1, 1, 1).expand(-1, 1, SIZE, SIZE)

    source = joint.GeneratedSynthetic(
        Painter(), num_classes=K, class_pool=np.array([0, 1, 2]), image_shape=(1, SIZE, SIZE),
        device=torch.device("cpu"), g=torch.Generator().manual_seed(0), trainable=False,
    )
    images, labels, anchor = source.sample(64)
    assert images.shape == (64, 1, SIZE, SIZE) and anchor is None
    assert torch.equal((images[:, 0, 0, 0] * 2).round().long(), labels)  # [0, 1] space
    assert set(labels.tolist()) == {0, 1, 2}
    # only classes present in the training split are targets
    source.class_pool = torch.tensor([2])
    assert set(source.sample(16)[1].tolist()) == {2}


def test_training_uses_the_target_expressions_as_labels(monkeypatch: pytest.MonkeyPatch) -> None:
    generated: list[torch.Tensor] = []
    used: list[torch.Tensor] = []

    def record(z: torch.Tensor, expr: torch.Tensor) -> None:
        generated.append(expr.argmax(1).clone())

    real_intra = rdbp_module.intra_class_loss

    def spy_intra(feat_syn, y_syn, feat_real, y_real, **kw):  # type: ignore[no-untyped-def]
        used.append(y_syn.clone())
        return real_intra(feat_syn, y_syn, feat_real, y_real, **kw)

    monkeypatch.setattr(rdbp_module, "intra_class_loss", spy_intra)
    cfg = train_cfg(epochs=1)
    train_joint(new_recogniser(cfg), TRAIN, VAL, cfg, num_classes=K, synth_ratio=0.5,
                generator=tiny_generator(record), training=GeneratorTraining(1e-4, 0.0),  # no reference calls
                rdbp=RdbpParams(lambda_=0.5), device="cpu", seed=0, resume_path=None)
    assert len(used) == len(generated) == 72 // 16 + 1  # one per real batch
    for g, u in zip(generated, used):
        assert torch.equal(g, u)


def test_static_set_is_cycled_without_replacement() -> None:
    x, y = STATIC
    source = CycledSet(x, y, torch.device("cpu"), torch.Generator().manual_seed(0))
    source.start_epoch()
    images, labels, _ = source.sample(len(x))
    # one full pass: every synthetic image exactly once, with its own label
    seen = sorted(map(bytes, (images * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()))
    assert seen == sorted(map(bytes, x))
    order = [next(i for i in range(len(x)) if np.array_equal(x[i], im)) for im in
             (images * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()]
    assert np.array_equal(y[order], labels.numpy())
    assert len(source.sample(7)[1]) == 7  # the next pass starts transparently


# ------------------------------------------------------------- resume, determinism
class Killed(RuntimeError):
    pass


@pytest.mark.parametrize("variant", ["full", "static"])
def test_resume_gives_identical_weights(tmp_path: Path, variant: str) -> None:
    cfg = train_cfg(epochs=3)
    straight, r_straight = run_train_joint(cfg, variant, tmp_path / "straight.pt")

    def kill_after_first(row: dict[str, float]) -> None:
        if row["epoch"] == 1:
            raise Killed

    resume = tmp_path / "killed.pt"
    with pytest.raises(Killed):
        run_train_joint(cfg, variant, resume, on_epoch_end=kill_after_first)
    payload = torch.load(resume, weights_only=True)
    assert payload["epoch"] == 1

    torch.manual_seed(999)  # disturb the global RNGs: the resume must restore them
    np.random.seed(999)
    resumed, r_resumed = run_train_joint(cfg, variant, resume)
    assert r_resumed.fit.resumed_epochs == 1
    assert_same_state(straight.state_dict(), resumed.state_dict())
    assert_same_state(r_straight.fit.best_state, r_resumed.fit.best_state)
    if variant == "full":
        assert r_straight.generator is not None and r_resumed.generator is not None
        assert_same_state(r_straight.generator.state_dict(), r_resumed.generator.state_dict())
        assert r_straight.generator_best_state is not None
        assert r_resumed.generator_best_state is not None
        assert_same_state(r_straight.generator_best_state, r_resumed.generator_best_state)
    strip = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]  # noqa: E731
    assert strip(r_straight.fit.history) == strip(r_resumed.fit.history)


def test_resume_with_other_joint_config_starts_fresh(tmp_path: Path) -> None:
    cfg = train_cfg(epochs=1)
    resume = tmp_path / "r.pt"
    run_train_joint(cfg, "joint", resume)
    # same recogniser parameters, with the intra-class loss
    res = train_joint(new_recogniser(cfg), TRAIN, VAL, cfg, num_classes=K, device="cpu", seed=0,
                      resume_path=resume, **variant_args("full"))
    assert res.fit.resumed_epochs == 0


def test_same_seed_same_weights() -> None:
    cfg = train_cfg()
    m1, r1 = run_train_joint(cfg, "full")
    m2, r2 = run_train_joint(cfg, "full")
    assert_same_state(m1.state_dict(), m2.state_dict())
    assert r1.generator is not None and r2.generator is not None
    assert_same_state(r1.generator.state_dict(), r2.generator.state_dict())
    m3, _ = run_train_joint(cfg, "full", seed=1)
    assert any(not torch.equal(a, b) for a, b in zip(m1.state_dict().values(),
                                                     m3.state_dict().values()))
