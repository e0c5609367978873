"""FESGAN networks, losses and pre-training loop (fer.models.fesgan, fer.methods.fesgan),
on tiny structured data: 32x32 gray faces-to-be whose "expression" is a bright bar at a
class-dependent height and whose "identity" is a per-subject blob and brightness."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

from fer.losses.fesgan import discriminator_loss, r1_penalty
from fer.methods.fesgan import (
    LOSS_TERMS,
    load_fesgan,
    load_fesgan_discriminator,
    make_fake_batch,
    sample_grid,
    sample_prior,
    train_fesgan,
)
from fer.models.fesgan import (
    Editor,
    Encoder,
    Generator,
    ImageDiscriminator,
    LatentDiscriminator,
    Synthesizer,
    one_hot,
)
from fer.params import FesganParams, build

K = 3
SIZE = 32
CPU = torch.device("cpu")


# ----------------------------------------------------------------------------- data
def structured_data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (n, 32, 32, 1): noise + identity blob + expression bar; labels (n,)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, K, n)
    x = rng.normal(60, 10, (n, SIZE, SIZE)).clip(0, 255)
    for i in range(n):
        ident = i % 4
        cy, cx = 8 + 4 * ident, 10 + 3 * ident
        x[i, cy - 3 : cy + 3, cx - 3 : cx + 3] += 80 + 20 * ident
        row = 18 + 4 * int(y[i])
        x[i, row : row + 3, 4:28] += 120
    return x.clip(0, 255).astype(np.uint8)[..., None], y


X, Y = structured_data(24, 0)


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Any:
    """These networks are tiny: one thread is as fast as two and immune to the
    oversubscription slow-down when other jobs share the cores (restored afterwards)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def tiny_cfg(**kw: Any) -> FesganParams:
    base: dict[str, Any] = {"z_dim": 8, "width": 8, "iterations": 6, "batch_size": 8,
                            "grid_every": 3, "r1_every": 2, "w_proto": 1.0, "diffaugment": True}
    base.update(kw)
    return build(FesganParams, base)


