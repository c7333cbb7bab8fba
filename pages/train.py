"""Step 4: train the frozen baseline and the fine-tuned model; watch live curves."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from ftcore import (
    FtcoreError,
    ModelRole,
    RunConfig,
    RunStatus,
    TrainConfig,
    cancel_run,
    device_summary,
    field_spec,
    group_peak_lrs,
    latest_active_run,
    lr_schedule,
    resolve_weights,
    start_run,
    trainable_group_names,
)
from pages.charts import layer_panels, rate_bars, schedule_lines
from pages.common import (
    cached_layer_groups,
    current_run_id,
    describe_unfreeze,
    get_store,
    route_through_app,
    run_record,
    step,
    time_left,
)
from pages.walk import Walk, load_config, setting_input, walk, widget_key

LR_OPTIONS = [1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2]
LR_SCALE_OPTIONS = [0.01, 0.03, 0.1, 0.3, 1.0]
BALANCE_WORDS = {"none": "no correction", "loss": "class-weighted loss", "sampler": "class-balanced sampler"}


def render() -> None:
    """Step 4: load a configuration, set the training settings, start a run and follow it."""
    w = walk()
    store = get_store()
    st.title("4. Train")
    _load_section(store)
    ready = w.data_dir is not None
    with st.container(border=True):
        st.markdown(
            f"**Backbone** `{w.backbone}` · **weights** "
            f"{w.weights if w.weights in ('auto', 'none') else 'local file'} · "
            f"**unfreeze** {describe_unfreeze(w.unfreeze)} · **data** {w.data_label or 'not chosen yet'}"
        )
        train_cfg, cfg = _settings(w, ready)
        busy = latest_active_run(store)
        # The live view below reruns the page when this run ends, so that Start is enabled again.
        w.busy_when_drawn = busy.run_id if busy is not None else None
        # One container for what comes and goes (errors, notices), so that the buttons below keep their place in
        # the page: a rerun then updates the Start button instead of drawing a second one beside the stale one.
        with st.container():
            _notices(w, train_cfg, ready, busy)
        b1, b2 = st.columns([1, 1])
        start = b1.button("Start training", type="primary", disabled=not ready or busy is not None or cfg is None)
        if cfg is not None:
            b2.download_button("Download this configuration", cfg.to_json(), file_name="config.json",
                               mime="application/json", help="Rerun it with `python -m ftcore train --config FILE`.")
    if start and cfg is not None:
        try:
            resolve_weights(cfg.backbone.name, cfg.backbone.weights)  # refuse a missing weights file now
            run_id = start_run(cfg, store)
        except FtcoreError as e:
            st.error(str(e))
        else:
            st.query_params["run"] = run_id
            st.rerun()
    _follow(store)


def _notices(w: Walk, train_cfg: TrainConfig | None, ready: bool, busy) -> None:
    """The device, the learning rates, and what stands in the way of a start (no data, a run training)."""
    try:
        st.caption(f"Device for this run: {device_summary(w.train['device'])}.")
    except FtcoreError as e:
        st.warning(str(e))
    if train_cfg is not None:
        learning_rates(w, train_cfg)
    if not ready:
        st.info("Choose the images in step 3 first.")
        st.page_link(step("data"), label="Go to 3. Data", icon=":material/arrow_back:")
    if busy is not None:
        if busy.run_id == current_run_id():
            st.info("The run below is training. One run at a time shares this machine's processors: the next "
                    "one can start when it ends (or after Cancel).")
        else:
            st.info(f"Run {busy.run_id} is still training. One run at a time shares this machine's processors: "
                    "cancel it below or wait for it to finish.")


def _load_section(store) -> None:
    """Repeat a run: a configuration file or a past run's configuration becomes the walk's choices."""
    with st.expander("Load a configuration", icon=":material/upload_file:"):
        st.caption("Repeat a run: its backbone, layer choice, data and training settings become the choices here. "
                   "The same file runs headless with `python -m ftcore train --config FILE`.")
        up = st.file_uploader("A configuration file (config.json)", type=["json"], key="config_upload")
        past = store.list(limit=50)
        pick = st.selectbox("Or the configuration of a past run", [""] + [r.run_id for r in past],
                            format_func=lambda r: r or "(choose a run)", key="config_run")
        if st.button("Load configuration", disabled=up is None and not pick):
            try:
                loaded = RunConfig.from_json(up.getvalue(), up.name) if up is not None else store.get(pick).config
            except FtcoreError as e:
                st.error(f"This configuration cannot be loaded: {e}")
            else:
                load_config(loaded)
                st.toast("Configuration loaded.")
                st.rerun()


def _options(options: list[float], current: float) -> list[float]:
    """Slider options with the current value (e.g. from a loaded configuration) among them."""
    return sorted(set(options) | {float(current)})


def _settings(w: Walk, ready: bool) -> tuple[TrainConfig | None, RunConfig | None]:
    """The training settings' widgets; the configurations they make, or None (and the error shown)."""
    c1, c2, c3, c4 = st.columns(4)
    setting_input(c1, "epochs")
    setting_input(c2, "batch_size")
    setting_input(c3, "lr", "select_slider", options=_options(LR_OPTIONS, w.train["lr"]),
                  format_func=lambda v: f"{v:g}")
    # The demo digits are 32 px: 64 px trains in about a minute on a laptop CPU; other data gets 224.
    suggested = 64 if w.data_label == "demo digits" else 224
    if w.img_size_suggested != suggested:
        w.img_size_suggested = w.train["img_size"] = st.session_state["w_img_size"] = suggested
    setting_input(c4, "img_size", step=16)
    setting_input(st, "baseline", "checkbox")
    with st.expander("More settings"):
        _more_settings(w)
    with st.container():  # a refusal comes and goes here without moving what follows
        try:
            return TrainConfig(**w.train), (w.run_config() if ready else None)
        except FtcoreError as e:
            st.error(str(e))
            return None, None


