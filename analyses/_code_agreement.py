"""Discrete codes of a representation: k-means codes of a layer (or the pixels) against the classes, and the use
of a learned codebook (a VQ-VAE's).

k-means turns a layer into an encoder to one of k codes (see ``analyses.KMeansCoder``). How well those codes
match the classes is read three ways: the adjusted Rand index (pairs of stimuli put together or apart alike by
codes and classes, 0 for chance, 1 for the same partition), the normalised mutual information, and the purity
(the share of stimuli whose code's most common class is their own class). How much of the layer the codes
describe is the inertia ratio: the sum of squared distances to the centroids over the total sum of squares
around the mean, the share of variance the k centroids leave unexplained.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from analyses._kmeans import KMeansCoder, _as_data_matrix

__all__ = ["CodebookUsage", "LayerCodes", "code_purity", "codebook_usage", "kmeans_codes", "majority_classes"]


@dataclass
class LayerCodes:
    """The k-means codes of one layer (or of the pixels) and how they match the classes.

    Attributes
    ----------
    model, layer
        Where the responses came from (``model`` is ``""`` for the pixels).
    k
        Number of codes.
    codes
        The code of each stimulus, array of shape (n_stimuli,).
    centroids
        The centroid of each code, array of shape (k, n_units): the decoder's table.
    inertia
        Sum of squared distances of the stimuli to their centroids.
    inertia_ratio
        ``inertia`` over the total sum of squares around the mean: the share of variance the centroids leave
        unexplained (NaN when the responses do not vary).
    code_sizes
        Stimuli per code, array of shape (k,).
    majority
        The most common class of each code, array of shape (k,) (-1 for a code without labelled stimuli, and
        for every code when no labels were given).
    adjusted_rand, normalized_mutual_info, purity
        Agreement of the codes with the classes over the labelled stimuli; NaN without labels.
    n_labelled
        Stimuli with a label (>= 0) that the agreement is computed on.
    """

    model: str
    layer: str
    k: int
    codes: np.ndarray = field(repr=False)
    centroids: np.ndarray = field(repr=False)
    inertia: float
    inertia_ratio: float
    code_sizes: np.ndarray = field(repr=False)
    majority: np.ndarray = field(repr=False)
    adjusted_rand: float = float("nan")
    normalized_mutual_info: float = float("nan")
    purity: float = float("nan")
    n_labelled: int = 0

    def to_frame(self) -> pd.DataFrame:
        """One row: model, layer, k, n_stimuli, n_units, inertia, inertia_ratio, adjusted_rand,
        normalized_mutual_info, purity, n_labelled, used_codes, largest_code."""
        return pd.DataFrame([{
            "model": self.model, "layer": self.layer, "k": self.k, "n_stimuli": len(self.codes),
            "n_units": self.centroids.shape[1], "inertia": self.inertia, "inertia_ratio": self.inertia_ratio,
            "adjusted_rand": self.adjusted_rand, "normalized_mutual_info": self.normalized_mutual_info,
            "purity": self.purity, "n_labelled": self.n_labelled, "used_codes": int((self.code_sizes > 0).sum()),
            "largest_code": int(self.code_sizes.max()),
        }])


@dataclass
class CodebookUsage:
    """How a codebook of ``n_codes`` entries is used over a set of code indices.

    Attributes
    ----------
    model
        The model's name.
    n_codes
        Size of the codebook.
    counts
        Times each code was chosen, array of shape (n_codes,).
    usage
        Share of the codes chosen at least once.
    perplexity
        ``exp(H)``, H the entropy (nats) of the codes' frequencies: 1 when one code takes everything, ``n_codes``
        when all are used equally.
    dead_codes
        Indices of the codes never chosen, array of shape (n_dead,).
    """

    model: str
    n_codes: int
    counts: np.ndarray = field(repr=False)
    usage: float
    perplexity: float
    dead_codes: np.ndarray = field(repr=False)

    def to_frame(self) -> pd.DataFrame:
        """One row: model, n_codes, n_positions (indices counted), used_codes, dead_codes, usage, perplexity."""
        return pd.DataFrame([{
            "model": self.model, "n_codes": self.n_codes, "n_positions": int(self.counts.sum()),
            "used_codes": int((self.counts > 0).sum()), "dead_codes": len(self.dead_codes), "usage": self.usage,
            "perplexity": self.perplexity,
        }])


def majority_classes(codes: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """The most common class of each code (the smallest class on a tie; -1 for a code with no stimulus),
    array of shape (k,). ``labels`` are non-negative integers."""
    codes, labels = np.asarray(codes, dtype=np.int64), np.asarray(labels, dtype=np.int64)
    table = np.zeros((k, int(labels.max()) + 1 if len(labels) else 1), dtype=np.int64)
    np.add.at(table, (codes, labels), 1)
    return np.where(table.sum(1) > 0, table.argmax(1), -1)


def code_purity(codes: np.ndarray, labels: np.ndarray) -> float:
    """Share of stimuli whose code's most common class is their own class (non-negative integer labels)."""
    codes, labels = np.asarray(codes, dtype=np.int64), np.asarray(labels, dtype=np.int64)
    if len(codes) == 0:
        return float("nan")
    table = np.zeros((int(codes.max()) + 1, int(labels.max()) + 1), dtype=np.int64)
    np.add.at(table, (codes, labels), 1)
    return float(table.max(1).sum() / len(codes))


