"""Fold BatchNorm layers with fixed statistics into the convolution before them, for training.

A BatchNorm layer whose running statistics do not change (every frozen one,
and by default every one, see :func:`ftcore.layers.set_train_mode`) is an
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
gives the same logits as the original on real images; the original modules
come back when the ``with`` block ends, so saved weights keep their names.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Iterator

import torch
from torch import nn
from torch.func import functional_call

__all__ = ["bn_folded", "foldable_pairs"]

log = logging.getLogger(__name__)


def _after_norm(bn: nn.Module) -> nn.Module | None:
    """What a BatchNorm module does after normalising: timm's BatchNormAct2d drops and activates."""
    if type(bn) is nn.BatchNorm2d:
        return nn.Identity()
    try:
        from timm.layers.norm_act import BatchNormAct2d
    except ImportError:  # pragma: no cover - timm is a dependency
        return None
    if type(bn) is BatchNormAct2d:
        return _DropAct(bn.drop, bn.act)
    return None  # an unknown subclass may do more in forward: leave it alone


class _DropAct(nn.Module):
    def __init__(self, drop: nn.Module, act: nn.Module) -> None:
        super().__init__()
        self.drop = drop
        self.act = act

    def forward(self, x):
        return self.act(self.drop(x))


class _FoldedConv(nn.Module):
    """A convolution followed by a fixed-statistics BatchNorm, computed as one convolution."""

    def __init__(self, conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
        super().__init__()
        self.conv = conv
        self.bn = bn

    def forward(self, x):
        bn, conv = self.bn, self.conv
        inv = torch.rsqrt(bn.running_var + bn.eps)
        scale = inv * bn.weight if bn.weight is not None else inv
        shift = -bn.running_mean * scale
        if bn.bias is not None:
            shift = shift + bn.bias
        if conv.bias is not None:
            shift = shift + conv.bias * scale
        w = conv.weight * scale.reshape(-1, 1, 1, 1)
        return functional_call(conv, {"weight": w, "bias": shift}, (x,))


def foldable_pairs(model: nn.Module, example: torch.Tensor, update_bn: bool = False) -> list[tuple[str, str]]:
    """Convolution/BatchNorm pairs whose BatchNorm can be folded during training.

    Parameters
    ----------
    model : torch.nn.Module
        Frozen parameters already have ``requires_grad=False``.
    example : torch.Tensor of shape (batch, 3, height, width)
        Inputs for one traced forward pass (eval mode, no gradients).
    update_bn : bool, default False
        As in :func:`ftcore.layers.set_train_mode`: when True, BatchNorm layers
        with trainable parameters update their statistics and are not folded.

    Returns
    -------
    list of (str, str)
        ``(convolution name, BatchNorm name)`` in ``model.named_modules()``.
    """
    produced: dict[int, str] = {}
    pairs: list[tuple[str, str]] = []
    calls: dict[str, int] = {}
    handles = []
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d) and m.groups >= 1 and type(m).__name__ in ("Conv2d", "Conv2dSame"):
            def post(mod, args, out, name=name):  # noqa: ARG001
                calls[name] = calls.get(name, 0) + 1
                produced[id(out)] = name
            handles.append(m.register_forward_hook(post))
        elif isinstance(m, nn.BatchNorm2d) and _after_norm(m) is not None and m.running_var is not None:
            if update_bn and any(p.requires_grad for p in m.parameters()):
                continue

            def pre(mod, args, name=name):  # noqa: ARG001
                calls[name] = calls.get(name, 0) + 1
                conv = produced.get(id(args[0]))
                if conv is not None:
                    pairs.append((conv, name))
            handles.append(m.register_forward_pre_hook(pre))
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            model(example)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    # A module called more than once (shared) cannot be folded safely.
    return [(c, b) for c, b in pairs if calls.get(c) == 1 and calls.get(b) == 1]


def _swap(model: nn.Module, name: str, new: nn.Module) -> nn.Module:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    old = getattr(parent, child)
    setattr(parent, child, new)
    return old


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
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        reference = model(example).float()
    originals: list[tuple[str, nn.Module]] = []
    try:
        for conv_name, bn_name in pairs:
            conv, bn = model.get_submodule(conv_name), model.get_submodule(bn_name)
            originals.append((conv_name, _swap(model, conv_name, _FoldedConv(conv, bn))))
            originals.append((bn_name, _swap(model, bn_name, _after_norm(bn))))
        with torch.inference_mode():
            folded = model(example).float()
        ok = folded.shape == reference.shape and torch.allclose(folded, reference, rtol=rtol, atol=atol)
        if not ok:
            log.info("folding BatchNorm changed the logits (max difference %.3g); training unfolded",
                     (folded - reference).abs().max().item())
            for name, mod in reversed(originals):
                _swap(model, name, mod)
            originals.clear()
        model.train(was_training)
        yield len(originals) // 2
    finally:
        for name, mod in reversed(originals):
            _swap(model, name, mod)
        model.train(was_training)
