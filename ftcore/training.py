"""The training loop and the two-model experiment; UI-agnostic.

:func:`fit` trains one model and reports typed events to callbacks.
:func:`run_experiment` trains the frozen baseline (linear probe) and then
the fine-tuned model on the same split and writes everything into the run
store. Nothing here knows about Streamlit.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import nn
from PIL import Image
from torch.utils.data import DataLoader, TensorDataset

from .backbones import build_model
from .config import RunConfig, TrainConfig
from .data import ArrayImageDataset, DatasetSplit, build_transforms, prepare_split
from .errors import TrainingError
from .fold import bn_folded
from .layers import apply_freeze, classifier_modules, layer_groups, set_train_mode, trainable_group_names
from .metrics import macro_recall
from .prefix import compute_features, cut_applied, feature_bytes, find_prefix_cut

__all__ = ["StepEvent", "EpochEvent", "FitResult", "fit", "run_experiment", "pick_device", "Cancelled",
           "step_cost_factor", "set_threads", "feature_cache_limit_bytes"]

log = logging.getLogger(__name__)


class Cancelled(Exception):
    """Raised inside :func:`run_experiment` when the stop flag was seen."""


@dataclass(frozen=True)
class StepEvent:
    """One optimisation step finished.

    Attributes
    ----------
    model : str
        ``"baseline"`` or ``"finetuned"``.
    epoch : int
        1-based epoch.
    step : int
        1-based step within this model's training.
    total_steps : int
        Steps this model will take.
    loss : float
        Mean cross-entropy of the batch.
    lr : float
        Learning rate applied at this step.
    seconds : float
        Wall time since this model's training began.
    """

    model: str
    epoch: int
    step: int
    total_steps: int
    loss: float
    lr: float
    seconds: float


@dataclass(frozen=True)
class EpochEvent:
    """One epoch finished, with training and validation metrics.

    Accuracies and recalls are fractions in [0, 1]; losses are mean
    cross-entropy per image; ``seconds`` is the epoch's wall time including
    validation; ``images_per_second`` counts training images seen so far
    in this model's training over the time of its training steps, reading
    and augmenting the batches included (validation excluded).
    """

    model: str
    epoch: int
    epochs: int
    train_loss: float
    train_accuracy: float
    train_macro_recall: float
    val_loss: float
    val_accuracy: float
    val_macro_recall: float
    seconds: float
    images_per_second: float


@dataclass
class FitResult:
    """What :func:`fit` returns.

    Attributes
    ----------
    history : list of EpochEvent
    val_true, val_pred : numpy.ndarray of int64, shape (n_val,)
        Of the last finished epoch.
    val_probs : numpy.ndarray of float32, shape (n_val, n_classes)
        Softmax probabilities.
    seconds : float
        Total wall time.
    images_per_second : float
        Training images per second over all epochs (training part only).
    cancelled : bool
    """

    history: list[EpochEvent] = field(default_factory=list)
    val_true: np.ndarray | None = None
    val_pred: np.ndarray | None = None
    val_probs: np.ndarray | None = None
    seconds: float = 0.0
    images_per_second: float = 0.0
    cancelled: bool = False


def pick_device() -> torch.device:
    """CUDA if available, else Apple MPS, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def _to_device(x: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    x = x.to(device, non_blocking=True)
    if channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


@torch.inference_mode()
def evaluate(
    model: nn.Module, loader: DataLoader, device: torch.device, should_stop: Callable[[], bool] | None = None,
    forward: Callable[[torch.Tensor], torch.Tensor] | None = None, channels_last: bool = False,
) -> tuple[float, np.ndarray, np.ndarray, np.ndarray] | None:
    """Evaluate a model in eval mode with deterministic inputs.

    `forward` (default: the model itself) maps a batch to logits, e.g. a
    cut model's ``run`` (:func:`ftcore.prefix.cut_applied`) for batches of
    cached activations; `channels_last` converts 4-d batches to that layout.

    Returns
    -------
    tuple or None
        Mean cross-entropy per image, true labels (int64, shape (n,)),
        predictions (int64, shape (n,)) and softmax probabilities (float32,
        shape (n, n_classes)); None when `should_stop` returned True.
    """
    model.eval()
    losses, ys, probs = [], [], []
    n = 0
    for x, y in loader:
        if should_stop is not None and should_stop():
            return None
        x, y = _to_device(x, device, channels_last), y.to(device)
        out = (forward or model)(x).float()
        losses.append(nn.functional.cross_entropy(out, y, reduction="sum").item())
        n += y.numel()
        ys.append(y.cpu())
        probs.append(out.softmax(1).cpu())
    p = torch.cat(probs).numpy().astype(np.float32)
    yt = torch.cat(ys).numpy().astype(np.int64)
    return sum(losses) / max(n, 1), yt, p.argmax(1).astype(np.int64), p


def fit(
    model: nn.Module,
    train_loader: DataLoader,
    val_loader: DataLoader,
    train: TrainConfig,
    name: str,
    device: torch.device,
    on_step: Callable[[StepEvent], None] | None = None,
    on_epoch: Callable[[EpochEvent], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    forward: Callable[[torch.Tensor], torch.Tensor] | None = None,
    channels_last: bool = False,
) -> FitResult:
    """Train the trainable parameters of `model` with AdamW and a cosine schedule.

    Parameters
    ----------
    model : torch.nn.Module
        Frozen parameters have ``requires_grad=False`` already
        (:func:`ftcore.layers.apply_freeze`); frozen BatchNorm layers stay in
        eval mode (:func:`ftcore.layers.set_train_mode`).
    train_loader, val_loader : torch.utils.data.DataLoader
        Batches of (Tensor of shape (batch, 3, height, width), Tensor of
        int64 labels of shape (batch,)).
    train : TrainConfig
        Epochs, learning rates (peak, per step: the head's ``lr``, unfrozen
        backbone groups ``lr * backbone_lr_scale``) and weight decay.
    name : str
        Model label in events (``"baseline"`` or ``"finetuned"``).
    device : torch.device
    on_step, on_epoch : callable or None
        Receive :class:`StepEvent` / :class:`EpochEvent`.
    should_stop : callable or None
        Polled before every batch; when it returns True the loop ends and the
        result has ``cancelled=True``.
    forward : callable or None, default None
        Maps a batch to logits; None calls `model`. With a frozen prefix
        computed once, the loaders yield cached activations and this is the
        cut model's ``run`` (:func:`ftcore.prefix.cut_applied`).
    channels_last : bool, default False
        Convert 4-d batches to the ``channels_last`` memory layout (the model
        must be converted by the caller).

    Returns
    -------
    FitResult

    Raises
    ------
    TrainingError
        If the loss becomes NaN or infinite (names the step and learning rate).
    """
    head_ids = {id(p) for m in classifier_modules(model) for p in m.parameters()}
    head = [p for p in model.parameters() if p.requires_grad and id(p) in head_ids]
    body = [p for p in model.parameters() if p.requires_grad and id(p) not in head_ids]
    groups = [{"params": head, "lr": train.lr}]
    if body:
        groups.append({"params": body, "lr": train.lr * train.backbone_lr_scale})
    opt = torch.optim.AdamW(groups, lr=train.lr, weight_decay=train.weight_decay)
    total = train.epochs * len(train_loader)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(total, 1))
    result = FitResult()
    t0 = time.perf_counter()
    train_seconds = 0.0
    n_seen = 0
    step = 0
    for epoch in range(1, train.epochs + 1):
        te = time.perf_counter()
        set_train_mode(model, train.update_bn)
        loss_sum, ys, preds = 0.0, [], []
        tb = time.perf_counter()  # training time counts reading and augmenting the batch too
        for x, y in train_loader:
            if should_stop is not None and should_stop():
                result.cancelled = True
                break
            x, y = _to_device(x, device, channels_last), y.to(device, non_blocking=True)
            out = (forward or model)(x)
            loss = nn.functional.cross_entropy(out, y)
            lr = opt.param_groups[0]["lr"]
            if not torch.isfinite(loss):
                raise TrainingError(
                    f"{name}: the loss became {loss.item()} at step {step + 1} (epoch {epoch}) with learning rate "
                    f"{lr:.3g}; try a learning rate ten times lower."
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            n_seen += y.numel()
            loss_sum += loss.item() * y.numel()
            ys.append(y.detach().cpu())
            preds.append(out.detach().argmax(1).cpu())
            train_seconds += time.perf_counter() - tb
            if on_step is not None:
                on_step(StepEvent(name, epoch, step, total, float(loss.item()), float(lr), time.perf_counter() - t0))
            tb = time.perf_counter()
        if result.cancelled:
            break
        yt = torch.cat(ys).numpy()
        yp = torch.cat(preds).numpy()
        evaluated = evaluate(model, val_loader, device, should_stop, forward, channels_last)
        if evaluated is None:
            result.cancelled = True
            break
        val_loss, vt, vp, vprob = evaluated
        result.val_true, result.val_pred, result.val_probs = vt, vp, vprob
        n_classes = vprob.shape[1]
        ev = EpochEvent(
            model=name, epoch=epoch, epochs=train.epochs,
            train_loss=loss_sum / max(len(yt), 1),
            train_accuracy=float((yt == yp).mean()) if len(yt) else 0.0,
            train_macro_recall=macro_recall(yt, yp, n_classes),
            val_loss=val_loss,
            val_accuracy=float((vt == vp).mean()) if len(vt) else 0.0,
            val_macro_recall=macro_recall(vt, vp, n_classes),
            seconds=time.perf_counter() - te,
            images_per_second=n_seen / train_seconds if train_seconds > 0 else 0.0,
        )
        result.history.append(ev)
        if on_epoch is not None:
            on_epoch(ev)
    result.seconds = time.perf_counter() - t0
    result.images_per_second = n_seen / train_seconds if train_seconds > 0 else 0.0
    return result


def _loaders(split: DatasetSplit, train_tf, val_tf, train: TrainConfig, seed: int) -> tuple[DataLoader, DataLoader]:
    n_train = len(split.train_images)
    bs = min(train.batch_size, n_train)
    # A last batch of one image breaks BatchNorm in training mode: drop it.
    drop_last = n_train % bs == 1
    g = torch.Generator().manual_seed(seed)
    tl = DataLoader(ArrayImageDataset(split.train_images, split.train_labels, train_tf), batch_size=bs,
                    shuffle=True, drop_last=drop_last, generator=g, num_workers=train.num_workers,
                    persistent_workers=train.num_workers > 0)
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
    groups : list of ftcore.layers.LayerGroup
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
    import os

    try:
        return int(float(os.environ.get("FTCORE_FEATURE_CACHE_MAX_GB", "2")) * 1e9)
    except ValueError:
        return int(2e9)


def _prefix_inputs(model, example: torch.Tensor, split: DatasetSplit, val_tf, tc: TrainConfig, device,
                   tl: DataLoader, vl: DataLoader, channels_last: bool, say: Callable[[str], None],
                   stop: Callable[[], bool]):
    """Decide on the frozen-prefix path; return (cut or None, train loader, val loader, info for the run)."""
    if not tc.feature_cache:
        return None, tl, vl, {"used": False, "reason": "turned off in the settings"}
    n = len(split.train_images) + len(split.val_images)
    cut = find_prefix_cut(model, example)
    if cut is None:
        return None, tl, vl, {"used": False, "reason": "the first layer group learns (nothing frozen to compute once)"
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
    mtl = DataLoader(TensorDataset(train_feats, torch.as_tensor(split.train_labels)), batch_size=bs, shuffle=True,
                     drop_last=tl.drop_last, generator=g)
    mvl = DataLoader(TensorDataset(val_feats, torch.as_tensor(split.val_labels)), batch_size=vl.batch_size)
    info = {"used": True, "entry": cut.entry, "feature_shape": list(cut.feature_shape),
            "bytes": need, "prefix_param_share": round(cut.prefix_share, 4),
            "seconds": round(seconds, 2)}
    return cut, mtl, mvl, info


def _first_module_trains(model: nn.Module) -> bool:
    first = next((p for p in model.parameters()), None)
    return first is not None and first.requires_grad


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
    store : ftcore.runs.RunStore
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
    from .errors import FtcoreError
    from .runs import MODELS

    tc = config.train
    _seed_everything(tc.seed)
    stop = should_stop or (lambda: False)
    summary: dict = {}
    try:
        store.update(run_id, status="running", phase="preparing", message="building the backbone")
        device = pick_device()
        threads = set_threads(tc.num_workers)
        # Build once to learn transforms; class count is set after the scan.
        probe, src = build_model(config.backbone.name, 2, config.backbone.weights, tc.img_size)
        train_tf, val_tf, short = build_transforms(probe, tc.img_size)
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
            run_id, device=str(device), threads=threads, weights=src.describe(), weights_kind=src.kind,
            class_names=split.class_names, layout=split.layout, counts=split.counts(),
            skipped=[p.__dict__ for p in split.problems if p.action == "skipped"],
            majority_accuracy=split.majority_accuracy, data_warnings=list(split.warnings),
            empty_classes=[p.path for p in split.problems if p.kind == "empty_class"],
        )
        store.save_json(run_id, "split.json", {"train": split.train_files, "val": split.val_files,
                                               "class_names": split.class_names})
        tl, vl = _loaders(split, train_tf, val_tf, tc, tc.seed)
        plan = [m for m in MODELS if tc.baseline or m == "finetuned"]
        steps_per_model = tc.epochs * len(tl)
        total_steps = steps_per_model * len(plan)
        store.update(run_id, total_steps=total_steps, step=0)
        done_steps = 0
        last_write = [0.0]

        later_factor = 1.0  # step cost of the fine-tuned model relative to the one training now
        for i_model, model_name in enumerate(plan):
            _seed_everything(tc.seed)  # same head initialisation and augmentation stream for both models
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
                    if on_event:
                        on_event(ev)

                forward = paths.enter_context(cut_applied(model, cut)) if cut is not None else None
                res = fit(model, mtl, mvl, tc, model_name, device, on_step, on_epoch, stop, forward=forward,
                          channels_last=channels_last)
            done_steps += steps_per_model
            if res.val_pred is not None:
                store.save_predictions(run_id, model_name, res.val_true, res.val_pred, res.val_probs, split.val_files)
                last = res.history[-1]
                summary[model_name] = {
                    "val_accuracy": last.val_accuracy, "val_macro_recall": last.val_macro_recall,
                    "train_images_per_second": res.images_per_second, "seconds": res.seconds,
                    "epochs_done": len(res.history),
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
