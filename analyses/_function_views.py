"""How each layer of a network bends a 2-D input plane: "two ways to visualize a function".

A network on 2-D inputs can be drawn two ways: its decision over the input plane, or the plane as each
layer maps it. ``function_views`` takes a layer's responses to a regular grid over the input plane and to
the data points, and gives both as 2-D coordinates: the layer's own two units when it has two, its first
two principal components (fitted on the data points' responses) when it is wider, and the unit against
zero when it has one. Drawn side by side from input to output, the grid's lines show the plane being
stretched, folded and, at the last hidden layer, untangled so that a line separates the classes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import numpy as np
import pandas as pd

__all__ = ["FunctionViews", "function_views"]


@dataclass
class FunctionViews:
    """The input plane and the data as every layer maps them, in 2-D.

    Attributes
    ----------
    layers
        Layer names, input to output.
    grid
        Per layer, the grid's points in 2-D, shape (n_rows, n_columns, 2): row ``i`` is the i-th horizontal
        line of the input grid, column ``j`` the j-th vertical one.
    points
        Per layer, the data points in 2-D, shape (n_points, 2).
    labels
        The class of each data point, shape (n_points,).
    n_units
        Per layer, its width.
    explained_variance
        Per layer, the share of the data points' variance in the 2-D view (1 for layers of width <= 2).
    """

    layers: list[str]
    grid: dict[str, np.ndarray] = field(repr=False)
    points: dict[str, np.ndarray] = field(repr=False)
    labels: np.ndarray = field(repr=False)
    n_units: dict[str, int] = field(default_factory=dict)
    explained_variance: dict[str, float] = field(default_factory=dict)

    def to_frame(self) -> pd.DataFrame:
        """One row per layer: layer, n_units, view ("units" or "PCA"), explained_variance."""
        return pd.DataFrame([{"layer": layer, "n_units": self.n_units[layer],
                              "view": "units" if self.n_units[layer] <= 2 else "PCA",
                              "explained_variance": self.explained_variance[layer]} for layer in self.layers])


def _plane(points: np.ndarray, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """The 2-D view of a layer: its units (padded with zeros to 2), or the data's first two principal axes."""
    width = points.shape[1]
    if width <= 2:
        pad = lambda a: np.pad(a, ((0, 0), (0, 2 - width)))
        return pad(points), pad(grid), 1.0
    mean = points.mean(0)
    _, singular, axes = np.linalg.svd(points - mean, full_matrices=False)
    variance = singular**2
    explained = float(variance[:2].sum() / variance.sum()) if variance.sum() > 0 else 1.0
    return (points - mean) @ axes[:2].T, (grid - mean) @ axes[:2].T, explained


def function_views(grid_responses: Mapping[str, np.ndarray], point_responses: Mapping[str, np.ndarray],
                   grid_shape: tuple[int, int], labels: np.ndarray) -> FunctionViews:
    """The grid and the data points as each layer maps them, in 2-D.

    Parameters
    ----------
    grid_responses
        Per layer (input to output, the input plane itself included if wanted), its responses to the grid
        points, shape (n_rows * n_columns, n_units), the grid in row-major order.
    point_responses
        Per layer, its responses to the data points, shape (n_points, n_units).
    grid_shape
        (n_rows, n_columns) of the grid.
    labels
        The class of each data point.

    Returns
    -------
    FunctionViews
    """
    if list(grid_responses) != list(point_responses):
        raise ValueError("grid_responses and point_responses must name the same layers in the same order")
    rows, columns = grid_shape
    labels = np.asarray(labels)
    views = FunctionViews(layers=list(grid_responses), grid={}, points={}, labels=labels)
    for layer in views.layers:
        grid = np.asarray(grid_responses[layer], dtype=np.float64).reshape(rows * columns, -1)
        points = np.asarray(point_responses[layer], dtype=np.float64)
        if points.ndim != 2 or points.shape[0] != len(labels) or points.shape[1] != grid.shape[1]:
            raise ValueError(f"layer {layer!r}: point responses of shape {points.shape} do not match {len(labels)} "
                             f"labels and the grid's {grid.shape[1]} units")
        if not (np.isfinite(points).all() and np.isfinite(grid).all()):
            raise ValueError(f"layer {layer!r} has NaN or infinite responses")
        point_view, grid_view, explained = _plane(points, grid)
        views.points[layer], views.grid[layer] = point_view, grid_view.reshape(rows, columns, 2)
        views.n_units[layer], views.explained_variance[layer] = points.shape[1], explained
    return views
