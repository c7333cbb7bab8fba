"""Benchmark: the product's training path against a plain PyTorch loop.

The reference is the loop a user would otherwise write: torchvision
``ImageFolder`` + ``DataLoader`` + the timm model, decoding and augmenting
every image every epoch, in the default memory layout. It gets the same
split, transforms (the default augmentation preset, :func:`ftcore.data.augment.build_transforms`),
weights, frozen groups, optimiser (AdamW, head at ``lr``, unfrozen backbone
groups at ``lr * backbone_lr_scale``, cosine schedule), BatchNorm handling
(:func:`ftcore.models.layers.set_train_mode`), batch size, seed and thread count.
The product runs :func:`ftcore.jobs.writer.run_experiment` (fine-tuned model
only) with its decoded-image cache, frozen-prefix cache and ``channels_last``.

Every run is a fresh process, so that peak memory (``ru_maxrss``) is its
own. Runs alternate reference/product within each repeat, so that load on
the machine falls on both. Printed per setting: medians over the repeats of
training images per second (epochs after the first, reading the batches
included, validation excluded), the wall time per epoch after the first
(validation included), setup time (reading images, computing a frozen
prefix), peak memory, and final validation accuracy of each, plus the
product/reference ratios.

Usage (from the project root)::

    python bench/bench.py --data ../shared/data/cifar10/train --img-size 128 --per-class 100 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ftcore.cli import add_option  # noqa: E402 - after the path insert
from ftcore.core.config import TrainConfig  # noqa: E402

SETTINGS = {"head only": "head", "last 2 groups": "last:2", "all": "all"}


def _split(a: argparse.Namespace) -> dict:
    """The product's own split (audit, duplicates dropped, seeded stratified split), for both contenders."""
    from ftcore.core.config import DataConfig
    from ftcore.data.augment import build_transforms
    from ftcore.data.split import prepare_split
    from ftcore.models.layers import meta_model

    _, _, short = build_transforms(meta_model(a.model), a.img_size)  # the model's configuration; no weights read
    split = prepare_split(DataConfig(train_dir=a.data, val_fraction=a.val_fraction), seed=a.seed, short_side=short,
                          store_root=a.store)
    return {"class_names": split.class_names, "train": split.train_files, "val": split.val_files}


