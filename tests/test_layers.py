"""ftcore.models.layers: layer groups from timm, unfreeze choices, freezing and train mode."""

from __future__ import annotations

import pytest
import timm
import torch
from torch import nn

from ftcore.core.config import FreezeConfig
from ftcore.core.errors import ConfigError
from ftcore.models.layers import (
    HEAD,
    apply_freeze,
    frozen_batchnorm_modules,
    layer_groups,
    set_train_mode,
    trainable_group_names,
)

#: timm test model -> (attribute path of its classifier, coarse layer group names)
FAMILIES = {
    "test_resnet": ("fc", ["stem", "layer1.0", "layer2.0", "layer3.0", "layer4.0", "head"]),
    "test_efficientnet": ("classifier", ["stem", "blocks.0", "blocks.1", "blocks.2", "blocks.3",
                                         "blocks.4 + conv_head + bn2", "head"]),
    "test_vit": ("head", ["stem", "blocks.0", "blocks.1", "blocks.2", "blocks.3", "blocks.4",
                          "blocks.5 + norm", "head"]),
    "test_convnext": ("head.fc", ["stem", "stages.0", "stages.1", "stages.2", "stages.3", "head.norm", "head"]),
}


def _model(name: str, num_classes: int = 3) -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model(name, pretrained=False, num_classes=num_classes)


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request):
    name = request.param
    return name, _model(name)


def test_groups_partition_the_parameters(family):
    name, model = family
    groups = layer_groups(model)
    assert [g.name for g in groups] == FAMILIES[name][1]
    assert groups[0].name == "stem" and groups[-1].name == HEAD and groups[-1].is_head
    assert not any(g.is_head for g in groups[:-1])
    assert [g.index for g in groups] == list(range(len(groups)))
    all_names = [n for g in groups for n in g.param_names]
    model_names = [n for n, _ in model.named_parameters()]
    assert len(all_names) == len(set(all_names)), "a parameter is in two groups"
    assert sorted(all_names) == sorted(model_names)
    sizes = dict((n, p.numel()) for n, p in model.named_parameters())
    for g in groups:
        assert g.n_params == sum(sizes[n] for n in g.param_names) > 0
    assert sum(g.n_params for g in groups) == sum(p.numel() for p in model.parameters())


def test_head_group_is_exactly_the_classifier(family):
    name, model = family
    head = layer_groups(model)[-1]
    clf = model.get_classifier()
    assert clf is model.get_submodule(FAMILIES[name][0])
    params = dict(model.named_parameters())
    assert {id(params[n]) for n in head.param_names} == {id(p) for p in clf.parameters()}
    assert head.n_params == sum(p.numel() for p in clf.parameters()) == clf.in_features * 3 + 3
    prefix = FAMILIES[name][0] + "."
    assert all(n.startswith(prefix) for n in head.param_names)


def test_groups_are_input_to_output(family):
    _, model = family
    order = {n: i for i, (n, _) in enumerate(model.named_parameters())}
    groups = layer_groups(model)
    firsts = [min(order[n] for n in g.param_names) for g in groups[:-1]]
    assert firsts == sorted(firsts)


def test_fine_groups_also_partition(family):
    name, model = family
    coarse = layer_groups(model)
    fine = layer_groups(model, coarse=False)
    assert len(fine) >= len(coarse)
    assert fine[0].name == "stem" and fine[-1].name == HEAD
    assert fine[-1].param_names == coarse[-1].param_names
    assert sorted(n for g in fine for n in g.param_names) == sorted(n for n, _ in model.named_parameters())
    assert len({g.name for g in fine}) == len(fine), "group names must be unique"
    if name == "test_efficientnet":
        assert [g.name for g in fine][1] == "blocks.0.0"


def test_groups_on_meta_device():
    with torch.device("meta"):
        model = timm.create_model("test_resnet", pretrained=False, num_classes=3)
    groups = layer_groups(model)
    assert [g.name for g in groups] == FAMILIES["test_resnet"][1]
    assert groups[-1].n_params == 96 * 3 + 3


def test_fallback_without_group_matcher():
    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.norm = nn.BatchNorm2d(4)
            self.fc = nn.Linear(4, 2)

        def get_classifier(self):
            return self.fc

    groups = layer_groups(Tiny())
    assert [g.name for g in groups] == ["stem", "norm", "head"]
    assert groups[0].param_names == ("conv.weight", "conv.bias")
    assert groups[-1].param_names == ("fc.weight", "fc.bias") and groups[-1].n_params == 10


# -- trainable_group_names -----------------------------------------------------

@pytest.fixture(scope="module")
def resnet_groups():
    return layer_groups(_model("test_resnet"))


def test_trainable_head(resnet_groups):
    assert trainable_group_names(resnet_groups, "head") == ("head",)


