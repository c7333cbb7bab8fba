"""ftcore.models.compute: measured forward FLOPs per layer group and the step cost of a freezing choice."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ftcore.models.compute import compute_profile, describe_compute, step_cost
from ftcore.models.layers import describe_layer_groups, layer_groups, trainable_group_names


@pytest.fixture(scope="module")
def resnet():
    return describe_compute("test_resnet", 64), describe_layer_groups("test_resnet")


def test_resnet_flops_are_measured_and_add_up(resnet):
    prof, groups = resnet
    assert prof.method == "measured" and prof.img_size == 64
    assert [u.name for u in prof.units] == [g.name for g in groups]
    assert sum(u.flops for u in prof.units) == pytest.approx(prof.total_flops, rel=1e-6)
    # the head is one matrix product: 2 * 96 * 2 FLOPs for one image
    assert prof.units[-1].flops == 2 * 96 * 2
    # the first convolution of the stem: 3x3, 3 -> 24 channels, stride 2 on 64 px: 32 * 32 * 24 * 27 * 2
    assert prof.units[0].flops >= 32 * 32 * 24 * 27 * 2


def test_flops_grow_with_the_image(resnet):
    small, _ = resnet
    big = describe_compute("test_resnet", 128)
    assert big.total_flops == pytest.approx(4 * small.total_flops, rel=0.02)


def test_step_cost_from_linear_probe_to_everything(resnet):
    prof, groups = resnet
    head = step_cost(prof, groups, trainable_group_names(groups, "head"))
    last = step_cost(prof, groups, trainable_group_names(groups, "last:1"))
    full = step_cost(prof, groups, trainable_group_names(groups, "all"))
    assert head["vs_linear_probe"] == 1.0 and full["vs_linear_probe"] == pytest.approx(3.0, rel=1e-4)
    assert full["share_of_full"] == 1.0 and head["share_of_full"] == pytest.approx(1 / 3, rel=1e-4)
    f4 = prof.group_flops()["layer4.0"]
    assert last["step_flops"] == pytest.approx(prof.total_flops + 2 * f4 + 2 * prof.units[-1].flops)
    # training the stem alone needs the backward pass through everything after it
    stem = step_cost(prof, groups, ("stem", "head"))
    assert stem["step_flops"] > last["step_flops"]


def test_sub_blocks_have_their_own_flops():
    prof = describe_compute("test_convnext", 64)
    groups = describe_layer_groups("test_convnext")
    parts = [u for u in prof.units if u.group == "stages.2"]
    assert [u.name for u in parts] == [p.name for p in groups[3].parts]
    assert len(parts) == 4 and all(u.flops > 0 for u in parts)
    one = step_cost(prof, groups, ("stages.2.blocks.3", "head"))
    whole = step_cost(prof, groups, ("stages.2", "head"))
    assert 1 < one["vs_linear_probe"] < whole["vs_linear_probe"]


def test_falls_back_to_parameters_when_the_forward_fails():
    class Broken(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.fc = nn.Linear(4, 2)

        def get_classifier(self):
            return self.fc

        def forward(self, x):
            raise RuntimeError("cannot trace")

    model = Broken()
    prof = compute_profile(model, 32)
    assert prof.method == "parameters"
    assert [u.flops for u in prof.units] == [3 * 4 * 9 + 4, 10]
    assert step_cost(prof, layer_groups(model), ("head",))["method"] == "parameters"
    assert torch.is_grad_enabled()
