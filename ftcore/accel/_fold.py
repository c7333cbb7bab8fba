"""Fold BatchNorm layers with fixed statistics into the convolution before them, for training.

A BatchNorm layer whose running statistics do not change (every frozen one,
and by default every one, see :func:`ftcore.models.layers.set_train_mode`) is an
affine map per channel: ``y = gamma * (x - mean) / sqrt(var + eps) + beta``.
After a convolution ``x = W * u + c`` it can be merged into that
convolution, ``W' = W * s`` and ``c' = beta + (c - mean) * s`` with
``s = gamma / sqrt(var + eps)`` (the folding used for inference by
``torch.ao.quantization.fuse_modules`` and TensorRT). Here ``W'`` and ``c'``
are recomputed from ``W``, ``gamma`` and ``beta`` at every step, so
gradients still reach all three and training learns exactly the same
function, while the per-element BatchNorm passes over the activations,
forward and backward, disappear (a large share of a mobile network's CPU
time).

Pairs are found from one forward pass with hooks (a BatchNorm whose input is
the very tensor a convolution returned) and kept only when the folded model
gives the same logits as the original on real images. Only the two modules'
``forward`` is replaced (an instance attribute), so module names, parameters
and state-dict keys never change, and the class's own ``forward`` is back
when the ``with`` block ends.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from timm.layers.conv2d_same import Conv2dSame
from timm.layers.padding import pad_same
from torch import nn

from ftcore.accel._kernels import conv2d_hardtanh, depthwise_conv2d, fused_activation_available, is_depthwise

__all__ = ["bn_folded", "foldable_pairs", "patch_forward"]

log = logging.getLogger(__name__)


def _foldable_norm(bn: nn.Module) -> bool:
    """Plain BatchNorm2d, or timm's BatchNormAct2d (normalise, drop, activate); unknown subclasses may do more."""
    if type(bn) is nn.BatchNorm2d:
        return True
    try:
        from timm.layers.norm_act import BatchNormAct2d
    except ImportError:  # pragma: no cover - timm is a dependency
        return False
    return type(bn) is BatchNormAct2d


def patch_forward(module: nn.Module, forward) -> Callable[[], None]:
    """Give one module instance another ``forward``; return the function that undoes it.

    The new function is an instance attribute, which shadows the class's
    ``forward``: module names, parameters, buffers and hooks stay as they are.
    Patches nest (the frozen-prefix stand-ins go over folded convolutions):
    undoing restores whatever instance ``forward`` was there before.
    """
    had = "forward" in module.__dict__
    previous = module.__dict__.get("forward")
    module.forward = forward

    def undo() -> None:
        if had:
            module.forward = previous
        else:
            module.__dict__.pop("forward", None)

    return undo


def _zero_padded(conv: nn.Module) -> bool:
    """Whether `conv` pads with zeros by numbers (or is timm's Conv2dSame), the padding the folded paths compute."""
    return type(conv) is Conv2dSame or (conv.padding_mode == "zeros" and not isinstance(conv.padding, str))


@contextlib.contextmanager
def _modes_kept(model: nn.Module) -> Iterator[None]:
    """Put `model` in eval mode for the block, then give every module back its own mode (``set_train_mode``'s)."""
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield
    finally:
        for mod, training in modes.items():
            mod.training = training


