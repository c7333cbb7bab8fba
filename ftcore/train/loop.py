"""The training loop of one model: :func:`fit` and :func:`evaluate`; UI-agnostic.

:func:`fit` only loops: batches, AdamW steps (:func:`ftcore.train.optim.build_optimizer`),
validation after each epoch. What else happens (the stop flag, the guard
against a non-finite loss, gradual unfreezing, early stopping, the per-group
monitor, reporting :class:`StepEvent` and :class:`EpochEvent`) are callbacks
(:mod:`ftcore.train.callbacks`) that see a :class:`FitState`. The two-model
experiment (:mod:`ftcore.train.experiment`) calls it for the frozen baseline
and the fine-tuned model. Nothing here knows about Streamlit or the run store.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from ftcore.accel import autocast_dtype
from ftcore.core.config import TrainConfig
from ftcore.core.errors import BackboneError, ConfigError
from ftcore.core.events import EpochEvent, StepEvent
from ftcore.core.metrics import macro_recall
from ftcore.models.layers import HEAD, LayerGroup, layer_groups, set_train_mode
from ftcore.train.callbacks import Callback, CallbackList, standard_callbacks
from ftcore.train.optim import OptimizerSetup, build_optimizer

__all__ = ["StepEvent", "EpochEvent", "FitResult", "FitState", "Runtime", "fit", "evaluate"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Runtime:
    """Where and how a batch runs.

    Attributes
    ----------
    device : torch.device
    channels_last : bool, default False
        Convert 4-d batches to the ``channels_last`` memory layout (the model
        must be converted by the caller).
    amp_dtype : torch.dtype, None or "auto", default "auto"
        Autocast data type; None trains in float32; "auto" becomes
        :func:`ftcore.accel.autocast_dtype` of the device (bfloat16 on a CUDA
        device that supports it, else None).
    forward : callable or None, default None
        Maps a batch to logits; None calls the model. With a frozen prefix
        computed once, batches are cached activations and this is the cut
        model's ``run`` (:func:`ftcore.accel.cut_applied`).
    """

    device: torch.device = torch.device("cpu")
    channels_last: bool = False
    amp_dtype: torch.dtype | None | str = "auto"
    forward: Callable[[torch.Tensor], torch.Tensor] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "device", torch.device(self.device))
        if isinstance(self.amp_dtype, str):
            object.__setattr__(self, "amp_dtype", autocast_dtype(self.device.type, _bf16_ok(self.device)))

    @classmethod
    def of(cls, where: Runtime | torch.device | str) -> Runtime:
        """`where` itself when it is a Runtime, else the default runtime on that device."""
        return where if isinstance(where, Runtime) else cls(torch.device(where))

    def to_device(self, x: torch.Tensor) -> torch.Tensor:
        """A batch on the device, in ``channels_last`` layout when asked and 4-d."""
        x = x.to(self.device, non_blocking=True)
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def logits(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Float32 logits of a batch on the device, under autocast when ``amp_dtype`` is set."""
        amp = self.amp_dtype
        with torch.autocast(self.device.type, dtype=amp or torch.float32, enabled=amp is not None):
            out = (self.forward or model)(x)
        return out.float()


@dataclass
class FitResult:
    """What :func:`fit` returns.

    Attributes
    ----------
    history : list of EpochEvent
    val_true, val_pred : numpy.ndarray of int64, shape (n_val,)
        Of the last finished epoch (with early stopping: of the best one).
    val_probs : numpy.ndarray of float32, shape (n_val, n_classes)
        Softmax probabilities.
    seconds : float
        Total wall time.
    images_per_second : float
        Training images per second over all epochs (training part only).
    cancelled : bool
    best_epoch : int or None
        With early stopping: the epoch (1-based) whose weights the model
        holds at the end; None without early stopping.
    stopped_early : bool
        Early stopping ended training before the last epoch.
    """

    history: list[EpochEvent] = field(default_factory=list)
    val_true: np.ndarray | None = None
    val_pred: np.ndarray | None = None
    val_probs: np.ndarray | None = None
    seconds: float = 0.0
    images_per_second: float = 0.0
    cancelled: bool = False
    best_epoch: int | None = None
    stopped_early: bool = False

    @property
    def final(self) -> EpochEvent | None:
        """The epoch whose weights the model holds: the best one with early stopping, else the last."""
        if not self.history:
            return None
        return self.history[self.best_epoch - 1] if self.best_epoch else self.history[-1]


