"""Augmentation, training loop (selection, determinism, resume), checkpoints and the
baseline method, on tiny learnable data: 16x16 gray images, class = bright quadrant."""

from __future__ import annotations

import csv
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import fer.training.protocol as protocol
from conftest import assert_same_state, make_fold, outputs, quadrant_data
from fer.methods.baseline import run_baseline_fold
from fer.metrics.classification import classification_metrics
from fer.models import build_model
from fer.params import AugmentParams, RecognizerParams, build, to_dict
from fer.training.augment import affine_matrices, augment_batch, warp
from fer.training.checkpoint import clear_resume, load_weights, save_weights
from fer.training.driver import HISTORY_KEYS, fit, train_with_selection
from fer.training.inference import embed, predict
from fer.training.optim import lr_factor, setup_training
from fer.training.protocol import CURVE_COLUMNS, METRIC_KEYS, model_from_weights, prepare_fold

NUM_CLASSES = 3
SIZE = 16


# ----------------------------------------------------------------------------- data
TRAIN = quadrant_data(192, 0)
VAL = quadrant_data(48, 1)


def small_cfg(**overrides: Any) -> RecognizerParams:
    base: dict[str, Any] = {
        "arch": "resnet18",
        "width": 8,
        "epochs": 3,
        "batch_size": 32,
        "lr": 0.05,
        "warmup_epochs": 1,
        # no flip: it would swap the left/right quadrant classes
        "augment": {"hflip": False, "rotate_deg": 5.0, "erasing": 0.25},
    }
    base.update(overrides)
    return build(RecognizerParams, base)


def new_model(cfg: RecognizerParams, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(cfg.arch, NUM_CLASSES, 1, cfg.width, input_size=SIZE)


def run_fit(cfg: RecognizerParams, resume: Path | None = None, **kw: Any):
    model = new_model(cfg)
    res = fit(model, TRAIN, VAL, cfg, num_classes=NUM_CLASSES, device=torch.device("cpu"),
              seed=0, resume_path=resume, **kw)
    return model, res


# ----------------------------------------------------------------------- augmentation
def test_augment_identity_when_disabled() -> None:
    x = torch.rand(4, 3, 20, 24)
    cfg = AugmentParams(hflip=False, rotate_deg=0, scale=0, shift=0, brightness=0,
                        contrast=0, erasing=0)
    out = augment_batch(x, cfg, torch.Generator().manual_seed(0))
    assert torch.equal(out, x)


def test_warp_with_identity_matrix_is_identity() -> None:
    x = torch.rand(3, 1, 16, 24)
    u = torch.full((3, 5), 0.5)  # no flip, angle 0, scale 1, shift 0
    theta = affine_matrices(u, AugmentParams(), 16, 24)
    assert torch.allclose(theta, torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]).expand(3, 2, 3))
    assert torch.allclose(warp(x, theta), x, atol=1e-5)


def test_hflip_only_flips() -> None:
    x = torch.rand(8, 3, 16, 16)
    cfg = AugmentParams(hflip=True, rotate_deg=0, scale=0, shift=0, brightness=0,
                        contrast=0)
    forced = augment_batch(x, cfg, torch.Generator().manual_seed(0), hflip_p=1.0)
    assert torch.allclose(forced, torch.flip(x, dims=[3]), atol=1e-5)
    # default p = 0.5: every sample is either untouched or mirrored, and both occur
    x = torch.rand(64, 1, 12, 12)
    out = augment_batch(x, cfg, torch.Generator().manual_seed(1))
    same = [(out[i] - x[i]).abs().max() < 1e-5 for i in range(64)]
    flipped = [(out[i] - torch.flip(x[i], dims=[2])).abs().max() < 1e-5 for i in range(64)]
    assert all(s or f for s, f in zip(same, flipped))
    assert any(same) and any(flipped)


