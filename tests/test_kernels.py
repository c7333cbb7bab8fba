"""The faster depthwise convolution gives PyTorch's results; the allocator setting is safe to apply."""

from __future__ import annotations

import copy
import sys

import pytest
import torch
from timm.layers import BatchNormAct2d
from timm.layers.conv2d_same import Conv2dSame
from torch import nn

import ftcore.accel._kernels as kernels
from ftcore.accel._fold import bn_folded
from ftcore.accel._kernels import (
    conv2d_hardtanh,
    depthwise_conv2d,
    fused_activation_available,
    is_depthwise,
    keep_freed_memory,
)


def _reference(x, w, b, stride, padding):
    """Output and gradients of F.conv2d in float64, for a loss that weights every output differently."""
    x64, w64 = x.detach().double().requires_grad_(), w.detach().double().requires_grad_()
    b64 = b.detach().double().requires_grad_() if b is not None else None
    y = nn.functional.conv2d(x64, w64, b64, stride, padding, 1, x.shape[1])
    weights = torch.linspace(-1, 1, y.numel(), dtype=torch.float64).reshape(y.shape)
    (y * weights).sum().backward()
    return y, x64.grad, w64.grad, (b64.grad if b is not None else None), weights


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("size,k,stride,padding", [
    (4, 5, 1, 2),   # the kernel wider than the map: EfficientNet's last stage
    (8, 5, 1, 2),
    (7, 3, 1, 1),
    (9, 5, 2, 0),   # stride 2 on a padded map (TensorFlow "same" padding done before)
    (6, 7, 2, 3),
    (5, 5, 1, 0),
    (12, 5, 1, 2),  # a map above SMALL_MAP: oneDNN's gradient
])
def test_depthwise_conv2d_gives_conv2ds_output_and_gradients(size, k, stride, padding, channels_last, monkeypatch):
    calls = []
    shifted = kernels._shifted_weight_grad
    monkeypatch.setattr(kernels, "_shifted_weight_grad", lambda *a: calls.append(1) or shifted(*a))
    torch.manual_seed(0)
    x = torch.randn(3, 6, size, size)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    w = torch.randn(6, 1, k, k, requires_grad=True)
    b = torch.randn(6, requires_grad=True)
    y_ref, gx_ref, gw_ref, gb_ref, weights = _reference(x, w, b, stride, padding)
    y = depthwise_conv2d(x, w, b, stride, padding)
    (y * weights.float()).sum().backward()
    torch.testing.assert_close(y.double(), y_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(x.grad.double(), gx_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(w.grad.double(), gw_ref, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(b.grad.double(), gb_ref, rtol=1e-5, atol=1e-4)
    out_pixels = y.shape[-1] * y.shape[-2]
    assert bool(calls) == (k > 3 and out_pixels <= kernels.SMALL_MAP)


def test_depthwise_conv2d_without_bias_and_with_frozen_input():
    torch.manual_seed(1)
    x = torch.randn(2, 4, 4, 4)  # no gradient wanted for the input, as for a network's first layer
    w = torch.randn(4, 1, 5, 5, requires_grad=True)
    y_ref, _, gw_ref, _, weights = _reference(x, w, None, 1, 2)
    y = depthwise_conv2d(x, w, None, 1, 2)
    (y * weights.float()).sum().backward()
    torch.testing.assert_close(w.grad.double(), gw_ref, rtol=1e-5, atol=1e-4)


def test_depthwise_conv2d_refuses_a_weight_that_is_not_depthwise():
    with pytest.raises(ValueError, match=r"weight of shape \(6, 1, kh, kw\).*got \(6, 2, 3, 3\)"):
        depthwise_conv2d(torch.randn(1, 6, 8, 8), torch.randn(6, 2, 3, 3))
    assert is_depthwise(torch.empty(6, 1, 3, 3), 6, 1)
    assert not is_depthwise(torch.empty(6, 1, 3, 3), 6, (2, 2))
    assert not is_depthwise(torch.empty(12, 1, 3, 3), 6, 1)  # a channel multiplier of 2


def _same_padding_net():
    """TensorFlow-"same" depthwise convolutions (timm's Conv2dSame), strided and not, each with a BatchNorm.

    As in EfficientNet-lite: timm's BatchNormAct2d with ReLU6 (fused into the
    convolution when folded), and one plain BatchNorm2d + ReLU6 (not fused).
    """
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 1), nn.BatchNorm2d(8), nn.ReLU6(),
        Conv2dSame(8, 8, 5, stride=2, groups=8, bias=False), BatchNormAct2d(8, act_layer=nn.ReLU6),
        Conv2dSame(8, 16, 1, bias=False), BatchNormAct2d(16, act_layer=nn.ReLU6),
        Conv2dSame(16, 16, 3, stride=2, groups=16, bias=False), BatchNormAct2d(16, act_layer=nn.ReLU6),
        Conv2dSame(16, 16, 5, stride=1, groups=16, bias=False), BatchNormAct2d(16, act_layer=nn.ReLU6),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 3))
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return net.eval()


