"""Run directories and checkpoints: refusal rules, exact round trips, crash safety, resume."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest
import torch

import zoo
from zoo import _checkpoint
from zoo._checkpoint import RunDir, pack_tensors, unpack_tensors
from zoo._files import file_entry


def _small_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.BatchNorm1d(8), torch.nn.ReLU(), torch.nn.Linear(8, 3))


def _trained_state(seed: int = 0, steps: int = 3):
    model = _small_model(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.8, 0.99))
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)
    for _ in range(steps):
        optimizer.zero_grad()
        model(torch.randn(16, 5)).pow(2).mean().backward()
        optimizer.step()
        scheduler.step()
    return model, optimizer, scheduler


def _fresh_like(seed: int = 1):
    model = _small_model(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1.0)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=7, gamma=0.1)
    return model, optimizer, scheduler


def _assert_manifest_lists_only_intact_files(run: RunDir) -> None:
    # What a killed or failed write may leave: files not listed yet, never a listed one that differs.
    for relative, entry in run.read_manifest().items():
        assert file_entry(run.path / relative) == entry, relative


def _assert_same_tensors(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for key in a:
        assert torch.equal(a[key], b[key]), key


# ----------------------------------------------------------------------------- creation rules


def test_create_refuses_existing_run_without_resume_or_force(tmp_path):
    run = RunDir.create(tmp_path / "run")
    run.write_config({"name": "toy"})
    with pytest.raises(FileExistsError, match=r"resume=True.*force=True"):
        RunDir.create(tmp_path / "run")


def test_create_accepts_missing_and_empty_folders(tmp_path):
    (tmp_path / "empty").mkdir()
    assert RunDir.create(tmp_path / "empty").path.is_dir()
    assert RunDir.create(tmp_path / "new" / "nested").path.is_dir()


def test_force_wipes_a_run_but_never_a_folder_of_user_files(tmp_path):
    run = RunDir.create(tmp_path / "run")
    run.write_config({"name": "toy"})
    model, optimizer, scheduler = _trained_state()
    run.save_checkpoint(model=model, optimizer=optimizer, scheduler=scheduler, epoch=1, history=[], extra={})
    (run.path / "old.txt").write_text("old")  # the user's, not the run's
    RunDir.create(tmp_path / "run", force=True)
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["manifest.json", "old.txt"]
    assert RunDir(tmp_path / "run").read_manifest() == {}

    user = tmp_path / "photos"
    user.mkdir()
    (user / "holiday.jpg").write_bytes(b"precious")
    with pytest.raises(FileExistsError, match="not a run folder written by the toolkit"):
        RunDir.create(user, force=True)
    assert (user / "holiday.jpg").read_bytes() == b"precious"


def test_resume_requires_a_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="without resume=True"):
        RunDir.create(tmp_path / "nothing", resume=True)
    run = RunDir.create(tmp_path / "run")
    run.write_config({"name": "toy"})
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        RunDir.create(tmp_path / "run", resume=True)
    with pytest.raises(ValueError, match="choose one"):
        RunDir.create(tmp_path / "run", resume=True, force=True)


def test_open_and_config_round_trip(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        RunDir.open(tmp_path / "missing")
    run = RunDir.create(tmp_path / "run")
    config = {"name": "toy", "input_shape": [1, 8, 8], "lr": 0.001}
    run.write_config(config)
    assert RunDir.open(run.path).read_config() == config
    assert run.config_differences({**config, "lr": 0.1}) == {"lr": (0.001, 0.1)}
    run.write_config({"model": {"name": "toy", "width": 3}, "training": {"lr": 0.1, "epochs": 2}})
    given = {"model": {"name": "toy", "width": 4}, "training": {"lr": 0.1, "epochs": 5, "seed": 0}}
    assert run.config_differences(given) == {"model.width": (3, 4), "training.epochs": (2, 5), "training.seed": (None, 0)}
    assert run.config_differences(given, ignore=("training.epochs", "training.seed")) == {"model.width": (3, 4)}
    unset = {**given, "training": {**given["training"], "seed": None}}  # given as null, not stored at all
    assert run.config_differences(unset, absent="(not set)")["training.seed"] == ("(not set)", None)
    with pytest.raises(TypeError, match="JSON"):
        run.write_config({"fn": print})


# ----------------------------------------------------------------------------- state packing


def test_pack_unpack_is_exact_for_optimizer_state():
    _, optimizer, _ = _trained_state()
    state = optimizer.state_dict()
    skeleton, tensors = pack_tensors(state)
    json.dumps(skeleton)  # the skeleton is pure JSON
    restored = unpack_tensors(json.loads(json.dumps(skeleton)), tensors)
    assert restored["param_groups"] == state["param_groups"]
    assert set(restored["state"]) == set(state["state"])  # integer keys survive JSON
    for index, slots in state["state"].items():
        for name, value in slots.items():
            assert torch.equal(restored["state"][index][name], value)


def test_pack_refuses_objects_that_need_pickle():
    with pytest.raises(TypeError, match=r"function.*'a\.b'"):
        pack_tensors({"a": {"b": print}})


# ----------------------------------------------------------------------------- checkpoints


def test_checkpoint_round_trip_is_bit_exact(tmp_path):
    model, optimizer, scheduler = _trained_state()
    generator = torch.Generator().manual_seed(5)
    run = RunDir.create(tmp_path / "run")
    history = [{"epoch": 1, "loss": 0.5}, {"epoch": 2, "loss": float("nan")}]
    run.save_checkpoint(model=model, optimizer=optimizer, scheduler=scheduler, epoch=2, history=history,
                        extra={"generator": generator.get_state(), "best": 0.25})
    assert run.has_checkpoint()
    # the checkpoint's weights are a plain state-dict file, usable on their own
    _assert_same_tensors(zoo.load_tensor_file(run.checkpoint_path() / "model.safetensors"), model.state_dict())

    model2, optimizer2, scheduler2 = _fresh_like()
    info = run.load_checkpoint(model=model2, optimizer=optimizer2, scheduler=scheduler2)
    assert info["epoch"] == 2 and info["extra"]["best"] == 0.25
    assert info["history"][0] == history[0] and np.isnan(info["history"][1]["loss"])
    assert torch.equal(info["extra"]["generator"], generator.get_state())
    _assert_same_tensors(model.state_dict(), model2.state_dict())
    assert scheduler2.state_dict() == scheduler.state_dict()
    assert optimizer2.state_dict()["param_groups"] == optimizer.state_dict()["param_groups"]
    # the next step of both optimizers is identical
    x = torch.randn(4, 5)
    for m, opt in ((model, optimizer), (model2, optimizer2)):
        opt.zero_grad()
        m(x).sum().backward()
        opt.step()
    _assert_same_tensors(model.state_dict(), model2.state_dict())


def test_checkpoint_restores_global_random_state(tmp_path):
    model, optimizer, scheduler = _trained_state()
    run = RunDir.create(tmp_path / "run")
    torch.manual_seed(3), np.random.seed(3), random.seed(3)
    run.save_checkpoint(model=model, optimizer=optimizer, scheduler=scheduler, epoch=1, history=[], extra={})
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(99), np.random.seed(99), random.seed(99)
    run.load_checkpoint(model=model, optimizer=optimizer, scheduler=scheduler)
    assert torch.equal(torch.rand(3), expected[0])
    assert np.array_equal(np.random.rand(3), expected[1])
    assert random.random() == expected[2]


def test_only_the_latest_checkpoint_is_kept_and_log_is_truncated_on_resume(tmp_path):
    model, optimizer, scheduler = _trained_state()
    run = RunDir.create(tmp_path / "run")
    for epoch in (1, 2, 3):
        run.append_log({"epoch": epoch, "loss": 1.0 / epoch})
        if epoch < 3:
            run.save_checkpoint(model=model, optimizer=optimizer, scheduler=scheduler, epoch=epoch, history=[], extra={})
    assert sorted(p.name for p in run.state_path.iterdir()) == ["LATEST", "epoch-000002"]
    # the run "died" after logging epoch 3 but before checkpointing it; resuming redoes epoch 3
    RunDir.create(run.path, resume=True).load_checkpoint(model=model, optimizer=optimizer, scheduler=scheduler)
    rows = run.read_log_rows()
    assert [row["epoch"] for row in rows] == ["1", "2"]
    assert float(rows[1]["loss"]) == 0.5


def test_log_adds_columns_and_keeps_full_precision(tmp_path):
    run = RunDir.create(tmp_path / "run")
    run.append_log({"epoch": 1, "loss": 0.1 + 0.2})
    run.append_log({"epoch": 2, "loss": np.float32(0.5), "accuracy": 0.75})
    import pandas as pd

    frame = pd.read_csv(run.log_path)
    assert list(frame.columns) == ["epoch", "loss", "accuracy"]
    assert frame["loss"][0] == 0.1 + 0.2 and np.isnan(frame["accuracy"][0]) and frame["accuracy"][1] == 0.75


def test_diverged_weights_are_refused_and_last_good_checkpoint_kept(tmp_path):
    model, optimizer, scheduler = _trained_state()
    run = RunDir.create(tmp_path / "run")
    run.save_checkpoint(model=model, optimizer=optimizer, scheduler=scheduler, epoch=1, history=[], extra={})
    good = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model[0].weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"diverged.*epoch-000001.*kept"):
        run.save_checkpoint(model=model, optimizer=optimizer, scheduler=scheduler, epoch=2, history=[], extra={})
    model2, optimizer2, scheduler2 = _fresh_like()
    assert run.load_checkpoint(model=model2, optimizer=optimizer2, scheduler=scheduler2)["epoch"] == 1
    _assert_same_tensors(good, model2.state_dict())


def test_save_final_and_damaged_checkpoint_messages(tmp_path):
    model, optimizer, scheduler = _trained_state()
    run = RunDir.create(tmp_path / "run")
    run.save_final(model, {"accuracy": np.float64(0.5), "loss": torch.tensor(0.25)})
    assert run.read_metrics() == {"accuracy": 0.5, "loss": 0.25}
    _assert_same_tensors(zoo.load_tensor_file(run.model_path), model.state_dict())

    folder = run.save_checkpoint(model=model, optimizer=optimizer, scheduler=scheduler, epoch=1, history=[], extra={})
    data = (folder / "optimizer.safetensors").read_bytes()
    (folder / "optimizer.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="damaged.*resume=True|damaged.*retrain"):
        run.load_checkpoint(model=model, optimizer=optimizer, scheduler=scheduler)


# ----------------------------------------------------------------------------- crash safety


class _Crash(Exception):
    pass


@pytest.mark.filterwarnings("ignore:.*not listed in its manifest")  # a failed write may leave state/LATEST unlisted
@pytest.mark.parametrize("target", ["os.replace", "_write_durably", "shutil.rmtree"])
def test_failure_at_every_step_of_a_save_leaves_a_loadable_checkpoint(tmp_path, monkeypatch, target):
    """Make the n-th filesystem step of a save fail, for every n: the old or the new checkpoint loads."""
    model, optimizer, scheduler = _trained_state()
    run = RunDir.create(tmp_path / "run")
    run.save_checkpoint(model=model, optimizer=optimizer, scheduler=scheduler, epoch=1, history=[{"epoch": 1}], extra={})
    old_weights = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(1.0)
    new_weights = {k: v.clone() for k, v in model.state_dict().items()}

    module, name = (os, "replace") if target == "os.replace" else (
        (_checkpoint, "_write_durably") if target == "_write_durably" else (_checkpoint.shutil, "rmtree"))
    original = getattr(module, name)
    outcomes = set()
    for fail_at in range(12):
        calls = {"n": 0}

        def failing(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] == fail_at + 1:
                raise _Crash(f"simulated crash at call {calls['n']}")
            return original(*args, **kwargs)

        monkeypatch.setattr(module, name, failing)
        try:
            run.save_checkpoint(model=model, optimizer=optimizer, scheduler=scheduler, epoch=2, history=[], extra={})
            crashed = False
        except _Crash:
            crashed = True
        finally:
            monkeypatch.setattr(module, name, original)
        _assert_manifest_lists_only_intact_files(run)
        probe_model, probe_optimizer, probe_scheduler = _fresh_like()
        epoch = run.load_checkpoint(model=probe_model, optimizer=probe_optimizer, scheduler=probe_scheduler)["epoch"]
        _assert_same_tensors(probe_model.state_dict(), old_weights if epoch == 1 else new_weights)
        outcomes.add((crashed, epoch))
        if not crashed and calls["n"] <= fail_at:
            break
        # go back to the old checkpoint for the next trial
        with torch.no_grad():
            model.load_state_dict(old_weights)
        run.save_checkpoint(model=model, optimizer=optimizer, scheduler=scheduler, epoch=1, history=[], extra={})
        model.load_state_dict(new_weights)
    assert (True, 1) in outcomes or target == "shutil.rmtree"  # some crashes happen before the swap
    assert any(epoch == 2 for _, epoch in outcomes)
    leftovers = [p.name for p in run.state_path.iterdir() if p.name.startswith(".tmp-")]
    assert leftovers == []


_SAVE_FOREVER = textwrap.dedent(
    """
    import sys, torch
    from zoo._checkpoint import RunDir
    run = RunDir.create(sys.argv[1], resume=len(sys.argv) > 2)
    model = torch.nn.Linear(64, 64)
    optimizer = torch.optim.Adam(model.parameters())
    epoch = 0
    print("ready", flush=True)
    while True:
        epoch += 1
        with torch.no_grad():
            for p in model.parameters():
                p.fill_(float(epoch))
        optimizer.state[model.weight]["step"] = torch.tensor(float(epoch))
        run.save_checkpoint(model=model, optimizer=optimizer, scheduler=None, epoch=epoch, history=[], extra={"e": epoch})
    """
)


def test_sigkill_during_saves_leaves_a_consistent_checkpoint(tmp_path):
    """Kill a process that saves checkpoints in a tight loop at random instants; the survivor is whole."""
    rng = random.Random(0)
    out = tmp_path / "run"
    for trial in range(1):
        args = [sys.executable, "-c", _SAVE_FOREVER, str(out)] + (["resume"] if trial else [])
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        watchdog = threading.Timer(120, proc.kill)  # never hang the suite on a stuck child
        watchdog.start()
        try:
            assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
            time.sleep(0.15 + rng.random() * 0.3)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            watchdog.cancel()
        run = RunDir(out)
        _assert_manifest_lists_only_intact_files(run)
        model = torch.nn.Linear(64, 64)
        info = run.load_checkpoint(model=model, optimizer=None, scheduler=None)
        assert info["epoch"] >= 1 and info["extra"]["e"] == info["epoch"]
        assert bool((model.weight == info["epoch"]).all()) and bool((model.bias == info["epoch"]).all())


@pytest.mark.gpu
def test_cuda_checkpoint_resumes_on_cuda_and_loads_on_cpu(tmp_path):
    device = torch.device("cuda")
    model = _small_model().to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    x = torch.randn(16, 5, device=device)
    model(x).pow(2).mean().backward()
    optimizer.step()
    torch.cuda.manual_seed_all(4)
    run = RunDir.create(tmp_path / "run")
    run.save_checkpoint(model=model, optimizer=optimizer, scheduler=None, epoch=1, history=[], extra={})
    expected_draw = torch.rand(3, device=device)

    on_gpu = _small_model(1).to(device)
    gpu_optimizer = torch.optim.AdamW(on_gpu.parameters(), lr=1.0)
    run.load_checkpoint(model=on_gpu, optimizer=gpu_optimizer, scheduler=None)
    assert torch.equal(torch.rand(3, device=device), expected_draw)  # CUDA random state restored
    assert all(s["exp_avg"].device.type == "cuda" for s in gpu_optimizer.state.values())
    _assert_same_tensors(on_gpu.state_dict(), model.state_dict())

    on_cpu = _small_model(1)
    run.load_checkpoint(model=on_cpu, optimizer=None, scheduler=None, restore_rng=False)
    _assert_same_tensors(on_cpu.state_dict(), {k: v.cpu() for k, v in model.state_dict().items()})


def test_tensor_file_round_trip_with_views_and_tied_weights(tmp_path):
    base = torch.randn(6, 4)
    tensors = {"top": base[:3], "bottom": base[3:], "whole": base, "transposed": base.t(), "empty": torch.empty(0)}
    zoo.save_tensor_file(tmp_path / "views.safetensors", tensors, metadata={"note": "views"})
    _assert_same_tensors(zoo.load_tensor_file(tmp_path / "views.safetensors"), tensors)
    assert _checkpoint.read_tensor_metadata(tmp_path / "views.safetensors") == {"note": "views"}

    shared = torch.nn.Linear(3, 3)
    tied = torch.nn.Sequential(shared, torch.nn.ReLU(), shared)
    zoo.save_tensor_file(tmp_path / "tied.safetensors", tied.state_dict())
    _assert_same_tensors(zoo.load_tensor_file(tmp_path / "tied.safetensors"), tied.state_dict())


def test_training_dataset_reads_the_name_and_options_from_the_config(tmp_path):
    run = RunDir.create(tmp_path / "run")
    with pytest.raises(FileNotFoundError, match="config.json"):
        run.training_dataset()
    run.write_config({"dataset": {"name": "natural-patches", "options": {"n_patches": 64}}})
    assert run.training_dataset() == ("natural-patches", {"n_patches": 64})
    run.write_config({"dataset": "digits"})
    assert run.training_dataset() == ("digits", {})
    run.write_config({"model": {"name": "cnn"}})
    with pytest.raises(ValueError, match="does not name its dataset"):
        run.training_dataset()
