"""``python -m ftcore train``: headless runs, JSON output, exit status and one-line errors.

The happy paths and most argument errors run as real subprocesses (cwd = the
repository, ``FTCORE_HOME`` in a temporary folder), all started at once by a
module fixture so that their Python start-up (torch, timm) overlaps; each test
then checks one. Every argument error is also checked in-process with
``cli.main`` (fast).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from conftest import PYTHON, REPO, _make_image_folder, subprocess_env

from ftcore import cli
from ftcore.runs.store import RunStore

TINY = ["--model", "test_resnet", "--weights", "none", "--img-size", "32", "--epochs", "1", "--batch-size", "4"]


def _cases(base: Path) -> dict[str, list[str]]:
    data = _make_image_folder(base / "data", {"red": 8, "green": 8, "blue": 8})
    one = _make_image_folder(base / "one_class", {"only": 6})
    d = ["--data", str(data)]
    return {
        "json": ["train", *d, *TINY, "--json"],
        "no_baseline": ["train", *d, *TINY, "--no-baseline", "--unfreeze", "last:1", "--update-bn",
                        "--backbone-lr-scale", "0.5", "--json"],
        "unknown_model": ["train", *d, *TINY[2:], "--model", "no_such_model_v9"],
        "bad_unfreeze": ["train", *d, *TINY, "--unfreeze", "bogus"],
        "epochs_0": ["train", *d, *TINY, "--epochs", "0"],
        "lr_negative": ["train", *d, *TINY, "--lr", "-1"],
        "epochs_text": ["train", *d, *TINY, "--epochs", "abc"],
        "no_data_arg": ["train", *TINY],
        "missing_data": ["train", "--data", str(base / "does_not_exist"), *TINY],
        "one_class": ["train", "--data", str(one), *TINY],
        "missing_weights": ["train", *d, *TINY, "--weights", str(base / "missing.safetensors")],
    }


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("cli")
    home = base / "home"
    env = subprocess_env(home)
    procs = {
        name: subprocess.Popen([PYTHON, "-m", "ftcore", *args], cwd=REPO, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
        for name, args in _cases(base).items()
        if name in SUBPROCESS_CASES
    }
    results = {}
    try:
        for name, p in procs.items():
            out, err = p.communicate(timeout=240)
            results[name] = subprocess.CompletedProcess(p.args, p.returncode, out, err)
    finally:
        for p in procs.values():  # only the processes started here
            if p.poll() is None:
                p.kill()
                p.wait()
    return home, base, results


def _ok_json(cp: subprocess.CompletedProcess) -> dict:
    assert cp.returncode == 0, cp.stderr[-3000:]
    last = cp.stdout.strip().splitlines()[-1]
    return json.loads(last)


def _check_model_summary(s: dict) -> None:
    for key in ("val_accuracy", "val_macro_recall"):
        assert 0.0 <= s[key] <= 1.0
    assert s["train_images_per_second"] > 0 and s["seconds"] > 0


def test_train_json(cli_runs):
    home, _, results = cli_runs
    out = _ok_json(results["json"])
    assert out["status"] == "finished"
    for m in ("baseline", "finetuned"):
        _check_model_summary(out[m])
    rec = RunStore(home).get(out["run_id"])
    assert rec.status == "finished"
    assert rec.config.backbone.name == "test_resnet" and rec.config.train.img_size == 32
    assert rec.config.train.update_bn is False and rec.config.train.backbone_lr_scale == 0.1
    assert (home / "runs" / out["run_id"] / "finetuned.safetensors").exists()
    assert f"run {out['run_id']} in {home}" in results["json"].stderr
    assert "[finetuned] epoch 1/1" in results["json"].stderr  # progress goes to stderr, not stdout
    # Which path each model took: the baseline's frozen backbone is computed once.
    assert "baseline: frozen layers up to fc computed once" in results["json"].stderr
    assert len(results["json"].stdout.strip().splitlines()) == 1


def test_train_no_baseline(cli_runs):
    home, _, results = cli_runs
    out = _ok_json(results["no_baseline"])
    assert "baseline" not in out
    _check_model_summary(out["finetuned"])
    rec = RunStore(home).get(out["run_id"])
    assert rec.config.train.baseline is False and rec.config.freeze.unfreeze == "last:1"
    assert rec.config.train.update_bn is True and rec.config.train.backbone_lr_scale == 0.5
    assert rec.info["finetuned_trainable_groups"] == ["layer4.0", "head"]
    assert RunStore(home).epochs(out["run_id"])["model"].tolist() == ["finetuned"]


BAD_ARGUMENTS = [
    # (case, exit status, text the one-line error must contain)
    ("unknown_model", 2, "'no_such_model_v9' is not a timm model name"),
    ("bad_unfreeze", 2, "unfreeze preset 'bogus' is not understood; use 'head', 'all' or 'last:N'"),
    ("epochs_0", 2, "The 'epochs' parameter (--epochs) must be an int in [1, 1000]. Got 0."),
    ("lr_negative", 2, "The 'lr' parameter (--lr) must be a float in (0, 10]. Got -1.0."),
    ("epochs_text", 2, "argument --epochs: invalid int value: 'abc'"),
    ("no_data_arg", 2, "the following arguments are required: --data"),
    ("missing_weights", 2, "missing.safetensors does not exist; give an existing file, 'auto' or 'none'"),
    ("missing_data", 1, "does_not_exist does not exist; give a folder with one sub-folder per class"),
    ("one_class", 1, "needs at least two class folders with images; found 1 (only)"),
]
#: Cases also run as real subprocesses (the others only in-process, to keep the suite fast).
SUBPROCESS_CASES = {"json", "no_baseline", "unknown_model", "bad_unfreeze", "epochs_0", "lr_negative",
                    "epochs_text", "one_class"}


def _check_one_line_error(rc: int, out: str, err: str, code: int, pattern: str) -> str:
    assert rc == code, (rc, err[-3000:])
    assert out == ""
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    errors = [ln for ln in lines if ": error: " in ln]
    assert len(errors) == 1 and errors[0] == lines[-1], err
    assert errors[0].startswith("python -m ftcore")
    assert pattern in errors[0], errors[0]
    if code == 2:
        assert len(lines) == 1, "argument errors are one line on stderr and nothing else"
    return errors[0]


@pytest.mark.parametrize("case, code, pattern", [c for c in BAD_ARGUMENTS if c[0] in SUBPROCESS_CASES])
def test_bad_arguments_subprocess(cli_runs, case, code, pattern):
    _, _, results = cli_runs
    cp = results[case]
    _check_one_line_error(cp.returncode, cp.stdout, cp.stderr, code, pattern)


@pytest.mark.parametrize("case, code, pattern", BAD_ARGUMENTS)
def test_bad_arguments_in_process(tmp_path, capsys, no_signal_handlers, case, code, pattern):
    args = _cases(tmp_path)[case]
    try:
        rc = cli.main(args)
    except SystemExit as e:  # argparse errors exit from the parser
        rc = e.code
    out, err = capsys.readouterr()
    line = _check_one_line_error(rc, out, err, code, pattern)
    if case in ("missing_data", "missing_weights"):
        assert str(tmp_path) in line, "the error names the path"


def test_unusable_data_is_refused_before_a_run_is_recorded(cli_runs):
    home, _, results = cli_runs
    r = results["one_class"]
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "found 1 (only)" in lines[0], r.stderr
    assert not [rec for rec in RunStore(home).list() if rec.config.data.train_dir.endswith("one_class")]


# -- in-process: text output and exit codes --------------------------------------------------------------

@pytest.fixture
def no_signal_handlers(monkeypatch):
    """cli._train installs SIGINT/SIGTERM handlers; keep pytest's own."""
    monkeypatch.setattr(cli.signal, "signal", lambda sig, handler: None)


