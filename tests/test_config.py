"""ftcore.core.config: parsing of unfreeze presets and validation of the run configuration."""

from __future__ import annotations

import dataclasses
import json

import pytest

from ftcore.core.config import (
    BackboneConfig,
    DataConfig,
    FreezeConfig,
    RunConfig,
    TrainConfig,
    parse_unfreeze,
)
from ftcore.core.errors import ConfigError, FtcoreError


@pytest.mark.parametrize(
    "spec, expected",
    [("head", ("head", 0)), ("all", ("all", 0)), ("last:1", ("last", 1)), ("last:12", ("last", 12)),
     ("  last:3 ", ("last", 3))],
)
def test_parse_unfreeze_valid(spec, expected):
    assert parse_unfreeze(spec) == expected


@pytest.mark.parametrize("spec", ["bogus", "last", "last:", "last:x", "last:-1", "Head", "head,all", ""])
def test_parse_unfreeze_invalid_names_the_spec(spec):
    with pytest.raises(ConfigError, match=r"is not understood; use 'head', 'all' or 'last:N'") as ei:
        parse_unfreeze(spec)
    assert repr(spec) in str(ei.value)


def test_parse_unfreeze_last_zero():
    with pytest.raises(ConfigError, match=r"'last:0': N must be at least 1; use 'head'"):
        parse_unfreeze("last:0")


def test_errors_subclass_builtins():
    with pytest.raises(ValueError):
        parse_unfreeze("nope")
    assert issubclass(ConfigError, FtcoreError)


def test_freeze_config_group_names():
    assert FreezeConfig("all").group_names is None
    assert FreezeConfig("last:2").group_names is None
    assert FreezeConfig("groups:stem, layer1.0 ,head").group_names == ("stem", "layer1.0", "head")
    with pytest.raises(ConfigError, match="'groups:' names no layer group"):
        FreezeConfig("groups:")
    with pytest.raises(ConfigError, match="'bogus' is not understood"):
        FreezeConfig("bogus")


def test_backbone_config_requires_name_and_weights():
    assert BackboneConfig() == BackboneConfig("tf_efficientnet_lite0", "auto")
    with pytest.raises(ConfigError, match="backbone name is empty"):
        BackboneConfig("  ")
    with pytest.raises(ConfigError, match="weights is empty; use 'auto', 'none'"):
        BackboneConfig("test_resnet", "")


def test_data_config_validation():
    assert DataConfig("x").val_fraction == 0.2
    with pytest.raises(ConfigError, match="no data folder given"):
        DataConfig("")
    for bad in (0.0, 1.0, -0.1, 1.5, float("nan")):
        with pytest.raises(ConfigError, match=r"validation fraction .* is outside \(0, 1\)"):
            DataConfig("x", None, bad)


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        ({"epochs": 0}, r"epochs 0 is not a whole number in \[1, 1000\]"),
        ({"epochs": 1001}, r"epochs 1001 is not a whole number"),
        ({"epochs": 2.0}, r"epochs 2.0 is not a whole number"),
        ({"epochs": True}, r"epochs True is not a whole number"),
        ({"batch_size": 0}, r"batch size 0 is not a whole number in \[1, 4096\]"),
        ({"seed": -1}, r"seed -1 is not a whole number"),
        ({"num_workers": 65}, r"data-loader workers 65 is not a whole number in \[0, 64\]"),
        ({"img_size": 8}, r"image size 8 is not a whole number in \[16, 1024\]"),
        ({"img_size": 2048}, r"image size 2048"),
        ({"lr": 0}, r"learning rate 0 is not in \(0, 10\]"),
        ({"lr": -1.0}, r"learning rate -1.0 is not in \(0, 10\]"),
        ({"lr": float("nan")}, r"learning rate nan"),
        ({"lr": float("inf")}, r"learning rate inf"),
        ({"lr": "fast"}, r"learning rate 'fast'"),
        ({"weight_decay": -0.1}, r"weight decay -0.1 is not in \[0, 1\)"),
        ({"backbone_lr_scale": 0}, r"backbone learning-rate scale 0 is not in \(0, 1\]"),
        ({"backbone_lr_scale": 1.5}, r"backbone learning-rate scale 1.5 is not in \(0, 1\]"),
        ({"weight_decay": 1.0}, r"weight decay 1.0 is not in \[0, 1\)"),
        ({"layer_decay": 0}, r"layer decay 0 is not in \(0, 1\]; 0.75 is usual"),
        ({"layer_decay": 1.5}, r"layer decay 1.5 is not in \(0, 1\]"),
        ({"warmup_epochs": -1}, r"warm-up epochs -1 is not in \[0, 3\)"),
        ({"epochs": 2, "warmup_epochs": 2}, r"warm-up epochs 2 is not in \[0, 2\)"),
        ({"unfreeze_after": 3}, r"unfreeze after 3 epochs is not below the 3 epochs of training"),
        ({"unfreeze_after": -1}, r"unfreeze-after epochs -1 is not a whole number"),
        ({"augment": "heavy"}, r"augmentation preset 'heavy' is not one of none, light, standard"),
        ({"label_smoothing": 0.6}, r"label smoothing 0.6 is not in \[0, 0.5\]"),
        ({"early_stopping_patience": -1}, r"early-stopping patience -1 is not a whole number"),
        ({"early_stopping_metric": "f1"}, r"early-stopping metric 'f1' is not one of val_loss, val_accuracy, "
                                          r"val_macro_recall"),
        ({"device": "tpu"}, r"device 'tpu' is not one of auto, cpu, cuda, mps"),
        ({"batch_size": 1, "update_bn": True}, r"batch size 1 cannot be used with update_bn \(--update-bn\).*at "
                                               r"least 2 images a batch"),
    ],
)
def test_train_config_rejects_out_of_range(kwargs, pattern):
    with pytest.raises(ConfigError, match=pattern):
        TrainConfig(**kwargs)


