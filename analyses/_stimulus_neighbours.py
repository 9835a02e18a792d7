"""Nearest stimuli in a layer's space: what "similar" means to a layer, one query at a time.

For a few query stimuli, the ``k`` other stimuli whose responses are most alike (cosine similarity of the
recorded response vectors, or negative Euclidean distance). Read across layers, the neighbours of the same
query show how a network's notion of similarity moves from pixels (same brightness, same position) to
categories; ``label_agreement`` puts a number on it where the stimuli are labelled.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd

__all__ = ["StimulusNeighbours", "nearest_stimuli", "pick_queries", "NEIGHBOUR_METRICS"]

NEIGHBOUR_METRICS = ("cosine", "euclidean")


@dataclass
class StimulusNeighbours:
    """The nearest stimuli of some query stimuli in one layer.

    Attributes
    ----------
    model, layer
        Where the responses come from.
    metric
        ``"cosine"`` (similarity, larger is nearer) or ``"euclidean"`` (scores are minus the distance).
    queries
        Stimulus indices of the queries, shape (n_queries,).
    neighbours
        Stimulus indices of each query's neighbours, nearest first, shape (n_queries, k); the query itself
        is never among them.
    scores
        Their similarities, shape (n_queries, k).
    labels
        The class of every stimulus (shape (n_stimuli,)), or None.
    """

    model: str
    layer: str
    metric: str
    queries: np.ndarray
    neighbours: np.ndarray
    scores: np.ndarray
    labels: np.ndarray | None = field(default=None, repr=False)

    def label_agreement(self) -> float:
        """The share of neighbours with their query's label (NaN without labels)."""
        if self.labels is None:
            return float("nan")
        return float(np.mean(self.labels[self.neighbours] == self.labels[self.queries][:, None]))

    def to_frame(self) -> pd.DataFrame:
        """One row per (query, rank): model, layer, query, rank, neighbour, score, and both labels if known."""
        n_queries, k = self.neighbours.shape
        frame = pd.DataFrame({
            "model": self.model, "layer": self.layer, "metric": self.metric,
            "query": np.repeat(self.queries, k), "rank": np.tile(np.arange(1, k + 1), n_queries),
            "neighbour": self.neighbours.ravel(), "score": self.scores.ravel(),
        })
        if self.labels is not None:
            frame["query_label"] = self.labels[frame["query"]]
            frame["neighbour_label"] = self.labels[frame["neighbour"]]
        return frame


def pick_queries(labels: np.ndarray | None, n_stimuli: int, n_queries: int, seed: int = 0) -> np.ndarray:
    """Query stimuli drawn with ``seed``: one per class in turn (classes in order) while labels exist, else
    uniformly; sorted by class, then index."""
    if n_queries < 1 or n_queries > n_stimuli:
        raise ValueError(f"n_queries must be between 1 and the number of stimuli ({n_stimuli}), got {n_queries}")
    rng = np.random.default_rng(seed)
    if labels is None or np.all(np.asarray(labels) < 0):
        return np.sort(rng.choice(n_stimuli, n_queries, replace=False))
    labels = np.asarray(labels)
    pools = {c: list(rng.permutation(np.flatnonzero(labels == c))) for c in np.unique(labels[labels >= 0])}
    chosen: list[int] = []
    while len(chosen) < n_queries and any(pools.values()):
        for pool in pools.values():
            if pool and len(chosen) < n_queries:
                chosen.append(int(pool.pop()))
    return np.asarray(sorted(chosen, key=lambda i: (labels[i], i)), dtype=np.int64)


def _scores(features: np.ndarray, rows: np.ndarray, metric: str) -> np.ndarray:
    if metric == "cosine":
        norms = np.linalg.norm(features, axis=1, keepdims=True)
        unit = np.divide(features, norms, out=np.zeros_like(features), where=norms > 0)  # a zero response: cosine 0
        return unit[rows] @ unit.T
    squared = (features[rows] ** 2).sum(1)[:, None] + (features ** 2).sum(1)[None, :] - 2 * features[rows] @ features.T
    return -np.sqrt(np.maximum(squared, 0.0))


def nearest_stimuli(features: Any, queries: Sequence[int], k: int = 6, *, metric: str = "cosine",
                    labels: Any = None, model: str = "", layer: str = "") -> StimulusNeighbours:
    """The ``k`` stimuli nearest to each query stimulus in a layer's response space.

    Parameters
    ----------
    features
        Responses, shape (n_stimuli, n_units) (a recorded layer).
    queries
        Indices of the query stimuli.
    k
        Neighbours per query (the query itself excluded; ties broken by the smaller index).
    metric
        ``"cosine"`` or ``"euclidean"``.
    labels
        Class of every stimulus, shape (n_stimuli,), for ``label_agreement``; optional.
    model, layer
        Names kept in the result.

    Returns
    -------
    StimulusNeighbours
    """
    if metric not in NEIGHBOUR_METRICS:
        from zoo import unknown_name_error

        raise unknown_name_error("neighbour metric", metric, NEIGHBOUR_METRICS)
    X = np.asarray(features, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(f"features must have shape (n_stimuli, n_units), got {X.shape}; flatten with .reshape(n, -1)")
    if not np.all(np.isfinite(X)):
        raise ValueError("features contain NaN or infinite values; remove those stimuli or units first")
    rows = np.asarray(queries, dtype=np.int64)
    if rows.ndim != 1 or len(rows) == 0 or rows.min() < 0 or rows.max() >= len(X):
        raise ValueError(f"queries must be stimulus indices in 0..{len(X) - 1}, got {list(rows)[:10]}")
    if not 1 <= k < len(X):
        raise ValueError(f"k must be between 1 and n_stimuli - 1 = {len(X) - 1}, got {k}")
    scores = _scores(X, rows, metric)
    scores[np.arange(len(rows)), rows] = -np.inf  # never a query's own neighbour
    order = np.lexsort((np.broadcast_to(np.arange(len(X)), scores.shape), -scores), axis=1)[:, :k]
    label_array = None if labels is None else np.asarray(labels)
    if label_array is not None and label_array.shape != (len(X),):
        raise ValueError(f"labels must have shape ({len(X)},), got {label_array.shape}")
    return StimulusNeighbours(model=model, layer=layer, metric=metric, queries=rows, neighbours=order,
                              scores=np.take_along_axis(scores, order, axis=1), labels=label_array)