@dataclass(eq=False)
class FitState:
    """What the callbacks of one :func:`fit` see and may change.

    Attributes
    ----------
    model : torch.nn.Module
    train : TrainConfig
    name : str
        The model's role in events.
    runtime : Runtime
    groups : list of LayerGroup
        Coarse layer groups of `model`.
    learn : set of str
        Names of the trainable parameters.
    setup : OptimizerSetup
        Optimizer, scheduler, backbone parameters, optimizer-group to layer-group map.
    steps_per_epoch : int
    result : FitResult
        Filled as training goes.
    epoch, step : int
        Current 1-based epoch; optimisation steps done.
    epoch_metrics : dict
        The fields of the :class:`EpochEvent` being built (see :meth:`Callback.on_validation_end`).
    stop_requested : bool
        Set by :meth:`stop`.
    """

    model: nn.Module
    train: TrainConfig
    name: str
    runtime: Runtime
    groups: list[LayerGroup]
    learn: set[str]
    setup: OptimizerSetup
    steps_per_epoch: int
    result: FitResult = field(default_factory=FitResult)
    epoch: int = 0
    step: int = 0
    epoch_metrics: dict = field(default_factory=dict)
    stop_requested: bool = False
    _t0: float = field(default_factory=time.perf_counter)
    _train_seconds: float = 0.0
    _images: int = 0

    @property
    def total_steps(self) -> int:
        """Steps of the whole training: ``epochs * steps_per_epoch``."""
        return self.train.epochs * self.steps_per_epoch

    @property
    def lr(self) -> float:
        """Learning rate per step the head gets now."""
        return self.setup.optimizer.param_groups[0]["lr"]

    def group_lrs(self) -> list[float]:
        """Learning rate per step of each layer group now, in the order of :attr:`groups`."""
        return self.setup.group_lrs(len(self.groups))

    def images_per_second(self) -> float:
        """Training images seen over the time of the training steps (reading the batches included)."""
        return self._images / self._train_seconds if self._train_seconds > 0 else 0.0

    def cancel(self) -> None:
        """End training before the next batch; the result says ``cancelled``."""
        self.result.cancelled = True

    def stop(self) -> None:
        """End training after this epoch (early stopping)."""
        self.stop_requested = True


@torch.inference_mode()
def evaluate(model: nn.Module, loader: DataLoader, runtime: Runtime | torch.device | str = "cpu",
             should_stop: Callable[[], bool] | None = None) -> tuple[float, np.ndarray, np.ndarray, np.ndarray] | None:
    """Evaluate a model in eval mode with deterministic inputs.

    Parameters
    ----------
    model : torch.nn.Module
    loader : torch.utils.data.DataLoader
        Batches of (Tensor of shape (batch, ...), Tensor of int64 labels of shape (batch,)).
    runtime : Runtime, torch.device or str, default "cpu"
        Device, layout, autocast type and forward function (:class:`Runtime`).
    should_stop : callable or None
        Polled before every batch.

    Returns
    -------
    tuple or None
        Mean cross-entropy per image, true labels (int64, shape (n,)),
        predictions (int64, shape (n,)) and softmax probabilities (float32,
        shape (n, n_classes)); None when `should_stop` returned True.
    """
    runtime = Runtime.of(runtime)
    model.eval()
    losses, ys, probs = [], [], []
    n = 0
    for x, y in loader:
        if should_stop is not None and should_stop():
            return None
        x, y = runtime.to_device(x), y.to(runtime.device)
        out = runtime.logits(model, x)
        losses.append(nn.functional.cross_entropy(out, y, reduction="sum").item())
        n += y.numel()
        ys.append(y.cpu())
        probs.append(out.softmax(1).cpu())
    p = torch.cat(probs).numpy().astype(np.float32)
    yt = torch.cat(ys).numpy().astype(np.int64)
    return sum(losses) / max(n, 1), yt, p.argmax(1).astype(np.int64), p


