"""pyproject.toml, requirements*.txt and the Makefile agree: one list of dependencies, two commands."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

REPO = Path(__file__).resolve().parent.parent


def _requirements(name: str) -> list[str]:
    """The requirement lines of a requirements file, comments and ``-r`` includes left out."""
    lines = (re.sub(r"\s+#.*", "", line).strip() for line in (REPO / name).read_text().splitlines())
    return [line for line in lines if line and not line.startswith(("#", "-r"))]


def test_pyproject_dependencies_are_the_requirements_files():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["dependencies"] == _requirements("requirements.txt")
    assert project["optional-dependencies"]["dev"] == _requirements("requirements-dev.txt")
    assert "-r requirements.txt" in (REPO / "requirements-dev.txt").read_text().splitlines()


def test_numpy_2_is_required_for_bitwise_count():
    assert any(re.fullmatch(r"numpy>=2(\.\d+)*", r) for r in _requirements("requirements.txt"))


def test_makefile_has_the_two_commands_and_ci_calls_make_test():
    makefile = (REPO / "Makefile").read_text()
    for target in ("run", "test"):
        assert re.search(rf"^{target}:", makefile, re.M), f"Makefile has no `{target}` target"
    assert "streamlit run app.py" in makefile and "pytest -q" in makefile and "ruff check" in makefile
    assert re.search(r"^make test$", (REPO / ".ci" / "run").read_text(), re.M)
