"""The layering of ../shared/DESIGN.md, held against every import (read with ``ast``, lazy imports included).

``app.py -> pages -> ftcore (public API) -> timm / torch / sklearn``; inside
ftcore, ``core`` imports no sibling, ``models``, ``data``, ``accel`` and
``runs`` import only ``core``, ``train`` imports ``core``, ``models``, ``data``
and ``accel``, ``jobs`` imports ``core``, ``train`` and ``runs``, and the CLI
uses the public API (``from ftcore import ...``). A module whose name starts
with ``_`` is private to its package.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

#: What each ftcore package may import of ftcore, besides itself.
ALLOWED = {
    "core": set(),
    "models": {"core"},
    "data": {"core"},
    "accel": {"core"},
    "runs": {"core"},
    "train": {"core", "models", "data", "accel"},
    "jobs": {"core", "train", "runs"},
}
#: Third-party packages the UI never imports: compute lives in ftcore.
UI_FORBIDDEN = ("torch", "timm", "torchvision", "sklearn", "safetensors")
#: Size limits: lines per module and per function (DESIGN.md asks for about 400 and 80).
MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 100


def _sources(*tops: str) -> list[Path]:
    out: list[Path] = []
    for top in tops:
        p = REPO / top
        out += sorted(p.rglob("*.py")) if p.is_dir() else [p]
    return out


def _imports(path: Path) -> list[tuple[int, str]]:
    """Every imported module of a file as (line, dotted name); ``from X import a`` gives ``X`` and ``X.a``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = ".".join(path.relative_to(REPO).with_suffix("").parts[:-1])
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the file's package
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            found.append((node.lineno, base))
            found += [(node.lineno, f"{base}.{a.name}") for a in node.names]
    return found


def _where(path: Path, line: int) -> str:
    return f"{path.relative_to(REPO)}:{line}"


def _package_of(path: Path) -> str | None:
    parts = path.relative_to(REPO / "ftcore").parts
    return parts[0] if len(parts) > 1 else None


def test_ftcore_packages_import_only_the_layers_below():
    bad = []
    for path in _sources("ftcore"):
        pkg = _package_of(path)
        if pkg is None:
            continue  # ftcore/__init__.py, cli.py, __main__.py: checked below
        allowed = ALLOWED[pkg] | {pkg}
        for line, name in _imports(path):
            parts = name.split(".")
            if parts[0] != "ftcore" or len(parts) < 2:
                if parts[0] == "ftcore":
                    bad.append(f"{_where(path, line)} imports the public API `ftcore` from inside ftcore")
                continue
            if parts[1] not in allowed and (REPO / "ftcore" / parts[1]).is_dir():
                bad.append(f"{_where(path, line)}: {pkg} imports {name} (allowed: {sorted(allowed)})")
    assert not bad, "\n".join(bad)


def test_private_modules_stay_inside_their_package():
    bad = []
    for path in _sources("ftcore", "pages", "app.py"):
        own = _package_of(path) if path.is_relative_to(REPO / "ftcore") else None
        for line, name in _imports(path):
            parts = name.split(".")
            if parts[0] == "ftcore" and len(parts) > 2 and parts[2].startswith("_") and parts[1] != own:
                bad.append(f"{_where(path, line)} imports the private {name}")
    assert not bad, "\n".join(bad)


def test_cli_pages_and_app_use_only_the_public_api():
    bad = []
    for path in [REPO / "ftcore" / "cli.py", REPO / "ftcore" / "__main__.py", *_sources("pages", "app.py")]:
        for line, name in _imports(path):
            parts = name.split(".")
            if parts[0] == "ftcore" and len(parts) > 1 and (REPO / "ftcore" / parts[1]).exists():
                bad.append(f"{_where(path, line)} imports {name}; use `from ftcore import ...`")
    assert not bad, "\n".join(bad)


def test_ui_never_imports_compute_libraries_or_streamlit_internals():
    bad = []
    for path in _sources("pages", "app.py"):
        for line, name in _imports(path):
            if name.split(".")[0] in UI_FORBIDDEN or name.startswith("streamlit.runtime"):
                bad.append(f"{_where(path, line)} imports {name}")
        if "_getframe" in path.read_text():
            bad.append(f"{path.relative_to(REPO)} inspects the call stack")
    assert not bad, "\n".join(bad)


def test_ftcore_never_imports_streamlit():
    bad = [f"{_where(p, line)} imports {n}" for p in _sources("ftcore") for line, n in _imports(p)
           if n.split(".")[0] == "streamlit"]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("name", importlib.import_module("ftcore").__all__)
def test_every_public_name_resolves(name):
    import ftcore

    assert getattr(ftcore, name) is not None


def test_public_api_loads_lazily():
    import subprocess
    import sys

    code = "import sys, ftcore; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", "importing ftcore alone must not import torch"


def test_modules_and_functions_are_short_enough_to_read():
    long = []
    for path in _sources("ftcore", "pages", "app.py"):
        src = path.read_text()
        if src.count("\n") > MAX_MODULE_LINES:
            long.append(f"{path.relative_to(REPO)}: {src.count(chr(10))} lines (limit {MAX_MODULE_LINES})")
        for node in ast.walk(ast.parse(src)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long.append(f"{_where(path, node.lineno)} {node.name}: {n} lines (limit {MAX_FUNCTION_LINES})")
    assert not long, "\n".join(long)
