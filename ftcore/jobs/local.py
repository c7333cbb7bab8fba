"""The local executor: each run in its own OS process on this machine; cancel it; find it again.

:class:`LocalExecutor` starts ``python -m ftcore worker RUN_ID`` in a new
session for a queued run (:func:`ftcore.jobs.worker.run_worker`). The worker
writes status, progress and metrics into the store; a page only reads the
store, so a browser refresh, a second tab or a restarted Streamlit server
finds the run again by id (:func:`latest_active_run`). Cancelling sets the
store's cancel flag, which the trainer checks before every batch, and sends
SIGTERM as a second signal. The module functions are the public API the
pages and the CLI use.
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
from ftcore.core.records import RunStatus
from ftcore.jobs.executor import Executor
from ftcore.runs.store import RunRecord, RunStore

__all__ = ["LocalExecutor", "start_run", "cancel_run", "refresh", "latest_active_run", "pid_alive", "STALE_SECONDS"]

log = logging.getLogger(__name__)

#: A run without a process id that has not written for this long is taken as dead, in seconds.
STALE_SECONDS = 600


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


class LocalExecutor(Executor):
    """Runs each submitted run in a worker process of its own (``python -m ftcore worker``) on this machine.

    The process runs in a new session with ``FTCORE_HOME`` set to the store,
    this checkout on its ``PYTHONPATH`` and its output in the run's
    ``worker.log``; its id is recorded as the run's ``pid``.
    """

    def submit(self, run_id: str) -> None:
        store = self.store
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

    def cancel(self, run_id: str) -> None:
        rec = self.store.get(run_id)
        if not rec.active:
            return
        self.store.request_cancel(run_id)
        if rec.pid and pid_alive(rec.pid):
            try:
                os.kill(rec.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def refresh(self, run_id: str) -> RunRecord:
        """The run's record, marking it failed if its process died without saying so.

        A process that is gone (killed, out of memory, terminal closed) cannot
        write its final status; its run would look active for ever and keep the
        dashboard's Start button disabled. An active run with no process id
        that has not written for :data:`STALE_SECONDS` counts as gone too.
        """
        store = self.store
        rec = store.get(run_id)
        if rec.active and not rec.pid and time.time() - rec.updated > STALE_SECONDS:
            store.update(run_id, status=RunStatus.FAILED, message="failed",
                         error=f"no process and no progress for {STALE_SECONDS // 60} minutes")
            return store.get(run_id)
        if rec.active and rec.pid and not pid_alive(rec.pid):
            rec = store.get(run_id)  # the worker may have written its final status just now
            if rec.active and rec.cancel_requested:
                store.update(run_id, status=RunStatus.CANCELLED, eta_seconds=None,
                             message="cancelled by the user before training began")
                rec = store.get(run_id)
            elif rec.active:
                p = store.run_dir(run_id) / "worker.log"
                lines = p.read_text(errors="replace").strip().splitlines() if p.exists() else []
                tail = f": {lines[-1]}" if lines else ""
                store.update(run_id, status=RunStatus.FAILED, message="failed",
                             error=f"the worker process ended unexpectedly{tail} (log: {p})")
                rec = store.get(run_id)
        return rec


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
    return LocalExecutor(store).start(config)


def refresh(store: RunStore, run_id: str) -> RunRecord:
    """The run's record, marking it failed if its process died without saying so (:meth:`LocalExecutor.refresh`).

    Raises
    ------
    RunStoreError
        If the run is not in the store.
    """
    return LocalExecutor(store).refresh(run_id)


def cancel_run(store: RunStore, run_id: str) -> None:
    """Ask a run to stop; the trainer stops before its next batch (a run that has ended is left alone)."""
    LocalExecutor(store).cancel(run_id)


def latest_active_run(store: RunStore) -> RunRecord | None:
    """The newest queued or running run whose worker is alive, if any."""
    return LocalExecutor(store).latest_active()
