"""The layers and train pages' issue-4 controls, driven headless with Streamlit's ``AppTest``."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest
from test_app import APP, TIMEOUT, _exceptions, app, by_label, goto, home, texts, walk  # noqa: F401 - fixtures

from ftcore.core.config import BackboneConfig, DataConfig, FreezeConfig, RunConfig, TrainConfig


def _body(at):
    return [c for c in at.checkbox if not c.label.startswith(("**head**", "sub-block"))]


def test_layers_tick_sub_blocks_and_see_the_compute(app):
    goto(app, "layers")
    by_label(app.button, "Head only").click().run()
    assert walk(app).unfreeze == "head"
    assert by_label(app.metric, "Training compute per step").value == "1.00× a linear probe"
    parts = [c for c in app.checkbox if c.label.startswith("sub-block `blocks.5.")]
    assert len(parts) == 4 and not any(c.value for c in parts)  # tf_efficientnet_lite0's blocks.5: 4 blocks
    parts[-1].check().run()
    assert not app.exception, _exceptions(app)
    assert walk(app).unfreeze == "groups:blocks.5.3"
    one = by_label(app.metric, "Training compute per step").value
    assert one != "1.00× a linear probe" and one.endswith("× a linear probe")
    group = next(c for c in _body(app) if c.label.startswith("`blocks.5`"))
    assert group.value is False, "a partly ticked group is not ticked as a whole"
    for c in [c for c in app.checkbox if c.label.startswith("sub-block `blocks.5.")][:3]:
        c.check().run()
    assert walk(app).unfreeze == "groups:blocks.5"
    assert next(c for c in _body(app) if c.label.startswith("`blocks.5`")).value is True
    # unticking the group unticks its sub-blocks
    next(c for c in _body(app) if c.label.startswith("`blocks.5`")).uncheck().run()
    assert walk(app).unfreeze == "head"
    assert not any(c.value for c in app.checkbox if c.label.startswith("sub-block `blocks.5."))


def test_train_page_draws_learning_rates_and_refuses_a_bad_setting(app):
    goto(app, "train")
    assert len(app.get("plotly_chart")) >= 2, "the rate per group and the schedule are drawn before training"
    assert any(c.startswith("Device for this run: cpu") for c in texts(app.caption)), texts(app.caption)
    by_label(app.radio, "Backbone learning rates").set_value("layer-wise decay").run()
    assert not app.exception, _exceptions(app)
    assert by_label(app.slider, "Layer decay").value == 0.75
    by_label(app.number_input, "Epochs").set_value(2).run()
    by_label(app.number_input, "Warm-up epochs").set_value(3.0).run()
    assert any("The 'warmup_epochs' parameter (--warmup-epochs) must be a float in [0, 2) (below 'epochs'). Got 3.0."
               in t for t in texts(app.error)), texts(app.error)
    assert by_label(app.button, "Start training").disabled


def test_load_the_configuration_of_a_past_run(app, home):
    from ftcore.runs.store import RunStore

    cfg = RunConfig(BackboneConfig("test_resnet", "none"), FreezeConfig("last:2"), DataConfig(str(home / "d")),
                    TrainConfig(epochs=7, lr=0.01, layer_decay=0.6, warmup_epochs=1, augment="standard", seed=5,
                                label_smoothing=0.1, early_stopping_patience=2, img_size=96))
    rid = RunStore(home).create_run(cfg)
    goto(app, "train")
    by_label(app.selectbox, "Or the configuration of a past run").set_value(rid).run()
    by_label(app.button, "Load configuration").click().run()
    assert not app.exception, _exceptions(app)
    w = walk(app)
    assert (w.backbone, w.unfreeze, w.data_dir) == ("test_resnet", "last:2", str(home / "d"))
    assert (w.train["epochs"], w.train["lr"], w.lr_mode, w.layer_decay_value) == (7, 0.01, "layer-wise decay", 0.6)
    assert (w.train["augment"], w.train["seed"], w.train["early_stopping_patience"], w.train["img_size"]) == (
        "standard", 5, 2, 96)
    assert by_label(app.number_input, "Epochs").value == 7
    assert by_label(app.slider, "Layer decay").value == 0.6
    # the page's configuration is the loaded one, ready to run again or to download
    assert by_label(app.select_slider, "Learning rate").value == 0.01
    assert w.run_config() == cfg


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
    goto(at, "train")
    assert any("What fine-tuning did to each layer group" in m for m in texts(at.markdown))


def test_a_configuration_file_holding_a_number_is_refused_naming_the_file(app):
    goto(app, "train")
    by_label(app.file_uploader, "A configuration file (config.json)").set_value(
        ("my_run.json", b"5", "application/json")).run()
    by_label(app.button, "Load configuration").click().run()
    assert not app.exception, _exceptions(app)
    assert any(t.startswith("This configuration cannot be loaded: run configuration my_run.json: a run "
                            "configuration is a JSON object") and "got 5 (int)" in t for t in texts(app.error)), \
        texts(app.error)
    by_label(app.file_uploader, "A configuration file (config.json)").set_value(
        ("bad.json", b'{"data": {"train_dir": "/d"}, "train": {"lr": -1}}', "application/json")).run()
    by_label(app.button, "Load configuration").click().run()
    assert any("The 'lr' parameter (--lr) must be a float in (0, 10]. Got -1." in t for t in texts(app.error))
    assert walk(app).train["lr"] == TrainConfig().lr, "a refused file changes nothing"


def test_loading_a_configuration_with_every_setting_changed_gives_it_back(app, home):
    """The walk state holds every training setting: a loaded run configuration comes back whole from the page."""
    import dataclasses

    from ftcore.runs.store import RunStore

    train = TrainConfig(epochs=7, batch_size=8, lr=0.01, backbone_lr_scale=0.3, img_size=96, update_bn=True,
                        baseline=False, seed=5, weight_decay=0.05, num_workers=2, feature_cache=False,
                        channels_last=False, class_balance="loss", warmup_epochs=1.5, unfreeze_after=1,
                        augment="standard", label_smoothing=0.1, early_stopping_patience=2,
                        early_stopping_metric="val_accuracy", device="cpu")
    changed = {f.name for f in dataclasses.fields(TrainConfig) if getattr(train, f.name) != f.default}
    assert {f.name for f in dataclasses.fields(TrainConfig)} - changed == {"layer_decay"}  # changed in the test above
    cfg = RunConfig(BackboneConfig("test_resnet", "none"), FreezeConfig("last:2"),
                    DataConfig(str(home / "d"), str(home / "v"), 0.3), train)
    rid = RunStore(home).create_run(cfg)
    goto(app, "train")
    by_label(app.selectbox, "Or the configuration of a past run").set_value(rid).run()
    by_label(app.button, "Load configuration").click().run()
    assert not app.exception, _exceptions(app)
    assert not app.error, texts(app.error)
    assert walk(app).run_config() == cfg
    assert by_label(app.number_input, "Weight decay").value == 0.05
    assert by_label(app.checkbox, "Compute the frozen layers once (much faster)").value is False