def test_folded_same_padding_depthwise_convolutions_learn_the_same_weights(monkeypatch):
    import ftcore.accel._fold as fold

    fused = []
    monkeypatch.setattr(fold, "conv2d_hardtanh", lambda *a: fused.append(a[0].shape) or conv2d_hardtanh(*a))
    x = 3 * torch.randn(8, 3, 16, 16)  # maps of 8x8 and 4x4 after the strided layers: the shifted gradient runs
    y = torch.arange(8) % 3
    plain = _same_padding_net()
    folded = copy.deepcopy(plain)

    def train(m):
        opt = torch.optim.SGD(m.parameters(), lr=0.05)
        for _ in range(3):
            loss = nn.functional.cross_entropy(m(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()

    train(plain)
    with bn_folded(folded, x[:4]) as n:
        assert n == 5
        train(folded)
    # 4 clamps, each in: the backward check, the logits check and 3 steps.
    assert len(fused) == (4 * 5 if fused_activation_available() else 0)
    for k, v in plain.state_dict().items():
        torch.testing.assert_close(folded.state_dict()[k], v, rtol=2e-3, atol=2e-4, msg=k)


def test_keeping_freed_memory_is_applied_once_and_allocation_still_works():
    first = keep_freed_memory()
    assert keep_freed_memory() is first
    if sys.platform.startswith("linux"):
        assert first is True
    big = torch.ones(64, 1024, 1024)  # 256 MiB, above glibc's mmap threshold
    assert float(big[-1, -1, -1]) == 1.0
    del big


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("cin,cout,groups,size,k,stride,padding", [
    (4, 6, 1, 8, 1, 1, 0),     # pointwise
    (4, 6, 1, 9, 3, 2, 1),     # a stem
    (6, 6, 6, 4, 5, 1, 2),     # depthwise, small map: shifted weight gradient
    (6, 6, 6, 9, 3, 2, 0),     # depthwise, strided
    (6, 6, 6, 12, 5, 1, 2),    # depthwise, map above SMALL_MAP
])
def test_conv2d_hardtanh_gives_conv_then_clamp(cin, cout, groups, size, k, stride, padding, channels_last):
    torch.manual_seed(0)
    x = 4 * torch.randn(2, cin, size, size)  # outputs on both sides of 0 and 6, so the clamp's gradient matters
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    w = torch.randn(cout, cin // groups, k, k, requires_grad=True)
    b = torch.randn(cout, requires_grad=True)
    x2, w2, b2 = (t.detach().clone().requires_grad_() for t in (x, w, b))
    y = conv2d_hardtanh(x, w, b, stride, padding, groups, 0.0, 6.0)
    y_ref = nn.functional.hardtanh(nn.functional.conv2d(x2, w2, b2, stride, padding, 1, groups), 0.0, 6.0)
    assert (y_ref == 0).any() and (y_ref == 6).any() and ((y_ref > 0) & (y_ref < 6)).any()
    weights = torch.randn(y.shape)
    (y * weights).sum().backward()
    (y_ref * weights).sum().backward()
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-4)
    for got, want in ((x.grad, x2.grad), (w.grad, w2.grad), (b.grad, b2.grad)):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-3)


def _relu6_block_net(inplace_residual: bool):
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(4, 4, 3, padding=1, bias=False)
            self.bn = BatchNormAct2d(4, act_layer=nn.ReLU6)

        def forward(self, x):
            y = self.bn(self.conv(x))
            if inplace_residual:
                y += x  # changes the fused output in place
                return y
            return y + x

    torch.manual_seed(0)
    return nn.Sequential(Block(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)).eval()


@pytest.mark.parametrize("inplace_residual", [False, True])
def test_a_model_that_changes_the_fused_output_in_place_is_folded_without_fusing(inplace_residual, monkeypatch):
    import ftcore.accel._fold as fold

    fused = []
    monkeypatch.setattr(fold, "conv2d_hardtanh", lambda *a: fused.append(1) or conv2d_hardtanh(*a))
    x, y = torch.randn(2, 4, 6, 6), torch.tensor([0, 1])
    plain, folded = _relu6_block_net(inplace_residual), _relu6_block_net(inplace_residual)
    nn.functional.cross_entropy(plain(x), y).backward()
    with bn_folded(folded, x) as n:
        assert n == 1
        fused.clear()
        nn.functional.cross_entropy(folded(x), y).backward()  # no autograd error about an in-place change
    assert bool(fused) == (not inplace_residual and fused_activation_available())
    for (name, a), b in zip(plain.named_parameters(), folded.parameters()):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-4, atol=1e-5, msg=name)


def test_a_diverged_weight_still_makes_the_loss_nan_through_a_fused_activation():
    x, y = torch.randn(2, 4, 6, 6), torch.tensor([0, 1])
    net = _relu6_block_net(False)
    with bn_folded(net, x) as n:
        assert n == 1
        with torch.no_grad():
            net[0].conv.weight[0, 0, 0, 0] = float("nan")
        loss = nn.functional.cross_entropy(net(x), y)
    assert torch.isnan(loss)  # what the training loop checks, to restore the last good weights
