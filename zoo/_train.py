"""One training loop for every zoo model: the objective is looked up per model.

AdamW with a linear warm-up and a cosine decay, per-epoch evaluation, a CSV log row and an atomic
checkpoint after every epoch, mixed precision on CUDA. Every epoch starts by seeding all random
number generators from (seed, epoch) and shuffles with its own ``torch.Generator``, so a run
resumed at an epoch boundary reproduces an uninterrupted run exactly (on the CPU).
"""

from __future__ import annotations

import inspect
import math
import os
import random
import re
import time
import typing
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from zoo._checkpoint import RunDir, refuse_file_as_run_folder
from zoo._data import ImageTensorDataset, iterate_batches, load_dataset
from zoo._device import resolve_device
from zoo._evaluate import evaluate_model, primary_metric
from zoo._files import writer_lock
from zoo._names import unknown_name_error
from zoo._registry import ModelEntry, TrainDefaults, check_model_config, create_model, model_entry
from zoo._settings import MAX_PARAMETERS, check_setting
from zoo._text import TextInfo, TokenDataset

__all__ = ["TrainResult", "TrainingDivergedError", "train", "default_run_dir", "seed_everything"]

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


def default_run_dir(model_name: str, dataset: str, seed: int) -> Path:
    """``runs/<model>-<dataset>-seed<seed>`` (the dataset name made safe for a folder name)."""
    safe_dataset = re.sub(r"[^A-Za-z0-9_.-]+", "_", dataset).strip("_")
    return Path("runs") / f"{model_name}-{safe_dataset}-seed{seed}"


def _check_training_settings(settings: dict[str, Any]) -> None:
    """Check the type and range of each training setting (``lr`` > 0, sizes and counts >= 1, ...).

    Raises
    ------
    ValueError
        Naming the setting, its value and what it must be.
    """
    for key, value in settings.items():
        check_setting("training setting", key, value, _TRAINING_TYPES[key])


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


def _optimizer(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    # Biases, norm scales and embeddings-like vectors are not decayed (as in most vision recipes).
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr)


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
        Training settings (``lr``, ``batch_size``, ``weight_decay``, ``warmup_epochs``) and model
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
        unlabelled data. All are checked before anything is allocated or written.
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
    device = resolve_device(device)
    dataset_options = dict(dataset_options or {})
    train_set = load_dataset(dataset, split="train", **dataset_options)
    test_set = load_dataset(dataset, split="test", **dataset_options)
    model_config = _model_config(model_name, train_set.info, settings, max_parameters)
    if device.type != "cpu":
        train_set, test_set = _to_device(train_set, device), _to_device(test_set, device)

    seed_everything(seed)
    model = create_model(model_name, max_parameters=max_parameters, **model_config).to(device)
    with _only_writer(run_path) as locked_path:
        return _train_locked(
            RunDir.create(locked_path, resume=resume, force=force), model, entry, hyper, train_set, test_set, device,
            dataset=_dataset_record(dataset, dataset_options), seed=seed, resume=resume, progress=progress,
            eval_every=eval_every,
        )


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