def test_trainable_all(resnet_groups):
    assert trainable_group_names(resnet_groups, "all") == tuple(g.name for g in resnet_groups)


def test_trainable_last_n(resnet_groups):
    assert trainable_group_names(resnet_groups, "last:1") == ("layer4.0", "head")
    assert trainable_group_names(resnet_groups, "last:2") == ("layer3.0", "layer4.0", "head")
    assert trainable_group_names(resnet_groups, FreezeConfig("last:2")) == ("layer3.0", "layer4.0", "head")
    # N beyond the number of body groups means every group
    assert trainable_group_names(resnet_groups, "last:5") == tuple(g.name for g in resnet_groups)
    assert trainable_group_names(resnet_groups, "last:99") == tuple(g.name for g in resnet_groups)


def test_trainable_explicit_groups_in_model_order_head_always(resnet_groups):
    assert trainable_group_names(resnet_groups, "groups:layer2.0,stem") == ("stem", "layer2.0", "head")
    assert trainable_group_names(resnet_groups, "groups:head") == ("head",)
    with pytest.raises(ConfigError, match="names no layer group"):
        trainable_group_names(resnet_groups, "groups:")


def test_trainable_unknown_group_names_it(resnet_groups):
    with pytest.raises(ConfigError, match=r"layer groups \['blocks.9'\] are not in this model; its groups are: "
                                          r"stem, layer1.0, layer2.0, layer3.0, layer4.0, head"):
        trainable_group_names(resnet_groups, "groups:stem,blocks.9")


def test_trainable_bad_preset(resnet_groups):
    with pytest.raises(ConfigError, match="'last:two' is not understood"):
        trainable_group_names(resnet_groups, "last:two")


# -- apply_freeze ----------------------------------------------------------------

@pytest.mark.parametrize("unfreeze", ["head", "last:1", "last:3", "all", "groups:stem,layer2.0"])
def test_apply_freeze_counts_and_flags(unfreeze):
    model = _model("test_resnet")
    groups = layer_groups(model)
    trainable = trainable_group_names(groups, unfreeze)
    summary = apply_freeze(model, groups, trainable)
    assert summary.trainable_groups == trainable
    expected_tr = sum(g.n_params for g in groups if g.name in trainable)
    assert summary.n_trainable == expected_tr
    assert summary.n_total == sum(p.numel() for p in model.parameters()) == 372979
    assert summary.n_frozen == summary.n_total - expected_tr
    learn = {n for g in groups if g.name in trainable for n in g.param_names}
    for n, p in model.named_parameters():
        assert p.requires_grad == (n in learn), n
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == summary.n_trainable


def test_apply_freeze_head_only_numbers():
    model = _model("test_resnet")
    groups = layer_groups(model)
    s = apply_freeze(model, groups, ("head",))
    n_head = model.get_classifier().in_features * 3 + 3
    assert n_head == 291
    assert (s.n_trainable, s.n_frozen, s.n_total) == (n_head, 372979 - n_head, 372979)
    assert s.trainable_groups == ("head",)


def test_apply_freeze_refreezes_previously_trainable():
    model = _model("test_resnet")
    groups = layer_groups(model)
    apply_freeze(model, groups, trainable_group_names(groups, "all"))
    apply_freeze(model, groups, ("head",))
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["fc.weight", "fc.bias"]


def test_apply_freeze_nothing_trainable_raises():
    model = _model("test_resnet")
    groups = layer_groups(model)
    with pytest.raises(ConfigError, match="leaves no parameter trainable; tick at least the head"):
        apply_freeze(model, groups, ())
    with pytest.raises(ConfigError, match="no parameter trainable"):
        apply_freeze(model, groups, ("not-a-group",))


# -- BatchNorm train mode ------------------------------------------------------------

@pytest.mark.parametrize("update_bn", [False, True])
@pytest.mark.parametrize("name", ["test_resnet", "test_efficientnet"])
def test_set_train_mode_keeps_frozen_batchnorm_in_eval(name, update_bn):
    model = _model(name)
    groups = layer_groups(model)
    trainable = trainable_group_names(groups, "last:1")
    apply_freeze(model, groups, trainable)
    learn = {n for g in groups if g.name in trainable for n in g.param_names}
    set_train_mode(model, update_bn)
    frozen = {id(m) for m in frozen_batchnorm_modules(model)}
    n_bn = 0
    for mname, m in model.named_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n_bn += 1
            is_frozen = not any(f"{mname}.{pn}" in learn for pn, _ in m.named_parameters())
            assert (id(m) in frozen) == is_frozen, mname
            # frozen BatchNorm is always in eval mode; unfrozen BatchNorm only updates with update_bn
            assert m.training == (update_bn and not is_frozen), mname
    assert 0 < len(frozen) < n_bn
    assert model.training
    assert model.get_classifier().training, "non-BatchNorm layers are in training mode"
    assert set_train_mode.__defaults__ == (False,), "BatchNorm statistics are kept by default"


