"""The run store: one SQLite database plus one artifact folder per run.

Layout under the store root (``$FTCORE_HOME``, default ``~/.ftcore``)::

    runs.sqlite3             runs, per-epoch metrics, per-layer-group statistics, live progress
    runs/<run_id>/config.json
    runs/<run_id>/<model>_predictions.npz   validation labels, predictions, probabilities
    runs/<run_id>/finetuned.safetensors     fine-tuned weights
    runs/<run_id>/worker.log                the worker process's log
    datasets/                 data the product writes itself (demo set, uploads)

Every call opens its own short-lived connection, so the worker process, the
CLI and any number of Streamlit sessions can read and write concurrently
(SQLite WAL mode).
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ftcore.core.config import RunConfig
from ftcore.core.errors import RunStoreError
from ftcore.core.paths import default_store_root
from ftcore.core.records import ACTIVE_STATUSES, ExperimentResult, ModelRole, RunFacts, RunStatus

__all__ = ["RunStore", "RunRecord", "default_store_root", "ACTIVE", "MODELS"]

#: Statuses of a run that has not ended.
ACTIVE = ACTIVE_STATUSES
#: The two models trained in a run, in training order.
MODELS = tuple(ModelRole)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    status TEXT NOT NULL,
    config TEXT NOT NULL,
    pid INTEGER,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    message TEXT NOT NULL DEFAULT '',
    error TEXT NOT NULL DEFAULT '',
    phase TEXT NOT NULL DEFAULT '',
    step INTEGER NOT NULL DEFAULT 0,
    total_steps INTEGER NOT NULL DEFAULT 0,
    eta_seconds REAL,
    info TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS epochs (
    run_id TEXT NOT NULL,
    model TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    train_loss REAL, train_accuracy REAL, train_macro_recall REAL,
    val_loss REAL, val_accuracy REAL, val_macro_recall REAL,
    seconds REAL, images_per_second REAL,
    PRIMARY KEY (run_id, model, epoch)
);
CREATE TABLE IF NOT EXISTS layer_stats (
    run_id TEXT NOT NULL,
    model TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    layer_group TEXT NOT NULL,
    group_index INTEGER NOT NULL,
    relative_change REAL, grad_norm REAL, lr REAL, trainable INTEGER NOT NULL,
    PRIMARY KEY (run_id, model, epoch, layer_group)
);
"""

EPOCH_COLUMNS = (
    "train_loss", "train_accuracy", "train_macro_recall",
    "val_loss", "val_accuracy", "val_macro_recall", "seconds", "images_per_second",
)


@dataclass(frozen=True)
class RunRecord:
    """One row of the run store.

    Attributes
    ----------
    run_id : str
    created, updated : float
        Unix times in seconds.
    status : RunStatus
        ``queued``, ``running``, ``finished``, ``cancelled`` or ``failed`` (a ``str`` enum: compares
        equal to those strings); a status written by a newer version is kept as its own member.
    config : RunConfig
    pid : int or None
        Worker process id while it runs.
    cancel_requested : bool
    message, error : str
        Last progress message; the error shown to the user when failed.
    phase : str
        Model being trained (``baseline``/``finetuned``) or a preparation step.
    step, total_steps : int
        Optimisation steps done and planned over both models.
    eta_seconds : float or None
        Estimated seconds left.
    info : dict
        Facts about the run as stored (device, weights source, class names, counts...); :attr:`facts`
        reads them typed.
    """

    run_id: str
    created: float
    updated: float
    status: RunStatus
    config: RunConfig
    pid: int | None
    cancel_requested: bool
    message: str
    error: str
    phase: str
    step: int
    total_steps: int
    eta_seconds: float | None
    info: dict

    @property
    def active(self) -> bool:
        """True while queued or running."""
        return self.status in ACTIVE

    @property
    def facts(self) -> RunFacts:
        """The run's facts, typed (:class:`ftcore.core.records.RunFacts`; per model ``facts.model(role)``)."""
        return RunFacts.from_dict(self.info)


