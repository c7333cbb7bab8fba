"""``python -m ftcore train --config FILE``: repeat a saved run; options given override the file."""

from __future__ import annotations

import json

import pytest
from conftest import _make_image_folder

from ftcore import cli
from ftcore.runs.store import RunStore

TINY = ["--model", "test_resnet", "--weights", "none", "--img-size", "32", "--epochs", "2", "--batch-size", "4"]


@pytest.fixture
def no_signal_handlers(monkeypatch):
    monkeypatch.setattr(cli.signal, "signal", lambda sig, handler: None)


def _run(args, capsys) -> dict:
    rc = cli.main(args)
    out, err = capsys.readouterr()
    assert rc == 0, err
    return json.loads(out.strip().splitlines()[-1]), err


def test_rerun_from_saved_config_gives_the_same_metrics(tmp_path, capsys, no_signal_handlers):
    data = _make_image_folder(tmp_path / "data", {"red": 8, "green": 8})
    first, err = _run(["train", "--data", str(data), *TINY, "--no-baseline", "--layer-decay", "0.5",
                       "--warmup-epochs", "0.5", "--augment", "standard", "--label-smoothing", "0.1",
                       "--store", str(tmp_path / "a"), "--json"], capsys)
    assert "device: cpu, float32" in err and first["device"] == "cpu, float32"
    cfg_file = tmp_path / "a" / "runs" / first["run_id"] / "config.json"
    again, _ = _run(["train", "--config", str(cfg_file), "--store", str(tmp_path / "b"), "--json"], capsys)
    assert again["finetuned"]["val_accuracy"] == first["finetuned"]["val_accuracy"]
    a = RunStore(tmp_path / "a")
    b = RunStore(tmp_path / "b")
    assert b.get(again["run_id"]).config == a.get(first["run_id"]).config
    cols = ["model", "epoch", "train_loss", "val_loss", "val_accuracy", "val_macro_recall"]
    assert a.epochs(first["run_id"])[cols].equals(b.epochs(again["run_id"])[cols])
    la, lb = a.layer_stats(first["run_id"]), b.layer_stats(again["run_id"])
    assert not la.empty and la.equals(lb)


def test_options_given_override_the_file_and_only_those(tmp_path):
    from ftcore.core.config import BackboneConfig, DataConfig, FreezeConfig, RunConfig, TrainConfig

    saved = RunConfig(BackboneConfig("test_resnet", "none"), FreezeConfig("last:2"), DataConfig("/d", "/v", 0.3),
                      TrainConfig(epochs=4, lr=0.01, layer_decay=0.8, update_bn=True, baseline=False, seed=3))
    f = tmp_path / "c.json"
    f.write_text(saved.to_json())
    args = cli.build_parser().parse_args(["train", "--config", str(f), "--epochs", "2", "--unfreeze", "all"])
    cfg = cli.config_from_args(args)
    assert cfg.train.epochs == 2 and cfg.freeze.unfreeze == "all"
    assert cfg.train.lr == 0.01 and cfg.train.layer_decay == 0.8 and cfg.train.update_bn is True
    assert cfg.train.baseline is False and cfg.train.seed == 3 and cfg.data == saved.data
    # a file without the data folder, given on the command line
    g = tmp_path / "no_data.json"
    g.write_text(json.dumps({"train": {"epochs": 5}}))
    cfg = cli.config_from_args(cli.build_parser().parse_args(["train", "--config", str(g), "--data", "/x"]))
    assert cfg.train.epochs == 5 and cfg.data.train_dir == "/x"
    # without a file, the defaults
    args = cli.build_parser().parse_args(["train", "--data", "/x"])
    assert cli.config_from_args(args) == RunConfig(data=DataConfig("/x"))


