"""ftcore.core.config: parsing of unfreeze presets and validation of the run configuration."""

from __future__ import annotations

import dataclasses
import json

import pytest

from ftcore.core.config import (
    SECTIONS,
    BackboneConfig,
    DataConfig,
    FreezeConfig,
    RunConfig,
    TrainConfig,
    parse_unfreeze,
)
from ftcore.core.errors import ConfigError, FtcoreError
from ftcore.core.fields import FieldSpec, field_specs


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
    with pytest.raises(ConfigError, match=r"The 'name' parameter \(--model\) must be a non-empty str. Got '  '"):
        BackboneConfig("  ")
    with pytest.raises(ConfigError, match=r"The 'weights' parameter \(--weights\) must be a non-empty str. Got ''. "
                                          r"Use 'auto', 'none'"):
        BackboneConfig("test_resnet", "")


def test_data_config_validation():
    assert DataConfig("x").val_fraction == 0.2
    with pytest.raises(ConfigError, match=r"The 'train_dir' parameter \(--data\) must be a non-empty folder path"):
        DataConfig("")
    for bad in (0.0, 1.0, -0.1, 1.5, float("nan")):
        with pytest.raises(ConfigError, match=r"The 'val_fraction' parameter \(--val-fraction\) must be a float in "
                                              r"\(0, 1\). Got .*\. Use e.g. 0.2"):
            DataConfig("x", None, bad)


def test_data_config_needs_its_folder_explicitly():
    """The data folder has no default (an empty default failed its own validation): leaving it out says so."""
    with pytest.raises(TypeError, match="missing 1 required positional argument: 'train_dir'"):
        DataConfig()  # type: ignore[call-arg]
    assert DataConfig(train_dir="/d") == DataConfig("/d", None, 0.2)
    with pytest.raises(ConfigError, match=r"The 'train_dir' parameter \(--data\) must be given in section 'data'.* "
                                          r"Got nothing"):
        RunConfig.from_dict({"train": {"epochs": 2}})
    assert RunConfig().data.train_dir == "."  # a RunConfig's own default stays valid


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        ({"epochs": 0}, r"'epochs' parameter \(--epochs\) must be an int in \[1, 1000\]. Got 0\."),
        ({"epochs": 1001}, r"'epochs' parameter \(--epochs\) must be an int in \[1, 1000\]. Got 1001\."),
        ({"epochs": 2.0}, r"'epochs' parameter .* Got 2.0\."),
        ({"epochs": True}, r"'epochs' parameter .* Got True\."),
        ({"batch_size": 0}, r"'batch_size' parameter \(--batch-size\) must be an int in \[1, 4096\]"),
        ({"seed": -1}, r"'seed' parameter \(--seed\) must be an int in \[0, 4294967295\]. Got -1\."),
        ({"num_workers": 65}, r"'num_workers' parameter \(--workers\) must be an int in \[0, 64\]. Got 65\."),
        ({"img_size": 8}, r"'img_size' parameter \(--img-size\) must be None or an int in \[16, 1024\]. Got 8\."),
        ({"img_size": 2048}, r"'img_size' parameter .* Got 2048\."),
        ({"lr": 0}, r"The 'lr' parameter \(--lr\) must be a float in \(0, 10\]. Got 0\. A usual value is 1e-3"),
        ({"lr": -1.0}, r"The 'lr' parameter \(--lr\) must be a float in \(0, 10\]. Got -1.0\."),
        ({"lr": float("nan")}, r"'lr' parameter .* Got nan\."),
        ({"lr": float("inf")}, r"'lr' parameter .* Got inf\."),
        ({"lr": "fast"}, r"'lr' parameter .* Got 'fast'\."),
        ({"weight_decay": -0.1}, r"'weight_decay' parameter \(--weight-decay\) must be a float in \[0, 1\). Got -0.1"),
        ({"backbone_lr_scale": 0}, r"'backbone_lr_scale' parameter \(--backbone-lr-scale\) must be a float in "
                                   r"\(0, 1\]. Got 0\."),
        ({"backbone_lr_scale": 1.5}, r"'backbone_lr_scale' parameter .* Got 1.5\."),
        ({"weight_decay": 1.0}, r"'weight_decay' parameter .* in \[0, 1\). Got 1.0\."),
        ({"layer_decay": 0}, r"'layer_decay' parameter \(--layer-decay\) must be None or a float in \(0, 1\]. Got 0\. "
                             r"0.75 is usual"),
        ({"layer_decay": 1.5}, r"'layer_decay' parameter .* Got 1.5\."),
        ({"warmup_epochs": -1}, r"'warmup_epochs' parameter \(--warmup-epochs\) must be a float in \[0, 1000\). "
                                r"Got -1\."),
        ({"epochs": 2, "warmup_epochs": 2}, r"'warmup_epochs' parameter \(--warmup-epochs\) must be a float in "
                                            r"\[0, 2\) \(below 'epochs'\). Got 2\."),
        ({"unfreeze_after": 3}, r"'unfreeze_after' parameter \(--unfreeze-after\) must be an int in \[0, 3\) "
                                r"\(below 'epochs', or the ticked groups would never learn\). Got 3\."),
        ({"unfreeze_after": -1}, r"'unfreeze_after' parameter .* Got -1\."),
        ({"augment": "heavy"}, r"'augment' parameter \(--augment\) must be a str among \{'none', 'light', "
                               r"'standard'\}. Got 'heavy'\."),
        ({"label_smoothing": 0.6}, r"'label_smoothing' parameter \(--label-smoothing\) must be a float in \[0, 0.5\]"),
        ({"early_stopping_patience": -1}, r"'early_stopping_patience' parameter \(--patience\) must be an int"),
        ({"early_stopping_metric": "f1"}, r"'early_stopping_metric' parameter \(--early-stopping-metric\) must be a "
                                          r"str among \{'val_loss', 'val_accuracy', 'val_macro_recall'\}"),
        ({"device": "tpu"}, r"'device' parameter \(--device\) must be a str among \{'auto', 'cpu', 'cuda', 'mps'\}"),
        ({"batch_size": 1, "update_bn": True}, r"'batch_size' parameter \(--batch-size\) must be an int in \[2, 4096\] "
                                               r"when 'update_bn' \(--update-bn\) is on.*at least 2 images a batch"),
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
    with pytest.raises(ConfigError, match=r"The 'epochs' parameter \(--epochs\) must be an int in \[1, 1000\]"):
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
    with pytest.raises(ConfigError, match=r"The 'unfreeze_after' parameter \(--unfreeze-after\) must be 0 when "
                                          r"'unfreeze' \(--unfreeze\) is 'head'.* Got 1\."):
        RunConfig(freeze=FreezeConfig("head"), train=TrainConfig(epochs=2, unfreeze_after=1))


