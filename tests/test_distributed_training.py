"""``zoo.train`` and the contrastive losses under ``torch.distributed``: 2 gloo processes on the CPU
(``torch.multiprocessing.spawn``), checked against one process.

The MLP trains with a test objective that skips its dropout (whose draws are per rank by design),
so that one and two processes do the same arithmetic up to the order of the sums.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from _spawn import run_ranks
from torch import nn
from torch.multiprocessing.spawn import ProcessException

import zoo
import zoo._train as train_module
from zoo._checkpoint import RunDir, load_tensor_file
from zoo._data import iterate_batches
from zoo._ddp import check_batch_fits_world, rank_batches, wrap_for_ddp
from zoo.models.contrastive import nt_xent
from zoo.models.image_text import clip_loss

SETTINGS = {"dataset": "digits", "epochs": 2, "seed": 3, "batch_size": 64, "hidden": [32], "lr": 3e-3, "progress": False}
# Measured: the 2-process weights differ from the 1-process ones by 3e-8 after 2 epochs (9e-8 after 10; float32 sums).
WEIGHT_TOLERANCE = 1e-6
# Workers fork from a server that imported torch and zoo once (tests/_spawn.py), so they start in a second.


# --------------------------------------------------------------------------- objectives the workers train with


def deterministic_objective(model, images, labels):
    """The MLP's cross-entropy through its submodules, without dropout."""
    logits = model.head(model.body(images))
    return F.cross_entropy(logits, labels), {"accuracy": (logits.argmax(1) == labels).float().mean()}


class DyingObjective:
    """``deterministic_objective`` that ends this process (as a crash would) at its ``die_at``-th call."""

    def __init__(self, die_at: int):
        self.calls, self.die_at = 0, die_at
        self.__name__ = "deterministic_objective"  # the run's config records the same objective

    def __call__(self, model, images, labels):
        self.calls += 1
        if self.calls == self.die_at:
            os._exit(3)
        return deterministic_objective(model, images, labels)


def nan_on_rank1_objective(model, images, labels):
    loss, metrics = deterministic_objective(model, images, labels)
    return (loss * float("nan") if dist.get_rank() == 1 else loss), metrics


def _train_mlp_with(objective) -> None:
    """Make ``zoo.train("mlp", ...)`` in this process use ``objective``."""
    real_entry = train_module.model_entry
    train_module.model_entry = lambda name: dataclasses.replace(real_entry(name), objective=objective)


class _WriteRecorder:
    """Records this process's file-system writes (audit events) while ``on``."""

    _EVENTS = frozenset({"os.rename", "os.remove", "os.mkdir", "os.rmdir", "shutil.rmtree", "os.truncate", "os.link",
               "os.symlink", "os.chmod"})
    _WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC

    def __init__(self):
        self.on, self.writes = True, []
        sys.addaudithook(self)

    def __call__(self, event: str, args: tuple) -> None:
        if not self.on:
            return
        if event == "open":
            path, mode, flags = args
            writing = any(c in mode for c in "wax+") if isinstance(mode, str) else bool((flags or 0) & self._WRITE_FLAGS)
            if writing and "__pycache__" not in str(path):
                self.writes.append((event, str(path)))
        elif event == "os.rename":  # os.replace too: an atomic write's temporary file and its target
            self.writes.extend([(event, str(args[0])), (event, str(args[1]))])
        elif event in self._EVENTS:
            self.writes.append((event, str(args[0])))


def _train_job(rank: int, out: str, die_at: int | None = None, resume: bool = False) -> dict:
    recorder = _WriteRecorder()
    _train_mlp_with(DyingObjective(die_at) if die_at and rank == 1 else deterministic_objective)
    result = zoo.train("mlp", out=out, resume=resume, **SETTINGS)
    recorder.on = False
    return {
        "weights": {name: value.detach().numpy().copy() for name, value in result.model.state_dict().items()},
        "metrics": result.metrics,
        "history": result.history.to_dict("records"),
        "writes": recorder.writes,
    }