class TinyIdentity(nn.Module):
    """A stand-in identity network: images in [-1, 1] -> (N, 16) features."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(123)
        self.net = nn.Sequential(nn.Conv2d(1, 8, 4, 2, 1), nn.ReLU(), nn.Conv2d(8, 16, 4, 2, 1),
                                 nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def run(tmp: Path, cfg: FesganParams | None = None, *, seed: int = 0, identity: bool = True,
        resume: Path | None = None, **kw: Any) -> dict[str, Any]:
    return train_fesgan(
        X, Y, K, cfg or tiny_cfg(), identity_net=TinyIdentity() if identity else None,
        device=CPU, seed=seed, out_model=tmp / "model.pt", grid_dir=tmp / "grids",
        resume_path=resume, log_path=tmp / "log.jsonl", log_every=2, **kw,
    )


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def log_rows(path: Path) -> list[dict[str, float]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """One uninterrupted tiny run (seed 0, identity network on), shared by several tests."""
    tmp = tmp_path_factory.mktemp("reference")
    return tmp, run(tmp, resume=tmp / "resume.pt", resume_every=2)


# --------------------------------------------------------------------------- networks
@pytest.mark.parametrize("size", [32, 64])
@pytest.mark.parametrize("channels", [1, 3])
def test_network_shapes_and_ranges(size: int, channels: int) -> None:
    torch.manual_seed(0)
    n, z_dim = 5, 16
    enc = Encoder(channels, size, z_dim=z_dim, width=8)
    gen = Generator(z_dim, K, channels, size, width=8)
    disc = ImageDiscriminator(channels, size, K, width=8)
    ldisc = LatentDiscriminator(z_dim, hidden=32)
    x = torch.rand(n, channels, size, size) * 2 - 1
    with torch.no_grad():
        z = enc(x)
        img = gen(z, one_hot(torch.tensor([0, 1, 2, 0, 1]), K))
        adv, cls = disc(img)
        assert ldisc(z).shape == (n,)
    assert z.shape == (n, z_dim) and float(z.abs().max()) < 1
    assert img.shape == (n, channels, size, size)
    assert float(img.min()) >= -1 and float(img.max()) <= 1
    assert adv.shape == (n,) and cls.shape == (n, K)


def test_bad_geometry_is_rejected() -> None:
    with pytest.raises(ValueError):
        Generator(8, K, 1, 40)
    with pytest.raises(ValueError):
        Encoder(2, 32)


def expression_effect(gen: nn.Module, z_dim: int) -> float:
    """Mean |G(z, e_a) - G(z, e_b)| over pairs of different expressions, same z."""
    z = sample_prior(4, z_dim, torch.Generator().manual_seed(0), CPU)
    with torch.no_grad():
        outs = [gen(z, one_hot(torch.full((4,), k), K)) for k in range(K)]
    return float(np.mean([(outs[a] - outs[b]).abs().mean() for a in range(K) for b in range(a)]))


def test_untrained_generator_depends_on_expression() -> None:
    torch.manual_seed(0)
    gen = Generator(8, K, 1, SIZE, width=8)
    assert expression_effect(gen, 8) > 1e-3


def test_trained_generator_depends_on_expression(reference: tuple[Path, dict]) -> None:
    tmp, _ = reference
    synth, meta = load_fesgan(tmp / "model.pt", CPU)
    assert meta["reexpress"] == "edit" and synth.editor is not None
    assert expression_effect(synth, meta["z_dim"]) > 1e-3
    # and re-expressing a real face changes it too
    x = torch.from_numpy(X[:4]).permute(0, 3, 1, 2).float() / 127.5 - 1
    y = one_hot(torch.from_numpy(Y[:4]), K)
    with torch.no_grad():
        a = synth.reexpress(x, one_hot(torch.zeros(4), K), y)
        b = synth.reexpress(x, one_hot(torch.full((4,), 2), K), y)
    assert float((a - b).abs().mean()) > 1e-5  # the editor starts as the identity: 6 steps move it a little


def test_editor_starts_as_the_identity_and_code_mode_decodes() -> None:
    """The editor's residual starts at exactly zero; without an editor a real face is
    redrawn from its identity code (the paper's reading, ``reexpress: code``)."""
    torch.manual_seed(0)
    editor = Editor(1, SIZE, K, 8)
    x = torch.rand(3, 1, SIZE, SIZE) * 2 - 1
    e, y = one_hot(torch.tensor([0, 1, 2]), K), one_hot(torch.tensor([2, 2, 0]), K)
    with torch.no_grad():
        assert torch.equal(editor(x, e, y), x)
    gen, enc = Generator(8, K, 1, SIZE, 8), Encoder(1, SIZE, 8, 8)
    with torch.no_grad():
        assert torch.equal(Synthesizer(gen, enc).reexpress(x, e, y), gen(enc(x), e))
        assert torch.equal(Synthesizer(gen, enc, editor).reexpress(x, e, y), editor(x, e, y))


def test_editor_offsets_add_the_class_change_and_prior_faces_start_at_the_mean_expression(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The editor's class offsets add offsets[target] - offsets[source] (nothing when the
    expression does not change); a prior identity is rendered at the mean expression and
    edited from it; train_fesgan starts the offsets (editor and its EMA copy) at
    proto_scale x the expression prototypes of the training images it is given."""
    torch.manual_seed(0)
    editor = Editor(1, SIZE, K, 8)
    offsets = torch.randn(K, 1, SIZE, SIZE)
    editor.init_offsets(offsets)
    x = torch.rand(3, 1, SIZE, SIZE) * 2 - 1
    t, s = torch.tensor([0, 1, 2]), torch.tensor([2, 2, 0])
    with torch.no_grad():
        out = editor(x, one_hot(t, K), one_hot(s, K))
        assert torch.allclose(out, x + offsets[t] - offsets[s], atol=1e-5)
        assert torch.equal(editor(x, one_hot(t, K), one_hot(t, K)), x)
    with pytest.raises(ValueError, match="offsets of shape"):
        editor.init_offsets(torch.zeros(K, 1, 4, 4))

    gen, enc = Generator(8, K, 1, SIZE, 8), Encoder(1, SIZE, 8, 8)
    seen: list[torch.Tensor] = []
    gen.register_forward_hook(lambda m, inp, out: seen.append(inp[1]))
    z = torch.rand(3, 8) * 2 - 1
    with torch.no_grad():
        faces = Synthesizer(gen, enc, editor)(z, one_hot(t, K))
        assert torch.equal(seen[-1], torch.full((3, K), 1.0 / K))
        assert torch.allclose(faces, gen(z, seen[-1]) + offsets[t] - offsets.mean(0), atol=1e-5)

    from fer.training.prototypes import expression_prototypes

    starts: list[torch.Tensor] = []
    original = Editor.init_offsets
    monkeypatch.setattr(Editor, "init_offsets", lambda self, o: (starts.append(o.clone()), original(self, o))[1])
    run(tmp_path, tiny_cfg(iterations=2, d_warmup=1, grid_every=0, proto_scale=2.0))
    expected = 2.0 * expression_prototypes(X, Y, K)
    assert len(starts) == 2 and all(torch.allclose(o, expected) for o in starts)


# ------------------------------------------------------------------------- fake batch
class LabelPainter(nn.Module):
    """Stub generator: paints the expression it is asked for (argmax of the one-hot) and
    the first code entry into the image, so labels can be read back from pixels."""

    z_dim = 4

    def forward(self, z: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        img = torch.zeros(z.shape[0], 1, 32, 32)
        img[:, 0, 0, 0] = e.argmax(1).float()
        img[:, 0, 0, 1] = z[:, 0]
        return img


def test_fake_labels_equal_generated_expressions() -> None:
    rng = torch.Generator().manual_seed(0)
    codes = torch.full((10, 4), 5.0)  # recognisable: outside the prior's (-1, 1)
    src = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 0])
    fb = make_fake_batch(LabelPainter(), codes, src, K, 30, rng)
    painted = fb.images[:, 0, 0, 0].long()
    assert torch.equal(fb.labels, painted)  # every fake, prior ones included
    assert fb.images.shape[0] == fb.labels.shape[0] == 40
    prior = fb.from_prior
    assert not prior[:10].any() and prior[10:].all() and fb.n_real == 10
    assert torch.all(fb.images[:10, 0, 0, 1] == 5.0)  # real identities first
    assert fb.images[10:, 0, 0, 1].abs().max() < 1  # prior codes in (-1, 1)
    assert torch.all(fb.labels[:10] != src)  # re-expression targets another class
    assert set(fb.labels[10:].tolist()) == set(range(K))


def test_fake_labels_with_real_generator() -> None:
    torch.manual_seed(0)
    gen = Generator(8, K, 1, SIZE, width=8)
    seen: list[torch.Tensor] = []
    gen.register_forward_hook(lambda m, inp, out: seen.append(inp[1].argmax(1)))
    fb = make_fake_batch(gen, torch.zeros(3, 8), torch.tensor([0, 1, 2]), K, 5,
                         torch.Generator().manual_seed(1))
    assert torch.equal(seen[-1], fb.labels)


# ------------------------------------------------------------------------------ losses
def test_r1_is_on_real_images_and_positive() -> None:
    torch.manual_seed(0)
    disc = ImageDiscriminator(1, SIZE, K, width=8)
    real = torch.rand(6, 1, SIZE, SIZE) * 2 - 1
    fake = torch.rand(6, 1, SIZE, SIZE) * 2 - 1
    pen, _, _ = r1_penalty(disc, real)
    x = real.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(disc(x)[0].sum(), x)
    assert float(pen.detach()) > 0
    assert torch.allclose(pen, g.square().sum((1, 2, 3)).mean())
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    total, terms = discriminator_loss(disc, real, y, fake, w_cls=1.0, r1_weight=2.0)
    assert torch.allclose(terms["D/r1"], pen)
    assert not torch.allclose(terms["D/r1"], r1_penalty(disc, fake)[0])
    # the penalty reaches D's parameters (create_graph) and is added with its weight
    assert torch.allclose(total, terms["D/adv"] + terms["D/cls"] + 2.0 * pen)
    total.backward()
    assert all(p.grad is not None for p in disc.parameters())
    _, terms0 = discriminator_loss(disc, real, y, fake, w_cls=1.0, r1_weight=0.0)
    assert "D/r1" not in terms0


# ----------------------------------------------------------------------- training loop
def test_short_run_logs_every_term_and_saves(reference: tuple[Path, dict]) -> None:
    tmp, res = reference
    assert res["identity_term"] == "on" and res["iterations"] == 6
    assert res["resumed_iterations"] == 0
    for name in LOSS_TERMS:
        assert np.isfinite(res[name]), name
    rows = log_rows(tmp / "log.jsonl")
    assert [r["iter"] for r in rows] == [2, 4, 6]
    for r in rows:
        for name in LOSS_TERMS:
            assert name in r and np.isfinite(r[name]), (r["iter"], name)
    assert not (tmp / "resume.pt").exists()  # cleared once the weights are written
    # checkpoint: safe load, prefixes, meta
    obj = torch.load(tmp / "model.pt", map_location="cpu", weights_only=True)
    meta = obj["meta"]
    assert {k.split(".")[0] for k in obj["state_dict"]} == {"generator", "encoder", "discriminator", "editor"}
    assert (meta["z_dim"], meta["width"], meta["size"], meta["channels"], meta["num_classes"],
            meta["iterations"], meta["seed"]) == (8, 8, SIZE, 1, K, 6, 0)
    synth, meta2 = load_fesgan(tmp / "model.pt")
    assert meta2 == meta and not synth.training and not synth.editor.training
    disc = load_fesgan_discriminator(tmp / "model.pt")
    assert disc(torch.zeros(2, 1, SIZE, SIZE))[1].shape == (2, K)
    # grids
    names = sorted(p.name for p in (tmp / "grids").iterdir())
    assert names == ["final_prior.png", "final_real.png", "iter-000003.png", "iter-000006.png"]
    full = np.asarray(Image.open(tmp / "grids" / "iter-000006.png"))
    assert full.shape == (12 * (SIZE + 2) + 2, (K + 1) * (SIZE + 2) + 2)
    real = np.asarray(Image.open(tmp / "grids" / "final_real.png"))
    assert real.shape == (6 * (SIZE + 2) + 2, (K + 1) * (SIZE + 2) + 2)
    assert np.array_equal(real[2 : 2 + SIZE, 2 : 2 + SIZE], X[0, ..., 0])  # the real input


def test_sample_grid_shape_and_dtype(reference: tuple[Path, dict]) -> None:
    tmp, _ = reference
    synth, meta = load_fesgan(tmp / "model.pt")
    z = sample_prior(2, meta["z_dim"], torch.Generator().manual_seed(0), CPU)
    grid = sample_grid(synth, X[:3], Y[:3], K, z, CPU)
    assert grid.dtype == np.uint8
    assert grid.shape == (5 * (SIZE + 2) + 2, (K + 1) * (SIZE + 2) + 2, 1)
    assert grid[2 : 2 + SIZE, 2 : 2 + SIZE, 0].tolist() == X[0, ..., 0].tolist()
    rgb = sample_grid(Synthesizer(Generator(4, K, 3, SIZE, 8), Encoder(3, SIZE, 4, 8)),
                      np.zeros((1, SIZE, SIZE, 3), np.uint8), np.zeros(1, np.int64), K, None, CPU)
    assert rgb.shape == (SIZE + 4, (K + 1) * (SIZE + 2) + 2, 3)


def test_same_seed_same_weights(reference: tuple[Path, dict], tmp_path: Path) -> None:
    ref_dir, _ = reference
    run(tmp_path / "a")
    assert_same(weights(ref_dir / "model.pt"), weights(tmp_path / "a" / "model.pt"))
    run(tmp_path / "b", seed=1)
    other = weights(tmp_path / "b" / "model.pt")
    assert any(not torch.equal(v, other[k]) for k, v in weights(ref_dir / "model.pt").items())


class Killed(RuntimeError):
    pass


@pytest.mark.parametrize("every", [2, 3])  # 3: the resume point falls inside a log window
def test_resume_equals_uninterrupted(
    reference: tuple[Path, dict], tmp_path: Path, every: int
) -> None:
    ref_dir, ref = reference
    resume = tmp_path / "resume.pt"

    def kill_at_5(it: int) -> None:
        if it == 5:
            raise Killed

    with pytest.raises(Killed):
        run(tmp_path, resume=resume, resume_every=every, on_iteration=kill_at_5)
    assert resume.exists()
    res = run(tmp_path, resume=resume, resume_every=every)
    assert res["resumed_iterations"] == 5 // every * every
    assert_same(weights(ref_dir / "model.pt"), weights(tmp_path / "model.pt"))
    strip = lambda rows: [{k: v for k, v in r.items() if k != "sec_per_iter"} for r in rows]  # noqa: E731
    assert strip(log_rows(tmp_path / "log.jsonl")) == strip(log_rows(ref_dir / "log.jsonl"))
    assert all(res[k] == ref[k] for k in LOSS_TERMS)


def test_resume_file_of_another_run_is_ignored(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    resume = tmp_path / "resume.pt"
    with pytest.raises(Killed):
        run(tmp_path, tiny_cfg(iterations=3), resume=resume, resume_every=1,
            on_iteration=lambda it: (_ for _ in ()).throw(Killed()) if it == 2 else None)
    with caplog.at_level(logging.WARNING):
        res = run(tmp_path, tiny_cfg(iterations=3, w_rec=5.0), resume=resume, resume_every=1)
    assert res["resumed_iterations"] == 0
    assert "does not match" in caplog.text


def test_without_identity_network(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        res = run(tmp_path, tiny_cfg(iterations=2, grid_every=0), identity=False)
    assert res["identity_term"] == "off" and "G/id" not in res
    assert "identity term" in caplog.text
    rows = log_rows(tmp_path / "log.jsonl")
    assert rows and all("G/id" not in r and np.isfinite(r["G/rec"]) for r in rows)
    assert load_fesgan(tmp_path / "model.pt")[1]["identity_term"] == "off"


def test_discriminator_warm_up_trains_only_its_expression_head(tmp_path: Path) -> None:
    """During d_warmup only D's expression head learns, on real images: the generator,
    encoder and editor keep their initial weights and only D/cls is logged."""
    cfg = tiny_cfg(iterations=4, d_warmup=3, grid_every=0)
    torch.manual_seed(0)
    res = run(tmp_path, cfg)
    rows = log_rows(tmp_path / "log.jsonl")
    assert set(rows[0]) == {"iter", "D/cls", "sec_per_iter"}  # iterations 1-2: warm-up only
    assert "G/adv" in res and "D/cls" in res


# ------------------------------------------------------------- unlabelled in-domain faces
def test_unlabelled_faces_change_nothing_when_absent_empty_or_off(reference: tuple[Path, dict], tmp_path: Path) -> None:
    """Full labels (no unlabelled faces), an empty unlabelled part, or unlabelled_ratio 0:
    the same weights as a run that never heard of unlabelled faces (the full-label jobs
    keep their bytes when budgets are added)."""
    ref_dir, _ = reference
    x_unl, _ = structured_data(10, 7)
    for name, cfg, x in (("empty", tiny_cfg(), X[:0]), ("off", tiny_cfg(unlabelled_ratio=0.0), x_unl)):
        res = run(tmp_path / name, cfg, unlabelled=x)
        assert res["n_unlabelled"] == 0 and res["unlabelled_per_iteration"] == 0
        assert_same(weights(ref_dir / "model.pt"), weights(tmp_path / name / "model.pt"))


def test_unlabelled_faces_reach_only_the_label_free_terms(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """After the warm-up, D's real/fake head (and R1) and the latent terms see B labelled +
    round(ratio x B) unlabelled faces; D's expression head and the reconstruction see the B
    labelled ones with their labels only (no label of an unlabelled face exists to pass);
    the run differs from one without them, is seeded, and says how many it used."""
    import fer.methods.fesgan as fm

    x_unl, _ = structured_data(10, 7)
    seen: dict[str, list[tuple[int, ...]]] = {"d_real": [], "d_labels": [], "dz_codes": [], "g_codes": [], "g_real": []}
    d_loss, dz_loss, g_loss = fm.discriminator_loss, fm.latent_discriminator_loss, fm.generator_loss

    def d_spy(disc, x_real, y_real, *a, **k):
        seen["d_real"].append(tuple(x_real.shape))
        seen["d_labels"].append(tuple(y_real.shape))
        return d_loss(disc, x_real, y_real, *a, **k)

    def dz_spy(ld, z, codes):
        seen["dz_codes"].append(tuple(codes.shape))
        return dz_loss(ld, z, codes)

    def g_spy(disc, ld, x_real, codes, x_rec, *a, **k):
        seen["g_real"].append(tuple(x_real.shape))
        seen["g_codes"].append(tuple(codes.shape))
        assert x_rec.shape == x_real.shape
        return g_loss(disc, ld, x_real, codes, x_rec, *a, **k)

    monkeypatch.setattr(fm, "discriminator_loss", d_spy)
    monkeypatch.setattr(fm, "latent_discriminator_loss", dz_spy)
    monkeypatch.setattr(fm, "generator_loss", g_spy)
    cfg = tiny_cfg(iterations=4, d_warmup=1, grid_every=0, unlabelled_ratio=0.5)
    res = run(tmp_path / "a", cfg, unlabelled=x_unl)
    assert res["n_unlabelled"] == 10 and res["unlabelled_per_iteration"] == 4  # round(0.5 x 8)
    assert seen["d_real"] == [(12, 1, SIZE, SIZE)] * 3 and seen["d_labels"] == [(8,)] * 3
    assert seen["dz_codes"] == [(12, cfg.z_dim)] * 3 and seen["g_codes"] == [(12, cfg.z_dim)] * 3
    assert seen["g_real"] == [(8, 1, SIZE, SIZE)] * 3
    assert load_fesgan(tmp_path / "a" / "model.pt")[1]["n_unlabelled"] == 10
    monkeypatch.undo()
    run(tmp_path / "b", cfg, unlabelled=x_unl)
    run(tmp_path / "c", cfg)
    assert_same(weights(tmp_path / "a" / "model.pt"), weights(tmp_path / "b" / "model.pt"))
    with_unl, without = weights(tmp_path / "a" / "model.pt"), weights(tmp_path / "c" / "model.pt")
    assert any(not torch.equal(v, without[k]) for k, v in with_unl.items())


def test_unlabelled_faces_resume_like_an_uninterrupted_run(tmp_path: Path) -> None:
    x_unl, _ = structured_data(10, 7)
    cfg = tiny_cfg(iterations=5, d_warmup=1, grid_every=0)
    run(tmp_path / "ref", cfg, unlabelled=x_unl)
    resume = tmp_path / "resume.pt"
    with pytest.raises(Killed):
        run(tmp_path / "cut", cfg, unlabelled=x_unl, resume=resume, resume_every=2,
            on_iteration=lambda it: (_ for _ in ()).throw(Killed()) if it == 3 else None)
    res = run(tmp_path / "cut", cfg, unlabelled=x_unl, resume=resume, resume_every=2)
    assert res["resumed_iterations"] == 2
    assert_same(weights(tmp_path / "ref" / "model.pt"), weights(tmp_path / "cut" / "model.pt"))


def test_unlabelled_faces_of_another_geometry_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unlabelled images must be uint8"):
        run(tmp_path, tiny_cfg(iterations=2), unlabelled=np.zeros((3, 16, 16, 1), np.uint8))


def test_discriminator_expression_head_uses_the_labelled_images_only() -> None:
    """discriminator_loss with N labels for N + U real images: D/cls is the cross-entropy
    of the first N; D/adv covers all N + U real images."""
    torch.manual_seed(0)
    disc = ImageDiscriminator(1, SIZE, K, 8)
    x = torch.rand(6, 1, SIZE, SIZE) * 2 - 1
    y = torch.tensor([0, 1, 2, 0])
    fake = torch.rand(3, 1, SIZE, SIZE) * 2 - 1
    _, terms = discriminator_loss(disc, x, y, fake, w_cls=1.0, r1_weight=0.0)
    with torch.no_grad():
        adv_r, cls_r = disc(x)
        adv_f, _ = disc(fake)
    expect_cls = torch.nn.functional.cross_entropy(cls_r[:4], y)
    expect_adv = torch.nn.functional.softplus(-adv_r).mean() + torch.nn.functional.softplus(adv_f).mean()
    assert torch.allclose(terms["D/cls"], expect_cls) and torch.allclose(terms["D/adv"], expect_adv)
    with pytest.raises(ValueError, match="7 labels for 6 real images"):
        discriminator_loss(disc, x, torch.zeros(7, dtype=torch.long), fake, w_cls=1.0, r1_weight=0.0)


def test_identity_network_state_is_restored(tmp_path: Path) -> None:
    idn = TinyIdentity().train()
    train_fesgan(X, Y, K, tiny_cfg(iterations=1, grid_every=0), identity_net=idn, device=CPU,
                 seed=0, out_model=tmp_path / "m.pt", grid_dir=None, resume_path=None,
                 log_path=None)
    assert idn.training and all(p.requires_grad for p in idn.parameters())
    assert all(p.grad is None for p in idn.parameters())  # never received gradients


def test_config_from_mapping() -> None:
    cfg = build(FesganParams, {"iterations": 10, "lr": 1, "hflip": False})
    assert cfg.iterations == 10 and isinstance(cfg.lr, float) and not cfg.hflip
    with pytest.raises(ValueError, match="iterations must be an integer"):  # integers are integers (issue 9)
        build(FesganParams, {"iterations": 10.0})
    with pytest.raises(ValueError, match="w_idd"):
        build(FesganParams, {"w_idd": 1.0})
    with pytest.raises(ValueError):
        build(FesganParams, {"ema_decay": 1.0})
    with pytest.raises(ValueError):
        build(FesganParams, {"hflip": 1})


def test_bad_inputs_are_rejected(tmp_path: Path) -> None:
    kw = dict(identity_net=None, device=CPU, seed=0, out_model=tmp_path / "m.pt",
              grid_dir=None, resume_path=None, log_path=None)
    with pytest.raises(ValueError):
        train_fesgan(X[:, :30, :30], Y, K, tiny_cfg(), **kw)  # not a multiple of 16
    with pytest.raises(ValueError):
        train_fesgan(X, Y + K, K, tiny_cfg(), **kw)  # labels out of range
    with pytest.raises(ValueError):
        train_fesgan(X.astype(np.float32), Y, K, tiny_cfg(), **kw)


def test_mixed_precision_path_runs_on_cpu_bf16() -> None:
    """The CUDA code path (autocast + channels_last) exercised with CPU bf16 autocast:
    dtypes mix correctly (codes, prior codes, one-hots, fp32 R1) and terms are finite."""
    from fer.methods.fesgan import _Models, _train_step
    from fer.training.rng import derived_generator as _derived_generator
    from fer.utils.precision import Precision

    cfg = tiny_cfg(r1_every=1)
    prec = Precision("cpu", torch.bfloat16, channels_last=True)
    torch.manual_seed(0)
    models = _Models(cfg, 1, SIZE, K, CPU, prec)
    x = prec.prep(torch.from_numpy(X[:8]).permute(0, 3, 1, 2).float() / 127.5 - 1)
    y = torch.from_numpy(Y[:8])
    from fer.training.prototypes import expression_prototypes

    protos = expression_prototypes(X, Y, K)
    terms = _train_step(models, x, y, 1, _derived_generator(0, 0, 1), cfg, prec,
                        TinyIdentity().requires_grad_(False), K, protos)
    assert set(terms) == set(LOSS_TERMS)
    assert all(torch.isfinite(v) for v in terms.values())


@pytest.mark.gpu
def test_cuda_run(tmp_path: Path) -> None:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    res = train_fesgan(X, Y, K, tiny_cfg(iterations=3), identity_net=TinyIdentity(),
                       device=torch.device("cuda"), seed=0, out_model=tmp_path / "m.pt",
                       grid_dir=tmp_path / "grids", resume_path=tmp_path / "r.pt",
                       log_path=tmp_path / "log.jsonl", resume_every=1, log_every=1)
    assert all(np.isfinite(res[k]) for k in LOSS_TERMS)
    synth, _ = load_fesgan(tmp_path / "m.pt", "cuda")
    assert next(synth.parameters()).is_cuda


def test_report_note_names_the_reexpression_and_the_projects_terms() -> None:
    from fer.report.sections import fesgan_departures

    base = {"iterations": 50, "d_warmup": 10}
    edit = fesgan_departures(build(FesganParams, {**base, "reexpress": "edit", "w_proto": 2.0, "w_cycle": 0.0,
                                                  "diffaugment": True}))
    assert "fesgan.reexpress: edit" in edit and "w_proto 2" in edit and "10 warm-up iterations" in edit
    assert "DiffAugment" in edit and "cycle" not in edit and "50 iterations" in edit
    code = fesgan_departures(build(FesganParams, {**base, "reexpress": "code"}))
    assert code.startswith("The paper's reading (fesgan.reexpress: code)") and "50 iterations" in code
