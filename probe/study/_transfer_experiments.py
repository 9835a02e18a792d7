"""Transfer experiments that train zoo models: the MAE mask-ratio sweep and class-split transfer.

These orchestrate ``zoo`` (training) and ``analyses`` (probes); the measures themselves live in
``analyses._transfer``.
"""

from __future__ import annotations

import itertools
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch
from torch.utils.data import TensorDataset
from tqdm.auto import tqdm

import zoo
from analyses import knn_accuracy, linear_probe
from probe.study._context import dataset_labels
from probe.study._pretraining_experiments import labelled_subset

__all__ = ["encode_features", "subset_dataset", "MaskRatioSweep", "mask_ratio_sweep", "ClassSplitTransfer", "class_split_transfer"]

# Metrics of a finished run copied into the sweep's table (those the zoo reports for the model).
_RUN_METRICS = ("recon_mse", "mean_image_mse", "recon_ratio", "knn_accuracy", "test_accuracy")


def subset_dataset(dataset: Any, rows: np.ndarray) -> TensorDataset:
    """The items ``rows`` of ``dataset`` as an in-memory dataset of (image, label) pairs."""
    images, labels = zip(*(dataset[int(i)] for i in rows))
    return TensorDataset(torch.stack(images), torch.as_tensor(labels, dtype=torch.long))