def _folded_forward(conv: nn.Conv2d, bn: nn.BatchNorm2d, clamp: tuple[float, float] | None = None):
    """Forward of `conv` with the fixed-statistics `bn` after it merged in (and `bn`'s clamp activation, if given)."""
    depthwise = is_depthwise(conv.weight, conv.groups, conv.dilation)

    def forward(x):
        inv = torch.rsqrt(bn.running_var + bn.eps)
        scale = inv * bn.weight if bn.weight is not None else inv
        shift = -bn.running_mean * scale
        if bn.bias is not None:
            shift = shift + bn.bias
        if conv.bias is not None:
            shift = shift + conv.bias * scale
        w = conv.weight * scale.reshape(-1, 1, 1, 1)
        if not _zero_padded(conv):
            return conv._conv_forward(x, w, shift)
        if type(conv) is Conv2dSame:  # timm's TensorFlow "same" padding, the only other convolution type folded
            x, padding = pad_same(x, w.shape[-2:], conv.stride, conv.dilation), (0, 0)
        else:
            padding = conv.padding
        if clamp is not None:  # ReLU6 written with the convolution's output (ftcore.accel._kernels)
            return conv2d_hardtanh(x, w, shift, conv.stride, padding, conv.groups, *clamp)
        if depthwise:  # same result, faster weight gradient on a CPU (ftcore.accel._kernels)
            return depthwise_conv2d(x, w, shift, conv.stride, padding)
        return F.conv2d(x, w, shift, conv.stride, padding, conv.dilation, conv.groups)

    return forward


def _after_forward(bn: nn.Module):
    """Forward of a folded BatchNorm module: what it does after normalising (timm: drop, then activation)."""
    if type(bn) is nn.BatchNorm2d:
        return lambda x: x
    act = _out_of_place(bn.act)
    return lambda x: act(bn.drop(x))


def _backward_runs(model: nn.Module, example: torch.Tensor) -> bool:
    """Whether a forward and backward pass of `model` on `example` runs (gradients returned, ``.grad`` untouched)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        return True
    try:
        with torch.enable_grad():
            torch.autograd.grad(model(example).float().sum(), params, allow_unused=True)
    except RuntimeError as err:
        log.info("the model modifies a fused activation's output in place (%s); folding without fusing", err)
        return False
    return True


def _fused_clamp(conv: nn.Module, bn: nn.Module) -> tuple[float, float] | None:
    """Bounds of `bn`'s activation when it is a clamp (ReLU6, Hardtanh) that oneDNN can apply inside `conv`."""
    if type(bn) is nn.BatchNorm2d or type(getattr(bn, "drop", None)) is not nn.Identity:
        return None
    act = getattr(bn, "act", None)
    dil = tuple(conv.dilation)
    if type(act) not in (nn.ReLU6, nn.Hardtanh) or dil != (1, 1) or not _zero_padded(conv):
        return None
    if not fused_activation_available():
        return None
    return float(act.min_val), float(act.max_val)


def _out_of_place(act: nn.Module):
    """`act` computed out of place: the same values, without the copy that autograd makes before an in-place one.

    Autograd clones the input of an in-place activation whose gradient needs
    it (``hardtanh_`` for ReLU6): a whole extra pass over the activations,
    4 of 6 ms for one 32x96x64x64 ReLU6 on a 2-core CPU.
    """
    if not getattr(act, "inplace", False):
        return act
    if type(act) in (nn.ReLU6, nn.Hardtanh):
        return lambda x: F.hardtanh(x, act.min_val, act.max_val)
    simple = {nn.ReLU: F.relu, nn.SiLU: F.silu, nn.Hardswish: F.hardswish, nn.Hardsigmoid: F.hardsigmoid}
    return simple.get(type(act), act)


