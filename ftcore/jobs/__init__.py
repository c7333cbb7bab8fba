"""How a run is executed: the executor interface, the local process executor, the worker entry, the store writer.

- :mod:`ftcore.jobs.executor`: :class:`~ftcore.jobs.executor.Executor`, submit / cancel / refresh;
- :mod:`ftcore.jobs.local`: the local executor (a worker process per run) and the public
  ``start_run``, ``cancel_run``, ``refresh``, ``latest_active_run``;
- :mod:`ftcore.jobs.worker`: ``run_worker``, the body of a worker process;
- :mod:`ftcore.jobs.writer`: ``StoreWriter`` (events into the run store) and ``run_experiment``.

Imports :mod:`ftcore.core`, :mod:`ftcore.train` and :mod:`ftcore.runs`.
"""