def fit(model: nn.Module, train_loader: DataLoader, val_loader: DataLoader, train: TrainConfig,
        runtime: Runtime | torch.device | str = "cpu", *, name: str = "finetuned", callbacks: Sequence[Callback] = (),
        groups: list[LayerGroup] | None = None, loss_weights: torch.Tensor | None = None) -> FitResult:
    """Train the trainable parameters of `model` with AdamW, per-group rates, warm-up and a cosine decay.

    Parameters
    ----------
    model : torch.nn.Module
        Frozen parameters have ``requires_grad=False`` already
        (:func:`ftcore.models.layers.apply_freeze`); frozen BatchNorm layers
        stay in eval mode (:func:`ftcore.models.layers.set_train_mode`).
    train_loader, val_loader : torch.utils.data.DataLoader
        Batches of (Tensor of shape (batch, 3, height, width), or cached
        activations, and Tensor of int64 labels of shape (batch,)).
    train : TrainConfig
        Epochs, rates (:func:`ftcore.train.optim.build_optimizer`), weight
        decay, label smoothing, ``update_bn``, and the standard callbacks'
        settings (:func:`ftcore.train.callbacks.standard_callbacks`: gradual
        unfreezing, early stopping).
    runtime : Runtime, torch.device or str, default "cpu"
        Device, memory layout, autocast type and forward function (:class:`Runtime`).
    name : str, default "finetuned"
        The model's role in events and messages.
    callbacks : sequence of Callback, default ()
        Run with the standard ones, e.g. :class:`ftcore.train.callbacks.StopFlag`
        (cancel) and :class:`ftcore.train.callbacks.Report` (events).
    groups : list of LayerGroup or None, default None
        Coarse layer groups of `model` (the unit of learning rates and
        statistics); None (or groups that do not name the model's trainable
        parameters) computes them with :func:`ftcore.models.layers.layer_groups`.
    loss_weights : Tensor of shape (n_classes,) or None, default None
        Class weights of the training cross-entropy; None weighs all classes
        alike. The validation loss is always unweighted and unsmoothed.

    Returns
    -------
    FitResult
        With early stopping, the model holds the best epoch's weights and
        ``val_*`` are that epoch's; ``best_epoch`` names it.

    Raises
    ------
    ConfigError
        If no parameter of `model` is trainable.
    TrainingError
        If the loss becomes NaN or infinite (:class:`ftcore.train.callbacks.NonFiniteLossGuard`).
    """
    runtime = Runtime.of(runtime)
    learn = {n for n, p in model.named_parameters() if p.requires_grad}
    if not learn:
        raise ConfigError(f"{name}: no parameter of the model is trainable; tick at least the head.")
    if groups is None or not learn <= {n for g in groups for n in g.param_names}:
        groups = _own_groups(model)  # e.g. groups of a full model given with a model that holds only its tail
    setup = build_optimizer(model, groups, learn, train, len(train_loader), runtime.device)
    fs = FitState(model, train, name, runtime, groups, learn, setup, len(train_loader))
    hooks = CallbackList(standard_callbacks(train, setup.body_params, callbacks))
    weights = loss_weights.to(runtime.device) if loss_weights is not None else None

    def cancelled() -> bool:
        hooks.on_batch_start(fs)
        return fs.result.cancelled

    try:
        hooks.on_fit_start(fs)
        for epoch in range(1, train.epochs + 1):
            fs.epoch, started = epoch, time.perf_counter()
            hooks.on_epoch_start(fs)
            set_train_mode(model, train.update_bn)
            seen = _train_epoch(fs, hooks, train_loader, weights, cancelled)
            if fs.result.cancelled:
                break
            evaluated = evaluate(model, val_loader, runtime, cancelled)
            if evaluated is None:
                break
            hooks.on_epoch_end(fs, _epoch_event(fs, hooks, seen, evaluated, started))
            if fs.stop_requested:
                break
    except BaseException as e:
        hooks.on_exception(fs, e)
        raise
    hooks.on_fit_end(fs)
    fs.result.seconds = time.perf_counter() - fs._t0
    fs.result.images_per_second = fs.images_per_second()
    return fs.result