def test_frozen_batchnorm_without_affine_follows_parent():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 1)
            self.bn = nn.BatchNorm2d(3, affine=False)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = Block()
            self.b = Block()

    net = Net()
    for p in net.a.parameters():
        p.requires_grad_(False)
    assert frozen_batchnorm_modules(net) == [net.a.bn]
    set_train_mode(net, update_bn=True)
    assert not net.a.bn.training and net.b.bn.training
    set_train_mode(net)
    assert not net.a.bn.training and not net.b.bn.training and net.b.conv.training



def test_describe_layer_groups_matches_a_built_model():
    """The UI's weight-free description equals the groups of a real model."""
    from ftcore.core.errors import BackboneError
    from ftcore.models.layers import describe_layer_groups

    real = timm.create_model("test_efficientnet", pretrained=False, num_classes=3)
    described = describe_layer_groups("test_efficientnet", num_classes=3)
    assert [(g.name, g.n_params) for g in described] == [(g.name, g.n_params) for g in layer_groups(real)]
    with pytest.raises(BackboneError, match="no_such_model"):
        describe_layer_groups("no_such_model")


def test_distilled_models_have_both_heads_in_the_head_group():
    """get_classifier() returns (head, head_dist) for distilled families; both are the head."""
    from ftcore.models.layers import describe_layer_groups

    groups = describe_layer_groups("levit_128s", num_classes=3)
    head = groups[-1]
    assert head.name == "head"
    assert any(n.startswith("head_dist.") for n in head.param_names)
    assert any(n.startswith("head.") for n in head.param_names)
    assert trainable_group_names(groups, "head") == ("head",)


# -- sub-blocks (fine groups inside coarse groups) ---------------------------------------------

def test_parts_partition_their_group(family):
    _, model = family
    for g in layer_groups(model):
        if g.parts:
            assert len(g.parts) > 1 and not g.is_head
            assert sorted(n for p in g.parts for n in p.param_names) == sorted(g.param_names)
            assert sum(p.n_params for p in g.parts) == g.n_params
    names = [p.name for g in layer_groups(model) for p in g.parts] + [g.name for g in layer_groups(model)]
    assert len(names) == len(set(names)), "a part name equals a group name or another part's"


def test_convnext_parts_are_named_by_their_modules():
    groups = {g.name: g for g in layer_groups(_model("test_convnext"))}
    assert [p.name for p in groups["stages.2"].parts] == [
        "stages.2.downsample + stages.2.blocks.0", "stages.2.blocks.1", "stages.2.blocks.2", "stages.2.blocks.3"]
    assert groups["stages.0"].parts == (), "a stage of one block has no parts"


def test_tick_a_sub_block():
    model = _model("test_convnext")
    groups = layer_groups(model)
    trainable = trainable_group_names(groups, "groups:stages.2.blocks.3,stages.3")
    assert trainable == ("stages.2.blocks.3", "stages.3", "head")
    s = apply_freeze(model, groups, trainable)
    assert s.trainable_groups == trainable
    learn = [n for n, p in model.named_parameters() if p.requires_grad]
    assert learn and all(n.startswith(("stages.2.blocks.3.", "stages.3.", "head.fc.")) for n in learn)
    assert any(n.startswith("stages.2.blocks.3.") for n in learn)


def test_all_parts_ticked_read_as_the_whole_group():
    groups = layer_groups(_model("test_convnext"))
    st2 = next(g for g in groups if g.name == "stages.2")
    spec = "groups:" + ",".join(p.name for p in st2.parts)
    assert trainable_group_names(groups, spec) == ("stages.2", "head")


def test_unknown_sub_block_names_it_and_hints_at_parts():
    groups = layer_groups(_model("test_convnext"))
    with pytest.raises(ConfigError, match=r"layer groups \['stages.2.blocks.9'\] are not in this model; its groups "
                                          r"are: stem, .*head \(or one of their sub-blocks, e.g. "):
        trainable_group_names(groups, "groups:stages.2.blocks.9")


def test_sub_block_choice_round_trips_through_json(tmp_path):
    from ftcore.core.config import BackboneConfig, DataConfig, RunConfig

    cfg = RunConfig(BackboneConfig("test_convnext", "none"), FreezeConfig("groups:stages.2.blocks.3,stages.3"),
                    DataConfig("/d"))
    p = tmp_path / "c.json"
    p.write_text(cfg.to_json())
    back = RunConfig.load(p)
    assert back == cfg
    assert trainable_group_names(layer_groups(_model("test_convnext")), back.freeze) == (
        "stages.2.blocks.3", "stages.3", "head")