def kmeans_codes(responses: Any, labels: Any = None, k: int = 10, seed: int = 0, layer: str = "", model: str = "",
                 n_init: int = 1) -> LayerCodes:
    """Fit k-means with ``k`` codes to the responses and compare its codes with the classes.

    Parameters
    ----------
    responses
        Array of shape (n_stimuli, n_units): a recorded layer or the pixels, one row per stimulus.
    labels
        The class of each stimulus, shape (n_stimuli,); -1 marks a stimulus without one, which the agreement
        measures leave out. None: no agreement measures.
    k
        Number of codes.
    seed, n_init
        Seed and number of seedings of ``analyses.KMeansCoder``.
    layer, model
        Names stored in the result.
    """
    X = _as_data_matrix(responses, "responses")
    coder = KMeansCoder(k, seed=seed, n_init=n_init).fit(X)
    codes = np.asarray(coder.labels_, dtype=np.int64)
    total = float(((X - X.mean(0)) ** 2).sum())
    result = LayerCodes(model=model, layer=layer, k=int(k), codes=codes, centroids=coder.cluster_centers_,
                        inertia=float(coder.inertia_), inertia_ratio=float(coder.inertia_) / total if total > 0 else float("nan"),
                        code_sizes=np.bincount(codes, minlength=k), majority=np.full(k, -1, dtype=np.int64))
    if labels is None:
        return result
    labels = np.asarray(labels, dtype=np.int64)
    if labels.shape != (len(X),):
        raise ValueError(f"labels must have shape ({len(X)},), one per stimulus; got {labels.shape}")
    known = labels >= 0
    if not known.any():
        return result
    codes_known, labels_known = codes[known], labels[known]
    result.majority = majority_classes(codes_known, labels_known, k)
    result.adjusted_rand = float(adjusted_rand_score(labels_known, codes_known))
    result.normalized_mutual_info = float(normalized_mutual_info_score(labels_known, codes_known))
    result.purity = code_purity(codes_known, labels_known)
    result.n_labelled = int(known.sum())
    return result


def codebook_usage(indices: Any, n_codes: int, model: str = "") -> CodebookUsage:
    """Count how often each of ``n_codes`` codes was chosen.

    Parameters
    ----------
    indices
        Integer array or tensor of any shape (a VQ-VAE's ``codes``: one index per grid position), values in
        0..n_codes-1.
    n_codes
        Size of the codebook.
    """
    flat = np.asarray(indices.detach().cpu() if hasattr(indices, "detach") else indices).ravel()
    if n_codes < 1:
        raise ValueError(f"n_codes must be at least 1, got {n_codes}")
    if not np.issubdtype(flat.dtype, np.integer):
        raise ValueError(f"indices must be integers (code indices); got dtype {flat.dtype}")
    if len(flat) == 0:
        raise ValueError("indices is empty; pass the codes of at least one stimulus")
    if flat.min() < 0 or flat.max() >= n_codes:
        raise ValueError(f"indices must lie in 0..{n_codes - 1}; got {flat.min()}..{flat.max()}")
    counts = np.bincount(flat, minlength=n_codes)
    p = counts[counts > 0] / counts.sum()
    return CodebookUsage(model=model, n_codes=int(n_codes), counts=counts, usage=float((counts > 0).mean()),
                         perplexity=float(np.exp(-(p * np.log(p)).sum())), dead_codes=np.flatnonzero(counts == 0))