def _checks_job(rank: int, diverge_out: str) -> dict:
    """The NT-Xent and CLIP gathers, the batch-size refusal, a divergence on one rank and a refused resume,
    in one spawn."""
    report = {"nt_xent": [_gathered_loss_check(rank, n_items) for n_items in (8, 7)], "clip": _clip_check(rank)}
    try:
        zoo.train("mlp", out=diverge_out, epochs=1, batch_size=1, progress=False)
    except ValueError as err:
        report["small_batch"] = str(err)
    _train_mlp_with(nan_on_rank1_objective)
    try:
        zoo.train("mlp", out=diverge_out, epochs=1, batch_size=64, progress=False)
    except zoo.TrainingDivergedError as err:
        report["diverged"] = str(err)
    try:  # the diverged run has no checkpoint: rank 0 refuses to resume it, and so does every rank
        zoo.train("mlp", out=diverge_out, resume=True, progress=False)
    except FileNotFoundError as err:
        report["refused_resume"] = (str(err), getattr(err, "raised_on_rank", None))
    return report


def _slices(n_items: int, rank: int) -> slice:
    share = zoo.shard_range(n_items, rank, dist.get_world_size())
    return slice(share.start, share.stop)


def _gathered_loss_check(rank: int, n_items: int) -> dict:
    """NT-Xent of a linear projection under DDP, this rank holding its slice of the pairs."""
    torch.manual_seed(0)
    x1, x2 = torch.randn(n_items, 6), torch.randn(n_items, 6)
    model = nn.Linear(6, 4)

    def objective(module, pairs, _labels):
        loss, _ = nt_xent(module(pairs[:, 0]), module(pairs[:, 1]), 0.5, across_ranks=True)
        return loss, {}

    ddp = wrap_for_ddp(model, objective, torch.device("cpu"))
    loss, _ = ddp(torch.stack([x1, x2], 1)[_slices(n_items, rank)], None)
    loss.backward()
    return {"loss": loss.item(), "grads": [p.grad.numpy().copy() for p in model.parameters()]}


def _clip_check(rank: int) -> dict:
    """CLIP's loss with a learned scale, the batch split over the ranks (unequal slices: 7 pairs)."""
    torch.manual_seed(1)
    images, texts, labels = torch.randn(7, 5), torch.randn(7, 3), torch.tensor([0, 1, 1, 2, 0, 2, 1])
    image_side, text_side, log_scale = nn.Linear(5, 4), nn.Linear(3, 4), nn.Parameter(torch.tensor(1.0))
    model = nn.ModuleDict({"image": image_side, "text": text_side})
    model.register_parameter("log_scale", log_scale)

    def objective(module, batch, batch_labels):
        image_embeddings = F.normalize(module["image"](batch[:, :5]), dim=1)
        text_embeddings = F.normalize(module["text"](batch[:, 5:]), dim=1)
        loss, _ = clip_loss(image_embeddings, text_embeddings, module.log_scale.exp(), batch_labels, across_ranks=True)
        return loss, {}

    ddp = wrap_for_ddp(model, objective, torch.device("cpu"))
    share = _slices(7, rank)
    loss, _ = ddp(torch.cat([images, texts], 1)[share], labels[share])
    loss.backward()
    return {"loss": loss.item(), "grads": [p.grad.numpy().copy() for p in model.parameters()]}


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
    """An uninterrupted 2-process run of the MLP: its folder and what each rank returned."""
    out = tmp_path_factory.mktemp("ddp") / "two"
    cwd = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("ddp-cwd"))  # the ranks' working directory: nothing may appear there
    try:
        results = run_ranks(_train_job, 2, out=str(out))
    finally:
        os.chdir(cwd)
    return out, results