def _subset(src: str, per_class: int, dest: Path) -> str:
    """Copy the first `per_class` images of each class into `dest` (outside the project)."""
    for cls in sorted(p for p in Path(src).iterdir() if p.is_dir() and not p.name.startswith(".")):
        out = dest / cls.name
        out.mkdir(parents=True, exist_ok=True)
        for f in sorted(cls.iterdir())[:per_class]:
            shutil.copy2(f, out / f.name)
    return str(dest)


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_reference(a: argparse.Namespace) -> dict:
    """The plain loop: ImageFolder + DataLoader + timm model, decoding every image every epoch."""
    import torch
    from torch.utils.data import DataLoader, Subset
    from torchvision.datasets import ImageFolder

    from ftcore.data.augment import build_transforms
    from ftcore.models.backbones import build_model
    from ftcore.models.layers import (
        apply_freeze,
        classifier_modules,
        layer_groups,
        set_train_mode,
        trainable_group_names,
    )
    from ftcore.train.experiment import _seed_everything

    _seed_everything(a.seed)
    t_setup = time.perf_counter()
    split = json.loads(Path(a.split_file).read_text())
    classes, train_files, val_files = split["class_names"], split["train"], split["val"]
    model, _ = build_model(a.model, len(classes), "auto", a.img_size)
    # The product's augmentation preset (its default unless --augment says), so that both loops augment alike.
    train_tf, val_tf, _ = build_transforms(model, a.img_size, a.augment)
    ds_tr, ds_va = ImageFolder(a.data, transform=train_tf), ImageFolder(a.data, transform=val_tf)
    index = {p: i for i, (p, _) in enumerate(ds_tr.samples)}
    tr_idx = [index[f] for f in train_files]
    va_idx = [index[f] for f in val_files]
    groups = layer_groups(model)
    apply_freeze(model, groups, trainable_group_names(groups, a.unfreeze))
    bs = min(a.batch_size, len(tr_idx))
    g = torch.Generator().manual_seed(a.seed)
    tl = DataLoader(Subset(ds_tr, tr_idx), batch_size=bs, shuffle=True, drop_last=len(tr_idx) % bs == 1,
                    generator=g, num_workers=a.workers)
    vl = DataLoader(Subset(ds_va, va_idx), batch_size=max(bs, 64), num_workers=a.workers)
    head_ids = {id(p) for m in classifier_modules(model) for p in m.parameters()}
    head = [p for p in model.parameters() if p.requires_grad and id(p) in head_ids]
    body = [p for p in model.parameters() if p.requires_grad and id(p) not in head_ids]
    # timm's weight-decay rule, as the product applies it: none for 1-d parameters, biases and no_weight_decay().
    names = {id(p): n for n, p in model.named_parameters()}
    skip = set(getattr(model, "no_weight_decay", lambda: set())())

    def groups_at(params, lr):
        exempt = [p.ndim <= 1 or names[id(p)].endswith(".bias") or names[id(p)] in skip for p in params]
        decay = [p for p, e in zip(params, exempt) if not e]
        keep = [p for p, e in zip(params, exempt) if e]
        pairs = ({"params": decay, "lr": lr}, {"params": keep, "lr": lr, "weight_decay": 0.0})
        return [d for d in pairs if d["params"]]

    pg = groups_at(head, a.lr) + groups_at(body, a.lr * a.backbone_lr_scale)
    opt = torch.optim.AdamW(pg, lr=a.lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=a.epochs * len(tl))
    setup = time.perf_counter() - t_setup
    epochs = []
    for _ in range(a.epochs):
        te = time.perf_counter()
        set_train_mode(model, False)
        n = 0
        for x, y in tl:
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            n += len(y)
        train_s = time.perf_counter() - te
        model.eval()
        correct = 0
        with torch.no_grad():
            for x, y in vl:
                correct += int((model(x).argmax(1) == y).sum())
        epochs.append({"train_seconds": train_s, "images": n, "seconds": time.perf_counter() - te,
                       "val_accuracy": correct / len(va_idx)})
    return {"setup_seconds": setup, "epochs": epochs, "peak_mb": _peak_mb(),
            "val_accuracy": epochs[-1]["val_accuracy"], "threads": torch.get_num_threads()}


def run_product(a: argparse.Namespace) -> dict:
    """The product: ftcore.jobs.writer.run_experiment with its caches, fine-tuned model only."""
    import torch

    from ftcore.core.config import BackboneConfig, DataConfig, FreezeConfig, RunConfig, TrainConfig
    from ftcore.core.events import EpochEvent
    from ftcore.jobs.writer import run_experiment
    from ftcore.runs.store import RunStore

    t0 = time.perf_counter()
    cfg = RunConfig(
        backbone=BackboneConfig(name=a.model, weights="auto"),
        freeze=FreezeConfig(unfreeze=a.unfreeze),
        data=DataConfig(train_dir=a.data, val_fraction=a.val_fraction),
        train=TrainConfig(epochs=a.epochs, batch_size=a.batch_size, lr=a.lr, backbone_lr_scale=a.backbone_lr_scale,
                          img_size=a.img_size, baseline=False, seed=a.seed, num_workers=a.workers,
                          feature_cache=a.feature_cache, channels_last=a.channels_last,
                          augment=a.augment),
    )
    store = RunStore(a.store)
    run_id = store.create_run(cfg)
    events: list[EpochEvent] = []
    first_step = []

    def on_event(ev) -> None:
        if isinstance(ev, EpochEvent):
            events.append(ev)
        elif not first_step:
            first_step.append(time.perf_counter())

    summary = run_experiment(cfg, store, run_id, on_event=on_event)
    rec = store.get(run_id)
    want = json.loads(Path(a.split_file).read_text())
    train_files = want["train"]
    split = json.loads((store.run_dir(run_id) / "split.json").read_text())
    if split["val"] != want["val"] or split["train"] != want["train"]:
        raise SystemExit("the product's split differs from the reference's; the comparison would be unfair")
    epochs = []
    seen_s = 0.0
    for e in events:
        n_total = e.epoch * len(train_files)
        total_s = n_total / e.images_per_second  # cumulative training seconds up to this epoch
        epochs.append({"train_seconds": total_s - seen_s, "images": len(train_files), "seconds": e.seconds,
                       "val_accuracy": e.val_accuracy})
        seen_s = total_s
    return {"setup_seconds": (first_step[0] if first_step else time.perf_counter()) - t0, "epochs": epochs,
            "peak_mb": _peak_mb(), "val_accuracy": summary["finetuned"]["val_accuracy"],
            "threads": torch.get_num_threads(), "prefix": rec.info.get("finetuned_prefix")}


