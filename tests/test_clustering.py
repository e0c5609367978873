"""Tests of fer.clustering: FAISS k-means, guided pseudo-labels, quality, embedding, maps."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from fer.clustering.guided import (
    PseudoLabels,
    guided_pseudo_labels,
    read_pseudo_labels,
    select_pseudo_labels,
    write_pseudo_labels,
)
from fer.clustering.kmeans import assign_batched, faiss_kmeans
from fer.clustering.quality import pseudo_label_quality, purity, read_corpus_truth
from fer.params import ClusteringParams, build


def blobs(n_per: int, k: int, d: int, seed: int, spread: float = 10.0) -> tuple[np.ndarray, np.ndarray]:
    """Well separated Gaussian blobs (float32) and their planted labels."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, spread, size=(k, d))
    y = np.repeat(np.arange(k), n_per)
    x = centres[y] + rng.normal(size=(k * n_per, d))
    perm = rng.permutation(len(y))
    return x[perm].astype(np.float32), y[perm]


# ---------------------------------------------------------------------------- k-means
def test_kmeans_recovers_blobs_and_is_reproducible():
    x, y = blobs(200, 5, 8, seed=0)
    res = faiss_kmeans(x, 5, niter=20, seed=3, threads=1, use_gpu="never", init_method="kmeans++")
    assert adjusted_rand_score(y, res.labels) > 0.99
    assert normalized_mutual_info_score(y, res.labels) > 0.99
    assert res.centroids.shape == (5, 8) and res.centroids.dtype == np.float32
    assert res.labels.dtype == np.int64 and res.distances.dtype == np.float32
    # each point is ~ N(centre, I): the objective is ~ N * d
    assert res.objective < 1.2 * len(x) * 8
    assert not res.subsampled and res.n_train == len(x) and not res.used_gpu
    again = faiss_kmeans(x, 5, niter=20, seed=3, threads=1, use_gpu="never", init_method="kmeans++")
    np.testing.assert_array_equal(res.centroids, again.centroids)
    np.testing.assert_array_equal(res.labels, again.labels)


def test_kmeans_objective_does_not_increase_with_iterations():
    x, _ = blobs(100, 6, 4, seed=1, spread=2.0)  # overlapping: Lloyd has work to do
    objs = [faiss_kmeans(x, 6, niter=it, seed=0, threads=1, use_gpu="never").objective for it in (1, 3, 20)]
    assert objs[0] >= objs[1] >= objs[2]
    assert objs[0] > objs[2]  # the iterations did something


def test_kmeans_subsampling_is_announced(caplog):
    x, y = blobs(300, 4, 6, seed=2)
    with caplog.at_level(logging.WARNING, logger="fer.clustering.kmeans"):
        res = faiss_kmeans(x, 4, max_points_per_centroid=50, seed=0, threads=1, use_gpu="never", init_method="kmeans++")
    assert res.subsampled and res.n_train == 200
    assert any("subsample: 200 of 1200" in r.getMessage() for r in caplog.records)
    assert len(res.labels) == 1200 and adjusted_rand_score(y, res.labels) > 0.99
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="fer.clustering.kmeans"):
        full = faiss_kmeans(x, 4, max_points_per_centroid=300, seed=0, threads=1, use_gpu="never")
    assert not full.subsampled and not caplog.records


def test_kmeans_memmap_equals_in_memory(tmp_path):
    x, _ = blobs(150, 4, 6, seed=3)
    np.save(tmp_path / "x.npy", x)
    xm = np.load(tmp_path / "x.npy", mmap_mode="r")
    kw = dict(niter=10, seed=1, threads=1, use_gpu="never", max_points_per_centroid=100, batch_size=64)
    a, b = faiss_kmeans(x, 4, **kw), faiss_kmeans(xm, 4, **kw)
    assert a.subsampled and b.subsampled  # 600 > 4 * 100
    np.testing.assert_array_equal(a.centroids, b.centroids)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.distances, b.distances)
    assert a.objective == b.objective


def test_assign_batched_equals_brute_force():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(333, 7)).astype(np.float32)
    c = rng.normal(size=(9, 7)).astype(np.float32)
    labels, dist = assign_batched(x, c, batch_size=50, use_gpu="never")
    d2 = ((x[:, None, :].astype(np.float64) - c[None].astype(np.float64)) ** 2).sum(-1)  # N, k
    np.testing.assert_array_equal(labels, d2.argmin(1))
    np.testing.assert_allclose(dist, d2.min(1), rtol=1e-4, atol=1e-4)
    # normalised assignment equals the brute force on normalised rows
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    ln, _ = assign_batched(x, c, batch_size=64, use_gpu="never", normalize=True)
    np.testing.assert_array_equal(ln, ((xn[:, None] - c[None]) ** 2).sum(-1).argmin(1))


