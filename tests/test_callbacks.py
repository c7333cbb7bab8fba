"""ftcore.train.callbacks: the hooks of fit, in order; stopping, cancelling and errors through callbacks."""

from __future__ import annotations

import pytest
import timm
import torch
from torch.utils.data import DataLoader, TensorDataset

from ftcore.core.config import TrainConfig
from ftcore.core.errors import TrainingError
from ftcore.models.layers import apply_freeze, layer_groups, trainable_group_names
from ftcore.train.callbacks import (
    Callback,
    EarlyStopping,
    GradualUnfreezing,
    GroupMonitor,
    NonFiniteLossGuard,
    Report,
    StopFlag,
    standard_callbacks,
)
from ftcore.train.loop import FitState, fit

CPU = torch.device("cpu")


def _setup(unfreeze="last:1"):
    torch.manual_seed(0)
    model = timm.create_model("test_resnet", pretrained=False, num_classes=3)
    groups = layer_groups(model)
    apply_freeze(model, groups, trainable_group_names(groups, unfreeze))
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(8, 3, 32, 32, generator=g), torch.arange(8) % 3
    return model, groups, DataLoader(TensorDataset(x, y), batch_size=4), DataLoader(TensorDataset(x, y), batch_size=8)


class Recorder(Callback):
    def __init__(self):
        self.calls = []

    def __getattribute__(self, name):
        if name.startswith("on_"):
            calls = object.__getattribute__(self, "calls")
            return lambda fit, *a: calls.append((name, fit.epoch, fit.step))
        return object.__getattribute__(self, name)


def test_hooks_run_in_order():
    model, groups, tl, vl = _setup()
    rec = Recorder()
    fit(model, tl, vl, TrainConfig(epochs=2, lr=1e-3), CPU, callbacks=[rec], groups=groups)
    names = [c[0] for c in rec.calls]
    step = ["on_batch_start", "on_before_backward", "on_before_optimizer_step", "on_step_end"]
    epoch = ["on_epoch_start", *step, *step, "on_batch_start", "on_validation_end", "on_epoch_end"]
    assert names == ["on_fit_start", *epoch, *epoch, "on_fit_end"]
    assert [c[1:] for c in rec.calls if c[0] == "on_step_end"] == [(1, 1), (1, 2), (2, 3), (2, 4)]


def test_a_callback_can_stop_training_after_an_epoch():
    model, groups, tl, vl = _setup()

    class StopAfterOne(Callback):
        def on_epoch_end(self, fit: FitState, event) -> None:
            fit.stop()

    res = fit(model, tl, vl, TrainConfig(epochs=5), CPU, callbacks=[StopAfterOne()], groups=groups)
    assert len(res.history) == 1 and not res.cancelled


def test_a_callback_can_add_to_the_epoch_event():
    model, groups, tl, vl = _setup()

    class NoLayers(Callback):
        def on_validation_end(self, fit: FitState) -> None:
            fit.epoch_metrics["layers"] = ()

    seen = []
    fit(model, tl, vl, TrainConfig(epochs=1), CPU, callbacks=[NoLayers(), Report(on_epoch=seen.append)],
        groups=groups)
    assert seen[0].layers == ()


def test_cancel_during_validation_keeps_no_half_epoch():
    model, groups, tl, vl = _setup()
    polls = []

    def stop():
        polls.append(1)
        return len(polls) > 2  # two training batches pass, the validation batch does not

    res = fit(model, tl, vl, TrainConfig(epochs=2), CPU, callbacks=[StopFlag(stop)], groups=groups)
    assert res.cancelled and res.history == [] and res.val_pred is None


def test_on_exception_sees_the_error_and_gradual_unfreezing_gives_the_gradients_back():
    model, groups, tl, vl = _setup("last:1")
    body = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith("fc.")]
    seen = []

    class Boom(Callback):
        def on_step_end(self, fit, event):
            assert not any(p.requires_grad for p in body), "the body is frozen in the head-only epoch"
            raise RuntimeError("boom")

        def on_exception(self, fit, error):
            seen.append(error)

    with pytest.raises(RuntimeError, match="boom"):
        fit(model, tl, vl, TrainConfig(epochs=2, unfreeze_after=1), CPU, callbacks=[Boom()], groups=groups)
    assert [str(e) for e in seen] == ["boom"]
    assert all(p.requires_grad for p in body)


def test_the_non_finite_guard_is_a_callback_with_the_result_so_far():
    model, groups, tl, vl = _setup("all")

    class Poison(Callback):
        def on_epoch_end(self, fit, event):
            with torch.no_grad():
                fit.model.get_classifier().weight.fill_(float("nan"))

    with pytest.raises(TrainingError, match=r"at step 3 \(epoch 2\).*The weights after epoch 1 were restored") as ei:
        fit(model, tl, vl, TrainConfig(epochs=2), CPU, callbacks=[Poison()], groups=groups)
    assert len(ei.value.result.history) == 1
    assert not model.get_classifier().weight.isnan().any()


def test_standard_callbacks_follow_the_configuration():
    p = [torch.nn.Parameter(torch.zeros(1))]
    kinds = [type(c) for c in standard_callbacks(TrainConfig(), [])]
    assert kinds == [NonFiniteLossGuard, GroupMonitor]
    extra = Report()
    cbs = standard_callbacks(TrainConfig(epochs=3, early_stopping_patience=1, unfreeze_after=1), p, [extra])
    assert [type(c) for c in cbs] == [NonFiniteLossGuard, GradualUnfreezing, GroupMonitor, Report, EarlyStopping]
    assert cbs[3] is extra