@pytest.mark.parametrize("train,pattern", [({"update_bn": "false"}, r"'update_bn' parameter \(--update-bn\) must be a "
                                                                    r"bool \(true or false, not a string\). Got 'false'"),
                                           ({"feature_cache": 0}, r"'feature_cache' parameter \(--no-feature-cache\) "
                                                                  r"must be a bool .* Got 0\."),
                                           ({"lr": "0.01"}, r"'lr' parameter \(--lr\) .* Got '0.01'")])
def test_config_file_values_of_the_wrong_type_are_refused(train, pattern):
    from ftcore.core.config import RunConfig
    from ftcore.core.errors import ConfigError

    with pytest.raises(ConfigError, match=pattern):
        RunConfig.from_dict({"data": {"train_dir": "x"}, "train": train})


@pytest.mark.parametrize("d,pattern", [({"train": 5}, "section 'train' is 5; it must be an object"),
                                       ({"data": [1, 2]}, "section 'data' is \\[1, 2\\]"),
                                       ({"data": {"train_dir": 5}}, r"'train_dir' parameter \(--data\) must be a "
                                                                    r"non-empty folder path \(a str\). Got 5\."),
                                       ({"data": {"train_dir": "x", "val_dir": ["v"]}},
                                        r"'val_dir' parameter \(--val\) must be None or a non-empty folder path.* "
                                        r"Got \['v'\]\."),
                                       (5, r"a run configuration is a JSON object with the sections backbone, "
                                           r"freeze, data and train; got 5 \(int\)"),
                                       ("text", r"got 'text' \(str\)"), (None, r"got None"),
                                       ([1, 2], r"got \[1, 2\] \(list\)")])
def test_config_sections_and_paths_of_the_wrong_type_are_refused(d, pattern):
    from ftcore.core.config import RunConfig
    from ftcore.core.errors import ConfigError

    with pytest.raises(ConfigError, match=pattern):
        RunConfig.from_dict(d)


# --- one field list: every field carries its metadata ------------------------------------

ALL_FIELDS = [(section, f) for section, klass in SECTIONS.items() for f in dataclasses.fields(klass)]


def _other_value(spec: FieldSpec, default):
    """A valid value of the field other than its default."""
    if spec.kind == "bool":
        return not default
    if spec.choices:
        return next(c for c in spec.choices if c != default)
    if spec.kind == "path":
        return "/some/folder"
    if spec.kind == "str":
        return {"--unfreeze": "groups:blocks.5.2,blocks.6"}.get(spec.flag, "something_else")
    lo, hi = spec.widget_range(step=1 if spec.kind == "int" else 0.01)
    value = (lo if lo is not None else 0) + (1 if spec.kind == "int" else 0.01)
    if value == default:
        value = value + (1 if spec.kind == "int" else 0.01)
    assert hi is None or value <= hi
    return value


