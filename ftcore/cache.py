"""Decoded-image cache: decode each image once, keep it memory-mapped in the run store.

Decoding a JPEG and resizing it costs more than the random crop and flip a
training step needs. :func:`decode_files` decodes a list of files once to
uint8 arrays whose shorter side is a little above the training size, writes
them into one flat file under ``<store>/cache/decoded/``, and hands back
read-only views into a memory map of it. A later run on the same files (same
paths, sizes and modification times) at the same decode size reads the
arrays from the cache instead of decoding again; any change of a file, of
the file list or of the size gives a new cache entry.

The cache is bounded: least-recently-used entries are deleted once the total
exceeds ``FTCORE_CACHE_MAX_GB`` (default 5). Entries are written under a
temporary name and renamed, so a run killed while writing leaves no partial
entry.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .errors import DatasetError

__all__ = ["decode_files", "cache_key", "cache_limit_bytes", "CACHE_VERSION"]

log = logging.getLogger(__name__)

#: Bump when decoding changes (it invalidates every entry).
CACHE_VERSION = 1


def cache_limit_bytes() -> int:
    """Upper bound on the decoded-image cache in bytes (``FTCORE_CACHE_MAX_GB``, default 5 GB)."""
    try:
        gb = float(os.environ.get("FTCORE_CACHE_MAX_GB", "5"))
    except ValueError:
        gb = 5.0
    return int(gb * 1e9)


def cache_key(files: Sequence[str], short_side: int | None) -> str:
    """Key of a cache entry: file paths, sizes and modification times, decode size and version.

    Parameters
    ----------
    files : sequence of str
        Image files in the order the arrays are wanted.
    short_side : int or None
        Decode size (shorter side in pixels, None for full size).

    Returns
    -------
    str
        40 hex digits (SHA-1).
    """
    h = hashlib.sha1()
    h.update(json.dumps({"v": CACHE_VERSION, "short_side": short_side}).encode())
    for f in files:
        try:
            st = os.stat(f)
            h.update(f"{os.path.abspath(f)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{os.path.abspath(f)}\0missing\n".encode())
    return h.hexdigest()


def _load(folder: Path, key: str) -> tuple[list[np.ndarray | str]] | None:
    meta_path = folder / f"{key}.json"
    blob_path = folder / f"{key}.u8"
    if not meta_path.is_file() or not blob_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text())
        size = blob_path.stat().st_size
        blob = np.memmap(blob_path, dtype=np.uint8, mode="r") if size else np.zeros(0, np.uint8)
        out: list[np.ndarray | str] = []
        for entry in meta["entries"]:
            if isinstance(entry, str):
                out.append(entry)
            else:
                off, h, w = entry
                out.append(blob[off:off + h * w * 3].reshape(h, w, 3))
        os.utime(meta_path)  # mark as recently used
        return out
    except (OSError, ValueError, KeyError, TypeError) as e:
        log.warning("ignoring damaged decoded-image cache entry %s: %s", meta_path, e)
        return None


def _evict(folder: Path, keep: str, limit: int) -> None:
    entries = []
    for meta in folder.glob("*.json"):
        blob = meta.with_suffix(".u8")
        try:
            entries.append((meta.stat().st_mtime, meta, blob, blob.stat().st_size if blob.exists() else 0))
        except OSError:
            continue
    total = sum(e[3] for e in entries)
    for _, meta, blob, size in sorted(entries):
        if total <= limit:
            break
        if meta.stem == keep:
            continue
        for p in (meta, blob):
            try:
                p.unlink()
            except OSError:
                pass
        total -= size
        log.info("evicted decoded-image cache entry %s (%d bytes)", meta.stem, size)


def decode_files(
    files: Sequence[str],
    short_side: int | None,
    decode: Callable[[str, int | None], np.ndarray],
    cache_dir: str | Path | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[list[np.ndarray | str], bool]:
    """Decode image files once, through the on-disk cache when one is given.

    Parameters
    ----------
    files : sequence of str
        Image files.
    short_side : int or None
        Passed to `decode` as the largest shorter side in pixels.
    decode : callable
        ``decode(path, short_side) -> numpy.ndarray of uint8, shape (h, w, 3)``
        raising :class:`ftcore.errors.DatasetError` for a file it cannot read
        (:func:`ftcore.data.decode_image`).
    cache_dir : str, pathlib.Path or None, default None
        Folder of cache entries (created); None decodes without caching.
    progress : callable or None
        ``progress(done, total)`` after each file (also on a cache hit, once
        with ``done == total``). It may raise to abandon the work; nothing is
        written then.

    Returns
    -------
    items : list of numpy.ndarray or str
        Per file, in order: a read-only uint8 array of shape (h, w, 3) (a
        view into the memory map on a cache hit or after writing), or the
        reason the file could not be decoded.
    hit : bool
        Whether the arrays came from the cache.
    """
    total = len(files)
    folder = Path(cache_dir) if cache_dir is not None else None
    key = cache_key(files, short_side) if folder is not None else ""
    if folder is not None:
        loaded = _load(folder, key)
        if loaded is not None and len(loaded) == total:
            log.info("decoded images of %d files from the cache (%s)", total, key[:12])
            if progress is not None:
                progress(total, total)
            return loaded, True
    items: list[np.ndarray | str] = []
    for i, f in enumerate(files):
        try:
            items.append(decode(f, short_side))
        except DatasetError as e:
            items.append(str(e.__cause__ or e))
        if progress is not None:
            progress(i + 1, total)
    if folder is None:
        return items, False
    try:
        return _write(folder, key, items), False
    except OSError as e:
        log.warning("could not write the decoded-image cache in %s: %s; continuing without it", folder, e)
        return items, False


def _write(folder: Path, key: str, items: list[np.ndarray | str]) -> list[np.ndarray | str]:
    folder.mkdir(parents=True, exist_ok=True)
    entries: list = []
    off = 0
    tag = f".tmp-{os.getpid()}-{time.monotonic_ns()}"
    blob_tmp = folder / f"{key}.u8{tag}"
    meta_tmp = folder / f"{key}.json{tag}"
    try:
        with open(blob_tmp, "wb") as fh:
            for a in items:
                if isinstance(a, str):
                    entries.append(a)
                    continue
                a = np.ascontiguousarray(a, dtype=np.uint8)
                fh.write(a.tobytes())
                entries.append([off, int(a.shape[0]), int(a.shape[1])])
                off += a.size
        meta_tmp.write_text(json.dumps({"version": CACHE_VERSION, "entries": entries}))
        os.replace(blob_tmp, folder / f"{key}.u8")
        os.replace(meta_tmp, folder / f"{key}.json")
    finally:
        for p in (blob_tmp, meta_tmp):
            if p.exists():
                p.unlink()
    _evict(folder, key, cache_limit_bytes())
    loaded = _load(folder, key)
    return loaded if loaded is not None else items
