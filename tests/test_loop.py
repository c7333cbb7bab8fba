"""ftcore.train.loop.fit: learning rates per group, warm-up, gradual unfreezing, traps, early stopping, monitor."""

from __future__ import annotations

import math

import numpy as np
import pytest
import timm
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from ftcore.core.config import TrainConfig
from ftcore.core.errors import ConfigError, TrainingError
from ftcore.models.layers import apply_freeze, layer_groups, trainable_group_names, trainable_param_names
from ftcore.train import loop as training  # fit looks up evaluate here
from ftcore.train.callbacks import Report
from ftcore.train.loop import Runtime, fit
from ftcore.train.schedule import lr_schedule

CPU = torch.device("cpu")


def _loaders(n_train=12, n_val=6, n_classes=3, size=32, batch_size=4):
    g = torch.Generator().manual_seed(0)
    xt = torch.randn(n_train, 3, size, size, generator=g)
    yt = torch.arange(n_train) % n_classes
    xt += yt.view(-1, 1, 1, 1).float()
    xv = torch.randn(n_val, 3, size, size, generator=g)
    yv = torch.arange(n_val) % n_classes
    return (DataLoader(TensorDataset(xt, yt), batch_size=batch_size, shuffle=True, generator=g),
            DataLoader(TensorDataset(xv, yv), batch_size=64))


def _frozen_model(name="test_resnet", unfreeze="last:2"):
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, num_classes=3)
    groups = layer_groups(model)
    trainable = trainable_group_names(groups, unfreeze)
    apply_freeze(model, groups, trainable)
    return model, groups, trainable


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _spy_adamw(monkeypatch):
    seen = []
    real = torch.optim.AdamW

    def spy(ps, *a, **kw):
        ps = list(ps)
        seen.extend({"params": list(g["params"]), "lr": g["lr"], "layer_group": g.get("layer_group")} for g in ps)
        return real(ps, *a, **kw)

    monkeypatch.setattr(torch.optim, "AdamW", spy)
    return seen


def test_layer_decay_gives_each_group_lr_times_decay_to_its_distance(monkeypatch):
    model, groups, trainable = _frozen_model(unfreeze="all")
    seen = _spy_adamw(monkeypatch)
    tl, vl = _loaders()
    fit(model, tl, vl, TrainConfig(epochs=1, lr=0.01, layer_decay=0.5), CPU, name="finetuned", groups=groups)
    # test_resnet: stem, layer1.0 .. layer4.0, head -> distances 5, 4, 3, 2, 1, 0; each layer group is one
    # optimizer group with weight decay and one without (biases, normalisation weights), at the same rate
    order = list(dict.fromkeys(g["layer_group"] for g in seen))
    assert order == ["head", "layer4.0", "layer3.0", "layer2.0", "layer1.0", "stem"]
    rate = {g["layer_group"]: g["lr"] for g in seen}
    assert [rate[n] for n in order] == pytest.approx([0.01 * 0.5 ** d for d in range(6)])
    assert all(g["lr"] == rate[g["layer_group"]] for g in seen)
    params = dict(model.named_parameters())
    for name in order:
        grp = next(x for x in groups if x.name == name)
        ids = [id(p) for g in seen if g["layer_group"] == name for p in g["params"]]
        assert sorted(ids) == sorted(id(params[n]) for n in grp.param_names)


def _spy_weight_decay(monkeypatch):
    """Per parameter name: the weight decay of its optimizer group."""
    seen = {}
    real = torch.optim.AdamW

    def spy(ps, *a, **kw):
        ps = list(ps)
        for g in ps:
            for p in g["params"]:
                seen[id(p)] = g.get("weight_decay", kw["weight_decay"])
        return real(ps, *a, **kw)

    monkeypatch.setattr(torch.optim, "AdamW", spy)
    return seen