def test_augment_deterministic_and_in_range() -> None:
    x = torch.rand(16, 1, 32, 32)
    cfg = AugmentParams(erasing=0.5, brightness=0.4, contrast=0.4)
    a = augment_batch(x, cfg, torch.Generator().manual_seed(123))
    b = augment_batch(x, cfg, torch.Generator().manual_seed(123))
    c = augment_batch(x, cfg, torch.Generator().manual_seed(124))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert a.shape == x.shape
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0
    assert not torch.equal(a, x)


def test_random_erasing_fills_rectangle_with_half() -> None:
    x = torch.zeros(8, 1, 20, 20)
    cfg = AugmentParams(hflip=False, rotate_deg=0, scale=0, shift=0, brightness=0,
                        contrast=0, erasing=1.0)
    out = augment_batch(x, cfg, torch.Generator().manual_seed(0))
    for i in range(8):
        mask = out[i, 0] == 0.5
        assert mask.sum() > 0
        rows, cols = mask.any(1).nonzero(), mask.any(0).nonzero()
        h, w = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
        assert int(mask.sum()) == int(h * w)  # one solid rectangle
        assert set(out[i].unique().tolist()) <= {0.0, 0.5}


def test_augment_config_validation() -> None:
    with pytest.raises(ValueError):
        AugmentParams(scale=-0.1)
    with pytest.raises(ValueError):
        AugmentParams(erasing=1.5)


# ----------------------------------------------------------------------------- config
def test_train_config_from_mapping() -> None:
    cfg = build(RecognizerParams, {"epochs": 5, "lr": 1, "augment": {"rotate_deg": 15}})
    assert cfg.epochs == 5 and isinstance(cfg.epochs, int)
    with pytest.raises(ValueError, match="epochs must be an integer"):  # integers are integers (issue 9)
        build(RecognizerParams, {"epochs": 5.0})
    assert cfg.lr == 1.0 and isinstance(cfg.lr, float)
    assert cfg.augment == AugmentParams(rotate_deg=15.0)
    assert build(RecognizerParams, {}) == RecognizerParams()
    with pytest.raises(ValueError, match="learning_rate"):
        build(RecognizerParams, {"learning_rate": 0.1})
    with pytest.raises(ValueError, match="rotation"):
        build(RecognizerParams, {"augment": {"rotation": 3}})
    with pytest.raises(ValueError, match="optimizer"):
        build(RecognizerParams, {"optimizer": "lbfgs"})
    with pytest.raises(ValueError, match="select_metric"):
        build(RecognizerParams, {"select_metric": "test/acc"})
    with pytest.raises(ValueError):
        build(RecognizerParams, {"epochs": 2.5})
    assert json.loads(json.dumps(to_dict(cfg)))["augment"]["rotate_deg"] == 15.0


def test_lr_schedules() -> None:
    total, warm = 100, 10
    assert lr_factor(0, total=total, warmup=warm, schedule="cosine") == pytest.approx(0.1)
    assert lr_factor(9, total=total, warmup=warm, schedule="cosine") == pytest.approx(1.0)
    assert lr_factor(10, total=total, warmup=warm, schedule="cosine") == pytest.approx(1.0)
    assert lr_factor(55, total=total, warmup=warm, schedule="cosine") == pytest.approx(0.5)
    assert lr_factor(99, total=total, warmup=warm, schedule="cosine") < 0.01
    assert lr_factor(50, total=total, warmup=warm, schedule="constant") == 1.0
    assert lr_factor(54, total=total, warmup=warm, schedule="step") == 1.0
    assert lr_factor(55, total=total, warmup=warm, schedule="step") == pytest.approx(0.1)
    assert lr_factor(78, total=total, warmup=warm, schedule="step") == pytest.approx(0.01)


