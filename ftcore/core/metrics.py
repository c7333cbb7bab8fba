"""Classification metrics (scikit-learn) and the baseline-vs-fine-tuned comparison."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

__all__ = ["Summary", "summarize", "compare_overall", "compare_per_class", "macro_recall"]


def macro_recall(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> float:
    """Unweighted mean of per-class recall over the classes present in `y_true`.

    Equals scikit-learn's balanced accuracy; a fraction in [0, 1].
    """
    labels = np.unique(np.asarray(y_true))
    if labels.size == 0:
        return 0.0
    _, r, _, _ = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    return float(np.mean(r))


@dataclass(frozen=True)
class Summary:
    """Metrics of one model on one set of images.

    Attributes
    ----------
    accuracy, macro_recall, macro_f1 : float
        Fractions in [0, 1]; macro averages are over classes with at least one
        true image.
    precision, recall, f1 : numpy.ndarray of shape (n_classes,)
        Per class; 0 where undefined.
    support : numpy.ndarray of int, shape (n_classes,)
        True images per class.
    confusion : numpy.ndarray of int, shape (n_classes, n_classes)
        Rows are true classes, columns predicted classes.
    """

    accuracy: float
    macro_recall: float
    macro_f1: float
    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    support: np.ndarray
    confusion: np.ndarray


def summarize(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> Summary:
    """Accuracy, macro recall, macro F1, per-class scores and confusion matrix.

    Parameters
    ----------
    y_true, y_pred : array-like of int, shape (n_images,)
        True and predicted class indices in ``[0, n_classes)``.
    n_classes : int
        Number of classes (rows of the confusion matrix).

    Returns
    -------
    Summary
        Computed with ``sklearn.metrics`` (``zero_division=0``).
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    if y_true.size == 0:
        z = np.zeros(n_classes)
        return Summary(0.0, 0.0, 0.0, z, z.copy(), z.copy(), np.zeros(n_classes, dtype=np.int64),
                       np.zeros((n_classes, n_classes), dtype=np.int64))
    labels = np.arange(n_classes)
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    present = s > 0
    return Summary(
        accuracy=float(accuracy_score(y_true, y_pred)) if y_true.size else 0.0,
        macro_recall=float(r[present].mean()) if present.any() else 0.0,
        macro_f1=float(f[present].mean()) if present.any() else 0.0,
        precision=p, recall=r, f1=f, support=s.astype(np.int64),
        confusion=confusion_matrix(y_true, y_pred, labels=labels),
    )


def compare_overall(baseline: Summary | None, finetuned: Summary) -> pd.DataFrame:
    """Accuracy, macro recall and macro F1 of both models and their difference.

    Returns
    -------
    pandas.DataFrame
        Index: metric name; columns ``baseline``, ``fine-tuned``, ``change``
        (fine-tuned minus baseline, in fraction points). Baseline columns are
        NaN when `baseline` is None.
    """
    rows = {}
    for key, label in (("accuracy", "accuracy"), ("macro_recall", "macro recall"), ("macro_f1", "macro F1")):
        b = getattr(baseline, key) if baseline is not None else np.nan
        ft = getattr(finetuned, key)
        rows[label] = {"baseline": b, "fine-tuned": ft, "change": ft - b}
    return pd.DataFrame.from_dict(rows, orient="index")


def compare_per_class(baseline: Summary | None, finetuned: Summary, class_names: list[str]) -> pd.DataFrame:
    """Per-class precision, recall and F1 of both models with differences.

    Returns
    -------
    pandas.DataFrame
        One row per class; columns ``class``, ``support``, and for each of
        precision, recall, F1: ``<score> baseline``, ``<score> fine-tuned``,
        ``<score> change``.
    """
    df = pd.DataFrame({"class": class_names, "support": finetuned.support})
    for key, label in (("precision", "precision"), ("recall", "recall"), ("f1", "F1")):
        b = getattr(baseline, key) if baseline is not None else np.full(len(class_names), np.nan)
        ft = getattr(finetuned, key)
        df[f"{label} baseline"] = b
        df[f"{label} fine-tuned"] = ft
        df[f"{label} change"] = ft - b
    return df
