"""Turn browser uploads (a folder of files or a zip) into an image folder in the store.

Uploads are written under the run store (``<store>/datasets/upload-<id>``),
never next to the user's own files. Zip extraction is defensive: members
whose path would leave the extraction folder, links, and anything past the
size and count caps are refused.
"""

from __future__ import annotations

import hashlib
import io
import secrets
import shutil
import stat
import zipfile
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from ftcore.core.errors import DatasetError
from ftcore.data.scan import unwrap

__all__ = ["MAX_UPLOAD_BYTES", "MAX_UPLOAD_FILES", "save_uploaded_files", "extract_zip", "extract_zip_file",
           "class_root"]

#: Cap on the unpacked size of one upload, in bytes (2 GiB).
MAX_UPLOAD_BYTES = 2 * 1024**3
#: Cap on the number of files in one upload.
MAX_UPLOAD_FILES = 100_000


def _new_dest(store_root: Path) -> Path:
    d = Path(store_root) / "datasets" / f"upload-{secrets.token_hex(4)}"
    d.mkdir(parents=True, exist_ok=False)
    return d


def _safe_relpath(name: str) -> PurePosixPath | None:
    p = PurePosixPath(name.replace("\\", "/"))
    parts = [s for s in p.parts if s not in ("", ".")]
    if not parts or p.is_absolute() or any(s == ".." for s in parts) or ":" in parts[0]:
        return None
    return PurePosixPath(*parts)


def save_uploaded_files(files: Iterable[tuple[str, bytes]], store_root: str | Path) -> Path:
    """Write uploaded files, keeping their relative paths, into a new folder.

    Parameters
    ----------
    files : iterable of (str, bytes)
        Relative path as the browser sent it (``"pets/cats/1.jpg"``) and the
        file's content.
    store_root : str or pathlib.Path
        Run store root; the folder is created under ``datasets/``.

    Returns
    -------
    pathlib.Path
        The folder written, narrowed by :func:`class_root`.

    Raises
    ------
    DatasetError
        If a path tries to leave the folder, or the caps are exceeded.
    """
    dest = _new_dest(Path(store_root))
    total = count = 0
    try:
        for name, data in files:
            rel = _safe_relpath(name)
            if rel is None or "\x00" in name:
                raise DatasetError(f"uploaded file name {name!r} is not a safe relative path; rename it and "
                                   "upload again.")
            count += 1
            total += len(data)
            if count > MAX_UPLOAD_FILES or total > MAX_UPLOAD_BYTES:
                raise DatasetError(
                    f"the upload exceeds {MAX_UPLOAD_FILES} files or {MAX_UPLOAD_BYTES // 1024**2} MiB; "
                    "upload fewer images or use a folder on the server."
                )
            out = dest / rel
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(data)
    except DatasetError:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    except (OSError, ValueError) as e:
        shutil.rmtree(dest, ignore_errors=True)
        raise DatasetError(f"uploaded file {name!r} cannot be saved ({e}); nothing was kept. Rename it and "
                           "upload again.") from e
    return class_root(dest)


def extract_zip(data: bytes, store_root: str | Path, name: str = "upload.zip") -> Path:
    """Extract a zip archive of an image folder safely into the store.

    Parameters
    ----------
    data : bytes
        The archive.
    store_root : str or pathlib.Path
        Run store root.
    name : str, default "upload.zip"
        The archive's file name, for messages.

    Returns
    -------
    pathlib.Path
        The extracted folder, narrowed by :func:`class_root`.

    Raises
    ------
    DatasetError
        If it is not a zip, a member's path leaves the folder, a member is a
        link, or it unpacks to more than ``MAX_UPLOAD_FILES`` files or
        ``MAX_UPLOAD_BYTES`` bytes (checked before anything is written).
    """
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as e:
        raise DatasetError(f"{name} is not a readable zip archive ({e}); upload a .zip of the image folder.") from e
    with zf:
        return class_root(_extract(zf, name, lambda: _new_dest(Path(store_root))))


def extract_zip_file(path: str | Path, store_root: str | Path) -> Path:
    """Extract a zip on the server into ``<store>/datasets/zip-<digest>``, once per content.

    The user's folder is only read. The folder is named by the BLAKE2b digest
    of the archive, so auditing the same zip again reuses what was extracted
    (a ``.complete`` marker beside it says the extraction finished).

    Parameters
    ----------
    path : str or pathlib.Path
        The archive.
    store_root : str or pathlib.Path
        Run store root.

    Returns
    -------
    pathlib.Path
        The extraction folder (not narrowed: the audit says which wrapper
        folder it goes through).

    Raises
    ------
    DatasetError
        As :func:`extract_zip`, or if the archive cannot be read.
    """
    p = Path(path).expanduser()
    h = hashlib.blake2b(digest_size=8)
    try:
        with open(p, "rb") as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
        zf = zipfile.ZipFile(p)
    except (OSError, zipfile.BadZipFile) as e:
        raise DatasetError(f"{p} is not a readable zip archive ({e}); give a .zip of the image folder.") from e
    dest = Path(store_root) / "datasets" / f"zip-{h.hexdigest()}"
    marker = dest.with_name(dest.name + ".complete")
    with zf:
        if marker.exists() and dest.is_dir():
            return dest

        def fresh() -> Path:
            shutil.rmtree(dest, ignore_errors=True)
            dest.mkdir(parents=True)
            return dest

        out = _extract(zf, p.name, fresh)
    marker.write_text("ok\n")
    return out


def _extract(zf: zipfile.ZipFile, name: str, make_dest) -> Path:
    infos = [i for i in zf.infolist() if not i.is_dir()]
    if len(infos) > MAX_UPLOAD_FILES or sum(i.file_size for i in infos) > MAX_UPLOAD_BYTES:
        raise DatasetError(
            f"{name} unpacks to more than {MAX_UPLOAD_FILES} files or {MAX_UPLOAD_BYTES // 1024**2} MiB; "
            "upload a smaller archive or use a folder on the server."
        )
    for i in infos:
        if _safe_relpath(i.filename) is None:
            raise DatasetError(f"{name}: member {i.filename!r} would be written outside the folder; refused.")
        if stat.S_ISLNK(i.external_attr >> 16):
            raise DatasetError(f"{name}: member {i.filename!r} is a link; links are not followed. Refused.")
    dest = make_dest()
    written = 0
    member = ""
    try:
        for i in infos:
            member = i.filename
            rel = _safe_relpath(i.filename)
            if "__MACOSX" in rel.parts:  # macOS resource forks, at any depth
                continue
            out = dest / rel
            out.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(i) as src, open(out, "wb") as dst:
                while chunk := src.read(1 << 20):
                    written += len(chunk)
                    if written > MAX_UPLOAD_BYTES:
                        raise DatasetError(f"{name} unpacks to more than its header says; refused.")
                    dst.write(chunk)
    except DatasetError:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    except (OSError, RuntimeError, NotImplementedError, zipfile.BadZipFile, ValueError) as e:
        shutil.rmtree(dest, ignore_errors=True)
        raise DatasetError(
            f"{name}: member {member!r} cannot be extracted ({type(e).__name__}: {e}); nothing was kept. "
            "Re-create the zip without encryption, with plain file names, and upload it again."
        ) from e
    return dest


def class_root(folder: str | Path) -> Path:
    """Go down through single wrapper folders to the folder holding the classes (:func:`ftcore.data.scan.unwrap`).

    A zip of ``pets/`` unpacks to ``dest/pets/{cats,dogs}``; this returns
    ``dest/pets``. Hidden entries and ``__MACOSX`` do not count.
    """
    return unwrap(folder)[0]
