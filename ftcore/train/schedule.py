"""Learning rates per layer group and over the steps of training; pure functions.

The same functions set the optimizer's rates in :func:`ftcore.train.experiment.fit`
and draw the schedule in the dashboard before training, so the chart is the
schedule that runs.

- Peak rate per layer group (:func:`group_peak_lrs`): the head at ``lr``;
  unfrozen backbone groups either at ``lr * backbone_lr_scale``
  (discriminative learning rates, Howard & Ruder, "ULMFiT", 2018) or, with
  ``layer_decay``, at ``lr * layer_decay**d`` for a group ``d`` groups before
  the head (layer-wise learning-rate decay: Clark et al., "ELECTRA", 2020;
  Bao et al., "BEiT", 2022).
- Over the steps (:func:`lr_factor`): linear warm-up, then a cosine decay to
  zero (Loshchilov & Hutter, "SGDR", 2017; Goyal et al., "Accurate, Large
  Minibatch SGD", 2017, for the warm-up).
- Gradual unfreezing: backbone groups get rate 0 (and no gradient) for the
  first ``unfreeze_after`` epochs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from ftcore.core.config import TrainConfig
from ftcore.models.layers import HEAD, LayerGroup, trainable_param_names

__all__ = ["GroupRate", "group_peak_lrs", "lr_factor", "warmup_steps", "lr_schedule"]


@dataclass(frozen=True)
class GroupRate:
    """Peak learning rate of one layer group.

    Attributes
    ----------
    name : str
        Layer group name (coarse, from :func:`ftcore.models.layers.layer_groups`).
    index : int
        Position from the input, 0-based.
    distance : int
        Groups between it and the head: 0 for the head, 1 for the group just
        before it, ...
    lr : float
        Peak learning rate per step; 0.0 for a frozen group.
    trainable : bool
        Whether any of its parameters learn.
    """

    name: str
    index: int
    distance: int
    lr: float
    trainable: bool


def group_peak_lrs(groups: list[LayerGroup], trainable: tuple[str, ...] | list[str], train: TrainConfig,
                   ) -> list[GroupRate]:
    """Peak learning rate of every layer group.

    Parameters
    ----------
    groups : list of LayerGroup
        Coarse layer groups, input to output, head last.
    trainable : sequence of str
        Group and part names that learn (:func:`ftcore.models.layers.trainable_group_names`);
        a group with any trainable part counts as trainable.
    train : TrainConfig
        ``lr``, and ``layer_decay`` or ``backbone_lr_scale``.

    Returns
    -------
    list of GroupRate
        One per group, in the order of `groups`; frozen groups have ``lr`` 0.

    Notes
    -----
    With ``layer_decay = d`` the group ``k`` places before the head gets
    ``lr * d**k``, as in BEiT's and ELECTRA's layer-wise decay, where the
    embedding (our "stem") gets the smallest rate.
    """
    learn = trainable_param_names(groups, trainable)
    n = len(groups)
    out = []
    for pos, g in enumerate(groups):
        distance = 0 if g.is_head else n - 1 - pos
        is_trainable = any(p in learn for p in g.param_names)
        if not is_trainable:
            lr = 0.0
        elif g.is_head:
            lr = train.lr
        elif train.layer_decay is not None:
            lr = train.lr * float(train.layer_decay) ** distance
        else:
            lr = train.lr * train.backbone_lr_scale
        out.append(GroupRate(g.name, g.index, distance, float(lr), is_trainable))
    return out


def warmup_steps(train: TrainConfig, steps_per_epoch: int) -> int:
    """Warm-up length in steps: ``round(warmup_epochs * steps_per_epoch)``."""
    return int(round(float(train.warmup_epochs) * steps_per_epoch))


def lr_factor(step: int, total_steps: int, warmup: int = 0, start: int = 0) -> float:
    """Share of the peak learning rate applied at a step.

    Parameters
    ----------
    step : int
        0-based step.
    total_steps : int
        Steps of the whole training.
    warmup : int, default 0
        Linear warm-up steps: step ``k < warmup`` gets ``(k + 1) / (warmup + 1)``,
        so the rate climbs in equal steps to the peak, reached at step ``warmup``.
    start : int, default 0
        Steps before this one get 0 (a group still frozen by gradual
        unfreezing).

    Returns
    -------
    float
        In [0, 1]: after the warm-up, ``(1 + cos(pi * (k - warmup) / (total_steps - warmup))) / 2``,
        the cosine decay of SGDR without restarts (PyTorch's ``CosineAnnealingLR`` with ``eta_min=0``).
    """
    if step < start:
        return 0.0
    if step < warmup:
        return (step + 1) / (warmup + 1)
    span = max(total_steps - warmup, 1)
    return 0.5 * (1.0 + math.cos(math.pi * min(step - warmup, span) / span))


def lr_schedule(groups: list[LayerGroup], trainable: tuple[str, ...] | list[str], train: TrainConfig,
                steps_per_epoch: int) -> pd.DataFrame:
    """The learning rate of every trainable layer group at every step, before training.

    Parameters
    ----------
    groups, trainable, train
        As for :func:`group_peak_lrs`; also ``epochs``, ``warmup_epochs`` and
        ``unfreeze_after`` of `train`.
    steps_per_epoch : int
        Optimisation steps per epoch (training images // batch size, a last
        batch of one dropped), >= 1.

    Returns
    -------
    pandas.DataFrame
        Long form, columns ``step`` (1-based), ``epoch`` (1-based, fractional
        within an epoch: ``step / steps_per_epoch``), ``layer group`` and
        ``lr`` (per step); trainable groups only, the head first.
    """
    spe = max(int(steps_per_epoch), 1)
    total = train.epochs * spe
    warm = warmup_steps(train, spe)
    unfreeze_step = train.unfreeze_after * spe
    rates = [r for r in group_peak_lrs(groups, trainable, train) if r.trainable]
    rates.sort(key=lambda r: r.distance)
    rows = []
    for r in rates:
        start = 0 if r.name == HEAD else unfreeze_step
        for k in range(total):
            rows.append((k + 1, (k + 1) / spe, r.name, r.lr * lr_factor(k, total, warm, start)))
    return pd.DataFrame(rows, columns=["step", "epoch", "layer group", "lr"])
