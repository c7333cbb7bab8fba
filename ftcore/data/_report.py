"""What the audit reports: one record per file, the report, and the summary of the classes.

:func:`summarise` turns the audited files (decoded, duplicates resolved) into
an :class:`AuditReport`: usable images per class and split, the refusals that
stop training (a single class, a class too small to split, class sets that
differ between training and validation), and the warnings (imbalance with the
accuracy of always answering the largest class, a wrapper folder, files left
out). :func:`majority_accuracy` is that baseline accuracy, also used by
:class:`ftcore.data.split.DatasetSplit`. The public names are imported from
:mod:`ftcore.data.audit`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ftcore.core.errors import DatasetError
from ftcore.data.scan import Layout, Problem

#: A warning is given when the largest class has more than this many times the images of the smallest.
IMBALANCE_FACTOR = 3.0


def val_share(n: int, val_fraction: float) -> int:
    """Validation images of a class of `n` in the stratified split: ``floor(f * n + 0.5)`` clamped to [1, n - 1]."""
    return min(max(math.floor(val_fraction * n + 0.5), 1), n - 1)


def majority_accuracy(train_counts: Mapping[str, int], val_counts: Mapping[str, int]) -> float | None:
    """Validation accuracy of always answering the class with the most training images.

    The baseline any classifier must beat on imbalanced data.

    Parameters
    ----------
    train_counts : mapping of str to int
        Training images per class; of classes tied for the most, the first
        in the mapping's order is the answer.
    val_counts : mapping of str to int
        Validation images per class (absent classes count 0).

    Returns
    -------
    float or None
        A fraction in [0, 1]; None when there is no training or no validation
        image.
    """
    n_val = sum(val_counts.values())
    if not train_counts or not n_val:
        return None
    big = max(train_counts, key=train_counts.__getitem__)  # max() keeps the first of ties
    return val_counts.get(big, 0) / n_val


@dataclass
class AuditItem:
    """One file of the data and what the audit found.

    Attributes
    ----------
    path : str
    split : str
        ``"all"`` (to be split), ``"train"`` or ``"val"``.
    class_name : str
    usable : bool
        Decoded and not left out as a duplicate, conflict or leak.
    sha : bytes or None
        BLAKE2b-128 digest of the file's bytes.
    phash : numpy.ndarray or None
        256-bit perceptual hash as 4 uint64.
    colour : numpy.ndarray or None
        Mean RGB of the thumbnail, float, shape (3,).
    array : numpy.ndarray or None
        Decoded uint8 image of shape (height, width, 3) when kept.
    thumb : numpy.ndarray or None
        uint8 thumbnail, at most 64 pixels a side (dropped unless shown).
    """

    path: str
    split: str
    class_name: str
    usable: bool = False
    sha: bytes | None = None
    phash: np.ndarray | None = None
    colour: np.ndarray | None = None
    array: np.ndarray | None = None
    thumb: np.ndarray | None = None


@dataclass
class AuditReport:
    """What :func:`ftcore.data.audit.audit_dataset` found.

    Attributes
    ----------
    ok : bool
        True when training can proceed (no problem has action ``refused``).
    source : str
        The path given (a folder or a zip).
    root : str
        The folder audited (inside a wrapper folder; the extraction folder of a zip).
    layout : str
        ``class_folders``, ``train_val``, ``separate_val``, ``images_at_root``,
        or ``wrapper_folder`` when a wrapper was gone through.
    split_layout : str
        The layout inside the wrapper (``class_folders``, ``train_val``...).
    class_names : list of str
        Sorted classes with usable training images.
    classes : dict
        Class name to usable images: flat for ``class_folders``;
        ``{"train": {...}, "val": {...}}`` when the data has splits.
    problems : list of Problem
    warnings : list of str
    majority_accuracy : float or None
        Validation accuracy, a fraction in [0, 1], of always answering the
        class with the most training images (:func:`majority_accuracy`).
    imbalance : float or None
        Largest over smallest training class count.
    items : list of AuditItem
    thumbnails : dict of str to numpy.ndarray
        Small uint8 images of the files in problems and of a few per class.
    val_fraction : float
    seconds : float
        Wall time of the audit.
    """

    ok: bool
    source: str
    root: str
    layout: str
    split_layout: str
    class_names: list[str]
    classes: dict
    problems: list[Problem]
    warnings: list[str]
    majority_accuracy: float | None = None
    imbalance: float | None = None
    items: list[AuditItem] = field(default_factory=list)
    thumbnails: dict[str, np.ndarray] = field(default_factory=dict)
    val_fraction: float = 0.2
    seconds: float = 0.0

    def to_json(self) -> dict:
        """The JSON object of ``python -m ftcore audit --json``: ok, layout, classes, problems, warnings."""
        return {"ok": self.ok, "layout": self.layout, "classes": self.classes,
                "problems": [p.__dict__ for p in self.problems], "warnings": list(self.warnings)}

    def refusals(self) -> list[Problem]:
        """Problems that stop training."""
        return [p for p in self.problems if p.action == "refused"]

    def split_counts(self) -> dict[str, dict[str, int]]:
        """Usable images per class in the run's training and validation split (``{"train": .., "val": ..}``)."""
        if self.split_layout != "class_folders":
            return {s: dict(self.classes.get(s, {})) for s in ("train", "val")}
        out: dict[str, dict[str, int]] = {"train": {}, "val": {}}
        for c, n in self.classes.items():
            v = val_share(n, self.val_fraction) if n >= 2 else 0
            out["train"][c], out["val"][c] = n - v, v
        return out

    def samples(self, n: int = 4) -> dict[str, list[str]]:
        """Up to `n` usable file paths per class, for thumbnails."""
        out: dict[str, list[str]] = {c: [] for c in self.class_names}
        for it in self.items:
            if it.usable and it.split != "val" and it.class_name in out and len(out[it.class_name]) < n:
                out[it.class_name].append(it.path)
        return out


