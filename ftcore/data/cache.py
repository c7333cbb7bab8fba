"""Decoded-image cache: each image decoded once, kept memory-mapped in the run store.

Decoding a JPEG and resizing it costs more than the random crop and flip a
training step needs, and hashing a file for the audit means reading it. The
audit (:func:`ftcore.data.audit.audit_dataset`) therefore writes what it learns
about each file (the decoded uint8 array, whose shorter side is a little above
the training size, and small per-file facts: hashes, format, conversion
notes, or why the file could not be read) into one entry under
``<store>/cache/decoded/``:

- ``<key>.u8``: the arrays, one after the other (read back as views into a
  read-only ``numpy.memmap``, so that runs share the pages and nothing is
  copied);
- ``<key>.json``: per file, its offset and shape and the facts.

The key covers every file's path, size and modification time, the decode
size and :data:`CACHE_VERSION`; a later audit or run on the same files at
the same size reads the entry instead of decoding, and any change of a file,
of the file list or of the size makes a new entry. Entries are written under
a temporary name and renamed, so a run stopped while writing leaves no
partial entry, and the cache is bounded: least-recently-used entries go once
the total exceeds ``FTCORE_CACHE_MAX_GB`` (default 5).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["CacheEntryWriter", "load_entry", "cache_key", "cache_limit_bytes", "cache_folder", "CACHE_VERSION",
           "gigabytes_from_env"]

log = logging.getLogger(__name__)

#: Bump when decoding or the stored facts change (it invalidates every entry).
CACHE_VERSION = 3


def cache_folder(store_root: str | Path) -> Path:
    """The decoded-image cache folder of a run store: ``<store_root>/cache/decoded``."""
    return Path(store_root) / "cache" / "decoded"


def gigabytes_from_env(name: str, default: float) -> int:
    """A size limit in bytes from an environment variable in gigabytes (1e9 bytes).

    ``inf`` means no limit; a value that is not a number (or NaN) falls back to
    `default`, with a warning that names the variable.
    """
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return int(default * 1e9)
    try:
        gb = float(raw)
    except ValueError:
        gb = float("nan")
    if gb != gb:  # NaN
        log.warning("%s=%r is not a number of gigabytes; using the default %g", name, raw, default)
        gb = default
    if gb * 1e9 >= 2**62:  # inf or too large to count: no limit
        return 2**62
    return int(gb * 1e9)


def cache_limit_bytes() -> int:
    """Upper bound on the decoded-image cache in bytes (``FTCORE_CACHE_MAX_GB``, default 5 GB; ``inf``: none)."""
    return gigabytes_from_env("FTCORE_CACHE_MAX_GB", 5.0)


def cache_key(files: Sequence[str], short_side: int | None) -> str:
    """Key of a cache entry: file paths, sizes, modification and change times, inodes, decode size, version.

    Parameters
    ----------
    files : sequence of str
        Image files in the order the entry holds them.
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
        # os.fsencode: names that are not valid UTF-8 (copied from Latin-1 systems) keep their bytes.
        h.update(os.fsencode(os.path.abspath(f)) + b"\0")
        try:
            st = os.stat(f)
            # The change time and inode catch a file rewritten with its size and modification time restored.
            h.update(f"{st.st_size}\0{st.st_mtime_ns}\0{st.st_ctime_ns}\0{st.st_ino}\n".encode())
        except OSError:
            h.update(b"missing\n")
    return h.hexdigest()


def load_entry(folder: str | Path, key: str, n: int) -> list[tuple[np.ndarray | None, dict]] | None:
    """Read a cache entry: per file, its array (a read-only memmap view, or None) and its facts.

    Parameters
    ----------
    folder : str or pathlib.Path
        Cache folder (:func:`cache_folder`).
    key : str
        From :func:`cache_key`.
    n : int
        Number of files the entry must hold.

    Returns
    -------
    list of (numpy.ndarray or None, dict) or None
        None when there is no such entry or it is damaged (then it is ignored
        and will be written again).
    """
    folder = Path(folder)
    meta_path, blob_path = folder / f"{key}.json", folder / f"{key}.u8"
    if not meta_path.is_file() or not blob_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text())
        entries = meta["entries"]
        if meta.get("version") != CACHE_VERSION or len(entries) != n:
            return None
        size = blob_path.stat().st_size
        blob = np.memmap(blob_path, dtype=np.uint8, mode="r") if size else np.zeros(0, np.uint8)
        out: list[tuple[np.ndarray | None, dict]] = []
        for e in entries:
            arr = None
            if e.get("shape") is not None:
                h, w = (int(v) for v in e["shape"])
                off = int(e["offset"])
                if h <= 0 or w <= 0 or off < 0 or off + h * w * 3 > size:
                    raise ValueError("an array's shape or place in the data file is impossible")
                arr = blob[off:off + h * w * 3].reshape(h, w, 3)
            out.append((arr, e.get("facts", {})))
        os.utime(meta_path)  # mark as recently used
        return out
    except (OSError, ValueError, KeyError, TypeError) as e:
        log.warning("ignoring damaged decoded-image cache entry %s: %s", meta_path, e)
        return None


class CacheEntryWriter:
    """Write a cache entry file by file, then publish it atomically.

    Use as a context manager: ``add()`` for every file in order, then
    ``commit()``; leaving the block without committing (an error, a cancel)
    deletes the partial files.

    Parameters
    ----------
    folder : str or pathlib.Path
        Cache folder (created).
    key : str
        From :func:`cache_key`.
    """

    def __init__(self, folder: str | Path, key: str) -> None:
        self.folder = Path(folder)
        self.key = key
        tag = f".tmp-{os.getpid()}-{time.monotonic_ns()}"
        self._blob_tmp = self.folder / f"{key}.u8{tag}"
        self._meta_tmp = self.folder / f"{key}.json{tag}"
        self._entries: list[dict] = []
        self._offset = 0
        self._fh = None

    def __enter__(self) -> CacheEntryWriter:
        self.folder.mkdir(parents=True, exist_ok=True)
        self._fh = open(self._blob_tmp, "wb")
        return self

    def add(self, array: np.ndarray | None, facts: dict) -> None:
        """Append one file: its decoded uint8 array of shape (h, w, 3) or None, and JSON-serialisable facts."""
        entry: dict = {"facts": facts}
        if array is not None:
            a = np.ascontiguousarray(array, dtype=np.uint8)
            self._fh.write(a.tobytes())
            entry.update(offset=self._offset, shape=[int(a.shape[0]), int(a.shape[1])])
            self._offset += a.size
        self._entries.append(entry)

    def commit(self) -> None:
        """Publish the entry under its key and trim the cache to its size limit."""
        self._fh.close()
        self._meta_tmp.write_text(json.dumps({"version": CACHE_VERSION, "entries": self._entries}))
        os.replace(self._blob_tmp, self.folder / f"{self.key}.u8")
        os.replace(self._meta_tmp, self.folder / f"{self.key}.json")
        _evict(self.folder, self.key, cache_limit_bytes())

    def __exit__(self, *exc) -> None:
        if self._fh is not None and not self._fh.closed:
            self._fh.close()
        for p in (self._blob_tmp, self._meta_tmp):
            try:
                p.unlink()
            except FileNotFoundError:
                pass
            except OSError as e:  # pragma: no cover - a read-only store
                log.warning("could not remove %s: %s", p, e)


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
