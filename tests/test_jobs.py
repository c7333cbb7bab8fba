"""ftcore.jobs.local: runs in their own worker process, cancel, reattach, dead-worker detection.

The worker processes are real (``python -m ftcore worker``). To keep the suite
fast, the module fixture starts them all at once and the tests then follow
each one.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import _make_image_folder, tiny_run_config

from ftcore.jobs import local as jobs
from ftcore.jobs import worker
from ftcore.jobs.local import cancel_run, latest_active_run, pid_alive, refresh, start_run
from ftcore.jobs.worker import run_worker
from ftcore.runs.store import RunStore

POLL = 0.3


def _wait(store: RunStore, run_id: str, until, timeout: float):
    """Poll :func:`refresh` until ``until(record)`` or `timeout` seconds; return the last record."""
    t_end = time.monotonic() + timeout
    rec = refresh(store, run_id)
    while not until(rec) and time.monotonic() < t_end:
        time.sleep(POLL)
        rec = refresh(store, run_id)
    return rec


def _wait_exit(pid: int, timeout: float = 15) -> bool:
    """Wait until process `pid` has ended; True if it did."""
    t_end = time.monotonic() + timeout
    while pid_alive(pid) and time.monotonic() < t_end:
        time.sleep(POLL)
    return not pid_alive(pid)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


@pytest.fixture(scope="module")
def workers(tmp_path_factory):
    """Start three worker processes at once: a short run, a long run, and one cancelled at once."""
    base = tmp_path_factory.mktemp("jobs")
    data = _make_image_folder(base / "data", {"red": 8, "green": 8})
    store = RunStore(base / "store")
    started = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OMP_NUM_THREADS", "1")  # the workers share two cores
        short_id = start_run(tiny_run_config(data, epochs=1), store)
        started["short"] = (short_id, store.get(short_id).pid, _cmdline(store.get(short_id).pid))
        long_id = start_run(tiny_run_config(data, epochs=500, baseline=False), store)
        started["long"] = (long_id, store.get(long_id).pid, "")
        early_id = start_run(tiny_run_config(data, epochs=500, baseline=False), store)
        cancel_run(store, early_id)
        started["early"] = (early_id, store.get(early_id).pid, "")
    yield store, started
    for _run_id, pid, _ in started.values():  # end only what this fixture started, by pid
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass


def test_start_run_spawns_worker_process(workers):
    store, started = workers
    run_id, pid, cmdline = started["short"]
    assert pid and pid != os.getpid()
    assert "-m ftcore worker" in cmdline and run_id in cmdline and str(store.root) in cmdline
    assert (store.run_dir(run_id) / "worker.log").exists()


def test_worker_run_finishes(workers):
    store, started = workers
    run_id, pid, _ = started["short"]
    rec = _wait(store, run_id, lambda r: not r.active, timeout=120)
    log = (store.run_dir(run_id) / "worker.log").read_text(errors="replace")
    assert rec.status == "finished", f"{rec.status}: {rec.error}\n{log[-2000:]}"
    df = store.epochs(run_id)
    assert list(zip(df["model"], df["epoch"])) == [("baseline", 1), ("finetuned", 1)]
    assert store.load_predictions(run_id, "finetuned") is not None
    assert (store.run_dir(run_id) / "finetuned.safetensors").exists()
    assert rec.info["class_names"] == ["green", "red"]
    assert _wait_exit(pid), "the worker process should exit after finishing"


def test_cancel_running_worker(workers):
    store, started = workers
    run_id, pid, _ = started["long"]
    rec = _wait(store, run_id, lambda r: not r.active or (r.status == "running" and r.step > 0), timeout=120)
    assert rec.status == "running" and rec.step > 0, f"{rec.status}: {rec.error}"
    assert latest_active_run(store).run_id == run_id
    t0 = time.monotonic()
    cancel_run(store, run_id)
    rec = _wait(store, run_id, lambda r: not r.active, timeout=15)
    took = time.monotonic() - t0
    assert rec.status == "cancelled", f"{rec.status}: {rec.error}"
    assert took < 10, f"cancel took {took:.1f} s"
    assert rec.cancel_requested and "cancelled" in rec.message
    assert rec.step < rec.total_steps
    assert _wait_exit(pid), "the worker process should exit after a cancel"
    assert latest_active_run(store) is None or latest_active_run(store).run_id != run_id


def test_cancel_right_after_start_is_cancelled_not_failed(workers):
    store, started = workers
    run_id, _, _ = started["early"]
    rec = _wait(store, run_id, lambda r: not r.active, timeout=60)
    assert rec.status == "cancelled", f"{rec.status}: {rec.error}"


# -- dead worker, pid_alive, latest_active_run (no subprocess training) ----------------------------------

def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_pid_alive():
    assert pid_alive(os.getpid())
    assert not pid_alive(None) and not pid_alive(0)
    assert not pid_alive(_dead_pid())


def test_dead_worker_marks_run_failed(store, make_image_folder):
    run_id = store.create_run(tiny_run_config(make_image_folder()))
    store.update(run_id, status="running", pid=_dead_pid(), phase="finetuned")
    (store.run_dir(run_id) / "worker.log").write_text("starting\nMemoryError: out of memory\n")
    rec = refresh(store, run_id)
    assert rec.status == "failed" and rec.message == "failed"
    assert rec.error.startswith("the worker process ended unexpectedly: MemoryError: out of memory")
    assert "worker.log" in rec.error
    assert store.get(run_id).status == "failed"
    assert latest_active_run(store) is None


def test_dead_queued_worker_without_log(store, make_image_folder):
    run_id = store.create_run(tiny_run_config(make_image_folder()))
    store.update(run_id, pid=_dead_pid())
    rec = refresh(store, run_id)
    assert rec.status == "failed" and "the worker process ended unexpectedly (log:" in rec.error


def test_refresh_leaves_live_and_ended_runs_alone(store, make_image_folder):
    data = make_image_folder()
    live = store.create_run(tiny_run_config(data))
    store.update(live, status="running", pid=os.getpid())
    done = store.create_run(tiny_run_config(data))
    store.update(done, status="finished", pid=_dead_pid())
    assert refresh(store, live).status == "running"
    assert refresh(store, done).status == "finished"
    assert latest_active_run(store).run_id == live


def test_cancel_run_on_ended_run_is_a_no_op(store, make_image_folder):
    run_id = store.create_run(tiny_run_config(make_image_folder()))
    store.update(run_id, status="finished")
    cancel_run(store, run_id)
    assert not store.get(run_id).cancel_requested


# -- run_worker in this process --------------------------------------------------------------------------

@pytest.fixture
def no_signal_handlers(monkeypatch):
    """run_worker installs a SIGTERM handler; keep pytest's own."""
    installed = []
    monkeypatch.setattr(worker.signal, "signal", lambda sig, handler: installed.append(sig))
    return installed


