"""What the steps of a study share: where they write, the seed, the device, and what earlier steps made."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

import zoo

__all__ = ["DemoContext"]


@dataclass
class DemoContext:
    """What the demo's steps share.

    Attributes
    ----------
    out
        The demo's output folder (``runs/demo`` by default): run directories, figures, report.
    quick
        True for ``probe demo --quick``: every step must then finish in a few seconds.
    seed
        Seed for everything the demo trains or samples.
    device
        Where models train and record.
    progress
        Show progress bars for long steps.
    models
        Trained zoo models by run name (for example ``"cnn"``, ``"ae-linear"``), in eval mode.
    run_dirs
        The run directory of each trained model, by the same names.
    datasets
        Datasets by name and split, for example ``datasets["digits", "test"]``.
    recordings
        Recordings by run name, once the recording step has run.
    results
        Anything else a step wants to hand to a later one, by key.
    timings
        Wall time of each step in seconds.
    """

    out: Path
    quick: bool = False
    seed: int = 0
    device: torch.device = torch.device("cpu")
    progress: bool = True
    models: dict[str, torch.nn.Module] = field(default_factory=dict)
    run_dirs: dict[str, Path] = field(default_factory=dict)
    datasets: dict[tuple[str, str], Any] = field(default_factory=dict)
    recordings: dict[str, Any] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    def dataset(self, name: str, split: str = "test", **options: Any) -> Any:
        """The dataset ``name`` and ``split``, loaded once (``zoo.load_dataset(name, split, **options)``)
        and then shared by every step; options only apply to the first load."""
        if (name, split) not in self.datasets:
            self.datasets[name, split] = zoo.load_dataset(name, split=split, **options)
        return self.datasets[name, split]
