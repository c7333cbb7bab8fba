"""Callbacks of :func:`ftcore.train.loop.fit`, in the shape of Lightning's ``Callback``.

The loop only loops: it runs the batches, the optimizer and validation, and
calls the hooks of a :class:`Callback` at fixed points. Everything else is a
callback: the stop flag (:class:`StopFlag`), the guard against a non-finite
loss (:class:`NonFiniteLossGuard`), gradual unfreezing
(:class:`GradualUnfreezing`), early stopping (:class:`EarlyStopping`), the
per-group monitor (:class:`GroupMonitor`) and event delivery
(:class:`Report`). :func:`standard_callbacks` gives those a
:class:`~ftcore.core.config.TrainConfig` asks for.

A hook receives the loop's :class:`ftcore.train.loop.FitState`: the model, the
configuration, the optimizer, the epoch and step, and the result so far.
Hooks run in list order; each has a no-op default.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch

from ftcore.core.config import EARLY_STOPPING_METRICS, TrainConfig
from ftcore.core.errors import TrainingError
from ftcore.core.events import EpochEvent, StepEvent
from ftcore.train.monitor import LayerMonitor, restore, snapshot

if TYPE_CHECKING:
    from ftcore.train.loop import FitState

__all__ = ["Callback", "CallbackList", "StopFlag", "NonFiniteLossGuard", "GradualUnfreezing", "EarlyStopping",
           "GroupMonitor", "Report", "standard_callbacks"]


class Callback:
    """Hooks of the training loop; override those you need (all no-ops here).

    Order within an epoch: :meth:`on_epoch_start`; per batch
    :meth:`on_batch_start` (also before each validation batch),
    :meth:`on_before_backward`, :meth:`on_before_optimizer_step`,
    :meth:`on_step_end`; then validation, :meth:`on_validation_end`,
    :meth:`on_epoch_end`. Around them :meth:`on_fit_start` and either
    :meth:`on_fit_end` (finished, stopped early or cancelled) or
    :meth:`on_exception`.
    """

    def on_fit_start(self, fit: FitState) -> None:
        """Before the first epoch (the optimizer exists; no parameter has moved)."""

    def on_epoch_start(self, fit: FitState) -> None:
        """Before an epoch's first batch; ``fit.epoch`` is 1-based. BatchNorm modes are set after this hook."""

    def on_batch_start(self, fit: FitState) -> None:
        """Before each training and validation batch is used; :meth:`FitState.cancel` ends training here."""

    def on_before_backward(self, fit: FitState, loss: torch.Tensor) -> None:
        """After the forward pass; `loss` is the batch's mean training loss (a 0-d tensor)."""

    def on_before_optimizer_step(self, fit: FitState) -> None:
        """After ``backward``: the gradients are there, the weights not yet changed."""

    def on_step_end(self, fit: FitState, event: StepEvent) -> None:
        """After the optimizer and scheduler stepped."""

    def on_validation_end(self, fit: FitState) -> None:
        """After validation; a callback may add fields of the :class:`EpochEvent` to ``fit.epoch_metrics``."""

    def on_epoch_end(self, fit: FitState, event: EpochEvent) -> None:
        """After an epoch with its validation; :meth:`FitState.stop` ends training after this epoch."""

    def on_fit_end(self, fit: FitState) -> None:
        """After training ended normally (also when stopped early or cancelled)."""

    def on_exception(self, fit: FitState, error: BaseException) -> None:
        """Training raised `error`, which propagates after every callback saw it."""


class CallbackList(Callback):
    """Calls each hook of its callbacks, in order."""

    def __init__(self, callbacks: Sequence[Callback]) -> None:
        self.callbacks = list(callbacks)

    def _each(self, hook: str, *args) -> None:
        for c in self.callbacks:
            getattr(c, hook)(*args)

    def on_fit_start(self, fit: FitState) -> None:
        self._each("on_fit_start", fit)

    def on_epoch_start(self, fit: FitState) -> None:
        self._each("on_epoch_start", fit)

    def on_batch_start(self, fit: FitState) -> None:
        self._each("on_batch_start", fit)

    def on_before_backward(self, fit: FitState, loss: torch.Tensor) -> None:
        self._each("on_before_backward", fit, loss)

    def on_before_optimizer_step(self, fit: FitState) -> None:
        self._each("on_before_optimizer_step", fit)

    def on_step_end(self, fit: FitState, event: StepEvent) -> None:
        self._each("on_step_end", fit, event)

    def on_validation_end(self, fit: FitState) -> None:
        self._each("on_validation_end", fit)

    def on_epoch_end(self, fit: FitState, event: EpochEvent) -> None:
        self._each("on_epoch_end", fit, event)

    def on_fit_end(self, fit: FitState) -> None:
        self._each("on_fit_end", fit)

    def on_exception(self, fit: FitState, error: BaseException) -> None:
        self._each("on_exception", fit, error)


class StopFlag(Callback):
    """Cancel training when `should_stop()` returns True; polled before every batch (training and validation)."""

    def __init__(self, should_stop: Callable[[], bool]) -> None:
        self.should_stop = should_stop

    def on_batch_start(self, fit: FitState) -> None:
        if self.should_stop():
            fit.cancel()