def test_train_config_defaults():
    t = TrainConfig()
    assert (t.epochs, t.batch_size, t.lr, t.backbone_lr_scale, t.update_bn, t.baseline) == (3, 32, 1e-3, 0.1, False,
                                                                                            True)


def test_train_config_accepts_edges():
    t = TrainConfig(epochs=1, batch_size=1, lr=10.0, img_size=16, seed=2**32 - 1, weight_decay=0.0,
                    backbone_lr_scale=1.0)
    assert (t.epochs, t.batch_size, t.lr, t.img_size) == (1, 1, 10.0, 16)
    assert TrainConfig(img_size=None).img_size is None


@pytest.mark.parametrize("make", [lambda: TrainConfig(weight_decay="x"), lambda: DataConfig("x", None, "x"),
                                  lambda: DataConfig("x", None, None)])
def test_non_numeric_values_raise_config_error(make):
    with pytest.raises(ConfigError):
        make()


def test_configs_are_frozen():
    t = TrainConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        t.epochs = 5  # type: ignore[misc]


def _cfg() -> RunConfig:
    return RunConfig(
        backbone=BackboneConfig("test_resnet", "none"),
        freeze=FreezeConfig("last:2"),
        data=DataConfig("/data/x", "/data/v", 0.3),
        train=TrainConfig(epochs=2, batch_size=8, lr=0.01, backbone_lr_scale=0.5, img_size=32, update_bn=True,
                          baseline=False, seed=7),
    )


def test_run_config_round_trip_dict_json_file(tmp_path):
    cfg = _cfg()
    d = cfg.to_dict()
    assert d["backbone"] == {"name": "test_resnet", "weights": "none"}
    assert d["train"]["img_size"] == 32 and d["data"]["val_dir"] == "/data/v"
    assert RunConfig.from_dict(d) == cfg
    assert json.loads(cfg.to_json()) == d
    p = tmp_path / "config.json"
    p.write_text(cfg.to_json(), encoding="utf-8")
    assert RunConfig.load(p) == cfg


def test_run_config_from_dict_missing_sections_use_defaults():
    cfg = RunConfig.from_dict({"data": {"train_dir": "/d"}})
    assert cfg.data.train_dir == "/d"
    assert cfg.train == TrainConfig() and cfg.freeze == FreezeConfig() and cfg.backbone == BackboneConfig()