def test_kmeans_input_validation():
    x, _ = blobs(10, 2, 3, seed=5)
    with pytest.raises(ValueError, match="k=30"):
        faiss_kmeans(x, 30, use_gpu="never")
    bad = x.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        faiss_kmeans(bad, 2, use_gpu="never")
    with pytest.raises(ValueError, match="2-D"):
        faiss_kmeans(x[:, 0], 2, use_gpu="never")
    with pytest.raises(ValueError, match="init_centroids"):
        faiss_kmeans(x, 2, init_centroids=np.zeros((3, 3), np.float32), use_gpu="never")
    with pytest.raises(ValueError, match="use_gpu"):
        faiss_kmeans(x, 2, use_gpu="sometimes")
    import faiss

    if faiss.get_num_gpus() == 0:
        with pytest.raises(ValueError, match="no GPU"):
            faiss_kmeans(x, 2, use_gpu="always")
    with pytest.raises(ValueError, match="threads"):
        faiss_kmeans(x, 2, threads=0, use_gpu="never")


# -------------------------------------------------------------------------- selection
def test_select_keeps_most_confident_fraction_per_class():
    label = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 2, 2])
    conf = np.array([0.1, 0.9, 0.5, 0.7, 0.2, 0.8, 0.3, 0.6, 0.4, 0.95, 0.5, 0.5], dtype=np.float32)
    kept = select_pseudo_labels(label, conf, 4, keep_fraction=0.5, balance=False)
    # class 0: 2 of 4 (0.9, 0.7); class 1: 3 of 6 (0.95, 0.8, 0.6); class 2: 1 of 2 (tie -> lower index)
    assert sorted(np.flatnonzero(kept)) == [1, 3, 5, 7, 9, 10]
    bal = select_pseudo_labels(label, conf, 4, keep_fraction=0.5, balance=True)
    # capped at the smallest non-zero count (1); class 3 is empty and does not zero the others
    assert sorted(np.flatnonzero(bal)) == [1, 9, 10]
    assert select_pseudo_labels(label, conf, 4, 1.0, False).all()
    with pytest.raises(ValueError, match="keep_fraction"):
        select_pseudo_labels(label, conf, 4, 0.0, False)
    with pytest.raises(ValueError, match="label values"):
        select_pseudo_labels(label, conf, 2, 0.5, False)


# ---------------------------------------------------------------------------- guided
@pytest.mark.parametrize(
    "kw",
    [
        dict(guidance="anchored", anchor_weight=0.0),
        dict(guidance="anchored", anchor_weight=0.75),
        dict(guidance="overcluster", clusters_per_class=3, neighbours=5),
    ],
)
def test_guided_pseudo_labels_match_planted_classes(kw, caplog):
    x, y = blobs(130, 4, 10, seed=6)
    corpus, cy = x[:400], y[:400]
    train, ty = x[400:], y[400:]  # labelled points drawn from the same blobs
    cfg = ClusteringParams(niter=10, keep_fraction=0.5, use_gpu="never", **kw)
    pl = guided_pseudo_labels(corpus, train, ty, 4, cfg, seed=0, threads=1)
    np.testing.assert_array_equal(pl.label, cy)
    assert pl.confidence.dtype == np.float32 and (pl.confidence >= 0).all() and (pl.confidence <= 1).all()
    counts = np.bincount(cy, minlength=4)
    cap = np.floor(0.5 * counts + 0.5).astype(int).min()
    assert pl.stats["kept_per_class"] == [int(cap)] * 4 and pl.kept.sum() == 4 * cap
    assert pl.stats["empty_classes"] == [] and pl.stats["guidance"] == kw["guidance"]
    assert pl.stats["k"] == (4 if kw["guidance"] == "anchored" else 12)
    json.dumps(pl.stats)
    again = guided_pseudo_labels(corpus, train, ty, 4, cfg, seed=0, threads=1)
    np.testing.assert_array_equal(pl.confidence, again.confidence)


