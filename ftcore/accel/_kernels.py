"""Two CPU training costs that a mobile network's own code cannot avoid, removed.

* **Depthwise weight gradients on small maps.** oneDNN (PyTorch's CPU
  convolution library) computes the weight gradient of a depthwise
  convolution with a kernel larger than 3x3 on a small map, such as the 5x5
  kernels on the 4x4 maps of an EfficientNet's last stage at 128 pixels, with
  a generic path that is 10-20x slower than the convolution itself.
  :func:`depthwise_conv2d` is the same convolution with that gradient computed
  instead as ``k*k`` per-channel sums of products of shifted views (the
  definition of the gradient of a cross-correlation); the input gradient and
  the forward stay oneDNN's. Measured on a 2-core AVX2 EPYC, batch 32,
  ``channels_last``: 1152 channels, 4x4 map, 5x5 kernel: 35 ms -> 3.5 ms;
  672 channels, 8x8: 8.9 -> 5.7 ms; 240 channels, 16x16: 10 -> 17 ms (hence
  the :data:`SMALL_MAP` limit).
* **Page faults on every large tensor.** glibc's ``malloc`` returns each
  freed block above its mmap threshold (at most 32 MiB) to the system and
  page-faults a fresh one at the next allocation, so every activation of a
  few tens of MB costs its size in page faults at each step: cloning one
  32x96x64x64 float tensor took 27 ms, and 4 ms once freed memory was kept
  (:func:`keep_freed_memory`). The same advice is behind PyTorch's CPU
  performance guide's use of jemalloc or tcmalloc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

__all__ = ["SMALL_MAP", "conv2d_hardtanh", "depthwise_conv2d", "fused_activation_available", "is_depthwise",
           "keep_freed_memory"]

log = logging.getLogger(__name__)

#: Largest output map, in pixels (8x8), on which :func:`depthwise_conv2d`
#: computes the weight gradient of a kernel larger than 3x3 from shifted
#: views; above it (and for 3x3 kernels, which oneDNN handles well) oneDNN's
#: gradient is faster. From the measurements in the module docstring.
SMALL_MAP = 64

_M_TRIM_THRESHOLD = -1  # glibc malloc.h
_M_MMAP_MAX = -4
_kept = False


def keep_freed_memory(trim_threshold_bytes: int = 1 << 30) -> bool:
    """Make glibc's ``malloc`` keep freed large blocks for reuse (Linux only).

    Sets ``M_MMAP_MAX`` to 0 (large blocks come from the heap, not from a
    fresh ``mmap`` each) and ``M_TRIM_THRESHOLD`` to `trim_threshold_bytes`
    (free memory at the top of the heap up to that size is kept), with
    ``mallopt(3)``. Training allocates and frees the same activation sizes at
    every step, so the blocks are reused without page faults. The cost is
    that the process keeps its peak memory until it ends; training runs in
    its own process (:mod:`ftcore.jobs.local`) or the command line's.

    Parameters
    ----------
    trim_threshold_bytes : int, default 1 GiB
        Free heap memory kept for reuse rather than returned to the system
        (clipped to 0 .. 2**31 - 1, the range of ``mallopt``'s C int).

    Returns
    -------
    bool
        True when the settings were applied (now or by an earlier call);
        False where the C library is not glibc (macOS, Windows, musl), where
        nothing is changed.
    """
    global _kept
    if _kept:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # noqa: B018 - present only in glibc
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    trim = max(0, min(int(trim_threshold_bytes), 2**31 - 1))  # mallopt takes a C int
    ok = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, trim))
    _kept = ok
    if not ok:  # pragma: no cover - glibc accepts both values
        log.info("mallopt refused the allocator settings; large blocks are returned to the system as usual")
    return ok


def is_depthwise(weight: torch.Tensor, groups: int, dilation) -> bool:
    """Whether a convolution with this weight is depthwise (one filter per channel, no dilation).

    Parameters
    ----------
    weight : torch.Tensor of shape (out_channels, in_channels / groups, kh, kw)
    groups : int
    dilation : int or tuple of int
    """
    dil = tuple(dilation) if isinstance(dilation, (tuple, list)) else (dilation, dilation)
    return weight.dim() == 4 and weight.shape[1] == 1 and weight.shape[0] == groups and dil == (1, 1)


def _pair(v) -> tuple[int, int]:
    return (int(v[0]), int(v[1])) if isinstance(v, (tuple, list)) else (int(v), int(v))


def _shifted_weight_grad(x: torch.Tensor, g: torch.Tensor, kh: int, kw: int,
                         stride: tuple[int, int], padding: tuple[int, int]) -> torch.Tensor:
    """Weight gradient of a depthwise cross-correlation as ``kh*kw`` sums over shifted views.

    ``grad_w[c, i, j] = sum over n, oh, ow of g[n, c, oh, ow] * x[n, c, oh*sh + i - ph, ow*sw + j - pw]``,
    the terms with the input index outside the image (zero padding) left out.
    """
    _, c, h, w = x.shape
    ho, wo = g.shape[-2:]
    (sh, sw), (ph, pw) = stride, padding
    out = x.new_zeros(c, kh, kw)
    for i in range(kh):
        r0, r1 = max(0, -((i - ph) // sh)), min(ho - 1, (h - 1 + ph - i) // sh)
        if r1 < r0:
            continue
        for j in range(kw):
            c0, c1 = max(0, -((j - pw) // sw)), min(wo - 1, (w - 1 + pw - j) // sw)
            if c1 < c0:
                continue
            gs = g[:, :, r0:r1 + 1, c0:c1 + 1]
            xs = x[:, :, r0 * sh + i - ph:r1 * sh + i - ph + 1:sh, c0 * sw + j - pw:c1 * sw + j - pw + 1:sw]
            out[:, i, j] = (gs * xs).sum((0, 2, 3))
    return out.unsqueeze(1)


def _conv_backward(ctx, g, x, weight, groups):
    """Gradients of a convolution (input, weight, bias); on small maps the depthwise weight gradient from shifts."""
    need_x, need_w, need_b = ctx.needs_input_grad[:3]
    kh, kw = weight.shape[-2:]
    shifted = (need_w and groups == weight.shape[0] and weight.shape[1] == 1 and max(kh, kw) > 3
               and g.shape[-2] * g.shape[-1] <= SMALL_MAP)
    gx = gw = gb = None
    mask = [need_x, need_w and not shifted, False]
    if any(mask):
        gx, gw, _ = torch.ops.aten.convolution_backward(
            g, x, weight, None, list(ctx.stride), list(ctx.padding), [1, 1], False, [0, 0], groups, mask)
    if shifted:
        gw = _shifted_weight_grad(x, g, kh, kw, ctx.stride, ctx.padding)
    if need_b and ctx.has_bias:
        gb = g.sum((0, 2, 3))
    return gx, gw, gb


class _DepthwiseConv2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding):
        ctx.save_for_backward(x, weight)
        ctx.stride, ctx.padding, ctx.has_bias = stride, padding, bias is not None
        return F.conv2d(x, weight, bias, stride, padding, 1, weight.shape[0])

    @staticmethod
    @once_differentiable
    def backward(ctx, g):
        x, weight = ctx.saved_tensors
        return (*_conv_backward(ctx, g, x, weight, weight.shape[0]), None, None)


class _Conv2dHardtanh(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, groups, lo, hi):
        y = torch.ops.mkldnn._convolution_pointwise(x, weight, bias, list(padding), list(stride), [1, 1], groups,
                                                    "hardtanh", [lo, hi], "")
        ctx.save_for_backward(x, weight, y)
        ctx.stride, ctx.padding, ctx.has_bias = stride, padding, bias is not None
        ctx.groups, ctx.bounds = groups, (lo, hi)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, g):
        x, weight, y = ctx.saved_tensors
        # The clamp's gradient from its output: lo < y < hi exactly where lo < the convolution's output < hi.
        g = torch.ops.aten.hardtanh_backward(g, y, *ctx.bounds)
        return (*_conv_backward(ctx, g, x, weight, ctx.groups), None, None, None, None, None)


def _fast_path(x: torch.Tensor, weight: torch.Tensor) -> bool:
    return (x.is_cpu and x.dtype == torch.float32 and weight.dtype == torch.float32 and torch.is_grad_enabled()
            and not torch.is_autocast_enabled("cpu"))


def fused_activation_available() -> bool:
    """Whether this PyTorch has oneDNN's fused convolution + activation (x86 and Arm builds with mkldnn)."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_convolution_pointwise")


def conv2d_hardtanh(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride=1, padding=0,
                    groups: int = 1, min_val: float = 0.0, max_val: float = 6.0) -> torch.Tensor:
    """``F.hardtanh(F.conv2d(x, weight, bias, stride, padding, 1, groups), min_val, max_val)`` in one pass on a CPU.

    ReLU6 (``min_val=0, max_val=6``, MobileNet and EfficientNet-lite) after a
    convolution costs a whole pass over the activations forward; oneDNN
    applies it while writing the convolution's output (a "post-op", the
    fusion PyTorch's compiler uses for CPU inference), measured 9.6 -> 5.8 ms
    for a 16-to-96-channel 1x1 convolution at 64x64, batch 32. Training
    through it is this function's own gradient: the clamp's mask from the
    output, then the convolution's gradients as in :func:`depthwise_conv2d`.
    Falls back to the two PyTorch calls off the CPU, in other dtypes than
    float32, under autocast, when gradients are off, without oneDNN, and when
    `weight` or `bias` holds a NaN or infinity (oneDNN's clamp would turn a
    NaN into a bound and hide the divergence from the loss).

    Parameters
    ----------
    x : torch.Tensor of shape (batch, in_channels, height, width)
    weight : torch.Tensor of shape (out_channels, in_channels / groups, kh, kw)
    bias : torch.Tensor of shape (out_channels,) or None
    stride, padding : int or pair of int, default 1 and 0
        Symmetric zero padding, as in ``torch.nn.functional.conv2d``.
    groups : int, default 1
    min_val, max_val : float, default 0 and 6
        The clamp's bounds.

    Returns
    -------
    torch.Tensor of shape (batch, out_channels, out_height, out_width)
    """
    stride, padding = _pair(stride), _pair(padding)
    # oneDNN's clamp turns NaN into a bound; with a diverged weight, PyTorch's path keeps the NaN in the
    # loss, where the training loop sees it and restores the last good weights.
    finite = _fast_path(x, weight) and bool(torch.isfinite(weight).all()) and (
        bias is None or bool(torch.isfinite(bias).all()))
    if not (finite and fused_activation_available()):
        if groups == x.shape[1] and is_depthwise(weight, groups, 1):
            return F.hardtanh(depthwise_conv2d(x, weight, bias, stride, padding), min_val, max_val)
        return F.hardtanh(F.conv2d(x, weight, bias, stride, padding, 1, groups), min_val, max_val)
    return _Conv2dHardtanh.apply(x, weight, bias, stride, padding, groups, float(min_val), float(max_val))


def depthwise_conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                     stride=1, padding=0) -> torch.Tensor:
    """Depthwise 2-D convolution, ``F.conv2d(x, weight, bias, stride, padding, groups=C)``, faster to train on a CPU.

    The forward and the input gradient are PyTorch's; the weight gradient of
    a kernel larger than 3x3 on an output map of at most :data:`SMALL_MAP`
    pixels is computed from shifted views (see the module docstring for why
    and by how much). Results equal ``F.conv2d``'s up to float rounding.
    Falls back to ``F.conv2d`` itself off the CPU, in other dtypes than
    float32, under autocast and when gradients are off.

    Parameters
    ----------
    x : torch.Tensor of shape (batch, channels, height, width)
    weight : torch.Tensor of shape (channels, 1, kh, kw)
    bias : torch.Tensor of shape (channels,), optional
    stride, padding : int or pair of int, default 1 and 0
        As in ``torch.nn.functional.conv2d`` (symmetric zero padding).

    Returns
    -------
    torch.Tensor of shape (batch, channels, out_height, out_width)

    Raises
    ------
    ValueError
        If `weight` is not a depthwise weight for `x` (shape (channels, 1, kh, kw)).
    """
    if weight.dim() != 4 or weight.shape[1] != 1 or weight.shape[0] != x.shape[1]:
        raise ValueError(f"depthwise_conv2d needs a weight of shape ({x.shape[1]}, 1, kh, kw) for an input with "
                         f"{x.shape[1]} channels; got {tuple(weight.shape)}")
    stride, padding = _pair(stride), _pair(padding)
    if not _fast_path(x, weight):
        return F.conv2d(x, weight, bias, stride, padding, 1, x.shape[1])
    return _DepthwiseConv2d.apply(x, weight, bias, stride, padding)
