"""``probe train``: resume after SIGKILL equals an uninterrupted run; refusals and errors are clear."""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
import torch

import zoo
from probe.cli import main
from probe.cli.train import FAMILY_DEFAULT_MODEL, parse_settings, resolve_model_name

REPO = Path(__file__).resolve().parents[1]

# Tiny and fast: an MLP with one small hidden layer, three epochs of digits.
TINY = ["mlp", "--dataset", "digits", "--epochs", "3", "--seed", "7", "--device", "cpu", "--quiet", "--set", "hidden=[16]"]

# Runs `probe train` in a fresh interpreter on one thread (so every run sums in the same order).
# With PAUSE_AFTER_CHECKPOINT set, it announces each checkpoint and then sleeps, so the test can
# SIGKILL it at a known point: right after the first checkpoint reached the disk.
_RUNNER = textwrap.dedent(
    """
    import os, sys, time, torch
    torch.set_num_threads(1)
    from zoo import _checkpoint
    if os.environ.get("PAUSE_AFTER_CHECKPOINT"):
        original = _checkpoint.RunDir.save_checkpoint
        def announce_and_pause(self, **kwargs):
            path = original(self, **kwargs)
            print(f"checkpoint {kwargs['epoch']}", flush=True)
            time.sleep(60)
            return path
        _checkpoint.RunDir.save_checkpoint = announce_and_pause
    from probe.cli import main
    sys.exit(main(sys.argv[1:]))
    """
)


