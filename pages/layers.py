"""Step 2: tick which layer groups (or their sub-blocks) of the backbone are unfrozen for fine-tuning."""

from __future__ import annotations

import pandas as pd
import plotly.express as px
import streamlit as st

from ftcore import HEAD, FtcoreError, describe_compute, step_cost, trainable_group_names
from pages.charts import compute_bars
from pages.common import cached_layer_groups, fmt_params, route_through_app, step
from pages.walk import walk


@st.cache_data(show_spinner="Counting the compute of each layer group...")
def _compute(model_name: str, img_size: int, n_classes: int):
    return describe_compute(model_name, img_size, n_classes)


def render() -> None:
    """Step 2: presets and ticks per layer group, then what the choice trains and costs."""
    w = walk()
    name = w.backbone
    st.title("2. Layers")
    st.write(
        f"The layer groups of **{name}**, from the input (top) to the output (bottom), as timm's `group_matcher` "
        "defines them. Ticked groups learn during fine-tuning; the others stay frozen at their pretrained weights. "
        "Open a group to tick only some of its sub-blocks. The new head always learns. The frozen baseline trains "
        "the head alone."
    )
    n_classes = int(w.n_classes or 2)
    st.caption(f"The backbone's ImageNet classifier is replaced by a new head with one output per class "
               f"({n_classes} {'classes from your data' if w.n_classes else 'classes until you choose data'}).")
    try:
        groups = cached_layer_groups(name, n_classes)
    except FtcoreError as e:
        st.error(str(e))
        return
    ticks = _Ticks(name, groups)
    ticks.draw()
    w.unfreeze = ticks.spec()
    trainable = trainable_group_names(groups, w.unfreeze)
    img_size = int(w.train.get("img_size") or 224)
    try:
        profile = _compute(name, img_size, n_classes)
        cost = step_cost(profile, groups, trainable)
    except FtcoreError as e:
        st.error(str(e))
        return
    _summary(groups, trainable, profile, cost, img_size)
    st.page_link(step("data"), label="Next: give it your images", icon=":material/arrow_forward:")


class _Ticks:
    """The checkboxes of the layer groups and their sub-blocks (widget keys ``tick::<model>::<group>[::<part>]``)."""

    def __init__(self, name: str, groups) -> None:
        self.name, self.groups = name, groups
        self.body_groups = [g for g in groups if g.name != HEAD]
        self.body = [g.name for g in self.body_groups]
        # First visit for this backbone: ticks from the saved choice.
        if not all(self.key(g.name) in st.session_state for g in self.body_groups):
            self.set(self._from_spec(walk().unfreeze))

    def key(self, group: str, part: str | None = None) -> str:
        return f"tick::{self.name}::{group}" + (f"::{part}" if part else "")

    def _from_spec(self, spec: str) -> set[str]:
        """Group and part names the unfreeze choice trains (ftcore's own reading of it); all if it no longer fits."""
        try:
            return set(trainable_group_names(self.groups, spec)) - {HEAD}
        except FtcoreError:
            return set(self.body)

    def set(self, ticked: set[str]) -> None:
        for g in self.body_groups:
            whole = g.name in ticked or (g.parts and all(p.name in ticked for p in g.parts))
            st.session_state[self.key(g.name)] = bool(whole)
            for p in g.parts:
                st.session_state[self.key(g.name, p.name)] = bool(whole or p.name in ticked)

    def _group_changed(self, g) -> None:
        for p in g.parts:
            st.session_state[self.key(g.name, p.name)] = st.session_state[self.key(g.name)]

    def _part_changed(self, g) -> None:
        st.session_state[self.key(g.name)] = all(st.session_state[self.key(g.name, p.name)] for p in g.parts)

    def draw(self) -> None:
        """The presets, then one checkbox per group (and per sub-block, in an expander)."""
        st.subheader("Presets")
        p1, p2, p3, p4 = st.columns([1, 1, 1, 2])
        if p1.button("Head only", help="A linear probe: the same as the frozen baseline."):
            self.set(set())
        n_body = max(len(self.body), 1)
        n_last = p4.number_input("N", min_value=1, max_value=n_body, value=min(2, n_body),
                                 label_visibility="collapsed")
        if p2.button(f"Last {n_last} groups", help="The groups nearest the head learn; earlier ones stay frozen."):
            self.set(set(self.body[-int(n_last):]))
        if p3.button("All", help="Every layer group learns."):
            self.set(set(self.body))
        st.subheader("Layer groups")
        for g in self.groups:
            if g.name == HEAD:
                st.checkbox(f"**head** (new classifier): {fmt_params(g.n_params)} parameters, always trained",
                            value=True, disabled=True, key=f"tick::{self.name}::__head__")
                continue
            st.checkbox(f"`{g.name}`: {fmt_params(g.n_params)} parameters", key=self.key(g.name),
                        on_change=self._group_changed, args=(g,))
            if g.parts:
                n_on = sum(bool(st.session_state.get(self.key(g.name, p.name))) for p in g.parts)
                with st.expander(f"{len(g.parts)} sub-blocks of `{g.name}` ({n_on} ticked)"):
                    for p in g.parts:
                        st.checkbox(f"sub-block `{p.name}`: {fmt_params(p.n_params)} parameters",
                                    key=self.key(g.name, p.name), on_change=self._part_changed, args=(g,))

    def spec(self) -> str:
        """The unfreeze choice the ticks make: ``"all"``, ``"head"`` or ``"groups:..."``."""
        chosen: list[str] = []
        for g in self.body_groups:
            if st.session_state.get(self.key(g.name)):
                chosen.append(g.name)
            else:
                chosen.extend(p.name for p in g.parts if st.session_state.get(self.key(g.name, p.name)))
        if all(st.session_state.get(self.key(g)) for g in self.body):
            return "all"
        return "groups:" + ",".join(chosen) if chosen else "head"


