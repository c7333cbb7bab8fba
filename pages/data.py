"""Step 3: give it images: the demo digits, a folder on the server, or an upload."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import streamlit as st

from ftcore import (
    MAX_UPLOAD_BYTES,
    MAX_UPLOAD_FILES,
    DataConfig,
    FtcoreError,
    audit_dataset,
    data_roots,
    extract_zip,
    field_spec,
    save_uploaded_files,
    write_demo_dataset,
)
from pages.common import get_store, route_through_app, step
from pages.walk import Walk, walk, widget_key

SOURCES = {
    "demo": "Demo: handwritten digits (1,797 images, 10 classes, from scikit-learn)",
    "folder": "A folder on this server",
    "upload": "Upload a folder or a zip",
}


def render() -> None:
    """Step 3: choose where the images come from, read every image once, show what training can use."""
    w = walk()
    store = get_store()
    st.title("3. Data")
    st.write(
        "One sub-folder per class, images inside (JPEG, PNG, BMP, GIF, WebP, TIFF). If the folder has `train/` and "
        "`val/` sub-folders, that split is used; otherwise a share of each class is held out for validation, "
        "the same for both models."
    )
    source = st.radio("Images from", list(SOURCES), format_func=SOURCES.get,
                      key=widget_key("data_source", w.data_source))
    w.data_source = source
    data_dir, val_dir, label = {"demo": _demo, "folder": _folder, "upload": _upload}[source](w, store)
    spec = field_spec(DataConfig, "val_fraction")
    val_fraction = float(st.slider(spec.label, 0.05, 0.5, step=0.05, key=widget_key("val_fraction", w.val_fraction),
                                   help=spec.help[:1].upper() + spec.help[1:] + "."))
    w.val_fraction = val_fraction
    if not data_dir:
        w.forget_data()
        st.info("Choose where the images come from to see the classes.")
        return
    try:
        report = _audit(w, data_dir, val_dir, val_fraction, _stamp(data_dir, val_dir), store.root)
    except FtcoreError as e:
        w.forget_data()
        st.error(str(e))
        return
    if not report.ok:
        w.forget_data()
        for p in report.refusals():
            st.error(f"`{p.path}`: {p.message}")
        if report.problems:
            _problem_table(report, report.problems)
        return
    w.data_dir, w.val_dir, w.data_label, w.n_classes = data_dir, val_dir, label, len(report.class_names)
    _show(report, val_fraction)
    st.page_link(step("train"), label="Next: train", icon=":material/arrow_forward:")


def _demo(w: Walk, store) -> tuple[str | None, str | None, str | None]:
    with st.spinner("Writing the demo images into the run store..."):
        return str(write_demo_dataset(store.root / "datasets" / "digits")), None, "demo digits"


def _folder(w: Walk, store) -> tuple[str | None, str | None, str | None]:
    if (roots := data_roots()) is not None:
        st.caption("This server reads data only under: " + ", ".join(f"`{r}`" for r in roots))
    spec = field_spec(DataConfig, "train_dir")
    data_dir = st.text_input(spec.label, key=widget_key("folder_path", w.folder_path),
                             placeholder="/data/pets  (holding cats/, dogs/, ... or train/ and val/)").strip() or None
    w.folder_path = data_dir or ""
    val_dir = st.text_input(field_spec(DataConfig, "val_dir").label, key=widget_key("folder_val", w.folder_val),
                            placeholder="leave empty to split the folder above").strip() or None
    w.folder_val = val_dir or ""
    if data_dir and not (os.path.isdir(os.path.expanduser(data_dir))
                         or (data_dir.lower().endswith(".zip") and os.path.isfile(os.path.expanduser(data_dir)))):
        st.error(f"{data_dir} is not a folder on this server. Give the full path of a folder that holds one "
                 "sub-folder per class (or of a .zip of one).")
        data_dir = None
    return data_dir, val_dir, data_dir


def _upload(w: Walk, store) -> tuple[str | None, str | None, str | None]:
    st.caption(
        f"Limits: {MAX_UPLOAD_FILES:,} files and {MAX_UPLOAD_BYTES // 1024**3} GiB unpacked per upload; each request "
        "at most the server's upload limit (1 GiB as configured in .streamlit/config.toml). Uploads are copied into "
        "the run store; your own files are never changed."
    )
    folder_files = st.file_uploader("Upload a folder (one sub-folder per class)", accept_multiple_files="directory",
                                    key="upload_dir")
    zip_file = st.file_uploader("...or upload a zip of the folder", type=["zip"], key="upload_zip")
    try:
        if zip_file is not None:
            key = ("zip", zip_file.name, zip_file.size)
            if w.upload_key != key:
                with st.spinner(f"Extracting {zip_file.name}..."):
                    w.upload_path = str(extract_zip(zip_file.getvalue(), store.root, zip_file.name))
                w.upload_key = key
        elif folder_files:
            key = ("dir", len(folder_files), sum(f.size for f in folder_files))
            if w.upload_key != key:
                with st.spinner(f"Saving {len(folder_files)} files..."):
                    w.upload_path = str(save_uploaded_files(((f.name, f.getvalue()) for f in folder_files),
                                                            store.root))
                w.upload_key = key
    except FtcoreError as e:
        st.error(str(e))
        w.upload_key = w.upload_path = None
    return w.upload_path, None, ("uploaded folder" if w.upload_path else None)


def _audit(w: Walk, train_dir: str, val: str | None, fraction: float, stamp: float, store_root):
    """Audit once per folder, fraction and modification time; kept in the walk."""
    key = (train_dir, val, fraction, stamp)
    memo = w.audit_memo
    if key not in memo:
        bar = st.progress(0.0, text="Reading every image once...")

        def progress(done: int, total: int) -> None:
            if done % 25 == 0 or done == total:
                bar.progress(done / total, text=f"Reading every image once: {done}/{total}")

        try:
            memo.clear()
            memo[key] = audit_dataset(train_dir, val, val_fraction=fraction, store_root=store_root,
                                      progress=progress)
        finally:
            bar.empty()
    return memo[key]


def _stamp(*paths: str | None) -> float:
    return sum(os.stat(p).st_mtime for p in paths if p and os.path.exists(p))


def _problem_table(report, problems) -> None:
    """Problems as a table filterable by kind, with thumbnails of the files that have one."""
    kinds = sorted({p.kind for p in problems})
    shown = st.multiselect("Show problems of kind", kinds, default=kinds, key="problem_kinds")
    rows = [p for p in problems if p.kind in shown]
    st.dataframe(pd.DataFrame([p.__dict__ for p in rows], columns=["path", "kind", "message", "action"]),
                 width="stretch", hide_index=True)
    thumbs = [p for p in rows if p.path in report.thumbnails][:24]
    if thumbs:
        st.image([report.thumbnails[p.path] for p in thumbs], width=72,
                 caption=[f"{Path(p.path).name}: {p.kind}, {p.action}" for p in thumbs])


def _show(report, val_fraction: float) -> None:
    """The classes and their counts per split, a few images of each, and what the check found."""
    layout_words = {"class_folders": f"one folder per class, {val_fraction:.0%} of each class held out (seeded, "
                                     "stratified)",
                    "train_val": "its own train/ and validation (val/, or test/) folders",
                    "separate_val": "a separate validation folder"}
    split_counts = report.split_counts()
    n_images = sum(sum(c.values()) for c in split_counts.values())
    st.success(f"{len(report.class_names)} classes, {n_images} readable images; split: "
               f"{layout_words[report.split_layout]}. Read in {report.seconds:.1f} s.")
    counts = pd.DataFrame(split_counts).fillna(0).astype(int).rename(
        columns={"train": "training images", "val": "validation images"})
    counts.index.name = "class"
    st.dataframe(counts, width="stretch")
    if report.majority_accuracy is not None:
        st.caption(f"Always answering the largest class would score {report.majority_accuracy:.2f} validation "
                   "accuracy: the metrics after training mean something only above that.")
    for warning in report.warnings:
        st.warning(warning)
    st.subheader("A few images of each class")
    for cls, files in report.samples().items():
        cols = st.columns([1, 4])
        cols[0].markdown(f"**{cls}**")
        with cols[1]:
            st.image([report.thumbnails[f] for f in files if f in report.thumbnails], width=72,
                     caption=[Path(f).name for f in files if f in report.thumbnails])
    skipped = [p for p in report.problems if p.action == "skipped"]
    if skipped:
        st.warning(f"{len(skipped)} files cannot be used and are left out of training; the table says why.")
    if report.problems:
        st.subheader("What the check found, and what happens to each")
        _problem_table(report, report.problems)


if __name__ == "__main__":  # run as a script by Streamlit's pages/ folder mode: see pages.common
    route_through_app()
