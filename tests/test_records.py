"""ftcore.core.records and ftcore.core.events: every record round-trips, unknown keys survive, other versions load."""

from __future__ import annotations

import dataclasses
import json
import logging

import pytest

from ftcore.core import events, records
from ftcore.core.errors import RunStoreError
from ftcore.core.events import EpochEvent, LayerStats, StepEvent
from ftcore.core.records import (
    EvalResult,
    ExperimentResult,
    FileProblem,
    ModelFacts,
    ModelRole,
    PrefixDecision,
    Record,
    RunFacts,
    RunStatus,
    StepCost,
)

PREFIX = PrefixDecision(True, entry="layer3.0", feature_shape=(48, 4, 4), bytes=3072, prefix_param_share=0.25,
                        seconds=0.5)
COST = StepCost(2e6, 1e6, 1.5, 0.6, "measured")
MODEL = ModelFacts(("layer4.0", "head"), 291, 1000, folded_bn=3, prefix=PREFIX, step_cost=COST)
FACTS = RunFacts(
    device="cpu", device_text="cpu, float32", threads=2, weights="random initialisation", weights_kind="random",
    class_names=("blue", "red"), layout="class_folders", counts={"train": {"blue": 6, "red": 6}, "val": {"blue": 2}},
    skipped=(FileProblem("/d/red/zero.jpg", "unreadable", "cannot be decoded", "skipped"),), majority_accuracy=0.5,
    data_warnings=("few images",), empty_classes=("/d/empty",),
    models={ModelRole.BASELINE: ModelFacts(("head",), 3, 5, prefix=PrefixDecision(False, "turned off")),
            ModelRole.FINETUNED: MODEL})
RESULT = ExperimentResult(RunStatus.FINISHED, {ModelRole.FINETUNED: EvalResult(0.9, 0.85, 100.0, 2.0, 3, 2, True)})
LAYER = LayerStats("stem", 0, 0.1, 0.5, 1e-3, True)
EXAMPLES = [
    FileProblem("/a.jpg", "unreadable", "empty file", "skipped"), PREFIX, PrefixDecision(False, "no cut point"),
    COST, MODEL, ModelFacts(), FACTS, RunFacts(), EvalResult(0.5, 0.4, 10.0, 1.0, 1), RESULT, ExperimentResult(),
    LAYER, StepEvent("baseline", 1, 2, 9, 0.7, 1e-3, 0.2),
    EpochEvent("finetuned", 1, 3, 1.0, 0.5, 0.5, 0.9, 0.6, 0.55, 2.0, 30.0, (LAYER,)),
]


def _record_classes():
    found = {c for m in (records, events) for c in vars(m).values()
             if isinstance(c, type) and issubclass(c, Record) and c is not Record}
    return sorted(found, key=lambda c: c.__name__)


def test_every_record_class_has_an_example():
    assert {type(r) for r in EXAMPLES} == set(_record_classes())


@pytest.mark.parametrize("rec", EXAMPLES, ids=lambda r: type(r).__name__)
def test_every_record_round_trips_through_json(rec):
    d = json.loads(json.dumps(rec.to_dict()))
    assert type(rec).from_dict(d) == rec
    assert json.loads(json.dumps(type(rec).from_dict(d).to_dict())) == d


@pytest.mark.parametrize("rec", [r for r in EXAMPLES if "extra" in {f.name for f in dataclasses.fields(r)}],
                         ids=lambda r: type(r).__name__)
def test_unknown_keys_survive_a_round_trip(rec):
    d = {**rec.to_dict(), "added_by_a_newer_version": {"x": [1, 2]}}
    back = type(rec).from_dict(d)
    assert back.extra["added_by_a_newer_version"] == {"x": [1, 2]}
    assert back.to_dict() == d


@pytest.mark.parametrize("cls", _record_classes(), ids=lambda c: c.__name__)
def test_missing_keys_take_defaults_or_are_required(cls):
    required = [f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING
                and f.default_factory is dataclasses.MISSING]
    if required:  # events: every field is part of what happened
        with pytest.raises(TypeError):
            cls.from_dict({})
    else:
        assert cls.from_dict({}) == cls() == cls.from_dict(None)


def test_facts_written_by_an_older_version_load():
    """The info dict of a run stored before typed records (and before step costs and folding were recorded)."""
    old = {"device": "cpu", "weights": "packaged", "class_names": ["a", "b"], "layout": "train_val",
           "skipped": [{"path": "/x.png", "kind": "unreadable", "message": "bad", "action": "skipped"}],
           "finetuned_trainable_groups": ["head"], "finetuned_trainable_params": 12,
           "finetuned_prefix": {"used": False, "reason": "turned off in the settings"}}
    facts = RunFacts.from_dict(old)
    assert facts.class_names == ("a", "b") and facts.threads == 0 and facts.majority_accuracy is None
    assert facts.skipped[0].path == "/x.png"
    ft = facts.model("finetuned")
    assert ft.trainable_groups == ("head",) and ft.folded_bn is None and ft.step_cost is None
    assert ft.prefix == PrefixDecision(False, "turned off in the settings")
    assert facts.model(ModelRole.BASELINE) == ModelFacts()
    assert set(old) <= set(facts.to_dict()) and all(facts.to_dict()[k] == v for k, v in old.items())