def _summary(groups, trainable, profile, cost, img_size: int) -> None:
    """Trainable and frozen parameters, the compute per step, and both per layer group as bar charts."""
    learn_parts = {p.name for g in groups for p in g.parts if g.name in trainable or p.name in trainable}

    def trained_params(g) -> int:
        if g.name == HEAD or g.name in trainable:
            return g.n_params
        return sum(p.n_params for p in g.parts if p.name in learn_parts)

    n_trainable = sum(trained_params(g) for g in groups)
    total = sum(g.n_params for g in groups)
    c1, c2, c3, c4 = st.columns(4)
    c1.metric("Trainable parameters", fmt_params(n_trainable))
    c2.metric("Frozen parameters", fmt_params(total - n_trainable))
    c3.metric("Share trainable", f"{n_trainable / total:.1%}")
    c4.metric("Training compute per step", f"{cost['vs_linear_probe']:.2f}× a linear probe",
              help=f"{cost['share_of_full']:.0%} of the compute of fine-tuning every group. Estimated from the "
                   f"forward FLOPs of each group at {img_size} px ("
                   + ("measured with PyTorch's FlopCounterMode" if cost["method"] == "measured"
                      else "taken as proportional to parameters: this model could not be traced")
                   + "), counting the backward pass as twice the forward for the part of the network it runs "
                     "through (Kaplan et al., 2020).")
    state = {g.name: ("trained" if trained_params(g) == g.n_params else "partly trained" if trained_params(g)
                      else "frozen") for g in groups}
    flops = profile.group_flops()
    df = pd.DataFrame({
        "layer group": [g.name for g in groups],
        "parameters": [g.n_params for g in groups],
        "trainable parameters": [trained_params(g) for g in groups],
        "share of forward compute": [flops.get(g.name, 0.0) / profile.total_flops for g in groups],
        "state": [state[g.name] for g in groups],
    })
    left, right = st.columns(2)
    with left:
        st.caption("Parameters per layer group")
        fig = px.bar(df, x="parameters", y="layer group", color="state", orientation="h",
                     color_discrete_map={"trained": "#2E7D6B", "frozen": "#B0B7C3", "partly trained": "#7FB8A8"},
                     category_orders={"layer group": df["layer group"].tolist()})
        fig.update_layout(height=max(240, 28 * len(groups)), margin=dict(l=0, r=0, t=10, b=0), legend_title_text="")
        st.plotly_chart(fig, width="stretch")
    with right:
        st.caption(f"Share of the forward compute at {img_size} px "
                   f"({profile.total_flops / 1e9:.2f} GFLOPs per image)")
        st.plotly_chart(compute_bars(df), width="stretch")


if __name__ == "__main__":  # run as a script by Streamlit's pages/ folder mode: see pages.common
    route_through_app()
