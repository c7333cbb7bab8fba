"""Audit an image folder or zip before training: read and decode every file once, say what is wrong.

:func:`audit_dataset` finds the layout (:mod:`ftcore.data.scan`), reads each file
once (its bytes are hashed and decoded from memory, :mod:`ftcore.data.images`),
finds duplicates, label conflicts and train/validation leakage, checks that
the classes can be split, warns about imbalance, and returns an
:class:`AuditReport`. With ``keep_images=True`` the report carries the
decoded arrays, and :func:`ftcore.data.split.split_from_audit` turns it into the
run's :class:`~ftcore.data.split.DatasetSplit` without decoding again.

This module reads and decodes (in threads, or from the decoded-image cache of
:mod:`ftcore.data.cache`) and makes the thumbnails; the duplicate search is in
:mod:`ftcore.data._duplicates`, the report and its summary of the classes in
:mod:`ftcore.data._report`. Their public names are imported from here.

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
import os
import time
import zipfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ftcore.core.errors import DatasetError
from ftcore.data._duplicates import NEAR_BITS, resolve_duplicates
from ftcore.data._report import (
    IMBALANCE_FACTOR,
    AuditItem,
    AuditReport,
    majority_accuracy,
    refusal_message,
    require_ok,
    summarise,
    val_share,
)
from ftcore.data.images import IMAGE_SUFFIXES, ImageDecodeError, read_and_decode
from ftcore.data.scan import Problem, check_data_root, data_roots, find_layout

__all__ = ["AuditItem", "AuditReport", "audit_dataset", "val_share", "majority_accuracy", "refusal_message",
           "require_ok", "IMBALANCE_FACTOR", "AUDIT_SIDE", "NEAR_BITS"]

log = logging.getLogger(__name__)

#: Shorter side in pixels that the audit decodes to when it keeps no images (thumbnails, hashes).
AUDIT_SIDE = 64
_THUMB = 64


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
    src = _source_folder(path, val_dir, store)
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
    resolve_duplicates(items, problems)
    rep = summarise(str(path), layout, items, problems, val_fraction, imbalance_factor)
    _keep_thumbnails(rep, arrays)
    rep.seconds = time.perf_counter() - t0
    log.info("audited %d files of %s in %.2f s", len(items), path, rep.seconds)
    return rep


def _source_folder(path: str | Path, val_dir: str | Path | None, store: Path) -> Path:
    """The folder to audit: `path`, or the store's extraction of a zip; both given paths checked against the roots."""
    src = Path(path).expanduser()
    check_data_root(src, (store,))
    if val_dir:
        check_data_root(val_dir, (store,))
    if src.is_file() and zipfile.is_zipfile(src):
        from ftcore.data.uploads import extract_zip_file

        src = extract_zip_file(src, store)
    return src


def _keep_thumbnails(rep: AuditReport, arrays: dict[str, np.ndarray]) -> None:
    """Put the thumbnails of the files in problems and of a few per class into the report; drop the others."""
    keep = {p.path for p in rep.problems} | {f for fs in rep.samples().values() for f in fs}
    for it in rep.items:
        if it.path in keep:
            if it.thumb is None and it.path in arrays:
                it.thumb = _thumbnail(arrays[it.path])[0]
            if it.thumb is not None:
                rep.thumbnails[it.path] = it.thumb
        it.thumb = None


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


def _from_cache(items: list[AuditItem], cached: list, keep: bool, problems: list[Problem],
                progress) -> dict[str, np.ndarray]:
    """Take every item's facts (and array) from a decoded-image cache entry; return the arrays by path."""
    n = len(items)
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
    return arrays


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
        arrays = _from_cache(items, cached, keep, problems, progress)
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


