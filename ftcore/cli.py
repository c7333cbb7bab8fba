"""Headless runs: ``python -m ftcore train ...`` writes into the same run store as the UI.

``python -m ftcore audit PATH [--json]`` reads every image of a folder or zip
once and says what training can use (:func:`ftcore.data.audit.audit_dataset`).

Exit status: 0 finished (audit: training can proceed), 1 the run failed
(unusable data, weights, training; audit: something is refused), 2 bad
arguments, 130 cancelled with Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path

from ftcore import (
    AUGMENT_PRESETS,
    CLASS_BALANCE,
    DEVICES,
    EARLY_STOPPING_METRICS,
    ConfigError,
    DatasetError,
    FtcoreError,
    RunConfig,
)

__all__ = ["main", "build_parser", "config_from_args"]

#: Command-line option (argparse dest) -> (configuration section, key).
_OPTION_KEYS = {
    "data": ("data", "train_dir"), "val": ("data", "val_dir"), "val_fraction": ("data", "val_fraction"),
    "model": ("backbone", "name"), "weights": ("backbone", "weights"), "unfreeze": ("freeze", "unfreeze"),
    "epochs": ("train", "epochs"), "batch_size": ("train", "batch_size"), "lr": ("train", "lr"),
    "backbone_lr_scale": ("train", "backbone_lr_scale"), "layer_decay": ("train", "layer_decay"),
    "warmup_epochs": ("train", "warmup_epochs"), "unfreeze_after": ("train", "unfreeze_after"),
    "augment": ("train", "augment"), "label_smoothing": ("train", "label_smoothing"),
    "weight_decay": ("train", "weight_decay"), "patience": ("train", "early_stopping_patience"),
    "early_stopping_metric": ("train", "early_stopping_metric"), "update_bn": ("train", "update_bn"),
    "img_size": ("train", "img_size"), "seed": ("train", "seed"), "device": ("train", "device"),
    "workers": ("train", "num_workers"), "class_balance": ("train", "class_balance"),
}


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """The run configuration of ``train`` arguments: the --config file (if any), then every option given.

    Options left out (None) keep the file's value, or the default when there
    is no file. The file may lack sections or keys (e.g. the data folder,
    given with --data); the merged result is validated. ``--no-baseline`` sets ``train.baseline`` to False.

    Raises
    ------
    ConfigError
        If the file cannot be read or a value is invalid.
    """
    d: dict = {}
    if args.config:
        try:
            d = json.loads(Path(args.config).read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise ConfigError(f"cannot read run configuration {args.config}: {e}") from e
        if not isinstance(d, dict):
            raise ConfigError(f"run configuration {args.config} is not a JSON object with sections backbone, freeze, "
                              "data and train.")
    for dest, (section, key) in _OPTION_KEYS.items():
        value = getattr(args, dest, None)
        if value is not None:
            if d.get(section) is None:
                d[section] = {}
            if not isinstance(d[section], dict):
                raise ConfigError(f"section '{section}' of {args.config} is {d[section]!r}; it must be an object of "
                                  "settings.")
            d[section][key] = value
    if args.no_baseline:
        d.setdefault("train", {})["baseline"] = False
    if getattr(args, "no_feature_cache", None):
        d.setdefault("train", {})["feature_cache"] = False
    return RunConfig.from_dict(d)


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m ftcore``."""
    p = _Parser(prog="python -m ftcore", description="Guided fine-tuning of timm image classifiers, headless.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    t = sub.add_parser("train", help="train the frozen baseline and the fine-tuned model on an image folder",
                       description="Options given override the values of --config FILE; the others come from the "
                                   "file, or are the defaults shown.")
    t.add_argument("--config", default=None, metavar="FILE",
                   help="a run configuration (config.json of an earlier run, or one saved from the dashboard)")
    t.add_argument("--data", default=None, help="folder with one sub-folder per class (or train/ and val/)")
    t.add_argument("--val", default=None, help="separate validation folder (one sub-folder per class)")
    t.add_argument("--val-fraction", type=float, default=None, help="held-out share per class when splitting (default 0.2)")
    t.add_argument("--model", default=None, help="timm backbone name (default tf_efficientnet_lite0)")
    t.add_argument("--weights", default=None, help="auto | FILE | none (random initialisation) (default auto)")
    t.add_argument("--unfreeze", default=None,
                   help="head | all | last:N | groups:NAME,NAME (layer groups or their sub-blocks) (default all)")
    t.add_argument("--epochs", type=int, default=None, help="(default 3)")
    t.add_argument("--batch-size", type=int, default=None, help="(default 32)")
    t.add_argument("--lr", type=float, default=None, help="peak AdamW learning rate of the head (default 1e-3)")
    t.add_argument("--backbone-lr-scale", type=float, default=None,
                   help="unfrozen backbone groups learn at lr times this (default 0.1)")
    t.add_argument("--layer-decay", type=float, default=None,
                   help="layer-wise learning-rate decay: a group d groups before the head learns at lr * decay**d "
                        "(replaces --backbone-lr-scale; 0.75 is usual)")
    t.add_argument("--warmup-epochs", type=float, default=None, help="linear warm-up before the cosine decay (default 0)")
    t.add_argument("--unfreeze-after", type=int, default=None,
                   help="gradual unfreezing: train the head alone for this many epochs first (default 0)")
    t.add_argument("--augment", choices=AUGMENT_PRESETS, default=None, help="augmentation preset (default light)")
    t.add_argument("--label-smoothing", type=float, default=None, help="(default 0)")
    t.add_argument("--weight-decay", type=float, default=None, help="AdamW weight decay (default 0.01)")
    t.add_argument("--patience", type=int, default=None,
                   help="early stopping: epochs without improvement before stopping; 0 is off (default 0)")
    t.add_argument("--early-stopping-metric", choices=tuple(EARLY_STOPPING_METRICS), default=None,
                   help="(default val_loss)")
    t.add_argument("--update-bn", action="store_const", const=True, default=None,
                   help="let BatchNorm in unfrozen groups update its running statistics (default: kept)")
    t.add_argument("--img-size", type=int, default=None, help="input size in pixels (default: the backbone's)")
    t.add_argument("--seed", type=int, default=None, help="(default 0)")
    t.add_argument("--device", choices=DEVICES, default=None, help="(default auto: CUDA, else MPS, else the CPU)")
    t.add_argument("--workers", type=int, default=None, help="data-loader worker processes (default 0)")
    t.add_argument("--no-baseline", action="store_const", const=True, default=None,
                   help="skip the frozen baseline")
    t.add_argument("--no-feature-cache", action="store_const", const=True, default=None,
                   help="run every layer each epoch instead of computing the frozen layers once (keeps fresh "
                        "augmentation before the first unfrozen group; slower)")
    t.add_argument("--class-balance", choices=CLASS_BALANCE, default=None,
                   help="for imbalanced classes: none, loss (class-weighted cross-entropy) or sampler (classes "
                        "drawn equally often) (default none)")
    t.add_argument("--store", default=None, help="run store folder (default $FTCORE_HOME or ~/.ftcore)")
    t.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    a = sub.add_parser("audit", help="read every image of a folder or zip once and say what training can use")
    a.add_argument("path", help="folder (one sub-folder per class, or train/ and val/) or a .zip of one")
    a.add_argument("--val", default=None, help="separate validation folder")
    a.add_argument("--val-fraction", type=float, default=0.2, help="held-out share per class when splitting (default 0.2)")
    a.add_argument("--store", default=None, help="run store folder a zip is extracted into (default $FTCORE_HOME)")
    a.add_argument("--json", action="store_true", help="print one JSON object: ok, layout, classes, problems, warnings")
    w = sub.add_parser("worker", help=argparse.SUPPRESS)
    w.add_argument("--store", default=None)
    w.add_argument("run_id")
    return p


