"""Shared UI helpers of the pages: the steps of the walk, the run store, the sidebar, formatting.

UI only: everything computed comes from ftcore. The walk's state is in
:mod:`pages.walk`.
"""

from __future__ import annotations

import importlib
import runpy
import time
from pathlib import Path

import streamlit as st

from ftcore import FtcoreError, RunStore, latest_active_run, refresh
from pages.walk import load_config, walk

APP = Path(__file__).resolve().parent.parent / "app.py"
#: The steps of the walk, in order: URL path -> title. Step ``x`` is the function ``render()`` of ``pages/x.py``,
#: at ``/x`` (the first, the default page, at ``/``).
STEPS = {"backbone": "1. Backbone", "layers": "2. Layers", "data": "3. Data", "train": "4. Train",
         "compare": "5. Compare"}


def step(url_path: str) -> st.Page:
    """The page of a step, for ``st.navigation`` (``app.py``) and ``st.page_link`` (the next-step links).

    Parameters
    ----------
    url_path : str
        A key of :data:`STEPS` (``"train"``).

    Returns
    -------
    streamlit.navigation.page.StreamlitPage
        ``st.Page`` of the function ``render`` of ``pages/<url_path>.py``, with
        the step's title, at ``/<url_path>``; the first step is the default page.
    """
    module = importlib.import_module(f"pages.{url_path}")
    return st.Page(module.render, title=STEPS[url_path], url_path=url_path, default=url_path == next(iter(STEPS)))


def route_through_app() -> None:
    """Run ``app.py`` (the router) here, when Streamlit ran a page file (``pages/train.py``) alone.

    Each step module ends with ``if __name__ == "__main__": route_through_app()``:
    imported by ``app.py`` it is ``pages.<name>`` and this never runs; it
    runs only when Streamlit executes the file as a script.

    Why: a folder named ``pages/`` beside the main script turns on Streamlit's
    old multipage mode, in which a URL such as ``/train`` runs
    ``pages/train.py`` by itself (no router, no sidebar, every file of
    ``pages/`` listed in the navigation). The mode ends, for all sessions,
    once any session calls ``st.navigation`` (its docstring: "As soon as any
    session of your app executes the ``st.navigation`` command, your app will
    ignore the ``pages/`` directory (across all sessions)"), but the first
    request after a server start that is not for ``/`` comes before that, and
    Streamlit has no setting that turns the mode off (the weakness is named in
    the review of streamlit/streamlit#10276: a ``pages`` folder with
    ``st.navigation`` and a page URL opened directly; Streamlit's own advice,
    PR #16658, is to name the folder ``app_pages/``, which this project's
    layout does not do). AppTest starts every run in that mode too
    (``AppTest._run`` resets the flag), so every AppTest of a step other than
    the default one comes through here.

    So the router runs in this same script run: its ``st.navigation`` ends the
    mode and resolves the same page (same URL path, same query string), the
    page's widgets see this run's events (a click is not lost, as it would be
    in a rerun), and the sidebar is drawn. Checked by ``tests/test_browser.py``
    (a fresh server's first request for ``/train``) and ``tests/test_app.py``.
    """
    runpy.run_path(str(APP), run_name="__main__")


def init_state() -> None:
    """Create this session's walk state.

    A new browser session (a refreshed tab) that follows a run (``?run=ID``)
    starts from that run's choices, so the form matches the run shown.
    """
    if "walk" in st.session_state:
        return
    walk()
    rid = st.query_params.get("run")
    if rid:
        try:
            cfg = get_store().get(rid).config
        except FtcoreError:
            cfg = None
        if cfg is not None:
            load_config(cfg)


@st.cache_data(show_spinner="Reading the layer groups...")
def cached_layer_groups(model_name: str, n_classes: int):
    """ftcore.models.layers.describe_layer_groups, cached per backbone and class count."""
    from ftcore import describe_layer_groups

    return describe_layer_groups(model_name, num_classes=n_classes)


@st.cache_resource
def get_store() -> RunStore:
    """The run store, created once per server process ($FTCORE_HOME or ~/.ftcore)."""
    return RunStore()


def fmt_params(n: int) -> str:
    """Parameter count for people: 4.65 M, 12.3 k."""
    if n >= 1e6:
        return f"{n / 1e6:.2f} M"
    if n >= 1e3:
        return f"{n / 1e3:.1f} k"
    return str(n)


def time_left(eta: float | None) -> str:
    """'about 1:05 left', or 'estimating the time left' before the first steps."""
    return "estimating the time left" if eta is None else f"about {fmt_seconds(eta)} left"


def fmt_seconds(s: float | None) -> str:
    """Seconds as m:ss or h:mm:ss."""
    if s is None:
        return "unknown"
    s = int(round(s))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


def current_run_id() -> str | None:
    """The run this browser tab follows: ?run=ID in the address, else the newest active run."""
    rid = st.query_params.get("run")
    store = get_store()
    if rid:
        try:
            store.get(rid)
            return rid
        except FtcoreError:
            pass
    rec = latest_active_run(store)
    if rec is not None:
        return rec.run_id
    runs = store.list(limit=1)
    return runs[0].run_id if runs else None


def sidebar_status() -> None:
    """The shared sidebar's content: current choices and the status of the current run.

    Call inside a sidebar container (``app.py`` fills one after the page ran).
    """
    w = walk()
    weights = w.weights if w.weights in ("auto", "none") else ("local file" if w.weights else "file not given")
    st.caption("Your choices")
    st.markdown(
        f"- **Backbone:** `{w.backbone}`\n"
        f"- **Weights:** {weights}\n"
        f"- **Unfreeze:** {describe_unfreeze(w.unfreeze)}\n"
        f"- **Data:** {w.data_label or 'not chosen yet'}"
    )
    _sidebar_run()


@st.fragment(run_every=3)
def _sidebar_run() -> None:
    store = get_store()
    rec = latest_active_run(store)
    st.caption("Training")
    if rec is None:
        st.write("No run in progress.")
        return
    frac = rec.step / rec.total_steps if rec.total_steps else 0.0
    st.progress(min(frac, 1.0), text=f"{rec.phase or rec.status}: {frac:.0%}")
    st.caption(f"Run {rec.run_id}, {time_left(rec.eta_seconds)}")


def describe_unfreeze(spec: str) -> str:
    """A short description of an unfreeze choice."""
    if spec == "head":
        return "head only (linear probe)"
    if spec == "all":
        return "all layer groups"
    if spec.startswith("last:"):
        return f"last {spec[5:]} groups + head"
    if spec.startswith("groups:"):
        names = [g for g in spec[7:].split(",") if g]
        return f"{len(names)} groups ticked"
    return spec


def run_record(run_id: str):
    """The run's record, with a dead worker detected."""
    return refresh(get_store(), run_id)


def age(ts: float) -> str:
    """How long ago a Unix time was, in words."""
    d = time.time() - ts
    if d < 90:
        return f"{int(d)} s ago"
    if d < 5400:
        return f"{int(d / 60)} min ago"
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts))


if __name__ == "__main__":  # run as a script by Streamlit's pages/ folder mode (/common): see route_through_app
    route_through_app()
