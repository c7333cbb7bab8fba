"""Baseline against fine-tuned on the same validation images of one stored run."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from ftcore.core.errors import RunStoreError
from ftcore.core.metrics import Summary, compare_overall, compare_per_class, summarize
from ftcore.core.records import ModelRole

__all__ = ["RunComparison", "compare_run"]


@dataclass(frozen=True)
class RunComparison:
    """Baseline vs fine-tuned on the same validation images of one run.

    Attributes
    ----------
    class_names : list of str
    baseline : Summary or None
        None when the run trained no baseline (or it was cancelled first).
    finetuned : Summary
    overall : pandas.DataFrame
        From :func:`compare_overall`.
    per_class : pandas.DataFrame
        From :func:`compare_per_class`.
    flipped : pandas.DataFrame
        Validation images whose prediction changed: ``file``, ``true``,
        ``baseline``, ``fine-tuned``, ``fixed`` (True when fine-tuning made
        it right, False when it made it wrong, None when both are wrong).
    """

    class_names: list[str]
    baseline: Summary | None
    finetuned: Summary
    overall: pd.DataFrame
    per_class: pd.DataFrame
    flipped: pd.DataFrame


def compare_run(store, run_id: str) -> RunComparison:
    """Load a run's saved validation predictions and compare the two models.

    Parameters
    ----------
    store : ftcore.runs.store.RunStore
    run_id : str

    Raises
    ------
    RunStoreError
        If the run is unknown or has no fine-tuned predictions yet.
    """
    rec = store.get(run_id)
    names = list(rec.facts.class_names)
    ft = store.load_predictions(run_id, ModelRole.FINETUNED)
    if ft is None or not names:
        raise RunStoreError(f"run {run_id} has no fine-tuned validation predictions yet (status: {rec.status}).")
    b = store.load_predictions(run_id, ModelRole.BASELINE)
    n = len(names)
    fs = summarize(ft["y_true"], ft["y_pred"], n)
    bs = summarize(b["y_true"], b["y_pred"], n) if b is not None else None
    rows = []
    if b is not None:
        for f, t, pb, pf in zip(ft["files"], ft["y_true"], b["y_pred"], ft["y_pred"]):
            if pb != pf:
                fixed = True if pf == t else (False if pb == t else None)
                rows.append({"file": str(f), "true": names[t], "baseline": names[pb], "fine-tuned": names[pf],
                             "fixed": fixed})
    flipped = pd.DataFrame(rows, columns=["file", "true", "baseline", "fine-tuned", "fixed"])
    return RunComparison(names, bs, fs, compare_overall(bs, fs), compare_per_class(bs, fs, names), flipped)
