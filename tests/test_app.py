"""The dashboard's pages, driven headless with Streamlit's ``AppTest``.

Every test points ``FTCORE_HOME`` at its own temporary folder and clears
Streamlit's resource cache first, so ``pages.common.get_store`` opens a fresh
run store there. The data cache (``st.cache_data``: model search, backbone
description, layer groups) depends only on the model name, so it is kept
between tests: building ``tf_efficientnet_lite0`` once is enough.

The training test starts a real worker process (``python -m ftcore worker``)
on a tiny image folder with timm's ``test_resnet`` and random initialisation;
it runs on the CPU, offline, in a few seconds.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import streamlit as st
from PIL import Image
from streamlit.testing.v1 import AppTest

REPO = Path(__file__).resolve().parent.parent
APP = str(REPO / "app.py")
#: The steps' URL paths (/train), in order.
PAGES = ["backbone", "layers", "data", "train", "compare"]
TIMEOUT = 60
#: Seconds the training test waits for its worker to finish.
RUN_TIMEOUT = 120

COLOURS = [(220, 30, 30), (30, 200, 40), (30, 40, 220)]


# --- fixtures and helpers ------------------------------------------------------

@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A fresh run store folder in ``FTCORE_HOME``; the app's cached store forgotten."""
    h = tmp_path / "ftcore_home"
    h.mkdir()
    monkeypatch.setenv("FTCORE_HOME", str(h))
    # One thread per torch process (the worker inherits the environment): on a
    # small, busy machine two spinning OpenMP threads per process are far slower.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # the worker trains on the CPU even where a GPU is present
    # app.py names its assets relative to the working directory, as `streamlit run app.py` does.
    monkeypatch.chdir(REPO)
    st.cache_resource.clear()
    yield h
    st.cache_resource.clear()


@pytest.fixture
def app(home) -> AppTest:
    """The app, run once on its default page (1. Backbone)."""
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.run()
    assert not at.exception, _exceptions(at)
    return at


def _exceptions(at: AppTest) -> str:
    return "\n".join(f"{e.message}\n{''.join(e.stack_trace)}" for e in at.exception)


def goto(at: AppTest, page: str) -> AppTest:
    """Open step `page` (its URL path, e.g. "train") as the sidebar's link does, and run the app.

    The steps are functions (``st.Page(train.render, ...)``) and ``AppTest.switch_page`` takes only pages
    defined by a file (it matches registered script paths), so the page hash that ``st.navigation``
    registered for the step is requested instead, as a click on its link does. Call after a first run.
    """
    from pages.common import STEPS

    hashes = [h for h, info in at._registered_pages.items() if info.get("page_name") == STEPS[page]]
    assert len(hashes) == 1, f"no page {page!r} among {at._registered_pages}"
    at._page_hash = hashes[0]
    at.run()
    assert not at.exception, _exceptions(at)
    return at


def walk(at: AppTest):
    """The app's walk state (pages.walk.Walk)."""
    return at.session_state["walk"]


def by_label(elements, label: str):
    """The one element of a list whose label is `label`."""
    found = [e for e in elements if e.label == label]
    assert len(found) == 1, f"{len(found)} elements labelled {label!r} among {[e.label for e in elements]}"
    return found[0]


def texts(elements) -> list[str]:
    return [str(e.value) for e in elements]


def write_png(path: Path, colour: tuple[int, int, int], seed: int, size: int = 16) -> None:
    rng = np.random.default_rng(seed)
    arr = np.clip(np.asarray(colour, dtype=np.int16) + rng.integers(-25, 26, size=(size, size, 3)), 0, 255)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr.astype(np.uint8)).save(path)


def image_folder(root: Path, classes: dict[str, int]) -> Path:
    """``root/<class>/img_XXX.png``, one base colour per class."""
    for ci, (name, n) in enumerate(classes.items()):
        for i in range(n):
            write_png(root / name / f"img_{i:03d}.png", COLOURS[ci], seed=1000 * ci + i)
    return root


# --- every page ------------------------------------------------------------------
@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders_without_exceptions(app, page):
    goto(app, page)
    assert app.title[0].value.startswith(f"{PAGES.index(page) + 1}. ")
    # Routed by app.py: the shared sidebar is drawn around the page (AppTest starts each run in Streamlit's
    # pages/ folder mode, so a page other than the default one goes through pages.common.route_through_app).
    assert any(m.startswith("- **Backbone:**") for m in texts(app.sidebar.markdown)), texts(app.sidebar.markdown)


