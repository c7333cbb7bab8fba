"""The worker entry: the body of the process that executes one run (``python -m ftcore worker RUN_ID``)."""

from __future__ import annotations

import logging
import os
import signal

from ftcore.core.errors import FtcoreError
from ftcore.core.records import RunStatus
from ftcore.jobs.writer import run_experiment
from ftcore.runs.store import RunStore

__all__ = ["run_worker"]

log = logging.getLogger(__name__)


def run_worker(store: RunStore, run_id: str, stop_flag: dict | None = None) -> int:
    """Train a queued run into the store, honouring cancel requests.

    Parameters
    ----------
    store : RunStore
    run_id : str
        A run with status ``queued``.
    stop_flag : dict or None
        ``{"stop": bool}`` set by a SIGTERM handler installed before the
        heavy imports (see :func:`ftcore.cli.main`); one is made and a handler
        installed here when None.

    Returns
    -------
    int
        Process exit status: 0 when finished or cancelled, 1 when failed or
        when the run is not queued (it is left as it is).
    """
    flag = stop_flag if stop_flag is not None else {"stop": False}
    if stop_flag is None:
        def on_term(signum, frame):  # noqa: ARG001 - signal handler signature
            flag["stop"] = True

        signal.signal(signal.SIGTERM, on_term)
    rec = store.get(run_id)
    if rec.status != RunStatus.QUEUED:
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