def encode_features(model: torch.nn.Module, dataset: Any, batch_size: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """``model.encode`` of every stimulus of ``dataset``.

    Returns
    -------
    tuple
        Features of shape (n_stimuli, d) (float64, CPU) and labels of shape (n_stimuli,).
    """
    features, labels = zoo.extract_features(model, dataset, batch_size=batch_size)
    return features.detach().cpu().double().numpy(), labels.cpu().numpy()


@dataclass
class MaskRatioSweep:
    """Frozen-encoder accuracy of MAEs pretrained with different mask ratios, one MAE per ratio and seed.

    Attributes
    ----------
    frame
        One row per mask ratio and seed: mask_ratio, seed, probe_accuracy, knn_accuracy, C, the
        training run's final evaluation as run_recon_mse, run_mean_image_mse, run_recon_ratio
        (error on the masked patches at that run's own mask ratio, over the mean image's) and
        run_knn_accuracy, then n_probe_train (images the probe was fit on) and run_dir.
    dataset
        The dataset pretrained on and probed.
    """
    frame: pd.DataFrame
    dataset: str

    def to_frame(self) -> pd.DataFrame:
        """The per-ratio, per-seed table (a copy)."""
        return self.frame.copy()

    def summary(self) -> pd.DataFrame:
        """One row per mask ratio: n_seeds, then the mean and the standard deviation over seeds (ddof 1;
        NaN with one seed) of probe_accuracy, knn_accuracy and, when present, run_recon_ratio."""
        frame = self.frame if "seed" in self.frame else self.frame.assign(seed=0)
        measures = [name for name in ("probe_accuracy", "knn_accuracy", "run_recon_ratio") if name in frame]
        grouped = frame.groupby("mask_ratio", sort=True)
        summary = grouped[measures].agg(["mean", "std"])
        summary.columns = [f"{measure}_{statistic}" for measure, statistic in summary.columns]
        summary.insert(0, "n_seeds", grouped["seed"].nunique())
        return summary.reset_index()

    @property
    def best_ratio(self) -> float:
        """The mask ratio with the highest mean probe accuracy over seeds."""
        summary = self.summary()
        return float(summary.loc[summary["probe_accuracy_mean"].idxmax(), "mask_ratio"])


def _check_reusable(run_dir: Path, model_name: str, expected: dict[str, Any]) -> None:
    """Refuse to reuse a finished run trained with other settings than those asked for now."""

    config = zoo.RunDir.open(run_dir).read_config()
    stored = {
        "model": config["model"].get("name"),
        "dataset": config["dataset"]["name"],
        "dataset options": config["dataset"].get("options", {}),
        "epochs": config["training"]["epochs"],
        "seed": config["training"]["seed"],
    }
    wanted = {"model": model_name, **expected}
    differences = {key: (stored[key], value) for key, value in wanted.items() if stored[key] != value}
    if differences:
        raise ValueError(
            f"the finished run in {str(run_dir)!r} was trained with other settings: {differences} (stored, asked); "
            "pass another out= folder or delete that run"
        )


def _trained_model(model_name: str, run_dir: Path, **train_options: Any) -> torch.nn.Module:
    """Load a finished run (checked against ``train_options``), resume an interrupted one (or restart one killed
    before its first checkpoint), or train a new one."""

    if (run_dir / "model.safetensors").exists():
        epochs = train_options["epochs"] if train_options["epochs"] is not None else zoo.train_defaults(model_name).epochs
        options = json.loads(json.dumps(train_options.get("dataset_options") or {}))
        _check_reusable(run_dir, model_name, {"dataset": train_options["dataset"], "dataset options": options,
                                              "epochs": int(epochs), "seed": train_options["seed"]})
        return zoo.load(run_dir, device=zoo.resolve_device(train_options["device"]))
    # A run killed before its first checkpoint left only its config and manifest: start it again
    # (force deletes exactly the files that manifest lists).
    resume = zoo.RunDir(run_dir).has_checkpoint()
    restart = not resume and (run_dir / "manifest.json").exists()
    return zoo.train(model_name, out=run_dir, resume=resume, force=restart, **train_options).model


def _run_metrics(run_dir: Path) -> dict[str, float]:
    """The final evaluation metrics of a finished run that the sweep tables report."""

    metrics = zoo.RunDir.open(run_dir).read_metrics()
    return {name: float(metrics[name]) for name in _RUN_METRICS if name in metrics}


def mask_ratio_sweep(
    ratios: Sequence[float] = (0.25, 0.5, 0.75, 0.9),
    *,
    dataset: str = "digits",
    epochs: int | None = None,
    out: str | os.PathLike = "runs/mask-ratio",
    seeds: int | Sequence[int] = (0,),
    device: str | torch.device = "auto",
    C: float | None = None,
    knn_k: int = 5,
    probe_per_class: int | None = None,
    progress: bool = True,
    **model_options: Any,
) -> MaskRatioSweep:
    """Pretrain one MAE per mask ratio and seed, then probe its frozen encoder (linear probe and kNN).

    Parameters
    ----------
    ratios
        Mask ratios, each in (0, 1).
    dataset
        Zoo dataset name (must be labelled).
    epochs
        Training epochs per MAE (None: the zoo's default).
    out
        Folder of the run directories (one per ratio and seed, ``mae-ratio-0.75-seed0`` ...);
        finished runs are loaded, interrupted ones resumed.
    seeds
        Seeds of training and of the probe's folds: one MAE per ratio and seed, so that the table
        has error bars (``MaskRatioSweep.summary``).
    device
        Where to train and probe.
    C
        Probe inverse penalty; None: cross-validated.
    knn_k
        Neighbours of the cosine kNN read-out.
    probe_per_class
        Fit the probe and the kNN on this many training images per class (drawn with each seed by
        ``labelled_subset``; None: all), to save time on large datasets. Always scored on the whole
        test split.
    progress
        Progress bars.
    **model_options
        Other MAE options passed to ``zoo.train``.
    """
    ratios = [float(r) for r in ratios]
    if not ratios or any(not 0.0 < r < 1.0 for r in ratios):
        raise ValueError(f"mask ratios must lie strictly between 0 and 1; got {ratios}")
    seeds = [int(seeds)] if isinstance(seeds, (int, np.integer)) else [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be one or more distinct integers; got {seeds}")
    train_set = zoo.load_dataset(dataset, split="train")
    test_set = zoo.load_dataset(dataset, split="test")
    if train_set.info.n_classes in (0, None):
        raise ValueError(f"dataset {dataset!r} is unlabelled; a mask-ratio sweep probes labels, pick a labelled one")
    train_labels = dataset_labels(train_set)
    rows = []
    # seed-major: an interrupted sweep has whole sweeps of the first seeds to show
    for seed, ratio in itertools.product(seeds, ratios):
        run_dir = Path(out) / f"mae-ratio-{ratio:g}-seed{seed}"
        model = _trained_model("mae", run_dir, dataset=dataset, epochs=epochs, seed=seed, device=device,
                               progress=progress, mask_ratio=ratio, **model_options)
        fit_rows = labelled_subset(train_labels, probe_per_class, seed)
        # only the images the probe is fit on are encoded
        fitted = train_set if probe_per_class is None else subset_dataset(train_set, fit_rows)
        X_train, y_train = encode_features(model, fitted)
        X_test, y_test = encode_features(model, test_set)
        probe = linear_probe(X_train, y_train, X_test, y_test, C=C, random_state=seed, device=device,
                             model=f"mae-{ratio:g}")
        rows.append(dict(mask_ratio=ratio, seed=seed, probe_accuracy=probe.accuracy,
                         knn_accuracy=knn_accuracy(X_train, y_train, X_test, y_test, k=knn_k, device=device),
                         C=probe.C, **{f"run_{name}": value for name, value in _run_metrics(run_dir).items()},
                         n_probe_train=len(fit_rows), run_dir=str(run_dir)))
    frame = pd.DataFrame(rows).sort_values(["mask_ratio", "seed"], kind="stable").reset_index(drop=True)
    return MaskRatioSweep(frame=frame, dataset=dataset)


_DEFAULT_CLASS_SPLIT_OUT = "runs/class-split"


@dataclass
class ClassSplitTransfer:
    """Frozen features of a model pretrained on some classes, probed on other, unseen classes.

    Attributes
    ----------
    frame
        One row per representation -- ``"pretrained"`` (the trained encoder), ``"random weights"``
        (the same architecture at its initial, untrained weights) and ``"raw pixels"`` -- with
        probe_accuracy (linear probe), knn_accuracy, C (the probe's inverse penalty), n_features.
    model_name, dataset
        What was pretrained, on which dataset.
    pretrain_classes, probe_classes
        Labels used for pretraining and for probing (disjoint).
    run_dir
        The pretraining run directory (its config records ``dataset.options.classes``).
    pretrain_metrics
        The run's final evaluation on the pretrain classes' test split (see ``zoo.evaluate_model``).
    chance
        Accuracy of guessing among the probe classes, 1 / len(probe_classes).
    """
    frame: pd.DataFrame
    model_name: str
    dataset: str
    pretrain_classes: tuple[int, ...]
    probe_classes: tuple[int, ...]
    run_dir: Path
    pretrain_metrics: dict[str, float]

    @property
    def chance(self) -> float:
        return 1.0 / len(self.probe_classes)

    def to_frame(self) -> pd.DataFrame:
        """The per-representation table (a copy), with model, dataset and chance columns."""
        frame = self.frame.copy()
        frame.insert(0, "model", self.model_name)
        frame["chance"] = self.chance
        return frame


def _checked_class_split(pretrain_classes: Sequence[int], probe_classes: Sequence[int]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    pretrain, probe = tuple(sorted({int(c) for c in pretrain_classes})), tuple(sorted({int(c) for c in probe_classes}))
    if not pretrain or len(probe) < 2:
        raise ValueError(f"need at least one pretrain class and two probe classes; got pretrain {pretrain}, probe {probe}")
    shared = sorted(set(pretrain) & set(probe))
    if shared:
        raise ValueError(f"classes {shared} are in both pretrain_classes and probe_classes; the split must be disjoint "
                         "so that the probe measures transfer to unseen classes")
    return pretrain, probe


def _class_split_run_name(model_name: str, dataset: str, pretrain: tuple[int, ...], seed: int) -> str:
    """The folder name of a class-split pretraining run: ``<model>-<dataset>-seed<seed>-classes-0-1-2-3-4``."""
    return f"{zoo.default_run_dir(model_name, dataset, seed).name}-classes-{'-'.join(map(str, pretrain))}"


def _class_split_run_dir(out: str | os.PathLike | None, model_name: str, dataset: str, pretrain: tuple[int, ...], seed: int) -> Path:
    if out is not None:
        return Path(out)
    return Path(_DEFAULT_CLASS_SPLIT_OUT) / _class_split_run_name(model_name, dataset, pretrain, seed)


def class_split_transfer(
    model_name: str,
    pretrain_classes: Sequence[int] = (0, 1, 2, 3, 4),
    probe_classes: Sequence[int] = (5, 6, 7, 8, 9),
    *,
    dataset: str = "digits",
    epochs: int | None = None,
    seed: int = 0,
    out: str | os.PathLike | None = None,
    device: str | torch.device = "auto",
    C: float | None = None,
    knn_k: int = 5,
    progress: bool = True,
    **settings: Any,
) -> ClassSplitTransfer:
    """Pretrain a zoo model on some classes, freeze it, and probe its features on other classes.

    The probe (``analyses.linear_probe``, then ``analyses.knn_accuracy``) is fit on the probe
    classes' train split and scored on their test split. Two references are probed the same way:
    raw pixels, and the same architecture at its initial weights (the exact weights the
    pretraining started from, as both are drawn from ``seed``).

    Parameters
    ----------
    model_name
        A name from ``zoo.list_models()``; supervised models keep the full dataset's head.
    pretrain_classes, probe_classes
        Disjoint labels (at least two probe classes).
    dataset
        Zoo dataset name (must be labelled).
    epochs
        Pretraining epochs (None: the zoo's default for the model).
    seed
        Seed of the initial weights, training and the probe's folds.
    out
        The pretraining run directory (default ``runs/class-split/<model>-<dataset>-seed<seed>-classes-0-1-2-3-4``);
        a finished run trained with the same settings is loaded, an interrupted one resumed.
    device
        Where to train and probe (``"auto"``: CUDA when present).
    C
        Probe inverse penalty; None: cross-validated on the training split.
    knn_k
        Neighbours of the cosine kNN read-out.
    progress
        Progress bars.
    **settings
        Training settings and model options passed to ``zoo.train`` (e.g. ``lr``, ``width``).

    Returns
    -------
    ClassSplitTransfer

    Raises
    ------
    ValueError
        Overlapping or too few classes, an unlabelled dataset, or a finished run in ``out``
        trained with other settings.
    """
    pretrain, probe = _checked_class_split(pretrain_classes, probe_classes)
    probe_train = zoo.load_dataset(dataset, split="train", classes=list(probe))
    probe_test = zoo.load_dataset(dataset, split="test", classes=list(probe))
    run_dir = _class_split_run_dir(out, model_name, dataset, pretrain, seed)
    pretrained = _trained_model(model_name, run_dir, dataset=dataset, epochs=epochs, seed=seed, device=device,
                                progress=progress, dataset_options={"classes": list(pretrain)}, **settings)
    pretrained.eval()
    architecture = {key: value for key, value in pretrained.config.items() if key != "name"}
    zoo.seed_everything(seed)  # as zoo.train does before building the model: the run's initial weights
    untrained = zoo.create_model(model_name, **architecture).to(next(pretrained.parameters()).device).eval()

    def pixels(dataset_split) -> tuple[np.ndarray, np.ndarray]:
        images, labels = zip(*(batch for batch in zoo.iterate_batches(dataset_split, 1024)))
        return torch.cat(images).flatten(1).double().cpu().numpy(), torch.cat(labels).cpu().numpy()

    representations = {
        "pretrained": lambda split: encode_features(pretrained, split),
        "random weights": lambda split: encode_features(untrained, split),
        "raw pixels": pixels,
    }
    rows = []
    for name, features_of in tqdm(representations.items(), desc="class-split probes", disable=not progress, leave=False):
        X_train, y_train = features_of(probe_train)
        X_test, y_test = features_of(probe_test)
        result = linear_probe(X_train, y_train, X_test, y_test, C=C, random_state=seed, device=device,
                              model=f"{model_name} ({name})")
        rows.append(dict(representation=name, probe_accuracy=result.accuracy,
                         knn_accuracy=knn_accuracy(X_train, y_train, X_test, y_test, k=knn_k, device=device),
                         C=result.C, n_features=X_train.shape[1]))
    return ClassSplitTransfer(frame=pd.DataFrame(rows), model_name=model_name, dataset=dataset, pretrain_classes=pretrain,
                              probe_classes=probe, run_dir=run_dir, pretrain_metrics=_run_metrics(run_dir))
