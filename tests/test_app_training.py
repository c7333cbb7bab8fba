"""The layers and train pages' issue-4 controls, driven headless with Streamlit's ``AppTest``."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest
from test_app import APP, TIMEOUT, _exceptions, app, by_label, goto, home, texts  # noqa: F401 - fixtures

from ftcore.core.config import BackboneConfig, DataConfig, FreezeConfig, RunConfig, TrainConfig


def _body(at):
    return [c for c in at.checkbox if not c.label.startswith(("**head**", "sub-block"))]


def test_layers_tick_sub_blocks_and_see_the_compute(app):
    goto(app, "pages/layers.py")
    by_label(app.button, "Head only").click().run()
    assert app.session_state["unfreeze"] == "head"
    assert by_label(app.metric, "Training compute per step").value == "1.00× a linear probe"
    parts = [c for c in app.checkbox if c.label.startswith("sub-block `blocks.5.")]
    assert len(parts) == 4 and not any(c.value for c in parts)  # tf_efficientnet_lite0's blocks.5: 4 blocks
    parts[-1].check().run()
    assert not app.exception, _exceptions(app)
    assert app.session_state["unfreeze"] == "groups:blocks.5.3"
    one = by_label(app.metric, "Training compute per step").value
    assert one != "1.00× a linear probe" and one.endswith("× a linear probe")
    group = next(c for c in _body(app) if c.label.startswith("`blocks.5`"))
    assert group.value is False, "a partly ticked group is not ticked as a whole"
    for c in [c for c in app.checkbox if c.label.startswith("sub-block `blocks.5.")][:3]:
        c.check().run()
    assert app.session_state["unfreeze"] == "groups:blocks.5"
    assert next(c for c in _body(app) if c.label.startswith("`blocks.5`")).value is True
    # unticking the group unticks its sub-blocks
    next(c for c in _body(app) if c.label.startswith("`blocks.5`")).uncheck().run()
    assert app.session_state["unfreeze"] == "head"
    assert not any(c.value for c in app.checkbox if c.label.startswith("sub-block `blocks.5."))


def test_train_page_draws_learning_rates_and_refuses_a_bad_setting(app):
    goto(app, "pages/train.py")
    assert len(app.get("plotly_chart")) >= 2, "the rate per group and the schedule are drawn before training"
    assert any(c.startswith("Device for this run: cpu") for c in texts(app.caption)), texts(app.caption)
    by_label(app.radio, "Backbone learning rates").set_value("layer-wise decay").run()
    assert not app.exception, _exceptions(app)
    assert by_label(app.slider, "Layer decay").value == 0.75
    by_label(app.number_input, "Epochs").set_value(2).run()
    by_label(app.number_input, "Warm-up epochs").set_value(3.0).run()
    assert any("warm-up epochs 3.0 is not in [0, 2)" in t for t in texts(app.error)), texts(app.error)
    assert by_label(app.button, "Start training").disabled


def test_load_the_configuration_of_a_past_run(app, home):
    from ftcore.runs.store import RunStore

    cfg = RunConfig(BackboneConfig("test_resnet", "none"), FreezeConfig("last:2"), DataConfig(str(home / "d")),
                    TrainConfig(epochs=7, lr=0.01, layer_decay=0.6, warmup_epochs=1, augment="standard", seed=5,
                                label_smoothing=0.1, early_stopping_patience=2, img_size=96))
    rid = RunStore(home).create_run(cfg)
    goto(app, "pages/train.py")
    by_label(app.selectbox, "Or the configuration of a past run").set_value(rid).run()
    by_label(app.button, "Load configuration").click().run()
    assert not app.exception, _exceptions(app)
    ss = app.session_state
    assert (ss["backbone"], ss["unfreeze"], ss["data_dir"]) == ("test_resnet", "last:2", str(home / "d"))
    assert (ss["epochs"], ss["lr"], ss["lr_mode"], ss["layer_decay_value"]) == (7, 0.01, "layer-wise decay", 0.6)
    assert (ss["augment"], ss["seed"], ss["early_stopping_patience"], ss["img_size"]) == ("standard", 5, 2, 96)
    assert by_label(app.number_input, "Epochs").value == 7
    assert by_label(app.slider, "Layer decay").value == 0.6
    # the page's configuration is the loaded one, ready to run again or to download
    assert by_label(app.select_slider, "Learning rate").value == 0.01


def test_finished_run_shows_what_each_layer_group_did(home):
    from ftcore.runs.store import RunStore
    from ftcore.train.monitor import LayerStats

    store = RunStore(home)
    cfg = RunConfig(BackboneConfig("test_resnet", "none"), FreezeConfig("all"), DataConfig(str(home)),
                    TrainConfig(epochs=2, img_size=32))
    rid = store.create_run(cfg)
    for ep in (1, 2):
        store.add_epoch(rid, "finetuned", ep, train_loss=1.0, train_accuracy=0.5, train_macro_recall=0.5,
                        val_loss=1.0, val_accuracy=0.5, val_macro_recall=0.5, seconds=1.0, images_per_second=10.0)
        store.add_layer_stats(rid, "finetuned", ep, [LayerStats("stem", 0, 0.01 * ep, 0.5, 1e-4, True),
                                                     LayerStats("head", 1, 0.2 * ep, 2.0, 1e-3, True)])
    store.update(rid, status="finished")
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.query_params["run"] = rid
    at.run()
    goto(at, "pages/train.py")
    assert any("What fine-tuning did to each layer group" in m for m in texts(at.markdown))
