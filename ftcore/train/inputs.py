"""What a model of a run trains on: the data loaders in the run's batch order, or cached activations.

:func:`make_loaders` gives both models of a run the same batch order (a
generator seeded with the run's seed, made afresh for each model).
:func:`frozen_prefix_inputs` decides whether the frozen layers before the
first learning one are computed once (:func:`ftcore.accel.find_prefix_cut`):
then the loaders yield their cached activations instead of images, and the
decision is a :class:`ftcore.core.records.PrefixDecision`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from ftcore.accel import PrefixCut, compute_features, feature_bytes, find_prefix_cut
from ftcore.core.config import TrainConfig
from ftcore.core.records import PrefixDecision
from ftcore.data.split import ArrayImageDataset, DatasetSplit, balanced_sampler
from ftcore.train.loop import Runtime

__all__ = ["Cancelled", "make_loaders", "feature_cache_limit_bytes", "frozen_prefix_inputs"]


class Cancelled(Exception):
    """The stop flag was seen while a run prepared or trained a model."""


def _order(labels: np.ndarray, n_classes: int, train: TrainConfig, seed: int) -> dict:
    """DataLoader arguments of the training order: shuffled, or drawn class-balanced (``class_balance="sampler"``)."""
    if train.class_balance == "sampler":
        return {"sampler": balanced_sampler(labels, n_classes, seed)}
    return {"shuffle": True}


def make_loaders(split: DatasetSplit, train_tf: Callable, val_tf: Callable, train: TrainConfig, seed: int,
                 ) -> tuple[DataLoader, DataLoader]:
    """Training and validation loaders of a split.

    Parameters
    ----------
    split : DatasetSplit
    train_tf, val_tf : callable
        PIL image to Tensor of shape (3, size, size) (:func:`ftcore.data.augment.build_transforms`).
    train : TrainConfig
        ``batch_size`` (capped at the training images), ``num_workers``, ``class_balance``.
    seed : int
        Seed of the loader's own generator (and of a class-balanced sampler's).

    Returns
    -------
    train_loader, val_loader : DataLoader
        The training loader drops a last batch of one image (BatchNorm in
        training mode cannot take it); validation batches hold at least 64.
    """
    n_train = len(split.train_images)
    bs = min(train.batch_size, n_train)
    drop_last = n_train % bs == 1
    g = torch.Generator().manual_seed(seed)
    tl = DataLoader(ArrayImageDataset(split.train_images, split.train_labels, train_tf), batch_size=bs,
                    drop_last=drop_last, generator=g, num_workers=train.num_workers,
                    persistent_workers=train.num_workers > 0,
                    **_order(split.train_labels, len(split.class_names), train, seed))
    vl = DataLoader(ArrayImageDataset(split.val_images, split.val_labels, val_tf), batch_size=max(bs, 64),
                    shuffle=False, num_workers=train.num_workers, persistent_workers=train.num_workers > 0)
    return tl, vl


def feature_cache_limit_bytes() -> int:
    """Most memory the cached activations of one model may take (``FTCORE_FEATURE_CACHE_MAX_GB``, default 2 GB)."""
    from ftcore.data.cache import gigabytes_from_env

    return gigabytes_from_env("FTCORE_FEATURE_CACHE_MAX_GB", 2.0)


def _first_module_trains(model: nn.Module) -> bool:
    first = next((p for p in model.parameters()), None)
    return first is not None and first.requires_grad


def frozen_prefix_inputs(model: nn.Module, example: torch.Tensor, split: DatasetSplit, val_tf: Callable,
                         train: TrainConfig, runtime: Runtime, loaders: tuple[DataLoader, DataLoader],
                         say: Callable[[str], None], should_stop: Callable[[], bool],
                         ) -> tuple[PrefixCut | None, DataLoader, DataLoader, PrefixDecision]:
    """Compute the frozen layers before the first learning one once, when that is possible and allowed.

    Parameters
    ----------
    model : torch.nn.Module
        Frozen, on the runtime's device (its BatchNorm folded or not).
    example : Tensor of shape (n, 3, size, size)
        A few validation-transformed training images, to find and check the cut.
    split : DatasetSplit
    val_tf : callable
        The deterministic transform: cached activations are computed once, without augmentation.
    train : TrainConfig
        ``feature_cache`` (off: never), ``seed``, ``num_workers``, ``class_balance``.
    runtime : Runtime
        Device and layout of the batches.
    loaders : (DataLoader, DataLoader)
        The image loaders, returned as they are when no prefix is cached.
    say : callable
        Receives progress messages.
    should_stop : callable
        Polled every batch while computing.

    Returns
    -------
    cut : PrefixCut or None
    train_loader, val_loader : DataLoader
        Of cached activations (same batch size, order and seed as the image loaders) when `cut` is not None.
    decision : PrefixDecision
        Used or not, and why; where the cut is, its memory and time.

    Raises
    ------
    Cancelled
        If `should_stop` returned True while computing.
    """
    tl, vl = loaders
    if not train.feature_cache:
        return None, tl, vl, PrefixDecision(False, "turned off in the settings")
    cut = find_prefix_cut(model, example)
    if cut is None:
        reason = ("the first layer group learns, so no frozen layers come before it" if _first_module_trains(model)
                  else "no verified cut point in this architecture")
        return None, tl, vl, PrefixDecision(False, reason)
    need = feature_bytes(cut, len(split.train_images) + len(split.val_images))
    limit = feature_cache_limit_bytes()
    if need > limit:
        return None, tl, vl, PrefixDecision(False, f"the activations at {cut.entry} would take {need / 1e9:.1f} GB "
                                                   f"(limit {limit / 1e9:.1f} GB, FTCORE_FEATURE_CACHE_MAX_GB)")

    def batches(images: list[np.ndarray]) -> Iterator[torch.Tensor]:
        loader = DataLoader(ArrayImageDataset(images, np.zeros(len(images), np.int64), val_tf), batch_size=64,
                            num_workers=train.num_workers)
        done = 0
        for x, _ in loader:
            done += len(x)
            if done % 640 < 64 or done == len(images):
                say(f"computing the frozen layers once: {done}/{len(images)} images")
            yield runtime.to_device(x)

    t0 = time.perf_counter()
    train_feats = compute_features(model, cut, batches(split.train_images), should_stop)
    val_feats = None if train_feats is None else compute_features(model, cut, batches(split.val_images), should_stop)
    if val_feats is None:
        raise Cancelled()
    seconds = time.perf_counter() - t0
    g = torch.Generator().manual_seed(train.seed)
    mtl = DataLoader(TensorDataset(train_feats, torch.as_tensor(split.train_labels)), batch_size=tl.batch_size,
                     drop_last=tl.drop_last, generator=g,
                     **_order(split.train_labels, len(split.class_names), train, train.seed))
    mvl = DataLoader(TensorDataset(val_feats, torch.as_tensor(split.val_labels)), batch_size=vl.batch_size)
    return cut, mtl, mvl, PrefixDecision(True, entry=cut.entry, feature_shape=tuple(cut.feature_shape), bytes=need,
                                         prefix_param_share=round(cut.prefix_share, 4), seconds=round(seconds, 2))
