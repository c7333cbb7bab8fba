"""Plotly figures of the train page: learning rates before training, what training did per layer group.

UI only: the numbers come from ftcore (schedule, run store).
"""

from __future__ import annotations

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
from plotly.subplots import make_subplots

GREEN = "#2E7D6B"
GREY = "#B0B7C3"


def rate_bars(rates) -> go.Figure:
    """Peak learning rate per layer group (ftcore.train.schedule.GroupRate), input to output; frozen groups at 0."""
    df = pd.DataFrame({"layer group": [r.name for r in rates], "peak learning rate": [r.lr for r in rates],
                       "state": ["trained" if r.trainable else "frozen" for r in rates]})
    fig = px.bar(df, x="peak learning rate", y="layer group", color="state", orientation="h",
                 color_discrete_map={"trained": GREEN, "frozen": GREY},
                 category_orders={"layer group": df["layer group"].tolist()})
    fig.update_layout(height=max(220, 24 * len(df)), margin=dict(l=0, r=0, t=30, b=0), legend_title_text="",
                      title="Peak learning rate per layer group")
    fig.update_xaxes(tickformat=".1e")
    return fig


def schedule_lines(schedule: pd.DataFrame) -> go.Figure:
    """Learning rate of each trainable group over training (ftcore.train.schedule.lr_schedule), x in epochs."""
    fig = px.line(schedule, x="epoch", y="lr", color="layer group",
                  color_discrete_sequence=px.colors.sequential.Viridis_r)
    fig.update_layout(height=300, margin=dict(l=0, r=0, t=30, b=0), title="Learning rate over training",
                      legend_title_text="")
    fig.update_yaxes(title_text="learning rate per step", tickformat=".1e")
    fig.update_xaxes(title_text="epoch")
    return fig


def layer_panels(stats: pd.DataFrame) -> go.Figure:
    """Per layer group and epoch: relative weight change, gradient norm, learning rate (run store layer_stats)."""
    panels = [("relative_change", "weight change ||w − w0|| / ||w0||"), ("grad_norm", "gradient norm"),
              ("lr", "learning rate (epoch mean)")]
    fig = make_subplots(rows=1, cols=3, subplot_titles=[p[1] for p in panels])
    groups = stats.sort_values("group_index")["layer_group"].unique().tolist()
    colours = px.colors.sample_colorscale("Viridis", [i / max(len(groups) - 1, 1) for i in range(len(groups))])
    for col, (key, _) in enumerate(panels, start=1):
        for colour, g in zip(colours, groups):
            df = stats[stats["layer_group"] == g]
            fig.add_trace(go.Scatter(x=df["epoch"], y=df[key], mode="lines+markers", name=g, legendgroup=g,
                                     showlegend=col == 1, line=dict(color=colour)), row=1, col=col)
        fig.update_xaxes(title_text="epoch", dtick=1, row=1, col=col)
    fig.update_layout(height=360, margin=dict(l=0, r=0, t=40, b=0), legend=dict(orientation="h", y=-0.25))
    return fig


def compute_bars(df: pd.DataFrame) -> go.Figure:
    """Share of the forward compute per layer group, coloured by trained / frozen."""
    fig = px.bar(df, x="share of forward compute", y="layer group", color="state", orientation="h",
                 color_discrete_map={"trained": GREEN, "frozen": GREY, "partly trained": "#7FB8A8"},
                 category_orders={"layer group": df["layer group"].tolist()})
    fig.update_layout(height=max(240, 28 * len(df)), margin=dict(l=0, r=0, t=10, b=0), legend_title_text="")
    fig.update_xaxes(tickformat=".0%")
    return fig


if __name__ == "__main__":  # run as a script by Streamlit's pages/ folder mode (/charts): see pages.common
    from pages.common import route_through_app

    route_through_app()