@pytest.mark.parametrize("name", ["test_resnet", "test_vit", "test_convnext"])
def test_weight_decay_follows_timms_rule(monkeypatch, name):
    """No decay for 1-d parameters (biases, normalisation weights) and the model's no_weight_decay() names
    (a ViT's pos_embed and cls_token); the configured decay for every other trainable tensor."""
    model, groups, _ = _frozen_model(name, unfreeze="all")
    seen = _spy_weight_decay(monkeypatch)
    tl, vl = _loaders()
    fit(model, tl, vl, TrainConfig(epochs=1, lr=1e-3, weight_decay=0.05), CPU, groups=groups)
    skip = set(getattr(model, "no_weight_decay", lambda: set())())
    decays = {n: seen[id(p)] for n, p in model.named_parameters()}
    assert len(decays) == len(list(model.parameters()))
    for n, p in model.named_parameters():
        exempt = p.ndim <= 1 or n.endswith(".bias") or n in skip
        assert decays[n] == (0.0 if exempt else 0.05), n
    if name == "test_vit":
        assert decays["pos_embed"] == decays["cls_token"] == 0.0 and decays["head.weight"] == 0.05
    assert 0.0 in decays.values() and 0.05 in decays.values()


def test_weight_decay_off_leaves_one_group_per_layer_group(monkeypatch):
    model, groups, _ = _frozen_model(unfreeze="all")
    seen = _spy_adamw(monkeypatch)
    tl, vl = _loaders()
    fit(model, tl, vl, TrainConfig(epochs=1, weight_decay=0.0), CPU, groups=groups)
    assert [g["layer_group"] for g in seen] == ["head", "layer4.0", "layer3.0", "layer2.0", "layer1.0", "stem"]


def test_optimizer_holds_only_trainable_parameters_of_a_sub_block(monkeypatch):
    torch.manual_seed(0)
    model = timm.create_model("test_convnext", pretrained=False, num_classes=3)
    groups = layer_groups(model)
    trainable = trainable_group_names(groups, "groups:stages.2.blocks.1")
    apply_freeze(model, groups, trainable)
    before = _state(model)
    seen = _spy_adamw(monkeypatch)
    tl, vl = _loaders()
    fit(model, tl, vl, TrainConfig(epochs=1, lr=0.01), CPU, name="finetuned", groups=groups)
    learn = trainable_param_names(groups, trainable)
    assert {id(p) for g in seen for p in g["params"]} == {id(p) for n, p in model.named_parameters() if n in learn}
    after = model.state_dict()
    assert learn and all(k.startswith(("stages.2.blocks.1.", "head.fc.")) for k in learn)
    for k, v in before.items():
        if k not in learn:
            assert torch.equal(after[k], v), f"{k} outside the ticked sub-block changed"
    assert any(not torch.equal(after[k], before[k]) for k in learn if k.startswith("stages.2.blocks.1."))


def test_warmup_then_cosine_is_the_schedule_drawn_before_training():
    model, groups, trainable = _frozen_model(unfreeze="all")
    tl, vl = _loaders()  # 3 steps per epoch
    tc = TrainConfig(epochs=3, lr=0.02, warmup_epochs=1)
    steps = []
    fit(model, tl, vl, tc, CPU, name="finetuned", callbacks=[Report(on_step=steps.append)], groups=groups)
    drawn = lr_schedule(groups, trainable, tc, len(tl))
    head = drawn[drawn["layer group"] == "head"]["lr"].to_numpy()
    np.testing.assert_allclose([s.lr for s in steps], head, rtol=1e-9)
    # warm-up over 3 steps: 1/4, 2/4, 3/4 of the peak; then the cosine from the peak (step 4) towards 0
    np.testing.assert_allclose(head[:4], [0.005, 0.01, 0.015, 0.02])
    assert head[4] == pytest.approx(0.02 * (1 + math.cos(math.pi / 6)) / 2)
    assert list(head[3:]) == sorted(head[3:], reverse=True) and head[-1] > 0


def test_gradual_unfreezing_trains_the_head_first(monkeypatch):
    model, groups, trainable = _frozen_model(unfreeze="last:1")
    init = _state(model)
    body = [n for n in trainable_param_names(groups, trainable) if not n.startswith("fc.")]
    after_epoch = []
    tl, vl = _loaders()
    tc = TrainConfig(epochs=2, lr=0.05, backbone_lr_scale=1.0, unfreeze_after=1)
    res = fit(model, tl, vl, tc, CPU, name="finetuned", groups=groups,
              callbacks=[Report(on_epoch=lambda ev: after_epoch.append((_state(model), ev)))])
    s1, ev1 = after_epoch[0]
    s2, ev2 = after_epoch[1]
    assert all(torch.equal(s1[n], init[n]) for n in body), "body learned during the head-only epoch"
    assert not torch.equal(s1["fc.weight"], init["fc.weight"])
    assert any(not torch.equal(s2[n], s1[n]) for n in body), "body did not learn after unfreezing"
    by = {s.group: s for s in ev1.layers}
    assert by["layer4.0"].lr == 0.0 and by["layer4.0"].grad_norm == 0.0 and by["layer4.0"].relative_change == 0
    assert {s.group: s for s in ev2.layers}["layer4.0"].lr > 0
    assert all(p.requires_grad for n, p in model.named_parameters() if n in body), "flags restored"
    assert len(res.history) == 2