def _probe_train(args: list[str], pause: bool = False) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    env.pop("PAUSE_AFTER_CHECKPOINT", None)
    if pause:
        env["PAUSE_AFTER_CHECKPOINT"] = "1"
    return subprocess.Popen([sys.executable, "-c", _RUNNER, "train", *args], env=env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _numeric_log(run_dir: Path) -> list[dict]:
    # wall-clock columns differ between any two runs; everything else must be identical
    rows = zoo.RunDir(run_dir).read_log_rows()
    return [{k: v for k, v in row.items() if not any(t in k for t in ("time", "second", "duration"))} for row in rows]


@pytest.fixture
def one_thread():
    # The killed run trains on one thread in its own process; the in-process runs must sum in the same order.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def test_killed_then_resumed_run_equals_an_uninterrupted_one(tmp_path, one_thread, monkeypatch):
    killed = _probe_train(TINY + ["--out", str(tmp_path / "killed")], pause=True)
    watchdog = threading.Timer(120, killed.kill)  # never hang the suite on a stuck child
    watchdog.start()
    try:
        line = killed.stdout.readline().strip()
        assert line == "checkpoint 1", killed.stderr.read()
    finally:
        killed.send_signal(signal.SIGKILL)
        killed.wait()
        watchdog.cancel()
    assert killed.returncode == -signal.SIGKILL
    assert not (tmp_path / "killed" / "model.safetensors").exists()

    assert main(["train", *TINY, "--out", str(tmp_path / "straight")]) == 0
    from zoo import _checkpoint

    saved_epochs = []
    original_save = _checkpoint.RunDir.save_checkpoint

    def record_epoch(self, **kwargs):
        saved_epochs.append(kwargs["epoch"])
        return original_save(self, **kwargs)

    monkeypatch.setattr(_checkpoint.RunDir, "save_checkpoint", record_epoch)
    # --resume alone: dataset, seed, epochs and --set values come from the run's config.json
    assert main(["train", "mlp", "--out", str(tmp_path / "killed"), "--resume", "--device", "cpu", "--quiet"]) == 0
    assert saved_epochs == [2, 3]  # the resumed run did not redo epoch 1
    final_straight = zoo.load_tensor_file(tmp_path / "straight" / "model.safetensors")
    final_resumed = zoo.load_tensor_file(tmp_path / "killed" / "model.safetensors")
    assert sorted(final_straight) == sorted(final_resumed)
    for key in final_straight:
        assert torch.equal(final_straight[key], final_resumed[key]), key
    assert _numeric_log(tmp_path / "straight") == _numeric_log(tmp_path / "killed")
    assert len(_numeric_log(tmp_path / "killed")) == 3


def test_existing_output_is_refused_unless_resume_or_force(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", *TINY, "--epochs", "1", "--out", str(out)]
    assert main(args) == 0
    first = zoo.load_tensor_file(out / "model.safetensors")
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "already exists" in err and "--resume" in err and "--force" in err
    assert main(args + ["--force"]) == 0
    again = zoo.load_tensor_file(out / "model.safetensors")
    assert all(torch.equal(first[k], again[k]) for k in first)  # same seed, same weights
    capsys.readouterr()
    assert main(["train", "mlp", "--out", str(out), "--resume", "--set", "lr=0.5"]) == 2
    assert "training.lr" in capsys.readouterr().err  # a resumed run keeps its settings

    user = tmp_path / "my-files"
    user.mkdir()
    (user / "notes.txt").write_text("keep me")
    assert main(["train", *TINY, "--out", str(user), "--force"]) == 2
    assert "not a run folder written by the toolkit" in capsys.readouterr().err
    assert (user / "notes.txt").read_text() == "keep me"
    assert [p.name for p in user.iterdir()] == ["notes.txt"]  # no lock file or manifest left behind


def test_resume_without_checkpoint_is_a_clear_error(tmp_path, capsys):
    assert main(["train", *TINY, "--out", str(tmp_path / "fresh"), "--resume"]) == 2
    assert "cannot resume" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["train", "supervisd", "--out", "x"], r"unknown family or model 'supervisd'.*did you mean 'supervised'"),
        (["train", "cnn", "--dataset", "mnits", "--out", "x"], r"unknown dataset 'mnits'.*mnist"),
        (["train", "cnn", "--out", "x", "--set", "lr"], r"--set expects KEY=VALUE"),
    ],
)
def test_unknown_names_list_the_valid_ones(argv, expected, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert re.search(expected, capsys.readouterr().err)


def test_missing_dataset_files_are_named(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("NEUROPROBE_DATA", str(tmp_path / "data"))
    assert main(["train", "cnn", "--dataset", "mnist", "--epochs", "1", "--out", str(tmp_path / "run"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "train-images-idx3-ubyte" in err and str(tmp_path / "data") in err


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch, capsys):
    """The objective turns NaN once the first checkpoint exists: training stops, epoch 1's checkpoint survives."""
    from zoo import _checkpoint, _registry

    run = tmp_path / "run"
    entry = _registry.model_entry("mlp")

    def poisoned(model, images, labels):
        loss, metrics = entry.objective(model, images, labels)
        return (loss * float("nan"), metrics) if (run / "state" / "LATEST").exists() else (loss, metrics)

    saved = {}
    original_save = _checkpoint.RunDir.save_checkpoint

    def remember(self, **kwargs):
        saved[kwargs["epoch"]] = {k: v.detach().clone() for k, v in kwargs["model"].state_dict().items()}
        return original_save(self, **kwargs)

    monkeypatch.setitem(_registry._REGISTRY, "mlp", dataclasses.replace(entry, objective=poisoned))
    monkeypatch.setattr(_checkpoint.RunDir, "save_checkpoint", remember)
    assert main(["train", *TINY, "--out", str(run)]) == 1
    err = capsys.readouterr().err
    assert "diverged" in err and "nan" in err and "epoch-000001" in err
    assert list(saved) == [1]
    assert not (run / "model.safetensors").exists()
    state = zoo.load(run, checkpoint=True).state_dict()
    for key, value in saved[1].items():
        assert torch.equal(state[key], value), key


def test_family_names_pick_their_default_model_and_settings_parse():
    assert resolve_model_name("autoencoder") == "ae-conv"
    assert set(FAMILY_DEFAULT_MODEL.values()) <= set(zoo.list_models())
    assert resolve_model_name("ae-vae") == "ae-vae"
    assert parse_settings(["lr=0.1", "hidden=[64, 32]", "activation=relu", "flag=true"]) == {
        "lr": 0.1, "hidden": [64, 32], "activation": "relu", "flag": True}
    with pytest.raises(LookupError, match="Valid names: 'supervised'"):
        resolve_model_name("transformer")
