"""Face-pretrained starts (params init): the backbone's weights come from the file, the
head stays fresh; checkpoints of other tools are mapped (prefixes, wrappers, RGB -> grey);
a file that does not fit fails naming the keys."""

from __future__ import annotations

import pytest
import torch

from fer.models import build_model
from fer.training.checkpoint import save_weights
from fer.training.init import InitError, load_start


def _backbone_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return all(torch.equal(sa[k], sb[k]) for k in sa if not k.startswith("fc."))


def test_identity_checkpoint_starts_the_recogniser_with_a_fresh_head(tmp_path):
    torch.manual_seed(0)
    identity = build_model("vgg_small", 40, 1, 8, input_size=32)  # 40 identities
    save_weights(tmp_path / "identity.pt", identity.state_dict(), {"arch": "vgg_small"})
    torch.manual_seed(1)
    recogniser = build_model("vgg_small", 7, 1, 8, input_size=32)
    head = recogniser.fc.weight.detach().clone()
    done = load_start(recogniser, tmp_path / "identity.pt")
    assert _backbone_equal(recogniser, identity) and torch.equal(recogniser.fc.weight, head)
    assert done["init/loaded"] == len([k for k in identity.state_dict() if not k.startswith("fc.")])


def test_other_tools_checkpoints_are_mapped(tmp_path):
    """A DataParallel-saved RGB ResNet-18 under "state_dict" (the layout FER repositories
    ship MS-Celeb-1M weights in) starts a grey ResNet-18: prefixes stripped, the first
    convolution summed over colour channels, its 1000-class head ignored."""
    torch.manual_seed(0)
    rgb = build_model("resnet18", 1000, 3, 8, input_size=160)
    ckpt = {"state_dict": {f"module.{k}": v for k, v in rgb.state_dict().items()}, "epoch": 90}
    torch.save(ckpt, tmp_path / "resnet18_msceleb.pth")
    grey = build_model("resnet18", 7, 1, 8, input_size=160)
    done = load_start(grey, tmp_path / "resnet18_msceleb.pth")
    assert done["init/rgb_to_grey"] == ["conv1.weight"]
    assert torch.allclose(grey.conv1.weight, rgb.conv1.weight.sum(dim=1, keepdim=True))
    assert torch.equal(grey.layer4[1].conv2.weight, rgb.layer4[1].conv2.weight)


def test_a_file_that_does_not_fit_names_the_keys(tmp_path):
    torch.manual_seed(0)
    torch.save(build_model("resnet18", 7, 1, 8, input_size=160).state_dict(), tmp_path / "big_stem.pt")
    small = build_model("resnet18", 7, 1, 8, input_size=48)  # 3x3 stem at 48 px
    before = {k: v.clone() for k, v in small.state_dict().items()}
    with pytest.raises(InitError, match=r"shapes differ .*conv1.weight \(8, 1, 7, 7\) vs \(8, 1, 3, 3\)"):
        load_start(small, tmp_path / "big_stem.pt")
    assert all(torch.equal(before[k], v) for k, v in small.state_dict().items())  # nothing loaded partly
    torch.save(build_model("vgg_small", 7, 1, 8, input_size=48).state_dict(), tmp_path / "vgg.pt")
    with pytest.raises(InitError, match=r"(?s)missing keys \(\d+\): .*layer1.*unexpected keys \(\d+\): .*blocks"):
        load_start(small, tmp_path / "vgg.pt")
    (tmp_path / "notes.pt").write_text("not weights")
    with pytest.raises(InitError, match="cannot be read as weights"):
        load_start(small, tmp_path / "notes.pt")
    torch.save({"epoch": 3}, tmp_path / "empty.pt")
    with pytest.raises(InitError, match="no state dict found"):
        load_start(small, tmp_path / "empty.pt")


def test_init_params_are_checked_before_any_job():
    import copy

    from conftest import PARAMS, SCHEMA

    from fer.params import ParamsError, load_params, validate_params

    params = load_params(PARAMS, SCHEMA)
    ok = copy.deepcopy(params)
    ok["baseline"]["init"] = "identity"  # vgg_small 16 = identity's arch and width
    validate_params(ok, SCHEMA)
    bad = copy.deepcopy(ok)
    bad["identity"]["width"] = 32
    with pytest.raises(ParamsError, match="baseline.init is identity, but baseline.width = 16 differs from identity.width"):
        validate_params(bad, SCHEMA)
    bad = copy.deepcopy(params)
    bad["accnn"]["init"] = "identity"
    with pytest.raises(ParamsError, match="accnn.init is identity, but accnn.arch = 'accnn' differs"):
        validate_params(bad, SCHEMA)
    bad = copy.deepcopy(params)
    bad["identity"]["init"] = "identity"
    with pytest.raises(ParamsError, match="identity.init cannot be identity"):
        validate_params(bad, SCHEMA)


def test_init_files_must_be_inside_the_project_and_exist(tmp_path, monkeypatch):
    import copy

    from _common import check_pipeline_params
    from conftest import PARAMS, SCHEMA

    from fer.params import ParamsError, load_params

    params = load_params(PARAMS, SCHEMA)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pretrained").mkdir()
    (tmp_path / "pretrained" / "r18.pth").write_bytes(b"x")
    for value, needle in (("/abs/r18.pth", "must be a path inside the project"),
                          ("../r18.pth", "must be a path inside the project"),
                          ("pretrained/missing.pth", "is not a file")):
        bad = copy.deepcopy(params)
        bad["baseline"]["init"] = value
        with pytest.raises(ParamsError, match=needle):
            check_pipeline_params(bad)
    good = copy.deepcopy(params)
    good["baseline"]["init"] = "pretrained/r18.pth"
    check_pipeline_params(good)


# A run with baseline.init: identity under both tools: tests/test_readers_end_to_end.py,
# test_methods_select_the_jobs_under_snakemake_and_dvc.
