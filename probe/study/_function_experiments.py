"""A small MLP trained on a 2-D dataset, and the input plane as each of its layers maps it (``function_views``)."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from analyses import FunctionViews, function_views
from probe import record
from probe.study._context import StudyContext
from reports import Section, function_views_section
from zoo import unknown_name_error

__all__ = ["TWO_D_DATASETS", "two_d_dataset", "FunctionExperiment", "function_views_experiment",
           "function_views_analysis"]

TWO_D_DATASETS = ("moons", "spiral")


def two_d_dataset(name: str, n: int = 400, noise: float = 0.1, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Points of a 2-D two-class dataset, standardised: ``"moons"`` (scikit-learn's two half circles) or
    ``"spiral"`` (two interleaved arms, one and a half turns each). Returns (X of shape (n, 2), y of shape (n,))."""
    rng = np.random.default_rng(seed)
    if name == "moons":
        from sklearn.datasets import make_moons

        X, y = make_moons(n, noise=noise, random_state=seed)
    elif name == "spiral":
        y = np.arange(n) % 2
        t = rng.uniform(0.25, 1.0, n) * 3 * np.pi
        X = np.stack([t * np.cos(t + np.pi * y), t * np.sin(t + np.pi * y)], axis=1) / (3 * np.pi)
        X += rng.normal(scale=noise / 3, size=X.shape)
    else:
        raise unknown_name_error("2-D dataset", name, TWO_D_DATASETS)
    X = (X - X.mean(0)) / X.std(0)
    return X.astype(np.float32), np.asarray(y, dtype=np.int64)


@dataclass
class FunctionExperiment:
    """What ``function_views_experiment`` made.

    Attributes
    ----------
    views
        The input plane and the data as each layer maps them.
    dataset, widths, accuracy
        The 2-D dataset, the hidden widths, and the trained network's accuracy on its points.
    """

    views: FunctionViews
    dataset: str
    widths: tuple[int, ...]
    accuracy: float

    def to_frame(self) -> pd.DataFrame:
        """The views' table with the dataset and the accuracy."""
        return self.views.to_frame().assign(dataset=self.dataset, accuracy=self.accuracy)


def function_views_experiment(dataset: str = "moons", widths: Sequence[int] = (8, 8, 2), *, n: int = 400,
                              epochs: int = 300, lr: float = 0.03, grid_lines: int = 21, seed: int = 0,
                              device: str | torch.device = "cpu") -> FunctionExperiment:
    """Train a tanh MLP (hidden ``widths``, then a linear read-out of the two classes) on a 2-D dataset with
    full-batch Adam, and draw the input plane as each layer maps it.

    The last hidden width of 2 (the default) lets its view be exact: there the classes should be
    linearly separable, which is what the read-out needs.
    """
    X, y = two_d_dataset(dataset, n, seed=seed)
    torch.manual_seed(seed)
    modules, width_in = [], 2
    for i, width in enumerate(widths):
        modules += [(f"linear{i + 1}", nn.Linear(width_in, width)), (f"tanh{i + 1}", nn.Tanh())]
        width_in = width
    modules.append(("readout", nn.Linear(width_in, 2)))
    network = nn.Sequential(OrderedDict(modules)).to(device)
    inputs, targets = torch.from_numpy(X).to(device), torch.from_numpy(y).to(device)
    optimizer = torch.optim.Adam(network.parameters(), lr=lr)
    for _ in range(epochs):
        optimizer.zero_grad()
        nn.functional.cross_entropy(network(inputs), targets).backward()
        optimizer.step()
    network.eval()
    with torch.no_grad():
        accuracy = float((network(inputs).argmax(1) == targets).float().mean())
    span = np.abs(X).max() * 1.1
    axis = np.linspace(-span, span, grid_lines, dtype=np.float32)
    grid = np.stack(np.meshgrid(axis, axis), axis=-1).reshape(-1, 2)  # row-major: rows are horizontal lines
    layers = [name for name, _ in modules if name.startswith("tanh")] + ["readout"]
    on_grid = record(network, torch.from_numpy(grid), layers, device=device, progress=False)
    on_points = record(network, inputs.cpu(), layers, device=device, progress=False)
    views = function_views({"input": grid, **{layer: np.asarray(on_grid[layer]) for layer in layers}},
                           {"input": X, **{layer: np.asarray(on_points[layer]) for layer in layers}},
                           (grid_lines, grid_lines), y)
    return FunctionExperiment(views=views, dataset=dataset, widths=tuple(widths), accuracy=accuracy)


def function_views_analysis(ctx: StudyContext, *, dataset: str = "moons", widths: Sequence[int] = (8, 8, 2),
                            epochs: int = 300) -> list[Section]:
    """The study analysis ``function_views``: ``function_views_experiment`` with the study's seed; the table
    ``function-views`` holds one row per layer."""
    experiment = function_views_experiment(dataset, tuple(widths), epochs=epochs, seed=ctx.seed)
    ctx.results["function_views"] = experiment
    ctx.add_table("function-views", experiment.to_frame())
    return [function_views_section(experiment)]
