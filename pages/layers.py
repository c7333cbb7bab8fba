"""Step 2: tick which layer groups of the backbone are unfrozen for fine-tuning."""

from __future__ import annotations

import pandas as pd
import plotly.express as px
import streamlit as st

from ftcore.errors import FtcoreError
from ftcore.layers import HEAD, describe_layer_groups, trainable_group_names
from pages.common import fmt_params, halt, init_state

init_state()
name = st.session_state["backbone"]
st.title("2. Layers")
st.write(
    f"The layer groups of **{name}**, from the input (top) to the output (bottom), as timm's `group_matcher` "
    "defines them. Ticked groups learn during fine-tuning; the others stay frozen at their pretrained weights. "
    "The new head always learns. The frozen baseline trains the head alone."
)


@st.cache_data(show_spinner="Reading the layer groups...")
def _groups(model_name: str, n_classes: int):
    return describe_layer_groups(model_name, num_classes=n_classes)


n_classes = int(st.session_state.get("n_classes") or 2)
st.caption(f"The backbone's ImageNet classifier is replaced by a new head with one output per class "
           f"({n_classes} {'classes from your data' if st.session_state.get('n_classes') else 'classes until you choose data'}).")
try:
    groups = _groups(name, n_classes)
except FtcoreError as e:
    st.error(str(e))
    halt()

body = [g.name for g in groups if g.name != HEAD]


def _ticked_from_spec(spec: str) -> set[str]:
    """Body groups the saved unfreeze choice trains (ftcore's own reading of it); all if it no longer fits."""
    try:
        return set(trainable_group_names(groups, spec)) - {HEAD}
    except FtcoreError:
        return set(body)


def _set_ticks(ticked: set[str]) -> None:
    for g in body:
        st.session_state[f"tick::{name}::{g}"] = g in ticked


# First visit for this backbone: ticks from the saved choice.
if not all(f"tick::{name}::{g}" in st.session_state for g in body):
    _set_ticks(_ticked_from_spec(st.session_state["unfreeze"]))

st.subheader("Presets")
p1, p2, p3, p4 = st.columns([1, 1, 1, 2])
if p1.button("Head only", help="A linear probe: the same as the frozen baseline."):
    _set_ticks(set())
n_last = p4.number_input("N", min_value=1, max_value=max(len(body), 1), value=min(2, max(len(body), 1)),
                         label_visibility="collapsed")
if p2.button(f"Last {n_last} groups", help="The groups nearest the head learn; earlier ones stay frozen."):
    _set_ticks(set(body[-int(n_last):]))
if p3.button("All", help="Every layer group learns."):
    _set_ticks(set(body))

st.subheader("Layer groups")
for g in groups:
    if g.name == HEAD:
        st.checkbox(f"**head** (new classifier): {fmt_params(g.n_params)} parameters, always trained",
                    value=True, disabled=True, key=f"tick::{name}::__head__")
    else:
        st.checkbox(f"`{g.name}`: {fmt_params(g.n_params)} parameters", key=f"tick::{name}::{g.name}")

ticked = [g for g in body if st.session_state.get(f"tick::{name}::{g}")]
if len(ticked) == len(body):
    spec = "all"
elif not ticked:
    spec = "head"
else:
    spec = "groups:" + ",".join(ticked)
st.session_state["unfreeze"] = spec

trainable = sum(g.n_params for g in groups if g.name == HEAD or g.name in ticked)
total = sum(g.n_params for g in groups)
c1, c2, c3 = st.columns(3)
c1.metric("Trainable parameters", fmt_params(trainable))
c2.metric("Frozen parameters", fmt_params(total - trainable))
c3.metric("Share trainable", f"{trainable / total:.1%}")

df = pd.DataFrame({
    "layer group": [g.name for g in groups],
    "parameters": [g.n_params for g in groups],
    "state": ["trained" if (g.name == HEAD or g.name in ticked) else "frozen" for g in groups],
})
fig = px.bar(df, x="parameters", y="layer group", color="state", orientation="h",
             color_discrete_map={"trained": "#2E7D6B", "frozen": "#B0B7C3"},
             category_orders={"layer group": df["layer group"].tolist()})
fig.update_layout(height=max(240, 28 * len(groups)), margin=dict(l=0, r=0, t=10, b=0), legend_title_text="")
st.plotly_chart(fig, width="stretch")

st.page_link("pages/data.py", label="Next: give it your images", icon=":material/arrow_forward:")