class NonFiniteLossGuard(Callback):
    """A NaN or infinite loss restores the last good epoch's weights and raises :class:`TrainingError`.

    "Good" is the end of the last finished epoch, or the start of training.
    The error's ``result`` holds the finished epochs.
    """

    def __init__(self) -> None:
        self._good: dict | None = None
        self._epoch = 0

    def on_fit_start(self, fit: FitState) -> None:
        self._good, self._epoch = snapshot(fit.model, fit.learn), 0

    def on_epoch_end(self, fit: FitState, event: EpochEvent) -> None:
        self._good, self._epoch = snapshot(fit.model, fit.learn), event.epoch

    def on_before_backward(self, fit: FitState, loss: torch.Tensor) -> None:
        if torch.isfinite(loss):
            return
        restore(fit.model, self._good)
        restored = f"after epoch {self._epoch}" if self._epoch else "from before training"
        lr, peak = fit.lr, fit.train.lr
        err = TrainingError(
            f"{fit.name}: the loss became {loss.item()} at step {fit.step + 1} (epoch {fit.epoch}) with learning "
            f"rate {lr:.3g}; try a learning rate ten times lower (a peak rate of {peak / 10:.3g} instead of "
            f"{peak:.3g}). The weights {restored} were restored."
        )
        err.result = fit.result
        raise err


class GradualUnfreezing(Callback):
    """The backbone's trainable parameters get no gradient for the first `after` epochs (the head learns alone).

    Their learning rate is 0 then as well (the schedule's start,
    :func:`ftcore.train.optim.build_optimizer`). Their ``requires_grad`` is
    set back when training ends, however it ends.
    """

    def __init__(self, params: Sequence[torch.nn.Parameter], after: int) -> None:
        self.params, self.after = list(params), int(after)

    def _set(self, on: bool) -> None:
        for p in self.params:
            p.requires_grad_(on)

    def on_epoch_start(self, fit: FitState) -> None:
        self._set(fit.epoch > self.after)

    def on_fit_end(self, fit: FitState) -> None:
        self._set(True)

    def on_exception(self, fit: FitState, error: BaseException) -> None:
        self._set(True)


class EarlyStopping(Callback):
    """Stop when `metric` has not improved for `patience` epochs; the model ends with the best epoch's weights.

    Parameters
    ----------
    patience : int
        Epochs without improvement before stopping, >= 1.
    metric : str, default "val_loss"
        A key of :data:`ftcore.core.config.EARLY_STOPPING_METRICS` (lower is
        better for the loss, higher for accuracy and macro recall).
    """

    def __init__(self, patience: int, metric: str = "val_loss") -> None:
        self.patience, self.metric = int(patience), metric
        self.sign = 1.0 if EARLY_STOPPING_METRICS[metric] == "min" else -1.0
        self.best: tuple[float, int, dict, tuple] | None = None  # (score, epoch, weights, validation arrays)

    def on_epoch_end(self, fit: FitState, event: EpochEvent) -> None:
        score = self.sign * getattr(event, self.metric)
        if self.best is None or score < self.best[0]:
            r = fit.result
            self.best = (score, event.epoch, snapshot(fit.model, fit.learn), (r.val_true, r.val_pred, r.val_probs))
        elif event.epoch - self.best[1] >= self.patience:
            fit.result.stopped_early = True
            fit.stop()

    def on_fit_end(self, fit: FitState) -> None:
        if self.best is None:
            return
        fit.result.best_epoch = self.best[1]
        if self.best[1] != len(fit.result.history):
            restore(fit.model, self.best[2])
            fit.result.val_true, fit.result.val_pred, fit.result.val_probs = self.best[3]


class GroupMonitor(Callback):
    """Per layer group and epoch: weight change, gradient norm and learning rate (:class:`LayerMonitor`).

    Fills ``layers`` of each :class:`EpochEvent`.
    """

    def __init__(self) -> None:
        self.monitor: LayerMonitor | None = None

    def on_fit_start(self, fit: FitState) -> None:
        self.monitor = LayerMonitor(fit.model, fit.groups)

    def on_before_optimizer_step(self, fit: FitState) -> None:
        self.monitor.record_step(fit.group_lrs())

    def on_validation_end(self, fit: FitState) -> None:
        fit.epoch_metrics["layers"] = self.monitor.epoch_stats()


class Report(Callback):
    """Deliver each :class:`StepEvent` to `on_step` and each :class:`EpochEvent` to `on_epoch` (either may be None)."""

    def __init__(self, on_step: Callable[[StepEvent], None] | None = None,
                 on_epoch: Callable[[EpochEvent], None] | None = None) -> None:
        self.on_step, self.on_epoch = on_step, on_epoch

    def on_step_end(self, fit: FitState, event: StepEvent) -> None:
        if self.on_step is not None:
            self.on_step(event)

    def on_epoch_end(self, fit: FitState, event: EpochEvent) -> None:
        if self.on_epoch is not None:
            self.on_epoch(event)


def standard_callbacks(train: TrainConfig, body_params: Sequence[torch.nn.Parameter],
                       extra: Sequence[Callback] = ()) -> list[Callback]:
    """The callbacks of one :func:`ftcore.train.loop.fit`: those `train` asks for, with `extra` among them.

    Parameters
    ----------
    train : TrainConfig
        ``unfreeze_after``, ``early_stopping_patience`` and ``early_stopping_metric``.
    body_params : sequence of torch.nn.Parameter
        Trainable parameters outside the head (see :class:`GradualUnfreezing`).
    extra : sequence of Callback, default ()
        The caller's callbacks (e.g. :class:`StopFlag`, :class:`Report`).

    Returns
    -------
    list of Callback
        :class:`NonFiniteLossGuard`, :class:`GradualUnfreezing` (when the
        backbone learns), :class:`GroupMonitor`, then `extra`, then
        :class:`EarlyStopping` (when ``early_stopping_patience`` > 0), so that
        an epoch is reported before training stops after it.
    """
    out: list[Callback] = [NonFiniteLossGuard()]
    if body_params:
        out.append(GradualUnfreezing(body_params, train.unfreeze_after))
    out += [GroupMonitor(), *extra]
    if train.early_stopping_patience:
        out.append(EarlyStopping(train.early_stopping_patience, train.early_stopping_metric))
    return out
