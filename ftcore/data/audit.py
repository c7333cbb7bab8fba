"""Audit an image folder or zip before training: read and decode every file once, say what is wrong.

:func:`audit_dataset` finds the layout (:mod:`ftcore.data.scan`), reads each file
once (its bytes are hashed and decoded from memory, :mod:`ftcore.data.images`),
finds duplicates, label conflicts and train/validation leakage, checks that
the classes can be split, warns about imbalance, and returns an
:class:`AuditReport`. With ``keep_images=True`` the report carries the
decoded arrays, and :func:`ftcore.data.split.split_from_audit` turns it into the
run's :class:`~ftcore.data.split.DatasetSplit` without decoding again.

Duplicates: byte-identical files share a BLAKE2b digest; near-identical ones
(resized or re-compressed copies) have imagehash's 256-bit perceptual hashes
(``imagehash.phash(hash_size=16)``: signs of the 16x16 low-frequency DCT of a
64x64 greyscale, Zauner 2010) at most :data:`NEAR_BITS` bits apart and mean
colours within 8 levels per channel. Measured: copies of the hymenoptera
photos resized to a third and saved as JPEG at quality 60 lie 2-12 bits
apart; no two of the 1,797 scikit-learn digits, nor of CIFAR-10's 6,000
images here, lie within 16 bits. A group
within one class is kept once; across classes it is a label conflict and
every copy is left out; a validation copy of a training image (leakage) is
dropped from validation.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import time
import zipfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ftcore.core.errors import DatasetError
from ftcore.data.images import IMAGE_SUFFIXES, ImageDecodeError, read_and_decode
from ftcore.data.scan import Problem, check_data_root, data_roots, find_layout

__all__ = ["AuditItem", "AuditReport", "audit_dataset", "val_share", "IMBALANCE_FACTOR", "AUDIT_SIDE"]

log = logging.getLogger(__name__)

#: A warning is given when the largest class has more than this many times the images of the smallest.
IMBALANCE_FACTOR = 3.0
#: Shorter side in pixels that the audit decodes to when it keeps no images (thumbnails, hashes).
AUDIT_SIDE = 64
_THUMB = 64
_COLOUR_TOL = 8.0
#: Near-identical: 256-bit perceptual hashes at most this many bits apart (and mean colours within 8 levels).
NEAR_BITS = 15


def val_share(n: int, val_fraction: float) -> int:
    """Validation images of a class of `n` in the stratified split: ``floor(f * n + 0.5)`` clamped to [1, n - 1]."""
    return min(max(math.floor(val_fraction * n + 0.5), 1), n - 1)


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
    """What :func:`audit_dataset` found.

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
        class with the most training images.
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


