"""Headless runs: ``python -m ftcore train ...`` writes into the same run store as the UI.

``python -m ftcore audit PATH [--json]`` reads every image of a folder or zip
once and says what training can use (:func:`ftcore.data.audit.audit_dataset`).

Exit status: 0 finished (audit: training can proceed), 1 the run failed
(unusable data, weights, training; audit: something is refused), 2 bad
arguments, 130 cancelled with Ctrl-C.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path

from ftcore import (
    SECTIONS,
    ConfigError,
    DatasetError,
    FtcoreError,
    ModelRole,
    RunConfig,
    RunStatus,
    field_specs,
)

__all__ = ["main", "build_parser", "config_from_args", "add_option", "option_keys"]


def option_keys() -> dict[str, tuple[str, str]]:
    """The ``train`` options and the configuration fields they set, derived from the field list.

    Every field of :data:`ftcore.SECTIONS` with a flag has one option; its
    dest is argparse's name for the flag (``--no-baseline`` ->
    ``no_baseline``, ``--patience`` -> ``patience``).

    Returns
    -------
    dict of str to (str, str)
        Option dest -> (configuration section, key), e.g. ``"patience": ("train", "early_stopping_patience")``.
    """
    return {_dest(spec.flag): (section, name) for section, klass in SECTIONS.items()
            for name, spec in field_specs(klass).items() if spec.flag}


def _dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def add_option(parser: argparse.ArgumentParser, section: str, name: str, *, default: object = None,
               dest: str | None = None) -> argparse.Action:
    """Add the option of configuration field `section`.`name` to `parser`, from the field's metadata.

    The flag, type, choices, metavar and help come from its
    :class:`~ftcore.core.fields.FieldSpec`; the help ends with the field's
    default, ``(default: 3)``. A bool field's flag turns it to the opposite
    of its default (``--no-baseline`` stores False).

    Parameters
    ----------
    parser : argparse.ArgumentParser
        Where to add the option.
    section, name : str
        The configuration section (``"train"``) and field (``"lr"``).
    default : object, default None
        The option's value when it is not given, shown in the help; None
        lets a ``--config`` file or the field's default decide, and shows
        the field's default.
    dest : str or None, default None
        The attribute on the parsed namespace; None: argparse's name for the flag.

    Returns
    -------
    argparse.Action
        The option added.
    """
    f = next(f for f in dataclasses.fields(SECTIONS[section]) if f.name == name)
    spec = f.metadata["spec"]
    required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    shown = "required unless --config gives it" if required else spec.shown_default(f.default)
    text = spec.help
    if spec.kind == "bool":
        text = f"turns {'off' if f.default else 'on'}: {text}"
    # A given default is the one shown (argparse fills in %(default)s); else the field's, which applies.
    shown = "%(default)s" if default is not None else shown.replace("%", "%%")
    kw: dict = {"default": default, "help": f"{text.replace('%', '%%')} (default: {shown})"}
    if dest is not None:
        kw["dest"] = dest
    if spec.kind == "bool":
        kw.update(action="store_const", const=not f.default)
    else:
        kw.update(type={"int": int, "float": float}.get(spec.kind, str), metavar=spec.metavar)
        if spec.choices:
            kw["choices"] = spec.choices
    return parser.add_argument(spec.flag, **kw)


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """The run configuration of ``train`` arguments: the --config file (if any), then every option given.

    Options left out (None) keep the file's value, or the default when there
    is no file. The file may lack sections or keys (e.g. the data folder,
    given with --data); the merged result is validated.

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
    for dest, (section, key) in option_keys().items():
        value = getattr(args, dest, None)
        if value is not None:
            if d.get(section) is None:
                d[section] = {}
            if not isinstance(d[section], dict):
                raise ConfigError(f"section '{section}' of {args.config} is {d[section]!r}; it must be an object of "
                                  "settings.")
            d[section][key] = value
    return RunConfig.from_dict(d)


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m ftcore``; the ``train`` options come from the configuration's field list."""
    p = _Parser(prog="python -m ftcore", description="Guided fine-tuning of timm image classifiers, headless.")
    # The metavar lists the commands for people; the internal ``worker`` stays out of the help (an
    # ``add_parser(help=SUPPRESS)`` would print "==SUPPRESS==" in the command list).
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="{train,audit}")
    t = sub.add_parser("train", help="train the frozen baseline and the fine-tuned model on an image folder",
                       description="Options given override the values of --config FILE; the others come from the "
                                   "file, or are the defaults shown.")
    t.add_argument("--config", default=None, metavar="FILE",
                   help="a run configuration (config.json of an earlier run, or one saved from the dashboard)")
    for section, klass in SECTIONS.items():
        for name, spec in field_specs(klass).items():
            if spec.flag:
                add_option(t, section, name)
    t.add_argument("--store", default=None, help="run store folder (default $FTCORE_HOME or ~/.ftcore)")
    t.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    a = sub.add_parser("audit", help="read every image of a folder or zip once and say what training can use")
    a.add_argument("path", help="folder (one sub-folder per class, or train/ and val/) or a .zip of one")
    add_option(a, "data", "val_dir")
    add_option(a, "data", "val_fraction", default=_field_default("data", "val_fraction"))
    a.add_argument("--store", default=None, help="run store folder a zip is extracted into (default $FTCORE_HOME)")
    a.add_argument("--json", action="store_true", help="print one JSON object: ok, layout, classes, problems, warnings")
    w = sub.add_parser("worker")
    w.add_argument("--store", default=None)
    w.add_argument("run_id")
    return p


def _field_default(section: str, name: str) -> object:
    return next(f.default for f in dataclasses.fields(SECTIONS[section]) if f.name == name)


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
    facts = store.get(run_id).facts
    for m in ModelRole:
        pre = facts.model(m).prefix
        if pre and pre.used:
            print(f"{m}: frozen layers up to {pre.entry} computed once ({pre.bytes / 1e6:.1f} MB, "
                  f"{pre.seconds:.1f} s)", file=sys.stderr)
        elif pre:
            print(f"{m}: every layer ran each epoch ({pre.reason})", file=sys.stderr)
    if facts.skipped:
        print(f"warning: {len(facts.skipped)} files could not be used and were left out, e.g. "
              f"{facts.skipped[0].path}: {facts.skipped[0].message}", file=sys.stderr)
    if facts.empty_classes:
        print(f"warning: folders with no usable image were not made classes: {', '.join(facts.empty_classes)}",
              file=sys.stderr)
    status = summary.pop("status")
    out = {"run_id": run_id, "status": status, "device": device, **summary}
    if args.json:
        print(json.dumps(out))
    else:
        for m in ModelRole:
            if m in out:
                r = out[m]
                print(f"{m}: val accuracy {r['val_accuracy']:.4f}, val macro recall {r['val_macro_recall']:.4f}, "
                      f"{r['train_images_per_second']:.1f} train img/s, {r['seconds']:.1f} s")
    return 0 if status == RunStatus.FINISHED else 130


def _audit(args: argparse.Namespace) -> int:
    """``python -m ftcore audit``: exit 0 when training can proceed, 1 when not, 2 for bad arguments."""
    from ftcore import audit_dataset

    try:
        field_specs(SECTIONS["data"])["val_fraction"].check("val_fraction", args.val_fraction)
    except ConfigError as e:
        print(f"python -m ftcore audit: error: {e}", file=sys.stderr)
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
