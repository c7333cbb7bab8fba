"""ftcore.runs.store: the SQLite run store and its artifact folders."""

from __future__ import annotations

import json
import re
import time

import numpy as np
import pytest

from ftcore.core.config import BackboneConfig, DataConfig, FreezeConfig, RunConfig, TrainConfig
from ftcore.core.errors import RunStoreError
from ftcore.runs.store import EPOCH_COLUMNS, RunStore, default_store_root


def _cfg(epochs: int = 2) -> RunConfig:
    return RunConfig(BackboneConfig("test_resnet", "none"), FreezeConfig("last:1"), DataConfig("/data"),
                     TrainConfig(epochs=epochs, img_size=32))


def test_default_root_follows_ftcore_home(ftcore_home, monkeypatch, tmp_path):
    assert default_store_root() == ftcore_home
    s = RunStore()
    assert s.root == ftcore_home and s.db_path == ftcore_home / "runs.sqlite3" and s.db_path.exists()
    assert (ftcore_home / "runs").is_dir()
    monkeypatch.delenv("FTCORE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_store_root() == tmp_path / ".ftcore"


def test_unusable_root_raises(tmp_path):
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    with pytest.raises(RunStoreError, match=r"cannot use run store .*afile.*set FTCORE_HOME to a writable folder"):
        RunStore(blocker)


def test_create_and_get(store):
    cfg = _cfg()
    run_id = store.create_run(cfg)
    assert re.fullmatch(r"\d{8}-\d{6}-[0-9a-f]{4}", run_id)
    rec = store.get(run_id)
    assert rec.run_id == run_id and rec.status == "queued" and rec.active
    assert rec.config == cfg
    assert rec.pid is None and rec.cancel_requested is False
    assert (rec.step, rec.total_steps, rec.eta_seconds, rec.info) == (0, 0, None, {})
    assert rec.created == rec.updated and abs(rec.created - time.time()) < 60
    on_disk = store.run_dir(run_id) / "config.json"
    assert RunConfig.load(on_disk) == cfg


def test_update_fields(store):
    run_id = store.create_run(_cfg())
    store.update(run_id, status="running", pid=1234, message="training", phase="finetuned", step=3,
                 total_steps=10, eta_seconds=12.5)
    rec = store.get(run_id)
    assert (rec.status, rec.pid, rec.message, rec.phase, rec.step, rec.total_steps, rec.eta_seconds) == (
        "running", 1234, "training", "finetuned", 3, 10, 12.5)
    assert rec.updated >= rec.created
    store.update(run_id, status="failed", error="boom")
    rec = store.get(run_id)
    assert not rec.active and rec.error == "boom" and rec.message == "training"


def test_update_rejects_unknown_field_and_run(store):
    run_id = store.create_run(_cfg())
    with pytest.raises(RunStoreError, match=r"cannot set \['config'\] on a run; allowed:"):
        store.update(run_id, config="{}")
    with pytest.raises(RunStoreError, match="run nope is not in the store"):
        store.update("nope", status="running")


def test_unknown_run_raises(store):
    with pytest.raises(RunStoreError, match=r"run 20990101-000000-ffff is not in the store"):
        store.get("20990101-000000-ffff")
    with pytest.raises(LookupError):
        store.get("missing")
    with pytest.raises(RunStoreError, match="is not in the store"):
        store.merge_info("missing", a=1)


@pytest.mark.parametrize("bad", ["", "../x", "a/b", ".hidden"])
def test_run_dir_rejects_bad_ids(store, bad):
    with pytest.raises(RunStoreError, match="is not valid"):
        store.run_dir(bad)


def test_list_newest_first_and_filter(store):
    ids = []
    for _ in range(3):
        ids.append(store.create_run(_cfg()))
        time.sleep(0.01)
    store.update(ids[0], status="finished")
    store.update(ids[2], status="running")
    assert [r.run_id for r in store.list()] == ids[::-1]
    assert [r.run_id for r in store.list(limit=2)] == [ids[2], ids[1]]
    assert [r.run_id for r in store.list(status=("queued", "running"))] == [ids[2], ids[1]]
    assert [r.run_id for r in store.list(status=("finished",))] == [ids[0]]
    assert store.list(status=("cancelled",)) == []


def test_merge_info(store):
    run_id = store.create_run(_cfg())
    store.merge_info(run_id, device="cpu", class_names=["a", "b"])
    store.merge_info(run_id, device="cuda", counts={"a": 3})
    assert store.get(run_id).info == {"device": "cuda", "class_names": ["a", "b"], "counts": {"a": 3}}


def test_cancel_flag(store):
    run_id = store.create_run(_cfg())
    assert store.cancel_requested(run_id) is False
    store.request_cancel(run_id)
    assert store.cancel_requested(run_id) is True
    assert store.get(run_id).cancel_requested is True
    assert store.cancel_requested("missing") is False


def test_epochs_round_trip(store):
    run_id = store.create_run(_cfg())
    other = store.create_run(_cfg())
    m1 = dict(zip(EPOCH_COLUMNS, [0.9, 0.5, 0.45, 0.8, 0.6, 0.55, 1.5, 100.0]))
    store.add_epoch(run_id, "finetuned", 2, **m1)
    store.add_epoch(run_id, "finetuned", 1, **{**m1, "val_accuracy": 0.4})
    store.add_epoch(run_id, "baseline", 1, val_accuracy=0.3, train_loss=None)
    store.add_epoch(other, "baseline", 1, val_accuracy=0.99)
    df = store.epochs(run_id)
    assert list(df.columns) == ["model", "epoch", *EPOCH_COLUMNS]
    assert list(zip(df["model"], df["epoch"])) == [("baseline", 1), ("finetuned", 1), ("finetuned", 2)]
    row = df.iloc[2]
    for k, v in m1.items():
        assert row[k] == pytest.approx(v)
    assert df.iloc[1]["val_accuracy"] == pytest.approx(0.4)
    assert df.iloc[0]["val_accuracy"] == pytest.approx(0.3) and np.isnan(df.iloc[0]["train_loss"])
    # same (model, epoch) replaces the row
    store.add_epoch(run_id, "finetuned", 2, val_accuracy=0.7)
    df = store.epochs(run_id)
    assert len(df) == 3 and df.iloc[2]["val_accuracy"] == pytest.approx(0.7)
    assert store.epochs("missing").empty and list(store.epochs("missing").columns) == ["model", "epoch",
                                                                                        *EPOCH_COLUMNS]


def test_add_epoch_rejects_unknown_metric(store):
    run_id = store.create_run(_cfg())
    with pytest.raises(RunStoreError, match=r"unknown epoch metrics \['top5'\]"):
        store.add_epoch(run_id, "baseline", 1, top5=0.9)


def test_predictions_round_trip(store):
    run_id = store.create_run(_cfg())
    y_true = np.array([0, 1, 2, 1], dtype=np.int64)
    y_pred = np.array([0, 2, 2, 1], dtype=np.int64)
    probs = np.random.default_rng(0).dirichlet(np.ones(3), size=4).astype(np.float32)
    files = ["/d/a/1.png", "/d/b/2.png", "/d/c/é 3.png", "/d/b/4.png"]
    p = store.save_predictions(run_id, "finetuned", y_true, y_pred, probs, files)
    assert p == store.run_dir(run_id) / "finetuned_predictions.npz" and p.exists()
    got = store.load_predictions(run_id, "finetuned")
    assert set(got) == {"y_true", "y_pred", "probs", "files"}
    np.testing.assert_array_equal(got["y_true"], y_true)
    np.testing.assert_array_equal(got["y_pred"], y_pred)
    np.testing.assert_array_equal(got["probs"], probs)
    assert got["probs"].dtype == np.float32
    assert got["files"].tolist() == files
    assert store.load_predictions(run_id, "baseline") is None
    assert store.has_predictions(run_id, "finetuned") and not store.has_predictions(run_id, "baseline")


def test_save_json_handles_numpy(store):
    run_id = store.create_run(_cfg())
    p = store.save_json(run_id, "x.json", {"n": np.int64(3), "f": np.float32(0.5), "a": np.arange(3),
                                          "cfg": _cfg().train})
    d = json.loads(p.read_text())
    assert d["n"] == 3 and d["f"] == 0.5 and d["a"] == [0, 1, 2] and d["cfg"]["epochs"] == 2


def test_two_store_objects_share_the_database(store):
    run_id = store.create_run(_cfg())
    other = RunStore(store.root)
    other.update(run_id, status="running", message="from another process")
    assert store.get(run_id).message == "from another process"


def test_layer_stats_round_trip(store):
    from ftcore.train.monitor import LayerStats

    rid = store.create_run(_cfg())
    assert store.layer_stats(rid).empty
    stats = [LayerStats("stem", 0, 0.0, 0.0, 0.0, False), LayerStats("head", 1, 0.25, 1.5, 1e-3, True)]
    store.add_layer_stats(rid, "finetuned", 1, stats)
    store.add_layer_stats(rid, "finetuned", 2, [LayerStats("stem", 0, float("nan"), 0.0, 0.0, False)])
    store.add_layer_stats(rid, "finetuned", 3, [])
    df = store.layer_stats(rid)
    assert list(df.columns) == ["model", "epoch", "layer_group", "group_index", "relative_change", "grad_norm", "lr",
                                "trainable"]
    assert df["layer_group"].tolist() == ["stem", "head", "stem"]
    assert df["trainable"].tolist() == [False, True, False]
    assert df.iloc[1][["relative_change", "grad_norm", "lr"]].tolist() == [0.25, 1.5, 1e-3]
    assert np.isnan(df.iloc[2]["relative_change"]), "NaN is stored as NULL and read back as NaN"


def test_store_made_before_layer_stats_gains_the_table(tmp_path):
    import sqlite3

    root = tmp_path / "old"
    (root / "runs").mkdir(parents=True)
    con = sqlite3.connect(root / "runs.sqlite3")
    from ftcore.runs.store import _SCHEMA

    con.executescript(_SCHEMA.split("CREATE TABLE IF NOT EXISTS layer_stats")[0])
    con.close()
    s = RunStore(root)
    rid = s.create_run(_cfg())
    assert s.layer_stats(rid).empty


# -- typed records ---------------------------------------------------------------------------------------

def test_records_are_typed_and_stored_as_before(store):
    from ftcore.core.records import ModelFacts, ModelRole, PrefixDecision, RunFacts, RunStatus

    rid = store.create_run(_cfg())
    rec = store.get(rid)
    assert rec.status is RunStatus.QUEUED and rec.status == "queued" and rec.facts == RunFacts()
    store.update(rid, status=RunStatus.RUNNING)
    store.merge_info(rid, **RunFacts(device="cpu", class_names=("a", "b")).to_dict())
    store.merge_info(rid, **ModelFacts(("head",), 3, 7, prefix=PrefixDecision(False, "off")).flat(ModelRole.FINETUNED))
    rec = store.get(rid)
    assert rec.status is RunStatus.RUNNING and rec.active
    assert [r.run_id for r in store.list(status=("running",))] == [rid]
    assert rec.facts.class_names == ("a", "b") and rec.facts.model("finetuned").prefix.reason == "off"
    # the stored JSON keeps its plain keys, as the pages read them
    assert rec.info["finetuned_prefix"] == {"used": False, "reason": "off"} and rec.info["class_names"] == ["a", "b"]


def test_a_run_written_by_a_newer_version_is_read(store):
    import sqlite3

    from ftcore.core.records import RunStatus

    rid = store.create_run(_cfg())
    with sqlite3.connect(store.db_path) as con:
        con.execute("UPDATE runs SET status = 'paused', info = ? WHERE run_id = ?",
                    (json.dumps({"device": "cpu", "scheduler": "ray", "finetuned_trainable_params": 5}), rid))
    rec = store.get(rid)
    assert rec.status == "paused" and isinstance(rec.status, RunStatus) and not rec.active
    assert rec.facts.extra == {"scheduler": "ray"} and rec.facts.model("finetuned").trainable_params == 5
    assert [r.run_id for r in store.list()] == [rid]


def test_summary_of_a_run(store):
    from ftcore.core.records import ModelRole

    rid = store.create_run(_cfg())
    assert store.summary(rid) is None
    store.save_json(rid, "summary.json", {"baseline": {"val_accuracy": 0.5, "seconds": 1.0}, "note": "kept"})
    s = store.summary(rid)
    assert s.models[ModelRole.BASELINE].val_accuracy == 0.5 and s.models[ModelRole.BASELINE].epochs_done == 0
    assert s.extra == {"note": "kept"} and s.status is None
    (store.run_dir(rid) / "summary.json").write_text("{not json")
    with pytest.raises(RunStoreError, match="summary.json.*damaged"):
        store.summary(rid)