def _resume_differences(run: RunDir, config: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Settings that differ from the stored run's, besides ``epochs`` (which a resumed run may extend) and
    the spelling of an image folder that is the same folder (an absolute path, or one relative to another
    working directory)."""
    stored = run.read_config().get("dataset")
    ignore = ["training.epochs"]
    folder = stored.get("folder") if isinstance(stored, dict) else None
    if folder is not None and folder == config["dataset"].get("folder"):
        ignore.append("dataset.name")
    if folder is None:  # written before runs recorded the folder: the spelling alone is compared
        ignore.append("dataset.folder")
    return run.config_differences(config, ignore=tuple(ignore))


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
    """The rest of ``train``, under the writer lock: config, epochs with their checkpoints, final weights."""
    model_name = model.config["name"]
    config = {
        "model": model.config,
        "training": {**asdict(hyper), "seed": seed, "objective": entry.objective.__name__},
        "dataset": dataset,
    }
    if resume:
        differences = _resume_differences(run, config)
        if differences:
            raise ValueError(
                f"cannot resume {str(run.path)!r} with other settings: {differences} (stored, given); "
                "resume with the original settings or start a new run with force=True"
            )
        _extend(run, hyper.epochs)
    else:
        run.write_config(config)

    objective = entry.objective
    optimizer = _optimizer(model, hyper.lr, hyper.weight_decay)
    n_train = len(train_set)
    drop_last = n_train >= hyper.batch_size  # equal batches (BatchNorm, NT-Xent) when the data allow
    steps_per_epoch = n_train // hyper.batch_size if drop_last else 1
    warmup = hyper.warmup_epochs if hyper.warmup_epochs >= 1 else hyper.warmup_epochs * hyper.epochs
    schedule = _lr_schedule(hyper.epochs * steps_per_epoch, max(1, round(warmup * steps_per_epoch)))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    start_epoch, history = 0, []
    final_evaluation: dict[str, float] | None = None
    if resume:
        state = run.load_checkpoint(model=model, optimizer=optimizer, scheduler=scheduler)
        start_epoch, history = state["epoch"], list(state["history"])
        # The next step takes its rate from this schedule (another one when the run is trained further),
        # not the rate the checkpoint's schedule ended on; for the same schedule the two are equal.
        for group, base in zip(optimizer.param_groups, scheduler.base_lrs):
            group["lr"] = base * schedule(scheduler.last_epoch)
        if start_epoch >= hyper.epochs and run.model_path.is_file() and run.metrics_path.is_file():
            model.eval()  # a finished run resumed with its own length: nothing to train or rewrite
            return TrainResult(model=model, run_dir=run.path, history=pd.DataFrame(history), metrics=run.read_metrics())
    use_amp = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    primary = primary_metric(model)

    bar = tqdm(total=hyper.epochs * steps_per_epoch, initial=start_epoch * steps_per_epoch, disable=not progress,
               desc=f"train {model_name}", unit="step", leave=False)
    try:
        for epoch in range(start_epoch, hyper.epochs):
            started = time.perf_counter()
            epoch_seed = _epoch_seed(seed, epoch)
            seed_everything(epoch_seed)
            generator = torch.Generator().manual_seed(epoch_seed)
            model.train()
            sums: dict[str, torch.Tensor] = {}
            n_steps = 0
            for images, labels in iterate_batches(train_set, hyper.batch_size, shuffle=True, generator=generator, drop_last=drop_last):
                images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
                with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
                    loss, step_metrics = objective(model, images, labels)
                if not bool(torch.isfinite(loss.detach())):
                    checkpoint = run.checkpoint_path()
                    kept = f"the last good checkpoint {checkpoint} is kept" if checkpoint else "no checkpoint had been written yet"
                    raise TrainingDivergedError(
                        f"training {model_name!r} diverged: the loss became {float(loss.detach())} at epoch {epoch + 1}, step {n_steps + 1}; "
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
                    bar.set_postfix(epoch=epoch + 1, loss=f"{float(loss.detach()):.4f}")
            row: dict[str, Any] = {"epoch": epoch + 1}
            row.update({f"train_{name}": float(total) / n_steps for name, total in sums.items()})
            if epoch + 1 == hyper.epochs or (epoch + 1) % eval_every == 0:
                final_evaluation = evaluate_model(model, train_set, test_set)
                row.update(final_evaluation)
                if primary in row:
                    bar.set_postfix(epoch=epoch + 1, loss=f"{row['train_loss']:.4f}", **{primary: f"{row[primary]:.4f}"})
            row["lr"] = optimizer.param_groups[0]["lr"]
            row["seconds"] = time.perf_counter() - started
            history.append(row)
            # Log first: a crash before the checkpoint leaves a row that resuming truncates, never a gap.
            run.append_log(row)
            run.save_checkpoint(model=model, optimizer=optimizer, scheduler=scheduler, epoch=epoch + 1, history=history)
    finally:
        bar.close()

    if final_evaluation is None:  # resumed a run whose epochs were all done
        final_evaluation = evaluate_model(model, train_set, test_set)
    metrics = {**final_evaluation, "train_loss": history[-1]["train_loss"], "epochs": hyper.epochs}
    model.eval()
    run.save_final(model, metrics)
    return TrainResult(model=model, run_dir=run.path, history=pd.DataFrame(history), metrics=metrics)