# ------------------------------------------------------------------------------- loop
def test_fit_learns_and_logs(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cfg = small_cfg(epochs=5)
    with caplog.at_level(logging.INFO, logger="fer.training.driver"):
        model, res = run_fit(cfg, log_path=tmp_path / "log.jsonl")
    losses = [r["train/loss"] for r in res.history]
    assert losses[-1] < losses[0]
    assert res.history[-1]["train/acc"] > 0.6  # chance is 1/3
    assert max(r["val/acc"] for r in res.history) > 0.6
    assert [r["epoch"] for r in res.history] == [1, 2, 3, 4, 5]
    assert all(list(r) == list(HISTORY_KEYS) for r in res.history)
    rows = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert rows == res.history
    assert sum("epoch " in m for m in caplog.messages) == 5
    logits = predict(model, VAL[0], "cpu", batch_size=20)
    assert logits.shape == (len(VAL[1]), NUM_CLASSES) and logits.dtype == np.float32
    assert embed(model, VAL[0], "cpu").shape == (len(VAL[1]), 8 * cfg.width)
    # the returned best state reproduces the history's validation metric
    model.load_state_dict(res.best_state)
    pred = predict(model, VAL[0], "cpu").argmax(1)
    best = res.history[res.best_epoch - 1]
    assert classification_metrics(VAL[1], pred, NUM_CLASSES)["mean_class_acc"] == pytest.approx(
        best["val/mean_class_acc"]
    )


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"arch": "vgg_small", "optimizer": "adamw", "lr": 0.003, "schedule": "step",
         "class_weighting": "balanced"},
    ],
)
def test_fit_is_deterministic(overrides: dict[str, Any]) -> None:
    cfg = small_cfg(epochs=2, **overrides)
    m1, r1 = run_fit(cfg)
    m2, r2 = run_fit(cfg)
    assert_same_state(m1.state_dict(), m2.state_dict())
    assert_same_state(r1.best_state, r2.best_state)


class Killed(RuntimeError):
    pass


@pytest.mark.parametrize("arch", ["resnet18", "vgg_small"])  # vgg: dropout RNG too
def test_resume_gives_identical_weights(tmp_path: Path, arch: str) -> None:
    cfg = small_cfg(arch=arch, epochs=3)
    straight, r_straight = run_fit(cfg, tmp_path / "straight.pt")

    def kill_after_first(row: dict[str, float]) -> None:
        if row["epoch"] == 1:
            raise Killed

    resume = tmp_path / "killed.pt"
    with pytest.raises(Killed):
        run_fit(cfg, resume, on_epoch_end=kill_after_first)
    payload = torch.load(resume, weights_only=True)  # safe loading of the resume file
    assert payload["epoch"] == 1

    # disturb the global RNGs: the resume must restore them
    torch.manual_seed(999)
    np.random.seed(999)
    resumed, r_resumed = run_fit(cfg, resume)
    assert r_resumed.resumed_epochs == 1
    assert_same_state(straight.state_dict(), resumed.state_dict())
    assert_same_state(r_straight.best_state, r_resumed.best_state)
    assert r_straight.best_epoch == r_resumed.best_epoch
    strip = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]  # noqa: E731
    assert strip(r_straight.history) == strip(r_resumed.history)


