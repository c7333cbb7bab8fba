"""Write a run's events into the run store: the one place where training meets the store.

:class:`StoreWriter` is the event sink (:data:`ftcore.core.events.EventSink`)
of an :class:`ftcore.train.experiment.Experiment`: it turns each typed event
into the store's columns, facts, metrics and artifacts. :func:`run_experiment`
runs an experiment into a store (the worker process, the CLI and the
benchmark call it).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from ftcore.core.config import RunConfig
from ftcore.core.events import (
    DataReady,
    EpochEvent,
    Event,
    ModelReady,
    ModelTrained,
    PhaseChanged,
    Planned,
    Progress,
    RunEnded,
    RunStarted,
    StepEvent,
    WeightsReady,
)
from ftcore.core.records import RunStatus
from ftcore.runs.store import RunStore
from ftcore.train.experiment import Experiment

__all__ = ["StoreWriter", "run_experiment"]

log = logging.getLogger(__name__)


class StoreWriter:
    """The event sink that writes a run's events into its row and folder of the run store.

    Parameters
    ----------
    store : RunStore
    run_id : str
        A run created with :meth:`RunStore.create_run`.
    on_event : callable or None, default None
        Also receives every :class:`StepEvent` and :class:`EpochEvent`, after they are written.
    min_interval : float, default 0.5
        Seconds between two progress writes (a model's last step is always written).

    Notes
    -----
    What each event writes:

    - RunStarted: ``status=running``, ``phase=preparing`` and the message;
    - PhaseChanged: phase and message;
    - DataReady: the run facts (``info``) and ``split.json``;
    - Planned: ``total_steps`` and ``step=0``;
    - ModelReady: the model's facts (``<role>_...`` keys of ``info``);
    - Progress: ``step``, ``eta_seconds`` and the message, at most every `min_interval` seconds;
    - EpochEvent: a row of epoch metrics and the layer-group statistics;
    - ModelTrained: ``<role>_predictions.npz``; WeightsReady: ``<role>.safetensors``;
    - RunEnded: ``summary.json`` (unless failed) and the final status.
    """

    def __init__(self, store: RunStore, run_id: str, on_event: Callable[[Event], None] | None = None,
                 min_interval: float = 0.5) -> None:
        self.store, self.run_id, self.on_event, self.min_interval = store, run_id, on_event, min_interval
        self._last_write = float("-inf")  # the first progress is always written
        self._handlers: dict[type, Callable[[Any], None]] = {
            RunStarted: self._started, PhaseChanged: self._phase, DataReady: self._data, Planned: self._planned,
            ModelReady: self._model, Progress: self._progress, EpochEvent: self._epoch, ModelTrained: self._trained,
            WeightsReady: self._weights, RunEnded: self._ended,
        }

    def __call__(self, event: Event) -> None:
        """Write one event (events of other types are ignored)."""
        handler = self._handlers.get(type(event))
        if handler is not None:
            handler(event)
        if self.on_event is not None and isinstance(event, (StepEvent, EpochEvent)):
            self.on_event(event)

    def _update(self, **fields: Any) -> None:
        self.store.update(self.run_id, **fields)

    def _started(self, ev: RunStarted) -> None:
        self._update(status=RunStatus.RUNNING, phase="preparing", message=ev.message)

    def _phase(self, ev: PhaseChanged) -> None:
        self._update(phase=ev.phase, message=ev.message)

    def _data(self, ev: DataReady) -> None:
        self.store.merge_info(self.run_id, **ev.facts.to_dict())
        self.store.save_json(self.run_id, "split.json", {"train": list(ev.train_files), "val": list(ev.val_files),
                                                         "class_names": list(ev.class_names)})

    def _planned(self, ev: Planned) -> None:
        self._update(total_steps=ev.total_steps, step=0)

    def _model(self, ev: ModelReady) -> None:
        self.store.merge_info(self.run_id, **ev.facts.flat(ev.role))

    def _progress(self, ev: Progress) -> None:
        now = time.perf_counter()
        if now - self._last_write > self.min_interval or ev.last_of_model:
            self._update(step=ev.step, eta_seconds=ev.eta_seconds, message=ev.message)
            self._last_write = now

    def _epoch(self, ev: EpochEvent) -> None:
        self.store.add_epoch(self.run_id, ev.model, ev.epoch, **ev.metrics())
        self.store.add_layer_stats(self.run_id, ev.model, ev.epoch, ev.layers)  # what training did per group

    def _trained(self, ev: ModelTrained) -> None:
        p = ev.predictions
        self.store.save_predictions(self.run_id, ev.role, p.y_true, p.y_pred, p.probs, list(p.files))

    def _weights(self, ev: WeightsReady) -> None:
        from safetensors.torch import save_file

        save_file(ev.state_dict, str(self.store.run_dir(self.run_id) / f"{ev.role}.safetensors"))

    def _ended(self, ev: RunEnded) -> None:
        if ev.result is not None:
            self.store.save_json(self.run_id, "summary.json", ev.result.per_model())
        fields: dict[str, Any] = {"status": ev.status, "message": ev.message, "eta_seconds": ev.eta_seconds}
        if ev.error:
            fields["error"] = ev.error
        if ev.phase is not None:
            fields["phase"] = ev.phase
        if ev.step is not None:
            fields["step"] = ev.step
        self._update(**fields)


def run_experiment(config: RunConfig, store: RunStore, run_id: str, should_stop: Callable[[], bool] | None = None,
                   on_event: Callable[[Event], None] | None = None) -> dict:
    """Train the frozen baseline and the fine-tuned model of a stored run, writing everything into the store.

    Parameters
    ----------
    config : RunConfig
    store : RunStore
        Receives status, progress, facts, per-epoch metrics, predictions and
        weights (:class:`StoreWriter`); its root holds the decoded-image cache.
    run_id : str
        A run created with ``store.create_run(config)``.
    should_stop : callable or None
        Polled every batch; True stops the run with status ``cancelled``.
    on_event : callable or None
        Also receives every :class:`StepEvent` and :class:`EpochEvent`.

    Returns
    -------
    dict
        The run's summary (:meth:`ftcore.core.records.ExperimentResult.to_dict`):
        ``{"baseline": {...}, "finetuned": {...}, "status": ...}`` (baseline
        absent when not trained) with ``val_accuracy``, ``val_macro_recall``,
        ``train_images_per_second``, ``seconds``, ``epochs_done``,
        ``best_epoch`` and ``stopped_early`` each.

    Raises
    ------
    FtcoreError
        Any data, weights or training problem; the run is marked ``failed``
        with the message before the error propagates.
    """
    writer = StoreWriter(store, run_id, on_event)
    return Experiment(config, writer, should_stop, store_root=store.root).run().to_dict()