@pytest.mark.parametrize("content, pattern", [
    ("{broken", "cannot read run configuration"),
    ('{"data": {"train_dir": "/d"}, "train": {"momentum": 0.9}}', "unknown keys ['momentum'] in 'train'"),
    ('[1, 2]', "is not a JSON object with sections"),
    ('{"data": {"train_dir": "/d"}, "train": 5}', "section 'train' of"),  # with --epochs given below
    ('{"data": {"train_dir": 5}}', "The 'train_dir' parameter (--data) must be a non-empty folder path (a str). Got 5."),
    ('{"data": {"train_dir": "/d"}, "train": {"lr": "0.01"}}', "The 'lr' parameter (--lr) must be a float in (0, 10]. "
                                                               "Got '0.01'."),
    ('{"train": {"lr": 0.01}}', "The 'train_dir' parameter (--data) must be given in section 'data'"),  # no --data
])
def test_bad_config_file_is_a_one_line_error(tmp_path, capsys, no_signal_handlers, content, pattern):
    f = tmp_path / "bad.json"
    f.write_text(content)
    rc = cli.main(["train", "--config", str(f), "--epochs", "1"])
    out, err = capsys.readouterr()
    assert rc == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("python -m ftcore train: error:") and pattern in lines[0]


def test_neither_data_nor_config(capsys):
    with pytest.raises(SystemExit) as ei:
        cli.main(["train", "--epochs", "1"])
    assert ei.value.code == 2
    assert "the following arguments are required: --data (or --config FILE)" in capsys.readouterr().err


def test_cuda_asked_for_on_a_machine_without(tmp_path, capsys, no_signal_handlers, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    data = _make_image_folder(tmp_path / "data", {"red": 4, "green": 4})
    rc = cli.main(["train", "--data", str(data), *TINY, "--device", "cuda", "--store", str(tmp_path / "s")])
    err = capsys.readouterr().err
    assert rc == 2 and "device 'cuda' was asked for, but this machine has no usable CUDA device" in err
    assert RunStore(tmp_path / "s").list() == []


# --- the options come from the configuration's field list -------------------------------
def _fields():
    import dataclasses

    from ftcore import SECTIONS

    return [(section, f) for section, klass in SECTIONS.items() for f in dataclasses.fields(klass)]


@pytest.mark.parametrize("section, f", _fields(), ids=[f"{s}.{f.name}" for s, f in _fields()])
def test_every_config_field_is_an_option_with_its_default_shown(section, f, capsys):
    import dataclasses

    spec = f.metadata["spec"]
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    options = capsys.readouterr().out.split("\noptions:\n", 1)[1]
    # One entry per option: its line and the wrapped lines under it, joined.
    entries = {}
    for line in options.splitlines():
        if line.startswith("  -"):
            flag = line.split()[0].rstrip(",")
            entries[flag] = line
        else:
            entries[flag] += " " + line.strip()
    assert spec.flag in entries, f"{spec.flag} is not an option of python -m ftcore train"
    if f.default is dataclasses.MISSING:
        shown = "required unless --config gives it"
    else:
        shown = spec.shown_default(f.default)
    assert f"(default: {shown})" in " ".join(entries[spec.flag].split()), entries[spec.flag]
    assert cli.option_keys()[spec.flag.lstrip("-").replace("-", "_")] == (section, f.name)


@pytest.mark.parametrize("section, f", _fields(), ids=[f"{s}.{f.name}" for s, f in _fields()])
def test_every_option_sets_its_field(section, f, tmp_path):
    spec = f.metadata["spec"]
    value = {"bool": None, "path": str(tmp_path), "int": str(int(spec.low or 0) + 5), "float": "0.5"}.get(spec.kind)
    if spec.kind == "str":
        value = spec.choices[-1] if spec.choices else {"--unfreeze": "last:2"}.get(spec.flag, "test_resnet")
    argv = ["train", "--data", "/x", "--epochs", "9", spec.flag] + ([] if value is None else [value])
    cfg = cli.config_from_args(cli.build_parser().parse_args(argv))
    got = getattr(getattr(cfg, section), f.name)
    if spec.kind == "bool":
        assert got is (not f.default)
    else:
        assert str(got) == value if spec.kind != "float" else got == float(value)
