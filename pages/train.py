"""Step 4: train the frozen baseline and the fine-tuned model; watch live curves."""

from __future__ import annotations

import json

import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from ftcore import (
    AUGMENT_PRESETS,
    CLASS_BALANCE,
    DEVICES,
    EARLY_STOPPING_METRICS,
    BackboneConfig,
    DataConfig,
    FreezeConfig,
    FtcoreError,
    RunConfig,
    TrainConfig,
    cancel_run,
    device_summary,
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
    init_state,
    load_config,
    run_record,
    time_left,
    widget_key,
)

init_state()
store = get_store()
st.title("4. Train")

LR_OPTIONS = [1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2]


def _options(options: list[float], current: float) -> list[float]:
    """Slider options with the current value (e.g. from a loaded configuration) among them."""
    return sorted(set(options) | {float(current)})


def learning_rates(train_cfg: TrainConfig) -> None:
    """The rate each layer group gets and the schedule over training, before training (ftcore.train.schedule)."""
    try:
        groups = cached_layer_groups(st.session_state["backbone"], int(st.session_state.get("n_classes") or 2))
        trainable = trainable_group_names(groups, st.session_state["unfreeze"])
    except FtcoreError as e:
        st.warning(f"Learning rates cannot be drawn: {e}")
        return
    with st.expander("Learning rates", expanded=True):
        left, right = st.columns(2)
        left.plotly_chart(rate_bars(group_peak_lrs(groups, trainable, train_cfg)), width="stretch")
        # 20 points per epoch: warm-up and unfreezing are counted in epochs, so the shape does not depend on
        # the number of steps, which the data's size sets.
        right.plotly_chart(schedule_lines(lr_schedule(groups, trainable, train_cfg, 20)), width="stretch")


COLORS = {"baseline": "#8A94A6", "finetuned": "#2E7D6B"}
NAMES = {"baseline": "frozen baseline", "finetuned": "fine-tuned"}


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


# --- load a saved configuration --------------------------------------------------
with st.expander("Load a configuration", icon=":material/upload_file:"):
    st.caption("Repeat a run: its backbone, layer choice, data and training settings become the choices here. "
               "The same file runs headless with `python -m ftcore train --config FILE`.")
    up = st.file_uploader("A configuration file (config.json)", type=["json"], key="config_upload")
    past = store.list(limit=50)
    pick = st.selectbox("Or the configuration of a past run", [""] + [r.run_id for r in past],
                        format_func=lambda r: r or "(choose a run)", key="config_run")
    if st.button("Load configuration", disabled=up is None and not pick):
        try:
            if up is not None:
                loaded = RunConfig.from_dict(json.loads(up.getvalue().decode("utf-8")))
            else:
                loaded = store.get(pick).config
        except (FtcoreError, ValueError) as e:
            st.error(f"This configuration cannot be loaded: {e}")
        else:
            load_config(loaded)
            st.toast("Configuration loaded.")
            st.rerun()

