"""``probe demo``: train a small zoo on the embedded data, record it, analyse it, write one report.

The demo is a list of steps. Each step takes the shared ``DemoContext``, may add to it (trained
models, recordings, results) and returns the report sections it contributes. Adding an analysis
to the demo is writing one step function and listing it in ``DEMO_STEPS``.
"""

from __future__ import annotations

import importlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from reports import Report, Section

__all__ = ["DemoContext", "DEMO_STEPS", "run_demo"]


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


# (title, "module:function"). Steps run in this order; a step may use what earlier ones added.
DEMO_STEPS: list[tuple[str, str]] = [
    ("Zoo", "probe._demo_zoo:zoo_step"),
    ("Layers", "probe._demo_layers:layers_step"),
    ("Similarity", "probe._demo_similarity:similarity_step"),
    ("Units", "probe._demo_units:units_step"),
    ("Subspaces", "probe._demo_subspaces:subspaces_step"),
    ("Transfer", "probe._demo_transfer:transfer_step"),
]


def _load_step(target: str) -> Callable[[DemoContext], list[Section]]:
    module_name, function_name = target.split(":")
    return getattr(importlib.import_module(module_name), function_name)


def run_demo(ctx: DemoContext, report_path: Path | None = None) -> Path:
    """Run every demo step and write the report; returns the report's path."""
    report = Report(
        "Neuroscience-style analysis of a small model zoo",
        subtitle=f"Embedded data (scikit-learn's digits and natural image patches), seed {ctx.seed}"
        + (", quick mode" if ctx.quick else ""),
    )
    for title, target in DEMO_STEPS:
        started = time.perf_counter()
        for section in _load_step(target)(ctx):
            report.add(section)
        ctx.timings[title] = time.perf_counter() - started
    return report.write(report_path or ctx.out / "report.html")
