"""A failed `probe record` leaves nothing in the way of the corrected rerun, and deletes nothing it did not write."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest

import probe
import zoo
from probe.cli import main

N_DIGITS_TEST = len(zoo.load_dataset("digits", split="test"))

# A model of the user's own (FILE.py:FACTORY): a linear read-out of 8x8 images that fails on its second
# forward pass while the file `fail` lies beside it, as a bug in the middle of a long recording would.
MODEL_FILE = textwrap.dedent(
    """
    from pathlib import Path

    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.fc = nn.Linear(64, 3)
            self.calls = 0

        def forward(self, x):
            self.calls += 1
            if self.calls > 1 and (Path(__file__).parent / "fail").exists():
                raise RuntimeError("a bug on the second batch")
            return self.fc(x.flatten(1))

    def build():
        return Net()
    """
)


@pytest.fixture
def own_model(tmp_path):
    (tmp_path / "net.py").write_text(MODEL_FILE)
    return f"{tmp_path / 'net.py'}:build"


def _record(model: str, out, *extra: str) -> int:
    return main(["record", model, "--out", str(out), "--no-progress", "--device", "cpu", *extra])


def _files(folder) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*"))


def test_an_unknown_layer_writes_nothing(tmp_path, capsys):
    out = tmp_path / "rec"
    assert _record("mlp", out, "--layers", "nope") == 2
    assert "unknown layer 'nope'" in capsys.readouterr().err
    assert not out.exists()
    assert _record("mlp", out, "--layers", "head") == 0  # the corrected rerun needs no --overwrite
    assert probe.Recording.load(out).n_stimuli == N_DIGITS_TEST


@pytest.mark.parametrize("model", ["mlp", "own"])  # a zoo model knows its input shape; the user's finds out
def test_a_dataset_of_another_shape_writes_nothing(model, own_model, tmp_path, capsys):
    spelling = own_model if model == "own" else model
    layer = "fc" if model == "own" else "head"
    out = tmp_path / "deep" / "rec"
    assert _record(spelling, out, "--dataset", "natural-patches", "--layers", layer) == 2
    assert "16" in capsys.readouterr().err  # natural patches are 16x16, the model takes 8x8
    assert not (tmp_path / "deep").exists()
    assert _record(spelling, out, "--layers", layer) == 0
    assert probe.Recording.load(out).n_stimuli == N_DIGITS_TEST


def test_a_failure_mid_way_removes_the_folder_it_created(own_model, tmp_path, capsys):
    (tmp_path / "fail").touch()
    out = tmp_path / "a" / "b" / "rec"
    assert _record(own_model, out, "--layers", "fc", "--batch-size", "100") == 2
    assert "a bug on the second batch" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()  # the first batch had opened the recording: all of it is gone
    (tmp_path / "fail").unlink()
    assert _record(own_model, out, "--layers", "fc", "--batch-size", "100") == 0
    assert probe.Recording.load(out).n_stimuli == N_DIGITS_TEST


def test_a_failure_mid_way_keeps_a_folder_it_did_not_create(own_model, tmp_path):
    out = tmp_path / "rec"
    out.mkdir()
    (tmp_path / "fail").touch()
    assert _record(own_model, out, "--layers", "fc", "--batch-size", "100") == 2
    assert out.is_dir() and _files(out) == []  # the user's empty folder stays; only the recording's files went

    (out / "notes.txt").write_text("mine")
    assert _record(own_model, out, "--layers", "fc", "--batch-size", "100") == 2  # refused: not a recording
    assert _files(out) == ["notes.txt"] and (out / "notes.txt").read_text() == "mine"


def test_a_failed_overwrite_leaves_a_folder_the_rerun_can_use(own_model, tmp_path):
    out = tmp_path / "rec"
    assert _record(own_model, out, "--layers", "fc") == 0
    (tmp_path / "fail").touch()
    assert _record(own_model, out, "--layers", "fc", "--batch-size", "100", "--overwrite") == 2
    assert _files(out) == []  # the old recording was replaced, the new one never got a stimulus to disk
    (tmp_path / "fail").unlink()
    assert _record(own_model, out, "--layers", "fc", "--batch-size", "100") == 0


def test_stimuli_already_on_disk_are_kept_for_resume(own_model, tmp_path, monkeypatch, capsys):
    """A failure after a flush keeps what was recorded; --resume completes it as one uninterrupted pass would."""
    original = probe.record
    monkeypatch.setattr(probe, "record", lambda *a, **k: original(*a, **{**k, "flush_every": 0.0}))
    (tmp_path / "fail").touch()
    out = tmp_path / "rec"
    assert _record(own_model, out, "--layers", "fc", "--batch-size", "100") == 2
    err = capsys.readouterr().err
    assert "the 100 stimuli recorded before the error are kept" in err and "--resume" in err
    (tmp_path / "fail").unlink()
    assert _record(own_model, out, "--layers", "fc", "--batch-size", "100", "--resume") == 0
    assert _record(own_model, tmp_path / "whole", "--layers", "fc", "--batch-size", "100") == 0
    np.testing.assert_array_equal(probe.Recording.load(out)["fc"], probe.Recording.load(tmp_path / "whole")["fc"])