def refusal_message(report: AuditReport) -> str:
    """One message naming every refusal of a report, for a :class:`DatasetError`."""
    return "; ".join(f"{p.path}: {p.message}" for p in report.refusals())


def require_ok(report: AuditReport) -> None:
    """Raise :class:`DatasetError` with every refusal when the report is not ok."""
    if not report.ok:
        raise DatasetError(refusal_message(report))


def _count(items: list[AuditItem]) -> tuple[dict[str, dict[str, int]], dict[str, dict[str, int]]]:
    """Files and usable files per split and class."""
    files: dict[str, dict[str, int]] = {}
    usable: dict[str, dict[str, int]] = {}
    for it in items:
        files.setdefault(it.split, {}).setdefault(it.class_name, 0)
        usable.setdefault(it.split, {}).setdefault(it.class_name, 0)
        files[it.split][it.class_name] += 1
        usable[it.split][it.class_name] += it.usable
    return files, usable


def _check_given_split(layout: Layout, names: list[str], train_counts: dict[str, int], val_counts: dict[str, int],
                       problems: list[Problem], warnings: list[str]) -> None:
    """Refuse classes only in validation and a validation split with no image; say classes it lacks."""
    vroot = Path(layout.splits["val"].root)
    for c in sorted(set(val_counts) - set(train_counts)):
        problems.append(Problem(str(vroot / c), "class_mismatch", f"class '{c}' has validation images but no usable "
                                f"training image in {layout.splits['train'].root}; add training images for it "
                                "or remove it from validation", "refused"))
    missing = [c for c in names if c not in val_counts]
    for c in missing:
        problems.append(Problem(str(Path(layout.splits["train"].root) / c), "class_mismatch",
                                f"class '{c}' has no usable validation image in {vroot}: it is trained but its "
                                "recall cannot be measured; add validation images for it", "kept"))
    if missing:
        warnings.append(f"classes without validation images: {', '.join(missing)}")
    if len(names) >= 2 and not val_counts:
        problems.append(Problem(str(vroot), "too_few", "no usable validation image; add images to the "
                                "validation folder", "refused"))


def _check_splittable(root: str, train_counts: dict[str, int], val_fraction: float,
                      problems: list[Problem]) -> None:
    """Refuse a class too small for the stratified split to put an image in both parts."""
    need = max(2, math.ceil(1 / val_fraction))
    for c, n in train_counts.items():
        if n < 2:
            problems.append(Problem(str(Path(root) / c), "too_few", f"class '{c}' has {n} usable "
                                    f"image; it needs at least 2 to appear in both training and validation "
                                    f"(1 each), and {need} or more for a {val_fraction:.0%} validation share "
                                    f"to hold one image by itself. Add images or remove the class folder.",
                                    "refused"))