def _bad_value(spec: FieldSpec):
    """A value the field refuses."""
    if spec.kind in ("int", "float"):
        return (spec.high or 0) + 10**10
    return 12345 if spec.kind in ("str", "path") else "yes"


@pytest.mark.parametrize("section, f", ALL_FIELDS, ids=[f"{s}.{f.name}" for s, f in ALL_FIELDS])
def test_every_field_has_metadata(section, f):
    spec = f.metadata.get("spec")
    assert isinstance(spec, FieldSpec), f"{section}.{f.name} has no FieldSpec (declare it with setting(...))"
    assert spec.label and spec.help and spec.flag and spec.flag.startswith("--")
    assert spec.kind in ("int", "float", "bool", "str", "path")
    if spec.kind == "bool":
        default = f.default
        assert spec.flag.startswith("--no-") == (default is True), f"{spec.flag} turns {f.name} to not {default}"
    flags = [s.flag for klass in SECTIONS.values() for s in field_specs(klass).values()]
    assert len(flags) == len(set(flags)), "flags are unique"


@pytest.mark.parametrize("section, f", ALL_FIELDS, ids=[f"{s}.{f.name}" for s, f in ALL_FIELDS])
def test_every_field_round_trips_through_to_dict_and_from_dict(section, f, tmp_path):
    spec = f.metadata["spec"]
    default = f.default if f.default is not dataclasses.MISSING else None
    value = _other_value(spec, default)
    d = _cfg().to_dict()
    d[section][f.name] = value
    if section == "train" and f.name in ("warmup_epochs", "unfreeze_after"):
        d["train"]["epochs"] = 5
    if section == "train" and f.name == "unfreeze_after":
        d["freeze"]["unfreeze"] = "all"
    cfg = RunConfig.from_dict(d)
    assert getattr(getattr(cfg, section), f.name) == value
    assert RunConfig.from_dict(cfg.to_dict()) == cfg
    p = tmp_path / "config.json"
    p.write_text(cfg.to_json())
    assert RunConfig.load(p) == cfg


@pytest.mark.parametrize("section, f", [(s, f) for s, f in ALL_FIELDS if f.name != "unfreeze"],
                         ids=[f"{s}.{f.name}" for s, f in ALL_FIELDS if f.name != "unfreeze"])
def test_a_bad_value_is_refused_naming_the_key_and_the_flag(section, f):
    spec = f.metadata["spec"]
    d = _cfg().to_dict()
    d[section][f.name] = bad = _bad_value(spec)
    with pytest.raises(ConfigError) as ei:
        RunConfig.from_dict(d)
    msg = str(ei.value)
    assert msg.startswith(f"The '{f.name}' parameter ({spec.flag}) must be {spec.allowed()}. Got {bad!r}."), msg


def test_unfreeze_refusal_names_the_preset():
    with pytest.raises(ConfigError, match=r"The 'unfreeze' parameter \(--unfreeze\) must be a non-empty str"):
        FreezeConfig("")
    with pytest.raises(ConfigError, match=r"unfreeze preset 'bogus' is not understood"):
        FreezeConfig("bogus")


def test_a_config_file_holding_a_number_is_a_config_error_naming_the_file(tmp_path):
    p = tmp_path / "config.json"
    p.write_text("5")
    with pytest.raises(ConfigError, match=rf"run configuration {p}: a run configuration is a JSON object .* got 5"):
        RunConfig.load(p)
    with pytest.raises(ConfigError, match=r"run configuration upload.json: .*got 5 \(int\)"):
        RunConfig.from_json(b"5", "upload.json")
    with pytest.raises(ConfigError, match=r"cannot read run configuration upload.json"):
        RunConfig.from_json(b"\xff\xfe not utf-8", "upload.json")
    assert RunConfig.from_json(_cfg().to_json(), "x.json") == _cfg()


@pytest.mark.parametrize("section", [[], 0, False, ""])
def test_a_section_that_is_not_an_object_is_refused_even_when_empty(section):
    d = RunConfig().to_dict()
    d["train"] = section
    with pytest.raises(ConfigError, match="section 'train' is .* it must be an object"):
        RunConfig.from_dict(d)


def test_an_int_too_large_for_a_float_is_refused_naming_the_key():
    d = RunConfig().to_dict()
    d["train"]["epochs"] = 10**400
    with pytest.raises(ConfigError, match=r"The 'epochs' parameter \(--epochs\)"):
        RunConfig.from_dict(d)


def test_gradual_unfreezing_with_head_only_is_refused_whatever_the_spacing():
    with pytest.raises(ConfigError, match="'unfreeze_after'"):
        RunConfig(freeze=FreezeConfig(unfreeze=" head"), train=TrainConfig(epochs=2, unfreeze_after=1))
