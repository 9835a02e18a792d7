"""A finished run trained further (`resume=True, epochs=N` / `--resume --epochs N`) is the run trained N epochs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import zoo
from probe.cli import main

# One warm-up epoch: the learning rate of the first epoch is then the same whatever the total number of
# epochs, so that one epoch extended to two must equal two epochs straight, bit for bit (on the CPU).
SETTINGS = {"hidden": [16], "batch_size": 256, "warmup_epochs": 1}
CLI = ["mlp", "--device", "cpu", "--quiet", "--seed", "3", "--set", "hidden=[16]", "--set", "batch_size=256",
       "--set", "warmup_epochs=1"]


def _train(out, epochs, **kwargs):
    return zoo.train("mlp", out=out, epochs=epochs, seed=3, device="cpu", progress=False, **SETTINGS, **kwargs)


def _log(run_dir) -> pd.DataFrame:
    return pd.read_csv(run_dir / "log.csv").drop(columns="seconds")  # wall-clock time differs between runs


def _assert_same_weights(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for key, value in a.items():
        assert torch.equal(value, b[key]), key


def test_one_epoch_extended_to_two_equals_two_epochs_straight(tmp_path):
    first = _train(tmp_path / "run", 1)
    first_row = _log(tmp_path / "run")
    extended = _train(tmp_path / "run", 2, resume=True)
    straight = _train(tmp_path / "straight", 2)

    _assert_same_weights(extended.model.state_dict(), straight.model.state_dict())
    assert not torch.equal(first.model.state_dict()["head.weight"], extended.model.state_dict()["head.weight"])
    pd.testing.assert_frame_equal(_log(tmp_path / "run"), _log(tmp_path / "straight"))
    pd.testing.assert_frame_equal(_log(tmp_path / "run").iloc[:1], first_row)  # the log continued, epoch 1 kept
    assert extended.metrics == pytest.approx(straight.metrics) and extended.metrics["epochs"] == 2
    run = zoo.RunDir(tmp_path / "run")
    assert run.read_config()["training"]["epochs"] == 2 and run.checkpoint_epoch() == 2
    _assert_same_weights(zoo.load(tmp_path / "run", verify=True).state_dict(), straight.model.state_dict())


def test_the_cli_extends_a_finished_run(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *CLI, "--epochs", "1", "--out", str(run)]) == 0
    assert main(["train", "mlp", "--out", str(run), "--resume", "--epochs", "2", "--quiet"]) == 0
    assert "further, from 1 to 2 epochs" in capsys.readouterr().out
    assert main(["train", *CLI, "--epochs", "2", "--out", str(tmp_path / "straight")]) == 0
    _assert_same_weights(zoo.load_tensor_file(run / "model.safetensors"),
                         zoo.load_tensor_file(tmp_path / "straight" / "model.safetensors"))
    assert list(_log(run)["epoch"]) == [1, 2]


def test_as_many_epochs_is_a_no_op_and_fewer_are_refused(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *CLI, "--epochs", "2", "--out", str(run)]) == 0
    before = {path.name: path.read_bytes() for path in run.iterdir() if path.is_file()}
    capsys.readouterr()

    assert main(["train", "mlp", "--out", str(run), "--resume", "--quiet"]) == 0  # the run's own 2 epochs
    assert "already has 2 epochs" in capsys.readouterr().out
    result = _train(run, 2, resume=True)
    assert len(result.history) == 2 and result.metrics["epochs"] == 2

    with pytest.raises(ValueError, match="already has 2 epochs, more than the 1 asked for"):
        _train(run, 1, resume=True)
    assert main(["train", "mlp", "--out", str(run), "--resume", "--epochs", "1", "--quiet"]) == 2
    assert "already has 2 epochs" in capsys.readouterr().err
    assert {path.name: path.read_bytes() for path in run.iterdir() if path.is_file()} == before  # nothing rewritten


def test_an_interrupted_extension_is_an_unfinished_run_that_resumes(tmp_path, monkeypatch):
    _train(tmp_path / "run", 1)
    original = zoo.RunDir.save_checkpoint

    def killed_after_epoch_two(self, **kwargs):
        path = original(self, **kwargs)
        if kwargs["epoch"] == 2:
            raise KeyboardInterrupt
        return path

    monkeypatch.setattr(zoo.RunDir, "save_checkpoint", killed_after_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        _train(tmp_path / "run", 3, resume=True)
    monkeypatch.setattr(zoo.RunDir, "save_checkpoint", original)

    run = zoo.RunDir(tmp_path / "run")
    listed = run.read_manifest()
    run.verify(*listed)  # every file the manifest lists is the one written
    assert "model.safetensors" not in listed and not run.model_path.exists()  # no stale 1-epoch weights
    with pytest.raises(FileNotFoundError, match="resume=True"):
        zoo.load(run.path)
    resumed = _train(tmp_path / "run", None, resume=True)  # the extended length (3) is now the run's own
    straight = _train(tmp_path / "straight", 3)
    _assert_same_weights(resumed.model.state_dict(), straight.model.state_dict())
    assert list(_log(run.path)["epoch"]) == [1, 2, 3]


def test_an_image_folder_run_resumes_from_another_working_directory(tmp_path, monkeypatch, capsys):
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for name in ("a", "b"):
            (tmp_path / "images" / split / name).mkdir(parents=True)
            for i in range(3):
                Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(
                    tmp_path / "images" / split / name / f"{i}.png")
    monkeypatch.chdir(tmp_path)
    assert main(["train", "cnn", "--dataset", "imagefolder:images", "--dataset-option", "image_size=8", "--epochs", "1",
                 "--set", "width=4", "--set", "hidden=8", "--device", "cpu", "--quiet", "--out", "run"]) == 0
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")  # `images` means another folder here: the run knows its own
    assert main(["train", "cnn", "--out", str(tmp_path / "run"), "--resume", "--epochs", "2", "--quiet"]) == 0
    assert list(_log(tmp_path / "run")["epoch"]) == [1, 2]
    assert zoo.RunDir(tmp_path / "run").read_config()["dataset"]["name"] == "imagefolder:images"  # as it was spelled