def _one(kind: str, a: argparse.Namespace, unfreeze: str) -> dict:
    cmd = [sys.executable, __file__, "--one", kind, "--unfreeze", unfreeze, "--data", a.data, "--model", a.model,
           "--img-size", str(a.img_size), "--epochs", str(a.epochs), "--batch-size", str(a.batch_size),
           "--lr", str(a.lr), "--backbone-lr-scale", str(a.backbone_lr_scale), "--seed", str(a.seed),
           "--val-fraction", str(a.val_fraction), "--workers", str(a.workers), "--store", a.store,
           "--split-file", a.split_file, "--augment", a.augment]
    cmd += ["--no-feature-cache"] * (not a.feature_cache) + ["--no-channels-last"] * (not a.channels_last)
    p = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if p.returncode != 0:
        raise SystemExit(f"{kind} run failed:\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def _after_first(r: dict) -> tuple[float, float]:
    later = r["epochs"][1:] or r["epochs"]
    ips = sum(e["images"] for e in later) / sum(e["train_seconds"] for e in later)
    return ips, statistics.median(e["seconds"] for e in later)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "cifar10" / "train"),
                   help="folder with one sub-folder per class (default ../shared/data/cifar10/train)")
    p.add_argument("--per-class", type=int, default=0, help="use only the first N images of each class (0: all)")
    # The training options shared with `python -m ftcore train` take their flag, type, choices and help from the
    # configuration's field list; the defaults are the benchmark's own.
    for section, name, default in (("backbone", "name", "tf_efficientnet_lite0"), ("train", "img_size", 128),
                                   ("train", "epochs", 3), ("train", "batch_size", 32), ("train", "lr", 1e-3),
                                   ("train", "backbone_lr_scale", 0.1), ("train", "seed", 0),
                                   ("data", "val_fraction", 0.2), ("train", "num_workers", 0),
                                   ("train", "augment", TrainConfig().augment)):
        opt = add_option(p, section, name, default=default)
        if name == "epochs":
            opt.help = "epochs per run, >= 2 (the first is not timed) (default: %(default)s)"
        if name == "augment":
            opt.help += "; 'none' makes the product's frozen-prefix path the same computation as the reference's"
    for name in ("feature_cache", "channels_last"):  # the product without its frozen-prefix cache / channels_last
        add_option(p, "train", name, default=True, dest=name)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--settings", default=",".join(SETTINGS), help="comma-separated subset of: " + ", ".join(SETTINGS))
    p.add_argument("--json", default=None, help="also write all raw results to this file")
    p.add_argument("--one", choices=["reference", "product"], help=argparse.SUPPRESS)
    p.add_argument("--unfreeze", default="all", help=argparse.SUPPRESS)
    p.add_argument("--store", default=None, help=argparse.SUPPRESS)
    p.add_argument("--split-file", default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.one:
        print(json.dumps(run_reference(a) if a.one == "reference" else run_product(a)))
        return 0
    if a.epochs < 2:
        p.error("--epochs must be at least 2: the first epoch is not timed")
    if not Path(a.data).is_dir():
        p.error(f"--data {a.data!r} is not a folder; give a folder with one sub-folder of images per class "
                "(e.g. --data ../shared/data/cifar10/train from the project folder)")
    settings = [s.strip() for s in a.settings.split(",")]
    bad = [s for s in settings if s not in SETTINGS]
    if bad:
        p.error(f"unknown settings {bad}; choose from {list(SETTINGS)}")
    with tempfile.TemporaryDirectory(prefix="ftcore-bench-") as tmp:
        given = a.data
        if a.per_class:  # a temporary copy of the first N images a class, removed at the end
            a.data = _subset(a.data, a.per_class, Path(tmp) / "data")
        a.store = str(Path(tmp) / "store")
        a.split_file = str(Path(tmp) / "split.json")
        Path(a.split_file).write_text(json.dumps(_split(a)))
        import torch

        print(f"machine: {platform.processor() or platform.machine()}, {len(os.sched_getaffinity(0))} cores, "
              f"torch {torch.__version__}; {a.model} at {a.img_size} px, batch {a.batch_size}, {a.epochs} epochs, "
              f"augmentation {a.augment!r}, "
              f"data {given}{f' (first {a.per_class} a class)' if a.per_class else ''}, "
              f"{a.repeats} repeat{'s' if a.repeats != 1 else ''}", flush=True)
        raw: dict = {}
        for name in settings:
            runs = {"reference": [], "product": []}
            for r in range(a.repeats):
                for kind in ("reference", "product"):
                    t = time.perf_counter()
                    res = _one(kind, a, SETTINGS[name])
                    res["wall_seconds"] = time.perf_counter() - t
                    runs[kind].append(res)
                    ips, ep = _after_first(res)
                    print(f"  {name:14s} {kind:9s} repeat {r + 1}: {ips:7.1f} img/s, {ep:6.1f} s/epoch, "
                          f"setup {res['setup_seconds']:5.1f} s, peak {res['peak_mb']:6.0f} MB, "
                          f"val acc {res['val_accuracy']:.3f}", flush=True)
            raw[name] = runs
        print()
        hdr = (f"{'setting':14s} | {'ref img/s':>9s} | {'ftcore img/s':>12s} | {'ratio':>6s} | {'ref s/ep':>8s} | "
               f"{'ftcore s/ep':>11s} | {'ep ratio':>8s} | {'ref MB':>7s} | {'ftcore MB':>9s} | {'ref acc':>7s} | "
               f"{'ftcore acc':>10s}")
        print(hdr)
        print("-" * len(hdr))
        for name, runs in raw.items():
            med = {}
            for kind, rs in runs.items():
                ips = statistics.median(_after_first(r)[0] for r in rs)
                ep = statistics.median(_after_first(r)[1] for r in rs)
                mb = statistics.median(r["peak_mb"] for r in rs)
                acc = statistics.median(r["val_accuracy"] for r in rs)
                med[kind] = (ips, ep, mb, acc)
            (ri, re_, rm, ra), (pi, pe, pm, pa) = med["reference"], med["product"]
            print(f"{name:14s} | {ri:9.1f} | {pi:12.1f} | {pi / ri:5.1f}x | {re_:8.1f} | {pe:11.2f} | "
                  f"{re_ / pe:7.1f}x | {rm:7.0f} | {pm:9.0f} | {ra:7.3f} | {pa:10.3f}")
            prefix = runs["product"][0].get("prefix") or {}
            print(f"{'':14s}   frozen prefix computed once: "
                  + (f"yes, up to {prefix.get('entry')} ({prefix.get('bytes', 0) / 1e6:.1f} MB)" if prefix.get("used")
                     else f"no ({prefix.get('reason')})"))
        print("\nimg/s: training images per second in epochs after the first (reading batches included); "
              "s/ep: wall seconds per epoch after the first (validation included); medians over repeats. "
              "ratio = ftcore img/s / reference img/s and ep ratio = reference s/ep / ftcore s/ep: above 1, the "
              "product is faster.")
        if a.json:
            Path(a.json).write_text(json.dumps(raw, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
