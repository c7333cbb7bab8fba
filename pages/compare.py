"""Step 5: what fine-tuning bought, on the same validation images."""

from __future__ import annotations

import os

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

from ftcore import FtcoreError, ModelRole, RunStatus, compare_run
from pages.common import age, current_run_id, get_store, route_through_app, step


def render() -> None:
    """Step 5: pick a run; its metrics, recall per class, confusion matrices, flipped images, weight change."""
    store = get_store()
    st.title("5. Compare")
    st.write("The frozen baseline (pretrained backbone frozen, only a new head trained) against the fine-tuned "
             "model, on the same validation images.")
    runs = [r for r in store.list(limit=50) if store.has_predictions(r.run_id, ModelRole.FINETUNED)]
    if not runs:
        st.info("No run has finished a fine-tuned epoch yet. Train one in step 4.")
        st.page_link(step("train"), label="Go to 4. Train", icon=":material/arrow_back:")
        return
    ids = [r.run_id for r in runs]
    by_id = {r.run_id: r for r in runs}
    want = current_run_id()
    run_id = st.selectbox(
        "Run", ids, index=ids.index(want) if want in ids else 0,
        format_func=lambda r: (f"{r}: {by_id[r].config.backbone.name} on "
                               f"{os.path.basename(by_id[r].config.data.train_dir.rstrip('/'))}, unfreeze "
                               f"{by_id[r].config.freeze.unfreeze}, {by_id[r].status} {age(by_id[r].updated)}"))
    rec = store.get(run_id)
    try:
        cmp = compare_run(store, run_id)
    except FtcoreError as e:
        st.error(str(e))
        return
    _overview(rec, cmp)
    _per_class(cmp)
    _confusion(cmp)
    if cmp.baseline is not None:
        _flipped(cmp)
    _weight_change(store, run_id)


def _overview(rec, cmp) -> None:
    """What the run is, and the overall metrics of both models."""
    if rec.status != RunStatus.FINISHED:
        st.warning(f"This run is {rec.status}; the numbers are from its last finished epoch.")
    if cmp.baseline is None:
        st.info("This run trained no frozen baseline; only the fine-tuned model is shown.")
    majority = rec.facts.majority_accuracy
    unfrozen = ", ".join(rec.facts.model(ModelRole.FINETUNED).trainable_groups)
    st.caption(f"{int(cmp.finetuned.support.sum())} validation images, {len(cmp.class_names)} classes · backbone "
               f"`{rec.config.backbone.name}` · unfrozen: {unfrozen}"
               + (f" · always answering the largest class would score {majority:.1%} accuracy"
                  if majority is not None else ""))
    for warning in rec.facts.data_warnings:
        st.warning(warning)
    cols = st.columns(3)
    for col, (metric, row) in zip(cols, cmp.overall.iterrows()):
        delta = None if pd.isna(row["change"]) else f"{row['change'] * 100:+.1f} points vs baseline"
        col.metric(f"Fine-tuned {metric}", f"{row['fine-tuned']:.1%}", delta=delta)
        if not pd.isna(row["baseline"]):
            col.caption(f"Frozen baseline: {row['baseline']:.1%}")


def _per_class(cmp) -> None:
    st.subheader("Recall per class")
    pc = cmp.per_class
    long = pd.concat([
        pd.DataFrame({"class": pc["class"], "model": "frozen baseline", "recall": pc["recall baseline"]}),
        pd.DataFrame({"class": pc["class"], "model": "fine-tuned", "recall": pc["recall fine-tuned"]}),
    ]).dropna()
    fig = px.bar(long, x="class", y="recall", color="model", barmode="group",
                 color_discrete_map={"frozen baseline": "#8A94A6", "fine-tuned": "#2E7D6B"})
    fig.update_layout(yaxis_range=[0, 1.02], height=360, margin=dict(l=0, r=0, t=10, b=0), legend_title_text="")
    fig.update_xaxes(type="category")
    st.plotly_chart(fig, width="stretch")
    with st.expander("Precision, recall and F1 per class (table)"):
        st.dataframe(pc.style.format({c: "{:.3f}" for c in pc.columns if c not in ("class", "support")}),
                     hide_index=True, width="stretch")