# --- settings and start ------------------------------------------------------
ready = st.session_state.get("data_dir") is not None
with st.container(border=True):
    st.markdown(
        f"**Backbone** `{st.session_state['backbone']}` · **weights** "
        f"{st.session_state['weights'] if st.session_state['weights'] in ('auto', 'none') else 'local file'} · "
        f"**unfreeze** {describe_unfreeze(st.session_state['unfreeze'])} · **data** "
        f"{st.session_state['data_label'] or 'not chosen yet'}"
    )
    c1, c2, c3, c4 = st.columns(4)
    epochs = c1.number_input("Epochs", 1, 1000, key=widget_key("epochs"), help="Passes over the training images.")
    batch = c2.number_input("Batch size", 1, 4096, key=widget_key("batch_size"), help="Images per step.")
    lr = c3.select_slider("Learning rate", options=_options(LR_OPTIONS, st.session_state["lr"]),
                          key=widget_key("lr"), format_func=lambda v: f"{v:g}",
                          help="Peak AdamW rate of the head per step; unfrozen backbone groups get less (see "
                               "Learning rates below). It decays by a cosine to zero.")
    # The demo digits are 32 px: 64 px trains in about a minute on a laptop CPU; other data gets 224.
    suggested = 64 if st.session_state.get("data_label") == "demo digits" else 224
    if st.session_state.get("img_size_suggested") != suggested:
        st.session_state["img_size_suggested"] = suggested
        st.session_state["img_size"] = suggested
        st.session_state["w_img_size"] = suggested
    img = c4.number_input("Image size (px)", 16, 1024, step=16, key=widget_key("img_size"),
                          help="Square input side. Smaller trains much faster; 224 suits most ImageNet backbones.")
    baseline = st.checkbox("Also train the frozen baseline (head only) for comparison", key=widget_key("baseline"))
    with st.expander("More settings"):
        m1, m2 = st.columns(2)
        lr_mode = m1.radio("Backbone learning rates", ["head and backbone", "layer-wise decay"],
                           key=widget_key("lr_mode"), horizontal=True,
                           help="Head and backbone: every unfrozen backbone group learns at a share of the head's "
                                "rate. Layer-wise decay: each group learns at a factor below the next one towards "
                                "the head (as in ELECTRA and BEiT fine-tuning).")
        if lr_mode == "layer-wise decay":
            decay = m2.slider("Layer decay", 0.05, 1.0, step=0.05, key=widget_key("layer_decay_value"),
                              help="A group d groups before the head learns at the head's rate × decay^d.")
            lr_scale = st.session_state["backbone_lr_scale"]
        else:
            decay = None
            lr_scale = m2.select_slider(
                "Backbone learning rate, as a share of the head's",
                options=_options([0.01, 0.03, 0.1, 0.3, 1.0], st.session_state["backbone_lr_scale"]),
                key=widget_key("backbone_lr_scale"),
                help="Pretrained layers need smaller steps than the new head (discriminative learning rates).")
        m3, m4, m5 = st.columns(3)
        warmup = m3.number_input("Warm-up epochs", 0.0, 999.0, step=0.5, key=widget_key("warmup_epochs"),
                                 help="The rate climbs linearly to its peak over these epochs, then decays.")
        unfreeze_after = m4.number_input(
            "Train the head alone first for (epochs)", 0, 999, key=widget_key("unfreeze_after"),
            help="Gradual unfreezing: the ticked groups start learning only after these epochs.")
        augment = m5.selectbox("Augmentation", list(AUGMENT_PRESETS), key=widget_key("augment"),
                               help="none: no augmentation; light: random crops of 50-100% and flips; standard: "
                                    "timm's ImageNet recipe with RandAugment. Validation images are never augmented.")
        m6, m7, m8 = st.columns(3)
        smoothing = m6.number_input("Label smoothing", 0.0, 0.5, step=0.05, key=widget_key("label_smoothing"))
        wd = m7.number_input("Weight decay", 0.0, 0.99, step=0.01, format="%.3f", key=widget_key("weight_decay"))
        seed = m8.number_input("Seed", 0, 2**32 - 1, key=widget_key("seed"),
                               help="The same seed and data give the same metrics on the CPU.")
        m9, m10, m11 = st.columns(3)
        patience = m9.number_input("Early stopping patience (epochs, 0 = off)", 0, 1000,
                                   key=widget_key("early_stopping_patience"),
                                   help="Stop when the metric has not improved for this many epochs; the best "
                                        "epoch's weights are kept.")
        metric = m10.selectbox("Early stopping watches", list(EARLY_STOPPING_METRICS),
                               key=widget_key("early_stopping_metric"))
        device = m11.selectbox("Device", list(DEVICES), key=widget_key("device"),
                               help="auto: an NVIDIA GPU (bfloat16 mixed precision where supported), else an Apple "
                                    "GPU, else the CPU.")
        update_bn = st.checkbox(
            "Let BatchNorm in unfrozen groups update its running statistics", key=widget_key("update_bn"),
            help="Off: the pretrained statistics are kept, which is steadier on small data sets. Frozen groups "
                 "never change.")
        b1, b2 = st.columns(2)
        feature_cache = b1.checkbox(
            "Compute the frozen layers once (much faster)", key=widget_key("feature_cache"),
            help="The frozen layers before the first unfrozen group give the same output every epoch, so each "
                 "image's output is computed once and training runs only the layers that learn. What it gives "
                 "up: random crops, flips and colour changes no longer vary between epochs, because they come "
                 "before those layers. Turn off to train with fresh augmentation every epoch.")
        class_balance = b2.selectbox(
            "Imbalanced classes", list(CLASS_BALANCE), key=widget_key("class_balance"),
            format_func=lambda v: {"none": "no correction", "loss": "class-weighted loss",
                                   "sampler": "class-balanced sampler"}[v],
            help="Class-weighted loss: each class's errors count in inverse proportion to its training images "
                 "(scikit-learn's balanced weights). Balanced sampler: batches draw every class equally often.")
    st.session_state.update(
        epochs=int(epochs), batch_size=int(batch), lr=float(lr), img_size=int(img), baseline=bool(baseline),
        lr_mode=lr_mode, backbone_lr_scale=float(lr_scale), warmup_epochs=float(warmup),
        unfreeze_after=int(unfreeze_after), augment=augment, label_smoothing=float(smoothing), weight_decay=float(wd),
        seed=int(seed), early_stopping_patience=int(patience), early_stopping_metric=metric, device=device,
        update_bn=bool(update_bn), feature_cache=bool(feature_cache),
        class_balance=class_balance, **({"layer_decay_value": float(decay)} if decay is not None else {}))
    cfg, cfg_error = None, None
    try:
        train_cfg = TrainConfig(
            epochs=int(epochs), batch_size=int(batch), lr=float(lr), img_size=int(img), baseline=bool(baseline),
            backbone_lr_scale=float(lr_scale), update_bn=bool(update_bn), seed=int(seed), weight_decay=float(wd),
            layer_decay=decay, warmup_epochs=float(warmup), unfreeze_after=int(unfreeze_after), augment=augment,
            label_smoothing=float(smoothing), early_stopping_patience=int(patience), early_stopping_metric=metric,
            device=device, feature_cache=bool(feature_cache), class_balance=class_balance)
        if ready:
            cfg = RunConfig(
                backbone=BackboneConfig(st.session_state["backbone"], st.session_state["weights"]),
                freeze=FreezeConfig(st.session_state["unfreeze"]),
                data=DataConfig(st.session_state["data_dir"], st.session_state["val_dir"],
                                st.session_state["val_fraction"]),
                train=train_cfg)
    except FtcoreError as e:
        train_cfg, cfg_error = None, str(e)
        st.error(cfg_error)
    try:
        st.caption(f"Device for this run: {device_summary(device)}.")
    except FtcoreError as e:
        st.warning(str(e))
    if train_cfg is not None:
        learning_rates(train_cfg)
    if not ready:
        st.info("Choose the images in step 3 first.")
        st.page_link("pages/data.py", label="Go to 3. Data", icon=":material/arrow_back:")
    busy = latest_active_run(store)
    # The live view below reruns the page when this run ends, so that Start is enabled again.
    st.session_state["busy_when_drawn"] = busy.run_id if busy is not None else None
    if busy is not None:
        if busy.run_id == current_run_id():
            st.info("The run below is training. One run at a time shares this machine's processors: the next "
                    "one can start when it ends (or after Cancel).")
        else:
            st.info(f"Run {busy.run_id} is still training. One run at a time shares this machine's processors: "
                    "cancel it below or wait for it to finish.")
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


