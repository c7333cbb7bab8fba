"""Shared fixtures of the ftcore tests.

Everything runs on the CPU, offline, with timm's tiny ``test_*`` models and
small image folders written into ``tmp_path``. ``FTCORE_HOME`` points into a
temporary folder for every test, so nothing is written into ``~/.ftcore``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parent.parent

#: Base colours of the classes written by ``make_image_folder``, in class order;
#: far apart so that the classes are easy to tell apart.
COLOURS = [
    (220, 30, 30),
    (30, 200, 40),
    (30, 40, 220),
    (230, 220, 30),
    (200, 30, 210),
    (30, 210, 210),
]


def write_image(path: Path, colour: tuple[int, int, int], size: int = 16, seed: int = 0, fmt: str | None = None) -> Path:
    """Write a small noisy image of one base colour."""
    rng = np.random.default_rng(seed)
    arr = np.clip(np.asarray(colour, dtype=np.int16) + rng.integers(-25, 26, size=(size, size, 3)), 0, 255)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr.astype(np.uint8)).save(path, format=fmt)
    return path


def _make_image_folder(root: Path, classes: dict[str, int] | None = None, size: int = 16, suffix: str = ".png",
                       start_seed: int = 0) -> Path:
    classes = {"red": 8, "green": 8} if classes is None else classes
    for ci, (name, n) in enumerate(classes.items()):
        for i in range(n):
            write_image(root / name / f"img_{i:03d}{suffix}", COLOURS[ci % len(COLOURS)], size,
                        seed=start_seed + 1000 * ci + i)
    return root


@pytest.fixture
def make_image_folder(tmp_path):
    """Factory: ``make_image_folder(name="data", classes={"red": 8, "green": 8}, size=16)``.

    Writes ``tmp_path/name/<class>/img_XXX.png``, one distinct colour per
    class (in the order given), and returns the folder.
    """
    def make(name: str = "data", classes: dict[str, int] | None = None, size: int = 16, suffix: str = ".png",
             start_seed: int = 0) -> Path:
        return _make_image_folder(tmp_path / name, classes, size, suffix, start_seed)

    return make


@pytest.fixture(autouse=True)
def ftcore_home(tmp_path_factory, monkeypatch) -> Path:
    """Point ``FTCORE_HOME`` at a fresh temporary folder for every test."""
    home = tmp_path_factory.mktemp("ftcore_home")
    monkeypatch.setenv("FTCORE_HOME", str(home))
    return home


@pytest.fixture
def store(tmp_path):
    """An empty :class:`ftcore.runs.store.RunStore` in ``tmp_path/store``."""
    from ftcore.runs.store import RunStore

    return RunStore(tmp_path / "store")


def tiny_run_config(data_dir: Path, *, unfreeze: str = "all", epochs: int = 1, batch_size: int = 4,
                    baseline: bool = True, model: str = "test_resnet", img_size: int = 32, lr: float = 1e-2,
                    val_fraction: float = 0.25, val_dir: str | None = None):
    """A RunConfig for a tiny CPU run with random initialisation."""
    from ftcore.core.config import BackboneConfig, DataConfig, FreezeConfig, RunConfig, TrainConfig

    return RunConfig(
        backbone=BackboneConfig(model, "none"),
        freeze=FreezeConfig(unfreeze),
        data=DataConfig(str(data_dir), val_dir, val_fraction),
        train=TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, img_size=img_size, baseline=baseline,
                          seed=0),
    )


def subprocess_env(home: Path) -> dict[str, str]:
    """Environment for ``python -m ftcore`` child processes: the store in `home`, one thread each."""
    env = dict(os.environ, FTCORE_HOME=str(home), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


PYTHON = sys.executable