def _more_settings(w: Walk) -> None:
    m1, m2 = st.columns(2)
    w.lr_mode = m1.radio("Backbone learning rates", ["head and backbone", "layer-wise decay"],
                         key=widget_key("lr_mode", w.lr_mode), horizontal=True,
                         help="Head and backbone: every unfrozen backbone group learns at a share of the head's "
                              "rate. Layer-wise decay: each group learns at a factor below the next one towards "
                              "the head (as in ELECTRA and BEiT fine-tuning).")
    if w.lr_mode == "layer-wise decay":
        spec = field_spec(TrainConfig, "layer_decay")
        lo, hi = spec.widget_range(0.05)
        w.layer_decay_value = float(m2.slider(spec.label, lo, hi, step=0.05,
                                              key=widget_key("layer_decay_value", w.layer_decay_value),
                                              help="A group d groups before the head learns at the head's rate "
                                                   "× decay^d."))
        w.train["layer_decay"] = w.layer_decay_value
    else:
        w.train["layer_decay"] = None
        setting_input(m2, "backbone_lr_scale", "select_slider",
                      options=_options(LR_SCALE_OPTIONS, w.train["backbone_lr_scale"]))
    m3, m4, m5 = st.columns(3)
    setting_input(m3, "warmup_epochs", step=0.5)
    setting_input(m4, "unfreeze_after")
    setting_input(m5, "augment", "selectbox")
    m6, m7, m8 = st.columns(3)
    setting_input(m6, "label_smoothing", step=0.05)
    setting_input(m7, "weight_decay", step=0.01, format="%.3f")
    setting_input(m8, "seed")
    m9, m10, m11 = st.columns(3)
    setting_input(m9, "early_stopping_patience")
    setting_input(m10, "early_stopping_metric", "selectbox")
    setting_input(m11, "device", "selectbox")
    setting_input(st, "update_bn", "checkbox")
    b1, b2 = st.columns(2)
    setting_input(b1, "feature_cache", "checkbox")
    setting_input(b2, "class_balance", "selectbox", format_func=BALANCE_WORDS.get)


def learning_rates(w: Walk, train_cfg: TrainConfig) -> None:
    """The rate each layer group gets and the schedule over training, before training (ftcore.train.schedule)."""
    try:
        groups = cached_layer_groups(w.backbone, int(w.n_classes or 2))
        trainable = trainable_group_names(groups, w.unfreeze)
    except FtcoreError as e:
        st.warning(f"Learning rates cannot be drawn: {e}")
        return
    with st.expander("Learning rates", expanded=True):
        left, right = st.columns(2)
        left.plotly_chart(rate_bars(group_peak_lrs(groups, trainable, train_cfg)), width="stretch")
        # 20 points per epoch: warm-up and unfreezing are counted in epochs, so the shape does not depend on
        # the number of steps, which the data's size sets.
        right.plotly_chart(schedule_lines(lr_schedule(groups, trainable, train_cfg, 20)), width="stretch")


COLORS = {ModelRole.BASELINE: "#8A94A6", ModelRole.FINETUNED: "#2E7D6B"}
NAMES = {ModelRole.BASELINE: "frozen baseline", ModelRole.FINETUNED: "fine-tuned"}


def curves(epochs: pd.DataFrame) -> go.Figure:
    """Loss, accuracy and macro recall per epoch; both models, train dashed, validation solid."""
    metrics = [("loss", "loss"), ("accuracy", "accuracy"), ("macro_recall", "macro recall")]
    fig = make_subplots(rows=1, cols=3, subplot_titles=[m[1] for m in metrics])
    for col, (key, _) in enumerate(metrics, start=1):
        for model, df in epochs.groupby("model"):
            for split, dash in (("train", "dash"), ("val", "solid")):
                fig.add_trace(go.Scatter(
                    x=df["epoch"], y=df[f"{split}_{key}"], mode="lines+markers",
                    name=f"{NAMES.get(model, model)}, {'training' if split == 'train' else 'validation'}",
                    legendgroup=f"{model}-{split}", showlegend=col == 1,
                    line=dict(color=COLORS.get(model), dash=dash)), row=1, col=col)
        fig.update_xaxes(title_text="epoch", dtick=1, row=1, col=col)
        if key != "loss":
            fig.update_yaxes(range=[0, 1.02], row=1, col=col)
    fig.update_layout(height=380, margin=dict(l=0, r=0, t=40, b=0), legend=dict(orientation="h", y=-0.25))
    return fig