def test_run_worker_refuses_a_run_that_is_not_queued(store, make_image_folder, no_signal_handlers):
    run_id = store.create_run(tiny_run_config(make_image_folder()))
    store.update(run_id, status="finished")
    assert run_worker(store, run_id) == 1
    assert store.get(run_id).status == "finished"


def test_run_worker_honours_cancel_flag(store, make_image_folder, no_signal_handlers):
    run_id = store.create_run(tiny_run_config(make_image_folder()))
    store.request_cancel(run_id)
    assert run_worker(store, run_id) == 0
    rec = store.get(run_id)
    assert rec.status == "cancelled" and rec.pid == os.getpid()
    assert no_signal_handlers == [signal.SIGTERM]
    assert store.epochs(run_id).empty


def test_run_worker_failure_returns_1(store, make_image_folder, no_signal_handlers):
    run_id = store.create_run(tiny_run_config(make_image_folder(classes={"only": 4})))
    assert run_worker(store, run_id) == 1
    rec = store.get(run_id)
    assert rec.status == "failed" and "found 1 (only)" in rec.error


def test_start_run_gives_the_worker_an_absolute_store(tmp_path, monkeypatch, make_image_folder):
    data = make_image_folder()
    calls = []
    dead = _dead_pid()

    class FakePopen:
        def __init__(self, args, **kw):
            calls.append((args, kw))
            self.pid = dead

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(jobs.subprocess, "Popen", FakePopen)
    store = RunStore("relative_store")
    run_id = start_run(tiny_run_config(data), store)
    args, kw = calls[0]
    assert args[1:4] == ["-m", "ftcore", "worker"] and args[-1] == run_id
    store_arg = Path(args[args.index("--store") + 1])
    worker_cwd = Path(kw["cwd"])
    assert (worker_cwd / store_arg).resolve() == (tmp_path / "relative_store").resolve()


def test_active_run_without_a_process_and_without_progress_is_marked_failed(tmp_path, monkeypatch):
    """A CLI run killed before it recorded its pid must not block the dashboard for ever."""
    store = RunStore(tmp_path / "store")
    data = _make_image_folder(tmp_path / "data", {"a": 4, "b": 4})
    rid = store.create_run(tiny_run_config(data))
    store.update(rid, status="running")
    assert refresh(store, rid).status == "running"
    real = time.time
    monkeypatch.setattr(jobs.time, "time", lambda: real() + jobs.STALE_SECONDS + 5)
    rec = refresh(store, rid)
    assert rec.status == "failed" and "no process and no progress" in rec.error