def test_main_text_output(tmp_path, capsys, no_signal_handlers):
    data = _make_image_folder(tmp_path / "data", {"a": 6, "b": 6})
    rc = cli.main(["train", "--data", str(data), *TINY, "--store", str(tmp_path / "store")])
    out, err = capsys.readouterr()
    assert rc == 0, err
    lines = out.strip().splitlines()
    assert [ln.split(":")[0] for ln in lines] == ["baseline", "finetuned"]
    assert "val accuracy" in lines[1] and "val macro recall" in lines[1] and "train img/s" in lines[1]
    runs = RunStore(tmp_path / "store").list()
    assert len(runs) == 1 and runs[0].status == "finished"


def test_main_cancelled_exit_130(tmp_path, capsys, monkeypatch, no_signal_handlers):
    data = _make_image_folder(tmp_path / "data", {"a": 6, "b": 6})
    monkeypatch.setattr(RunStore, "cancel_requested", lambda self, run_id: True)
    rc = cli.main(["train", "--data", str(data), *TINY, "--json", "--store", str(tmp_path / "store")])
    out, _ = capsys.readouterr()
    assert rc == 130
    assert json.loads(out.strip().splitlines()[-1])["status"] == "cancelled"


def test_main_bad_val_fraction(capsys, tmp_path):
    rc = cli.main(["train", "--data", str(tmp_path), "--val-fraction", "1.5"])
    _, err = capsys.readouterr()
    assert rc == 2
    assert err.strip() == ("python -m ftcore train: error: The 'val_fraction' parameter (--val-fraction) must be a "
                           "float in (0, 1). Got 1.5. Use e.g. 0.2 to hold out 20% of each class.")
    rc = cli.main(["audit", str(tmp_path), "--val-fraction", "0"])
    assert rc == 2
    assert capsys.readouterr().err.strip() == (
        "python -m ftcore audit: error: The 'val_fraction' parameter (--val-fraction) must be a float in (0, 1). "
        "Got 0.0. Use e.g. 0.2 to hold out 20% of each class.")


