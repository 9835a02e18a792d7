"""What the steps of a study share: where they write, the seed, the device, and what earlier steps made."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

import zoo

__all__ = ["StudyContext", "dataset_labels", "display_pixels", "import_function", "stimulus_pixels"]


def import_function(path: str) -> Any:
    """The function a ``"module:function"`` path names, its module imported on first use (how the study's
    steps and the findings beside them are listed without importing them up front)."""
    module, _, function = path.partition(":")
    return getattr(importlib.import_module(module), function)


def dataset_labels(dataset: Any) -> np.ndarray:
    """The class label of every item of a dataset: its ``labels`` (zoo datasets) or ``targets``
    (torchvision's), else read item by item (-1 for an item without one)."""
    labels = getattr(dataset, "labels", None)
    if labels is None:
        labels = getattr(dataset, "targets", None)
    if labels is None:
        labels = [item[1] if isinstance(item, tuple) and len(item) > 1 else -1 for item in dataset]
    return np.asarray(labels, dtype=np.int64)


def stimulus_pixels(dataset: Any, n: int | None = None) -> np.ndarray:
    """The first ``n`` stimuli of a dataset (all when None), each flattened: shape (n, values), float64."""
    count = len(dataset) if n is None else min(n, len(dataset))
    return np.stack([np.asarray(dataset[i][0], dtype=np.float64).ravel() for i in range(count)])


def display_pixels(stimuli: Any, images: torch.Tensor) -> np.ndarray:
    """Normalised images of shape (n, C, H, W) as display arrays (n, H, W[, 3]) in [0, 1], denormalised by the
    stimuli's ``info`` when it says how."""
    info = getattr(stimuli, "info", None)
    images = images.detach().cpu().float()
    shown = info.denormalize(images) if info is not None and hasattr(info, "denormalize") else images
    shown = np.moveaxis(shown.clamp(0, 1).numpy(), 1, -1)
    return shown[..., 0] if shown.shape[-1] == 1 else shown


@dataclass
class StudyContext:
    """What the steps of a study (``probe analyze``, and the demo, which is one built-in study) share.

    Attributes
    ----------
    out
        The study's output folder: report, tables, recordings cache (and the demo's run folders).
    seed
        Seed for everything the study trains or samples.
    device
        Where models train and record.
    progress
        Show progress bars and one status line per step.
    models
        Models by display name, in eval mode.
    run_dirs
        The run folder of each model that has one, by the same names.
    sources
        Where each model of a study came from: ``source`` (run, arch, pretrained, factory), ``spec``
        (its ``zoo.load_model`` spelling) and ``weights``.
    datasets
        Datasets by name and split, for example ``datasets["digits", "test"]``.
    stimuli
        The stimuli each model was recorded on (the study's data, or the model's own, resized and
        normalised for it).
    data_of
        Per model, its stimuli in words (``"digits (test)"``); models with the same words were recorded
        on the same stimuli and are compared with each other.
    labels
        The class label of each stimulus (-1 where unknown), shared by every recording of a study.
    recordings
        Recordings by model name: rows are the stimuli, one array per layer.
    recorded
        Per model, the layers (and top-k passes) this run recorded.
    from_cache
        Per model, the layers whose recordings (or top-k passes) were read from the cache rather than
        recorded.
    cache
        The study's cache folder, or None (the demo records without one).
    keys
        Per model, (model key, data key): what identifies its weights and its stimuli in the cache.
    results
        Result objects by analysis name (and anything a step hands to a later one).
    tables
        Tidy tables of the results by name; a study writes each to ``results/NAME.csv``.
    timings
        Wall time of each step in seconds.
    """

    out: Path
    seed: int = 0
    device: torch.device = torch.device("cpu")
    progress: bool = True
    models: dict[str, torch.nn.Module] = field(default_factory=dict)
    run_dirs: dict[str, Path] = field(default_factory=dict)
    sources: dict[str, dict[str, Any]] = field(default_factory=dict)
    datasets: dict[tuple[str, str], Any] = field(default_factory=dict)
    stimuli: dict[str, Any] = field(default_factory=dict)
    data_of: dict[str, str] = field(default_factory=dict)
    labels: np.ndarray | None = None
    recordings: dict[str, Any] = field(default_factory=dict)
    recorded: dict[str, list[str]] = field(default_factory=dict)
    from_cache: dict[str, list[str]] = field(default_factory=dict)
    cache: Path | None = None
    keys: dict[str, tuple[str, str]] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    def dataset(self, name: str, split: str = "test", **options: Any) -> Any:
        """The dataset ``name`` and ``split``, loaded once (``zoo.load_dataset(name, split, **options)``)
        and then shared by every step; options only apply to the first load."""
        if (name, split) not in self.datasets:
            self.datasets[name, split] = zoo.load_dataset(name, split=split, **options)
        return self.datasets[name, split]

    def stimulus_groups(self, models: Any = "all") -> dict[str, list[str]]:
        """The recorded models (``"all"``, or those named) grouped by their stimuli: words -> names, in
        the study's order. Models without ``data_of`` form one group, ``""``."""
        groups: dict[str, list[str]] = {}
        for name in self.recordings:
            if models == "all" or name in models:
                groups.setdefault(self.data_of.get(name, ""), []).append(name)
        return groups

    def add_table(self, name: str, frame: pd.DataFrame) -> None:
        """Keep a tidy table of results under ``name`` (a file stem: letters, digits, ``-``)."""
        self.tables[name] = frame.reset_index(drop=True)