def _thumbnail(array: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Thumbnail (at most 64 pixels a side) and its mean colour, float of shape (3,)."""
    from PIL import Image

    th = Image.fromarray(np.asarray(array))
    th.thumbnail((_THUMB, _THUMB), Image.BILINEAR)
    return np.asarray(th), np.asarray(th.resize((1, 1), Image.BOX), dtype=np.float64).reshape(3)


def _examine(it: AuditItem, side: int, keep: bool) -> tuple[str, object]:
    """Read, hash and decode one file (runs in a worker thread)."""
    import imagehash
    from PIL import Image

    try:
        data, dec = read_and_decode(it.path, side)
    except ImageDecodeError as e:
        return "error", e
    except OSError as e:
        return "error", ImageDecodeError("unreadable", it.path, f"the file cannot be read ({e.strerror or e})")
    it.sha = hashlib.blake2b(data, digest_size=16).digest()
    it.thumb, it.colour = _thumbnail(dec.array)
    it.phash = np.packbits(imagehash.phash(Image.fromarray(it.thumb), hash_size=16).hash).view(np.uint64)
    if keep:
        it.array = dec.array
    return "ok", dec


def audit_dataset(
    path: str | Path,
    val_dir: str | Path | None = None,
    *,
    val_fraction: float = 0.2,
    short_side: int | None = None,
    keep_images: bool = False,
    store_root: str | Path | None = None,
    progress: Callable[[int, int], None] | None = None,
    imbalance_factor: float = IMBALANCE_FACTOR,
    workers: int | None = None,
    cache: bool = True,
) -> AuditReport:
    """Read every file of a data folder (or zip) once and report what training can use.

    Parameters
    ----------
    path : str or pathlib.Path
        A folder (see :mod:`ftcore.data.scan` for the layouts) or a ``.zip`` of
        one; a zip is extracted (safely, :func:`ftcore.data.uploads.extract_zip_file`)
        into ``<store>/datasets/``, never beside it.
    val_dir : str or pathlib.Path or None
        A separate validation folder.
    val_fraction : float, default 0.2
        Share of each class held out when the data has no split, in (0, 1).
    short_side : int or None, default None
        Shorter side in pixels to decode to (never upscaled); None decodes to
        :data:`AUDIT_SIDE` when images are not kept, full size when they are.
    keep_images : bool, default False
        Keep the decoded arrays (for :func:`ftcore.data.split.split_from_audit`).
    store_root : str or pathlib.Path or None
        Run store root for zip extraction; default ``$FTCORE_HOME``. Always
        allowed under ``FTCORE_DATA_ROOTS``.
    progress : callable or None
        ``progress(done, total)`` after each file, from the calling thread;
        an exception it raises stops the audit.
    imbalance_factor : float, default 3.0
        Warn when the largest class has more than this many times the
        training images of the smallest.
    workers : int or None
        Decoding threads (Pillow releases the GIL); default ``min(8, cpus)``.
    cache : bool, default True
        Read and write the decoded-image cache in the store
        (:mod:`ftcore.data.cache`): a second audit or run of the same files at the
        same size decodes nothing.

    Returns
    -------
    AuditReport
        ``ok`` False, with the reasons as ``refused`` problems, when training
        cannot proceed.

    Raises
    ------
    DatasetError
        If a folder does not exist or cannot be read, the path is outside the
        data roots, a zip cannot be extracted, or `val_fraction` is not in (0, 1).
    """
    from ftcore.core.paths import default_store_root

    if not 0.0 < float(val_fraction) < 1.0:
        raise DatasetError(f"validation fraction {val_fraction!r} is outside (0, 1); use e.g. 0.2.")
    t0 = time.perf_counter()
    store = Path(store_root).expanduser().resolve() if store_root is not None else default_store_root().resolve()
    src = Path(path).expanduser()
    check_data_root(src, (store,))
    if val_dir:
        check_data_root(val_dir, (store,))
    if src.is_file() and zipfile.is_zipfile(src):
        from ftcore.data.uploads import extract_zip_file

        src = extract_zip_file(src, store)
    roots = data_roots()
    layout = find_layout(src, val_dir, roots + [store] if roots else None)
    problems = list(layout.problems)
    items = [AuditItem(f, split, c) for split, lst in layout.splits.items()
             for c, files in lst.classes.items() for f in files]
    for lst in layout.splits.values():
        problems += lst.problems
    side = short_side if short_side is not None else (None if keep_images else AUDIT_SIDE)
    from ftcore.data.cache import cache_folder

    arrays = _decode_all(items, side, keep_images, problems, progress, workers,
                         cache_folder(store) if cache else None)
    _resolve_duplicates(items, problems)
    rep = _summarise(str(path), layout, items, problems, val_fraction, imbalance_factor)
    keep = {p.path for p in rep.problems} | {f for fs in rep.samples().values() for f in fs}
    for it in items:
        if it.path in keep:
            if it.thumb is None and it.path in arrays:
                it.thumb = _thumbnail(arrays[it.path])[0]
            if it.thumb is not None:
                rep.thumbnails[it.path] = it.thumb
        it.thumb = None
    rep.seconds = time.perf_counter() - t0
    log.info("audited %d files of %s in %.2f s", len(items), path, rep.seconds)
    return rep


def _facts(it: AuditItem, status: str, res) -> dict:
    """What the decoded-image cache keeps about one file, besides its array."""
    if status != "ok":
        return {"error": [res.kind, res.reason]}
    return {"format": res.format, "notes": [list(n) for n in res.notes], "sha": it.sha.hex(),
            "phash": it.phash.tobytes().hex(), "colour": [float(c) for c in it.colour]}


def _facts_complete(cached: list) -> bool:
    """Whether every file of a cache entry has usable facts (a damaged entry is decoded again instead)."""
    try:
        for arr, facts in cached:
            if "error" in facts:
                kind, reason = facts["error"]
                if not (isinstance(kind, str) and isinstance(reason, str)):
                    return False
                continue
            if arr is None or len(bytes.fromhex(facts["sha"])) != 16 or len(bytes.fromhex(facts["phash"])) != 32:
                return False
            if len(facts["colour"]) != 3 or not isinstance(facts["format"], str):
                return False
            for note in facts["notes"]:
                if len(note) != 3:
                    return False
    except (KeyError, TypeError, ValueError):
        return False
    return True


def _record(it: AuditItem, status: str, fmt: str | None, notes, error, problems: list[Problem]) -> None:
    if status == "ok":
        it.usable = True
        for kind, message, action in notes:
            problems.append(Problem(it.path, kind, message, action))
        if Path(it.path).suffix.lower() not in IMAGE_SUFFIXES:
            problems.append(Problem(it.path, "misnamed", f"the name has no image suffix but the content is a "
                                    f"{fmt} image; used as one", "included"))
    else:
        problems.append(Problem(it.path, error[0], error[1], "skipped"))


def _decode_all(items, side, keep, problems, progress, workers, cache_dir=None) -> dict[str, np.ndarray]:
    """Decode every item once (or read it from the decoded-image cache); return arrays for thumbnails on a hit."""
    from ftcore.data.cache import CacheEntryWriter, cache_key, load_entry

    n = len(items)
    key = cache_key([it.path for it in items], side) if cache_dir is not None else ""
    cached = load_entry(cache_dir, key, n) if cache_dir is not None else None
    if cached is not None and not _facts_complete(cached):
        log.warning("ignoring damaged decoded-image cache entry %s: facts missing or malformed", key[:12])
        cached = None
    if cached is not None:
        arrays: dict[str, np.ndarray] = {}
        for i, (it, (arr, facts)) in enumerate(zip(items, cached)):
            if "error" in facts:
                _record(it, "error", None, (), facts["error"], problems)
            else:
                it.sha = bytes.fromhex(facts["sha"])
                it.phash = np.frombuffer(bytes.fromhex(facts["phash"]), dtype=np.uint64).copy()
                it.colour = np.asarray(facts["colour"], dtype=np.float64)
                _record(it, "ok", facts["format"], facts["notes"], None, problems)
                arrays[it.path] = arr
                if keep:
                    it.array = arr
            if progress is not None:
                progress(i + 1, n)
        log.info("read %d decoded files from the cache (%s)", n, key[:12])
        return arrays
    workers = workers or min(8, os.cpu_count() or 1)
    pool = ThreadPoolExecutor(max_workers=workers)
    writer = CacheEntryWriter(cache_dir, key) if cache_dir is not None else None

    def cache_failed(e: OSError) -> None:  # a read-only or full store: go on without the cache
        nonlocal writer
        log.warning("cannot write the decoded-image cache in %s (%s); continuing without it", cache_dir, e)
        writer.__exit__(None, None, None)
        writer = None

    try:
        if writer is not None:
            try:
                writer.__enter__()
            except OSError as e:
                cache_failed(e)
        futures = [pool.submit(_examine, it, side, keep) for it in items]
        for i, (it, fut) in enumerate(zip(items, futures)):
            status, res = fut.result()
            if status == "ok":
                _record(it, "ok", res.format, res.notes, None, problems)
            else:
                _record(it, "error", None, (), (res.kind, res.reason), problems)
            if writer is not None:
                try:
                    writer.add(res.array if status == "ok" else None, _facts(it, status, res))
                except OSError as e:
                    cache_failed(e)
            if progress is not None:
                progress(i + 1, n)
        if writer is not None:
            try:
                writer.commit()
            except OSError as e:
                cache_failed(e)
    finally:
        if writer is not None:
            writer.__exit__(None, None, None)  # removes partial files unless committed
        pool.shutdown(wait=True, cancel_futures=True)
    if writer is not None and keep:
        # Swap the decoded arrays for views into the memory-mapped entry: the pages are shared with later runs.
        back = load_entry(cache_dir, key, n)
        if back is not None:
            for it, (arr, _) in zip(items, back):
                if it.array is not None and arr is not None:
                    it.array = arr
    return {}


def _resolve_duplicates(items: list[AuditItem], problems: list[Problem]) -> None:
    ok = [i for i, it in enumerate(items) if it.usable]
    parent = {i: i for i in ok}

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(i: int, j: int) -> None:
        a, b = find(i), find(j)
        if a != b:
            parent[max(a, b)] = min(a, b)

    by_sha: dict[bytes, int] = {}
    for i in ok:
        j = by_sha.setdefault(items[i].sha, i)
        if j != i:
            union(j, i)
    if ok:
        hashes = np.stack([items[i].phash for i in ok])
        for a, b in _near_pairs(hashes, NEAR_BITS):
            i, j = ok[a], ok[b]
            if np.abs(items[i].colour - items[j].colour).max() <= _COLOUR_TOL:
                union(i, j)
    groups: dict[int, list[int]] = {}
    for i in ok:
        groups.setdefault(find(i), []).append(i)
    order = {"all": 0, "train": 0, "val": 1}
    for members in groups.values():
        if len(members) < 2:
            continue
        members.sort(key=lambda i: (order[items[i].split], items[i].path))
        first = items[members[0]]
        same_bytes = all(items[i].sha == first.sha for i in members)
        word = "byte-identical" if same_bytes else "near-identical (same perceptual hash)"
        names = sorted({items[i].class_name for i in members})
        if len(names) > 1:
            where = ", ".join(f"'{items[i].class_name}' ({items[i].path})" for i in members)
            for i in members:
                items[i].usable = False
                problems.append(Problem(items[i].path, "label_conflict", f"{word} copies of one image are in "
                                        f"different classes: {where}; an image cannot be both, so all "
                                        f"{len(members)} copies are left out. Keep it in its right class only.",
                                        "skipped"))
            continue
        for i in members[1:]:
            it = items[i]
            it.usable = False
            if it.split == "val" and first.split == "train":
                problems.append(Problem(it.path, "leakage", f"{word} copy of the training image {first.path}: "
                                        "dropped from validation, so no metric is measured on a training image",
                                        "skipped"))
            else:
                problems.append(Problem(it.path, "duplicate", f"{word} copy of {first.path} in class "
                                        f"'{it.class_name}': kept once", "skipped"))


def _near_pairs(hashes: np.ndarray, max_bits: int) -> list[tuple[int, int]]:
    """Index pairs whose 256-bit hashes differ in at most `max_bits` (< 16) bits.

    Multi-index hashing (Norouzi et al., 2012): split each hash into 16
    blocks of 16 bits; two hashes within 15 bits agree on at least one whole
    block (pigeonhole), so only rows sharing a block value are compared.
    """
    blocks = hashes.view(np.uint16)
    found: set[tuple[int, int]] = set()
    for b in range(blocks.shape[1]):
        order = np.argsort(blocks[:, b], kind="stable")
        col = blocks[order, b]
        cuts = np.flatnonzero(np.diff(col)) + 1
        for idx in np.split(order, cuts):
            if len(idx) < 2:
                continue
            h = hashes[idx]
            d = np.bitwise_count(h[:, None, :] ^ h[None, :, :]).sum(-1)
            for x, y in zip(*np.nonzero(np.triu(d <= max_bits, 1))):
                found.add((int(idx[x]), int(idx[y])))
    return sorted(found)


def _summarise(source: str, layout, items: list[AuditItem], problems: list[Problem], val_fraction: float,
               imbalance_factor: float) -> AuditReport:
    warnings: list[str] = []
    kind = layout.kind
    has_splits = kind in ("train_val", "separate_val")
    files: dict[str, dict[str, int]] = {}
    usable: dict[str, dict[str, int]] = {}
    for it in items:
        files.setdefault(it.split, {}).setdefault(it.class_name, 0)
        usable.setdefault(it.split, {}).setdefault(it.class_name, 0)
        files[it.split][it.class_name] += 1
        usable[it.split][it.class_name] += it.usable
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
    root = layout.root
    if kind == "images_at_root":
        pass  # the refusal is among the layout's problems
    elif len(names) < 2:
        found = f"found 1 ({names[0]})" if names else "found none"
        problems.append(Problem(layout.splits[tr].root, "single_class", f"a classifier needs at least two class folders "
                                f"with usable images; {found}. Put each class's images in its own sub-folder, e.g. "
                                f"{Path(layout.splits[tr].root) / 'cats'}/*.jpg and "
                                f"{Path(layout.splits[tr].root) / 'dogs'}/*.jpg.", "refused"))
    if has_splits and names:
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
    elif names:
        need = max(2, math.ceil(1 / val_fraction))
        for c in names:
            if train_counts[c] < 2:
                problems.append(Problem(str(Path(root) / c), "too_few", f"class '{c}' has {train_counts[c]} usable "
                                        f"image; it needs at least 2 to appear in both training and validation "
                                        f"(1 each), and {need} or more for a {val_fraction:.0%} validation share "
                                        f"to hold one image by itself. Add images or remove the class folder.",
                                        "refused"))
    counts_val = ({c: val_counts.get(c, 0) for c in names} if has_splits
                  else {c: val_share(n, val_fraction) if n >= 2 else 0 for c, n in train_counts.items()})
    majority = imbalance = None
    if len(names) >= 2:
        big = max(names, key=lambda c: train_counts[c])
        small = min(names, key=lambda c: train_counts[c])
        imbalance = train_counts[big] / train_counts[small]
        n_val = sum(counts_val.values())
        majority = counts_val[big] / n_val if n_val else None
        if imbalance > imbalance_factor:
            acc = f"{majority:.2f}" if majority is not None else "n/a"
            warnings.append(f"classes are imbalanced: '{big}' has {train_counts[big]} training images, '{small}' "
                            f"{train_counts[small]} ({imbalance:.1f}x, above {imbalance_factor:g}x). Always answering "
                            f"'{big}' scores {acc} validation accuracy; compare against that, watch macro recall, "
                            "and consider a class-balanced loss or sampler (class_balance 'loss' or 'sampler').")
    if layout.wrapper:
        warnings.append(f"{layout.wrapper} only wraps {root}; its contents are used")
    bad = [p for p in problems if p.action == "skipped"]
    if bad:
        kinds = sorted({p.kind for p in bad})
        warnings.append(f"{len(bad)} files are left out ({', '.join(kinds)}); see problems")
    classes = ({"train": {c: usable.get("train", {}).get(c, 0) for c in sorted(usable.get("train", {}))},
                "val": {c: usable.get("val", {}).get(c, 0) for c in sorted(usable.get("val", {}))}}
               if has_splits else dict(train_counts))
    if has_splits:
        classes = {s: {c: n for c, n in d.items() if n > 0} for s, d in classes.items()}
    ok = not any(p.action == "refused" for p in problems)
    return AuditReport(ok, source, root, "wrapper_folder" if layout.wrapper else kind, kind, names, classes,
                       problems, warnings, majority, imbalance, items, val_fraction=val_fraction)


def refusal_message(report: AuditReport) -> str:
    """One message naming every refusal of a report, for a :class:`DatasetError`."""
    return "; ".join(f"{p.path}: {p.message}" for p in report.refusals())


def require_ok(report: AuditReport) -> None:
    """Raise :class:`DatasetError` with every refusal when the report is not ok."""
    if not report.ok:
        raise DatasetError(refusal_message(report))