def test_layer_statistics_per_group_and_epoch():
    model, groups, trainable = _frozen_model(unfreeze="last:2")
    steps, epochs = [], []
    tl, vl = _loaders()
    fit(model, tl, vl, TrainConfig(epochs=2, lr=0.01), CPU, name="finetuned",
        callbacks=[Report(steps.append, epochs.append)], groups=groups)
    for ev in epochs:
        assert [s.group for s in ev.layers] == [g.name for g in groups]
        for s in ev.layers:
            assert s.trainable == (s.group in trainable)
            if s.trainable:
                assert s.relative_change > 0 and s.grad_norm > 0 and s.lr > 0
            else:
                assert (s.relative_change, s.grad_norm, s.lr) == (0.0, 0.0, 0.0)
        head = ev.layers[-1]
        assert head.lr == pytest.approx(np.mean([s.lr for s in steps if s.epoch == ev.epoch]))
    assert all(math.isfinite(s.relative_change) for s in epochs[-1].layers)
    # weights keep moving away from the start: the head's change grows from epoch 1 to 2
    assert epochs[1].layers[-1].relative_change > epochs[0].layers[-1].relative_change


def test_relative_change_formula():
    from ftcore.train.monitor import LayerMonitor

    model, groups, _ = _frozen_model(unfreeze="head")
    w0 = model.fc.weight.detach().clone()
    b0 = model.fc.bias.detach().clone()
    mon = LayerMonitor(model, groups)
    with torch.no_grad():
        model.fc.weight.add_(0.1)
    stats = mon.epoch_stats()
    with torch.no_grad():
            expected = torch.sqrt(((model.fc.weight - w0) ** 2).sum()) / torch.sqrt((w0 ** 2).sum() + (b0 ** 2).sum())
    assert stats[-1].relative_change == pytest.approx(float(expected), rel=1e-5)


class _NanAt:
    """A loader that yields NaN images from a given epoch on."""

    def __init__(self, loader, epoch):
        self.loader, self.epoch, self.calls = loader, epoch, 0

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        self.calls += 1
        for x, y in self.loader:
            yield (x * float("nan") if self.calls >= self.epoch else x), y


def test_non_finite_loss_restores_the_last_good_epoch():
    model, groups, _ = _frozen_model(unfreeze="all")
    tl, vl = _loaders()
    kept = []
    with pytest.raises(TrainingError) as ei:
        fit(model, _NanAt(tl, 2), vl, TrainConfig(epochs=3, lr=0.01), CPU, name="finetuned",
            callbacks=[Report(on_epoch=lambda ev: kept.append(_state(model)))], groups=groups)
    msg = str(ei.value)
    assert "finetuned: the loss became nan at step 4 (epoch 2) with learning rate" in msg
    assert "try a learning rate ten times lower (a peak rate of 0.001 instead of 0.01)" in msg
    assert "The weights after epoch 1 were restored." in msg
    now = model.state_dict()
    assert all(torch.equal(now[k], v) for k, v in kept[0].items()), "weights are not those of epoch 1"
    assert len(ei.value.result.history) == 1


def test_non_finite_loss_in_the_first_step_restores_the_starting_weights():
    model, groups, _ = _frozen_model(unfreeze="all")
    init = _state(model)
    tl, vl = _loaders()
    with pytest.raises(TrainingError, match="at step 1 .*The weights from before training were restored"):
        fit(model, _NanAt(tl, 1), vl, TrainConfig(epochs=1, lr=1e-3), CPU, name="baseline", groups=groups)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in init.items())


def test_nothing_trainable_is_refused():
    model, groups, _ = _frozen_model()
    for p in model.parameters():
        p.requires_grad_(False)
    tl, vl = _loaders()
    with pytest.raises(ConfigError, match="finetuned: no parameter of the model is trainable; tick at least the head"):
        fit(model, tl, vl, TrainConfig(epochs=1), CPU, name="finetuned")