def test_guided_reports_empty_class_and_validates(caplog):
    x, y = blobs(60, 3, 5, seed=7)
    # class 3 has labelled points (far away) but no corpus point comes near it
    train = np.concatenate([x[:60], np.full((5, 5), 1e3, np.float32)])
    ty = np.concatenate([y[:60], np.full(5, 3)])
    cfg = ClusteringParams(guidance="anchored", anchor_weight=1.0, normalize=False, use_gpu="never")
    with caplog.at_level(logging.WARNING, logger="fer.clustering.guided"):
        pl = guided_pseudo_labels(x[60:], train, ty, 4, cfg, seed=0)
    assert pl.stats["empty_classes"] == [3] and pl.stats["kept_per_class"][3] == 0
    assert any("no kept corpus image" in r.getMessage() for r in caplog.records)
    with pytest.raises(ValueError, match="every class"):
        guided_pseudo_labels(x[60:], x[:60], y[:60], 4, cfg, seed=0)
    with pytest.raises(ValueError, match="train_feats"):
        guided_pseudo_labels(x[60:], x[:60, :3], y[:60], 3, cfg, seed=0)
    with pytest.raises(ValueError, match="neighbours"):
        guided_pseudo_labels(x, x[:5], y[:5], 3, ClusteringParams(guidance="overcluster", neighbours=10,
                                                                    clusters_per_class=2, use_gpu="never"), seed=0)


def test_clustering_config_from_mapping():
    cfg = build(ClusteringParams, {"guidance": "overcluster", "niter": 5, "keep_fraction": 1})
    assert cfg.niter == 5 and cfg.keep_fraction == 1.0 and cfg.guidance == "overcluster"
    with pytest.raises(ValueError, match="niter must be an integer"):  # integers are integers (issue 9)
        build(ClusteringParams, {"niter": 5.0})
    with pytest.raises(ValueError, match="unknown key"):
        build(ClusteringParams, {"k": 3})
    with pytest.raises(ValueError, match="embedder"):
        build(ClusteringParams, {"embedder": "joint"})
    with pytest.raises(ValueError, match="keep_fraction"):
        ClusteringParams(keep_fraction=0.0)


# ----------------------------------------------------------------------------- quality
def test_quality_on_hand_made_case():
    # clusters {0,0,0,1,1,1}; truth {0,0,1,1,1,1}: purity (2 + 3) / 6
    pl = PseudoLabels(
        label=np.array([0, 0, 0, 1, 1, 1]),
        confidence=np.ones(6, np.float32),
        kept=np.array([True, True, True, True, False, False]),
        cluster=np.array([0, 0, 0, 1, 1, 1]),
        stats={},
    )
    truth = np.array([0, 0, 1, 1, 1, 1])
    q = pseudo_label_quality(pl, truth, 2)
    assert q["cluster/purity"] == pytest.approx(5 / 6)
    assert purity(pl.cluster, truth) == pytest.approx(5 / 6)
    # NMI by hand: H(C) = ln 2, H(T) = -(1/3 ln 1/3 + 2/3 ln 2/3), I = H(T) - H(T|C)
    h_c = np.log(2)
    h_t = -(1 / 3 * np.log(1 / 3) + 2 / 3 * np.log(2 / 3))
    h_t_given_c = 0.5 * -(2 / 3 * np.log(2 / 3) + 1 / 3 * np.log(1 / 3))
    nmi = (h_t - h_t_given_c) / ((h_c + h_t) / 2)
    assert q["cluster/nmi"] == pytest.approx(nmi)
    assert q["pseudo/acc_all"] == pytest.approx(5 / 6)
    assert q["pseudo/acc_kept"] == pytest.approx(3 / 4)
    assert q["pseudo/coverage"] == pytest.approx(4 / 6)
    assert q["pseudo/kept_per_class"] == [3, 1]
    assert q["pseudo/acc_kept_per_class"] == [pytest.approx(2 / 3), 1.0]
    # an unknown true expression (-1) is never a correct label
    q2 = pseudo_label_quality(pl, np.array([0, 0, -1, 1, 1, 1]), 2)
    assert q2["pseudo/acc_all"] == pytest.approx(5 / 6) and q2["pseudo/n_unknown_truth"] == 1
    with pytest.raises(ValueError, match="truth"):
        pseudo_label_quality(pl, truth[:3], 2)