def foldable_pairs(model: nn.Module, example: torch.Tensor, update_bn: bool = False) -> list[tuple[str, str]]:
    """Convolution/BatchNorm pairs whose BatchNorm can be folded during training.

    Parameters
    ----------
    model : torch.nn.Module
        Frozen parameters already have ``requires_grad=False``.
    example : torch.Tensor of shape (batch, 3, height, width)
        Inputs for one traced forward pass (eval mode, no gradients).
    update_bn : bool, default False
        As in :func:`ftcore.models.layers.set_train_mode`: when True, BatchNorm layers
        with trainable parameters update their statistics and are not folded.

    Returns
    -------
    list of (str, str)
        ``(convolution name, BatchNorm name)`` in ``model.named_modules()``.
    """
    # Tensor id -> (leaf module that returned it last, the tensor itself (kept alive, so that its id is not
    # reused during the pass), its version (an in-place change in between bumps it), whether that is a convolution).
    produced: dict[int, tuple[str, torch.Tensor, int, bool]] = {}
    pairs: list[tuple[str, str]] = []
    calls: dict[str, int] = {}
    handles = []
    for name, m in model.named_modules():
        foldable_bn = isinstance(m, nn.BatchNorm2d) and _foldable_norm(m) and m.running_var is not None
        foldable_bn = foldable_bn and not (update_bn and any(p.requires_grad for p in m.parameters()))
        if foldable_bn:
            def pre(mod, args, name=name):  # noqa: ARG001
                calls[name] = calls.get(name, 0) + 1
                x = args[0] if args else None
                seen = produced.get(id(x)) if isinstance(x, torch.Tensor) else None
                if seen is not None and seen[1] is x and seen[2] == x._version and seen[3]:
                    pairs.append((seen[0], name))
            handles.append(m.register_forward_pre_hook(pre))
        if next(m.children(), None) is None:  # a leaf: what it returns is its own (Dropout in eval returns its input)
            is_conv = type(m) in (nn.Conv2d, Conv2dSame)

            def post(mod, args, out, name=name, is_conv=is_conv, counted=foldable_bn):  # noqa: ARG001
                if not counted:  # a BatchNorm's calls are counted by its pre-hook
                    calls[name] = calls.get(name, 0) + 1
                if isinstance(out, torch.Tensor):
                    produced[id(out)] = (name, out, out._version, is_conv)
            handles.append(m.register_forward_hook(post))
    try:
        with _modes_kept(model), torch.no_grad():  # not inference_mode: version counters are needed
            model(example)
    finally:
        for h in handles:
            h.remove()
    # A module called more than once (shared) cannot be folded safely.
    return [(c, b) for c, b in pairs if calls.get(c) == 1 and calls.get(b) == 1]


@contextlib.contextmanager
def bn_folded(model: nn.Module, example: torch.Tensor, update_bn: bool = False,
              rtol: float = 1e-3, atol: float = 1e-4) -> Iterator[int]:
    """Fold fixed-statistics BatchNorm layers into their convolutions inside a ``with`` block.

    Parameters
    ----------
    model : torch.nn.Module
    example : torch.Tensor of shape (batch, 3, height, width)
        Real images after the validation transform, for finding the pairs and
        for the check that the folded model gives the same logits.
    update_bn : bool, default False
        See :func:`foldable_pairs`.
    rtol, atol : float
        Tolerances of the logits check (``torch.allclose``); folding changes
        rounding only.

    Yields
    ------
    int
        The number of BatchNorm layers folded (0 when the check failed or
        there was nothing to fold; the model is then unchanged).
    """
    pairs = foldable_pairs(model, example, update_bn)
    if not pairs:
        yield 0
        return
    with _modes_kept(model), torch.inference_mode():
        reference = model(example).float()
    patched: list = []  # undo functions

    def undo() -> None:
        for restore in reversed(patched):
            restore()
        patched.clear()

    def patch(fuse: bool) -> int:
        fused = 0
        for conv_name, bn_name in pairs:
            conv, bn = model.get_submodule(conv_name), model.get_submodule(bn_name)
            # Instance attributes shadow the class's forward; module names, parameters and hooks stay as they are.
            clamp = _fused_clamp(conv, bn) if fuse else None
            fused += clamp is not None
            after = (lambda x: x) if clamp is not None else _after_forward(bn)
            patched.extend([patch_forward(conv, _folded_forward(conv, bn, clamp)), patch_forward(bn, after)])
        return fused

    try:
        with _modes_kept(model):
            if patch(fuse=True) and not _backward_runs(model, example):
                # The model changes a fused output in place (e.g. ``y += shortcut``), which the fused
                # activation's gradient needs unchanged: fold without fusing.
                undo()
                patch(fuse=False)
            with torch.inference_mode():
                folded = model(example).float()
        ok = folded.shape == reference.shape and torch.allclose(folded, reference, rtol=rtol, atol=atol)
        if not ok:
            log.info("folding BatchNorm changed the logits (max difference %.3g); training unfolded",
                     (folded - reference).abs().max().item())
            undo()
        yield len(patched) // 2
    finally:
        undo()
