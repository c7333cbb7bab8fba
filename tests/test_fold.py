"""Folding fixed-statistics BatchNorm into convolutions changes speed, not what is learned."""

from __future__ import annotations

import copy

import pytest
import timm
import torch
from torch import nn

from ftcore.accel._fold import bn_folded, foldable_pairs
from ftcore.models.layers import apply_freeze, layer_groups, set_train_mode, trainable_group_names

FAMILIES = ["test_resnet", "test_efficientnet", "test_byobnet", "mobilenetv3_small_050"]


def _model(name: str, unfreeze: str = "all"):
    torch.manual_seed(0)
    m = timm.create_model(name, pretrained=False, num_classes=3)
    # Non-trivial running statistics, as a pretrained model has.
    for mod in m.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.5, 0.5)
            mod.running_var.uniform_(0.5, 2.0)
    g = layer_groups(m)
    apply_freeze(m, g, trainable_group_names(g, unfreeze))
    return m


def _train(m, x, y, steps=3, update_bn=False):
    # Plain SGD: its update is proportional to the gradient, so rounding differences stay small (Adam's
    # normalised update would turn the sign of a near-zero gradient's rounding into a full step).
    opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.05)
    for _ in range(steps):
        set_train_mode(m, update_bn)
        loss = nn.functional.cross_entropy(m(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()


@pytest.mark.parametrize("name", FAMILIES)
def test_folded_training_learns_the_same_weights(name):
    x = torch.randn(8, 3, 48, 48)
    y = torch.arange(8) % 3
    plain = _model(name)
    folded = copy.deepcopy(plain)
    _train(plain, x, y)
    with bn_folded(folded, x[:4]) as n:
        assert n > 0
        _train(folded, x, y)
    sd_plain, sd_folded = plain.state_dict(), folded.state_dict()
    assert list(sd_plain) == list(sd_folded)  # original modules and names are back
    for k in sd_plain:
        torch.testing.assert_close(sd_folded[k], sd_plain[k], rtol=2e-3, atol=2e-4, msg=k)


@pytest.mark.parametrize("name", FAMILIES)
def test_folding_keeps_frozen_weights_and_every_running_statistic(name):
    x = torch.randn(8, 3, 48, 48)
    m = _model(name, "last:1")
    before = {k: v.clone() for k, v in m.state_dict().items()}
    trainable = {n for n, p in m.named_parameters() if p.requires_grad}
    with bn_folded(m, x[:4]):
        _train(m, x, torch.arange(8) % 3)
    for k, v in m.state_dict().items():
        if k not in trainable:
            assert torch.equal(v, before[k]), f"{k} changed"


def test_batchnorm_that_updates_its_statistics_is_not_folded():
    m = _model("test_resnet", "last:1")
    x = torch.randn(4, 3, 48, 48)
    frozen_bns = {n for n, mod in m.named_modules() if isinstance(mod, nn.BatchNorm2d)
                  and not any(p.requires_grad for p in mod.parameters())}
    all_bns = {b for _, b in foldable_pairs(m, x, update_bn=False)}
    kept = {b for _, b in foldable_pairs(m, x, update_bn=True)}
    assert kept == all_bns & frozen_bns and kept < all_bns


def test_convnext_has_no_batchnorm_to_fold():
    m = _model("test_convnext")
    with bn_folded(m, torch.randn(2, 3, 48, 48)) as n:
        assert n == 0


class _ConvOutputUsedTwice(nn.Module):
    """The convolution's output feeds the BatchNorm and, unnormalised, a shortcut."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 2)
        self.bn.running_mean.fill_(0.3)
        self.bn.running_var.fill_(2.0)

    def forward(self, x):
        c = self.conv(x)
        return self.fc((self.bn(c) + c).mean((2, 3)))


def test_a_fold_that_would_change_the_logits_is_not_made():
    m = _ConvOutputUsedTwice()
    x = torch.randn(4, 3, 8, 8)
    m.eval()
    ref = m(x)
    with bn_folded(m, x) as n:
        assert n == 0
        assert isinstance(m.conv, nn.Conv2d) and isinstance(m.bn, nn.BatchNorm2d)
        torch.testing.assert_close(m(x), ref)


class _PreAct(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv1, self.bn, self.conv2 = nn.Conv2d(c, 2 * c, 1), nn.BatchNorm2d(2 * c), nn.Conv2d(2 * c, c, 1)

    def forward(self, x):
        return x + self.conv2(torch.relu(self.bn(self.conv1(x))))


def test_a_batchnorm_after_a_residual_add_is_not_paired_with_a_freed_convolution_output():
    # The add's result may get the id of conv1's freed output; pairing by id alone folded the wrong BatchNorm.
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 1), _PreAct(4), nn.BatchNorm2d(4), _PreAct(4), nn.BatchNorm2d(4),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)).eval()
    x = torch.randn(2, 3, 8, 8)
    assert foldable_pairs(net, x) == [("1.conv1", "1.bn"), ("3.conv1", "3.bn")]
    with bn_folded(net, x) as n:
        assert n == 2


@pytest.mark.parametrize("between", [nn.Dropout(0.5), nn.ReLU(inplace=True), nn.Identity()])
def test_a_layer_between_convolution_and_batchnorm_prevents_folding(between):
    # Dropout (eval) and in-place ReLU return their input object; folding through them changes training.
    net = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), between, nn.BatchNorm2d(6), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3)).eval()
    assert foldable_pairs(net, torch.randn(2, 3, 8, 8)) == []


def test_folding_keeps_each_modules_train_or_eval_mode():
    m = _model("test_efficientnet")
    set_train_mode(m, False)
    modes = {name: mod.training for name, mod in m.named_modules()}
    assert any(modes.values()) and not all(modes.values())
    x = torch.randn(2, 3, 48, 48)
    foldable_pairs(m, x)
    assert {name: mod.training for name, mod in m.named_modules()} == modes
    with bn_folded(m, x) as n:
        assert n > 0
        assert {name: mod.training for name, mod in m.named_modules()} == modes
    assert {name: mod.training for name, mod in m.named_modules()} == modes