def _train_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["train"]


def _progress_printer(stream):
    state = {"last": 0.0}

    def on_event(ev) -> None:
        from ftcore import EpochEvent, StepEvent

        now = time.monotonic()
        if isinstance(ev, StepEvent):
            if now - state["last"] >= 5 or ev.step == 1:
                state["last"] = now
                left = (ev.seconds / ev.step) * (ev.total_steps - ev.step)
                print(f"[{ev.model}] epoch {ev.epoch} step {ev.step}/{ev.total_steps} loss {ev.loss:.4f} "
                      f"~{left:.0f} s left for this model", file=stream, flush=True)
        elif isinstance(ev, EpochEvent):
            print(f"[{ev.model}] epoch {ev.epoch}/{ev.epochs}: train loss {ev.train_loss:.4f} "
                  f"acc {ev.train_accuracy:.3f} | val loss {ev.val_loss:.4f} acc {ev.val_accuracy:.3f} "
                  f"macro recall {ev.val_macro_recall:.3f} | {ev.seconds:.1f} s, "
                  f"{ev.images_per_second:.1f} img/s", file=stream, flush=True)

    return on_event


def _train(args: argparse.Namespace) -> int:
    from ftcore import RunStore, run_experiment

    try:
        cfg = config_from_args(args)
        from ftcore import device_summary

        device = device_summary(cfg.train.device)
        from ftcore import resolve_weights, scan_layout

        resolve_weights(cfg.backbone.name, cfg.backbone.weights)
        scan_layout(cfg.data)
    except DatasetError as e:
        print(f"python -m ftcore train: error: {e}", file=sys.stderr)
        return 1
    except FtcoreError as e:
        print(f"python -m ftcore train: error: {e}", file=sys.stderr)
        return 2
    try:
        store = RunStore(args.store)
        run_id = store.create_run(cfg)
        # The pid lets the dashboard see that this run ended if this process is killed.
        store.update(run_id, pid=os.getpid())
    except FtcoreError as e:
        print(f"python -m ftcore train: error: {e}", file=sys.stderr)
        return 1
    print(f"run {run_id} in {store.root}; device: {device}", file=sys.stderr, flush=True)
    stop = {"flag": False}

    def on_signal(signum, frame):  # noqa: ARG001
        stop["flag"] = True
        print("stopping after this batch...", file=sys.stderr, flush=True)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        summary = run_experiment(cfg, store, run_id, should_stop=lambda: stop["flag"] or store.cancel_requested(run_id),
                                 on_event=_progress_printer(sys.stderr))
    except FtcoreError as e:
        print(f"python -m ftcore train: error: {e}", file=sys.stderr)
        return 1
    except Exception as e:  # recorded in the store as an internal error; one line here, the log has the rest
        first = (str(e).strip().splitlines() or [""])[0]
        print(f"python -m ftcore train: error: run {run_id} failed: {type(e).__name__}: {first}", file=sys.stderr)
        return 1
    info = store.get(run_id).info
    for m in ("baseline", "finetuned"):
        pre = info.get(f"{m}_prefix")
        if pre and pre.get("used"):
            print(f"{m}: frozen layers up to {pre['entry']} computed once ({pre['bytes'] / 1e6:.1f} MB, "
                  f"{pre['seconds']:.1f} s)", file=sys.stderr)
        elif pre:
            print(f"{m}: every layer ran each epoch ({pre['reason']})", file=sys.stderr)
    if info.get("skipped"):
        print(f"warning: {len(info['skipped'])} files could not be used and were left out, e.g. "
              f"{info['skipped'][0]['path']}: {info['skipped'][0]['message']}", file=sys.stderr)
    if info.get("empty_classes"):
        print(f"warning: folders with no usable image were not made classes: {', '.join(info['empty_classes'])}",
              file=sys.stderr)
    status = summary.pop("status")
    out = {"run_id": run_id, "status": status, "device": device, **summary}
    if args.json:
        print(json.dumps(out))
    else:
        for m in ("baseline", "finetuned"):
            if m in out:
                r = out[m]
                print(f"{m}: val accuracy {r['val_accuracy']:.4f}, val macro recall {r['val_macro_recall']:.4f}, "
                      f"{r['train_images_per_second']:.1f} train img/s, {r['seconds']:.1f} s")
    return 0 if status == "finished" else 130


