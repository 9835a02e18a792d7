"""Run folders under a hostile user: --force that deletes only a run's own files, damaged and edited
files refused on load, configs and settings checked before anything is allocated, one writer at a time."""

from __future__ import annotations

import dataclasses
import functools
import json
import random
import shutil
from pathlib import Path

import pytest
import torch
from _fakes import LockHolder

import zoo
from probe.cli import main
from zoo import RunDir, _registry
from zoo._files import LOCK_FILE, file_entry, writer_lock

FAST = {"batch_size": 256, "progress": False}
TINY_SETTINGS = {"hidden": [16], **FAST}
TINY_CLI = ["mlp", "--dataset", "digits", "--epochs", "1", "--seed", "3", "--device", "cpu", "--quiet", "--set", "hidden=[16]"]


def _snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every path under ``folder`` with its bytes (None for folders)."""
    return {p.relative_to(folder).as_posix(): (p.read_bytes() if p.is_file() else None) for p in sorted(folder.rglob("*"))}


def _rewrite_manifest(run: RunDir, change) -> None:
    path = run.path / "manifest.json"
    manifest = json.loads(path.read_text())
    change(manifest["files"])
    path.write_text(json.dumps(manifest))


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A finished one-epoch run of a tiny MLP on digits (copy it before changing it)."""
    out = tmp_path_factory.mktemp("trained") / "run"
    zoo.train("mlp", out=out, epochs=1, device="cpu", **TINY_SETTINGS)
    return out


@pytest.fixture
def run_copy(trained, tmp_path) -> RunDir:
    return RunDir(shutil.copytree(trained, tmp_path / "run"))


# ----------------------------------------------------------------------------- the manifest


def test_the_manifest_lists_every_file_of_the_run_with_its_checksum(trained):
    manifest = json.loads((trained / "manifest.json").read_text())
    assert manifest["format"] == "neuroprobe-run"
    on_disk = {p.relative_to(trained).as_posix() for p in trained.rglob("*") if p.is_file()} - {"manifest.json"}
    assert set(manifest["files"]) == on_disk
    assert {"config.json", "log.csv", "model.safetensors", "metrics.json", "state/LATEST"} < on_disk
    assert any(name.startswith("state/epoch-") for name in on_disk)
    for relative, entry in manifest["files"].items():
        assert file_entry(trained / relative) == entry, relative


def test_stale_checkpoints_leave_the_manifest_with_their_files(tmp_path):
    out = tmp_path / "run"
    zoo.train("mlp", out=out, epochs=2, device="cpu", **TINY_SETTINGS)
    listed = RunDir(out).read_manifest()
    checkpoints = {name.split("/")[1] for name in listed if name.startswith("state/epoch-")}
    assert checkpoints == {"epoch-000002"} == {p.name for p in (out / "state").iterdir() if p.is_dir()}


# ----------------------------------------------------------------------------- --force


def test_force_into_a_folder_that_is_not_a_run_deletes_nothing(tmp_path, capsys):
    folder = tmp_path / "thesis"
    (folder / "data").mkdir(parents=True)
    (folder / "config.json").write_text('{"name": "my latex config"}')
    (folder / "thesis.tex").write_text(r"\documentclass{article}")
    (folder / "data" / "raw.csv").write_text("a,b\n1,2\n")
    before = _snapshot(folder)

    with pytest.raises(FileExistsError, match="not a run folder written by the toolkit.*another output folder"):
        RunDir.create(folder, force=True)
    assert main(["train", *TINY_CLI, "--out", str(folder), "--force"]) == 2
    err = capsys.readouterr().err
    assert "not a run folder written by the toolkit" in err and "--out" in err
    assert _snapshot(folder) == before


def test_force_on_a_run_deletes_only_its_listed_files(run_copy, capsys):
    (run_copy.path / "notes.txt").write_text("the user's")
    (run_copy.path / "figures").mkdir()
    (run_copy.path / "figures" / "loss.png").write_bytes(b"\x89PNG")
    (run_copy.path / "state" / "mine.txt").write_text("also the user's")
    assert main(["train", *TINY_CLI, "--out", str(run_copy.path), "--force"]) == 0
    capsys.readouterr()
    assert (run_copy.path / "notes.txt").read_text() == "the user's"
    assert (run_copy.path / "figures" / "loss.png").read_bytes() == b"\x89PNG"
    assert (run_copy.path / "state" / "mine.txt").read_text() == "also the user's"
    zoo.load(run_copy.path)  # the new run is whole

    RunDir.create(run_copy.path, force=True)  # every file the run wrote goes, nothing else
    assert sorted(_snapshot(run_copy.path)) == [
        "figures", "figures/loss.png", "manifest.json", "notes.txt", "state", "state/mine.txt"]


