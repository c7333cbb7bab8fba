"""ftcore.train.experiment: the loop (freezing guarantee, events, cancel, errors) and the two-model experiment."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import timm
import torch
from conftest import tiny_run_config
from safetensors.torch import load_file
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from ftcore.core.config import TrainConfig
from ftcore.core.errors import DatasetError, TrainingError
from ftcore.core.events import EpochEvent, StepEvent
from ftcore.data.split import build_transforms, prepare_split
from ftcore.jobs.writer import run_experiment
from ftcore.models.backbones import build_model
from ftcore.models.layers import apply_freeze, layer_groups, trainable_group_names, trainable_param_names
from ftcore.runs.store import EPOCH_COLUMNS
from ftcore.train.callbacks import Report, StopFlag
from ftcore.train.inputs import make_loaders
from ftcore.train.loop import fit

CPU = torch.device("cpu")
BN_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


def _tensor_loaders(n_train: int = 12, n_val: int = 6, n_classes: int = 3, size: int = 32, batch_size: int = 4):
    g = torch.Generator().manual_seed(0)
    xt = torch.randn(n_train, 3, size, size, generator=g)
    yt = torch.arange(n_train) % n_classes
    xt += yt.view(-1, 1, 1, 1).float()  # classes differ in brightness
    xv = torch.randn(n_val, 3, size, size, generator=g)
    yv = torch.arange(n_val) % n_classes
    tl = DataLoader(TensorDataset(xt, yt), batch_size=batch_size, shuffle=True, generator=g)
    vl = DataLoader(TensorDataset(xv, yv), batch_size=64)
    return tl, vl


# -- freezing guarantee ---------------------------------------------------------------------

FREEZE_CASES = [
    ("test_resnet", "last:1"),
    ("test_resnet", "head"),
    ("test_resnet", "groups:stem,layer3.0"),
    ("test_efficientnet", "last:2"),
    ("test_efficientnet", "head"),
    ("test_vit", "last:1"),
    ("test_convnext", "last:2"),
    ("test_convnext", "groups:stages.2.blocks.1,stages.3"),  # a sub-block and a whole group
    ("mobilenetv3_small_050", "last:2"),  # no tiny test_* MobileNetV3 in timm: the smallest real one
    ("mobilenetv3_small_050", "head"),
]


@pytest.mark.parametrize("name, unfreeze", FREEZE_CASES)
def test_fit_keeps_frozen_groups_bit_identical(name, unfreeze, monkeypatch):
    """With update_bn=True (the harder case) unfrozen BatchNorm moves, frozen BatchNorm must not."""
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, num_classes=3)
    groups = layer_groups(model)
    trainable = trainable_group_names(groups, unfreeze)
    apply_freeze(model, groups, trainable)
    learn = trainable_param_names(groups, trainable)
    params = dict(model.named_parameters())
    frozen_names = [n for n in params if n not in learn]
    assert frozen_names and learn
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}

    # BatchNorm layers whose parameters all sit in frozen groups, found independently of ftcore.models.layers
    bn_frozen, bn_trainable = [], []
    for mname, m in model.named_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            pnames = [f"{mname}.{p}" for p, _ in m.named_parameters()]
            (bn_trainable if any(p in learn for p in pnames) else bn_frozen).append(mname)

    seen_groups = []
    real_adamw = torch.optim.AdamW

    def spy_adamw(ps, *a, **kw):
        ps = list(ps)
        for g in ps:  # copy now: the scheduler changes the optimizer's lr in place later
            g = g if isinstance(g, dict) else {"params": [g]}
            seen_groups.append({"params": list(g["params"]), "lr": g.get("lr", kw["lr"])})
        return real_adamw(ps, *a, **kw)

    monkeypatch.setattr(torch.optim, "AdamW", spy_adamw)
    tl, vl = _tensor_loaders()
    tc = TrainConfig(epochs=2, batch_size=4, lr=0.05, backbone_lr_scale=0.2, weight_decay=0.01, update_bn=True)
    res = fit(model, tl, vl, tc, CPU, name="finetuned")
    n_steps = 2 * len(tl)
    assert len(res.history) == 2 and not res.cancelled

    # the optimizer saw exactly the trainable parameters, each once: the head at lr, the backbone at
    # lr * backbone_lr_scale
    seen_params = [p for g in seen_groups for p in g["params"]]
    assert len(seen_params) == len(learn)
    assert {id(p) for p in seen_params} == {id(params[n]) for n in learn}
    head_ids = {id(p) for p in model.get_classifier().parameters()}
    lrs = {frozenset(id(p) for p in g["params"]): g["lr"] for g in seen_groups if g["params"]}
    for ids, lr in lrs.items():
        assert lr == pytest.approx(0.05 if ids <= head_ids else 0.05 * 0.2)
        assert ids <= head_ids or not ids & head_ids, "head and backbone in separate parameter groups"

    after = model.state_dict()
    for n in frozen_names:
        assert torch.equal(after[n], before[n]), f"frozen parameter {n} changed"
        assert params[n].grad is None, f"frozen parameter {n} got a gradient"
    for mname in bn_frozen:
        for b in BN_BUFFERS:
            assert torch.equal(after[f"{mname}.{b}"], before[f"{mname}.{b}"]), f"frozen BatchNorm {mname}.{b} moved"
    for mname in bn_trainable:
        assert int(after[f"{mname}.num_batches_tracked"]) == n_steps, f"trainable BatchNorm {mname} not in train mode"
        assert not torch.equal(after[f"{mname}.running_mean"], before[f"{mname}.running_mean"])
    if name in ("test_resnet", "test_efficientnet", "mobilenetv3_small_050"):
        assert bn_frozen, "the case must contain frozen BatchNorm layers"

    # trainable parameters learned: each trainable group moved, the head certainly
    for g in groups:
        if g.name in trainable:
            assert any(not torch.equal(after[n], before[n]) for n in g.param_names), f"group {g.name} did not move"
            assert all(params[n].grad is not None for n in g.param_names)
    clf_w = next(n for n in groups[-1].param_names if n.endswith("weight"))
    assert not torch.equal(after[clf_w], before[clf_w])


@pytest.mark.parametrize("name", ["test_resnet", "test_efficientnet"])
def test_fit_keeps_all_batchnorm_statistics_by_default(name):
    """update_bn=False (default): no BatchNorm statistics move, unfrozen BatchNorm affine weights still learn."""
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, num_classes=3)
    groups = layer_groups(model)
    trainable = trainable_group_names(groups, "last:2")
    apply_freeze(model, groups, trainable)
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    tl, vl = _tensor_loaders()
    fit(model, tl, vl, TrainConfig(epochs=1, batch_size=4, lr=0.05, backbone_lr_scale=1.0), CPU, name="finetuned")
    after = model.state_dict()
    learn = {n for g in groups if g.name in trainable for n in g.param_names}
    n_bn_learning = 0
    for mname, m in model.named_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            for b in BN_BUFFERS:
                assert torch.equal(after[f"{mname}.{b}"], before[f"{mname}.{b}"]), f"{mname}.{b} moved"
            if f"{mname}.weight" in learn:
                n_bn_learning += 1
                assert not torch.equal(after[f"{mname}.weight"], before[f"{mname}.weight"])
    assert n_bn_learning > 0


# -- fit: events, schedule, cancel, errors -----------------------------------------------------

def test_fit_events_and_result():
    torch.manual_seed(0)
    model = timm.create_model("test_resnet", pretrained=False, num_classes=3)
    tl, vl = _tensor_loaders(n_train=12, n_val=6)
    steps: list[StepEvent] = []
    epochs: list[EpochEvent] = []
    tc = TrainConfig(epochs=3, batch_size=4, lr=0.01)
    res = fit(model, tl, vl, tc, CPU, name="baseline", callbacks=[Report(steps.append, epochs.append)])
    assert len(tl) == 3
    assert [s.step for s in steps] == list(range(1, 10))
    assert all(s.total_steps == 9 and s.model == "baseline" for s in steps)
    assert [s.epoch for s in steps] == [1, 1, 1, 2, 2, 2, 3, 3, 3]
    # cosine decay from the peak learning rate (Loshchilov & Hutter): lr_k = lr * (1 + cos(pi k / T)) / 2
    expected = [0.01 * (1 + np.cos(np.pi * k / 9)) / 2 for k in range(9)]
    np.testing.assert_allclose([s.lr for s in steps], expected, rtol=1e-6)
    assert all(np.isfinite(s.loss) and s.loss > 0 for s in steps)
    assert [s.seconds for s in steps] == sorted(s.seconds for s in steps)
    assert res.history == epochs and [e.epoch for e in epochs] == [1, 2, 3]
    for e in epochs:
        assert e.epochs == 3 and e.model == "baseline"
        for v in (e.train_accuracy, e.train_macro_recall, e.val_accuracy, e.val_macro_recall):
            assert 0.0 <= v <= 1.0
        assert e.seconds > 0 and e.images_per_second > 0 and e.train_loss > 0 and e.val_loss > 0
    assert res.val_true.tolist() == [0, 1, 2, 0, 1, 2]
    assert res.val_probs.shape == (6, 3) and res.val_probs.dtype == np.float32
    np.testing.assert_allclose(res.val_probs.sum(1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(res.val_pred, res.val_probs.argmax(1))
    assert epochs[-1].val_accuracy == pytest.approx(float((res.val_pred == res.val_true).mean()))
    assert res.seconds > 0 and res.images_per_second > 0 and not res.cancelled
    assert not model.training, "evaluation leaves the model in eval mode"


def test_fit_should_stop():
    torch.manual_seed(0)
    model = timm.create_model("test_resnet", pretrained=False, num_classes=3)
    tl, vl = _tensor_loaders()
    steps = []

    def stop():
        return len(steps) >= 4  # 3 steps in epoch 1, one in epoch 2

    res = fit(model, tl, vl, TrainConfig(epochs=3, batch_size=4), CPU, name="finetuned",
              callbacks=[Report(on_step=steps.append), StopFlag(stop)])
    assert res.cancelled
    assert len(steps) == 4 and len(res.history) == 1
    assert res.val_pred is not None and len(res.val_pred) == 6  # from the finished first epoch


def test_fit_non_finite_loss_raises():
    model = timm.create_model("test_resnet", pretrained=False, num_classes=3)
    with torch.no_grad():
        model.get_classifier().weight.fill_(float("nan"))
    tl, vl = _tensor_loaders()
    with pytest.raises(TrainingError, match=r"finetuned: the loss became nan at step 1 \(epoch 1\) with learning "
                                            r"rate 0.001; try a learning rate ten times lower"):
        fit(model, tl, vl, TrainConfig(epochs=1, lr=1e-3), CPU, name="finetuned")


# -- loaders ---------------------------------------------------------------------------------

def _split(make_image_folder, classes, val_fraction=0.25):
    from ftcore.core.config import DataConfig

    root = make_image_folder(classes=classes)
    return prepare_split(DataConfig(str(root), None, val_fraction), short_side=34)


def test_loaders_drop_a_last_batch_of_one(make_image_folder):
    split = _split(make_image_folder, {"a": 8, "b": 8})
    assert len(split.train_images) == 12
    model = timm.create_model("test_resnet", pretrained=False, num_classes=2)
    tr_tf, va_tf, _ = build_transforms(model, 32)
    tl, vl = make_loaders(split, tr_tf, va_tf, TrainConfig(batch_size=11), 0)
    assert len(tl) == 1 and [len(y) for _, y in tl] == [11]
    assert [len(y) for _, y in vl] == [4]
    tl, _ = make_loaders(split, tr_tf, va_tf, TrainConfig(batch_size=5), 0)
    assert [len(y) for _, y in tl] == [5, 5, 2], "a last batch of two is kept"
    tl, _ = make_loaders(split, tr_tf, va_tf, TrainConfig(batch_size=500), 0)
    assert [len(y) for _, y in tl] == [12], "batch size is capped at the training set"


# -- run_experiment ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """One complete tiny experiment: 3 colour classes x 8 images + one unreadable file, 2 epochs each."""
    from conftest import _make_image_folder

    from ftcore.runs.store import RunStore

    base = tmp_path_factory.mktemp("finished_run")
    data = _make_image_folder(base / "data", {"red": 8, "green": 8, "blue": 8})
    (data / "red" / "zero.jpg").write_bytes(b"")
    store = RunStore(base / "store")
    cfg = tiny_run_config(data, unfreeze="last:1", epochs=2, batch_size=4)
    run_id = store.create_run(cfg)
    events = []
    summary = run_experiment(cfg, store, run_id, on_event=events.append)
    return store, run_id, cfg, summary, events


def test_experiment_finishes(finished_run):
    store, run_id, cfg, summary, events = finished_run
    assert summary["status"] == "finished"
    rec = store.get(run_id)
    assert rec.status == "finished" and rec.phase == "done" and rec.message == "finished" and rec.error == ""
    # 24 images, 6 for validation, 18 for training: 5 batches of 4 (last has 2), 2 epochs, 2 models
    assert rec.total_steps == 20 and rec.step == 20 and rec.eta_seconds == 0.0
    for m in ("baseline", "finetuned"):
        s = summary[m]
        assert 0.0 <= s["val_accuracy"] <= 1.0 and 0.0 <= s["val_macro_recall"] <= 1.0
        assert s["train_images_per_second"] > 0 and s["seconds"] > 0 and s["epochs_done"] == 2
    assert json.loads((store.run_dir(run_id) / "summary.json").read_text()) == {
        k: v for k, v in summary.items() if k != "status"}
    assert sum(isinstance(e, StepEvent) for e in events) == 20
    assert [(e.model, e.epoch) for e in events if isinstance(e, EpochEvent)] == [
        ("baseline", 1), ("baseline", 2), ("finetuned", 1), ("finetuned", 2)]


def test_experiment_records_info(finished_run):
    store, run_id, _, _, _ = finished_run
    info = store.get(run_id).info
    assert info["class_names"] == ["blue", "green", "red"]
    assert info["layout"] == "class_folders" and info["device"] == "cpu" and info["weights_kind"] == "random"
    assert info["counts"] == {"train": {"blue": 6, "green": 6, "red": 6}, "val": {"blue": 2, "green": 2, "red": 2}}
    assert [s["kind"] for s in info["skipped"]] == ["unreadable"]
    assert info["skipped"][0]["path"].endswith("red/zero.jpg")
    assert info["baseline_trainable_groups"] == ["head"]
    assert info["finetuned_trainable_groups"] == ["layer4.0", "head"]
    assert info["baseline_trainable_params"] == 96 * 3 + 3
    assert info["baseline_trainable_params"] + info["baseline_frozen_params"] == 372979
    assert info["finetuned_trainable_params"] == 267840 + 291
    split = json.loads((store.run_dir(run_id) / "split.json").read_text())
    assert len(split["train"]) == 18 and len(split["val"]) == 6 and split["class_names"] == info["class_names"]
    assert not any(f.endswith("zero.jpg") for f in split["train"] + split["val"])


def test_experiment_records_epochs(finished_run):
    store, run_id, _, summary, _ = finished_run
    df = store.epochs(run_id)
    assert list(zip(df["model"], df["epoch"])) == [("baseline", 1), ("baseline", 2), ("finetuned", 1),
                                                   ("finetuned", 2)]
    assert df[list(EPOCH_COLUMNS)].notna().all().all()
    for col in ("train_accuracy", "train_macro_recall", "val_accuracy", "val_macro_recall"):
        assert df[col].between(0, 1).all()
    assert (df["seconds"] > 0).all() and (df["images_per_second"] > 0).all()
    last_ft = df[(df["model"] == "finetuned") & (df["epoch"] == 2)].iloc[0]
    assert last_ft["val_accuracy"] == pytest.approx(summary["finetuned"]["val_accuracy"])


def test_experiment_saves_predictions(finished_run):
    store, run_id, _, summary, _ = finished_run
    split = json.loads((store.run_dir(run_id) / "split.json").read_text())
    for m in ("baseline", "finetuned"):
        p = store.load_predictions(run_id, m)
        assert p is not None
        assert p["files"].tolist() == split["val"]
        assert p["probs"].shape == (6, 3)
        np.testing.assert_allclose(p["probs"].sum(1), 1.0, rtol=1e-5)
        np.testing.assert_array_equal(p["y_pred"], p["probs"].argmax(1))
        names = ["blue", "green", "red"]
        assert [names[y] for y in p["y_true"]] == [f.split("/")[-2] for f in split["val"]]
        assert float((p["y_true"] == p["y_pred"]).mean()) == pytest.approx(summary[m]["val_accuracy"])


def test_experiment_saves_finetuned_weights_with_frozen_groups_untouched(finished_run):
    store, run_id, _, _, _ = finished_run
    sd = load_file(str(store.run_dir(run_id) / "finetuned.safetensors"))
    # the same seeded initialisation run_experiment used (weights "none")
    torch.manual_seed(0)
    init, _ = build_model("test_resnet", 3, "none")
    init_sd = {k: v.clone() for k, v in init.state_dict().items()}
    assert set(sd) == set(init_sd)
    init.load_state_dict(sd, strict=True)
    frozen_prefixes = ("conv1.", "bn1.", "layer1.", "layer2.", "layer3.")
    n_checked = 0
    for k, v in init_sd.items():
        if k.startswith(frozen_prefixes):
            assert torch.equal(sd[k], v), f"frozen tensor {k} differs from its initial value"
            n_checked += 1
    assert n_checked > 50
    assert not torch.equal(sd["fc.weight"], init_sd["fc.weight"])
    assert not torch.equal(sd["layer4.0.conv1.weight"], init_sd["layer4.0.conv1.weight"])
    # BatchNorm statistics are kept by default (update_bn=False), in unfrozen groups too
    assert int(sd["layer4.0.bn1.num_batches_tracked"]) == 0
    assert torch.equal(sd["layer4.0.bn1.running_mean"], init_sd["layer4.0.bn1.running_mean"])


def test_experiment_cancel_immediately(make_image_folder, store):
    data = make_image_folder(classes={"a": 6, "b": 6})
    cfg = tiny_run_config(data)
    run_id = store.create_run(cfg)
    summary = run_experiment(cfg, store, run_id, should_stop=lambda: True)
    assert summary == {"status": "cancelled"}
    rec = store.get(run_id)
    assert rec.status == "cancelled" and "cancelled by the user" in rec.message and rec.eta_seconds is None
    assert store.epochs(run_id).empty
    assert store.load_predictions(run_id, "baseline") is None
    assert not (store.run_dir(run_id) / "finetuned.safetensors").exists()


def test_experiment_cancel_during_finetuning_keeps_baseline(make_image_folder, store):
    data = make_image_folder(classes={"a": 8, "b": 8})  # 12 training images: 3 steps per model
    cfg = tiny_run_config(data, epochs=1, batch_size=4)
    run_id = store.create_run(cfg)
    ft_steps = []

    def on_event(ev):
        if isinstance(ev, StepEvent) and ev.model == "finetuned":
            ft_steps.append(ev)

    summary = run_experiment(cfg, store, run_id, should_stop=lambda: len(ft_steps) >= 1, on_event=on_event)
    assert len(ft_steps) == 1
    assert summary["status"] == "cancelled"
    assert set(summary) == {"status", "baseline"}
    rec = store.get(run_id)
    assert rec.status == "cancelled"
    df = store.epochs(run_id)
    assert df["model"].tolist() == ["baseline"]
    assert store.load_predictions(run_id, "baseline") is not None
    assert store.load_predictions(run_id, "finetuned") is None
    assert not (store.run_dir(run_id) / "finetuned.safetensors").exists()


def test_experiment_last_batch_of_one_is_dropped(make_image_folder, store):
    # 16 images, 4 for validation, 12 for training; batch size 11 leaves a batch of one, which
    # fails in training-mode BatchNorm at 32 px (1x1 feature maps in layer4), hence update_bn=True
    data = make_image_folder(classes={"a": 8, "b": 8})
    cfg = tiny_run_config(data, batch_size=11, epochs=2)
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, update_bn=True))
    run_id = store.create_run(cfg)
    summary = run_experiment(cfg, store, run_id)
    assert summary["status"] == "finished"
    rec = store.get(run_id)
    assert rec.total_steps == 4 and rec.step == 4  # 1 step per epoch, 2 epochs, 2 models


def test_experiment_batch_larger_than_training_set(make_image_folder, store):
    data = make_image_folder(classes={"a": 8, "b": 8})
    cfg = tiny_run_config(data, batch_size=256, epochs=1, baseline=False)
    run_id = store.create_run(cfg)
    summary = run_experiment(cfg, store, run_id)
    assert summary["status"] == "finished" and "baseline" not in summary
    assert store.get(run_id).total_steps == 1
    assert store.epochs(run_id)["model"].tolist() == ["finetuned"]
    assert store.load_predictions(run_id, "baseline") is None
    assert (store.run_dir(run_id) / "finetuned.safetensors").exists()


def test_experiment_bad_data_marks_run_failed(make_image_folder, store):
    data = make_image_folder(classes={"only": 5})
    cfg = tiny_run_config(data)
    run_id = store.create_run(cfg)
    with pytest.raises(DatasetError, match=r"found 1 \(only\)"):
        run_experiment(cfg, store, run_id)
    rec = store.get(run_id)
    assert rec.status == "failed" and "found 1 (only)" in rec.error and rec.message == "failed"


def test_experiment_vit_with_non_default_image_size(make_image_folder, store):
    data = make_image_folder(classes={"a": 6, "b": 6})
    cfg = tiny_run_config(data, model="vit_tiny_patch16_224", img_size=32, baseline=False, batch_size=8)
    run_id = store.create_run(cfg)
    summary = run_experiment(cfg, store, run_id)
    assert summary["status"] == "finished"


def test_same_seed_same_metrics(make_image_folder, tmp_path):
    """Reproducible on the CPU: the same seed and data give the same metrics (augmentation included)."""
    from conftest import tiny_run_config

    from ftcore.runs.store import RunStore

    data = make_image_folder(classes={"red": 8, "green": 8})
    cfg = tiny_run_config(data, epochs=2)
    results = []
    for i in range(2):
        store = RunStore(tmp_path / f"store{i}")
        rid = store.create_run(cfg)
        run_experiment(cfg, store, rid)
        results.append(store.epochs(rid).drop(columns=["seconds", "images_per_second"]))
    assert results[0].equals(results[1]), (results[0], results[1])


def test_step_costs_are_the_flops_estimate_of_the_layers_page():
    """The time-left estimate uses the measured-FLOPs step cost (the Layers page's), not a parameter share."""
    from ftcore.core.records import ModelRole
    from ftcore.models.compute import describe_compute, step_cost
    from ftcore.models.layers import describe_layer_groups
    from ftcore.train.experiment import step_costs

    costs = step_costs(tiny_run_config("/nowhere", unfreeze="last:2", img_size=32), 3)
    groups = describe_layer_groups("test_resnet", 3)
    page = step_cost(describe_compute("test_resnet", 32, 3), groups, trainable_group_names(groups, "last:2"))
    ft, base = costs[ModelRole.FINETUNED], costs[ModelRole.BASELINE]
    assert ft.to_dict() == page
    assert ft.method == "measured" and base.vs_linear_probe == pytest.approx(1.0)
    assert 1.0 < ft.vs_linear_probe < 3.0
    costs_all = step_costs(tiny_run_config("/nowhere", unfreeze="all", img_size=32), 3)
    assert costs_all[ModelRole.FINETUNED].vs_linear_probe > ft.vs_linear_probe


@pytest.mark.parametrize("balance", ["none", "loss", "sampler"])
def test_class_balance_reaches_the_loss_or_the_batch_order(make_image_folder, store, monkeypatch, balance):
    """Imbalanced classes: class weights go to the training loss, or batches are drawn class-balanced."""
    from torch.utils.data import WeightedRandomSampler

    import ftcore.train.experiment as tr
    from ftcore.core.config import RunConfig
    from ftcore.jobs.writer import run_experiment

    seen = []
    real_fit = tr.fit

    def spy(model, train_loader, *a, **kw):
        seen.append((train_loader.sampler, kw.get("loss_weights")))
        return real_fit(model, train_loader, *a, **kw)

    monkeypatch.setattr(tr, "fit", spy)
    folder = make_image_folder(classes={"red": 12, "green": 4})
    d = tiny_run_config(folder, unfreeze="last:1").to_dict()
    d["train"]["class_balance"] = balance
    cfg = RunConfig.from_dict(d)
    summary = run_experiment(cfg, store, store.create_run(cfg))
    assert summary["status"] == "finished" and len(seen) == 2  # baseline and fine-tuned, both balanced alike
    for sampler, weights in seen:
        assert isinstance(sampler, WeightedRandomSampler) == (balance == "sampler")
        if balance == "loss":
            # scikit-learn's balanced weights of 9 red and 3 green training images: 12 / (2 * count)
            torch.testing.assert_close(weights.cpu(), torch.tensor([12 / 6, 12 / 18]))
        else:
            assert weights is None
