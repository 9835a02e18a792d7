"""One training loop for every zoo model: the objective is looked up per model.

AdamW with a linear warm-up and a cosine decay, per-epoch evaluation, a CSV log row and an atomic
checkpoint after every epoch, mixed precision on CUDA. Every epoch starts by seeding all random
number generators from (seed, epoch) and shuffles with its own ``torch.Generator``, so a run
resumed at an epoch boundary reproduces an uninterrupted run exactly (on the CPU).

Under ``torch.distributed`` (``torchrun``, or processes that initialised a group themselves) the
same loop trains with ``DistributedDataParallel``: every rank walks the same batches and takes its
slice of each, rank 0 alone writes the run folder, and the ranks decide together when to stop
(see ``train``, "Distributed training").
"""

from __future__ import annotations

import functools
import inspect
import math
import os
import random
import re
import time
import typing
import warnings
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from torch import nn
from tqdm.auto import tqdm

from zoo._checkpoint import RunDir, refuse_file_as_run_folder
from zoo._data import ImageTensorDataset, iterate_batches, load_dataset
from zoo._ddp import check_batch_fits_world, rank_batches, wrap_for_ddp
from zoo._device import resolve_device
from zoo._distributed import main_first, share_from_main, world
from zoo._evaluate import evaluate_model, primary_metric
from zoo._files import writer_lock
from zoo._names import unknown_name_error
from zoo._registry import ModelEntry, TrainDefaults, check_model_config, create_model, model_entry
from zoo._settings import MAX_PARAMETERS, check_setting
from zoo._text import TextInfo, TokenDataset

__all__ = ["OPTIMIZERS", "SGD_MOMENTUM", "TrainResult", "TrainingDivergedError", "default_run_dir", "seed_everything",
           "train"]

_TRAINING_KEYS = {f.name for f in fields(TrainDefaults)} - {"epochs"}
# The type of every training setting that zoo.train checks (None allowed where it means "the default").
_TRAINING_TYPES = {
    **typing.get_type_hints(TrainDefaults),
    "epochs": int | None,
    "seed": int,
    "eval_every": int,
    "dataset_options": dict | None,
}
_FINAL_LR_FRACTION = 0.01
OPTIMIZERS = ("adamw", "sgd")
SGD_MOMENTUM = 0.9
# Training settings added after runs were first written, with the value that the older runs (which lack them) used;
# a model's own such options are in its registry entry (``older_configs``).
_LATER_SETTINGS = {"training.optimizer": "adamw"}
_NOT_SET = "(not set)"


class TrainingDivergedError(FloatingPointError):
    """The loss became NaN or infinite; the run's last good checkpoint is kept."""


@dataclass
class TrainResult:
    """What ``zoo.train`` returns.

    Attributes
    ----------
    model
        The trained model, in eval mode, on the training device.
    run_dir
        The run directory (config.json, log.csv, model.safetensors, metrics.json, state/).
    history
        One row per epoch: epoch, train_loss, the objective's metrics, evaluation metrics, lr, seconds.
    metrics
        Final evaluation metrics (see ``zoo.evaluate_model``).
    """

    model: nn.Module
    run_dir: Path
    history: pd.DataFrame
    metrics: dict[str, float]


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's (CPU and CUDA) random number generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _epoch_seed(seed: int, epoch: int) -> int:
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


def _rank_seed(seed: int, epoch: int, rank: int) -> int:
    """The seed of a rank's augmentations, masks and dropout in an epoch: rank 0's is one process's, the
    others' are their own streams (the same draws on every rank would repeat one crop across slices)."""
    return _epoch_seed(seed, epoch) if rank == 0 else int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1)[0])


def default_run_dir(model_name: str, dataset: str, seed: int) -> Path:
    """``runs/<model>-<dataset>-seed<seed>`` (the dataset name made safe for a folder name)."""
    safe_dataset = re.sub(r"[^A-Za-z0-9_.-]+", "_", dataset).strip("_")
    return Path("runs") / f"{model_name}-{safe_dataset}-seed{seed}"


