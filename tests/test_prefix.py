"""The frozen prefix computed once gives the same outputs and the same training as the whole model."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import timm
import torch
from torch.utils.data import DataLoader, TensorDataset

from ftcore.accel._prefix import compute_features, cut_applied, feature_bytes, find_prefix_cut
from ftcore.core.config import TrainConfig
from ftcore.models.layers import apply_freeze, layer_groups, trainable_group_names
from ftcore.train.loop import Runtime, fit

FAMILIES = ["test_resnet", "test_efficientnet", "test_convnext", "test_vit", "test_byobnet"]


def _model(name: str, unfreeze: str, seed: int = 0):
    torch.manual_seed(seed)
    m = timm.create_model(name, pretrained=False, num_classes=3)
    g = layer_groups(m)
    apply_freeze(m, g, trainable_group_names(g, unfreeze))
    return m


def _size(m) -> int:
    return m.pretrained_cfg["input_size"][-1] if "vit" in m.default_cfg.get("architecture", "") else 48


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("unfreeze", ["head", "last:2", "last:1"])
def test_cut_model_gives_the_logits_of_the_whole_model(name, unfreeze):
    m = _model(name, unfreeze)
    s = _size(m)
    x = torch.randn(6, 3, s, s)
    cut = find_prefix_cut(m, x[:3])
    assert cut is not None, f"{name} {unfreeze}: no cut found"
    m.eval()
    with torch.inference_mode():
        full = m(x)
    feats = compute_features(m, cut, [x[:4], x[4:]])
    assert feats.shape == (6, *cut.feature_shape)
    with cut_applied(m, cut) as run, torch.inference_mode():
        out = run(feats)
    torch.testing.assert_close(out, full, rtol=1e-4, atol=1e-4)
    # The original modules are back: the state dict is complete and the model runs on images.
    assert set(m.state_dict()) == set(_model(name, unfreeze).state_dict())
    with torch.inference_mode():
        torch.testing.assert_close(m(x), full)


def test_a_change_of_frozen_groups_moves_the_cut():
    x = torch.randn(3, 3, 48, 48)
    entries = {u: find_prefix_cut(_model("test_resnet", u), x).entry for u in ("head", "last:1", "last:2")}
    assert entries == {"head": "fc", "last:1": "layer4.0", "last:2": "layer3.0"}
    assert find_prefix_cut(_model("test_resnet", "all"), x) is None


def test_cut_replaces_only_frozen_modules_and_reports_its_size():
    m = _model("test_efficientnet", "last:2")
    cut = find_prefix_cut(m, torch.randn(2, 3, 48, 48))
    assert cut.replaced and 0 < cut.prefix_share < 1
    for name in cut.replaced:
        assert not any(p.requires_grad for p in m.get_submodule(name).parameters())
    n = int(np.prod(cut.feature_shape))
    assert feature_bytes(cut, 10) == 4 * n * 10


@pytest.mark.parametrize("name,unfreeze", [("test_resnet", "last:2"), ("test_efficientnet", "head"),
                                           ("test_convnext", "last:1")])
def test_training_from_cached_activations_equals_training_the_whole_model(name, unfreeze):
    """Same deterministic inputs, same seed: the cached path learns the same weights."""
    torch.manual_seed(1)
    x = torch.randn(12, 3, 48, 48)
    y = torch.arange(12) % 3
    tc = TrainConfig(epochs=2, batch_size=4, lr=1e-2, seed=0)
    m_full = _model(name, unfreeze)
    m_cut = copy.deepcopy(m_full)

    def loaders(inputs):
        g = torch.Generator().manual_seed(0)
        return (DataLoader(TensorDataset(inputs, y), batch_size=4, shuffle=True, generator=g),
                DataLoader(TensorDataset(inputs, y), batch_size=6))

    res_full = fit(m_full, *loaders(x), tc, torch.device("cpu"), name="finetuned")
    cut = find_prefix_cut(m_cut, x[:3])
    feats = compute_features(m_cut, cut, [x])
    with cut_applied(m_cut, cut) as run:
        res_cut = fit(m_cut, *loaders(feats), tc, Runtime(torch.device("cpu"), forward=run), name="finetuned")
    for (k, a), (_, b) in zip(m_full.state_dict().items(), m_cut.state_dict().items()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=k)
    assert [e.train_loss for e in res_cut.history] == pytest.approx([e.train_loss for e in res_full.history], rel=1e-4)
    np.testing.assert_allclose(res_cut.val_probs, res_full.val_probs, rtol=1e-4, atol=1e-5)


def test_no_cut_when_nothing_is_frozen_before_the_first_trainable_layer():
    m = _model("test_efficientnet", "all")
    assert find_prefix_cut(m, torch.randn(2, 3, 48, 48)) is None


def test_no_cut_when_nothing_is_trainable():
    m = timm.create_model("test_resnet", pretrained=False, num_classes=3)
    for p in m.parameters():
        p.requires_grad_(False)
    assert find_prefix_cut(m, torch.randn(2, 3, 48, 48)) is None
