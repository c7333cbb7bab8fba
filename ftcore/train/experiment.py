"""The two-model experiment: the frozen baseline and the fine-tuned model on the same split.

:class:`Experiment` runs one :class:`~ftcore.core.config.RunConfig` as named
steps: prepare the machine, read the data, plan, then train each model with
:func:`ftcore.train.loop.fit` through the fast paths (decoded-image cache,
BatchNorm folding, the frozen prefix computed once, ``channels_last``). It
reports everything as typed events (:mod:`ftcore.core.events`) to a sink;
writing them into the run store is the sink's business
(:class:`ftcore.jobs.writer.StoreWriter`), so nothing here knows about the
store or about Streamlit.

The backbone's weights are read once per run: the first model is built
with them (:func:`ftcore.models.backbones.build_model`), and the second is a
copy of it as built, with the random generators where the build left them,
so both models start alike (same head initialisation, augmentation stream
and batch order). The transforms and the step costs come from the model's
configuration on the ``meta`` device (no weights).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import os
import random
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from ftcore.accel import bn_folded, cut_applied, device_summary, keep_freed_memory, pick_device
from ftcore.core.config import RunConfig
from ftcore.core.errors import FtcoreError
from ftcore.core.events import (
    DataReady,
    EpochEvent,
    EventSink,
    ModelReady,
    ModelTrained,
    PhaseChanged,
    Planned,
    Predictions,
    Progress,
    RunEnded,
    RunStarted,
    StepEvent,
    WeightsReady,
)
from ftcore.core.records import (
    EvalResult,
    ExperimentResult,
    FileProblem,
    ModelFacts,
    ModelRole,
    RunFacts,
    RunStatus,
    StepCost,
)
from ftcore.data.augment import build_transforms
from ftcore.data.split import class_weights, prepare_split
from ftcore.models.backbones import build_model, resolve_weights
from ftcore.models.compute import compute_profile, step_cost
from ftcore.models.layers import apply_freeze, layer_groups, meta_model, trainable_group_names
from ftcore.train.callbacks import Callback, StopFlag
from ftcore.train.inputs import Cancelled, frozen_prefix_inputs, make_loaders
from ftcore.train.loop import FitResult, FitState, Runtime, fit

__all__ = ["Experiment", "Cancelled", "set_threads", "step_costs", "StepEvent", "EpochEvent"]

log = logging.getLogger(__name__)


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
    if os.environ.get("OMP_NUM_THREADS"):
        return torch.get_num_threads()
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    n = max(1, cores - num_workers)
    torch.set_num_threads(n)
    return n


def step_costs(config: RunConfig, n_classes: int) -> dict[ModelRole, StepCost]:
    """Compute of one training step of each model, from forward FLOPs measured on the ``meta`` device.

    The same estimate as the Layers page shows (:func:`ftcore.models.compute.step_cost`);
    the time-left estimate of a run scales the first model's measured
    seconds per step by the ratio of the two models' costs.

    Parameters
    ----------
    config : RunConfig
        Backbone, image size (None: the model's default) and freezing.
    n_classes : int

    Returns
    -------
    dict of ModelRole to StepCost
        ``vs_linear_probe`` is 1 for the baseline (the head alone learns).

    Raises
    ------
    BackboneError
        If timm cannot build the architecture.
    """
    from timm.data import resolve_data_config

    model = meta_model(config.backbone.name, n_classes)
    groups = layer_groups(model)
    size = config.train.img_size or resolve_data_config(model=model)["input_size"][-1]
    profile = compute_profile(model, size, groups)
    return {role: StepCost.from_dict(step_cost(profile, groups, trainable_group_names(groups, _unfreeze(config, role))))
            for role in ModelRole}


def _unfreeze(config: RunConfig, role: ModelRole) -> str:
    return "head" if role is ModelRole.BASELINE else config.freeze.unfreeze


def _seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and PyTorch's generators (timm's transforms draw from ``random``)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class _Backbone:
    """The run's backbone with its weights, read once: built for the first model, copied for the second.

    Each model starts from the run's seed as if built afresh: the copy was
    taken as built, and the CPU generators are put back where the build
    left them (``torch.manual_seed`` also resets the CUDA generators, which
    a CPU build does not touch).
    """

    def __init__(self, config: RunConfig, n_classes: int, uses: int) -> None:
        self.config, self.n_classes, self.uses = config, n_classes, uses
        self._copy: nn.Module | None = None
        self._rng: tuple | None = None

    def fresh(self) -> nn.Module:
        """A model with the pretrained backbone and a new head, the generators seeded as after its build."""
        _seed_everything(self.config.train.seed)  # same head initialisation and augmentation stream for both models
        self.uses -= 1
        if self._rng is None:
            bb = self.config.backbone
            model, _ = build_model(bb.name, self.n_classes, bb.weights, self.config.train.img_size)
            self._rng = (torch.get_rng_state(), random.getstate(), np.random.get_state())
            self._copy = copy.deepcopy(model) if self.uses > 0 else None
            return model
        torch.set_rng_state(self._rng[0])
        random.setstate(self._rng[1])
        np.random.set_state(self._rng[2])
        model, self._copy = self._copy, (copy.deepcopy(self._copy) if self.uses > 0 else None)
        return model


class _Progress(Callback):
    """Report each step with the run's progress and time left, and each epoch, to the experiment's sink."""

    def __init__(self, emit: EventSink, done: int, total: int, after: int, later_factor: float, epochs: int) -> None:
        self.emit, self.done, self.total, self.after = emit, done, total, after
        self.later_factor, self.epochs = later_factor, epochs

    def on_step_end(self, fit: FitState, ev: StepEvent) -> None:
        rate = ev.seconds / ev.step  # this model's seconds per step, validation included
        eta = rate * (ev.total_steps - ev.step) + rate * self.later_factor * self.after
        self.emit(Progress(self.done + ev.step, self.total, eta, f"{ev.model}: epoch {ev.epoch}/{self.epochs}, step "
                           f"{ev.step} of {ev.total_steps} (all epochs), loss {ev.loss:.3f}",
                           last_of_model=ev.step == ev.total_steps))
        self.emit(ev)

    def on_epoch_end(self, fit: FitState, ev: EpochEvent) -> None:
        self.emit(ev)


class Experiment:
    """Train the frozen baseline and the fine-tuned model of one configuration on the same split.

    Parameters
    ----------
    config : RunConfig
    emit : callable or None, default None
        The event sink (:data:`ftcore.core.events.EventSink`): receives
        every event of the run in order; None drops them.
    should_stop : callable or None, default None
        Polled every batch (and while reading images); True ends the run as ``cancelled``.
    store_root : str, pathlib.Path or None, default None
        Folder of the decoded-image cache and of extracted zips (the run
        store's root); None uses ``$FTCORE_HOME``.
    """

    def __init__(self, config: RunConfig, emit: EventSink | None = None,
                 should_stop: Callable[[], bool] | None = None, store_root: str | Path | None = None) -> None:
        self.config, self.tc = config, config.train
        self.emit: EventSink = emit or (lambda ev: None)
        self.should_stop = should_stop or (lambda: False)
        self.store_root = store_root
        self.results: dict[ModelRole, EvalResult] = {}
        self.done_steps = 0

    def run(self) -> ExperimentResult:
        """Run every step; the result's ``status`` is ``finished`` or ``cancelled``.

        Raises
        ------
        FtcoreError
            Any data, weights or training problem, after :class:`~ftcore.core.events.RunEnded`
            with status ``failed`` and the message was reported. Other
            exceptions are reported as an internal error and propagate too.
        """
        try:
            self.emit(RunStarted("preparing the run"))
            self.prepare_machine()
            self.read_data()
            self.plan()
            for role in self.roles:
                self.train_model(role)
            return self._end(RunStatus.FINISHED, "finished", phase="done", step=self.total_steps, eta_seconds=0.0)
        except Cancelled:
            return self._end(RunStatus.CANCELLED, "cancelled by the user; metrics of finished epochs are kept")
        except FtcoreError as e:
            self.emit(RunEnded(RunStatus.FAILED, "failed", error=str(e)))
            raise
        except Exception as e:
            log.debug("run failed", exc_info=True)
            self.emit(RunEnded(RunStatus.FAILED, "failed", error=f"internal error: {type(e).__name__}: {e}"))
            raise

    def prepare_machine(self) -> None:
        """Seed the generators, choose the device and the thread count."""
        _seed_everything(self.tc.seed)
        self.device = pick_device(self.tc.device)
        self.threads = set_threads(self.tc.num_workers)
        if self.device.type == "cpu":
            keep_freed_memory()  # activations reused without page faults at every step (ftcore.accel)

    def read_data(self) -> None:
        """Transforms from the model's configuration, then the audited, split images; reports :class:`DataReady`.

        Raises
        ------
        BackboneError
            If timm does not know the backbone (found before any image is read).
        WeightsError
            If a weights file is missing or unusable (:func:`ftcore.models.backbones.resolve_weights`).
        DatasetError
            Whatever the audit refuses (:func:`ftcore.data.split.prepare_split`).
        Cancelled
            If the stop flag was seen while reading images.
        """
        bb, tc = self.config.backbone, self.tc
        self.weights = resolve_weights(bb.name, bb.weights)  # where from; read when the first model is built
        self.train_tf, self.val_tf, short = build_transforms(meta_model(bb.name), tc.img_size, tc.augment)

        def progress(done: int, total: int) -> None:
            if done % 10 == 0 and self.should_stop():
                raise Cancelled()
            if done % 50 == 0 or done == total:
                self.emit(PhaseChanged("preparing", f"reading images: {done}/{total}"))

        self.emit(PhaseChanged("preparing", "reading images"))
        split = self.split = prepare_split(self.config.data, seed=tc.seed, short_side=short, progress=progress,
                                           store_root=self.store_root)
        facts = RunFacts(
            device=str(self.device), device_text=device_summary(self.device.type), threads=self.threads,
            weights=self.weights.describe(), weights_kind=self.weights.kind, class_names=tuple(split.class_names),
            layout=split.layout, counts=split.counts(), majority_accuracy=split.majority_accuracy,
            skipped=tuple(FileProblem.from_dict(p.__dict__) for p in split.problems if p.action == "skipped"),
            data_warnings=tuple(split.warnings),
            empty_classes=tuple(p.path for p in split.problems if p.kind == "empty_class"))
        self.emit(DataReady(facts, tuple(split.class_names), tuple(split.train_files), tuple(split.val_files)))

    def plan(self) -> None:
        """Which models, how many steps, what each step costs; reports :class:`Planned`.

        Raises
        ------
        ConfigError
            If the freezing choice names layer groups the backbone does not have.
        """
        tc, n_classes = self.tc, len(self.split.class_names)
        self.roles = tuple(r for r in ModelRole if tc.baseline or r is ModelRole.FINETUNED)
        self.steps_per_model = tc.epochs * len(self._loaders()[0])
        self.total_steps = self.steps_per_model * len(self.roles)
        self.costs = step_costs(self.config, n_classes)
        # Class-weighted cross-entropy for imbalanced classes (the validation loss stays unweighted).
        self.loss_weights = (class_weights(self.split.train_labels, n_classes).to(self.device)
                             if tc.class_balance == "loss" else None)
        self.backbone = _Backbone(self.config, n_classes, uses=len(self.roles))
        self.emit(Planned(self.total_steps, self.roles))

    def train_model(self, role: ModelRole) -> None:
        """Build, freeze and train one model; report its facts, progress, result, predictions and weights.

        Parameters
        ----------
        role : ModelRole
            The baseline trains the head only; the fine-tuned model what ``config.freeze`` unfreezes.

        Raises
        ------
        WeightsError
            If the pretrained weights cannot be had (the first model's build reads them).
        TrainingError
            If the loss became NaN or infinite.
        Cancelled
            If the stop flag was seen (after the model's finished epochs were reported).
        """
        tc, model = self.tc, self.backbone.fresh()
        groups = layer_groups(model)
        freeze = apply_freeze(model, groups, trainable_group_names(groups, _unfreeze(self.config, role)))
        facts = ModelFacts(freeze.trainable_groups, freeze.n_trainable, freeze.n_frozen, step_cost=self.costs[role])
        self.emit(ModelReady(role, facts))
        runtime = Runtime(self.device, tc.channels_last and any(isinstance(m, nn.Conv2d) for m in model.modules()))
        model.to(self.device)
        if runtime.channels_last:
            model.to(memory_format=torch.channels_last)
        example = runtime.to_device(torch.stack([self.val_tf(Image.fromarray(a)) for a in self.split.train_images[:4]]))
        # Fixed-statistics BatchNorm folded into its convolution and the frozen prefix computed once:
        # both undone when the block ends, so the saved weights keep their usual names.
        with contextlib.ExitStack() as paths:
            n_folded = paths.enter_context(bn_folded(model, example, tc.update_bn))
            cut, tl, vl, prefix = frozen_prefix_inputs(
                model, example, self.split, self.val_tf, tc, runtime, self._loaders(),
                lambda msg: self.emit(PhaseChanged(role, f"{role}: {msg}")), self.should_stop)
            self.emit(ModelReady(role, dataclasses.replace(facts, folded_bn=n_folded, prefix=prefix)))
            self.emit(PhaseChanged(role, f"training the {role} model"))
            if cut is not None:
                runtime = dataclasses.replace(runtime, forward=paths.enter_context(cut_applied(model, cut)))
            res = fit(model, tl, vl, tc, runtime, name=role, groups=groups, loss_weights=self.loss_weights,
                      callbacks=[StopFlag(self.should_stop), self._progress(role)])
        self.done_steps += self.steps_per_model
        self._keep(role, model, res)

    def _loaders(self):
        """Fresh loaders for each model: the same batch order (the loader's own generator starts afresh)."""
        return make_loaders(self.split, self.train_tf, self.val_tf, self.tc, self.tc.seed)

    def _progress(self, role: ModelRole) -> _Progress:
        later = self.roles[self.roles.index(role) + 1:]
        factor = self.costs[later[0]].vs_linear_probe / self.costs[role].vs_linear_probe if later else 1.0
        return _Progress(self.emit, self.done_steps, self.total_steps, self.steps_per_model * len(later), factor,
                         self.tc.epochs)

    def _keep(self, role: ModelRole, model: nn.Module, res: FitResult) -> None:
        """Report what a model achieved (when it finished an epoch) and the fine-tuned weights; stop if cancelled."""
        if res.val_pred is not None:
            last = res.final  # the best epoch with early stopping, else the last
            result = EvalResult(last.val_accuracy, last.val_macro_recall, res.images_per_second, res.seconds,
                                len(res.history), res.best_epoch, res.stopped_early)
            self.results[role] = result
            self.emit(ModelTrained(role, result, Predictions(res.val_true, res.val_pred, res.val_probs,
                                                             tuple(self.split.val_files))))
        if role is ModelRole.FINETUNED and res.history:
            self.emit(WeightsReady(role, {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}))
        if res.cancelled:
            raise Cancelled()

    def _end(self, status: RunStatus, message: str, **fields) -> ExperimentResult:
        result = ExperimentResult(status, dict(self.results))
        self.emit(RunEnded(status, message, result=result, **fields))
        return result
