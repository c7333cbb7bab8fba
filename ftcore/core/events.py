"""Typed events: what training reports, in the order it happens.

:func:`ftcore.train.loop.fit` reports :class:`StepEvent` and
:class:`EpochEvent` (with per-group :class:`LayerStats`); the two-model
experiment (:class:`ftcore.train.experiment.Experiment`) reports the others
to an :data:`EventSink`, a callable that takes one event. One sink,
:class:`ftcore.jobs.writer.StoreWriter`, writes them into the run store;
nothing that trains knows about the store.

An experiment reports, in order: :class:`RunStarted`; :class:`PhaseChanged`
while it reads the data; :class:`DataReady`; :class:`Planned`; per model
:class:`ModelReady` (twice: when frozen, and with the frozen-prefix
decision), :class:`PhaseChanged`, then :class:`Progress` with each
:class:`StepEvent`, an :class:`EpochEvent` per epoch, :class:`ModelTrained`
and, for the fine-tuned model, :class:`WeightsReady`; last :class:`RunEnded`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Union

from ftcore.core.records import EvalResult, ExperimentResult, ModelFacts, ModelRole, Record, RunFacts, RunStatus

__all__ = [
    "LayerStats", "StepEvent", "EpochEvent", "RunStarted", "PhaseChanged", "DataReady", "Planned", "ModelReady",
    "Progress", "Predictions", "ModelTrained", "WeightsReady", "RunEnded", "Event", "EventSink",
]


@dataclass(frozen=True)
class LayerStats(Record):
    """One layer group in one epoch.

    Attributes
    ----------
    group : str
        Layer group name (coarse).
    index : int
        Position from the input, 0-based.
    relative_change : float
        ``||w - w0|| / ||w0||`` over all the group's parameters at the end
        of the epoch, w0 being the weights training started with (the
        pretrained ones, or the new head's initialisation); 0 for a frozen
        group; NaN when ``||w0|| = 0``.
    grad_norm : float
        L2 norm of the group's gradient (all its parameters as one vector),
        averaged over the epoch's steps; 0 when it got no gradient.
    lr : float
        Learning rate applied to the group, averaged over the epoch's steps.
    trainable : bool
        Whether any of its parameters learn.
    """

    group: str
    index: int
    relative_change: float
    grad_norm: float
    lr: float
    trainable: bool


@dataclass(frozen=True)
class StepEvent(Record):
    """One optimisation step finished.

    Attributes
    ----------
    model : str
        The model's role (:class:`ftcore.core.records.ModelRole`: ``"baseline"`` or ``"finetuned"``).
    epoch : int
        1-based epoch.
    step : int
        1-based step within this model's training.
    total_steps : int
        Steps this model will take.
    loss : float
        Mean cross-entropy of the batch.
    lr : float
        Learning rate per step applied at this step (the head's).
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
class EpochEvent(Record):
    """One epoch finished, with training and validation metrics.

    Accuracies and recalls are fractions in [0, 1]; losses are mean
    cross-entropy per image; ``seconds`` is the epoch's wall time including
    validation; ``images_per_second`` counts training images seen so far
    in this model's training over the time of its training steps, reading
    and augmenting the batches included (validation excluded); ``layers``
    holds one :class:`LayerStats` per layer group (empty without the
    per-group monitor).
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
    layers: tuple[LayerStats, ...] = ()

    #: The per-epoch metrics (the run store's epoch columns).
    METRICS = ("train_loss", "train_accuracy", "train_macro_recall", "val_loss", "val_accuracy", "val_macro_recall",
               "seconds", "images_per_second")

    def metrics(self) -> dict[str, float]:
        """The values of :attr:`METRICS`."""
        return {k: getattr(self, k) for k in self.METRICS}


@dataclass(frozen=True)
class RunStarted:
    """The run began (status ``running``); `message` says what it does first."""

    message: str


@dataclass(frozen=True)
class PhaseChanged:
    """What the run does now: `phase` is ``"preparing"`` or a model's role; `message` is for people."""

    phase: str
    message: str


@dataclass(frozen=True)
class DataReady:
    """The data is read and split.

    Attributes
    ----------
    facts : RunFacts
        Device, weights and data facts (no model facts yet).
    class_names : tuple of str
    train_files, val_files : tuple of str
        The images of each part, in the order the models see them.
    """

    facts: RunFacts
    class_names: tuple[str, ...]
    train_files: tuple[str, ...]
    val_files: tuple[str, ...]


@dataclass(frozen=True)
class Planned:
    """The run will take `total_steps` optimisation steps over its models, in the order of `roles`."""

    total_steps: int
    roles: tuple[ModelRole, ...]


@dataclass(frozen=True)
class ModelReady:
    """A model is built and frozen (then again with its folding and frozen-prefix decision)."""

    role: ModelRole
    facts: ModelFacts


@dataclass(frozen=True)
class Progress:
    """Steps done over the whole run, after a :class:`StepEvent`.

    Attributes
    ----------
    step, total_steps : int
        Steps done and planned over all models.
    eta_seconds : float
        Estimated seconds left.
    message : str
    last_of_model : bool
        The model's last step (a sink that writes only now and then writes this one).
    """

    step: int
    total_steps: int
    eta_seconds: float
    message: str
    last_of_model: bool = False


@dataclass(frozen=True)
class Predictions:
    """A model's validation predictions: numpy arrays of shape (n_val,) (int64) and (n_val, n_classes) (float32)."""

    y_true: Any
    y_pred: Any
    probs: Any
    files: tuple[str, ...]


@dataclass(frozen=True)
class ModelTrained:
    """A model finished (or was cancelled after at least one epoch): its result and predictions."""

    role: ModelRole
    result: EvalResult
    predictions: Predictions


@dataclass(frozen=True)
class WeightsReady:
    """The trained weights of a model: a state dict of CPU tensors, keyed as timm names them."""

    role: ModelRole
    state_dict: dict = field(repr=False)


@dataclass(frozen=True)
class RunEnded:
    """The run ended.

    Attributes
    ----------
    status : RunStatus
        ``finished``, ``cancelled`` or ``failed``.
    message : str
    error : str
        The message for the user when failed.
    result : ExperimentResult or None
        What the models achieved (None when failed).
    phase : str or None
        ``"done"`` when finished; None leaves the phase.
    step : int or None
        Steps done when finished; None leaves the count.
    eta_seconds : float or None
        0 when finished, None (unknown) otherwise.
    """

    status: RunStatus
    message: str
    error: str = ""
    result: ExperimentResult | None = None
    phase: str | None = None
    step: int | None = None
    eta_seconds: float | None = None


Event = Union[StepEvent, EpochEvent, RunStarted, PhaseChanged, DataReady, Planned, ModelReady, Progress, ModelTrained,
              WeightsReady, RunEnded]
#: Receives every event of a run, in order.
EventSink = Callable[[Event], None]