def _check_classes(layout: Layout, train_counts: dict[str, int], val_counts: dict[str, int], val_fraction: float,
                   problems: list[Problem], warnings: list[str]) -> None:
    """The refusals about the classes: fewer than two, or a split that cannot be made or measured."""
    names = sorted(train_counts)
    has_splits = layout.kind in ("train_val", "separate_val")
    if layout.kind == "images_at_root":
        pass  # the refusal is among the layout's problems
    elif len(names) < 2:
        tr_root = layout.splits["train" if has_splits else "all"].root
        found = f"found 1 ({names[0]})" if names else "found none"
        problems.append(Problem(tr_root, "single_class", f"a classifier needs at least two class folders with "
                                f"usable images; {found}. Put each class's images in its own sub-folder, e.g. "
                                f"{Path(tr_root) / 'cats'}/*.jpg and {Path(tr_root) / 'dogs'}/*.jpg.", "refused"))
    if has_splits:
        if names:
            _check_given_split(layout, names, train_counts, val_counts, problems, warnings)
    elif names:
        _check_splittable(layout.root, train_counts, val_fraction, problems)


def _imbalance_warning(train_counts: dict[str, int], majority: float | None, imbalance_factor: float) -> str | None:
    """The warning for training classes more than `imbalance_factor` apart, naming the majority accuracy."""
    big = max(train_counts, key=train_counts.__getitem__)
    small = min(train_counts, key=train_counts.__getitem__)
    ratio = train_counts[big] / train_counts[small]
    if ratio <= imbalance_factor:
        return None
    acc = f"{majority:.2f}" if majority is not None else "n/a"
    return (f"classes are imbalanced: '{big}' has {train_counts[big]} training images, '{small}' "
            f"{train_counts[small]} ({ratio:.1f}x, above {imbalance_factor:g}x). Always answering "
            f"'{big}' scores {acc} validation accuracy; compare against that, watch macro recall, "
            "and consider a class-balanced loss or sampler (class_balance 'loss' or 'sampler').")


def summarise(source: str, layout: Layout, items: list[AuditItem], problems: list[Problem], val_fraction: float,
              imbalance_factor: float = IMBALANCE_FACTOR) -> AuditReport:
    """Build the report of audited files: classes, refusals, imbalance and the warnings.

    Parameters
    ----------
    source : str
        The path given to the audit.
    layout : Layout
        From :func:`ftcore.data.scan.find_layout`.
    items : list of AuditItem
        Every file, decoded, duplicates resolved (``usable`` set).
    problems : list of Problem
        What was found so far; the summary's refusals are appended to it.
    val_fraction : float
        Share held out of each class when the data has no split, in (0, 1).
    imbalance_factor : float, default 3.0
        Warn when the largest training class is more than this many times the smallest.

    Returns
    -------
    AuditReport
        Without thumbnails and wall time (the audit adds them).
    """
    warnings: list[str] = []
    has_splits = layout.kind in ("train_val", "separate_val")
    files, usable = _count(items)
    tr = "train" if has_splits else "all"
    train_counts = {c: n for c, n in sorted(usable.get(tr, {}).items()) if n > 0}
    for split, counts in usable.items():
        for c, n in counts.items():
            if n == 0 and (split != "val" or c not in train_counts):
                folder = str(Path(layout.splits[split].root) / c)
                problems.append(Problem(folder, "empty_class", f"none of its {files[split][c]} files is a usable "
                                        "image; not made a class", "ignored"))
    names = sorted(train_counts)
    val_counts = {c: n for c, n in usable.get("val", {}).items() if n > 0}
    _check_classes(layout, train_counts, val_counts, val_fraction, problems, warnings)
    counts_val = ({c: val_counts.get(c, 0) for c in names} if has_splits
                  else {c: val_share(n, val_fraction) if n >= 2 else 0 for c, n in train_counts.items()})
    majority = imbalance = None
    if len(names) >= 2:
        imbalance = max(train_counts.values()) / min(train_counts.values())
        majority = majority_accuracy(train_counts, counts_val)
        if (w := _imbalance_warning(train_counts, majority, imbalance_factor)) is not None:
            warnings.append(w)
    if layout.wrapper:
        warnings.append(f"{layout.wrapper} only wraps {layout.root}; its contents are used")
    bad = [p for p in problems if p.action == "skipped"]
    if bad:
        warnings.append(f"{len(bad)} files are left out ({', '.join(sorted({p.kind for p in bad}))}); see problems")
    classes = ({s: {c: n for c, n in sorted(usable.get(s, {}).items()) if n > 0} for s in ("train", "val")}
               if has_splits else dict(train_counts))
    ok = not any(p.action == "refused" for p in problems)
    return AuditReport(ok, source, layout.root, "wrapper_folder" if layout.wrapper else layout.kind, layout.kind,
                       names, classes, problems, warnings, majority, imbalance, items, val_fraction=val_fraction)
