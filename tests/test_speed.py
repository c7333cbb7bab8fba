"""The fast paths of a run: decoded images reused across runs, the frozen prefix computed once, channels_last."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_run_config

from ftcore.core.config import RunConfig
from ftcore.jobs.writer import run_experiment
from ftcore.train.experiment import set_threads


def _run(store, cfg):
    run_id = store.create_run(cfg)
    summary = run_experiment(cfg, store, run_id)
    return summary, store.get(run_id)


def _with_train(cfg, **kw):
    d = cfg.to_dict()
    d["train"].update(kw)
    return RunConfig.from_dict(d)


def test_run_records_where_the_frozen_prefix_was_cut(make_image_folder, store):
    folder = make_image_folder(classes={"red": 6, "green": 6})
    summary, rec = _run(store, tiny_run_config(folder, unfreeze="last:2", epochs=2))
    assert summary["status"] == "finished"
    base, fine = rec.info["baseline_prefix"], rec.info["finetuned_prefix"]
    assert base["used"] and base["entry"] == "fc" and base["feature_shape"] == [96]
    assert fine["used"] and fine["entry"] == "layer3.0"
    assert fine["bytes"] == 12 * 4 * 48 * 4 * 4 and 0 < fine["prefix_param_share"] < 1


def test_no_prefix_cache_when_the_stem_learns_or_when_turned_off(make_image_folder, store):
    folder = make_image_folder(classes={"red": 6, "green": 6})
    _, rec = _run(store, tiny_run_config(folder, unfreeze="all", baseline=False))
    assert rec.info["finetuned_prefix"] == {"used": False,
                                            "reason": "the first layer group learns, so no frozen layers come before it"}
    _, rec = _run(store, _with_train(tiny_run_config(folder, unfreeze="head", baseline=False), feature_cache=False))
    assert rec.info["finetuned_prefix"] == {"used": False, "reason": "turned off in the settings"}


def test_prefix_cache_over_its_memory_limit_is_not_used(make_image_folder, store, monkeypatch):
    monkeypatch.setenv("FTCORE_FEATURE_CACHE_MAX_GB", "0.0000001")  # 100 bytes
    folder = make_image_folder(classes={"red": 6, "green": 6})
    summary, rec = _run(store, tiny_run_config(folder, unfreeze="last:2", baseline=False))
    assert summary["status"] == "finished"
    info = rec.info["finetuned_prefix"]
    assert not info["used"] and "layer3.0" in info["reason"] and "FTCORE_FEATURE_CACHE_MAX_GB" in info["reason"]


def test_cached_and_uncached_runs_agree_when_nothing_is_random(make_image_folder, store):
    """With augmentation off (train transform = validation transform), both paths give the same metrics."""
    folder = make_image_folder(classes={"red": 6, "green": 6, "blue": 6})
    cfg = _with_train(tiny_run_config(folder, unfreeze="last:1", epochs=2), augment="none")
    s_on, _ = _run(store, cfg)
    s_off, _ = _run(store, _with_train(cfg, feature_cache=False, channels_last=False))
    for m in ("baseline", "finetuned"):
        assert s_on[m]["val_accuracy"] == pytest.approx(s_off[m]["val_accuracy"])
        assert s_on[m]["epochs_done"] == s_off[m]["epochs_done"] == 2


def test_a_second_run_on_the_same_data_reads_no_image_again(make_image_folder, store, monkeypatch):
    import ftcore.data.audit

    calls = []
    real = ftcore.data.audit.read_and_decode

    def counting(path, side):
        calls.append(path)
        return real(path, side)

    monkeypatch.setattr(ftcore.data.audit, "read_and_decode", counting)
    folder = make_image_folder(classes={"red": 6, "green": 6})
    cfg = tiny_run_config(folder, unfreeze="head", baseline=False)
    _run(store, cfg)
    assert len(calls) == 12
    _run(store, cfg)
    assert len(calls) == 12  # all 12 came from the cache
    _run(store, _with_train(cfg, img_size=40))  # another image size decodes again
    assert len(calls) == 24
    assert list((store.root / "cache" / "decoded").glob("*.u8"))


def test_thread_count_leaves_cores_to_data_loader_workers(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    try:
        n0 = set_threads(0)
        n1 = set_threads(1)
        assert n0 >= 1 and n1 == max(1, n0 - 1)
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        torch.set_num_threads(1)
        assert set_threads(0) == 1  # an explicit OMP_NUM_THREADS is kept
    finally:
        torch.set_num_threads(before)


def test_the_fine_tuned_result_does_not_depend_on_how_the_baseline_ran(make_image_folder, store):
    """The baseline's pass over the training loader must not change the fine-tuned model's batch order."""
    folder = make_image_folder(classes={"red": 8, "green": 8, "blue": 8})
    cfg = _with_train(tiny_run_config(folder, unfreeze="all", epochs=2), batch_size=4)
    losses = []
    for changes in ({}, {"feature_cache": False}, {"baseline": False}):
        _, rec = _run(store, _with_train(cfg, **changes))
        ep = store.epochs(rec.run_id)
        losses.append(ep[ep["model"] == "finetuned"].sort_values("epoch")[["train_loss", "val_loss"]].to_numpy())
    assert losses[1] == pytest.approx(losses[0], rel=1e-5) and losses[2] == pytest.approx(losses[0], rel=1e-5)
