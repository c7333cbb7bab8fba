"""The two-model experiment: baseline and fine-tuned model on the same split, into the run store.

:func:`run_experiment` trains the frozen baseline (linear probe) and then
the fine-tuned model with :func:`ftcore.train.loop.fit`, through the fast paths
(decoded-image cache, BatchNorm folding, frozen prefix computed once,
``channels_last``), and writes everything into the run store. Nothing here
knows about Streamlit.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from ftcore.accel import bn_folded, compute_features, cut_applied, feature_bytes, find_prefix_cut, keep_freed_memory
from ftcore.core.config import RunConfig, TrainConfig
from ftcore.data.augment import preset_transforms
from ftcore.data.split import ArrayImageDataset, DatasetSplit, balanced_sampler, class_weights, prepare_split
from ftcore.models.backbones import build_model
from ftcore.models.layers import apply_freeze, layer_groups, trainable_group_names
from ftcore.train.loop import EpochEvent, FitResult, StepEvent, _to_device, evaluate, fit, pick_device

__all__ = ["StepEvent", "EpochEvent", "FitResult", "fit", "evaluate", "run_experiment", "pick_device", "Cancelled",
           "step_cost_factor", "set_threads", "feature_cache_limit_bytes"]

log = logging.getLogger(__name__)


class Cancelled(Exception):
    """Raised inside :func:`run_experiment` when the stop flag was seen."""


def _order(labels: np.ndarray, n_classes: int, train: TrainConfig, seed: int) -> dict:
    """DataLoader arguments of the training order: shuffled, or drawn class-balanced (``class_balance="sampler"``)."""
    if train.class_balance == "sampler":
        return {"sampler": balanced_sampler(labels, n_classes, seed)}
    return {"shuffle": True}


def _loaders(split: DatasetSplit, train_tf, val_tf, train: TrainConfig, seed: int) -> tuple[DataLoader, DataLoader]:
    n_train = len(split.train_images)
    bs = min(train.batch_size, n_train)
    # A last batch of one image breaks BatchNorm in training mode: drop it.
    drop_last = n_train % bs == 1
    g = torch.Generator().manual_seed(seed)
    tl = DataLoader(ArrayImageDataset(split.train_images, split.train_labels, train_tf), batch_size=bs,
                    drop_last=drop_last, generator=g, num_workers=train.num_workers,
                    persistent_workers=train.num_workers > 0,
                    **_order(split.train_labels, len(split.class_names), train, seed))
    vl = DataLoader(ArrayImageDataset(split.val_images, split.val_labels, val_tf), batch_size=max(bs, 64),
                    shuffle=False, num_workers=train.num_workers, persistent_workers=train.num_workers > 0)
    return tl, vl


def step_cost_factor(groups: list, trainable: tuple[str, ...]) -> float:
    """Estimated cost of a fine-tuning step relative to a linear-probe step.

    A linear probe costs about one forward pass per image; backpropagating
    through the backbone adds about two more for the part that learns (the
    backward pass costs about twice the forward, Kaplan et al., "Scaling Laws
    for Neural Language Models", 2020). The learning share is approximated by
    the share of body parameters from the first unfrozen group to the output.

    Parameters
    ----------
    groups : list of ftcore.models.layers.LayerGroup
    trainable : tuple of str
        Names of the unfrozen groups.

    Returns
    -------
    float
        In [1, 3].
    """
    body = [g for g in groups if not g.is_head]
    total = sum(g.n_params for g in body)
    first = next((i for i, g in enumerate(body) if g.name in trainable), None)
    if first is None or total == 0:
        return 1.0
    return 1.0 + 2.0 * sum(g.n_params for g in body[first:]) / total


def set_threads(num_workers: int = 0) -> int:
    """Give PyTorch's intra-op pool the cores that data-loader workers leave free.

    Parameters
    ----------
    num_workers : int, default 0
        Data-loader worker processes that will decode images at the same time
        (each runs one thread; PyTorch sets that in its workers).

    Returns
    -------
    int
        Threads now used by PyTorch: the cores this process may run on
        (``os.sched_getaffinity``) minus `num_workers`, at least 1; when the
        environment sets ``OMP_NUM_THREADS``, that choice is kept instead.
    """
    import os

    if os.environ.get("OMP_NUM_THREADS"):
        return torch.get_num_threads()
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    n = max(1, cores - num_workers)
    torch.set_num_threads(n)
    return n


def feature_cache_limit_bytes() -> int:
    """Most memory the cached activations of one model may take (``FTCORE_FEATURE_CACHE_MAX_GB``, default 2 GB)."""
    from ftcore.data.cache import gigabytes_from_env

    return gigabytes_from_env("FTCORE_FEATURE_CACHE_MAX_GB", 2.0)


def _prefix_inputs(model, example: torch.Tensor, split: DatasetSplit, val_tf, tc: TrainConfig, device,
                   tl: DataLoader, vl: DataLoader, channels_last: bool, say: Callable[[str], None],
                   stop: Callable[[], bool]):
    """Decide on the frozen-prefix path; return (cut or None, train loader, val loader, info for the run)."""
    if not tc.feature_cache:
        return None, tl, vl, {"used": False, "reason": "turned off in the settings"}
    n = len(split.train_images) + len(split.val_images)
    cut = find_prefix_cut(model, example)
    if cut is None:
        return None, tl, vl, {"used": False, "reason": "the first layer group learns, so no frozen layers come before it"
                              if _first_module_trains(model) else "no verified cut point in this architecture"}
    need = feature_bytes(cut, n)
    limit = feature_cache_limit_bytes()
    if need > limit:
        return None, tl, vl, {"used": False, "reason": f"the activations at {cut.entry} would take "
                              f"{need / 1e9:.1f} GB (limit {limit / 1e9:.1f} GB, FTCORE_FEATURE_CACHE_MAX_GB)"}

    def batches(images):
        loader = DataLoader(ArrayImageDataset(images, np.zeros(len(images), np.int64), val_tf), batch_size=64,
                            num_workers=tc.num_workers)
        done = 0
        for x, _ in loader:
            done += len(x)
            if done % 640 < 64 or done == len(images):
                say(f"computing the frozen layers once: {done}/{len(images)} images")
            yield _to_device(x, device, channels_last)

    t0 = time.perf_counter()
    train_feats = compute_features(model, cut, batches(split.train_images), stop)
    val_feats = compute_features(model, cut, batches(split.val_images), stop) if train_feats is not None else None
    if val_feats is None:
        raise Cancelled()
    seconds = time.perf_counter() - t0
    bs = tl.batch_size
    g = torch.Generator().manual_seed(tc.seed)
    mtl = DataLoader(TensorDataset(train_feats, torch.as_tensor(split.train_labels)), batch_size=bs,
                     drop_last=tl.drop_last, generator=g,
                     **_order(split.train_labels, len(split.class_names), tc, tc.seed))
    mvl = DataLoader(TensorDataset(val_feats, torch.as_tensor(split.val_labels)), batch_size=vl.batch_size)
    info = {"used": True, "entry": cut.entry, "feature_shape": list(cut.feature_shape),
            "bytes": need, "prefix_param_share": round(cut.prefix_share, 4),
            "seconds": round(seconds, 2)}
    return cut, mtl, mvl, info


def _first_module_trains(model: nn.Module) -> bool:
    first = next((p for p in model.parameters()), None)
    return first is not None and first.requires_grad


def _device_text(device: torch.device) -> str:
    """The device and its autocast type, as shown to the user (issue 4)."""
    from ftcore.accel import device_summary

    return device_summary(device.type)


def _seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and PyTorch's generators (timm's transforms draw from ``random``)."""
    import random

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def run_experiment(
    config: RunConfig,
    store,
    run_id: str,
    should_stop: Callable[[], bool] | None = None,
    on_event: Callable[[object], None] | None = None,
) -> dict:
    """Train the frozen baseline and the fine-tuned model on the same split.

    Parameters
    ----------
    config : RunConfig
    store : ftcore.runs.store.RunStore
        Receives status, progress, per-epoch metrics, predictions and weights.
    run_id : str
        A run created with ``store.create_run(config)``.
    should_stop : callable or None
        Polled every batch; True stops the run with status ``cancelled``.
    on_event : callable or None
        Also receives every :class:`StepEvent` and :class:`EpochEvent`.

    Returns
    -------
    dict
        ``{"baseline": {...}, "finetuned": {...}}`` (baseline absent when not
        trained) with ``val_accuracy``, ``val_macro_recall``,
        ``train_images_per_second`` and ``seconds`` each, plus ``status``.

    Raises
    ------
    FtcoreError
        Any data, weights or training problem; the run is marked ``failed``
        with the message before the error propagates.
    """
    from ftcore.core.errors import FtcoreError
    from ftcore.runs.store import MODELS

    tc = config.train
    _seed_everything(tc.seed)
    stop = should_stop or (lambda: False)
    summary: dict = {}
    try:
        store.update(run_id, status="running", phase="preparing", message="building the backbone")
        device = pick_device(tc.device)
        threads = set_threads(tc.num_workers)
        if device.type == "cpu":
            keep_freed_memory()  # activations reused without page faults at every step (ftcore.accel._kernels)
        # Build once to learn transforms; class count is set after the scan.
        probe, src = build_model(config.backbone.name, 2, config.backbone.weights, tc.img_size)
        train_tf, val_tf, short = preset_transforms(probe, tc.img_size, tc.augment)  # issue 4: augmentation preset
        del probe

        def progress(done: int, total: int) -> None:
            if done % 10 == 0 and stop():
                raise Cancelled()
            if done % 50 == 0 or done == total:
                store.update(run_id, message=f"reading images: {done}/{total}")

        store.update(run_id, phase="preparing", message="reading images")
        split = prepare_split(config.data, seed=tc.seed, short_side=short, progress=progress,
                              store_root=store.root)
        n_classes = len(split.class_names)
        store.merge_info(
            run_id, device=str(device), device_text=_device_text(device), threads=threads, weights=src.describe(),
            weights_kind=src.kind,
            class_names=split.class_names, layout=split.layout, counts=split.counts(),
            skipped=[p.__dict__ for p in split.problems if p.action == "skipped"],
            majority_accuracy=split.majority_accuracy, data_warnings=list(split.warnings),
            empty_classes=[p.path for p in split.problems if p.kind == "empty_class"],
        )
        store.save_json(run_id, "split.json", {"train": split.train_files, "val": split.val_files,
                                               "class_names": split.class_names})
        tl, vl = _loaders(split, train_tf, val_tf, tc, tc.seed)
        # Class-weighted cross-entropy for imbalanced classes (the validation loss stays unweighted).
        loss_weights = class_weights(split.train_labels, n_classes).to(device) if tc.class_balance == "loss" else None
        plan = [m for m in MODELS if tc.baseline or m == "finetuned"]
        steps_per_model = tc.epochs * len(tl)
        total_steps = steps_per_model * len(plan)
        store.update(run_id, total_steps=total_steps, step=0)
        done_steps = 0
        last_write = [0.0]

        later_factor = 1.0  # step cost of the fine-tuned model relative to the one training now
        for i_model, model_name in enumerate(plan):
            _seed_everything(tc.seed)  # same head initialisation and augmentation stream for both models
            if i_model:  # and the same batch order: the loader's own generator and sampler start afresh
                tl, vl = _loaders(split, train_tf, val_tf, tc, tc.seed)
            model, _ = build_model(config.backbone.name, n_classes, config.backbone.weights, tc.img_size)
            channels_last = tc.channels_last and any(isinstance(m, nn.Conv2d) for m in model.modules())
            groups = layer_groups(model)
            unfreeze = "head" if model_name == "baseline" else config.freeze.unfreeze
            trainable = trainable_group_names(groups, unfreeze)
            if model_name == "baseline":
                later_factor = step_cost_factor(groups, trainable_group_names(groups, config.freeze.unfreeze))
            steps_after = steps_per_model * (len(plan) - 1 - i_model)
            freeze = apply_freeze(model, groups, trainable)
            store.merge_info(run_id, **{f"{model_name}_trainable_groups": list(freeze.trainable_groups),
                                        f"{model_name}_trainable_params": freeze.n_trainable,
                                        f"{model_name}_frozen_params": freeze.n_frozen})
            model.to(device)
            if channels_last:
                model.to(memory_format=torch.channels_last)
            example = torch.stack([val_tf(Image.fromarray(a)) for a in split.train_images[:4]]).to(device)
            if channels_last:
                example = example.contiguous(memory_format=torch.channels_last)
            # Fixed-statistics BatchNorm folded into its convolution and the frozen prefix computed once:
            # both undone when the block ends, so the saved weights keep their usual names.
            with contextlib.ExitStack() as paths:
                n_folded = paths.enter_context(bn_folded(model, example, tc.update_bn))
                cut, mtl, mvl, prefix_info = _prefix_inputs(model, example, split, val_tf, tc, device, tl, vl,
                                                            channels_last, lambda msg, m=model_name: store.update(
                                                                run_id, phase=m, message=f"{m}: {msg}"), stop)
                store.merge_info(run_id, **{f"{model_name}_prefix": prefix_info, f"{model_name}_folded_bn": n_folded})
                store.update(run_id, phase=model_name, message=f"training the {model_name} model")
                base = done_steps

                def on_step(ev: StepEvent, base: int = base, steps_after: int = steps_after) -> None:
                    now = time.perf_counter()
                    s = base + ev.step
                    if now - last_write[0] > 0.5 or ev.step == ev.total_steps:
                        rate = ev.seconds / ev.step  # this model's seconds per step, validation included
                        eta = rate * (ev.total_steps - ev.step) + rate * later_factor * steps_after
                        store.update(run_id, step=s, eta_seconds=eta,
                                     message=f"{ev.model}: epoch {ev.epoch}/{tc.epochs}, step {ev.step} of "
                                             f"{ev.total_steps} (all epochs), loss {ev.loss:.3f}")
                        last_write[0] = now
                    if on_event:
                        on_event(ev)

                def on_epoch(ev: EpochEvent) -> None:
                    store.add_epoch(run_id, ev.model, ev.epoch, **{k: getattr(ev, k) for k in (
                        "train_loss", "train_accuracy", "train_macro_recall", "val_loss", "val_accuracy",
                        "val_macro_recall", "seconds", "images_per_second")})
                    store.add_layer_stats(run_id, ev.model, ev.epoch, ev.layers)  # what training did per group
                    if on_event:
                        on_event(ev)

                forward = paths.enter_context(cut_applied(model, cut)) if cut is not None else None
                res = fit(model, mtl, mvl, tc, model_name, device, on_step, on_epoch, stop, forward=forward,
                          channels_last=channels_last, groups=groups, loss_weights=loss_weights)
            done_steps += steps_per_model
            if res.val_pred is not None:
                store.save_predictions(run_id, model_name, res.val_true, res.val_pred, res.val_probs, split.val_files)
                last = res.final  # the best epoch with early stopping, else the last
                summary[model_name] = {
                    "val_accuracy": last.val_accuracy, "val_macro_recall": last.val_macro_recall,
                    "train_images_per_second": res.images_per_second, "seconds": res.seconds,
                    "epochs_done": len(res.history), "best_epoch": res.best_epoch,
                    "stopped_early": res.stopped_early,
                }
            if model_name == "finetuned" and res.history:
                from safetensors.torch import save_file

                sd = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
                save_file(sd, str(store.run_dir(run_id) / "finetuned.safetensors"))
            if res.cancelled:
                raise Cancelled()
        store.save_json(run_id, "summary.json", summary)
        store.update(run_id, status="finished", phase="done", step=total_steps, eta_seconds=0.0,
                     message="finished")
        summary["status"] = "finished"
        return summary
    except Cancelled:
        store.save_json(run_id, "summary.json", summary)
        store.update(run_id, status="cancelled", eta_seconds=None, message="cancelled by the user; "
                     "metrics of finished epochs are kept")
        summary["status"] = "cancelled"
        return summary
    except FtcoreError as e:
        store.update(run_id, status="failed", error=str(e), eta_seconds=None, message="failed")
        raise
    except Exception as e:
        log.debug("run %s failed", run_id, exc_info=True)
        store.update(run_id, status="failed", error=f"internal error: {type(e).__name__}: {e}",
                     eta_seconds=None, message="failed")
        raise
