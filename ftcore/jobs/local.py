"""Run training in its own OS process; cancel it; find it again.

:func:`start_run` records a run in the store and starts
``python -m ftcore worker RUN_ID`` in a new session. The worker writes
status, progress and metrics into the store; a page only reads the store, so
a browser refresh, a second tab or a restarted Streamlit server finds the run
again by id (:func:`latest_active_run`). :func:`cancel_run` sets the store's
cancel flag, which the trainer checks before every batch, and sends SIGTERM
as a second signal.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from ftcore.core.config import RunConfig
from ftcore.runs.store import ACTIVE, RunRecord, RunStore

__all__ = ["start_run", "cancel_run", "refresh", "latest_active_run", "run_worker", "pid_alive"]

log = logging.getLogger(__name__)


def pid_alive(pid: int | None) -> bool:
    """Whether a process with this id is running (reaps it if it is our ended child)."""
    if not pid:
        return False
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    except ChildProcessError:
        pass
    except OSError:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def start_run(config: RunConfig, store: RunStore) -> str:
    """Record a run and start its worker process.

    Parameters
    ----------
    config : RunConfig
    store : RunStore

    Returns
    -------
    str
        The run id; the run is ``queued`` until the worker marks it ``running``.
    """
    run_id = store.create_run(config)
    log_path = store.run_dir(run_id) / "worker.log"
    env = dict(os.environ, FTCORE_HOME=str(store.root))
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    with open(log_path, "ab") as logf:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ftcore", "worker", "--store", str(store.root), run_id],
            stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            start_new_session=True, cwd=root,
        )
    store.update(run_id, pid=proc.pid, message="starting the worker process")
    log.info("started run %s in process %d", run_id, proc.pid)
    return run_id


#: A run without a process id that has not written for this long is taken as dead, in seconds.
STALE_SECONDS = 600


def refresh(store: RunStore, run_id: str) -> RunRecord:
    """The run's record, marking it failed if its process died without saying so.

    A process that is gone (killed, out of memory, terminal closed) cannot
    write its final status; its run would look active for ever and keep the
    dashboard's Start button disabled.
    """
    rec = store.get(run_id)
    if rec.active and not rec.pid and time.time() - rec.updated > STALE_SECONDS:
        store.update(run_id, status="failed", error=f"no process and no progress for {STALE_SECONDS // 60} minutes",
                     message="failed")
        return store.get(run_id)
    if rec.active and rec.pid and not pid_alive(rec.pid):
        rec = store.get(run_id)  # the worker may have written its final status just now
        if rec.active and rec.cancel_requested:
            store.update(run_id, status="cancelled", eta_seconds=None,
                         message="cancelled by the user before training began")
            rec = store.get(run_id)
        elif rec.active:
            tail = ""
            p = store.run_dir(run_id) / "worker.log"
            if p.exists():
                lines = p.read_text(errors="replace").strip().splitlines()
                tail = lines[-1] if lines else ""
            store.update(run_id, status="failed", error="the worker process ended unexpectedly"
                         + (f": {tail}" if tail else "") + f" (log: {p})", message="failed")
            rec = store.get(run_id)
    return rec


def cancel_run(store: RunStore, run_id: str) -> None:
    """Ask a run to stop; the trainer stops before its next batch."""
    rec = store.get(run_id)
    if not rec.active:
        return
    store.request_cancel(run_id)
    if rec.pid and pid_alive(rec.pid):
        try:
            os.kill(rec.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass


def latest_active_run(store: RunStore) -> RunRecord | None:
    """The newest queued or running run whose worker is alive, if any."""
    for rec in store.list(limit=20, status=ACTIVE):
        rec = refresh(store, rec.run_id)
        if rec.active:
            return rec
    return None


def run_worker(store: RunStore, run_id: str, stop_flag: dict | None = None) -> int:
    """Body of the worker process: train the run, honour cancel requests.

    Parameters
    ----------
    store : RunStore
    run_id : str
    stop_flag : dict or None
        ``{"stop": bool}`` set by a SIGTERM handler installed before the
        heavy imports (see :func:`ftcore.cli.main`); one is made and a handler
        installed here when None.

    Returns
    -------
    int
        Process exit status: 0 when finished or cancelled, 1 when failed.
    """
    from ftcore.core.errors import FtcoreError
    from ftcore.train.experiment import run_experiment

    flag = stop_flag if stop_flag is not None else {"stop": False}
    if stop_flag is None:
        def on_term(signum, frame):  # noqa: ARG001 - signal handler signature
            flag["stop"] = True

        signal.signal(signal.SIGTERM, on_term)
    rec = store.get(run_id)
    if rec.status != "queued":
        log.warning("run %s is %s, not queued; not starting it", run_id, rec.status)
        return 1
    store.update(run_id, pid=os.getpid())

    def should_stop() -> bool:
        return flag["stop"] or store.cancel_requested(run_id)

    try:
        run_experiment(rec.config, store, run_id, should_stop=should_stop)
    except FtcoreError as e:
        log.error("run %s failed: %s", run_id, e)
        return 1
    except Exception:
        log.exception("run %s failed", run_id)
        return 1
    return 0