def test_every_module_of_pages_runs_the_router_when_run_as_a_script():
    """Streamlit's pages/ folder mode runs a file of pages/ alone (see pages.common.route_through_app)."""
    import ast

    for path in sorted((REPO / "pages").glob("*.py")):
        if path.name == "__init__.py":
            continue
        last = ast.parse(path.read_text()).body[-1]
        assert isinstance(last, ast.If) and ast.unparse(last.test) == "__name__ == '__main__'", path.name
        assert ast.unparse(last.body[-1]) == "route_through_app()", path.name


def test_walk_state_holds_every_training_setting_with_its_default():
    import dataclasses

    from ftcore.core.config import DataConfig, RunConfig, TrainConfig
    from pages.walk import Walk

    assert list(Walk().train) == [f.name for f in dataclasses.fields(TrainConfig)]
    assert TrainConfig(**Walk().train) == TrainConfig()
    assert Walk(data_dir="/d").run_config() == RunConfig(data=DataConfig("/d"))


def test_sidebar_shows_the_choices_and_no_run(app):
    md = texts(app.sidebar.markdown)
    assert any("**Backbone:** `tf_efficientnet_lite0`" in m and "**Data:** not chosen yet" in m for m in md), md
    assert "No run in progress." in md


def test_empty_store_train_and_compare_pages_say_what_to_do_first(app):
    goto(app, "train")
    assert by_label(app.button, "Start training").disabled
    assert any("Choose the images in step 3 first" in t for t in texts(app.info))
    goto(app, "compare")
    assert any("No run has finished" in t for t in texts(app.info))


# --- 1. Backbone ---------------------------------------------------------------------
def test_backbone_default_is_efficientnet_lite0_with_packaged_offline_weights(app):
    assert app.selectbox[0].value == "tf_efficientnet_lite0"
    assert by_label(app.metric, "Pretrained weights").value == "offline, packaged"
    radio = by_label(app.radio, "Starting weights")
    assert radio.value == "auto"
    assert walk(app).weights == "auto"


def test_backbone_random_initialisation_warns(app):
    by_label(app.radio, "Starting weights").set_value("none").run()
    assert not app.exception, _exceptions(app)
    assert walk(app).weights == "none"
    assert any("Random initialisation" in t for t in texts(app.warning))
    assert by_label(app.radio, "Starting weights").value == "none"


def test_backbone_weights_choice_can_be_changed_back(app):
    by_label(app.radio, "Starting weights").set_value("none").run()
    assert walk(app).weights == "none"
    # Back to pretrained weights: the warning goes away.
    by_label(app.radio, "Starting weights").set_value("auto").run()
    assert walk(app).weights == "auto"
    assert not any("Random initialisation" in t for t in texts(app.warning))


def test_backbone_search_without_matches_warns(app):
    by_label(app.text_input, "Search models by name").set_value("no_such_model_xyz").run()
    assert not app.exception, _exceptions(app)
    assert any("No timm model name contains 'no_such_model_xyz'" in t for t in texts(app.warning))
    assert len(app.selectbox) == 0
    # The choice made so far is kept.
    assert walk(app).backbone == "tf_efficientnet_lite0"


# --- 2. Layers -------------------------------------------------------------------------
def test_layers_presets_tick_groups_and_change_the_trainable_count(app):
    goto(app, "layers")
    boxes = list(app.checkbox)
    head = [c for c in boxes if c.label.startswith("**head**")]
    body = [c for c in boxes if not c.label.startswith(("**head**", "sub-block"))]
    assert len(head) == 1 and head[0].value is True and head[0].disabled
    assert len(body) >= 3
    assert all(c.value for c in body) and not any(c.disabled for c in body)
    assert walk(app).unfreeze == "all"
    all_trainable = by_label(app.metric, "Trainable parameters").value
    assert by_label(app.metric, "Frozen parameters").value == "0"

    by_label(app.button, "Head only").click().run()
    assert not app.exception, _exceptions(app)
    body = [c for c in app.checkbox if not c.label.startswith(("**head**", "sub-block"))]
    assert not any(c.value for c in body)
    head = [c for c in app.checkbox if c.label.startswith("**head**")]
    assert head[0].value is True and head[0].disabled
    assert walk(app).unfreeze == "head"
    head_trainable = by_label(app.metric, "Trainable parameters").value
    assert head_trainable != all_trainable
    assert by_label(app.metric, "Frozen parameters").value != "0"

    # Tick one group by hand: the choice becomes an explicit list of groups.
    first = body[0]
    first.check().run()
    assert not app.exception, _exceptions(app)
    group_name = first.label.split("`")[1]
    assert walk(app).unfreeze == f"groups:{group_name}"
    assert by_label(app.metric, "Trainable parameters").value not in (head_trainable, all_trainable)

    by_label(app.button, "All").click().run()
    assert not app.exception, _exceptions(app)
    assert all(c.value for c in app.checkbox)
    assert walk(app).unfreeze == "all"
    assert by_label(app.metric, "Trainable parameters").value == all_trainable

    # "Last 2 groups": the two groups nearest the head.
    by_label(app.button, "Last 2 groups").click().run()
    body = [c for c in app.checkbox if not c.label.startswith(("**head**", "sub-block"))]
    assert [c.value for c in body] == [False] * (len(body) - 2) + [True, True]
    names = [c.label.split("`")[1] for c in body[-2:]]
    assert walk(app).unfreeze == "groups:" + ",".join(names)