def _check_training_settings(settings: dict[str, Any]) -> None:
    """Check the type and range of each training setting (``lr`` > 0, sizes and counts >= 1, ...) and that the
    optimizer is one of ``OPTIMIZERS``.

    Raises
    ------
    ValueError
        Naming the setting, its value and what it must be (an unknown optimizer: the nearest valid names).
    """
    for key, value in settings.items():
        check_setting("training setting", key, value, _TRAINING_TYPES[key])
    if settings.get("optimizer", OPTIMIZERS[0]) not in OPTIMIZERS:
        raise unknown_name_error("optimizer", settings["optimizer"], OPTIMIZERS)


def _model_config(model_name: str, info, settings: dict[str, Any], max_parameters: int | None) -> dict[str, Any]:
    """The model's options: the data's shape (and class count) where the model takes them, plus ``settings``.

    The options are checked (types, ranges, parameter budget) before anything is allocated, and
    so is that the model takes the dataset's images and has a class for each of its labels.
    """
    entry = model_entry(model_name)
    accepted = inspect.signature(entry.builder).parameters
    unknown = sorted(set(settings) - set(accepted))
    if unknown:
        valid = sorted(set(accepted) - {"input_shape", "n_classes"}) + sorted(_TRAINING_KEYS)
        raise unknown_name_error(f"{model_name} setting", unknown[0], valid)
    config: dict[str, Any] = {"input_shape": list(info.input_shape)}
    if isinstance(info, TextInfo):
        # Language models are built for the corpus's vocabulary (its words and their counts).
        if "vocabulary" in accepted:
            config["vocabulary"] = list(info.vocabulary.words)
        if "word_counts" in accepted:
            config["word_counts"] = list(info.vocabulary.counts)
    if "mean" in accepted and "std" in accepted and not isinstance(info, TextInfo):
        # models that undo the dataset's normalisation themselves (colorization converts pixels to Lab)
        config["mean"], config["std"] = list(info.mean), list(info.std)
    if "class_names" in accepted and info.class_names is not None:
        config["class_names"] = list(info.class_names)
    if "n_classes" in accepted:
        if info.n_classes == 0:
            raise ValueError(f"model {model_name!r} is supervised but dataset {info.name!r} is unlabelled; choose a labelled dataset such as 'digits'")
        config["n_classes"] = info.n_classes
    config.update(settings)
    check_model_config(model_name, config, max_parameters=max_parameters)
    if [int(v) for v in config["input_shape"]] != list(info.input_shape):
        what = "sequences have shape" if isinstance(info, TextInfo) else "images have shape"
        raise ValueError(
            f"model {model_name!r} with input_shape={list(config['input_shape'])} does not fit dataset {info.name!r}, "
            f"whose {what} {list(info.input_shape)}; drop input_shape "
            "(it follows the dataset) or choose a dataset with such images"
        )
    if "n_classes" in config and config["n_classes"] < info.n_classes:
        raise ValueError(
            f"model {model_name!r} with n_classes={config['n_classes']} cannot learn dataset {info.name!r}, "
            f"which has {info.n_classes} classes; drop n_classes (it follows the dataset)"
        )
    return config


# Datasets held in one tensor and smaller than this are copied to the GPU once, not batch by batch.
_MAX_DEVICE_DATASET_BYTES = 2 * 1024**3


def _to_device(dataset, device: torch.device):
    if isinstance(dataset, (ImageTensorDataset, TokenDataset)) and dataset.nbytes <= _MAX_DEVICE_DATASET_BYTES:
        return dataset.to(device)
    return dataset