# --- the run this tab follows ---------------------------------------------------
@st.fragment(run_every=1.5)
def live(run_id: str) -> None:
    """A run's progress, curves and what it did to each layer group, redrawn every 1.5 s from the run store."""
    store = get_store()
    try:
        rec = run_record(run_id)
    except FtcoreError as e:
        st.error(str(e))
        return
    w = walk()
    if not rec.active and w.busy_when_drawn == run_id:
        # The run ended since the page was drawn: redraw the whole page so that Start is enabled again.
        w.busy_when_drawn = None
        st.rerun()
    st.subheader(f"Run {run_id}")
    c = rec.config
    st.caption(
        f"`{c.backbone.name}` · weights {c.backbone.weights if c.backbone.weights in ('auto', 'none') else 'from file'}"
        f" · unfreeze {describe_unfreeze(c.freeze.unfreeze)} · data `{c.data.train_dir}`"
        f"{f' + `{c.data.val_dir}`' if c.data.val_dir else ''} · {c.train.epochs} epochs · batch {c.train.batch_size}"
        f" · learning rate {c.train.lr:g} · {c.train.img_size or 'default'} px"
        f"{'' if c.train.baseline else ' · no baseline'}"
    )
    frac = rec.step / rec.total_steps if rec.total_steps else 0.0
    if rec.active:
        st.progress(min(frac, 1.0), text=f"{rec.message or rec.status} · {frac:.0%} · {time_left(rec.eta_seconds)}")
        if st.button("Cancel", icon=":material/stop:", help="Stops before the next batch; finished epochs are kept."):
            cancel_run(store, run_id)
            st.toast("Cancelling: the trainer stops before its next batch.")
    elif rec.status == RunStatus.FINISHED:
        st.success("Finished: both models are trained on the same split.")
        st.page_link(step("compare"), label="See what fine-tuning bought: 5. Compare",
                     icon=":material/arrow_forward:")
    elif rec.status == RunStatus.CANCELLED:
        st.warning("Cancelled. The metrics of finished epochs are kept.")
    else:
        st.error(f"Failed: {rec.error}")
    facts = rec.facts
    if facts.device:
        st.caption(f"Device: {facts.device_text or facts.device} · weights: {facts.weights} · "
                   f"classes: {len(facts.class_names)}")
    for role in ModelRole:
        pre = facts.model(role).prefix
        if pre and pre.used:
            st.caption(f"{NAMES[role].capitalize()}: the frozen layers up to `{pre.entry}` were computed once "
                       f"({pre.bytes / 1e6:.1f} MB, {pre.seconds:.1f} s); only the layers from there on run "
                       "each epoch, and augmentation before them does not vary between epochs.")
        elif pre:
            st.caption(f"{NAMES[role].capitalize()}: every layer runs each epoch ({pre.reason}).")
    if facts.skipped:
        with st.expander(f"{len(facts.skipped)} files were left out"):
            st.dataframe(pd.DataFrame([p.to_dict() for p in facts.skipped]), hide_index=True)
    ep = store.epochs(run_id)
    if ep.empty:
        st.caption("Curves appear after the first epoch.")
    else:
        st.plotly_chart(curves(ep), width="stretch", key=f"curves-{run_id}")
        last = ep.sort_values("epoch").groupby("model").tail(1).set_index("model")
        cols = st.columns(len(last))
        for col, (model, row) in zip(cols, last.iterrows()):
            col.metric(f"{NAMES.get(model, model)}: validation accuracy (epoch {int(row['epoch'])})",
                       f"{row['val_accuracy']:.1%}",
                       help=f"macro recall {row['val_macro_recall']:.1%}, {row['images_per_second']:.1f} "
                            "training images per second")
    stats = store.layer_stats(run_id)
    stats = stats[stats["model"] == ModelRole.FINETUNED]
    if not stats.empty:
        st.markdown("**What fine-tuning did to each layer group** (per epoch: how far its weights moved from the "
                    "pretrained ones, its gradient norm, and the learning rate it got)")
        st.plotly_chart(layer_panels(stats), width="stretch", key=f"layers-{run_id}")


def _follow(store) -> None:
    """The run this tab follows, live, and a way to show an earlier one."""
    rid = current_run_id()
    if not rid:
        st.caption("No runs yet.")
        return
    live(rid)
    runs = store.list(limit=20)
    if len(runs) > 1:
        with st.expander("Earlier runs"):
            pick = st.selectbox("Show run", [r.run_id for r in runs], index=[r.run_id for r in runs].index(rid),
                                format_func=lambda r: f"{r} ({next(x.status for x in runs if x.run_id == r)})")
            if pick != rid:
                st.query_params["run"] = pick
                st.rerun()


if __name__ == "__main__":  # run as a script by Streamlit's pages/ folder mode: see pages.common
    route_through_app()