@pytest.fixture(scope="module")
def one_process_run(tmp_path_factory):
    """The same run in this process."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    real_entry = train_module.model_entry
    try:
        _train_mlp_with(deterministic_objective)
        result = zoo.train("mlp", out=tmp_path_factory.mktemp("ddp") / "one", **SETTINGS)
    finally:
        train_module.model_entry = real_entry
        torch.set_num_threads(threads)
    return result


# --------------------------------------------------------------------------- tests


@pytest.mark.parametrize("n_items, batch_size", [(10, 4), (11, 4), (3, 8)])
def test_rank_slices_make_up_the_one_process_batches(n_items, batch_size):
    dataset = zoo.load_dataset("digits", split="test")
    subset = torch.utils.data.Subset(dataset, range(n_items))  # no get_batch: the DataLoader path
    for data in (subset, _tensor_subset(dataset, n_items)):
        drop_last = n_items >= batch_size
        one = list(iterate_batches(data, batch_size, shuffle=True, generator=torch.Generator().manual_seed(5),
                                   drop_last=drop_last))
        ranks = [list(rank_batches(data, batch_size, torch.Generator().manual_seed(5), drop_last, rank, 3))
                 for rank in range(3)]
        assert all(len(batches) == len(one) for batches in ranks)
        for step, (images, labels) in enumerate(one):
            assert torch.equal(torch.cat([batches[step][0] for batches in ranks]), images)
            assert torch.equal(torch.cat([batches[step][1] for batches in ranks]), labels)


def _tensor_subset(dataset: zoo.ImageTensorDataset, n_items: int) -> zoo.ImageTensorDataset:
    return zoo.ImageTensorDataset(dataset.images[:n_items], dataset.labels[:n_items], dataset.info)


def test_a_batch_smaller_than_the_world_is_refused():
    with pytest.raises(ValueError, match="batch_size >= 2"):
        check_batch_fits_world(1, 100, 2)
    with pytest.raises(ValueError, match="smaller than the 4 processes"):
        check_batch_fits_world(64, 3, 4)  # fewer items than processes: one batch of 3
    check_batch_fits_world(2, 100, 2)


def test_two_processes_train_the_one_process_model(two_process_run, one_process_run):
    out, results = two_process_run
    one_weights = {name: value.numpy() for name, value in one_process_run.model.state_dict().items()}
    saved = load_tensor_file(out / "model.safetensors")
    for name, expected in one_weights.items():
        np.testing.assert_allclose(saved[name].numpy(), expected, atol=WEIGHT_TOLERANCE, rtol=0)
        np.testing.assert_array_equal(results[0]["weights"][name], results[1]["weights"][name])  # ranks agree
    one_accuracy, two_accuracy = one_process_run.metrics["test_accuracy"], results[0]["metrics"]["test_accuracy"]
    assert abs(two_accuracy - one_accuracy) * 100 <= 0.5
    assert results[1]["metrics"] == results[0]["metrics"]
    assert results[1]["history"] == results[0]["history"]
    one_losses = one_process_run.history["train_loss"].to_numpy()
    np.testing.assert_allclose([row["train_loss"] for row in results[0]["history"]], one_losses, rtol=1e-5)


def test_rank0_alone_writes_the_run(two_process_run, tmp_path_factory):
    out, results = two_process_run
    assert results[1]["writes"] == []  # rank 1 wrote nothing anywhere, the run folder included
    written = {Path(path).name for _, path in results[0]["writes"]}
    assert {"config.json", "log.csv", "model.safetensors", ".writer.lock"} <= written  # the recorder sees writes
    run = RunDir(out)
    assert run.read_config()["training"]["objective"] == "deterministic_objective"
    assert len(run.read_log_rows()) == SETTINGS["epochs"] and run.checkpoint_epoch() == SETTINGS["epochs"]
    run.verify("config.json", "log.csv", "model.safetensors", "metrics.json")
    assert not (out / ".writer.lock").exists()


def test_a_run_whose_rank_died_resumes_to_the_uninterrupted_weights(two_process_run, tmp_path):
    out = tmp_path / "killed"
    steps_per_epoch = len(zoo.load_dataset("digits", split="train")) // SETTINGS["batch_size"]
    with pytest.raises(ProcessException):
        run_ranks(_train_job, 2, out=str(out), die_at=steps_per_epoch + 2)  # rank 1 dies in the second epoch
    assert RunDir(out).checkpoint_epoch() == 1 and not (out / "model.safetensors").exists()
    results = run_ranks(_train_job, 2, out=str(out), resume=True)
    assert [row["epoch"] for row in results[0]["history"]] == [1, 2]
    uninterrupted = load_tensor_file(two_process_run[0] / "model.safetensors")
    for name, value in load_tensor_file(out / "model.safetensors").items():
        assert torch.equal(value, uninterrupted[name]), name


def test_gathered_contrastive_losses_equal_the_one_process_losses(tmp_path):
    results = run_ranks(_checks_job, 2, diverge_out=str(tmp_path / "diverged"))
    for case, n_items in enumerate((8, 7)):
        torch.manual_seed(0)
        x1, x2 = torch.randn(n_items, 6), torch.randn(n_items, 6)
        model = nn.Linear(6, 4)
        loss, _ = nt_xent(model(x1), model(x2), 0.5)
        loss.backward()
        for rank in (0, 1):
            got = results[rank]["nt_xent"][case]
            assert got["loss"] == pytest.approx(loss.item(), abs=1e-6)
            for grad, param in zip(got["grads"], model.parameters()):
                np.testing.assert_allclose(grad, param.grad.numpy(), atol=1e-6)
    expected_loss, expected_grads = _one_process_clip()
    for rank in (0, 1):
        assert results[rank]["clip"]["loss"] == pytest.approx(expected_loss, abs=1e-6)
        for grad, expected in zip(results[rank]["clip"]["grads"], expected_grads):
            np.testing.assert_allclose(grad, expected, atol=1e-6)
    # and, in the same spawn: both ranks refuse a batch smaller than the world, and both stop on a divergence
    for rank in (0, 1):
        assert "batch_size >= 2" in results[rank]["small_batch"]
        assert "diverged: the loss became nan at epoch 1, step 1" in results[rank]["diverged"]
    message, _ = results[0]["refused_resume"]
    assert "cannot resume" in message and results[1]["refused_resume"] == (message, 0)  # rank 1 got rank 0's error


def _one_process_clip() -> tuple[float, list[np.ndarray]]:
    torch.manual_seed(1)
    images, texts, labels = torch.randn(7, 5), torch.randn(7, 3), torch.tensor([0, 1, 1, 2, 0, 2, 1])
    image_side, text_side, log_scale = nn.Linear(5, 4), nn.Linear(3, 4), nn.Parameter(torch.tensor(1.0))
    model = nn.ModuleDict({"image": image_side, "text": text_side})
    model.register_parameter("log_scale", log_scale)
    loss, _ = clip_loss(F.normalize(image_side(images), dim=1), F.normalize(text_side(texts), dim=1),
                        log_scale.exp(), labels)
    loss.backward()
    return loss.item(), [p.grad.numpy().copy() for p in model.parameters()]


def _cli_job(rank: int, out: str) -> dict:
    """``probe train`` as torchrun starts it: the group is described in the environment, not initialised."""
    import contextlib
    import io

    from probe.cli import main

    dist.destroy_process_group()  # probe train joins the group the environment describes itself
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["train", "mlp", "--dataset", "digits", "--epochs", "1", "--out", out, "--device", "cpu",
                     "--quiet", "--set", "hidden=[16]"])
    return {"code": code, "printed": printed.getvalue(), "left_group": not dist.is_initialized()}


def test_probe_train_joins_the_torchrun_group_and_rank0_alone_prints(tmp_path):
    results = run_ranks(_cli_job, 2, out=str(tmp_path / "cli"))
    assert results[0]["code"] == results[1]["code"] == 0
    assert "run written to" in results[0]["printed"] and "final metrics" in results[0]["printed"]
    assert results[1]["printed"] == ""
    assert results[0]["left_group"] and results[1]["left_group"]
    assert RunDir(tmp_path / "cli").read_metrics()["epochs"] == 1