def _train_epoch(fs: FitState, hooks: Callback, loader: DataLoader, weights: torch.Tensor | None,
                 cancelled: Callable[[], bool]) -> tuple[float, list[torch.Tensor], list[torch.Tensor]]:
    """One pass over the training batches: (sum of losses, labels, predictions); stops early when cancelled."""
    opt, sched, rt = fs.setup.optimizer, fs.setup.scheduler, fs.runtime
    loss_sum, ys, preds = 0.0, [], []
    tb = time.perf_counter()  # training time counts reading and augmenting the batch too
    for x, y in loader:
        if cancelled():
            break
        x, y = rt.to_device(x), y.to(rt.device, non_blocking=True)
        out = rt.logits(fs.model, x)
        loss = nn.functional.cross_entropy(out, y, weight=weights, label_smoothing=fs.train.label_smoothing)
        lr = fs.lr
        hooks.on_before_backward(fs, loss)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        hooks.on_before_optimizer_step(fs)
        opt.step()
        sched.step()
        fs.step += 1
        fs._images += y.numel()
        loss_sum += loss.item() * y.numel()
        ys.append(y.detach().cpu())
        preds.append(out.detach().argmax(1).cpu())
        fs._train_seconds += time.perf_counter() - tb
        hooks.on_step_end(fs, StepEvent(fs.name, fs.epoch, fs.step, fs.total_steps, float(loss.item()), float(lr),
                                        time.perf_counter() - fs._t0))
        tb = time.perf_counter()
    return loss_sum, ys, preds


def _epoch_event(fs: FitState, hooks: Callback, seen: tuple, evaluated: tuple, started: float) -> EpochEvent:
    """The finished epoch's :class:`EpochEvent` (callbacks add to it in ``on_validation_end``), kept in the history."""
    loss_sum, ys, preds = seen
    val_loss, vt, vp, vprob = evaluated
    fs.result.val_true, fs.result.val_pred, fs.result.val_probs = vt, vp, vprob
    yt, yp = torch.cat(ys).numpy(), torch.cat(preds).numpy()
    n_classes = vprob.shape[1]
    fs.epoch_metrics = {
        "model": fs.name, "epoch": fs.epoch, "epochs": fs.train.epochs,
        "train_loss": loss_sum / max(len(yt), 1),
        "train_accuracy": float((yt == yp).mean()) if len(yt) else 0.0,
        "train_macro_recall": macro_recall(yt, yp, n_classes),
        "val_loss": val_loss,
        "val_accuracy": float((vt == vp).mean()) if len(vt) else 0.0,
        "val_macro_recall": macro_recall(vt, vp, n_classes),
        "seconds": time.perf_counter() - started,
        "images_per_second": fs.images_per_second(),
    }
    hooks.on_validation_end(fs)
    ev = EpochEvent(**fs.epoch_metrics)
    fs.result.history.append(ev)
    return ev


def _own_groups(model: nn.Module) -> list[LayerGroup]:
    """Layer groups of `model`; one group holding everything (learning at the head's rate) when it has no head."""
    try:
        return layer_groups(model)
    except BackboneError:
        names = tuple(n for n, _ in model.named_parameters())
        return [LayerGroup(HEAD, 0, names, sum(p.numel() for p in model.parameters()))]


def _bf16_ok(device: torch.device) -> bool:
    return device.type == "cuda" and torch.cuda.is_available() and torch.cuda.is_bf16_supported()