def test_a_manifest_listing_a_path_outside_the_folder_makes_force_delete_nothing(run_copy, tmp_path, capsys):
    outside = tmp_path / "outside.txt"
    outside.write_text("not the run's")
    _rewrite_manifest(run_copy, lambda files: files.update({"../outside.txt": file_entry(outside)}))
    before = _snapshot(tmp_path)

    with pytest.raises(ValueError, match="outside"):
        RunDir.create(run_copy.path, force=True)
    assert _snapshot(tmp_path) == before
    assert main(["train", *TINY_CLI, "--out", str(run_copy.path), "--force"]) == 2
    assert "outside" in capsys.readouterr().err
    assert _snapshot(tmp_path) == before


# ----------------------------------------------------------------------------- integrity on load


def test_random_bit_flips_in_the_weights_are_each_refused(run_copy):
    weights = run_copy.path / "model.safetensors"
    original = weights.read_bytes()
    rng = random.Random(0)
    for _ in range(40):
        bit = rng.randrange(len(original) * 8)
        flipped = bytearray(original)
        flipped[bit // 8] ^= 1 << (bit % 8)
        weights.write_bytes(bytes(flipped))
        with pytest.raises(zoo.CorruptFileError, match=r"model\.safetensors"):
            zoo.load(run_copy.path)
    weights.write_bytes(original)
    zoo.load(run_copy.path)


def test_bit_flips_in_a_checkpoint_are_refused_on_resume_and_load(run_copy):
    checkpoint = RunDir(run_copy.path).checkpoint_path()
    rng = random.Random(1)
    for name in ("model.safetensors", "optimizer.safetensors", "state.json", "extra.json"):
        path = checkpoint / name
        original = path.read_bytes()
        flipped = bytearray(original)
        flipped[rng.randrange(len(original))] ^= 1 << rng.randrange(8)
        path.write_bytes(bytes(flipped))
        model = zoo.create_model("mlp", hidden=[16])
        with pytest.raises(zoo.CorruptFileError, match=name.replace(".", r"\.")):
            RunDir(run_copy.path).load_checkpoint(model=model, optimizer=None, scheduler=None)
        if name == "model.safetensors":
            with pytest.raises(zoo.CorruptFileError, match=r"model\.safetensors"):
                zoo.load(run_copy.path, checkpoint=True)
        path.write_bytes(original)
    zoo.load(run_copy.path, checkpoint=True)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_a_non_finite_weight_with_a_valid_checksum_is_refused(run_copy, value):
    weights = run_copy.path / "model.safetensors"
    state = zoo.load_tensor_file(weights)
    key = sorted(state)[0]
    state[key].view(-1)[3] = value
    zoo.save_tensor_file(weights, state)
    _rewrite_manifest(run_copy, lambda files: files.update({"model.safetensors": file_entry(weights)}))
    run_copy.verify("model.safetensors")  # the checksum cannot tell
    with pytest.raises(ValueError, match=rf"NaN/inf.*{key}"):
        zoo.load(run_copy.path)


def test_a_config_edited_to_another_shape_with_the_same_pixel_count_is_refused(run_copy):
    config = json.loads(run_copy.config_path.read_text())
    config["model"]["input_shape"] = [4, 4, 4]  # 64 pixels, like [1, 8, 8]: the weights fit either shape
    run_copy.config_path.write_text(json.dumps(config))
    with pytest.raises(zoo.CorruptFileError, match=r"config\.json"):
        zoo.load(run_copy.path)
    unverified = zoo.load(run_copy.path, verify=False)  # what the checksum prevents: another model
    assert unverified.config["input_shape"] == [4, 4, 4]


def test_runs_without_a_manifest_load_with_a_warning_and_cannot_be_forced(run_copy):
    (run_copy.path / "manifest.json").unlink()
    with pytest.warns(UserWarning, match="cannot be verified"):
        zoo.load(run_copy.path)
    with pytest.raises(FileExistsError, match="not a run folder written by the toolkit"):
        RunDir.create(run_copy.path, force=True)
    assert (run_copy.path / "model.safetensors").is_file()


def test_a_file_missing_from_the_manifest_loads_with_a_warning(run_copy):
    _rewrite_manifest(run_copy, lambda files: files.pop("model.safetensors"))
    with pytest.warns(UserWarning, match=r"model\.safetensors.*not listed"):
        zoo.load(run_copy.path)


# ----------------------------------------------------------------------------- configs checked before allocation


@pytest.fixture
def cnn_builds(monkeypatch) -> list[str]:
    """The devices the cnn builder runs on: "meta" to count parameters, "cpu" to build a real model."""
    entry = _registry.model_entry("cnn")

    @functools.wraps(entry.builder)
    def watched(**config):
        devices.append(torch.empty(0).device.type)
        return entry.builder(**config)

    devices: list[str] = []
    monkeypatch.setitem(_registry._REGISTRY, "cnn", dataclasses.replace(entry, builder=watched))
    return devices


def _cnn_run(folder: Path) -> RunDir:
    model = zoo.create_model("cnn", width=4, hidden=8)
    run = RunDir.create(folder)
    run.write_config({"model": model.config, "dataset": {"name": "digits", "options": {}}})
    run.save_final(model, {})
    return run


@pytest.mark.parametrize(
    "config, message",
    [
        ([1, 2, 3], "JSON array"),
        (None, "JSON null"),
        ({"width": -4}, r"'width' must be an integer >= 1, got -4"),
        ({"width": 10**9}, r"width=1000000000.*1,000,000,000"),
        ({"width": 100_000}, r"width=100000 would have [\d,]+ parameters, more than the limit of 1,000,000,000"),
        ({"hidden": "wide"}, r"'hidden' must be an integer, got 'wide'"),
    ],
)
def test_a_bad_config_is_refused_before_anything_is_allocated(tmp_path, cnn_builds, config, message):
    run = _cnn_run(tmp_path / "run")
    if isinstance(config, dict):
        config = {"model": {**run.read_config()["model"], **config}}
    run.write_config(config)  # through the run, so that the checksum is right and only the check can refuse it
    cnn_builds.clear()
    with pytest.raises(ValueError, match=message):
        zoo.load(run.path)
    assert "cpu" not in cnn_builds  # refused on the meta device at the latest


def test_create_model_counts_parameters_on_the_meta_device(cnn_builds):
    with pytest.raises(ValueError, match="width=1000000000"):
        zoo.create_model("cnn", width=10**9)
    assert cnn_builds == ["meta"]
    count = zoo.check_model_config("cnn", {"width": 4, "hidden": 8})
    assert count == sum(p.numel() for p in zoo.create_model("cnn", width=4, hidden=8).parameters())
    with pytest.raises(ValueError, match=f"{count:,} parameters, more than the limit of {count - 1:,}"):
        zoo.create_model("cnn", width=4, hidden=8, max_parameters=count - 1)
    zoo.create_model("cnn", width=4, hidden=8, max_parameters=count)
    assert zoo.MAX_PARAMETERS == 1_000_000_000


@pytest.mark.parametrize(
    "model, settings, message",
    [
        ("mlp", {"batch_size": 1.5}, r"'batch_size' must be an integer, got 1\.5"),
        ("mlp", {"lr": "abc"}, r"'lr' must be a number, got 'abc'"),
        ("mlp", {"lr": 0.0}, r"'lr' must be a number > 0, got 0\.0"),
        ("mlp", {"epochs": 0}, r"'epochs' must be an integer >= 1, got 0"),
        ("mlp", {"seed": -1}, r"'seed' must be an integer >= 0, got -1"),
        ("mlp", {"weight_decay": float("nan")}, r"'weight_decay' must be a finite number"),
        ("mlp", {"hidden": [16, 0]}, r"'hidden' must be integers >= 1, got \[16, 0\]"),
        ("cnn", {"width": 0}, r"'width' must be an integer >= 1, got 0"),
        ("cnn", {"width": True}, r"'width' must be an integer, got True"),
        ("cnn", {"input_shape": [3, 8, 8]}, r"input_shape=\[3, 8, 8\] does not fit dataset 'digits'.*\[1, 8, 8\]"),
        ("cnn", {"n_classes": 5}, r"n_classes=5 cannot learn dataset 'digits', which has 10 classes"),
    ],
)
def test_bad_training_settings_are_refused_before_training(tmp_path, model, settings, message):
    out = tmp_path / "run"
    with pytest.raises(ValueError, match=message):
        zoo.train(model, out=out, **{"epochs": 1, **FAST, **settings})
    assert not out.exists()


def test_bad_settings_are_one_line_errors_in_the_cli(tmp_path, capsys):
    assert main(["train", "cnn", "--out", str(tmp_path / "run"), "--epochs", "1", "--set", "width=0"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "'width'" in err and "got 0" in err


# ----------------------------------------------------------------------------- one writer at a time


@pytest.fixture
def locked_by_another_process(tmp_path):
    folder = tmp_path / "run"
    with LockHolder(folder, what="run folder") as holder:
        yield folder, holder.pid


def test_a_second_writer_of_a_run_folder_fails_at_once(locked_by_another_process, capsys):
    folder, pid = locked_by_another_process
    with pytest.raises(zoo.FolderLockedError, match=f"process {pid} on"):
        zoo.train("mlp", out=folder, epochs=1, **TINY_SETTINGS)
    assert main(["train", *TINY_CLI, "--out", str(folder)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and f"process {pid}" in err
    assert [p.name for p in folder.iterdir()] == [LOCK_FILE]  # nothing of either attempt was written


def test_train_holds_the_lock_from_the_config_to_the_final_weights(tmp_path, monkeypatch):
    refused = []

    def try_to_lock(original):
        def method(self, *args, **kwargs):
            try:
                with writer_lock(self.path):
                    refused.append(False)
            except zoo.FolderLockedError:
                refused.append(True)
            return original(self, *args, **kwargs)

        return method

    for name in ("write_config", "save_checkpoint", "save_final"):
        monkeypatch.setattr(RunDir, name, try_to_lock(getattr(RunDir, name)))
    zoo.train("mlp", out=tmp_path / "run", epochs=1, **TINY_SETTINGS)
    assert refused == [True, True, True]
    assert not (tmp_path / "run" / LOCK_FILE).exists()  # released at the end
