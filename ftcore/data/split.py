"""Split the audited images, and build datasets, samplers and transforms for training.

The data is read by :func:`ftcore.data.audit.audit_dataset`, which decodes every
file once; :func:`split_from_audit` turns its report (with the decoded
arrays) into the run's :class:`DatasetSplit`, and :func:`prepare_split` does
both. Layouts, file problems and the decoding rules are described in
:mod:`ftcore.data.scan`, :mod:`ftcore.data.audit` and :mod:`ftcore.data.images`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, WeightedRandomSampler

from ftcore.core.config import DataConfig
from ftcore.core.errors import DatasetError
from ftcore.data.audit import AuditReport, audit_dataset, majority_accuracy, refusal_message, val_share
from ftcore.data.augment import build_transforms  # the one builder; here for the callers of this module
from ftcore.data.images import IMAGE_SUFFIXES, decode_image
from ftcore.data.scan import Layout, Problem, check_data_root, data_roots, find_layout

__all__ = [
    "IMAGE_SUFFIXES",
    "Problem",
    "DatasetSplit",
    "decode_image",
    "prepare_split",
    "split_from_audit",
    "scan_layout",
    "stratified_split",
    "class_weights",
    "balanced_sampler",
    "ArrayImageDataset",
    "build_transforms",
    "write_demo_dataset",
]

log = logging.getLogger(__name__)


@dataclass
class DatasetSplit:
    """Decoded training and validation images of one run.

    Attributes
    ----------
    class_names : list of str
    layout : str
        ``"class_folders"``, ``"train_val"`` or ``"separate_val"``.
    train_images, val_images : list of numpy.ndarray
        uint8 arrays of shape (height, width, 3).
    train_labels, val_labels : numpy.ndarray of int64
    train_files, val_files : list of str
    problems : list of Problem
        Everything the audit found (skipped, ignored, converted...).
    warnings : list of str
        The audit's warnings (imbalance, classes without validation images...).
    """

    class_names: list[str]
    layout: str
    train_images: list[np.ndarray]
    train_labels: np.ndarray
    train_files: list[str]
    val_images: list[np.ndarray]
    val_labels: np.ndarray
    val_files: list[str]
    problems: list[Problem]
    warnings: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, dict[str, int]]:
        """Images per class per split: ``{"train": {...}, "val": {...}}``."""
        out = {}
        for split, labels in (("train", self.train_labels), ("val", self.val_labels)):
            bc = np.bincount(labels, minlength=len(self.class_names))
            out[split] = {c: int(n) for c, n in zip(self.class_names, bc)}
        return out

    @property
    def majority_accuracy(self) -> float:
        """Validation accuracy, in [0, 1], of always answering the class with the most training images.

        :func:`ftcore.data.audit.majority_accuracy` of :meth:`counts`; 0.0 without validation images.
        """
        counts = self.counts()
        acc = majority_accuracy(counts["train"], counts["val"])
        return 0.0 if acc is None else acc


def split_from_audit(report: AuditReport, seed: int = 0) -> DatasetSplit:
    """Turn an audit that kept its decoded images into the run's split, decoding nothing again.

    Usable images only (duplicates kept once, label conflicts and leaked
    validation copies left out). Without a given split, a seeded stratified
    split (:func:`stratified_split`) holds out ``report.val_fraction`` of each
    class.

    Parameters
    ----------
    report : AuditReport
        From :func:`ftcore.data.audit.audit_dataset` with ``keep_images=True``.
    seed : int, default 0

    Returns
    -------
    DatasetSplit

    Raises
    ------
    DatasetError
        If the report is not ok (the message names every refusal), or it
        holds no decoded images.
    """
    if not report.ok:
        raise DatasetError(refusal_message(report))
    index = {c: i for i, c in enumerate(report.class_names)}
    parts: dict[str, tuple[list, list, list]] = {}
    for it in report.items:
        if it.usable and it.class_name in index:
            if it.array is None:
                raise DatasetError(f"the audit of {report.source} kept no decoded images; audit it with "
                                   "keep_images=True to train from it.")
            imgs, ys, fs = parts.setdefault(it.split, ([], [], []))
            imgs.append(it.array)
            ys.append(index[it.class_name])
            fs.append(it.path)
    if report.split_layout == "class_folders":
        imgs, ys, fs = parts["all"]
        tr_idx, va_idx = stratified_split(np.asarray(ys), report.val_fraction, seed)
        tr = ([imgs[i] for i in tr_idx], [ys[i] for i in tr_idx], [fs[i] for i in tr_idx])
        va = ([imgs[i] for i in va_idx], [ys[i] for i in va_idx], [fs[i] for i in va_idx])
    else:
        tr, va = parts["train"], parts["val"]
    return DatasetSplit(list(report.class_names), report.split_layout, tr[0], np.asarray(tr[1], dtype=np.int64), tr[2],
                        va[0], np.asarray(va[1], dtype=np.int64), va[2], list(report.problems), list(report.warnings))


def prepare_split(
    data: DataConfig,
    seed: int = 0,
    short_side: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    store_root: str | Path | None = None,
) -> DatasetSplit:
    """Audit the data of a run, decoding each file once, and split it.

    Parameters
    ----------
    data : DataConfig
        Folders (or a zip) and validation fraction.
    seed : int, default 0
        Seed of the stratified split (:func:`stratified_split`).
    short_side : int or None, default None
        Decoded images are downscaled to this shorter side in pixels (never
        upscaled); None keeps full size.
    progress : callable or None
        Called as ``progress(done, total)`` after each file.
    store_root : str, pathlib.Path or None, default None
        Run store whose decoded-image cache (:mod:`ftcore.data.cache`) the audit
        reads and fills, and where a zip is extracted; None uses
        ``$FTCORE_HOME``.

    Returns
    -------
    DatasetSplit

    Raises
    ------
    DatasetError
        Whatever the audit refuses (fewer than two usable classes, a class
        too small to split, class sets that differ...), named.
    """
    report = audit_dataset(data.train_dir, data.val_dir, val_fraction=data.val_fraction, short_side=short_side,
                           keep_images=True, progress=progress, store_root=store_root)
    return split_from_audit(report, seed)


def scan_layout(data: DataConfig) -> Layout:
    """Find the layout and list the files of a run's data, without decoding: a cheap early refusal.

    Returns
    -------
    Layout

    Raises
    ------
    DatasetError
        If a folder is missing or unreadable, outside the data roots, has its
        images at the root, or has fewer than two class folders with files.
    """
    from ftcore.core.paths import default_store_root

    extra = (default_store_root().resolve(),)
    check_data_root(data.train_dir, extra)
    if data.val_dir:
        check_data_root(data.val_dir, extra)
    if Path(data.train_dir).expanduser().is_file():
        return Layout("zip", str(data.train_dir), {})  # audited when the run extracts it
    layout = find_layout(data.train_dir, data.val_dir, data_roots())
    refused = [p for p in layout.problems if p.action == "refused"]
    if refused:
        raise DatasetError(f"{refused[0].path} {refused[0].message}")
    train = layout.splits.get("train") or layout.splits["all"]
    if len(train.classes) < 2:
        found = f"found {len(train.classes)} ({', '.join(train.classes)})" if train.classes else "found none"
        raise DatasetError(
            f"{train.root} needs at least two class folders with images; {found}. Put each class's images in its "
            "own sub-folder, e.g. DATA/cats/*.jpg and DATA/dogs/*.jpg."
        )
    return layout


def stratified_split(labels: np.ndarray, val_fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Seeded stratified split in which every class appears in both parts.

    Each class with ``n`` images gets ``floor(val_fraction * n + 0.5)``
    validation images (rounded half up), clamped to ``[1, n - 1]``, chosen by a seeded permutation
    (``numpy.random.default_rng(seed)``). Unlike scikit-learn's
    ``train_test_split(stratify=...)``, which rounds over the whole set, a
    small class never ends up with no validation image.

    Parameters
    ----------
    labels : numpy.ndarray of int, shape (n_images,)
        Every class must have at least two images.
    val_fraction : float
        In (0, 1).
    seed : int, default 0

    Returns
    -------
    train_idx, val_idx : numpy.ndarray of int64
        Sorted indices into `labels`.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    tr, va = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_val = val_share(len(idx), val_fraction)
        va.append(idx[:n_val])
        tr.append(idx[n_val:])
    return np.sort(np.concatenate(tr)).astype(np.int64), np.sort(np.concatenate(va)).astype(np.int64)


def class_weights(labels: np.ndarray, n_classes: int) -> torch.Tensor:
    """Class weights for a class-balanced cross-entropy (``class_balance="loss"``).

    scikit-learn's "balanced" heuristic, ``n_samples / (n_classes * bincount)``
    (King & Zeng, 2001), from ``sklearn.utils.class_weight.compute_class_weight``;
    a class with no training image gets weight 1.

    Parameters
    ----------
    labels : numpy.ndarray of int, shape (n_images,)
        Training labels.
    n_classes : int

    Returns
    -------
    torch.Tensor of float32, shape (n_classes,)
        For ``torch.nn.functional.cross_entropy(..., weight=...)``.
    """
    from sklearn.utils.class_weight import compute_class_weight

    labels = np.asarray(labels, dtype=np.int64)
    present = np.unique(labels)
    w = np.ones(n_classes, dtype=np.float64)
    if len(present):
        w[present] = compute_class_weight("balanced", classes=present, y=labels)
    return torch.tensor(w, dtype=torch.float32)


def balanced_sampler(labels: np.ndarray, n_classes: int, seed: int = 0) -> WeightedRandomSampler:
    """A sampler that draws every class equally often (``class_balance="sampler"``).

    Each image is drawn with probability proportional to the
    :func:`class_weights` of its class, with replacement, as many draws per
    epoch as there are images; pass it as ``DataLoader(sampler=...)`` instead
    of ``shuffle=True``.

    Parameters
    ----------
    labels : numpy.ndarray of int, shape (n_images,)
    n_classes : int
    seed : int, default 0
        Seed of the sampler's own generator.

    Returns
    -------
    torch.utils.data.WeightedRandomSampler
    """
    w = class_weights(labels, n_classes)[torch.as_tensor(np.asarray(labels, dtype=np.int64))]
    return WeightedRandomSampler(w.double(), num_samples=len(w), replacement=True,
                                 generator=torch.Generator().manual_seed(seed))


class ArrayImageDataset(Dataset):
    """A map-style dataset over decoded uint8 images.

    Parameters
    ----------
    images : list of numpy.ndarray
        uint8 arrays of shape (height, width, 3).
    labels : numpy.ndarray of int64, shape (n,)
    transform : callable
        Takes a PIL image, returns a float Tensor of shape (3, size, size),
        e.g. from :func:`build_transforms`.
    """

    def __init__(self, images: list[np.ndarray], labels: np.ndarray, transform: Callable) -> None:
        self.images = images
        self.labels = labels
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])


def write_demo_dataset(dest: str | Path, size: int = 32) -> Path:
    """Write scikit-learn's handwritten digits as an image folder.

    The 1,797 real 8x8 digits of ``sklearn.datasets.load_digits`` (UCI
    optical recognition of handwritten digits) are scaled from 0-16 to 0-255,
    inverted to dark ink on white, upscaled (bicubic) and saved as PNG in
    ``dest/<digit>/<index>.png``. Existing complete output is reused (a
    marker file ``<dest>.complete`` beside the folder says it is complete).

    Parameters
    ----------
    dest : str or pathlib.Path
        Folder to write into (created).
    size : int, default 32
        Side of the written images in pixels.

    Returns
    -------
    pathlib.Path
        `dest`.
    """
    from sklearn.datasets import load_digits

    dest = Path(dest)
    marker = dest.with_name(dest.name + ".complete")  # beside, not inside: it is no image
    if marker.exists():
        return dest
    digits = load_digits()
    for i, (img, y) in enumerate(zip(digits.images, digits.target)):
        d = dest / str(int(y))
        d.mkdir(parents=True, exist_ok=True)
        arr = (255 - np.clip(img * (255.0 / 16.0), 0, 255)).astype(np.uint8)
        Image.fromarray(arr).resize((size, size), Image.BICUBIC).save(d / f"{i:04d}.png")
    marker.write_text("ok\n")
    return dest