def _lr_schedule(total_steps: int, warmup_steps: int):
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return _FINAL_LR_FRACTION + (1 - _FINAL_LR_FRACTION) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def _optimizer(model: nn.Module, hyper: TrainDefaults) -> torch.optim.Optimizer:
    # Biases, norm scales and embeddings-like vectors are not decayed (as in most vision recipes).
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [{"params": decay, "weight_decay": hyper.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if hyper.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=hyper.lr, momentum=SGD_MOMENTUM, nesterov=True)
    return torch.optim.AdamW(groups, lr=hyper.lr)


def train(
    model_name: str,
    dataset: str = "digits",
    out: str | os.PathLike | None = None,
    epochs: int | None = None,
    seed: int = 0,
    device: str | torch.device = "auto",
    resume: bool = False,
    force: bool = False,
    progress: bool = True,
    dataset_options: dict[str, Any] | None = None,
    eval_every: int = 1,
    max_parameters: int | None = MAX_PARAMETERS,
    **settings: Any,
) -> TrainResult:
    """Train a zoo model with its objective and write a run directory.

    Parameters
    ----------
    model_name
        A name from ``zoo.list_models()``.
    dataset
        A name for ``zoo.load_dataset`` (its train split trains, its test split evaluates). The run's
        ``config.json`` keeps it with ``dataset_options`` and, for ``imagefolder:PATH``, the folder's
        absolute path, so that ``RunDir.training_dataset()`` reloads it from any working directory.
    out
        The run directory (default: ``default_run_dir(model_name, dataset, seed)``).
    epochs
        Passes over the training set (default: the model's own, see ``zoo.train_defaults``).
    seed
        Seeds the initial weights, the shuffling, augmentations, masks and dropout.
    device
        ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"``, ...; mixed precision is used on CUDA.
    resume
        Continue the run in ``out`` from its last checkpoint (the settings must be the same). With
        ``epochs`` larger than the run's, a finished run is trained further, up to ``epochs``: the
        same run, its log continued, its learning-rate schedule that of ``epochs`` from the next step
        on. Without ``epochs``, the run's own. A finished run resumed with its own ``epochs`` is
        returned as it is, without training.
    force
        Replace an earlier run in ``out``.
    progress
        Show a progress bar with the running loss.
    dataset_options
        Options for ``zoo.load_dataset`` (e.g. ``{"patch_size": 8}`` for natural patches).
    eval_every
        Evaluate on the test split every this many epochs (always after the last one).
    max_parameters
        Refuse settings that build a larger model (see ``zoo.check_model_config``; None: no limit).
    **settings
        Training settings (``lr``, ``batch_size``, ``weight_decay``, ``warmup_epochs``, ``optimizer``) and model
        options (e.g. ``code_dim=8``).

    Returns
    -------
    TrainResult

    Raises
    ------
    TrainingDivergedError
        If the loss becomes NaN or infinite (the last good checkpoint stays in ``out/state``).
    FolderLockedError
        If another process is writing ``out`` (a RuntimeError; the message gives its PID).
    ValueError
        Unknown settings, settings of the wrong type or range, a model larger than ``max_parameters``
        or one that does not fit the dataset's images, a resumed run whose settings differ (other than
        ``epochs``) or that already has more epochs than ``epochs``, or a supervised model on
        unlabelled data. All are checked before anything is allocated or written. Distributed: a
        ``batch_size`` smaller than the number of processes.

    Notes
    -----
    **Distributed training.** Run the same call in every process of a ``torch.distributed`` group:
    ``torchrun --nproc-per-node N -m probe train ...`` (``probe train`` joins the group torchrun
    describes), or processes that called ``torch.distributed.init_process_group`` themselves
    (``torch.multiprocessing.spawn``; ``gloo`` on the CPU, ``nccl`` with one GPU per process, the
    ``device`` then being this process's GPU). The objective is wrapped in
    ``DistributedDataParallel``:

    - Every rank shuffles with the same generator and takes its contiguous slice
      (``zoo.shard_range``) of each global batch of ``batch_size`` items, so a step sees the
      one-process batch and an epoch has as many steps (the learning-rate schedule is the same).
      Each rank's loss is the mean over its slice and DDP averages the gradients: with
      ``batch_size`` a multiple of the number of processes this is the one-process mean gradient,
      up to the order of floating-point sums (an MLP without dropout ends within about 1e-7 of the
      one-process weights after a few epochs). Otherwise the slices differ by one item and the
      items of the smaller slices weigh slightly more (a warning says so). The logged
      ``train_*`` values are the means over ranks of each rank's means.
    - Contrastive losses (``nt_xent`` of SimCLR, ``clip_loss``) gather the embeddings of all ranks,
      so the negatives are the global batch's and loss and gradients are the one-process ones.
    - What differs from one process: BatchNorm normalises each rank's slice with that slice's
      statistics (``SyncBatchNorm`` needs CUDA) and its running statistics are rank 0's; random
      augmentations, masks and dropout draw from a stream per rank (rank 0's is one process's), so
      they match a one-process run only in distribution.
    - Rank 0 alone holds the run folder's lock and writes config, log, checkpoints and the final
      weights; it evaluates after each epoch and sends the log row to the others, so ``history``
      and ``metrics`` are the same on every rank. The other ranks write nothing.
    - ``resume=True``: rank 0 checks the run and loads its checkpoint, then the other ranks load it.
    - A non-finite loss on any rank stops every rank with ``TrainingDivergedError``, and an error
      that rank 0 raises while checking or writing is raised on every rank, so none is left waiting.
    """
    entry = model_entry(model_name)
    run_path = Path(out) if out is not None else default_run_dir(model_name, dataset, seed)
    if resume and epochs is None:
        epochs = _stored_epochs(run_path)  # a resumed run keeps its own length unless told otherwise
    training_settings = {key: settings.pop(key) for key in list(settings) if key in _TRAINING_KEYS}
    _check_training_settings(
        {**training_settings, "epochs": epochs, "seed": seed, "eval_every": eval_every,
         "dataset_options": dataset_options}
    )
    hyper = replace(entry.defaults, **training_settings)
    if epochs is not None:
        hyper = replace(hyper, epochs=int(epochs))
    device = _process_device(resolve_device(device))
    dataset_options = dict(dataset_options or {})

    def load_splits():
        return load_dataset(dataset, split="train", **dataset_options), load_dataset(dataset, split="test", **dataset_options)

    train_set, test_set = main_first(load_splits)  # rank 0 downloads a missing dataset before the others read it
    model_config = _model_config(model_name, train_set.info, settings, max_parameters)
    current = world()
    if current.distributed:
        check_batch_fits_world(hyper.batch_size, len(train_set), current.size)
    if device.type != "cpu":
        train_set, test_set = _to_device(train_set, device), _to_device(test_set, device)

    seed_everything(seed)
    model = create_model(model_name, max_parameters=max_parameters, **model_config).to(device)
    with _run_folder(run_path, resume=resume, force=force) as run:
        return _train_locked(
            run, model, entry, hyper, train_set, test_set, device,
            dataset=_dataset_record(dataset, dataset_options), seed=seed, resume=resume, progress=progress,
            eval_every=eval_every,
        )


def _process_device(device: torch.device) -> torch.device:
    """This process's GPU (``LOCAL_RANK``, set by ``zoo.init_distributed``) for a distributed run on
    ``cuda`` without an index; ``device`` otherwise."""
    if world().distributed and device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


@contextmanager
def _run_folder(run_path: Path, *, resume: bool, force: bool) -> Iterator[RunDir]:
    """The run folder, created (or reopened to resume) under its writer lock by rank 0 alone.

    The other ranks get a ``RunDir`` of the same folder, which they only read; a refusal on rank 0
    (a locked or non-empty folder, nothing to resume) is raised on every rank.
    """
    with ExitStack() as stack:
        def create() -> RunDir:
            return RunDir.create(stack.enter_context(_only_writer(run_path)), resume=resume, force=force)

        yield share_from_main(create)


def _stored_epochs(run_path: Path) -> int | None:
    """The number of epochs a run's ``config.json`` plans (None when there is no readable one)."""
    run = RunDir(run_path)
    if not run.config_path.is_file():
        return None
    epochs = (run.read_config().get("training") or {}).get("epochs")
    return epochs if isinstance(epochs, int) and not isinstance(epochs, bool) else None


def _dataset_record(dataset: str, dataset_options: dict[str, Any]) -> dict[str, Any]:
    """The run config's ``dataset``: the spelling and options given and, for an image folder, its
    absolute path (``folder``), so that the run names its stimuli from any working directory."""
    record: dict[str, Any] = {"name": dataset, "options": dataset_options}
    if dataset.startswith("imagefolder:"):
        record["folder"] = str(Path(dataset.split(":", 1)[1]).expanduser().resolve())
    return record


def _resume_differences(run: RunDir, config: dict[str, Any], entry: ModelEntry) -> dict[str, tuple[Any, Any]]:
    """Settings that differ from the stored run's, besides ``epochs`` (which a resumed run may extend) and
    the spelling of an image folder that is the same folder (an absolute path, or one relative to another
    working directory). A setting that the stored run predates counts with the value it had then
    (``_LATER_SETTINGS``, the model's ``older_configs``)."""
    stored = run.read_config().get("dataset")
    ignore = ["training.epochs"]
    folder = stored.get("folder") if isinstance(stored, dict) else None
    if folder is not None and folder == config["dataset"].get("folder"):
        ignore.append("dataset.name")
    if folder is None:  # written before runs recorded the folder: the spelling alone is compared
        ignore.append("dataset.folder")
    differences = run.config_differences(config, ignore=tuple(ignore), absent=_NOT_SET)
    later = {**_LATER_SETTINGS, **{f"model.{key}": value for key, value in entry.older_configs.items()}}
    named = {}
    for key, (stored_value, given) in differences.items():
        if stored_value == _NOT_SET and key in later:  # written before the setting existed: it had the older value
            stored_value = later[key]
        if stored_value != given:
            named[key] = (stored_value, given)
    return named


def _extend(run: RunDir, epochs: int) -> None:
    """Let a resumed run train up to ``epochs``: refuse fewer than it has done; for another length than
    the planned one, drop the final weights (the run is unfinished again) and plan ``epochs``."""
    done = run.checkpoint_epoch() or 0
    if epochs < done:
        raise ValueError(
            f"the run in {str(run.path)!r} already has {done} epochs, more than the {epochs} asked for; resume it "
            f"with {done} epochs or more (more trains it further)"
        )
    stored = run.read_config()
    if stored["training"].get("epochs") == epochs:
        return
    # Final files first: a process killed in between leaves an unfinished run that plans the old length.
    run.discard_final()
    stored["training"]["epochs"] = epochs
    run.write_config(stored)


@contextmanager
def _only_writer(out: str | os.PathLike) -> Iterator[Path]:
    """Hold the run folder's writer lock: a second ``probe train`` into it fails at once instead of
    interleaving its epochs with this one's. A folder that the lock had to create, and that stays
    empty (the run was refused), is removed again."""
    path = Path(out)
    refuse_file_as_run_folder(path)
    created = not path.exists()
    try:
        with writer_lock(path, what="run folder"):
            yield path
    finally:
        if created and path.is_dir() and not any(path.iterdir()):
            path.rmdir()


def _train_locked(run: RunDir, model: nn.Module, entry: ModelEntry, hyper: TrainDefaults, train_set, test_set,
                  device: torch.device, *, dataset: dict[str, Any], seed: int, resume: bool,
                  progress: bool, eval_every: int) -> TrainResult:
    """The rest of ``train``, under the writer lock: config, epochs with their checkpoints, final weights.

    Distributed, every rank runs it; the writes happen on rank 0 (see ``train``).
    """
    model_name = model.config["name"]
    config = {
        "model": model.config,
        "training": {**asdict(hyper), "seed": seed, "objective": entry.objective.__name__},
        "dataset": dataset,
    }
    objective = entry.objective
    optimizer = _optimizer(model, hyper)
    n_train = len(train_set)
    drop_last = n_train >= hyper.batch_size  # equal batches (BatchNorm, NT-Xent) when the data allow
    steps_per_epoch = n_train // hyper.batch_size if drop_last else 1
    warmup = hyper.warmup_epochs if hyper.warmup_epochs >= 1 else hyper.warmup_epochs * hyper.epochs
    schedule = _lr_schedule(hyper.epochs * steps_per_epoch, max(1, round(warmup * steps_per_epoch)))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)

    def load_checkpoint() -> tuple[int, list[dict], dict | None]:
        state = run.load_checkpoint(model=model, optimizer=optimizer, scheduler=scheduler)
        finished = state["epoch"] >= hyper.epochs and run.model_path.is_file() and run.metrics_path.is_file()
        return state["epoch"], list(state["history"]), run.read_metrics() if finished else None

    def start() -> tuple[int, list[dict], dict | None]:
        if not resume:
            run.write_config(config)
            return 0, [], None
        differences = _resume_differences(run, config, entry)
        if differences:
            raise ValueError(
                f"cannot resume {str(run.path)!r} with other settings: {differences} (stored, given); "
                "resume with the original settings or start a new run with force=True"
            )
        _extend(run, hyper.epochs)
        return load_checkpoint()

    # Rank 0 checks the run (and writes its config) before the other ranks read its checkpoint.
    start_epoch, history, finished_metrics = main_first(start, then=load_checkpoint if resume else lambda: (0, [], None))
    if resume:
        # The next step takes its rate from this schedule (another one when the run is trained further),
        # not the rate the checkpoint's schedule ended on; for the same schedule the two are equal.
        for group, base in zip(optimizer.param_groups, scheduler.base_lrs):
            group["lr"] = base * schedule(scheduler.last_epoch)
        if finished_metrics is not None:
            model.eval()  # a finished run resumed with its own length: nothing to train or rewrite
            return TrainResult(model=model, run_dir=run.path, history=pd.DataFrame(history), metrics=finished_metrics)
    current = world()
    if current.distributed and hyper.batch_size % current.size and current.is_main:
        warnings.warn(
            f"batch_size={hyper.batch_size} is not a multiple of the {current.size} processes: their slices of a batch "
            "differ by one item, and DDP's average of their mean gradients weighs the items of the smaller slices "
            "slightly more than one process would; choose a multiple for the one-process gradient",
            stacklevel=3,
        )
    step = _step_function(model, objective, device)
    use_amp = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    primary = primary_metric(model)
    final_evaluation: dict[str, float] | None = None

    bar = tqdm(total=hyper.epochs * steps_per_epoch, initial=start_epoch * steps_per_epoch,
               disable=not progress or not current.is_main, desc=f"train {model_name}", unit="step", leave=False)
    try:
        for epoch in range(start_epoch, hyper.epochs):
            started = time.perf_counter()
            epoch_seed = _epoch_seed(seed, epoch)
            seed_everything(_rank_seed(seed, epoch, current.rank))
            generator = torch.Generator().manual_seed(epoch_seed)
            model.train()
            sums: dict[str, torch.Tensor] = {}
            n_steps = 0
            for images, labels in _epoch_batches(train_set, hyper.batch_size, generator, drop_last):
                images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
                with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
                    loss, step_metrics = step(images, labels)
                # Every rank sees the mean loss over ranks, so a divergence on one stops them all together.
                shared_loss = _mean_over_ranks(loss.detach())
                if not bool(torch.isfinite(shared_loss)):
                    checkpoint = run.checkpoint_path()
                    kept = f"the last good checkpoint {checkpoint} is kept" if checkpoint else "no checkpoint had been written yet"
                    raise TrainingDivergedError(
                        f"training {model_name!r} diverged: the loss became {float(shared_loss)} at epoch {epoch + 1}, step {n_steps + 1}; "
                        f"{kept}. Lower lr (now {hyper.lr:g}) and retrain with force=True, or resume=True to retry from the checkpoint"
                    )
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                for name, value in {"loss": loss.detach(), **step_metrics}.items():
                    sums[name] = sums.get(name, 0.0) + value.detach().float()
                n_steps += 1
                bar.update(1)
                if progress and n_steps % 10 == 0:
                    bar.set_postfix(epoch=epoch + 1, loss=f"{float(shared_loss):.4f}")
            _share_buffers_of_rank0(model)
            row: dict[str, Any] = {"epoch": epoch + 1}
            row.update({f"train_{name}": value / n_steps for name, value in _means_over_ranks(sums).items()})
            evaluate = epoch + 1 == hyper.epochs or (epoch + 1) % eval_every == 0
            row, evaluation = share_from_main(functools.partial(
                _end_epoch, run, model, optimizer, scheduler, train_set, test_set,
                row=row, history=history, evaluate=evaluate, started=started,
            ))
            history.append(row)
            if evaluation is not None:
                final_evaluation = evaluation
                if primary in row:
                    bar.set_postfix(epoch=epoch + 1, loss=f"{row['train_loss']:.4f}", **{primary: f"{row[primary]:.4f}"})
    finally:
        bar.close()

    if final_evaluation is None:  # resumed a run whose epochs were all done
        final_evaluation = share_from_main(lambda: evaluate_model(model, train_set, test_set))
    metrics = {**final_evaluation, "train_loss": history[-1]["train_loss"], "epochs": hyper.epochs}
    model.eval()
    share_from_main(lambda: run.save_final(model, metrics))
    return TrainResult(model=model, run_dir=run.path, history=pd.DataFrame(history), metrics=metrics)


