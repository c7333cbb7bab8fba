"""Shared UI helpers for the pages: the run store, the walk's state, the sidebar.

UI only: everything computed comes from ftcore.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import streamlit as st
from streamlit.runtime.pages_manager import PagesManager

from ftcore import DEFAULT_BACKBONE, FtcoreError, RunConfig, RunStore, TrainConfig, latest_active_run, refresh

_APP = str(Path(__file__).resolve().parent.parent / "app.py")

#: The walk's choices, kept across pages in st.session_state (not widget keys,
#: which Streamlit forgets when a page stops showing the widget).
DEFAULTS = {
    "backbone": DEFAULT_BACKBONE,
    "weights": "auto",
    "unfreeze": "all",
    "data_dir": None,
    "val_dir": None,
    "val_fraction": 0.2,
    "data_label": None,
}
#: Training settings of the train page, walk state too (defaults from TrainConfig); the learning-rate mode and
#: the layer-decay value are the two widgets behind TrainConfig.layer_decay.
TRAIN_FIELDS = ("epochs", "batch_size", "lr", "backbone_lr_scale", "update_bn", "baseline", "seed", "weight_decay",
                "warmup_epochs", "unfreeze_after", "augment", "label_smoothing", "early_stopping_patience",
                "early_stopping_metric", "device", "feature_cache", "class_balance")
DEFAULTS.update({k: getattr(TrainConfig(), k) for k in TRAIN_FIELDS})
DEFAULTS.update(lr_mode="head and backbone", layer_decay_value=0.75)


class PageHalt(Exception):
    """Raised by :func:`halt`; ``app.py`` catches it after the page and still draws the sidebar."""


def halt() -> None:
    """End the page here, like ``st.stop()``, but let ``app.py`` finish the shared sidebar.

    ``st.stop()`` stops the whole script run, so nothing drawn after the page
    (the sidebar) would appear. A page run without ``app.py`` (Streamlit's
    own page runner) falls back to ``st.stop()``.
    """
    if _routed():
        raise PageHalt()
    st.stop()


def _routed() -> bool:
    """Whether this script run goes through ``app.py`` (it is on the call stack)."""
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_filename == _APP:
            return True
        frame = frame.f_back
    return False


def ensure_router() -> None:
    """Send a page that Streamlit ran on its own back through ``app.py``'s navigation.

    A fresh Streamlit server treats a ``pages/`` folder beside the main script
    as old-style multipage navigation until ``st.navigation`` has run once, so
    the first request for e.g. ``/train?run=...`` after a restart would run
    the page script alone (no router, no sidebar, every file of ``pages/``
    listed). Clearing that flag and rerunning lets ``app.py`` route it.
    """
    if not PagesManager.uses_pages_directory or _routed():
        return  # routed by app.py already; its st.navigation call clears the flag
    PagesManager.uses_pages_directory = False
    if not st.session_state.get("_rerouted"):  # once per session: never loop, never eat a later click
        st.session_state["_rerouted"] = True
        st.rerun()


def init_state() -> None:
    """Fill missing walk state with defaults.

    A new browser session (a refreshed tab) that follows a run (``?run=ID``)
    starts from that run's choices, so the form matches the run shown.
    """
    ensure_router()
    if "_walk_initialised" not in st.session_state:
        st.session_state["_walk_initialised"] = True
        rid = st.query_params.get("run")
        if rid:
            try:
                cfg = get_store().get(rid).config
            except FtcoreError:
                cfg = None
            if cfg is not None:
                load_config(cfg)
    for k, v in DEFAULTS.items():
        st.session_state.setdefault(k, v)


def load_config(cfg: RunConfig) -> None:
    """Make a run configuration the walk's choices (and the values of the widgets that edit them)."""
    t = cfg.train
    state = dict(
        backbone=cfg.backbone.name, weights=cfg.backbone.weights, unfreeze=cfg.freeze.unfreeze,
        data_dir=cfg.data.train_dir, val_dir=cfg.data.val_dir, val_fraction=cfg.data.val_fraction,
        data_label=cfg.data.train_dir, data_source="folder", folder_path=cfg.data.train_dir,
        folder_val=cfg.data.val_dir or "", img_size=t.img_size or 224, img_size_suggested=224,
        lr_mode="layer-wise decay" if t.layer_decay is not None else "head and backbone",
        layer_decay_value=t.layer_decay if t.layer_decay is not None else 0.75,
        **{k: getattr(t, k) for k in TRAIN_FIELDS},
    )
    for k in ("lr", "backbone_lr_scale", "weight_decay", "warmup_epochs", "label_smoothing", "layer_decay_value"):
        state[k] = float(state[k])  # number widgets refuse an int where their bounds are floats
    st.session_state.update(state)
    for k, v in state.items():  # widgets keyed by widget_key() show the loaded values
        st.session_state[f"w_{k}"] = v
    for k in [k for k in st.session_state if str(k).startswith("tick::")]:
        del st.session_state[k]  # the layers page ticks again from the loaded choice


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
    weights = st.session_state["weights"]
    st.caption("Your choices")
    st.markdown(
        f"- **Backbone:** `{st.session_state['backbone']}`\n"
        f"- **Weights:** {weights if weights in ('auto', 'none') else ('local file' if weights else 'file not given')}\n"
        f"- **Unfreeze:** {describe_unfreeze(st.session_state['unfreeze'])}\n"
        f"- **Data:** {st.session_state['data_label'] or 'not chosen yet'}"
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


def widget_key(name: str) -> str:
    """Key of the widget that edits walk state `name`, seeded from that state when absent.

    Widgets get a key and no ``value=``/``index=`` that changes between reruns
    (a changing default gives the widget a new identity, which drops the
    user's next change). Streamlit forgets a widget's key when its page is
    left, so it is seeded again from the walk state on return; the page
    copies the widget's value back into the walk state.
    """
    wk = f"w_{name}"
    if wk not in st.session_state:
        st.session_state[wk] = st.session_state.get(name, DEFAULTS.get(name))
    return wk