def test_resume_with_other_config_starts_fresh(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    resume = tmp_path / "r.pt"
    run_fit(small_cfg(epochs=1), resume)
    assert resume.exists()
    with caplog.at_level(logging.WARNING, logger="fer.training.driver"):
        _, res = run_fit(small_cfg(epochs=2), resume)
    assert res.resumed_epochs == 0
    assert any("does not match" in m for m in caplog.messages)
    # a completed run's resume file resumes to the end without training
    _, res2 = run_fit(small_cfg(epochs=2), resume)
    assert res2.resumed_epochs == 2 and len(res2.history) == 2
    clear_resume(resume)
    assert not resume.exists()
    clear_resume(resume)  # idempotent


@pytest.mark.parametrize("metric", ["val/mean_class_acc", "val/loss"])
def test_selection_follows_validation_metric(metric: str) -> None:
    # Permuted validation labels: the val metric no longer tracks training progress,
    # and best_epoch must still be the (first) optimum of the VALIDATION metric.
    rng = np.random.default_rng(5)
    val = (VAL[0], rng.permutation(VAL[1]))
    cfg = small_cfg(epochs=4, select_metric=metric)
    model = new_model(cfg)
    res = fit(model, TRAIN, val, cfg, num_classes=NUM_CLASSES, device="cpu", seed=0,
              resume_path=None)
    values = np.array([r[metric] for r in res.history])
    expected = int(np.argmin(values) if metric == "val/loss" else np.argmax(values)) + 1
    assert res.best_epoch == expected
    assert res.best_metric == pytest.approx(values[expected - 1])
    assert all(not k.startswith("test") for r in res.history for k in r)


def test_fit_rejects_bad_inputs() -> None:
    cfg = small_cfg(epochs=1)
    model = new_model(cfg)
    with pytest.raises(ValueError, match="uint8"):
        fit(model, (TRAIN[0].astype(np.float32), TRAIN[1]), VAL, cfg, num_classes=3,
            device="cpu", seed=0, resume_path=None)
    with pytest.raises(ValueError, match="labels outside"):
        fit(model, (TRAIN[0], TRAIN[1] + 5), VAL, cfg, num_classes=3, device="cpu", seed=0,
            resume_path=None)


# ------------------------------------------------------------------------ checkpoints
def test_save_and_load_weights_safely(tmp_path: Path) -> None:
    model = build_model("vgg_small", 3, 1, 4, input_size=16)
    meta = {"arch": "vgg_small", "best_epoch": np.int64(3), "size": (16, 16),
            "path": tmp_path, "nested": {"x": [1.5, None, True]}}
    path = tmp_path / "w.pt"
    save_weights(path, model.state_dict(), meta)
    raw = torch.load(path, weights_only=True)
    assert set(raw) == {"state_dict", "meta"}
    state, meta2 = load_weights(path)
    assert_same_state(state, model.state_dict())
    assert meta2 == {"arch": "vgg_small", "best_epoch": 3, "size": [16, 16],
                     "path": str(tmp_path), "nested": {"x": [1.5, None, True]}}
    with pytest.raises(TypeError, match="meta.bad"):
        save_weights(path, model.state_dict(), {"bad": torch.zeros(1)})
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temporaries


def test_same_weights_same_file_bytes(tmp_path: Path) -> None:
    """The temporary file name must not end up inside the archive: saving the same
    weights twice (each time under a new random temporary name) gives the same bytes."""
    model = build_model("vgg_small", 3, 1, 4, input_size=16)
    digests = []
    for name in ("a.pt", "a.pt", "b.pt"):
        save_weights(tmp_path / name, model.state_dict(), {"arch": "vgg_small"})
        digests.append(hashlib.md5((tmp_path / name).read_bytes()).hexdigest())
    assert digests[0] == digests[1] == digests[2]


# ---------------------------------------------------------------------------- baseline
def baseline_data() -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    x, y = quadrant_data(240, 7)
    idx = np.random.default_rng(0).permutation(240)
    return x, y, {"train": idx[:160], "val": idx[160:200], "test": idx[200:]}


def test_run_baseline_fold_outputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    x, y, split = baseline_data()
    events: list[str] = []
    real_fit, real_forward = fit, protocol.forward_store

    def spy_fit(model, train, val, cfg, **kw):  # type: ignore[no-untyped-def]
        # only the train and val images reach fit
        assert np.array_equal(train[0], x[split["train"]])
        assert np.array_equal(val[0], x[split["val"]])
        assert np.array_equal(val[1], y[split["val"]])
        events.append("fit")
        return real_fit(model, train, val, cfg, **kw)

    def spy_forward(model, store, *args, **kw):  # type: ignore[no-untyped-def]
        assert torch.equal(store.images, torch.from_numpy(x[split["test"]]).permute(0, 3, 1, 2))
        events.append("predict-test")
        return real_forward(model, store, *args, **kw)

    import fer.methods.baseline as baseline

    monkeypatch.setattr(baseline, "fit", spy_fit)
    monkeypatch.setattr(protocol, "forward_store", spy_forward)

    cfg = small_cfg(epochs=3)
    out = outputs(tmp_path)
    metrics = run_baseline_fold(make_fold(x, y, split, ["a", "b", "c"]), cfg, out)
    assert events == ["fit", "predict-test", "predict-test"]  # test only after training
    assert not out.resume.exists()

    on_disk = json.loads(out.metrics.read_text())
    assert on_disk == metrics
    assert list(metrics) == list(METRIC_KEYS)
    assert (metrics["n_train"], metrics["n_val"], metrics["n_test"]) == (160, 40, 40)
    assert 1 <= metrics["best_epoch"] <= 3
    assert np.array(metrics["test/confusion"]).sum() == 40
    for key in ("test/acc", "test/mean_class_acc", "test/macro_f1", "test/last_epoch_acc"):
        assert 0.0 <= metrics[key] <= 1.0

    with open(out.curve, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == list(CURVE_COLUMNS)
    assert [int(r[0]) for r in rows[1:]] == [1, 2, 3]

    raw = torch.load(out.model, weights_only=True)
    meta = raw["meta"]
    assert meta["arch"] == "resnet18" and meta["width"] == 8
    assert meta["classes"] == ["a", "b", "c"] and meta["in_channels"] == 1
    assert meta["input_size"] == [16, 16] and meta["seed"] == 0
    assert meta["best_epoch"] == metrics["best_epoch"]
    assert meta["select_metric"] == "val/mean_class_acc"
    assert meta["train_config"] == to_dict(cfg)
    # the saved (selected) model reproduces the reported test accuracy
    model, _ = model_from_weights(out.model)
    pred = predict(model, x[split["test"]], "cpu").argmax(1)
    assert float((pred == y[split["test"]]).mean()) == pytest.approx(metrics["test/acc"])


def test_prepare_fold_rejects_overlapping_splits() -> None:
    x, y, split = baseline_data()
    bad = dict(split, test=np.concatenate([split["test"], split["train"][:1]]))
    with pytest.raises(ValueError, match="not disjoint"):
        make_fold(x, y, bad, ["a", "b", "c"])
    bad = dict(split, val=np.concatenate([split["val"], split["val"][:1]]))
    with pytest.raises(ValueError, match="repeats"):
        make_fold(x, y, bad, ["a", "b", "c"])
    with pytest.raises(ValueError, match="lacks"):
        make_fold(x, y, {"train": split["train"], "val": split["val"]}, ["a", "b", "c"])
    with pytest.raises(ValueError, match="labels outside"):
        make_fold(x, y + 3, split, ["a", "b", "c"])


def test_prepare_fold_rejects_shared_subjects_and_bad_shapes() -> None:
    x = np.zeros((4, 8, 8, 1), np.uint8)
    y = np.zeros(4, np.int64)
    idx = {"train": np.array([0, 1]), "val": np.array([2]), "test": np.array([3])}
    fold = prepare_fold(x, y, idx, ["a"], device="cpu", seed=0, subjects=np.array(["a", "a", "b", "c"]))
    assert fold.subjects.tolist() == ["a", "a", "b", "c"]
    with pytest.raises(ValueError, match="'train' and 'test' share subjects"):
        prepare_fold(x, y, idx, ["a"], device="cpu", seed=0, subjects=np.array(["a", "b", "c", "a"]))
    with pytest.raises(ValueError, match="'val' and 'test' share subjects"):
        prepare_fold(x, y, idx, ["a"], device="cpu", seed=0, subjects=np.array(["a", "a", "c", "c"]))
    with pytest.raises(ValueError, match="does not match 4 images"):
        prepare_fold(x, y, idx, ["a"], device="cpu", seed=0, subjects=np.array(["a", "b"]))


# ------------------------------------------------------------- start weights as a candidate
def _val_acc(model: torch.nn.Module) -> float:
    return classification_metrics(VAL[1], predict(model, VAL[0], "cpu").argmax(1), NUM_CLASSES)["acc"]


def test_start_weights_compete_in_the_selection_as_epoch_0(tmp_path: Path) -> None:
    """``start_candidate``: the weights before the first epoch are selection candidate 0.
    Hand-built epochs: (a) from trained weights, every epoch scrambles the network to
    zeros (a constant prediction): the start wins, bit for bit, also after a resume; the
    same run without the candidate returns a scrambled epoch; (b) from a fresh network,
    epoch 1 loads the trained weights: epoch 1 wins."""
    cfg = small_cfg(epochs=3)
    trained, _ = run_fit(cfg)
    good = {k: v.clone() for k, v in trained.state_dict().items()}
    good_acc = _val_acc(trained)
    zero_acc = float(np.mean(VAL[1] == 0))  # all-zero weights: zero logits, argmax class 0
    assert good_acc > zero_acc + 0.2  # the start is the better network

    def scramble(model: torch.nn.Module) -> Any:
        def run_epoch(epoch: int) -> dict[str, float]:
            with torch.no_grad():
                for p in model.parameters():
                    p.zero_()
            return {"train/loss": 1.0, "train/acc": 0.0, "lr": 0.0}
        return run_epoch

    def select(model: torch.nn.Module, run_epoch: Any, candidate: bool, resume: Path | None = None, **kw: Any):
        setup = setup_training(model, cfg, TRAIN[1], num_classes=NUM_CLASSES, device=torch.device("cpu"))
        return train_with_selection(model, setup, VAL, epochs=2, select_metric="val/acc", num_classes=NUM_CLASSES,
                                    fingerprint="start-candidate", rngs={}, run_epoch=run_epoch,
                                    resume_path=resume, start_candidate=candidate, **kw)

    model = new_model(cfg)
    model.load_state_dict(good)
    res = select(model, scramble(model), True)
    assert res.best_epoch == 0 and res.best_metric == pytest.approx(good_acc)
    assert_same_state(res.best_state, good)
    assert [r["val/acc"] for r in res.history] == pytest.approx([zero_acc, zero_acc])
    assert res.selected_row() is res.start_row and res.start_row["epoch"] == 0
    assert res.start_row["val/acc"] == pytest.approx(good_acc)
    # the fold's metrics report the selected (start) weights' validation numbers, not the
    # last epoch's (history[best_epoch - 1] would be history[-1])
    fold = make_fold(np.concatenate([TRAIN[0], VAL[0]]), np.concatenate([TRAIN[1], VAL[1]]),
                     {"train": np.arange(len(TRAIN[1])), "val": np.arange(len(TRAIN[1]), len(TRAIN[1]) + 24),
                      "test": np.arange(len(TRAIN[1]) + 24, len(TRAIN[1]) + len(VAL[1]))}, ["a", "b", "c"])
    metrics = protocol.test_selected(model, res, fold, protocol.EvalSetup.for_params(cfg, torch.device("cpu")))
    assert metrics["best_epoch"] == 0 and metrics["val/acc"] == pytest.approx(good_acc)

    model = new_model(cfg)
    model.load_state_dict(good)
    res = select(model, scramble(model), False)
    assert res.best_epoch == 1 and res.best_metric == pytest.approx(zero_acc)

    # killed after epoch 1, resumed: the start, selected before the kill, is still the best
    resume = tmp_path / "resume.pt"

    def kill(row: dict[str, float]) -> None:
        raise KeyboardInterrupt

    model = new_model(cfg)
    model.load_state_dict(good)
    with pytest.raises(KeyboardInterrupt):
        select(model, scramble(model), True, resume, on_epoch_end=kill)
    model = new_model(cfg)  # a fresh process: its own (other) weights, replaced by the resume file's
    res = select(model, scramble(model), True, resume)
    assert res.resumed_epochs == 1 and res.best_epoch == 0
    assert_same_state(res.best_state, good)
    assert res.selected_row()["val/acc"] == pytest.approx(good_acc)  # the start's row came back with it

    model = new_model(cfg)  # (b) a fresh network that epoch 1 replaces by the trained one
    assert _val_acc(model) < good_acc

    def load_good(epoch: int) -> dict[str, float]:
        if epoch == 1:
            model.load_state_dict(good)
        return {"train/loss": 1.0, "train/acc": 0.0, "lr": 0.0}

    res = select(model, load_good, True)
    assert res.best_epoch == 1 and res.best_metric == pytest.approx(good_acc)
    assert_same_state(res.best_state, good)
    assert res.selected_row() is res.history[0]
