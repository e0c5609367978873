"""Tests of the deep generative-contrastive network (fer.models.dgcn, fer.methods.dgcn)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import make_fold
from fer.methods.dgcn import (
    DGCN_CURVE_COLUMNS,
    DGCN_METRIC_KEYS,
    REFERENCES,
    build_dgcn,
    load_dgcn,
    reference_targets,
    run_dgcn_fold,
    train_dgcn,
)
from fer.models.dgcn import ContrastiveNet, ReferenceGenerator
from fer.params import DgcnParams, RecognizerParams, build
from fer.training.protocol import FoldOutputs

CLASSES = ["happiness", "surprise", "neutral"]
CFG = build(RecognizerParams, {"arch": "vgg_small", "width": 2, "epochs": 99, "batch_size": 8,
                                "optimizer": "adamw", "lr": 0.003, "amp": False})
DG = DgcnParams(gen_width=2, latent_dim=8, gen_epochs=1, cls_epochs=1, e2e_epochs=1)


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def tiny_data(n_subjects: int = 6, per_class: int = 2, size: int = 16):
    """Gray 16x16 faces: subject-specific brightness + a class-specific blob."""
    rng = np.random.default_rng(0)
    images, labels, subjects = [], [], []
    for s in range(n_subjects):
        base = rng.uniform(60, 160)
        for k in range(len(CLASSES)):
            for _ in range(per_class):
                img = np.full((size, size), base) + rng.normal(0, 8, (size, size))
                if k < 2:
                    img[4 * k + 2 : 4 * k + 6, 4:12] += 80
                images.append(np.clip(img, 0, 255))
                labels.append(k)
                subjects.append(f"S{s}")
    x = np.asarray(images, dtype=np.uint8)[..., None]  # N, H, W, 1
    subj = np.asarray(subjects)
    split = {"train": np.flatnonzero(np.isin(subj, ["S0", "S1", "S2", "S3"])),
             "val": np.flatnonzero(subj == "S4"), "test": np.flatnonzero(subj == "S5")}
    return x, np.asarray(labels), subj, split


def outputs(tmp: Path, name: str = "r", resume: bool = True) -> FoldOutputs:
    return FoldOutputs(model=tmp / f"{name}.pt", metrics=tmp / f"{name}.json", curve=tmp / f"{name}.csv",
                       resume=tmp / f"{name}.resume" if resume else None,
                       log=tmp / f"{name}.jsonl" if resume else None)


def run(tmp: Path, reference: str, dg: DgcnParams = DG, name: str = "r", **kw):
    x, y, s, split = tiny_data()
    fold = make_fold(x, y, split, CLASSES, seed=3, subjects=s)
    return run_dgcn_fold(fold, CFG, dg, outputs(tmp, name), reference=reference, out_dir=tmp / f"{name}_dir", **kw)


# --------------------------------------------------------------------- networks
def test_representation_is_the_embedding_difference() -> None:
    torch.manual_seed(0)
    net = ContrastiveNet("vgg_small", 3, 1, 2, input_size=16, contrast="difference").eval()
    q, r = torch.randn(4, 1, 16, 16), torch.randn(4, 1, 16, 16)
    with torch.no_grad():
        rep = net.representation(q, r)
        e = net.embed(torch.cat([q, r]))
        assert torch.equal(rep, e[:4] - e[4:])
        torch.testing.assert_close(rep, net.embed(q) - net.embed(r), atol=1e-5, rtol=1e-5)
        # the classifier sees exactly that representation
        assert torch.equal(net(q, r), net.fc(rep))
        torch.testing.assert_close(net(q, q), net.fc.bias.expand(4, -1), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="needs a reference"):
        net(q)

    torch.manual_seed(0)
    cat = ContrastiveNet("vgg_small", 3, 1, 2, input_size=16, contrast="concat").eval()
    with torch.no_grad():
        rep = cat.representation(q, r)
        e = cat.embed(torch.cat([q, r]))
    assert rep.shape == (4, 2 * cat.embed_dim) and cat.fc.in_features == 2 * cat.embed_dim
    assert torch.equal(rep, torch.cat([e[:4], e[4:]], 1))

    none = ContrastiveNet("vgg_small", 3, 1, 2, input_size=16, contrast="none").eval()
    with torch.no_grad():
        assert torch.equal(none.representation(q), none.embed(q))
    with pytest.raises(ValueError, match="takes no reference"):
        none(q, r)


def test_generator_output_range_and_shape() -> None:
    g = ReferenceGenerator(1, 2, (32, 16), 8)
    out = g(torch.randn(3, 1, 32, 16))
    assert out.shape == (3, 1, 32, 16) and out.abs().max() <= 1
    with pytest.raises(ValueError, match="multiples of 16"):
        ReferenceGenerator(1, 2, (20, 16))


# ------------------------------------------------------------------- references
def test_reference_targets_same_subject_same_split() -> None:
    classes = ["happiness", "neutral"]
    # value, label, subject; the last two are not in the split passed
    rows = [(10, 1, "A"), (20, 1, "A"), (100, 0, "A"), (50, 1, "B"), (200, 0, "B"),
            (210, 0, "B"), (90, 1, "A"), (7, 1, "C")]
    x = np.stack([np.full((2, 2, 1), v, np.uint8) for v, _, _ in rows])
    y = np.array([r[1] for r in rows])
    s = np.array([r[2] for r in rows])
    idx = np.arange(6)
    ref = reference_targets(x, y, s, idx, classes, "neutral", split_name="train")[:, 0, 0, 0]
    # expressive query: mean of the subject's neutral images; a neutral query: the others
    assert ref.tolist() == [20, 10, 15, 50, 50, 50]
    mean = reference_targets(x, y, s, idx, classes, "subject_mean", split_name="train")
    assert mean[:, 0, 0, 0].tolist() == [43, 43, 43, 153, 153, 153]

    with pytest.raises(ValueError, match="subject 'B' has no neutral image in the train"):
        reference_targets(x, y, s, np.array([0, 4, 5]), classes, "neutral", split_name="train")
    with pytest.raises(ValueError, match="needs a 'neutral' class"):
        reference_targets(x, y, s, idx, ["happiness", "sadness"], "neutral", split_name="train")


def test_missing_neutral_in_training_is_an_error(tmp_path: Path) -> None:
    x, y, s, split = tiny_data()
    y = y.copy()
    y[(s == "S1") & (y == 2)] = 0  # S1 (a training subject) loses its neutral images
    fold = make_fold(x, y, split, CLASSES, subjects=s)
    with pytest.raises(ValueError, match="subject 'S1' has no neutral image in the train"):
        run_dgcn_fold(fold, CFG, DG, outputs(tmp_path, resume=False), reference="generated", out_dir=tmp_path / "d")
    with pytest.raises(ValueError, match="reference must be one of"):
        run_dgcn_fold(fold, CFG, DG, outputs(tmp_path, resume=False), reference="oracle", out_dir=tmp_path / "d")


def test_config_is_strict() -> None:
    assert build(DgcnParams, {"gen_epochs": 3}).gen_epochs == 3
    with pytest.raises(ValueError, match="gen_epochs must be an integer"):  # integers are integers (issue 9)
        build(DgcnParams, {"gen_epochs": 3.0})
    with pytest.raises(ValueError, match="unknown key dgcn.'epochs'"):
        build(DgcnParams, {"epochs": 3}, "dgcn")
    with pytest.raises(ValueError, match="contrast"):
        DgcnParams(contrast="ratio")
    with pytest.raises(ValueError, match="reference_target"):
        DgcnParams(reference_target="mean")


# --------------------------------------------------------------------- one fold
@pytest.mark.parametrize("reference", REFERENCES)
def test_each_row_writes_its_outputs(tmp_path: Path, reference: str) -> None:
    m = run(tmp_path, reference)
    assert tuple(m) == DGCN_METRIC_KEYS
    assert json.loads((tmp_path / "r.json").read_text()) == json.loads(json.dumps(m))
    assert m["reference"] == reference and m["n_test"] == 6
    lines = (tmp_path / "r.csv").read_text().splitlines()
    assert lines[0].split(",") == list(DGCN_CURVE_COLUMNS)
    steps = [int(float(line.split(",")[DGCN_CURVE_COLUMNS.index("step")])) for line in lines[1:]]
    assert steps == ([1, 2, 3] if reference == "generated" else [2, 2])
    # the budget counts the recogniser's epochs only (step 1 trains the generator alone)
    assert m["epochs"] == sum(1 for s in steps if s > 1)
    assert (tmp_path / "r_dir" / "references.png").stat().st_size > 0
    summary = json.loads((tmp_path / "r_dir" / "summary.json").read_text())
    assert summary["reference"] == reference
    assert summary["grid_rows"] == (["query", "generated", "real target"] if reference == "generated"
                                    else ["query", "real target"])
    assert len((tmp_path / "r.jsonl").read_text().splitlines()) == len(steps)
    assert not list(tmp_path.glob("r.resume*")) and not list(tmp_path.glob("r.jsonl.step*"))
    model, meta = load_dgcn(tmp_path / "r.pt")
    assert meta["reference"] == reference and (model.generator is not None) == (reference == "generated")
    assert model(torch.zeros(2, model.input_channels, 16, 16)).shape == (2, 3)
    assert (m["gen/val_l1"] is not None) == (reference == "generated")


def test_same_seed_same_results(tmp_path: Path) -> None:
    a = run(tmp_path, "generated", name="a")
    b = run(tmp_path, "generated", name="b")
    assert a == b
    sa, sb = torch.load(tmp_path / "a.pt"), torch.load(tmp_path / "b.pt")
    assert all(torch.equal(sa["state_dict"][k], sb["state_dict"][k]) for k in sa["state_dict"])


class Killed(RuntimeError):
    pass


@pytest.mark.parametrize("kill_at", [(1, 1), (2, 1), (3, 1)])
def test_resume_after_a_kill_is_exact(tmp_path: Path, kill_at: tuple[int, int]) -> None:
    dg = dataclasses.replace(DG, gen_epochs=2, cls_epochs=2, e2e_epochs=2)
    straight = run(tmp_path, "generated", dg, name="s")

    def kill(step: int, row: dict) -> None:
        if (step, row["epoch"]) == kill_at:
            raise Killed

    with pytest.raises(Killed):
        run(tmp_path, "generated", dg, name="k", on_epoch_end=kill)
    assert list(tmp_path.glob("k.resume.step*"))
    resumed = run(tmp_path, "generated", dg, name="k")
    assert resumed == straight
    sa, sb = torch.load(tmp_path / "s.pt"), torch.load(tmp_path / "k.pt")
    assert all(torch.equal(sa["state_dict"][k], sb["state_dict"][k]) for k in sa["state_dict"])
    assert (tmp_path / "s.csv").read_text() == (tmp_path / "k.csv").read_text()


def test_generator_is_frozen_in_step2_and_trained_in_step3() -> None:
    x, y, s, split = tiny_data()
    tr, va = split["train"], split["val"]
    ref_tr = reference_targets(x, y, s, tr, CLASSES, "neutral", split_name="train")
    torch.manual_seed(0)
    model = build_dgcn(CFG, DG, "generated", 3, (16, 16, 1))
    gen = model.generator
    assert gen is not None
    seen: dict[int, tuple[bool, list[torch.Tensor]]] = {}

    def probe(step: int, row: dict) -> None:
        grads = [p.grad is not None for p in gen.parameters()]
        seen[step] = (any(grads), [p.detach().clone() for p in gen.parameters()])

    train_dgcn(model, (np.concatenate([x[tr], ref_tr], 3), y[tr]), (x[va], y[va]), None, CFG, DG,
               num_classes=3, device=torch.device("cpu"), seed=0, resume_path=None, log_path=None,
               on_epoch_end=probe)
    assert seen[1][0] and not seen[2][0] and seen[3][0]
    assert all(torch.equal(a, b) for a, b in zip(seen[1][1], seen[2][1]))  # step 2: unchanged
    assert not all(torch.equal(a, b) for a, b in zip(seen[2][1], seen[3][1]))  # step 3: trained
