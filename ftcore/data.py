"""Scan an image folder, decode each image once, split it, and build datasets.

Layouts understood:

- ``class_folders``: ``ROOT/<class>/<image>``; a seeded stratified split holds
  out a fraction of each class for validation.
- ``train_val``: ``ROOT/train/<class>/...`` and ``ROOT/val/<class>/...``
  (``valid/``, ``validation/``, or else ``test/`` also count); the given
  split is used.

A separate validation folder can also be passed. Every file is decoded once
(EXIF orientation applied, converted to RGB, downscaled so its shorter side is
at most the size the transforms need) and kept as a uint8 array; files that
cannot be decoded are named with the reason and left out.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch.utils.data import Dataset

from .config import DataConfig
from .errors import DatasetError

__all__ = [
    "IMAGE_SUFFIXES",
    "Problem",
    "ImageFolderScan",
    "DatasetSplit",
    "scan_folder",
    "decode_image",
    "prepare_split",
    "scan_layout",
    "stratified_split",
    "ArrayImageDataset",
    "build_transforms",
    "write_demo_dataset",
    "DatasetReport",
    "inspect_dataset",
]

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
#: File and folder names that are never images or classes (OS and tool debris).
JUNK_NAMES = frozenset({"__MACOSX", "Thumbs.db", "desktop.ini", ".ipynb_checkpoints", ".DS_Store"})
#: Validation folder names beside ``train/``, in order of preference; ``test/`` serves when no other is there.
_VAL_NAMES = ("val", "valid", "validation", "test")


@dataclass(frozen=True)
class Problem:
    """A file or folder the product did not use as given.

    Attributes
    ----------
    path : str
        The file or folder at fault.
    kind : str
        ``"unreadable"``, ``"not_image"``, ``"ignored"``, ``"not_in_class"``,
        ``"empty_class"`` or ``"nested"``.
    message : str
        Why, in words.
    action : str
        What happens to it: ``"skipped"``, ``"ignored"`` or ``"included"``.
    """

    path: str
    kind: str
    message: str
    action: str


@dataclass
class ImageFolderScan:
    """Image files found under one class-folder tree (not decoded yet).

    Attributes
    ----------
    root : str
        The folder scanned.
    class_names : list of str
        Sorted class folder names that hold at least one image file.
    files : list of str
        Image file paths.
    labels : list of int
        Class index of each file.
    problems : list of Problem
        Ignored entries and empty class folders.
    """

    root: str
    class_names: list[str]
    files: list[str]
    labels: list[int]
    problems: list[Problem] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        """Number of image files per class name."""
        c = {n: 0 for n in self.class_names}
        for y in self.labels:
            c[self.class_names[y]] += 1
        return c


def _is_junk(name: str) -> bool:
    return name.startswith(".") or name in JUNK_NAMES


def scan_folder(root: str | Path, role: str = "data folder") -> ImageFolderScan:
    """List the image files of a folder with one sub-folder per class.

    Files directly in a class folder and in folders below it belong to that
    class. Hidden entries and OS debris (``__MACOSX``, ``Thumbs.db``, ...) are
    ignored and listed as problems; files without an image suffix are listed
    as ``not_image``.

    Parameters
    ----------
    root : str or pathlib.Path
        The folder.
    role : str, default "data folder"
        What the folder is for, in messages (``"validation folder"``).

    Returns
    -------
    ImageFolderScan

    Raises
    ------
    DatasetError
        If `root` is not a folder, or has fewer than two class folders with
        images.
    """
    rootp = Path(root).expanduser()
    if not rootp.exists():
        raise DatasetError(f"{role} {rootp} does not exist; give a folder with one sub-folder per class.")
    if not rootp.is_dir():
        raise DatasetError(f"{role} {rootp} is a file, not a folder; give a folder with one sub-folder per class.")
    problems: list[Problem] = []
    classes: list[str] = []
    per_class: dict[str, list[str]] = {}
    for entry in sorted(rootp.iterdir(), key=lambda p: p.name):
        if _is_junk(entry.name):
            problems.append(Problem(str(entry), "ignored", "hidden or system entry, not a class", "ignored"))
            continue
        if not entry.is_dir():
            problems.append(Problem(str(entry), "not_in_class", "file at the top level belongs to no class folder", "ignored"))
            continue
        files: list[str] = []
        nested: dict[str, int] = {}
        for dirpath, dirnames, filenames in os.walk(entry):
            keep = []
            for d in sorted(dirnames):
                if _is_junk(d):
                    problems.append(Problem(os.path.join(dirpath, d), "ignored", "hidden or system folder", "ignored"))
                else:
                    keep.append(d)
            dirnames[:] = keep
            for f in sorted(filenames):
                fp = os.path.join(dirpath, f)
                if _is_junk(f):
                    problems.append(Problem(fp, "ignored", "hidden or system file", "ignored"))
                elif Path(f).suffix.lower() not in IMAGE_SUFFIXES:
                    problems.append(Problem(fp, "not_image", f"suffix '{Path(f).suffix}' is not an image type "
                                            f"({', '.join(sorted(IMAGE_SUFFIXES))})", "skipped"))
                else:
                    files.append(fp)
                    if dirpath != str(entry):
                        nested[dirpath] = nested.get(dirpath, 0) + 1
        for sub, n in nested.items():
            problems.append(Problem(sub, "nested", f"sub-folder of class '{entry.name}': its {n} images count as "
                                    f"'{entry.name}'. If it is a class of its own, move it up one level.", "included"))
        if files:
            classes.append(entry.name)
            per_class[entry.name] = files
        else:
            problems.append(Problem(str(entry), "empty_class", "class folder holds no image files", "ignored"))
    if len(classes) < 2:
        found = f"found {len(classes)} ({', '.join(classes)})" if classes else "found none"
        raise DatasetError(
            f"{rootp} needs at least two class folders with images; {found}. Put each class's images in its own "
            "sub-folder, e.g. DATA/cats/*.jpg and DATA/dogs/*.jpg."
        )
    files_all: list[str] = []
    labels: list[int] = []
    for i, c in enumerate(classes):
        files_all += per_class[c]
        labels += [i] * len(per_class[c])
    return ImageFolderScan(str(rootp), classes, files_all, labels, problems)


def decode_image(path: str | Path, max_short_side: int | None = None) -> np.ndarray:
    """Decode one image file to an RGB uint8 array, upright.

    Parameters
    ----------
    path : str or pathlib.Path
        Image file.
    max_short_side : int or None, default None
        When given, images whose shorter side is larger are downscaled
        (bicubic, aspect kept) so that it equals this many pixels.

    Returns
    -------
    numpy.ndarray of uint8, shape (height, width, 3)

    Raises
    ------
    DatasetError
        Naming the file, if it cannot be decoded.
    """
    try:
        with Image.open(path) as im:
            im.seek(0)
            if max_short_side is not None and im.format == "JPEG":
                # Let libjpeg decode at a reduced scale (a power of two, never below the target).
                w, h = im.size
                f = max_short_side / min(w, h)
                if f < 1:
                    im.draft("RGB", (math.ceil(w * f), math.ceil(h * f)))
            im = ImageOps.exif_transpose(im)
            if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
                im = im.convert("RGBA")
                bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
                im = Image.alpha_composite(bg, im)
            if im.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
                im = _to_8bit(im)
            im = im.convert("RGB")
            if max_short_side is not None and min(im.size) > max_short_side:
                scale = max_short_side / min(im.size)
                im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))), Image.BICUBIC)
            return np.asarray(im, dtype=np.uint8).copy()
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise DatasetError(f"cannot read image {path}: {e}") from e


def _to_8bit(im: Image.Image) -> Image.Image:
    """Scale 16-bit, 32-bit integer and float greyscale to 8 bits instead of clipping.

    16-bit data is divided by 257 (65535 -> 255); 32-bit integers and floats
    are scaled by their range when it exceeds 0-255 (floats in [0, 1] are
    taken as fractions of white).
    """
    arr = np.asarray(im, dtype=np.float64)
    if im.mode.startswith("I;16"):
        arr = arr / 257.0
    else:
        lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
        if im.mode == "F" and lo >= 0.0 and hi <= 1.0:
            arr = arr * 255.0
        elif lo < 0.0 or hi > 255.0:
            arr = (arr - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(arr)
    return Image.fromarray(np.clip(np.nan_to_num(arr), 0, 255).round().astype(np.uint8))


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
        Everything skipped or ignored, unreadable files included.
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

    def counts(self) -> dict[str, dict[str, int]]:
        """Images per class per split: ``{"train": {...}, "val": {...}}``."""
        out = {}
        for split, labels in (("train", self.train_labels), ("val", self.val_labels)):
            bc = np.bincount(labels, minlength=len(self.class_names))
            out[split] = {c: int(n) for c, n in zip(self.class_names, bc)}
        return out


def _find_split_dirs(root: Path) -> tuple[Path, Path] | None:
    train = root / "train"
    if not train.is_dir():
        return None
    for v in _VAL_NAMES:
        if (root / v).is_dir():
            return train, root / v
    return None


def _decode_all(
    files: Sequence[str], labels: Sequence[int], short_side: int | None, problems: list[Problem],
    progress: Callable[[int, int], None] | None, cache_dir: str | Path | None,
) -> tuple[list[np.ndarray], list[int], list[str]]:
    from .cache import decode_files

    items, _ = decode_files(files, short_side, decode_image, cache_dir, progress)
    imgs, ys, kept = [], [], []
    for f, y, item in zip(files, labels, items):
        if isinstance(item, str):
            problems.append(Problem(f, "unreadable", f"cannot be decoded as an image: {item}", "skipped"))
            log.warning("skipping unreadable image %s: %s", f, item)
            continue
        imgs.append(item)
        ys.append(y)
        kept.append(f)
    return imgs, ys, kept


def _align_classes(train: ImageFolderScan, val: ImageFolderScan) -> None:
    extra = [c for c in val.class_names if c not in train.class_names]
    if extra:
        raise DatasetError(
            f"validation folder {val.root} has classes {extra} that the training folder {train.root} lacks; "
            "give both folders the same class sub-folders."
        )
    index = {c: i for i, c in enumerate(train.class_names)}
    val.labels = [index[val.class_names[y]] for y in val.labels]
    val.class_names = list(train.class_names)


def prepare_split(
    data: DataConfig,
    seed: int = 0,
    short_side: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    cache_dir: str | Path | None = None,
) -> DatasetSplit:
    """Scan, decode once and split the images of a run.

    Parameters
    ----------
    data : DataConfig
        Folders and validation fraction.
    seed : int, default 0
        Seed of the stratified split (:func:`stratified_split`).
    short_side : int or None, default None
        Decoded images are downscaled to this shorter side in pixels (never
        upscaled); None keeps full size.
    progress : callable or None
        Called as ``progress(done, total)`` after each decoded file.
    cache_dir : str, pathlib.Path or None, default None
        Folder of the decoded-image cache (:func:`ftcore.cache.decode_files`);
        None decodes without caching.

    Returns
    -------
    DatasetSplit

    Raises
    ------
    DatasetError
        Fewer than two usable classes, a class with too few readable images
        to appear in both splits, or class sets that differ between folders.
    """
    root = Path(data.train_dir).expanduser()
    train_scan, val_scan, layout = scan_layout(data)
    problems: list[Problem] = list(train_scan.problems) + (list(val_scan.problems) if val_scan else [])
    names = train_scan.class_names
    n_tr = len(train_scan.files)
    all_img, all_y, all_f = _decode_all(train_scan.files + (val_scan.files if val_scan else []),
                                        train_scan.labels + (val_scan.labels if val_scan else []),
                                        short_side, problems, progress, cache_dir)
    is_train = set(train_scan.files[:n_tr])
    tr_img = [a for a, f in zip(all_img, all_f) if f in is_train]
    tr_y = [y for y, f in zip(all_y, all_f) if f in is_train]
    tr_f = [f for f in all_f if f in is_train]
    if val_scan is not None:
        va_img = [a for a, f in zip(all_img, all_f) if f not in is_train]
        va_y = [y for y, f in zip(all_y, all_f) if f not in is_train]
        va_f = [f for f in all_f if f not in is_train]
        _check_counts(names, tr_y, "training", str(train_scan.root), 1)
        missing = [names[i] for i in range(len(names)) if i not in set(va_y)]
        if missing:
            log.warning("classes %s have no validation images", missing)
    else:
        _check_counts(names, tr_y, "readable", str(root), 2)
        tr_idx, va_idx = stratified_split(np.asarray(tr_y), data.val_fraction, seed)
        va_img = [tr_img[i] for i in va_idx]
        va_y = [tr_y[i] for i in va_idx]
        va_f = [tr_f[i] for i in va_idx]
        tr_img = [tr_img[i] for i in tr_idx]
        tr_y = [tr_y[i] for i in tr_idx]
        tr_f = [tr_f[i] for i in tr_idx]
    if not va_y:
        raise DatasetError(f"no readable validation images were found for {root}; add images to the validation folder.")
    return DatasetSplit(names, layout, tr_img, np.asarray(tr_y, dtype=np.int64), tr_f,
                        va_img, np.asarray(va_y, dtype=np.int64), va_f, problems)


def scan_layout(data: DataConfig) -> tuple[ImageFolderScan, ImageFolderScan | None, str]:
    """Find the layout and list the files of a run's data, without decoding.

    Cheap enough to call before a run starts, to refuse unusable folders early.

    Returns
    -------
    train_scan : ImageFolderScan
    val_scan : ImageFolderScan or None
        None for the ``class_folders`` layout (split later); its labels use
        the training folder's class indices.
    layout : str
        ``"class_folders"``, ``"train_val"`` or ``"separate_val"``.

    Raises
    ------
    DatasetError
        As :func:`scan_folder`, or when the validation folder has classes the
        training folder lacks.
    """
    root = Path(data.train_dir).expanduser()
    try:
        return _scan_layout(root, data)
    except OSError as e:
        raise DatasetError(f"cannot read {e.filename or root} ({e.strerror or e}); check that the folder exists and "
                           "is readable by the user running the product.") from e


def _scan_layout(root: Path, data: DataConfig) -> tuple[ImageFolderScan, ImageFolderScan | None, str]:
    if data.val_dir and Path(data.val_dir).expanduser().resolve() == root.resolve():
        raise DatasetError(
            f"the validation folder {data.val_dir} is the training folder: the metrics would be measured on "
            "training images. Give a separate validation folder, or none to split off a share of each class."
        )
    if data.val_dir:
        train_scan, val_scan, layout = scan_folder(root), scan_folder(data.val_dir, "validation folder"), "separate_val"
    elif (dirs := _find_split_dirs(root)) is not None:
        train_scan, val_scan, layout = scan_folder(dirs[0]), scan_folder(dirs[1], "validation folder"), "train_val"
    else:
        train_scan, val_scan, layout = scan_folder(root), None, "class_folders"
    if val_scan is not None:
        _align_classes(train_scan, val_scan)
    return train_scan, val_scan, layout


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
        n_val = min(max(math.floor(val_fraction * len(idx) + 0.5), 1), len(idx) - 1)
        va.append(idx[:n_val])
        tr.append(idx[n_val:])
    return np.sort(np.concatenate(tr)).astype(np.int64), np.sort(np.concatenate(va)).astype(np.int64)


def _check_counts(names: list[str], labels: list[int], what: str, root: str, need: int) -> None:
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=len(names))
    small = [f"{names[i]} ({counts[i]})" for i in range(len(names)) if counts[i] < need]
    if small:
        raise DatasetError(
            f"{root}: classes {', '.join(small)} have fewer than {need} {what} images; each class needs at least "
            f"{need} so it can appear in training{' and validation' if need > 1 else ''}. Add images or remove the class folder."
        )


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


def build_transforms(model: torch.nn.Module, img_size: int | None = None) -> tuple[Callable, Callable, int]:
    """Training and validation transforms from the model's timm data config.

    Parameters
    ----------
    model : torch.nn.Module
        A timm model; its ``pretrained_cfg`` gives mean, std, interpolation
        and crop fraction (``timm.data.resolve_data_config``).
    img_size : int or None
        Square input size in pixels; None uses the model's default.

    Returns
    -------
    train_transform : callable
        timm's ImageNet training transform: random resized crop (scale 0.35
        to 1), horizontal flip, colour jitter 0.2, normalisation.
    val_transform : callable
        Deterministic: resize the shorter side to ``size / crop_pct``,
        centre crop, normalisation.
    short_side : int
        Shorter side in pixels that decoded images need (``size / crop_pct``,
        rounded up), for :func:`prepare_split`.
    """
    from timm.data import create_transform, resolve_data_config

    cfg = resolve_data_config(model=model)
    if img_size is not None:
        cfg["input_size"] = (3, img_size, img_size)
    size = cfg["input_size"][-1]
    train_tf = create_transform(**cfg, is_training=True, scale=(0.35, 1.0), color_jitter=0.2)
    val_tf = create_transform(**cfg, is_training=False)
    return train_tf, val_tf, math.ceil(size / cfg.get("crop_pct", 0.875))


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


@dataclass
class DatasetReport:
    """What the data step shows before training.

    Attributes
    ----------
    layout : str
        As in :class:`DatasetSplit`.
    class_names : list of str
    counts : dict
        ``{"train": {class: n}, "val": {class: n}}`` of readable images after
        the split the run will use (same seed, same fraction).
    samples : dict
        Class name to up to `n_samples` training image paths, for thumbnails.
    problems : list of Problem
    """

    layout: str
    class_names: list[str]
    counts: dict[str, dict[str, int]]
    samples: dict[str, list[str]]
    problems: list[Problem]

    @property
    def n_images(self) -> int:
        """Readable images over both splits."""
        return sum(sum(c.values()) for c in self.counts.values())


def inspect_dataset(data: DataConfig, seed: int = 0, n_samples: int = 4,
                    progress: Callable[[int, int], None] | None = None) -> DatasetReport:
    """Decode every image once (small) and report classes, split counts and problems.

    Parameters
    ----------
    data : DataConfig
    seed : int, default 0
        The split seed the run will use.
    n_samples : int, default 4
        Thumbnail paths kept per class.
    progress : callable or None
        ``progress(done, total)`` after each file.

    Returns
    -------
    DatasetReport

    Raises
    ------
    DatasetError
        As :func:`prepare_split`.
    """
    split = prepare_split(data, seed=seed, short_side=16, progress=progress)
    samples: dict[str, list[str]] = {c: [] for c in split.class_names}
    for f, y in zip(split.train_files, split.train_labels):
        lst = samples[split.class_names[y]]
        if len(lst) < n_samples:
            lst.append(f)
    return DatasetReport(split.layout, split.class_names, split.counts(), samples, split.problems)