def confusion_fig(cm, class_names, title: str) -> go.Figure:
    """A confusion matrix as a heatmap: rows the true class, columns the predicted one, cells image counts."""
    names = [str(c) for c in class_names]
    f = px.imshow(cm, x=names, y=names, text_auto=True, color_continuous_scale="Teal", aspect="equal",
                  labels=dict(x="predicted", y="true", color="images"))
    f.update_layout(title=title, height=420, margin=dict(l=0, r=0, t=40, b=0), coloraxis_showscale=False)
    f.update_xaxes(type="category")
    f.update_yaxes(type="category")
    return f


def _confusion(cmp) -> None:
    st.subheader("Confusion matrices")
    st.caption("Rows: true class; columns: predicted class; cells: number of validation images.")
    c1, c2 = st.columns(2)
    if cmp.baseline is not None:
        c1.plotly_chart(confusion_fig(cmp.baseline.confusion, cmp.class_names, "Frozen baseline"), width="stretch")
    c2.plotly_chart(confusion_fig(cmp.finetuned.confusion, cmp.class_names, "Fine-tuned"), width="stretch")


def _flipped(cmp) -> None:
    """The validation images whose prediction changed between the two models."""
    fixed = int((cmp.flipped["fixed"] == True).sum())  # noqa: E712 - column holds True/False/None
    broken = int((cmp.flipped["fixed"] == False).sum())  # noqa: E712
    st.subheader("Images whose prediction changed")
    other = len(cmp.flipped) - fixed - broken
    st.write(f"Fine-tuning fixed **{fixed}** validation images the baseline got wrong and broke **{broken}** it "
             f"got right; **{other}** changed from one wrong class to another.")
    if len(cmp.flipped):
        flipped = cmp.flipped.copy()
        root = os.path.commonpath(list(flipped["file"])) if len(flipped) > 1 else os.path.dirname(flipped["file"][0])
        flipped["file"] = [os.path.relpath(f, root) for f in flipped["file"]]
        flipped["fixed"] = [{True: "fixed", False: "broken"}.get(v, "wrong either way") for v in flipped["fixed"]]
        flipped = flipped.rename(columns={"fixed": "effect of fine-tuning"})
        st.caption(f"Paths are relative to {root}.")
        st.dataframe(flipped, hide_index=True, width="stretch")


def _weight_change(store, run_id: str) -> None:
    """How far each layer group of the fine-tuned model moved from its pretrained weights, after the last epoch."""
    stats = store.layer_stats(run_id)
    stats = stats[stats["model"] == ModelRole.FINETUNED]
    if stats.empty:
        return
    last = stats[stats["epoch"] == stats["epoch"].max()].sort_values("group_index")
    st.subheader("How far each layer group's weights moved")
    st.caption(f"After epoch {int(last['epoch'].iloc[0])} of the fine-tuned model: ‖w − w₀‖ / ‖w₀‖, the change of "
               "the group's weights relative to the pretrained ones (the new head starts from random weights). "
               "Frozen groups stay at 0.")
    last = last.assign(trainable=last["trainable"].map({True: "unfrozen", False: "frozen"}))
    fig = px.bar(last, x="layer_group", y="relative_change", color="trainable",
                 color_discrete_map={"unfrozen": "#2E7D6B", "frozen": "#8A94A6"},
                 labels={"layer_group": "layer group (input → output)", "relative_change": "relative weight change",
                         "trainable": "group"})
    fig.update_layout(height=340, margin=dict(l=0, r=0, t=10, b=0))
    fig.update_xaxes(type="category")
    st.plotly_chart(fig, width="stretch")


if __name__ == "__main__":  # run as a script by Streamlit's pages/ folder mode: see pages.common
    route_through_app()
