"""Step 1: pick a timm backbone and where its pretrained weights come from."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from ftcore import FtcoreError, check_weights_file, describe_backbone, list_backbones
from pages.common import fmt_params, get_store, route_through_app, step
from pages.walk import Walk, walk, widget_key

WEIGHT_CHOICES = {
    "auto": "Pretrained weights (recommended)",
    "file": "A local weights file for this architecture",
    "none": "Random initialisation (no pretraining)",
}


@st.cache_data(show_spinner=False)
def _search(q: str) -> list[str]:
    return list_backbones(q)


@st.cache_data(show_spinner="Reading the model's size...")
def _describe(name: str):
    return describe_backbone(name)


def render() -> None:
    """Step 1: search timm's models, pick one, choose its starting weights."""
    w = walk()
    st.title("1. Backbone")
    st.write(
        "Pick a pretrained image model from [timm](https://huggingface.co/docs/timm). Its new classifier head will "
        "learn your classes; the next step decides which of its layer groups also learn."
    )
    name = _pick_model(w)
    if name is None:
        return
    try:
        info = _describe(name)
    except FtcoreError as e:
        st.error(str(e))
        return
    c1, c2, c3 = st.columns(3)
    c1.metric("Parameters", fmt_params(info.n_params), help="With a 1000-class ImageNet head.")
    c2.metric("Default input size", f"{info.input_size[2]} x {info.input_size[1]} px")
    c3.metric("Pretrained weights", {"packaged": "offline, packaged", "hf_cache": "local cache",
                                      "download": "download", "none": "none known"}[info.weights.kind])
    st.caption(f"Where the weights would come from here: {info.weights.describe()}.")
    _weights(w, name, info)
    st.page_link(step("layers"), label="Next: choose the layers to fine-tune", icon=":material/arrow_forward:")


def _pick_model(w: Walk) -> str | None:
    """The model chosen from the search's matches; None (and a warning) when nothing matches."""
    query = st.text_input("Search models by name", key=widget_key("backbone_query", w.backbone_query),
                          help="A part of the name (resnet, vit_small, convnext) or a pattern with * (resnet*).")
    w.backbone_query = query
    matches = _search(query)
    if not matches:
        st.warning(f"No timm model name contains '{query}'. Try a shorter part, e.g. 'resnet'.")
        return None
    if w.backbone not in matches:
        matches = [w.backbone, *matches]
    shown = matches[:500]
    wk = widget_key("backbone", w.backbone)
    if st.session_state[wk] not in shown:
        st.session_state[wk] = w.backbone
    name = st.selectbox(f"Model ({len(matches)} found{', first 500 shown' if len(matches) > 500 else ''})",
                        shown, key=wk)
    if name != w.backbone:
        w.backbone, w.unfreeze = name, "all"
        if w.weights not in ("auto", "none"):
            w.weights = w.weights_choice = "auto"
            st.session_state.pop("w_weights_choice", None)
    return name


def _weights(w: Walk, name: str, info) -> None:
    """Where the starting weights come from; a weights file is checked against the architecture."""
    if w.weights_choice is None:  # first visit: the choice the walk's weights stand for
        w.weights_choice = w.weights if w.weights in ("auto", "none") else "file"
    choice = st.radio("Starting weights", list(WEIGHT_CHOICES), format_func=WEIGHT_CHOICES.get,
                      key=widget_key("weights_choice", w.weights_choice))
    w.weights_choice = choice
    if choice == "auto":
        w.weights = "auto"
        if info.weights.kind == "none":
            st.error(f"No pretrained weights are known for {name}. Give a weights file, choose random "
                     "initialisation explicitly, or pick another model.")
        elif info.weights.kind == "download":
            st.info("These weights are downloaded from the Hugging Face hub when training starts; with no network "
                    "that fails. The tf_efficientnet_lite0/1/2 models work offline.")
        return
    if choice == "none":
        w.weights = "none"
        st.warning("Random initialisation: both models start from scratch, so the frozen baseline is a linear probe "
                   "on random features and the comparison means little. Expect much lower accuracy.")
        return
    st.write("Give the path of a weights file on the server, or upload one (.safetensors, .pth, .pt, .bin).")
    path = st.text_input("Weights file path on the server", key=widget_key("weights_file", w.weights_file)).strip()
    w.weights_file = path
    up = st.file_uploader("...or upload a weights file", type=["safetensors", "pth", "pt", "bin"])
    if up is not None:
        dest = get_store().root / "weights" / Path(up.name).name
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(up.getvalue())
        path = str(dest)
    # Until a file passes the check, the run is refused (it never falls back to other weights).
    w.weights = ""
    if not path:
        st.info("No weights file given yet: training is refused until one fits this architecture.")
        return
    try:
        with st.spinner("Checking the file against the architecture, key by key..."):
            n = check_weights_file(name, path)
    except FtcoreError as e:
        st.error(str(e))
    else:
        st.success(f"{path} fits {name}: {n} tensors match by name and shape.")
        w.weights = path


if __name__ == "__main__":  # run as a script by Streamlit's pages/ folder mode: see pages.common
    route_through_app()
