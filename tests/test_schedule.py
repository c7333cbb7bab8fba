"""ftcore.train.schedule: peak learning rate per layer group, warm-up and cosine, gradual unfreezing."""

from __future__ import annotations

import math

import pytest

from ftcore.core.config import TrainConfig
from ftcore.models.layers import describe_layer_groups, trainable_group_names
from ftcore.train.schedule import group_peak_lrs, lr_factor, lr_schedule, warmup_steps


@pytest.fixture(scope="module")
def groups():
    return describe_layer_groups("test_resnet")  # stem, layer1.0 .. layer4.0, head


def test_head_and_backbone_rates(groups):
    rates = group_peak_lrs(groups, trainable_group_names(groups, "last:2"), TrainConfig(lr=0.01, backbone_lr_scale=0.1))
    assert [(r.name, r.distance, r.trainable) for r in rates] == [
        ("stem", 5, False), ("layer1.0", 4, False), ("layer2.0", 3, False), ("layer3.0", 2, True),
        ("layer4.0", 1, True), ("head", 0, True)]
    assert [r.lr for r in rates] == pytest.approx([0, 0, 0, 0.001, 0.001, 0.01])


def test_layer_decay_rates(groups):
    rates = group_peak_lrs(groups, trainable_group_names(groups, "all"), TrainConfig(lr=0.01, layer_decay=0.75))
    assert [r.lr for r in rates] == pytest.approx([0.01 * 0.75 ** d for d in (5, 4, 3, 2, 1, 0)])
    # decay 1 gives every group the head's rate
    flat = group_peak_lrs(groups, trainable_group_names(groups, "all"), TrainConfig(lr=0.01, layer_decay=1.0))
    assert {r.lr for r in flat} == {0.01}


def test_lr_factor_without_warmup_is_pytorch_cosine():
    # CosineAnnealingLR(T_max=T, eta_min=0): lr_k = lr * (1 + cos(pi k / T)) / 2
    assert [lr_factor(k, 4) for k in range(4)] == pytest.approx([(1 + math.cos(math.pi * k / 4)) / 2
                                                                 for k in range(4)])


def test_lr_factor_warmup_and_start():
    assert [lr_factor(k, 10, warmup=3) for k in range(4)] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert lr_factor(9, 10, warmup=3) == pytest.approx((1 + math.cos(math.pi * 6 / 7)) / 2)
    assert [lr_factor(k, 10, start=4) for k in (0, 3)] == [0.0, 0.0]
    assert lr_factor(4, 10, start=4) == pytest.approx((1 + math.cos(math.pi * 4 / 10)) / 2)


def test_warmup_steps_round_fractions_of_an_epoch():
    assert warmup_steps(TrainConfig(epochs=3, warmup_epochs=0.5), 7) == 4
    assert warmup_steps(TrainConfig(epochs=3), 7) == 0


def test_schedule_table_with_gradual_unfreezing(groups):
    tc = TrainConfig(epochs=3, lr=0.01, layer_decay=0.5, warmup_epochs=1, unfreeze_after=1)
    df = lr_schedule(groups, trainable_group_names(groups, "last:1"), tc, steps_per_epoch=2)
    assert list(df.columns) == ["step", "epoch", "layer group", "lr"]
    assert df["layer group"].unique().tolist() == ["head", "layer4.0"]
    head = df[df["layer group"] == "head"]["lr"].tolist()
    body = df[df["layer group"] == "layer4.0"]["lr"].tolist()
    assert df["step"].tolist()[:6] == [1, 2, 3, 4, 5, 6] and df["epoch"].tolist()[:2] == [0.5, 1.0]
    assert head[:3] == pytest.approx([0.01 / 3, 0.02 / 3, 0.01])
    assert body[:2] == [0.0, 0.0], "frozen for the first epoch"
    assert body[2:] == pytest.approx([0.5 * h for h in head[2:]])
