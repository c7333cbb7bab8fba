"""Step 4: train the frozen baseline and the fine-tuned model; watch live curves."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from ftcore.backbones import resolve_weights
from ftcore.config import BackboneConfig, DataConfig, FreezeConfig, RunConfig, TrainConfig
from ftcore.errors import FtcoreError
from ftcore.jobs import cancel_run, start_run
from ftcore.jobs import latest_active_run
from pages.common import (current_run_id, describe_unfreeze, get_store, init_state, run_record, time_left,
                          widget_key)

init_state()
store = get_store()
st.title("4. Train")

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
    for k, v in (("epochs", 3), ("batch_size", 32), ("lr", 1e-3)):
        st.session_state.setdefault(k, v)
    epochs = c1.number_input("Epochs", 1, 200, key=widget_key("epochs"), help="Passes over the training images.")
    batch = c2.number_input("Batch size", 1, 1024, key=widget_key("batch_size"), help="Images per step.")
    lr = c3.select_slider("Learning rate", options=[1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2],
                          key=widget_key("lr"), format_func=lambda v: f"{v:g}",
                          help="Peak AdamW rate of the head per step; unfrozen backbone groups get a tenth of it. "
                               "It decays by a cosine to zero.")
    # The demo digits are 32 px: 64 px trains in about a minute on a laptop CPU; other data gets 224.
    suggested = 64 if st.session_state.get("data_label") == "demo digits" else 224
    if st.session_state.get("img_size_suggested") != suggested:
        st.session_state["img_size_suggested"] = suggested
        st.session_state["img_size"] = suggested
        st.session_state["w_img_size"] = suggested
    img = c4.number_input("Image size (px)", 16, 1024, step=16, key=widget_key("img_size"),
                          help="Square input side. Smaller trains much faster; 224 suits most ImageNet backbones.")
    baseline = st.checkbox("Also train the frozen baseline (head only) for comparison", value=True)
    with st.expander("More settings"):
        lr_scale = st.select_slider(
            "Backbone learning rate, as a share of the head's", options=[0.01, 0.03, 0.1, 0.3, 1.0], value=0.1,
            help="Pretrained layers need smaller steps than the new head (discriminative learning rates).")
        update_bn = st.checkbox(
            "Let BatchNorm in unfrozen groups update its running statistics", value=False,
            help="Off: the pretrained statistics are kept, which is steadier on small data sets. Frozen groups "
                 "never change.")
        feature_cache = st.checkbox(
            "Compute the frozen layers once (much faster)", value=True,
            help="The frozen layers before the first unfrozen group give the same output every epoch, so each "
                 "image's output is computed once and training runs only the layers that learn. What it gives "
                 "up: random crops, flips and colour changes no longer vary between epochs, because they come "
                 "before those layers. Turn off to train with fresh augmentation every epoch.")
    st.session_state.update(epochs=int(epochs), batch_size=int(batch), lr=float(lr), img_size=int(img))
    if not ready:
        st.info("Choose the images in step 3 first.")
        st.page_link("pages/data.py", label="Go to 3. Data", icon=":material/arrow_back:")
    busy = latest_active_run(store)
    if busy is not None:
        st.info(f"Run {busy.run_id} is still training. One run at a time shares this machine's processors: "
                "cancel it below or wait for it to finish.")
    start = st.button("Start training", type="primary", disabled=not ready or busy is not None)

if start:
    try:
        cfg = RunConfig(
            backbone=BackboneConfig(st.session_state["backbone"], st.session_state["weights"]),
            freeze=FreezeConfig(st.session_state["unfreeze"]),
            data=DataConfig(st.session_state["data_dir"], st.session_state["val_dir"], st.session_state["val_fraction"]),
            train=TrainConfig(epochs=int(epochs), batch_size=int(batch), lr=float(lr), img_size=int(img),
                              baseline=baseline, backbone_lr_scale=float(lr_scale), update_bn=bool(update_bn),
                              feature_cache=bool(feature_cache)),
        )
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
        st.caption(f"Device: {rec.info['device']} · weights: {rec.info.get('weights', '')} · classes: "
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
