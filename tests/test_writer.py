"""ftcore.jobs.writer and ftcore.jobs.executor: typed events into the run store; the executor interface;
the experiment reads the weights once and reports only events."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import tiny_run_config

from ftcore.core.events import (
    DataReady,
    EpochEvent,
    LayerStats,
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
    ModelFacts,
    ModelRole,
    PrefixDecision,
    RunFacts,
    RunStatus,
)
from ftcore.jobs.executor import Executor
from ftcore.jobs.local import LocalExecutor
from ftcore.jobs.writer import StoreWriter
from ftcore.train.experiment import Experiment

FT = ModelRole.FINETUNED


def test_store_writer_writes_each_event(store, make_image_folder):
    rid = store.create_run(tiny_run_config(make_image_folder()))
    forwarded = []
    w = StoreWriter(store, rid, on_event=forwarded.append, min_interval=3600)
    w(RunStarted("preparing the run"))
    rec = store.get(rid)
    assert (rec.status, rec.phase, rec.message) == (RunStatus.RUNNING, "preparing", "preparing the run")
    w(PhaseChanged("preparing", "reading images: 5/10"))
    w(DataReady(RunFacts(device="cpu", class_names=("a", "b")), ("a", "b"), ("/a/1.png",), ("/b/2.png",)))
    w(Planned(4, (FT,)))
    w(ModelReady(FT, ModelFacts(("head",), 3, 9, prefix=PrefixDecision(False, "off"))))
    step = StepEvent(FT, 1, 1, 4, 0.5, 1e-3, 0.1)
    w(Progress(1, 4, 9.0, "first"))
    w(step)
    w(Progress(2, 4, 8.0, "not written: too soon"))
    assert (store.get(rid).step, store.get(rid).message) == (1, "first")
    w(Progress(4, 4, 0.5, "last step of the model", last_of_model=True))
    epoch = EpochEvent(FT, 1, 1, 1.0, 0.5, 0.5, 0.9, 0.6, 0.55, 2.0, 30.0, (LayerStats("head", 0, 0.1, 0.5, 1e-3, True),))
    w(epoch)
    w(ModelTrained(FT, EvalResult(0.6), Predictions(np.array([0]), np.array([1]), np.array([[0.4, 0.6]], np.float32),
                                                     ("/b/2.png",))))
    w(WeightsReady(FT, {"w": torch.ones(2)}))
    w(RunEnded(RunStatus.FINISHED, "finished", result=ExperimentResult(RunStatus.FINISHED, {FT: EvalResult(0.6)}),
               phase="done", step=4, eta_seconds=0.0))
    rec = store.get(rid)
    assert (rec.status, rec.phase, rec.step, rec.total_steps, rec.eta_seconds) == ("finished", "done", 4, 4, 0.0)
    assert rec.facts.class_names == ("a", "b") and rec.info["finetuned_prefix"] == {"used": False, "reason": "off"}
    assert json.loads((store.run_dir(rid) / "split.json").read_text()) == {
        "train": ["/a/1.png"], "val": ["/b/2.png"], "class_names": ["a", "b"]}
    assert store.epochs(rid)["val_accuracy"].tolist() == [0.6]
    assert store.layer_stats(rid)["layer_group"].tolist() == ["head"]
    assert store.load_predictions(rid, FT)["files"].tolist() == ["/b/2.png"]
    assert (store.run_dir(rid) / "finetuned.safetensors").exists()
    assert store.summary(rid).models[FT].val_accuracy == 0.6
    assert forwarded == [step, epoch], "only step and epoch events go on"


def test_a_failed_run_writes_its_error_and_no_summary(store, make_image_folder):
    rid = store.create_run(tiny_run_config(make_image_folder()))
    StoreWriter(store, rid)(RunEnded(RunStatus.FAILED, "failed", error="the loss became nan"))
    rec = store.get(rid)
    assert (rec.status, rec.error, rec.message, rec.eta_seconds) == ("failed", "the loss became nan", "failed", None)
    assert store.summary(rid) is None


def test_experiment_reports_events_in_order_and_reads_the_weights_once(make_image_folder, monkeypatch):
    """No run store: the experiment only reports; the backbone is built with its weights once for two models."""
    import ftcore.train.experiment as ex

    builds = []
    real = ex.build_model

    def counting(*a, **kw):
        builds.append(a)
        return real(*a, **kw)

    monkeypatch.setattr(ex, "build_model", counting)
    events = []
    result = Experiment(tiny_run_config(make_image_folder(), epochs=1), events.append).run()
    assert len(builds) == 1, "the weights are read once per run; transforms come from the meta device"
    assert result.status is RunStatus.FINISHED and set(result.models) == {ModelRole.BASELINE, FT}
    kinds = [type(e).__name__ for e in events if not isinstance(e, (StepEvent, Progress, PhaseChanged))]
    assert kinds == ["RunStarted", "DataReady", "Planned",
                     "ModelReady", "ModelReady", "EpochEvent", "ModelTrained",
                     "ModelReady", "ModelReady", "EpochEvent", "ModelTrained", "WeightsReady", "RunEnded"]
    ready = [e for e in events if isinstance(e, ModelReady)]
    assert ready[1].facts.prefix is not None and ready[1].facts.step_cost.vs_linear_probe == pytest.approx(1.0)
    assert ready[3].facts.step_cost.vs_linear_probe > 1.0
    assert events[-1].result is result


def test_both_models_start_from_the_same_weights(make_image_folder, monkeypatch):
    """The fine-tuned model is a copy of the built one, so its frozen part equals the baseline's exactly."""
    import ftcore.train.experiment as ex

    seen = {}
    real_fit = ex.fit

    def spy(model, *a, name, **kw):
        seen[name] = {k: v.clone() for k, v in model.state_dict().items()}
        return real_fit(model, *a, name=name, **kw)

    monkeypatch.setattr(ex, "fit", spy)
    cfg = tiny_run_config(make_image_folder(), epochs=1, unfreeze="last:1")
    cfg = type(cfg).from_dict({**cfg.to_dict(), "train": {**cfg.to_dict()["train"], "feature_cache": False}})
    Experiment(cfg).run()
    base, ft = seen[ModelRole.BASELINE], seen[FT]
    assert set(base) == set(ft)
    assert all(torch.equal(base[k], ft[k]) for k in base), "both models begin alike, the new head included"


class _Recording(Executor):
    def __init__(self, store):
        super().__init__(store)
        self.submitted, self.dead = [], set()

    def submit(self, run_id):
        self.submitted.append(run_id)

    def cancel(self, run_id):
        self.store.request_cancel(run_id)

    def refresh(self, run_id):
        if run_id in self.dead:
            self.store.update(run_id, status=RunStatus.FAILED)
        return self.store.get(run_id)


def test_an_executor_needs_only_submit_cancel_and_refresh(store, make_image_folder):
    ex = _Recording(store)
    first = ex.start(tiny_run_config(make_image_folder()))
    second = ex.start(tiny_run_config(make_image_folder()))
    assert ex.submitted == [first, second] and store.get(first).status == "queued"
    assert ex.latest_active().run_id == second
    ex.dead.add(second)
    assert ex.latest_active().run_id == first
    ex.cancel(first)
    assert store.cancel_requested(first)
    assert issubclass(LocalExecutor, Executor)
    with pytest.raises(TypeError):
        Executor(store)
