"""What training did to each layer group, and weight snapshots to go back to.

:class:`LayerMonitor` measures per layer group and epoch the relative change
of the weights from those training started with, ``||w - w0|| / ||w0||``
(the group's parameters taken as one vector), and the gradient norm;
:func:`snapshot` and :func:`restore` keep and bring back the weights of a
good epoch (after a non-finite loss, or the best epoch for early stopping).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ftcore.core.events import LayerStats
from ftcore.models.layers import LayerGroup

__all__ = ["LayerStats", "LayerMonitor", "snapshot", "restore"]


class LayerMonitor:
    """Track weight change, gradient norm and learning rate per layer group.

    Parameters
    ----------
    model : torch.nn.Module
        Trainable parameters have ``requires_grad=True`` when this is built;
        their values now are the w0 of :attr:`LayerStats.relative_change`
        (copied, on the model's device).
    groups : list of LayerGroup
        Coarse layer groups of `model`.
    """

    def __init__(self, model: nn.Module, groups: list[LayerGroup]) -> None:
        params = dict(model.named_parameters())
        self.groups = groups
        self._params: list[list[torch.Tensor]] = []  # trainable parameters per group
        self._w0: list[list[torch.Tensor]] = []
        self._norm0: list[float] = []
        self.trainable = []
        for g in groups:
            ps = [params[n] for n in g.param_names if n in params]
            tr = [p for p in ps if p.requires_grad]
            self._params.append(tr)
            self._w0.append([p.detach().clone() for p in tr])
            self._norm0.append(math.sqrt(sum(float(p.detach().float().pow(2).sum()) for p in ps)))
            self.trainable.append(bool(tr))
        self._reset()

    def _reset(self) -> None:
        n = len(self.groups)
        self._grad_sum = [0.0] * n
        self._lr_sum = [0.0] * n
        self._steps = 0

    @torch.no_grad()
    def record_step(self, lrs: list[float]) -> None:
        """Add one step's gradient norms (call after ``backward``) and learning rates (one per group)."""
        for i, ps in enumerate(self._params):
            grads = [p.grad for p in ps if p.grad is not None]
            if grads:
                norms = torch._foreach_norm(grads)
                self._grad_sum[i] += float(torch.linalg.vector_norm(torch.stack([x.float() for x in norms])))
            self._lr_sum[i] += float(lrs[i])
        self._steps += 1

    @torch.no_grad()
    def epoch_stats(self) -> tuple[LayerStats, ...]:
        """Statistics of the epoch since the last call; starts a new epoch."""
        out = []
        k = max(self._steps, 1)
        for i, g in enumerate(self.groups):
            diff = 0.0
            for p, p0 in zip(self._params[i], self._w0[i]):
                diff += float((p.detach().float() - p0.float()).pow(2).sum())
            rel = math.sqrt(diff) / self._norm0[i] if self._norm0[i] > 0 else float("nan")
            out.append(LayerStats(g.name, g.index, rel, self._grad_sum[i] / k, self._lr_sum[i] / k,
                                  self.trainable[i]))
        self._reset()
        return tuple(out)


def snapshot(model: nn.Module, param_names: set[str] | None = None) -> dict[str, torch.Tensor]:
    """Copies of the named parameters (all trainable ones when None) and of every buffer.

    Buffers (BatchNorm running statistics) are included because BatchNorm in
    an unfrozen group may update them (``update_bn``).

    Returns
    -------
    dict of str to Tensor
        Detached clones on the model's device, keyed as in ``state_dict``.
    """
    out = {}
    for n, p in model.named_parameters():
        if (p.requires_grad if param_names is None else n in param_names):
            out[n] = p.detach().clone()
    for n, b in model.named_buffers():
        out[n] = b.detach().clone()
    return out


@torch.no_grad()
def restore(model: nn.Module, snap: dict[str, torch.Tensor]) -> None:
    """Copy a :func:`snapshot` back into the model, in place."""
    tensors = dict(model.named_parameters())
    tensors.update(dict(model.named_buffers()))
    for n, v in snap.items():
        tensors[n].copy_(v)