def test_early_stopping_keeps_the_best_epoch(monkeypatch):
    real = training.evaluate
    losses = iter([1.0, 0.5, 0.9, 0.8, 0.7, 0.6])

    def scripted(*a, **kw):
        loss, yt, yp, probs = real(*a, **kw)
        return next(losses), yt, yp, probs

    monkeypatch.setattr(training, "evaluate", scripted)
    model, groups, _ = _frozen_model(unfreeze="all")
    tl, vl = _loaders()
    kept = []
    tc = TrainConfig(epochs=6, lr=0.01, early_stopping_patience=2, early_stopping_metric="val_loss")
    res = fit(model, tl, vl, tc, CPU, name="finetuned", groups=groups,
              callbacks=[Report(on_epoch=lambda ev: kept.append((_state(model), ev)))])
    assert [e.epoch for e in res.history] == [1, 2, 3, 4]  # no better loss in epochs 3 and 4
    assert res.stopped_early and res.best_epoch == 2 and res.final is res.history[1]
    now = model.state_dict()
    assert all(torch.equal(now[k], v) for k, v in kept[1][0].items()), "model does not hold epoch 2's weights"


def test_early_stopping_on_accuracy_prefers_higher():
    model, groups, _ = _frozen_model(unfreeze="head")
    tl, vl = _loaders()
    res = fit(model, tl, vl, TrainConfig(epochs=3, early_stopping_patience=5, early_stopping_metric="val_accuracy"),
              CPU, name="baseline", groups=groups)
    accs = [e.val_accuracy for e in res.history]
    assert res.best_epoch == int(np.argmax(accs)) + 1 and not res.stopped_early


def test_label_smoothing_and_class_weights_reach_the_training_loss_only(monkeypatch):
    calls = []
    real = nn.functional.cross_entropy

    def spy(*a, **kw):
        calls.append(kw)
        return real(*a, **kw)

    monkeypatch.setattr(nn.functional, "cross_entropy", spy)
    model, groups, _ = _frozen_model(unfreeze="head")
    tl, vl = _loaders()
    w = torch.tensor([1.0, 2.0, 3.0])
    fit(model, tl, vl, TrainConfig(epochs=1, label_smoothing=0.1), CPU, name="finetuned", loss_weights=w, groups=groups)
    train_calls = [c for c in calls if c.get("reduction") != "sum"]
    eval_calls = [c for c in calls if c.get("reduction") == "sum"]
    assert len(train_calls) == len(tl) and eval_calls
    assert all(c["label_smoothing"] == 0.1 and torch.equal(c["weight"], w) for c in train_calls)
    assert all("weight" not in c and "label_smoothing" not in c for c in eval_calls)


def test_bfloat16_autocast_path_runs(monkeypatch):
    """The CUDA path's autocast, exercised on the CPU (which supports bfloat16 autocast too)."""
    model, groups, _ = _frozen_model(unfreeze="last:1")
    dtypes = []
    model.fc.register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
    tl, vl = _loaders()
    steps = []
    fit(model, tl, vl, TrainConfig(epochs=1, lr=0.01), Runtime(CPU, amp_dtype=torch.bfloat16), name="finetuned",
        callbacks=[Report(on_step=steps.append)], groups=groups)
    assert set(dtypes) == {torch.bfloat16}
    assert all(math.isfinite(s.loss) for s in steps)
    dtypes.clear()
    fit(model, tl, vl, TrainConfig(epochs=1, lr=0.01), CPU, name="finetuned", groups=groups)  # "auto" on the CPU
    assert set(dtypes) == {torch.float32}


def test_groups_that_do_not_name_the_models_parameters_are_recomputed():
    """A model whose parameter names differ from the given groups' (a tail of the model) still trains every
    trainable parameter."""
    model, groups, _ = _frozen_model(unfreeze="all")
    wrapped = nn.Sequential(model)  # names gain a "0." prefix
    before = _state(wrapped)
    tl, vl = _loaders()
    fit(wrapped, tl, vl, TrainConfig(epochs=1, lr=0.01), CPU, name="finetuned", groups=groups)
    after = wrapped.state_dict()
    moved = [k for k in before if k.endswith("weight") and not torch.equal(after[k], before[k])]
    assert any(k.startswith("0.conv1") for k in moved) and any(k.startswith("0.fc") for k in moved)