def _end_epoch(run: RunDir, model: nn.Module, optimizer, scheduler, train_set, test_set, *, row: dict[str, Any],
               history: list[dict], evaluate: bool, started: float) -> tuple[dict[str, Any], dict[str, float] | None]:
    """Evaluate (when due), log the epoch's row and checkpoint (rank 0's work); returns the row and the evaluation."""
    evaluation = evaluate_model(model, train_set, test_set) if evaluate else None
    row = {**row, **(evaluation or {}), "lr": optimizer.param_groups[0]["lr"], "seconds": time.perf_counter() - started}
    # Log first: a crash before the checkpoint leaves a row that resuming truncates, never a gap.
    run.append_log(row)
    run.save_checkpoint(model=model, optimizer=optimizer, scheduler=scheduler, epoch=row["epoch"],
                        history=[*history, row])
    return row, evaluation


def _step_function(model: nn.Module, objective, device: torch.device):
    """``step(images, labels) -> (loss, metrics)``: the objective on ``model``, through
    ``DistributedDataParallel`` when several processes train (so that backward syncs the gradients)."""
    if world().distributed:
        return wrap_for_ddp(model, objective, device)
    return lambda images, labels: objective(model, images, labels)


def _epoch_batches(train_set, batch_size: int, generator: torch.Generator, drop_last: bool):
    """An epoch's shuffled batches: all of each in one process, this rank's slice of each when distributed."""
    current = world()
    if current.distributed:
        return rank_batches(train_set, batch_size, generator, drop_last, current.rank, current.size)
    return iterate_batches(train_set, batch_size, shuffle=True, generator=generator, drop_last=drop_last)


def _mean_over_ranks(value: torch.Tensor) -> torch.Tensor:
    """The mean of ``value`` over the ranks (``value`` in one process); NaN or infinity on any rank stays."""
    current = world()
    if not current.distributed:
        return value
    total = value.float().clone()
    dist.all_reduce(total)
    return total / current.size


def _means_over_ranks(sums: dict[str, torch.Tensor]) -> dict[str, float]:
    """Each of this rank's per-epoch sums averaged over the ranks (as Python floats)."""
    if not sums:
        return {}
    names = list(sums)
    means = _mean_over_ranks(torch.stack([torch.as_tensor(sums[name]).float() for name in names]))
    return {name: float(value) for name, value in zip(names, means)}


def _share_buffers_of_rank0(model: nn.Module) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank, so that all ranks hold the
    model rank 0 evaluates and saves (DDP itself broadcasts them only at the start of a forward)."""
    if not world().distributed:
        return
    for buffer in model.buffers():
        dist.broadcast(buffer, src=0)