def test_facts_written_by_a_newer_version_load(caplog):
    """New keys, a third model role, a new field of a model, and a damaged value: kept, never fatal."""
    new = {**FACTS.to_dict(), "cluster": "ray://head", "teacher_prefix": {"used": True},
           "finetuned_explanations": ["gradcam"], "threads": "four"}
    with caplog.at_level(logging.WARNING):
        facts = RunFacts.from_dict(new)
    assert "threads" in caplog.text
    assert facts.threads == 0 and facts.extra["threads"] == "four"
    assert facts.extra["cluster"] == "ray://head" and facts.extra["teacher_prefix"] == {"used": True}
    assert facts.model("finetuned").extra == {"explanations": ["gradcam"]}
    assert facts.model("finetuned").prefix == PREFIX
    out = facts.to_dict()
    assert out["teacher_prefix"] == {"used": True} and out["finetuned_explanations"] == ["gradcam"]
    assert out["threads"] == 0  # the field is written; the damaged value stays readable in extra


def test_the_stored_format_of_facts_is_flat_as_before():
    d = FACTS.to_dict()
    assert d["finetuned_trainable_groups"] == ["layer4.0", "head"] and d["baseline_trainable_params"] == 3
    assert d["finetuned_prefix"] == {"used": True, "entry": "layer3.0", "feature_shape": [48, 4, 4], "bytes": 3072,
                                     "prefix_param_share": 0.25, "seconds": 0.5}
    assert d["baseline_prefix"] == {"used": False, "reason": "turned off"}
    assert "baseline_folded_bn" not in d and "baseline_step_cost" not in d  # None fields are not written
    assert d["skipped"] == [{"path": "/d/red/zero.jpg", "kind": "unreadable", "message": "cannot be decoded",
                             "action": "skipped"}]
    assert "models" not in d


def test_a_record_that_is_no_object_is_refused_with_its_name():
    with pytest.raises(RunStoreError, match=r"a stored RunFacts must be a JSON object; got int 5"):
        RunFacts.from_dict(5)
    with pytest.raises(RunStoreError, match=r"a stored EvalResult must be a JSON object; got list"):
        EvalResult.from_dict([1])


def test_nested_records_of_the_wrong_type_fall_back_to_defaults():
    mf = ModelFacts.from_dict({"prefix": "yes", "trainable_groups": "head", "trainable_params": True})
    assert mf.prefix is None and mf.trainable_groups == () and mf.trainable_params == 0
    assert mf.extra == {"prefix": "yes", "trainable_groups": "head", "trainable_params": True}


def test_status_and_role_are_the_stored_strings():
    assert RunStatus.FINISHED == "finished" and f"{RunStatus.CANCELLED}" == "cancelled"
    assert str(ModelRole.FINETUNED) == "finetuned" and f"{ModelRole.BASELINE:>10}" == "  baseline"
    assert json.dumps({"s": RunStatus.RUNNING}) == '{"s": "running"}'
    assert [s.active for s in RunStatus] == [True, True, False, False, False]
    assert tuple(ModelRole) == ("baseline", "finetuned")


def test_a_status_from_a_newer_version_is_kept():
    s = RunStatus.read("paused")
    assert isinstance(s, RunStatus) and s == "paused" and f"{s}" == "paused" and not s.active
    assert RunStatus.read("running") is RunStatus.RUNNING
    with pytest.raises(ValueError):
        RunStatus("paused")  # the constructor stays strict: a typo in the code is an error
    with pytest.raises(TypeError, match="a RunStatus is a string; got int 3"):
        RunStatus.read(3)


def test_summary_keeps_its_format():
    d = RESULT.to_dict()
    assert d == {"finetuned": {"val_accuracy": 0.9, "val_macro_recall": 0.85, "train_images_per_second": 100.0,
                               "seconds": 2.0, "epochs_done": 3, "best_epoch": 2, "stopped_early": True},
                 "status": "finished"}
    assert RESULT.per_model() == {"finetuned": d["finetuned"]}
    assert ExperimentResult.from_dict(RESULT.per_model()).status is None
    assert ExperimentResult(RunStatus.CANCELLED).to_dict() == {"status": "cancelled"}


def test_epoch_event_metrics_are_the_stores_epoch_columns():
    from ftcore.runs.store import EPOCH_COLUMNS

    assert EpochEvent.METRICS == EPOCH_COLUMNS