# --- 3. Data ------------------------------------------------------------------------------
def _choose_folder(at: AppTest, folder: str | Path) -> AppTest:
    by_label(at.radio, "Images from").set_value("folder").run()
    assert not at.exception, _exceptions(at)
    by_label(at.text_input, "Folder path").set_value(str(folder)).run()
    assert not at.exception, _exceptions(at)
    return at


def test_data_folder_shows_classes_counts_and_unreadable_files(app, tmp_path):
    root = image_folder(tmp_path / "pets", {"cats": 8, "dogs": 8})
    empty = root / "cats" / "broken.jpg"
    empty.write_bytes(b"")
    text = root / "dogs" / "notes.png"
    text.write_text("this is not an image\n")

    goto(app, "data")
    _choose_folder(app, root)
    assert not app.error, texts(app.error)
    assert any(t.startswith("2 classes, 16 readable images") for t in texts(app.success)), texts(app.success)

    counts = app.dataframe[0].value
    assert list(counts.index) == ["cats", "dogs"]
    assert set(counts.columns) == {"training images", "validation images"}
    assert counts.sum(axis=1).tolist() == [8, 8]
    assert (counts["validation images"] > 0).all()

    assert any("2 files cannot be used" in t for t in texts(app.warning)), texts(app.warning)
    skipped = app.dataframe[1].value
    assert sorted(skipped["path"]) == sorted([str(empty), str(text)])
    assert set(skipped["action"]) == {"skipped"}

    assert walk(app).data_dir == str(root)
    assert walk(app).data_label == str(root)


def test_data_folder_with_one_class_needs_two(app, tmp_path):
    root = image_folder(tmp_path / "one", {"cats": 6})
    goto(app, "data")
    _choose_folder(app, root)
    errors = texts(app.error)
    assert len(errors) == 1
    assert "at least two class folders" in errors[0] and str(root) in errors[0]
    assert not app.success
    assert walk(app).data_dir != str(root)


def test_data_folder_that_does_not_exist(app, tmp_path):
    missing = tmp_path / "nowhere"
    goto(app, "data")
    _choose_folder(app, missing)
    errors = texts(app.error)
    assert len(errors) == 1
    assert str(missing) in errors[0] and "is not a folder" in errors[0]
    assert not app.success
    assert walk(app).data_dir != str(missing)


def test_data_demo_writes_digits_into_the_store(app, home):
    goto(app, "data")
    assert by_label(app.radio, "Images from").value == "demo"
    assert any(t.startswith("10 classes, 1797 readable images") for t in texts(app.success)), texts(app.success)
    counts = app.dataframe[0].value
    assert list(counts.index) == [str(d) for d in range(10)]
    assert int(counts.values.sum()) == 1797
    digits = home / "datasets" / "digits"
    assert walk(app).data_dir == str(digits)
    assert walk(app).data_label == "demo digits"
    assert sorted(p.name for p in digits.iterdir() if p.is_dir()) == [str(d) for d in range(10)]
    assert len(list(digits.glob("*/*.png"))) == 1797


def test_data_folder_path_can_be_corrected(app, tmp_path):
    root = image_folder(tmp_path / "pets", {"cats": 4, "dogs": 4})
    goto(app, "data")
    _choose_folder(app, tmp_path / "pest")  # a typo
    assert any("is not a folder" in t for t in texts(app.error))
    by_label(app.text_input, "Folder path").set_value(str(root)).run()
    assert not app.error, texts(app.error)
    assert walk(app).data_dir == str(root)


