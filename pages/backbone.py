"""Step 1: pick a timm backbone and where its pretrained weights come from."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from ftcore import FtcoreError, check_weights_file, describe_backbone, list_backbones
from pages.common import fmt_params, get_store, halt, init_state, widget_key

init_state()
st.title("1. Backbone")
st.write(
    "Pick a pretrained image model from [timm](https://huggingface.co/docs/timm). Its new classifier head will "
    "learn your classes; the next step decides which of its layer groups also learn."
)


@st.cache_data(show_spinner=False)
def _search(q: str) -> list[str]:
    return list_backbones(q)


@st.cache_data(show_spinner="Reading the model's size...")
def _describe(name: str):
    return describe_backbone(name)


st.session_state.setdefault("backbone_query", "efficientnet_lite")
query = st.text_input("Search models by name", key=widget_key("backbone_query"),
                      help="A part of the name (resnet, vit_small, convnext) or a pattern with * (resnet*).")
st.session_state["backbone_query"] = query
matches = _search(query)
if not matches:
    st.warning(f"No timm model name contains '{query}'. Try a shorter part, e.g. 'resnet'.")
    halt()
current = st.session_state["backbone"]
if current not in matches:
    matches = [current, *matches]
shown = matches[:500]
wk = widget_key("backbone")
if st.session_state[wk] not in shown:
    st.session_state[wk] = current
name = st.selectbox(f"Model ({len(matches)} found{', first 500 shown' if len(matches) > 500 else ''})",
                    shown, key=wk)
if name != st.session_state["backbone"]:
    st.session_state["backbone"] = name
    st.session_state["unfreeze"] = "all"
    if st.session_state["weights"] not in ("auto", "none"):
        st.session_state["weights"] = "auto"
        st.session_state["weights_choice"] = "auto"
        st.session_state.pop("w_weights_choice", None)

try:
    info = _describe(name)
except FtcoreError as e:
    st.error(str(e))
    halt()

c1, c2, c3 = st.columns(3)
c1.metric("Parameters", fmt_params(info.n_params), help="With a 1000-class ImageNet head.")
c2.metric("Default input size", f"{info.input_size[2]} x {info.input_size[1]} px")
c3.metric("Pretrained weights", {"packaged": "offline, packaged", "hf_cache": "local cache", "download": "download",
                                  "none": "none known"}[info.weights.kind])
st.caption(f"Where the weights would come from here: {info.weights.describe()}.")

options = ["auto", "file", "none"]
labels = {
    "auto": "Pretrained weights (recommended)",
    "file": "A local weights file for this architecture",
    "none": "Random initialisation (no pretraining)",
}
cur = st.session_state["weights"]
st.session_state.setdefault("weights_choice", cur if cur in ("auto", "none") else "file")
choice = st.radio("Starting weights", options, format_func=labels.get, key=widget_key("weights_choice"))
st.session_state["weights_choice"] = choice

if choice == "auto":
    st.session_state["weights"] = "auto"
    if info.weights.kind == "none":
        st.error(f"No pretrained weights are known for {name}. Give a weights file, choose random "
                 "initialisation explicitly, or pick another model.")
    elif info.weights.kind == "download":
        st.info("These weights are downloaded from the Hugging Face hub when training starts; with no network "
                "that fails. The tf_efficientnet_lite0/1/2 models work offline.")
elif choice == "none":
    st.session_state["weights"] = "none"
    st.warning("Random initialisation: both models start from scratch, so the frozen baseline is a linear probe "
               "on random features and the comparison means little. Expect much lower accuracy.")
else:
    st.write("Give the path of a weights file on the server, or upload one (.safetensors, .pth, .pt, .bin).")
    st.session_state.setdefault("weights_file", "")
    path = st.text_input("Weights file path on the server", key=widget_key("weights_file")).strip()
    up = st.file_uploader("...or upload a weights file", type=["safetensors", "pth", "pt", "bin"])
    if up is not None:
        dest = get_store().root / "weights" / Path(up.name).name
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(up.getvalue())
        path = str(dest)
    # Until a file passes the check, the run is refused (it never falls back to other weights).
    st.session_state["weights"] = path or ""
    if not path:
        st.info("No weights file given yet: training is refused until one fits this architecture.")
    if path:
        try:
            with st.spinner("Checking the file against the architecture, key by key..."):
                n = check_weights_file(name, path)
        except FtcoreError as e:
            st.error(str(e))
        else:
            st.success(f"{path} fits {name}: {n} tensors match by name and shape.")
            st.session_state["weights"] = path

st.page_link("pages/layers.py", label="Next: choose the layers to fine-tune", icon=":material/arrow_forward:")