def test_run_config_from_dict_rejects_unknown_section_and_key():
    with pytest.raises(ConfigError, match=r"unknown configuration sections \['optimizer'\]"):
        RunConfig.from_dict({"optimizer": {}})
    with pytest.raises(ConfigError, match=r"unknown keys \['momentum'\] in 'train'"):
        RunConfig.from_dict({"data": {"train_dir": "/d"}, "train": {"momentum": 0.9}})


def test_run_config_from_dict_validates_values():
    with pytest.raises(ConfigError, match="epochs 0"):
        RunConfig.from_dict({"data": {"train_dir": "/d"}, "train": {"epochs": 0}})


def test_run_config_load_bad_file_names_it(tmp_path):
    p = tmp_path / "broken.json"
    p.write_text("{not json", encoding="utf-8")
    with pytest.raises(ConfigError, match="cannot read run configuration .*broken.json"):
        RunConfig.load(p)
    with pytest.raises(ConfigError, match="missing.json"):
        RunConfig.load(tmp_path / "missing.json")


def test_new_training_options_defaults_and_round_trip(tmp_path):
    t = TrainConfig()
    assert (t.layer_decay, t.warmup_epochs, t.unfreeze_after, t.augment, t.label_smoothing,
            t.early_stopping_patience, t.early_stopping_metric, t.device) == (None, 0.0, 0, "light", 0.0, 0,
                                                                              "val_loss", "auto")
    cfg = dataclasses.replace(_cfg(), train=TrainConfig(epochs=4, layer_decay=0.75, warmup_epochs=0.5,
                                                        unfreeze_after=1, augment="standard", label_smoothing=0.1,
                                                        early_stopping_patience=2,
                                                        early_stopping_metric="val_macro_recall", device="cpu"))
    p = tmp_path / "c.json"
    p.write_text(cfg.to_json())
    assert RunConfig.load(p) == cfg


def test_config_of_an_older_version_loads_with_defaults():
    """A config.json written before the new training options existed still loads."""
    old = {"backbone": {"name": "test_resnet", "weights": "none"}, "freeze": {"unfreeze": "all"},
           "data": {"train_dir": "/d", "val_dir": None, "val_fraction": 0.2},
           "train": {"epochs": 2, "batch_size": 8, "lr": 0.01, "backbone_lr_scale": 0.1, "img_size": 32,
                     "update_bn": False, "baseline": True, "seed": 0, "weight_decay": 0.01, "num_workers": 0}}
    cfg = RunConfig.from_dict(old)
    assert cfg.train.layer_decay is None and cfg.train.augment == "light"


def test_gradual_unfreezing_needs_groups_to_unfreeze():
    with pytest.raises(ConfigError, match="unfreeze after 1 epochs needs layer groups to unfreeze, but the choice is "
                                          "'head' only"):
        RunConfig(freeze=FreezeConfig("head"), train=TrainConfig(epochs=2, unfreeze_after=1))


@pytest.mark.parametrize("train,pattern", [({"update_bn": "false"}, "'update_bn' is 'false'; it must be true or false"),
                                           ({"feature_cache": 0}, "'feature_cache' is 0"),
                                           ({"lr": "0.01"}, "learning rate '0.01'")])
def test_config_file_values_of_the_wrong_type_are_refused(train, pattern):
    from ftcore.core.config import RunConfig
    from ftcore.core.errors import ConfigError

    with pytest.raises(ConfigError, match=pattern):
        RunConfig.from_dict({"data": {"train_dir": "x"}, "train": train})


@pytest.mark.parametrize("d,pattern", [({"train": 5}, "section 'train' is 5; it must be an object"),
                                       ({"data": [1, 2]}, "section 'data' is \\[1, 2\\]"),
                                       ({"data": {"train_dir": 5}}, "'train_dir' is 5; it must be a folder path"),
                                       ({"data": {"train_dir": "x", "val_dir": ["v"]}}, "'val_dir' is \\['v'\\]")])
def test_config_sections_and_paths_of_the_wrong_type_are_refused(d, pattern):
    from ftcore.core.config import RunConfig
    from ftcore.core.errors import ConfigError

    with pytest.raises(ConfigError, match=pattern):
        RunConfig.from_dict(d)