def test_data_audit_problems_filter_by_kind_with_thumbnails(app, tmp_path):
    root = image_folder(tmp_path / "pets", {"cats": 12, "dogs": 3})
    (root / "cats" / "copy.png").write_bytes((root / "cats" / "img_000.png").read_bytes())
    (root / "dogs" / "zero.jpg").write_bytes(b"")
    goto(app, "data")
    _choose_folder(app, root)
    assert not app.error, texts(app.error)
    assert any("imbalanced" in t and "class-balanced loss or sampler" in t for t in texts(app.warning))
    assert any("Always answering the largest class would score" in c.value for c in app.caption)
    kinds = by_label(app.multiselect, "Show problems of kind")
    assert sorted(kinds.value) == ["duplicate", "unreadable"]
    table = app.dataframe[1].value
    assert sorted(table["kind"]) == ["duplicate", "unreadable"] and set(table["action"]) == {"skipped"}
    kinds.set_value(["duplicate"]).run()
    table = app.dataframe[1].value
    assert table["kind"].tolist() == ["duplicate"] and "kept once" in table["message"].iloc[0]
    captions = [c for img in app.get("image") for c in img.captions]
    assert any(c.endswith(": duplicate, skipped") for c in captions), "a thumbnail of the duplicate is shown"


def test_train_settings_can_be_changed_twice(app):
    goto(app, "train")
    by_label(app.number_input, "Epochs").set_value(1).run()
    assert walk(app).train["epochs"] == 1
    by_label(app.number_input, "Epochs").set_value(5).run()
    assert walk(app).train["epochs"] == 5


# --- 4. Train and 5. Compare ------------------------------------------------------------
def _wait_finished(home: Path, timeout: float = RUN_TIMEOUT):
    from ftcore.jobs.local import refresh
    from ftcore.runs.store import RunStore

    store = RunStore(home)
    deadline = time.monotonic() + timeout
    while True:
        runs = store.list()
        assert len(runs) == 1
        rec = refresh(store, runs[0].run_id)
        if not rec.active:
            return rec
        if time.monotonic() > deadline:
            pytest.fail(f"run {rec.run_id} still {rec.status} after {timeout} s: {rec.message}")
        time.sleep(0.5)


def test_train_starts_a_worker_and_compare_shows_the_result(home, tmp_path):
    from ftcore.jobs.local import cancel_run
    from ftcore.runs.store import RunStore

    data = image_folder(tmp_path / "shapes", {"red": 8, "green": 8})
    from pages.walk import Walk

    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.session_state["walk"] = Walk(backbone="test_resnet", weights="none", unfreeze="all", data_dir=str(data),
                                    data_label="two colours")
    at.run()
    goto(at, "train")
    assert any("`test_resnet`" in m and "two colours" in m for m in texts(at.markdown))
    by_label(at.number_input, "Epochs").set_value(1)
    by_label(at.number_input, "Batch size").set_value(4)
    by_label(at.number_input, "Image size (px)").set_value(32)
    at.run()
    assert not at.exception, _exceptions(at)
    start = by_label(at.button, "Start training")
    assert not start.disabled

    store = RunStore(home)
    try:
        start.click().run()
        assert not at.exception, _exceptions(at)
        runs = store.list()
        assert len(runs) == 1, "Start training recorded no run in the store"
        run_id = runs[0].run_id
        cfg = runs[0].config
        assert (cfg.backbone.name, cfg.backbone.weights, cfg.freeze.unfreeze) == ("test_resnet", "none", "all")
        assert (cfg.train.epochs, cfg.train.batch_size, cfg.train.img_size) == (1, 4, 32)
        assert at.query_params["run"] == run_id
        # The page follows the run it started.
        assert any(s.value == f"Run {run_id}" for s in at.subheader)

        rec = _wait_finished(home)
        assert rec.status == "finished", f"{rec.status}: {rec.error}"
    finally:
        for r in store.list():
            cancel_run(store, r.run_id)

    at.run()
    assert not at.exception, _exceptions(at)
    assert any(t.startswith("Finished") for t in texts(at.success)), texts(at.success)
    labels = [m.label for m in at.metric]
    assert any(lbl.startswith("frozen baseline: validation accuracy") for lbl in labels), labels
    assert any(lbl.startswith("fine-tuned: validation accuracy") for lbl in labels), labels

    goto(at, "compare")
    assert at.selectbox[0].value == run_id
    labels = [m.label for m in at.metric]
    assert "Fine-tuned accuracy" in labels, labels
    assert any(lbl.startswith("Fine-tuned") and "recall" in lbl for lbl in labels), labels
    for m in at.metric:
        assert m.value.endswith("%")
    assert sum(c.value.startswith("Frozen baseline: ") for c in at.caption) == len(at.metric)
    assert not at.warning, texts(at.warning)
    # How far each layer group moved, from the statistics the worker stored.
    assert "How far each layer group's weights moved" in [h.value for h in at.subheader]
    assert any("relative to the pretrained ones" in c.value for c in at.caption)