def test_parser_requires_a_command(capsys):
    with pytest.raises(SystemExit) as ei:
        cli.main([])
    assert ei.value.code == 2
    assert "error:" in capsys.readouterr().err


# -- python -m ftcore audit ----------------------------------------------------------------------------

def test_audit_json_has_the_issues_keys_and_exit_status(tmp_path, capsys):
    root = _make_image_folder(tmp_path / "données", {"chats noirs": 6, "dogs": 6})
    (root / "dogs" / "broken.jpg").write_bytes(b"")
    (root / ".DS_Store").write_bytes(b"x")
    assert cli.main(["audit", str(root), "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(out) == {"ok", "layout", "classes", "problems", "warnings"}
    assert out["ok"] is True and out["layout"] == "class_folders"
    assert out["classes"] == {"chats noirs": 6, "dogs": 6}
    assert {(Path(p["path"]).name, p["kind"], p["action"]) for p in out["problems"]} == {
        ("broken.jpg", "unreadable", "skipped"), (".DS_Store", "ignored", "ignored")}
    assert all(set(p) == {"path", "kind", "message", "action"} for p in out["problems"])


def test_audit_train_val_counts_per_split_and_refusal_exit_1(tmp_path, capsys):
    _make_image_folder(tmp_path / "ds" / "train", {"a": 4, "b": 4})
    _make_image_folder(tmp_path / "ds" / "val", {"a": 2, "b": 2}, start_seed=500)
    assert cli.main(["audit", str(tmp_path / "ds"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["layout"] == "train_val" and out["classes"] == {"train": {"a": 4, "b": 4}, "val": {"a": 2, "b": 2}}
    one = _make_image_folder(tmp_path / "one", {"only": 3})
    assert cli.main(["audit", str(one), "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] is False and [p["kind"] for p in out["problems"] if p["action"] == "refused"] == ["single_class"]
    assert cli.main(["audit", str(one)]) == 1
    text = capsys.readouterr().out
    assert "[refused] single_class" in text and "not ok" in text


def test_audit_of_a_missing_path_or_a_zip(tmp_path, capsys):
    assert cli.main(["audit", str(tmp_path / "nowhere"), "--json"]) == 1
    cap = capsys.readouterr()
    assert json.loads(cap.out)["ok"] is False and "does not exist" in cap.err
    import zipfile

    root = _make_image_folder(tmp_path / "pets", {"cats": 3, "dogs": 3})
    z = tmp_path / "pets.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for f in root.rglob("*.png"):
            zf.write(f, f"pets/{f.relative_to(root)}")
    assert cli.main(["audit", str(z), "--json", "--store", str(tmp_path / "store")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["layout"] == "wrapper_folder" and out["classes"] == {"cats": 3, "dogs": 3}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pets", "pets.zip", "store"]


def test_audit_subprocess_exit_status(tmp_path):
    root = _make_image_folder(tmp_path / "flat_parent", {"x": 3}) / "x"  # images at the root
    cp = subprocess.run([PYTHON, "-m", "ftcore", "audit", str(root), "--json"], cwd=REPO, capture_output=True,
                        text=True, env=subprocess_env(tmp_path / "home"), timeout=120)
    assert cp.returncode == 1, cp.stderr
    out = json.loads(cp.stdout)
    assert out["layout"] == "images_at_root" and out["problems"][0]["action"] == "refused"