def _audit(args: argparse.Namespace) -> int:
    """``python -m ftcore audit``: exit 0 when training can proceed, 1 when not, 2 for bad arguments."""
    from ftcore import audit_dataset

    if not 0.0 < args.val_fraction < 1.0:
        print(f"python -m ftcore audit: error: --val-fraction {args.val_fraction} is not in (0, 1)", file=sys.stderr)
        return 2
    state = {"last": time.monotonic()}

    def progress(done: int, total: int) -> None:
        now = time.monotonic()
        if now - state["last"] >= 2 or done == total:
            state["last"] = now
            print(f"read {done}/{total} files", file=sys.stderr, flush=True)

    try:
        report = audit_dataset(args.path, args.val, val_fraction=args.val_fraction, store_root=args.store,
                               progress=progress)
    except FtcoreError as e:
        if args.json:
            print(json.dumps({"ok": False, "layout": None, "classes": {}, "problems": [
                {"path": str(args.path), "kind": "unusable", "message": str(e), "action": "refused"}],
                "warnings": []}, ensure_ascii=False))
        print(f"python -m ftcore audit: error: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report.to_json(), ensure_ascii=False))
    else:
        print(f"{report.root}: layout {report.layout}, {len(report.class_names)} classes, audited in "
              f"{report.seconds:.1f} s")
        counts = report.classes if report.split_layout != "class_folders" else {"images": report.classes}
        for split, cs in counts.items():
            print(f"  {split}: " + ", ".join(f"{c} {n}" for c, n in cs.items()))
        for p in report.problems:
            print(f"  [{p.action}] {p.kind}: {p.path}: {p.message}")
        for w in report.warnings:
            print(f"warning: {w}")
        print("ok: training can proceed" if report.ok else "not ok: fix the refused items above")
    return 0 if report.ok else 1


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit status."""
    argv = sys.argv[1:] if argv is None else argv
    stop = {"stop": False}
    if argv[:1] == ["worker"]:
        # Before the heavy imports: a cancel that comes while torch loads must not kill the worker.
        def on_term(signum, frame):  # noqa: ARG001
            stop["stop"] = True

        signal.signal(signal.SIGTERM, on_term)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "train" and not args.data and not args.config:
        _train_parser(parser).error("the following arguments are required: --data (or --config FILE)")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if args.command == "train":
        return _train(args)
    if args.command == "audit":
        return _audit(args)
    if args.command == "worker":
        from ftcore import RunStore, run_worker

        logging.getLogger("ftcore").setLevel(logging.INFO)
        return run_worker(RunStore(args.store), args.run_id, stop)
    return 2
