"""The executor interface: how queued runs of the run store are executed.

A run is a :class:`~ftcore.core.config.RunConfig` recorded in the store;
starting one queues it, and an executor executes it: the local executor
(:class:`ftcore.jobs.local.LocalExecutor`) in a worker process on this
machine, a cluster executor elsewhere. Whatever executes a run writes into
the store (:class:`ftcore.jobs.writer.StoreWriter`); the pages read only the
store, and reach the executor through :meth:`Executor.start`,
:meth:`Executor.cancel` and :meth:`Executor.refresh`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from ftcore.core.config import RunConfig
from ftcore.core.records import ACTIVE_STATUSES
from ftcore.runs.store import RunRecord, RunStore

__all__ = ["Executor"]


class Executor(ABC):
    """Executes the queued runs of one run store.

    Parameters
    ----------
    store : RunStore
        Where runs are queued and where their executions write.
    """

    def __init__(self, store: RunStore) -> None:
        self.store = store

    @abstractmethod
    def submit(self, run_id: str) -> None:
        """Begin executing a queued run; return at once (the run writes its status as it goes).

        Raises
        ------
        RunStoreError
            If the run is not in the store.
        """

    @abstractmethod
    def cancel(self, run_id: str) -> None:
        """Ask an active run to stop (it keeps its finished epochs); a run that has ended is left alone."""

    @abstractmethod
    def refresh(self, run_id: str) -> RunRecord:
        """The run's record, with an execution that died without saying so marked ``failed``.

        Raises
        ------
        RunStoreError
            If the run is not in the store.
        """

    def start(self, config: RunConfig) -> str:
        """Queue a run of `config` in the store and submit it; return its id."""
        run_id = self.store.create_run(config)
        self.submit(run_id)
        return run_id

    def latest_active(self, limit: int = 20) -> RunRecord | None:
        """The newest queued or running run that is still being executed, if any (of the `limit` newest)."""
        for rec in self.store.list(limit=limit, status=ACTIVE_STATUSES):
            rec = self.refresh(rec.run_id)
            if rec.active:
                return rec
        return None
