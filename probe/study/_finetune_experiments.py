"""Fine-tuning against linear read-outs: a frozen encoder's linear probe, fine-tuning its last block, and
fine-tuning all of it, with few labels of classes the encoder never saw (the class-split transfer)."""

from __future__ import annotations

import itertools
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from tqdm.auto import tqdm

import zoo
from analyses import linear_probe
from probe.study._pretraining_experiments import labelled_subset
from probe.study._transfer_experiments import (
    _DEFAULT_CLASS_SPLIT_OUT,
    _checked_class_split,
    _class_split_run_name,
    _trained_model,
    encode_features,
    subset_dataset,
)

__all__ = ["ADAPTATIONS", "FinetuneComparison", "finetune_comparison"]

# How the pretrained encoder is adapted to the new classes, from the least to the most trained.
ADAPTATIONS = ("linear probe", "last block", "full")


@dataclass
class FinetuneComparison:
    """Accuracy on unseen classes of three ways to adapt pretrained encoders, by labels per class.

    Attributes
    ----------
    frame
        One row per model, adaptation, labels per class and seed: model, family, adaptation (one of
        ``ADAPTATIONS``), labels_per_class, seed, n_train, accuracy (on the probe classes' whole test
        split) and trained (the encoder's modules that were trained: ``"none"``, ``"all"`` or names).
    dataset
        The dataset pretrained on (``pretrain_classes``) and adapted to (``probe_classes``).
    pretrain_classes, probe_classes
        Disjoint labels.
    pretrain_metrics
        Model name -> its pretraining run's final evaluation (``zoo.evaluate_model``).
    """

    frame: pd.DataFrame
    dataset: str
    pretrain_classes: tuple[int, ...]
    probe_classes: tuple[int, ...]
    pretrain_metrics: dict[str, dict[str, float]]

    @property
    def chance(self) -> float:
        """Accuracy of guessing among the probe classes."""
        return 1.0 / len(self.probe_classes)

    def to_frame(self) -> pd.DataFrame:
        """The per-run table (a copy)."""
        return self.frame.copy()

    def summary(self) -> pd.DataFrame:
        """One row per model, adaptation and labels per class: n_seeds, accuracy_mean and accuracy_std
        (over seeds, ddof 1), in the models' and adaptations' order."""
        grouped = self.frame.groupby(["model", "family", "adaptation", "labels_per_class"], sort=False)["accuracy"]
        summary = grouped.agg(n_seeds="count", accuracy_mean="mean", accuracy_std="std").reset_index()
        order = {name: i for i, name in enumerate(ADAPTATIONS)}
        models = {name: i for i, name in enumerate(dict.fromkeys(self.frame["model"]))}
        keys = summary["model"].map(models) * 100 + summary["adaptation"].map(order)
        return summary.assign(_key=keys).sort_values(["_key", "labels_per_class"], kind="stable").drop(columns="_key").reset_index(drop=True)

    def gains(self) -> pd.DataFrame:
        """Mean accuracy of each fine-tuning minus the linear probe's, per model and labels per class
        (the columns ``last block`` and ``full``): positive where fine-tuning pays."""
        means = self.summary().pivot_table(index=["model", "labels_per_class"], columns="adaptation",
                                           values="accuracy_mean", sort=False)
        gains = pd.DataFrame(index=means.index)
        for adaptation in ADAPTATIONS[1:]:
            if adaptation in means and "linear probe" in means:
                gains[adaptation] = means[adaptation] - means["linear probe"]
        return gains.reset_index()


def _trained_names(modules: list[str]) -> str:
    if not modules:
        return "none"
    return "all" if modules == [""] else ", ".join(modules)