class RunStore:
    """SQLite-backed run store with one artifact folder per run.

    Parameters
    ----------
    root : str, pathlib.Path or None, default None
        Store folder; None uses :func:`default_store_root`. Created if missing.

    Raises
    ------
    RunStoreError
        If the folder cannot be created or the database opened.
    """

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = (Path(root).expanduser() if root is not None else default_store_root()).resolve()
        try:
            (self.root / "runs").mkdir(parents=True, exist_ok=True)
            with self._connect() as con:
                con.execute("PRAGMA journal_mode=WAL")  # persistent in the database file: set once
                con.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as e:
            raise RunStoreError(f"cannot use run store {self.root}: {e}; set FTCORE_HOME to a writable folder.") from e

    @property
    def db_path(self) -> Path:
        return self.root / "runs.sqlite3"

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        con = sqlite3.connect(self.db_path, timeout=30)
        try:
            con.row_factory = sqlite3.Row
            with con:
                yield con
        finally:
            con.close()

    # -- runs ---------------------------------------------------------------
    def create_run(self, config: RunConfig) -> str:
        """Add a queued run, write its ``config.json``, return its id."""
        run_id = time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)
        now = time.time()
        d = self.run_dir(run_id)
        d.mkdir(parents=True, exist_ok=True)
        (d / "config.json").write_text(config.to_json(), encoding="utf-8")
        with self._connect() as con:
            con.execute(
                "INSERT INTO runs (run_id, created, updated, status, config) VALUES (?, ?, ?, 'queued', ?)",
                (run_id, now, now, config.to_json()),
            )
        return run_id

    def run_dir(self, run_id: str) -> Path:
        """Artifact folder of a run."""
        if not run_id or "/" in run_id or run_id.startswith("."):
            raise RunStoreError(f"run id {run_id!r} is not valid.")
        return self.root / "runs" / run_id

    def update(self, run_id: str, **fields: Any) -> None:
        """Set columns of a run (``status``, ``message``, ``phase``, ...)."""
        allowed = {"status", "pid", "message", "error", "phase", "step", "total_steps", "eta_seconds",
                   "cancel_requested"}
        bad = set(fields) - allowed
        if bad:
            raise RunStoreError(f"cannot set {sorted(bad)} on a run; allowed: {sorted(allowed)}.")
        fields["updated"] = time.time()
        cols = ", ".join(f"{k} = ?" for k in fields)
        with self._connect() as con:
            cur = con.execute(f"UPDATE runs SET {cols} WHERE run_id = ?", (*fields.values(), run_id))
            if cur.rowcount == 0:
                raise RunStoreError(f"run {run_id} is not in the store {self.root}.")

    def merge_info(self, run_id: str, **info: Any) -> None:
        """Add JSON-able facts to a run's ``info``."""
        with self._connect() as con:
            row = con.execute("SELECT info FROM runs WHERE run_id = ?", (run_id,)).fetchone()
            if row is None:
                raise RunStoreError(f"run {run_id} is not in the store {self.root}.")
            cur = json.loads(row["info"])
            cur.update(info)
            con.execute("UPDATE runs SET info = ? WHERE run_id = ?", (json.dumps(cur), run_id))

    def get(self, run_id: str) -> RunRecord:
        """The record of a run.

        Raises
        ------
        RunStoreError
            If no run has that id.
        """
        with self._connect() as con:
            row = con.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        if row is None:
            raise RunStoreError(f"run {run_id} is not in the store {self.root}.")
        return self._record(row)

    def list(self, limit: int = 50, status: tuple[str, ...] | None = None) -> list[RunRecord]:
        """Runs, newest first, optionally only those with a status in `status`."""
        q = "SELECT * FROM runs"
        args: tuple = ()
        if status:
            q += f" WHERE status IN ({', '.join('?' * len(status))})"
            args = tuple(status)
        q += " ORDER BY created DESC LIMIT ?"
        with self._connect() as con:
            rows = con.execute(q, (*args, int(limit))).fetchall()
        return [self._record(r) for r in rows]

    @staticmethod
    def _record(row: sqlite3.Row) -> RunRecord:
        return RunRecord(
            run_id=row["run_id"], created=row["created"], updated=row["updated"], status=RunStatus.read(row["status"]),
            config=RunConfig.from_dict(json.loads(row["config"])), pid=row["pid"],
            cancel_requested=bool(row["cancel_requested"]), message=row["message"], error=row["error"],
            phase=row["phase"], step=row["step"], total_steps=row["total_steps"],
            eta_seconds=row["eta_seconds"], info=json.loads(row["info"]),
        )

    def request_cancel(self, run_id: str) -> None:
        """Ask the trainer to stop; it checks this flag every batch."""
        self.update(run_id, cancel_requested=1)

    def cancel_requested(self, run_id: str) -> bool:
        """Whether a cancel was asked for."""
        with self._connect() as con:
            row = con.execute("SELECT cancel_requested FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        return bool(row and row[0])

    # -- metrics --------------------------------------------------------------
    def add_epoch(self, run_id: str, model: str, epoch: int, **metrics: float) -> None:
        """Record one epoch's metrics of `model` (``baseline``/``finetuned``).

        `metrics` keys are from ``EPOCH_COLUMNS``; accuracies and recalls are
        fractions in [0, 1], seconds are wall time of the epoch.
        """
        bad = set(metrics) - set(EPOCH_COLUMNS)
        if bad:
            raise RunStoreError(f"unknown epoch metrics {sorted(bad)}; allowed: {EPOCH_COLUMNS}.")
        cols = ["run_id", "model", "epoch", *metrics]
        with self._connect() as con:
            con.execute(
                f"INSERT OR REPLACE INTO epochs ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                (run_id, model, int(epoch), *[None if v is None else float(v) for v in metrics.values()]),
            )

    def add_layer_stats(self, run_id: str, model: str, epoch: int, stats) -> None:
        """Record one epoch's per-layer-group statistics of `model`.

        Parameters
        ----------
        run_id, model : str
        epoch : int
            1-based.
        stats : iterable of ftcore.train.monitor.LayerStats
            Relative weight change ``||w - w0|| / ||w0||``, mean gradient
            norm and mean learning rate per group (see
            :class:`ftcore.train.monitor.LayerStats`).
        """
        rows = [(run_id, model, int(epoch), s.group, int(s.index), _real(s.relative_change), _real(s.grad_norm),
                 _real(s.lr), int(bool(s.trainable))) for s in stats]
        if not rows:
            return
        with self._connect() as con:
            con.executemany(
                "INSERT OR REPLACE INTO layer_stats (run_id, model, epoch, layer_group, group_index, relative_change, "
                "grad_norm, lr, trainable) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)

    def layer_stats(self, run_id: str) -> pd.DataFrame:
        """Per-layer-group statistics: columns ``model``, ``epoch``, ``layer_group``, ``group_index``,
        ``relative_change``, ``grad_norm``, ``lr`` and ``trainable`` (bool); empty for runs made before
        they were recorded."""
        cols = ["model", "epoch", "layer_group", "group_index", "relative_change", "grad_norm", "lr", "trainable"]
        with self._connect() as con:
            rows = con.execute(
                f"SELECT {', '.join(cols)} FROM layer_stats WHERE run_id = ? ORDER BY model, epoch, group_index",
                (run_id,)).fetchall()
        df = pd.DataFrame([tuple(r) for r in rows], columns=cols)
        df["trainable"] = df["trainable"].astype(bool)
        return df

    def epochs(self, run_id: str) -> pd.DataFrame:
        """Per-epoch metrics of both models: columns ``model``, ``epoch`` and ``EPOCH_COLUMNS``."""
        with self._connect() as con:
            rows = con.execute(
                "SELECT * FROM epochs WHERE run_id = ? ORDER BY model, epoch", (run_id,)
            ).fetchall()
        cols = ["model", "epoch", *EPOCH_COLUMNS]
        return pd.DataFrame([{c: r[c] for c in cols} for r in rows], columns=cols)

    # -- artifacts -------------------------------------------------------------
    def save_predictions(self, run_id: str, model: str, y_true: np.ndarray, y_pred: np.ndarray,
                         probs: np.ndarray, files: list[str]) -> Path:
        """Save a model's validation predictions as ``<model>_predictions.npz``."""
        p = self.run_dir(run_id) / f"{model}_predictions.npz"
        np.savez_compressed(p, y_true=y_true, y_pred=y_pred, probs=probs, files=np.asarray(files, dtype=str))
        return p

    def has_predictions(self, run_id: str, model: ModelRole | str) -> bool:
        """Whether `model` of a run has saved validation predictions (without reading them)."""
        return (self.run_dir(run_id) / f"{model}_predictions.npz").exists()

    def load_predictions(self, run_id: str, model: str) -> dict[str, np.ndarray] | None:
        """Arrays saved by :meth:`save_predictions`, or None if absent."""
        p = self.run_dir(run_id) / f"{model}_predictions.npz"
        if not p.exists():
            return None
        with np.load(p) as z:
            return {k: z[k] for k in z.files}

    def summary(self, run_id: str) -> ExperimentResult | None:
        """What the models of a run achieved (its ``summary.json``, without the status), or None if absent.

        Raises
        ------
        RunStoreError
            If the file is not valid JSON.
        """
        p = self.run_dir(run_id) / "summary.json"
        if not p.exists():
            return None
        try:
            return ExperimentResult.from_dict(json.loads(p.read_text(encoding="utf-8")))
        except ValueError as e:
            raise RunStoreError(f"cannot read {p}: {e}; the run's summary is damaged.") from e

    def save_json(self, run_id: str, name: str, obj: Any) -> Path:
        """Write a JSON artifact into the run folder."""
        p = self.run_dir(run_id) / name
        p.write_text(json.dumps(obj, indent=2, default=_json_default), encoding="utf-8")
        return p


def _real(v: Any) -> float | None:
    """A float for SQLite; None for NaN (SQLite has no NaN)."""
    v = float(v)
    return None if v != v else v


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if hasattr(o, "__dataclass_fields__"):
        return asdict(o)
    raise TypeError(f"not JSON-serialisable: {type(o).__name__}")
