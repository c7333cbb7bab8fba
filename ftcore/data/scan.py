"""List the files of an image folder and find its layout, without decoding anything.

Layouts (:attr:`Layout.kind`):

- ``class_folders``: ``ROOT/<class>/<file>``; a seeded stratified split holds
  out a share of each class for validation.
- ``train_val``: ``ROOT/train/<class>/...`` beside ``ROOT/val/`` (or
  ``valid/``, ``validation/``, failing those ``test/``); that split is used.
- ``separate_val``: a validation folder given on its own.
- ``images_at_root``: files at the top and no class folder: refused.

One wrapper folder around any of these (``ROOT/pets/{cats,dogs}``, what a zip
of a folder unpacks to) is gone through and said (``wrapper``).

Data roots: when the environment variable ``FTCORE_DATA_ROOTS`` holds
folders (separated by ``os.pathsep``), a folder given by path, and every link
inside it, must resolve to a place under one of them or under the run store.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ftcore.core.errors import DatasetError

__all__ = ["JUNK_NAMES", "DATA_ROOTS_ENV", "Problem", "ClassListing", "Layout", "is_junk", "list_class_folders",
           "unwrap", "find_layout", "data_roots", "check_data_root"]

#: File and folder names that are never images or classes (OS and tool debris); dot-names are junk too.
JUNK_NAMES = frozenset({"__MACOSX", "Thumbs.db", "desktop.ini", ".ipynb_checkpoints", ".DS_Store", "__pycache__"})
#: Validation folder names beside ``train/``, in order of preference; ``test/`` serves when no other is there.
VAL_NAMES = ("val", "valid", "validation", "test")
#: Environment variable with the folders (``os.pathsep``-separated) a server-side path must lie under.
DATA_ROOTS_ENV = "FTCORE_DATA_ROOTS"


@dataclass(frozen=True)
class Problem:
    """A file or folder the product did not use as given, or a refusal.

    Attributes
    ----------
    path : str
        The file or folder at fault.
    kind : str
        What is wrong: ``ignored``, ``not_in_class``, ``empty_class``,
        ``nested``, ``link``, ``outside_roots``, ``unused_split``,
        ``wrapper_folder``, ``not_image``, ``unreadable``,
        ``unsupported``, ``huge_image``, ``converted``, ``misnamed``,
        ``duplicate``, ``label_conflict``, ``leakage``, ``images_at_root``,
        ``single_class``, ``too_few``, ``class_mismatch``.
    message : str
        Why, in words.
    action : str
        What happens to it: ``skipped``, ``ignored``, ``included``,
        ``converted``, ``downscaled``, ``used``, ``kept`` or ``refused``
        (training cannot proceed until it is fixed).
    """

    path: str
    kind: str
    message: str
    action: str


@dataclass
class ClassListing:
    """Candidate files per class folder of one split (nothing decoded yet).

    Attributes
    ----------
    root : str
    classes : dict of str to list of str
        Class folder name (sorted) to its files (any suffix; the audit decodes
        each to find out what it is). Folders with no file are left out.
    problems : list of Problem
    """

    root: str
    classes: dict[str, list[str]]
    problems: list[Problem] = field(default_factory=list)


@dataclass
class Layout:
    """Where the classes are.

    Attributes
    ----------
    kind : str
        ``class_folders``, ``train_val``, ``separate_val`` or ``images_at_root``.
    root : str
        The folder used (inside the wrapper, if there is one).
    splits : dict of str to ClassListing
        ``{"all": ...}`` for ``class_folders``; ``{"train": ..., "val": ...}``
        otherwise; empty for ``images_at_root``.
    problems : list of Problem
    wrapper : str or None
        The folder given, when it only wrapped `root`.
    """

    kind: str
    root: str
    splits: dict[str, ClassListing]
    problems: list[Problem] = field(default_factory=list)
    wrapper: str | None = None


def is_junk(name: str) -> bool:
    """Whether a file or folder name is a hidden entry or OS/tool debris."""
    return name.startswith(".") or name in JUNK_NAMES


def data_roots() -> list[Path] | None:
    """Resolved folders of ``FTCORE_DATA_ROOTS``, or None when it is unset or empty."""
    raw = os.environ.get(DATA_ROOTS_ENV, "")
    roots = [Path(r).expanduser().resolve() for r in raw.split(os.pathsep) if r.strip()]
    return roots or None


def _allowed(path: Path, roots: list[Path]) -> bool:
    real = path.resolve()
    return any(real == r or r in real.parents for r in roots)


def check_data_root(path: str | Path, extra: tuple[Path, ...] = ()) -> None:
    """Refuse a server-side path outside the configured data roots.

    Parameters
    ----------
    path : str or pathlib.Path
        A folder or archive given by path. Links are resolved first.
    extra : tuple of pathlib.Path
        Further allowed folders (the run store).

    Raises
    ------
    DatasetError
        When ``FTCORE_DATA_ROOTS`` is set and `path` resolves outside every
        root; the message names the path and the roots.
    """
    roots = data_roots()
    if roots is None:
        return
    p = Path(path).expanduser()
    if not _allowed(p, roots + [Path(e).resolve() for e in extra]):
        real = p.resolve()
        via = f" (a link to {real})" if real != p.absolute() else ""
        raise DatasetError(
            f"{p}{via} is outside the data folders this server allows ({', '.join(map(str, roots))}, set by "
            f"{DATA_ROOTS_ENV}); give a folder under one of them, or ask the operator to add it."
        )


def list_class_folders(root: str | Path, role: str = "data folder", roots: list[Path] | None = None) -> ClassListing:
    """List every non-junk file of each class folder under `root`.

    Files in sub-folders of a class folder belong to that class (said as
    ``nested``, ``included``); hidden entries and OS debris are ``ignored``;
    files at the top are ``not_in_class``; links to folders inside a class
    are not followed; with data roots set, links leading outside them are
    ``outside_roots`` and skipped.

    Raises
    ------
    DatasetError
        If `root` does not exist, is a file, or cannot be read.
    """
    rootp = Path(root).expanduser()
    if not rootp.exists():
        raise DatasetError(f"{role} {rootp} does not exist; give a folder with one sub-folder per class.")
    if not rootp.is_dir():
        raise DatasetError(f"{role} {rootp} is a file, not a folder; give a folder with one sub-folder per class.")
    out = ClassListing(str(rootp), {})
    add = out.problems.append
    try:
        entries = sorted(rootp.iterdir(), key=lambda p: p.name)
    except OSError as e:
        raise DatasetError(f"cannot read {rootp} ({e.strerror or e}); check that the folder is readable by the user "
                           "running the product.") from e
    for entry in entries:
        if is_junk(entry.name):
            add(Problem(str(entry), "ignored", "hidden or system entry, not a class", "ignored"))
        elif roots and not _allowed(entry, roots):
            add(Problem(str(entry), "outside_roots", f"a link to {entry.resolve()}, outside the allowed data folders "
                        f"({DATA_ROOTS_ENV}); not followed", "skipped"))
        elif not entry.is_dir():
            add(Problem(str(entry), "not_in_class", "file at the top level belongs to no class folder", "ignored"))
        else:
            files = _walk_class(entry, add, roots)
            if files:
                out.classes[entry.name] = files
            else:
                add(Problem(str(entry), "empty_class", "class folder holds no files; not made a class", "ignored"))
    return out


def _walk_class(entry: Path, add, roots: list[Path] | None) -> list[str]:
    files: list[str] = []
    nested: dict[str, int] = {}

    def on_error(e: OSError) -> None:
        add(Problem(e.filename or str(entry), "unreadable", f"folder cannot be read ({e.strerror or e})", "skipped"))

    for dirpath, dirnames, filenames in os.walk(entry, onerror=on_error):
        keep = []
        for d in sorted(dirnames):
            dp = os.path.join(dirpath, d)
            if is_junk(d):
                add(Problem(dp, "ignored", "hidden or system folder", "ignored"))
            elif os.path.islink(dp):
                add(Problem(dp, "link", "a link to a folder inside a class; links inside class folders are not "
                            "followed", "ignored"))
            else:
                keep.append(d)
        dirnames[:] = keep
        for f in sorted(filenames):
            fp = os.path.join(dirpath, f)
            if is_junk(f):
                add(Problem(fp, "ignored", "hidden or system file", "ignored"))
            elif roots and os.path.islink(fp) and not _allowed(Path(fp), roots):
                add(Problem(fp, "outside_roots", f"a link to {Path(fp).resolve()}, outside the allowed data folders "
                            f"({DATA_ROOTS_ENV}); not followed", "skipped"))
            else:
                files.append(fp)
                if dirpath != str(entry):
                    nested[dirpath] = nested.get(dirpath, 0) + 1
    for sub, n in nested.items():
        add(Problem(sub, "nested", f"sub-folder of class '{entry.name}': its {n} files count as '{entry.name}'. If "
                    "it is a class of its own, move it up one level.", "included"))
    return files


def _visible(folder: Path) -> tuple[list[Path], list[Path]]:
    try:
        entries = [e for e in folder.iterdir() if not is_junk(e.name)]
    except OSError as e:
        raise DatasetError(f"cannot read {folder} ({e.strerror or e}); check that the folder is readable by the "
                           "user running the product.") from e
    return sorted(e for e in entries if e.is_dir()), sorted(e for e in entries if not e.is_dir())


def unwrap(folder: str | Path) -> tuple[Path, list[Path]]:
    """Go down through single wrapper folders to the folder that holds the classes.

    A folder wraps when, hidden entries and OS debris aside, it holds exactly
    one folder and no file, and that folder holds a folder in turn: a zip of
    ``pets/`` unpacks to ``dest/pets/{cats,dogs}``, whose classes are in
    ``dest/pets``.

    Parameters
    ----------
    folder : str or pathlib.Path
        An existing folder.

    Returns
    -------
    root : pathlib.Path
        The first folder, from `folder` down, that does not wrap.
    wrappers : list of pathlib.Path
        The folders gone through, outermost first (empty when `folder` is `root`).

    Raises
    ------
    DatasetError
        If a folder on the way cannot be read.
    """
    root, wrappers = Path(folder), []
    dirs, files = _visible(root)
    while len(dirs) == 1 and not files and _visible(dirs[0])[0]:
        wrappers.append(root)
        root = dirs[0]
        dirs, files = _visible(root)
    return root, wrappers


def find_layout(path: str | Path, val_dir: str | Path | None = None, roots: list[Path] | None = None) -> Layout:
    """Find how a folder holds its classes and list the files of each split.

    Parameters
    ----------
    path : str or pathlib.Path
        The data folder.
    val_dir : str or pathlib.Path or None
        A separate validation folder.
    roots : list of pathlib.Path or None
        Allowed data roots for links inside (see :func:`data_roots`).

    Returns
    -------
    Layout

    Raises
    ------
    DatasetError
        If a folder does not exist, cannot be read, or the validation folder
        is the data folder.
    """
    root = Path(path).expanduser()
    if val_dir:
        if Path(val_dir).expanduser().resolve() == root.resolve():
            raise DatasetError(
                f"the validation folder {val_dir} is the training folder: the metrics would be measured on "
                "training images. Give a separate validation folder, or none to split off a share of each class."
            )
        return Layout("separate_val", str(root), {"train": list_class_folders(root, roots=roots),
                                                  "val": list_class_folders(val_dir, "validation folder", roots)})
    if not root.is_dir():
        list_class_folders(root)  # raises, naming the path
    root, wrappers = unwrap(root)
    problems = [Problem(str(w), "wrapper_folder", f"holds only the folder '{inner.name}': its sub-folders are used "
                        f"({inner})", "used") for w, inner in zip(wrappers, [*wrappers[1:], root])]
    wrapper = str(wrappers[0]) if wrappers else None
    dirs, files = _visible(root)
    names = {d.name: d for d in dirs}
    if "train" in names and (val := next((v for v in VAL_NAMES if v in names), None)):
        if val != "test" and "test" in names:
            problems.append(Problem(str(names["test"]), "unused_split", f"test/ beside {val}/: the run validates on "
                                    f"{val}/; test/ is not read", "ignored"))
        splits = {"train": list_class_folders(names["train"], roots=roots),
                  "val": list_class_folders(names[val], "validation folder", roots)}
        return Layout("train_val", str(root), splits, problems, wrapper)
    if files and not dirs:
        problems.append(Problem(str(root), "images_at_root", f"holds {len(files)} files and no class folder; put each "
                                f"class's images in its own sub-folder, e.g. {root / 'cats'}/*.jpg and "
                                f"{root / 'dogs'}/*.jpg", "refused"))
        return Layout("images_at_root", str(root), {}, problems, wrapper)
    listing = list_class_folders(root, roots=roots)
    return Layout("class_folders", str(root), {"all": listing}, problems, wrapper)