def test_read_corpus_truth(tmp_path):
    csv = tmp_path / "truth.csv"
    csv.write_text("image,expression\nimages/a.png,happiness\nimages/b.png,contempt\nimages/c.png,anger\n")
    classes = ["anger", "happiness"]
    paths = ["data/demo/corpus/images/c.png", "data/demo/corpus/images/a.png", "images/b.png"]
    np.testing.assert_array_equal(read_corpus_truth(csv, paths, classes), [0, 1, -1])
    with pytest.raises(ValueError, match="truth.csv: no truth for 1"):
        read_corpus_truth(csv, paths + ["x/images/zz.png"], classes)
    with pytest.raises(ValueError, match="truth.csv: unknown expression"):
        read_corpus_truth(csv, paths, classes, known_expressions=["anger", "happiness"])
    with pytest.raises(ValueError, match="both match"):
        read_corpus_truth(csv, ["r1/images/a.png", "r2/images/a.png"], classes)
    (tmp_path / "bad.csv").write_text("img,expr\na,b\n")
    with pytest.raises(ValueError, match="bad.csv: needs columns"):
        read_corpus_truth(tmp_path / "bad.csv", paths, classes)
    with pytest.raises(ValueError, match="missing"):
        read_corpus_truth(tmp_path / "none.csv", paths, classes)


def test_pseudo_labels_round_trip_and_errors(tmp_path):
    x, y = blobs(40, 3, 4, seed=8)
    cfg = ClusteringParams(guidance="anchored", use_gpu="never")
    pl = guided_pseudo_labels(x[:90], x[90:], y[90:], 3, cfg, seed=0)
    classes = ["anger", "fear", "joy"]
    paths = [f"images/{i:03d}.png" for i in range(90)]
    write_pseudo_labels(tmp_path / "pl", pl, paths, classes)
    back = read_pseudo_labels(tmp_path / "pl", classes, corpus_paths=paths)
    for name in ("label", "confidence", "kept", "cluster"):
        np.testing.assert_array_equal(getattr(back, name), getattr(pl, name))
        assert getattr(back, name).dtype == getattr(pl, name).dtype
    assert back.stats == json.loads(json.dumps(pl.stats))
    with pytest.raises(ValueError, match="stats.json: written for classes"):
        read_pseudo_labels(tmp_path / "pl", ["a", "b", "c"])
    with pytest.raises(ValueError, match="paths do not match"):
        read_pseudo_labels(tmp_path / "pl", classes, corpus_paths=paths[::-1])
    text = (tmp_path / "pl" / "labels.csv").read_text().replace(",joy,", ",bliss,", 1)
    (tmp_path / "pl" / "labels.csv").write_text(text)
    with pytest.raises(ValueError, match=r"labels.csv, line \d+: label 'bliss'"):
        read_pseudo_labels(tmp_path / "pl", classes)
    with pytest.raises(ValueError, match="labels.csv: pseudo-label file is missing"):
        read_pseudo_labels(tmp_path / "nowhere", classes)


# ------------------------------------------------------------------------ embed, map
def test_embed_to_memmap_equals_embed(tmp_path):
    from fer.clustering.embed import embed_to_memmap
    from fer.models import build_model
    from fer.training.inference import embed

    torch.manual_seed(0)
    model = build_model("vgg_small", 3, 1, 4, input_size=16, dropout=0.0).train()
    imgs = np.random.default_rng(0).integers(0, 256, size=(21, 16, 16, 1), dtype=np.uint8)
    np.save(tmp_path / "imgs.npy", imgs)
    imgs_mm = np.load(tmp_path / "imgs.npy", mmap_mode="r")
    out = embed_to_memmap(model, imgs_mm, tmp_path / "feats.npy", "cpu", batch_size=8)
    assert isinstance(out, np.memmap) and out.shape == (21, model.feature_dim) and out.dtype == np.float32
    ref = embed(model, imgs, "cpu", batch_size=8)
    np.testing.assert_allclose(np.asarray(out), ref, rtol=1e-5, atol=1e-6)
    assert model.training  # mode restored
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp left
    with pytest.raises(ValueError, match="uint8"):
        embed_to_memmap(model, imgs.astype(np.float32), tmp_path / "f2.npy", "cpu")


def test_embedding_map_and_png():
    from fer.clustering.map2d import embedding_map, map_png

    x, y = blobs(20, 3, 60, seed=9)
    idx, xy = embedding_map(x, seed=0, max_points=40)
    assert idx.shape == (40,) and np.all(np.diff(idx) > 0) and xy.shape == (40, 2)
    idx2, xy2 = embedding_map(x, seed=0, max_points=40)
    np.testing.assert_array_equal(idx, idx2)
    np.testing.assert_allclose(xy, xy2)
    png = map_png(xy, y[idx], ["a", "b", "c"], "map", kept=np.arange(40) % 2 == 0)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