def finetune_comparison(
    models: Sequence[str],
    pretrain_classes: Sequence[int] = (0, 1, 2, 3, 4),
    probe_classes: Sequence[int] = (5, 6, 7, 8, 9),
    *,
    dataset: str = "digits",
    labels_per_class: Sequence[int] = (1, 10, 100),
    seeds: Sequence[int] = (0, 1, 2),
    pretrain_epochs: int | None = None,
    pretrain_seed: int = 0,
    steps: int = 200,
    lr: float = 1e-2,
    encoder_lr: float | None = None,
    batch_size: int = 64,
    out: str | os.PathLike | None = None,
    device: str | torch.device = "auto",
    model_settings: Mapping[str, Mapping[str, Any]] | None = None,
    progress: bool = True,
) -> FinetuneComparison:
    """Pretrain each model on some classes, then adapt it to unseen classes three ways.

    For every model, labels budget and seed, the same labelled images of the probe classes (drawn by
    ``labelled_subset``) train: a linear probe on the frozen encoder (``analyses.linear_probe``,
    C cross-validated; C = 1 below two labels per class), the encoder's last block with a new linear
    head (``zoo.last_block``, ``zoo.finetune(trainable="last_block")``), and the whole encoder with a
    new head. All are scored on the probe classes' whole test split.

    Parameters
    ----------
    models
        Names from ``zoo.list_models()`` with an image encoder.
    pretrain_classes, probe_classes
        Disjoint labels of ``dataset``.
    dataset
        A labelled zoo dataset.
    labels_per_class
        Budgets of labelled images per probe class.
    seeds
        Seeds of the draws of labelled images and of the heads; the pretrained encoder is one.
    pretrain_epochs, pretrain_seed
        Pretraining of each model (None: the zoo's default epochs). Runs are shared with
        ``class_split_transfer``: ``out/<model>-<dataset>-seed<seed>-classes-0-1-2-3-4``; finished
        runs trained with the same settings are loaded, interrupted ones resumed.
    steps
        Optimiser steps of each fine-tuning, whatever the budget.
    lr, encoder_lr, batch_size
        Fine-tuning settings (``zoo.finetune``, AdamW; the encoder's rate defaults to ``lr / 10``). The
        new head standardises the features first (``normalize_features``) and starts at zero, so that
        the same rate suits every encoder; with 200 steps at 1e-2 the heads reach a training loss
        near 0 on 1 and 10 labels per class.
    out
        Folder of the pretraining runs (default ``runs/class-split``).
    device
        Where to train (``"auto"``: CUDA when present).
    model_settings
        Model name -> extra ``zoo.train`` settings for its pretraining (e.g. ``{"mae": {"lr": 1e-3}}``).
    progress
        Progress bars.

    Returns
    -------
    FinetuneComparison
    """
    pretrain, probe = _checked_class_split(pretrain_classes, probe_classes)
    budgets = [int(b) for b in labels_per_class]
    if not budgets or any(b < 1 for b in budgets):
        raise ValueError(f"labels_per_class must hold positive integers; got {list(labels_per_class)}")
    if not seeds:
        raise ValueError("seeds must hold at least one seed")
    unknown = set(model_settings or {}) - set(models)
    if unknown:
        raise ValueError(f"model_settings names models that are not compared: {sorted(unknown)}")
    probe_train = zoo.load_dataset(dataset, split="train", classes=list(probe))
    probe_test = zoo.load_dataset(dataset, split="test", classes=list(probe))
    base = Path(out) if out is not None else Path(_DEFAULT_CLASS_SPLIT_OUT)
    rows, metrics = [], {}
    for model_name in models:
        run_dir = base / _class_split_run_name(model_name, dataset, pretrain, pretrain_seed)
        encoder = _trained_model(model_name, run_dir, dataset=dataset, epochs=pretrain_epochs, seed=pretrain_seed,
                                 device=device, progress=progress, dataset_options={"classes": list(pretrain)},
                                 **dict((model_settings or {}).get(model_name, {})))
        encoder.eval()
        metrics[model_name] = zoo.RunDir.open(run_dir).read_metrics()
        X_pool, y_pool = encode_features(encoder, probe_train)
        X_test, y_test = encode_features(encoder, probe_test)
        jobs = list(itertools.product(budgets, seeds))
        for budget, seed in tqdm(jobs, desc=f"adapting {model_name}", disable=not progress, leave=False):
            chosen = labelled_subset(y_pool, budget, seed)
            labelled = subset_dataset(probe_train, chosen)
            common = dict(model=model_name, family=encoder.family, labels_per_class=budget, seed=seed,
                          n_train=len(chosen))
            probe_result = linear_probe(X_pool[chosen], y_pool[chosen], X_test, y_test, C=None, random_state=seed, device=device)
            rows.append(dict(common, adaptation="linear probe", accuracy=probe_result.accuracy, trained="none"))
            for adaptation, trainable in (("last block", "last_block"), ("full", "all")):
                tuned = zoo.finetune(encoder, labelled, probe_test, trainable=trainable, normalize_features=True,
                                     steps=steps, lr=lr,
                                     encoder_lr=encoder_lr, batch_size=min(batch_size, len(chosen)), device=device,
                                     seed=seed, eval_every=10**9, progress=False)
                rows.append(dict(common, adaptation=adaptation, accuracy=tuned.accuracy,
                                 trained=_trained_names(tuned.trained_modules)))
    return FinetuneComparison(frame=pd.DataFrame(rows), dataset=dataset, pretrain_classes=pretrain,
                              probe_classes=probe, pretrain_metrics=metrics)
