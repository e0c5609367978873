"""Identity network trained on corpus identities (FESGAN's identity-preservation space)."""

import numpy as np
import pytest
import torch

from fer.methods.identity import identity_split, load_identity_net, train_identity_net
from fer.params import RecognizerParams, build


def test_identity_split_holds_out_images_of_every_identity():
    subjects = np.array(["a"] * 4 + ["b"] * 3 + ["c"])
    tr, va = identity_split(subjects, 1, seed=0)
    assert not set(tr) & set(va) and len(tr) + len(va) == len(subjects)
    assert sorted(subjects[va]) == ["a", "b"]  # "c" has one image only: training only


def test_identity_net_learns_identities_and_embeds(tmp_path):
    rng = np.random.default_rng(0)
    n_id, per = 4, 6
    # each identity: a bright square at its own place, plus noise
    images = rng.integers(0, 40, size=(n_id * per, 16, 16, 1)).astype(np.uint8)
    subjects = np.repeat([f"C{i}" for i in range(n_id)], per)
    for i in range(n_id):
        r, c = divmod(i, 2)
        images[i * per:(i + 1) * per, r * 8:(r + 1) * 8, c * 8:(c + 1) * 8] += 200
    cfg = build(RecognizerParams, {"arch": "vgg_small", "width": 4, "epochs": 6, "batch_size": 8,
                                    "optimizer": "adamw", "lr": 0.01, "select_metric": "val/acc",
                                    "augment": {"hflip": False, "rotate_deg": 0.0, "scale": 0.0, "shift": 0.0,
                                                "brightness": 0.0, "contrast": 0.0, "erasing": 0.0}})
    m = train_identity_net(images, subjects, cfg, seed=0, device=torch.device("cpu"),
                           out_model=tmp_path / "id.pt", out_metrics=tmp_path / "id.json", out_curve=tmp_path / "id.csv")
    assert m["identity/n_identities"] == n_id and m["identity/n_val"] == n_id
    assert m["identity/val_acc"] > 1 / n_id
    torch.load(tmp_path / "id.pt", weights_only=True)
    net = load_identity_net(tmp_path / "id.pt")
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():
        f = net(x)
    assert f.shape[0] == len(images) and torch.allclose(f.norm(dim=1), torch.ones(len(images)), atol=1e-5)
    assert not any(p.requires_grad for p in net.parameters())
    net.train()
    assert not net.model.training  # BatchNorm statistics stay frozen
    # same identity closer than different identities on average
    sim = (f @ f.T).numpy()
    same = subjects[:, None] == subjects[None, :]
    assert sim[same].mean() > sim[~same].mean()


def test_without_a_corpus_the_identity_network_sees_only_the_folds_training_subjects():
    from fer.methods.identity import fold_training_faces

    subjects = np.array(["a", "a", "b", "c", "c", "d"])
    images = np.arange(6, dtype=np.uint8).reshape(6, 1, 1, 1)
    x, s = fold_training_faces(images, subjects, {"train": ["a", "c"], "val": ["b"], "test": ["d"]})
    assert s.tolist() == ["a", "a", "c", "c"] and x.ravel().tolist() == [0, 1, 3, 4]
    with pytest.raises(ValueError, match="no training images"):
        fold_training_faces(images, subjects, {"train": [], "val": ["b"], "test": ["d"]})
