"""`probe layers RUN` / `probe record RUN` use the run's own dataset; every long step says what it is doing."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import probe
import zoo
from probe.cli import main

CLASSES = ("cat", "dog")  # ImageFolder numbers classes in sorted order: cat 0, dog 1
N_TEST = {"cat": 2, "dog": 3}


def _image_folder(root: Path) -> None:
    """train/ and test/ with one sub-folder per class of small RGB images (10x12, resized to 8x8 when loaded)."""
    rng = np.random.default_rng(0)
    for split, counts in (("train", {"cat": 4, "dog": 4}), ("test", N_TEST)):
        for name in CLASSES:
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(counts[name]):
                Image.fromarray(rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)).save(folder / f"{i}.png")


@pytest.fixture(scope="module")
def image_folder_run(tmp_path_factory):
    """A cnn trained by `probe train` on imagefolder:images, spelled relative to the working directory."""
    work = tmp_path_factory.mktemp("work")
    _image_folder(work / "images")
    previous = Path.cwd()
    try:
        os.chdir(work)
        status = main(["train", "cnn", "--dataset", "imagefolder:images", "--dataset-option", "image_size=8",
                       "--epochs", "1", "--device", "cpu", "--quiet", "--set", "width=4", "--set", "hidden=8",
                       "--out", "run"])
    finally:
        os.chdir(previous)
    assert status == 0
    return work / "run"


def test_the_run_config_names_the_image_folder_so_it_loads_from_anywhere(image_folder_run):
    dataset = json.loads((image_folder_run / "config.json").read_text())["dataset"]
    assert dataset["name"] == "imagefolder:images" and dataset["options"] == {"image_size": 8}
    assert Path(dataset["folder"]) == image_folder_run.parent / "images"
    name, options = zoo.RunDir(image_folder_run).training_dataset()
    assert zoo.load_dataset(name, split="test", **options).info.class_names == CLASSES


def test_probe_layers_of_an_image_folder_run_needs_no_dataset(image_folder_run, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # elsewhere than where the run was trained: the relative spelling would not load
    assert main(["layers", str(image_folder_run)]) == 0
    out = capsys.readouterr().out
    model = zoo.load(image_folder_run)
    for layer in model.recordable_layers():
        assert layer in out
    assert "4x8x8" in out  # width 4 on 8x8 colour images: the image folder's stimuli, not digits
    assert "--dataset" not in out  # recording the run needs no --dataset either


def test_probe_record_records_the_runs_own_test_split(image_folder_run, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["record", str(image_folder_run), "--layers", "fc2", "--out", "rec", "--no-progress",
                 "--device", "cpu"]) == 0
    recording = probe.Recording.load(tmp_path / "rec")
    assert recording.n_stimuli == sum(N_TEST.values())
    expected = [label for label, name in enumerate(CLASSES) for _ in range(N_TEST[name])]
    np.testing.assert_array_equal(recording.labels, expected)
    assert recording["fc2"].shape == (sum(N_TEST.values()), len(CLASSES))


def test_dataset_stays_an_override(image_folder_run, tmp_path):
    # digits, prepared for the run's input (3x8x8, the image folder's normalisation) as any dataset is
    assert main(["record", str(image_folder_run), "--dataset", "digits", "--layers", "fc2",
                 "--out", str(tmp_path / "rec"), "--no-progress"]) == 0
    recording = probe.Recording.load(tmp_path / "rec")
    assert recording.n_stimuli == len(zoo.load_dataset("digits", split="test"))


def test_a_runs_dataset_options_are_reused(tmp_path, capsys):
    options = {"patch_size": 12, "n_patches": 64}
    zoo.train("ae-linear", dataset="natural-patches", dataset_options=options, out=tmp_path / "run", epochs=1,
              progress=False, device="cpu", code_dim=4)
    assert main(["record", str(tmp_path / "run"), "--out", str(tmp_path / "rec"), "--no-progress"]) == 0
    recording = probe.Recording.load(tmp_path / "rec")
    assert recording.n_stimuli == len(zoo.load_dataset("natural-patches", split="test", **options))
    assert main(["layers", str(tmp_path / "run")]) == 0  # 12x12 patches: the default 16x16 would not fit


def test_other_models_default_to_digits_and_the_help_says_so(capsys):
    assert main(["layers", "mlp"]) == 0  # an untrained zoo model names no dataset: digits' 8x8 images fit it
    assert "--dataset digits" in capsys.readouterr().out
    for verb in ("layers", "record"):
        with pytest.raises(SystemExit):
            main([verb, "--help"])
        assert "digits for any other model" in " ".join(capsys.readouterr().out.split())


# -- status lines ---------------------------------------------------------------------------------
def _as_terminal(monkeypatch) -> None:
    """The captured stderr as a terminal: status lines, like progress bars, are shown on one only.
    (Called in the test itself: pytest swaps the capturing stream between a fixture's setup and the test.)"""
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)


def _status_lines(err: str, verb: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith(f"probe {verb}: ") and "error" not in line]


def test_long_steps_say_what_they_do(image_folder_run, tmp_path, monkeypatch, capsys):
    _as_terminal(monkeypatch)
    assert main(["layers", str(image_folder_run)]) == 0
    lines = _status_lines(capsys.readouterr().err, "layers")
    assert any("loading the model" in line for line in lines)
    assert any("imagefolder:" in line and "the run's training dataset" in line for line in lines)

    assert main(["record", str(image_folder_run), "--out", str(tmp_path / "rec"), "--layers", "fc2"]) == 0
    lines = _status_lines(capsys.readouterr().err, "record")
    assert [line.split(": ", 1)[1].split(" ")[:2] for line in lines] == [
        ["loading", "the"], ["loading", "the"], ["recording", str(sum(N_TEST.values()))]]

    args = ["train", "mlp", "--epochs", "1", "--set", "hidden=[8]", "--device", "cpu", "--out", str(tmp_path / "t")]
    assert main(args) == 0
    assert any("training mlp on digits" in line for line in _status_lines(capsys.readouterr().err, "train"))

    assert main(["patches", str(image_folder_run), "--layer", "features.relu1", "--k", "2", "--n-units", "2",
                 "--out", str(tmp_path / "p")]) == 0
    lines = _status_lines(capsys.readouterr().err, "patches")
    assert any("loading the model" in line for line in lines) and any("top 2 stimuli" in line for line in lines)


def test_no_progress_and_quiet_silence_the_status_lines(image_folder_run, tmp_path, monkeypatch, capsys):
    _as_terminal(monkeypatch)
    assert main(["record", str(image_folder_run), "--out", str(tmp_path / "rec"), "--layers", "fc2",
                 "--no-progress"]) == 0
    assert main(["train", "mlp", "--epochs", "1", "--set", "hidden=[8]", "--device", "cpu", "--quiet",
                 "--out", str(tmp_path / "t")]) == 0
    err = capsys.readouterr().err
    assert not _status_lines(err, "record") and not _status_lines(err, "train")