# --- the run this tab follows ---------------------------------------------------
@st.fragment(run_every=1.5)
def live(run_id: str) -> None:
    try:
        rec = run_record(run_id)
    except FtcoreError as e:
        st.error(str(e))
        return
    if not rec.active and st.session_state.get("busy_when_drawn") == run_id:
        # The run ended since the page was drawn: redraw the whole page so that Start is enabled again.
        st.session_state["busy_when_drawn"] = None
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
    elif rec.status == "finished":
        st.success("Finished: both models are trained on the same split.")
        st.page_link("pages/compare.py", label="See what fine-tuning bought: 5. Compare",
                     icon=":material/arrow_forward:")
    elif rec.status == "cancelled":
        st.warning("Cancelled. The metrics of finished epochs are kept.")
    else:
        st.error(f"Failed: {rec.error}")
    if rec.info.get("device"):
        st.caption(f"Device: {rec.info.get('device_text', rec.info['device'])} · weights: {rec.info.get('weights', '')} · classes: "
                   f"{len(rec.info.get('class_names', []))}")
    for model in ("baseline", "finetuned"):
        pre = rec.info.get(f"{model}_prefix")
        if pre and pre.get("used"):
            st.caption(f"{NAMES[model].capitalize()}: the frozen layers up to `{pre['entry']}` were computed once "
                       f"({pre['bytes'] / 1e6:.1f} MB, {pre['seconds']:.1f} s); only the layers from there on run "
                       "each epoch, and augmentation before them does not vary between epochs.")
        elif pre:
            st.caption(f"{NAMES[model].capitalize()}: every layer runs each epoch ({pre['reason']}).")
    skipped = rec.info.get("skipped") or []
    if skipped:
        with st.expander(f"{len(skipped)} files were left out"):
            st.dataframe(pd.DataFrame(skipped), hide_index=True)
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
    stats = stats[stats["model"] == "finetuned"]
    if not stats.empty:
        st.markdown("**What fine-tuning did to each layer group** (per epoch: how far its weights moved from the "
                    "pretrained ones, its gradient norm, and the learning rate it got)")
        st.plotly_chart(layer_panels(stats), width="stretch", key=f"layers-{run_id}")


rid = current_run_id()
if rid:
    live(rid)
    runs = store.list(limit=20)
    if len(runs) > 1:
        with st.expander("Earlier runs"):
            pick = st.selectbox("Show run", [r.run_id for r in runs], index=[r.run_id for r in runs].index(rid),
                                format_func=lambda r: f"{r} ({next(x.status for x in runs if x.run_id == r)})")
            if pick != rid:
                st.query_params["run"] = pick
                st.rerun()
else:
    st.caption("No runs yet.")
