"""Augmentation presets, deterministic validation, and the experiment's new options end to end."""

from __future__ import annotations

import dataclasses
import math
import random

import numpy as np
import pytest
import timm
import torch
from conftest import tiny_run_config
from PIL import Image

from ftcore.core.errors import ConfigError
from ftcore.data.augment import build_transforms
from ftcore.jobs.writer import run_experiment
from ftcore.train import experiment as training


@pytest.fixture(scope="module")
def model():
    return timm.create_model("test_resnet", pretrained=False, num_classes=2)


def _image(seed=0, size=48):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8))


def _apply_with_seed(tf, img, seed):
    random.seed(seed)
    torch.manual_seed(seed)
    np.random.seed(seed)
    return tf(img)


@pytest.mark.parametrize("preset", ["none", "light", "standard"])
def test_validation_transform_is_deterministic_for_every_preset(model, preset):
    _, val_tf, short = build_transforms(model, 32, preset)
    img = _image()
    a, b = _apply_with_seed(val_tf, img, 1), _apply_with_seed(val_tf, img, 2)
    assert a.shape == (3, 32, 32) and torch.equal(a, b)
    from ftcore.data import split

    assert split.build_transforms is build_transforms, "one builder of the transforms"
    assert short == build_transforms(model, 32)[2] == math.ceil(32 / model.pretrained_cfg["crop_pct"])


def test_none_trains_on_the_validation_transform(model):
    train_tf, val_tf, _ = build_transforms(model, 32, "none")
    assert train_tf is val_tf


@pytest.mark.parametrize("preset", ["light", "standard"])
def test_light_and_standard_are_random(model, preset):
    train_tf, _, _ = build_transforms(model, 32, preset)
    img = _image()
    outs = [_apply_with_seed(train_tf, img, s) for s in range(4)]
    assert all(o.shape == (3, 32, 32) for o in outs)
    assert any(not torch.equal(outs[0], o) for o in outs[1:])
    assert torch.equal(_apply_with_seed(train_tf, img, 7), _apply_with_seed(train_tf, img, 7)), "seeded"


def test_standard_uses_randaugment_and_light_does_not(model):
    light, _, _ = build_transforms(model, 32, "light")
    standard, _, _ = build_transforms(model, 32, "standard")
    assert "RandAugment" in repr(standard) and "RandAugment" not in repr(light)
    assert "scale=(0.5, 1.0)" in repr(light) and "scale=(0.08, 1.0)" in repr(standard)


def test_unknown_preset(model):
    with pytest.raises(ConfigError, match=r"augmentation preset 'heavy' is not one of none, light, standard"):
        build_transforms(model, 32, "heavy")


def test_experiment_validates_on_deterministic_inputs_and_stores_layer_stats(make_image_folder, store, monkeypatch):
    """With the 'standard' preset the training images change between passes; the validation images never do."""
    data = make_image_folder(classes={"red": 8, "green": 8})
    cfg = tiny_run_config(data, unfreeze="all", epochs=2, baseline=False)
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, augment="standard", layer_decay=0.5,
                                                             warmup_epochs=0.5))
    seen = {}
    real_fit = training.fit

    def spy_fit(model, tl, vl, *a, **kw):
        seen["loaders"] = (tl, vl)
        return real_fit(model, tl, vl, *a, **kw)

    monkeypatch.setattr(training, "fit", spy_fit)
    rid = store.create_run(cfg)
    summary = run_experiment(cfg, store, rid)
    assert summary["status"] == "finished"
    tl, vl = seen["loaders"]

    def batches(loader, seed):
        random.seed(seed)
        torch.manual_seed(seed)
        return torch.cat([x for x, _ in loader])

    assert torch.equal(batches(vl, 1), batches(vl, 2))
    assert not torch.equal(batches(tl, 1), batches(tl, 2))

    df = store.layer_stats(rid)
    groups = ["stem", "layer1.0", "layer2.0", "layer3.0", "layer4.0", "head"]
    assert df["model"].unique().tolist() == ["finetuned"]
    assert df[df["epoch"] == 1]["layer_group"].tolist() == groups and df["epoch"].max() == 2
    assert df["trainable"].all() and (df["relative_change"] > 0).all() and (df["grad_norm"] > 0).all()
    e2 = df[df["epoch"] == 2].set_index("layer_group")["lr"]
    # layer-wise decay 0.5: every group learns at half the rate of the next one towards the head
    np.testing.assert_allclose((e2.iloc[:-1].to_numpy() / e2.iloc[1:].to_numpy()), 0.5, rtol=1e-6)
    info = store.get(rid).info
    assert info["device"] == "cpu" and info["device_text"] == "cpu, float32"
    assert summary["finetuned"]["best_epoch"] is None and summary["finetuned"]["stopped_early"] is False
