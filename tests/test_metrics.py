"""ftcore.core.metrics: summaries and the baseline-vs-fine-tuned comparison, against hand-computed values."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import balanced_accuracy_score

from ftcore.core.metrics import compare_overall, compare_per_class, macro_recall, summarize

# 3 classes, 2 images each; 4 of 6 right.
Y_TRUE = [0, 0, 1, 1, 2, 2]
Y_PRED = [0, 1, 1, 1, 0, 2]


def test_summarize_hand_computed():
    s = summarize(Y_TRUE, Y_PRED, 3)
    assert s.accuracy == pytest.approx(4 / 6)
    # recall: class 0 1/2, class 1 2/2, class 2 1/2
    np.testing.assert_allclose(s.recall, [0.5, 1.0, 0.5])
    assert s.macro_recall == pytest.approx(2 / 3)
    # precision: predicted 0 at {0, 4} -> 1/2; predicted 1 at {1, 2, 3} -> 2/3; predicted 2 at {5} -> 1
    np.testing.assert_allclose(s.precision, [0.5, 2 / 3, 1.0])
    # F1 = 2PR / (P + R)
    np.testing.assert_allclose(s.f1, [0.5, 0.8, 2 / 3])
    assert s.macro_f1 == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    np.testing.assert_array_equal(s.support, [2, 2, 2])
    assert s.support.dtype == np.int64
    np.testing.assert_array_equal(s.confusion, [[1, 1, 0], [0, 2, 0], [1, 0, 1]])


def test_summarize_class_absent_from_truth():
    # class 3 is never true but predicted once; macro averages are over classes 0 and 1 only
    s = summarize([0, 0, 1], [0, 3, 1], 4)
    assert s.accuracy == pytest.approx(2 / 3)
    np.testing.assert_allclose(s.recall, [0.5, 1.0, 0.0, 0.0])
    np.testing.assert_allclose(s.precision, [1.0, 1.0, 0.0, 0.0])
    assert s.macro_recall == pytest.approx(0.75)
    assert s.macro_f1 == pytest.approx((2 / 3 + 1.0) / 2)
    np.testing.assert_array_equal(s.support, [2, 1, 0, 0])
    assert s.confusion.shape == (4, 4)
    np.testing.assert_array_equal(s.confusion[0], [1, 0, 0, 1])


def test_summarize_perfect():
    s = summarize([1, 0, 1], [1, 0, 1], 2)
    assert (s.accuracy, s.macro_recall, s.macro_f1) == (1.0, 1.0, 1.0)
    np.testing.assert_array_equal(s.confusion, [[1, 0], [0, 2]])


def test_summarize_empty():
    s = summarize([], [], 2)
    assert s.accuracy == 0.0 and s.macro_recall == 0.0


def test_macro_recall_is_balanced_accuracy():
    assert macro_recall(np.array(Y_TRUE), np.array(Y_PRED), 3) == pytest.approx(2 / 3)
    rng = np.random.default_rng(0)
    yt, yp = rng.integers(0, 4, 50), rng.integers(0, 4, 50)
    assert macro_recall(yt, yp, 4) == pytest.approx(balanced_accuracy_score(yt, yp))
    # only classes present in y_true count: class 1 never true
    # class 0 recall 1/2, class 2 recall 0
    assert macro_recall(np.array([0, 0, 2]), np.array([0, 1, 1]), 3) == pytest.approx((0.5 + 0.0) / 2)
    assert macro_recall(np.array([], dtype=int), np.array([], dtype=int), 2) == 0.0


def test_compare_overall():
    base = summarize([0, 0, 1, 1], [0, 1, 1, 0], 2)      # accuracy 0.5
    ft = summarize([0, 0, 1, 1], [0, 0, 1, 0], 2)        # accuracy 0.75
    df = compare_overall(base, ft)
    assert list(df.index) == ["accuracy", "macro recall", "macro F1"]
    assert list(df.columns) == ["baseline", "fine-tuned", "change"]
    assert df.loc["accuracy", "baseline"] == pytest.approx(0.5)
    assert df.loc["accuracy", "fine-tuned"] == pytest.approx(0.75)
    assert df.loc["accuracy", "change"] == pytest.approx(0.25)
    # fine-tuned recall: class 0 2/2, class 1 1/2 -> 0.75; baseline 0.5
    assert df.loc["macro recall", "change"] == pytest.approx(0.25)
    # fine-tuned F1: class 0 P=2/3 R=1 -> 0.8; class 1 P=1 R=0.5 -> 2/3; baseline 0.5 each
    assert df.loc["macro F1", "fine-tuned"] == pytest.approx((0.8 + 2 / 3) / 2)
    assert df.loc["macro F1", "change"] == pytest.approx((0.8 + 2 / 3) / 2 - 0.5)


def test_compare_overall_without_baseline():
    ft = summarize(Y_TRUE, Y_PRED, 3)
    df = compare_overall(None, ft)
    assert df["baseline"].isna().all() and df["change"].isna().all()
    assert df.loc["accuracy", "fine-tuned"] == pytest.approx(4 / 6)


def test_compare_per_class():
    base = summarize(Y_TRUE, [0, 0, 1, 0, 2, 2], 3)
    ft = summarize(Y_TRUE, Y_PRED, 3)
    df = compare_per_class(base, ft, ["ant", "bee", "cat"])
    assert list(df.columns) == ["class", "support",
                                "precision baseline", "precision fine-tuned", "precision change",
                                "recall baseline", "recall fine-tuned", "recall change",
                                "F1 baseline", "F1 fine-tuned", "F1 change"]
    assert df["class"].tolist() == ["ant", "bee", "cat"]
    assert df["support"].tolist() == [2, 2, 2]
    # baseline recall: ant 2/2, bee 1/2, cat 2/2; fine-tuned 1/2, 2/2, 1/2
    np.testing.assert_allclose(df["recall baseline"], [1.0, 0.5, 1.0])
    np.testing.assert_allclose(df["recall change"], [-0.5, 0.5, -0.5])
    # baseline precision: predicted 0 at {0,1,3} -> 2/3; predicted 1 at {2} -> 1; predicted 2 at {4,5} -> 1
    np.testing.assert_allclose(df["precision change"], [0.5 - 2 / 3, 2 / 3 - 1.0, 0.0])
    df0 = compare_per_class(None, ft, ["ant", "bee", "cat"])
    assert isinstance(df0, pd.DataFrame) and df0["F1 baseline"].isna().all()
    np.testing.assert_allclose(df0["F1 fine-tuned"], [0.5, 0.8, 2 / 3])


def _store_with_predictions(tmp_path, baseline=True):
    from ftcore.core.config import DataConfig, RunConfig
    from ftcore.runs.store import RunStore

    store = RunStore(tmp_path / "store")
    run_id = store.create_run(RunConfig(data=DataConfig("/d")))
    store.merge_info(run_id, class_names=["ant", "bee", "cat"])
    files = [f"/d/{i}.png" for i in range(6)]
    probs = np.full((6, 3), 1 / 3, dtype=np.float32)
    store.save_predictions(run_id, "finetuned", np.array(Y_TRUE), np.array(Y_PRED), probs, files)
    if baseline:
        store.save_predictions(run_id, "baseline", np.array(Y_TRUE), np.array([0, 0, 1, 0, 2, 2]), probs, files)
    return store, run_id


def test_compare_run(tmp_path):
    from ftcore.runs.compare import compare_run

    store, run_id = _store_with_predictions(tmp_path)
    cmp = compare_run(store, run_id)
    assert cmp.class_names == ["ant", "bee", "cat"]
    assert cmp.finetuned.accuracy == pytest.approx(4 / 6) and cmp.baseline.accuracy == pytest.approx(5 / 6)
    assert cmp.overall.loc["accuracy", "change"] == pytest.approx(-1 / 6)
    # baseline [0,0,1,0,2,2] vs fine-tuned [0,1,1,1,0,2]: images 1, 3, 4 flipped
    f = cmp.flipped
    assert f["file"].tolist() == ["/d/1.png", "/d/3.png", "/d/4.png"]
    assert f["true"].tolist() == ["ant", "bee", "cat"]
    assert f["baseline"].tolist() == ["ant", "ant", "cat"]
    assert f["fine-tuned"].tolist() == ["bee", "bee", "ant"]
    assert f["fixed"].tolist() == [False, True, False]
    assert cmp.per_class["recall change"].tolist() == pytest.approx([-0.5, 0.5, -0.5])


def test_compare_run_without_baseline_and_without_predictions(tmp_path):
    from ftcore.core.errors import RunStoreError
    from ftcore.runs.compare import compare_run

    store, run_id = _store_with_predictions(tmp_path, baseline=False)
    cmp = compare_run(store, run_id)
    assert cmp.baseline is None and cmp.flipped.empty and cmp.overall["baseline"].isna().all()
    from ftcore.core.config import DataConfig, RunConfig

    empty = store.create_run(RunConfig(data=DataConfig("/d")))
    with pytest.raises(RunStoreError, match=rf"run {empty} has no fine-tuned validation predictions yet "
                                            r"\(status: queued\)"):
        compare_run(store, empty)
    with pytest.raises(RunStoreError, match="is not in the store"):
        compare_run(store, "nope")
