"""k-means as a representation learner: an encoder to one of k codes and a decoder to its centroid.

The objective is the sum of squared distances of each input to the centroid of its code,

    J(codes, centroids) = sum_n || x_n - c_{code(n)} ||^2,

minimised by block-coordinate descent (Lloyd's algorithm): the assignment step minimises J over the
codes with the centroids fixed (each input takes its nearest centroid), the update step minimises J
over the centroids with the codes fixed (each centroid becomes the mean of its inputs). Neither step
can increase J, which ``objective_history_`` records step by step.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

__all__ = ["KMeansCoder"]

# Rows per block when computing distances, bounding memory to (block, k) floats.
_ROW_BLOCK = 4096


def _as_data_matrix(X: Any, name: str = "X", n_features: int | None = None) -> np.ndarray:
    """Validate a data matrix (any 2-D array of numbers); return it as float64."""
    array = np.asarray(X.detach().cpu() if hasattr(X, "detach") else X, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(
            f"{name} must be a 2-D array of shape (n_stimuli, n_units); got shape {array.shape}; "
            "flatten images or recorded layers first, e.g. X.reshape(len(X), -1)"
        )
    if array.shape[0] < 1 or array.shape[1] < 1:
        raise ValueError(f"{name} needs at least 1 stimulus and 1 unit; got shape {array.shape}")
    if n_features is not None and array.shape[1] != n_features:
        raise ValueError(f"{name} has {array.shape[1]} units but the coder was fitted on {n_features}; pass data of the same layer")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contains NaN or infinite values; remove or impute them first")
    return array


def _squared_distances(X: np.ndarray, centroids: np.ndarray, row_norms: np.ndarray | None = None) -> np.ndarray:
    """Squared Euclidean distances, array of shape (n_stimuli, k), computed in row blocks (``row_norms``:
    the inputs' squared norms, when known)."""
    centroid_norms = (centroids**2).sum(1)
    row_norms = np.einsum("ij,ij->i", X, X) if row_norms is None else row_norms
    out = np.empty((X.shape[0], centroids.shape[0]))
    for start in range(0, X.shape[0], _ROW_BLOCK):
        block = X[start : start + _ROW_BLOCK]
        out[start : start + len(block)] = row_norms[start : start + len(block), None] - 2.0 * block @ centroids.T + centroid_norms
    return np.maximum(out, 0.0)  # rounding can make a distance slightly negative


def _assign(X: np.ndarray, centroids: np.ndarray, row_norms: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The assignment step: each input's nearest centroid and its squared distance to it."""
    codes = _squared_distances(X, centroids, row_norms).argmin(1)
    # Recomputed directly: the expanded form above loses precision when inputs lie far from the origin.
    return codes, ((X - centroids[codes]) ** 2).sum(1)


def _update(X: np.ndarray, codes: np.ndarray, centroids: np.ndarray, nearest: np.ndarray) -> tuple[np.ndarray, int]:
    """The update step: each centroid becomes the mean of its inputs.

    A centroid that no input chose (an empty cluster) is moved onto one of the inputs farthest
    from their own centroid, the farthest for the first empty cluster, the next for the second,
    and so on. An empty centroid does not enter J, so moving it leaves J unchanged; the next
    assignment step then strictly lowers J, since that input is now at distance 0 from a centroid.

    Returns
    -------
    The new centroids, array of shape (k, n_units), and the number of re-seeded clusters.
    """
    k = centroids.shape[0]
    counts = np.bincount(codes, minlength=k)
    membership = np.zeros((k, len(codes)))
    membership[codes, np.arange(len(codes))] = 1.0
    sums = membership @ X  # one matrix product: far quicker than np.add.at
    updated = centroids.copy()
    used = counts > 0
    updated[used] = sums[used] / counts[used, None]
    empty = np.flatnonzero(~used)
    if len(empty):
        farthest = np.argsort(-nearest, kind="stable")[: len(empty)]
        updated[empty] = X[farthest]
    return updated, len(empty)


def _kmeans_plus_plus(X: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Greedy k-means++ seeding (Arthur & Vassilvitskii 2007).

    The first centroid is a uniformly drawn input; each next one is drawn with probability
    proportional to the squared distance to the nearest centroid so far, keeping the best of
    ``2 + log(k)`` candidates (the one that lowers J most).
    """
    n_trials = 2 + int(np.log(k))
    centroids = np.empty((k, X.shape[1]))
    centroids[0] = X[rng.integers(len(X))]
    closest = _squared_distances(X, centroids[:1])[:, 0]
    for i in range(1, k):
        total = closest.sum()
        if total <= 0:  # fewer distinct inputs than k: any input will do
            candidates = rng.integers(len(X), size=n_trials)
        else:
            candidates = np.minimum(np.searchsorted(np.cumsum(closest), rng.random(n_trials) * total), len(X) - 1)
        candidate_closest = np.minimum(closest[None, :], _squared_distances(X, X[candidates]).T)
        best = int(candidate_closest.sum(1).argmin())
        centroids[i] = X[candidates[best]]
        closest = candidate_closest[best]
    return centroids


class KMeansCoder(TransformerMixin, BaseEstimator):
    """k-means as an encoder (input -> one of ``k`` codes) and a decoder (code -> its centroid).

    Fitted by Lloyd's block-coordinate steps (see the module's docstring), from ``n_init`` seedings,
    keeping the one with the lowest objective. Works on pixels or on any recorded layer: any 2-D
    float array of shape (n_stimuli, n_units).

    Parameters
    ----------
    k
        Number of codes (clusters).
    seed
        Seed of the NumPy Generator that draws the k-means++ seedings.
    n_init
        Number of seedings (ignored, as 1, when ``init`` is an array).
    max_iter
        Most update steps per seeding.
    tol
        Stop when the summed squared movement of the centroids in one update step is at most
        ``tol`` times the mean per-unit variance of the data (scikit-learn's rule), or when no code
        changes.
    init
        ``"k-means++"``, ``"random"`` (k distinct inputs), or an array of shape (k, n_units) of
        initial centroids.

    Attributes
    ----------
    cluster_centers_
        Array of shape (k, n_units): the decoder's table.
    labels_
        Array of shape (n_stimuli,): the code of each training input.
    inertia_
        The objective J on the training data at the end.
    n_iter_
        Number of update steps of the kept seeding.
    objective_history_
        J after every step of the kept seeding, alternately after an assignment step and after an
        update step (starting with the first assignment); it never increases.
    n_reseeded_
        Number of empty clusters re-seeded during the kept seeding.
    """

    def __init__(self, k: int, seed: int = 0, n_init: int = 1, max_iter: int = 300, tol: float = 1e-4, init: Any = "k-means++"):
        self.k = k
        self.seed = seed
        self.n_init = n_init
        self.max_iter = max_iter
        self.tol = tol
        self.init = init

    def _check_parameters(self, X: np.ndarray) -> np.ndarray | None:
        if int(self.k) != self.k or self.k < 1:
            raise ValueError(f"k must be a positive integer, got {self.k!r}")
        if self.k > len(X):
            raise ValueError(f"k={self.k} codes need at least {self.k} stimuli; got {len(X)}; lower k")
        if int(self.n_init) != self.n_init or self.n_init < 1 or int(self.max_iter) != self.max_iter or self.max_iter < 1:
            raise ValueError(f"n_init and max_iter must be positive integers, got {self.n_init!r} and {self.max_iter!r}")
        if self.tol < 0:
            raise ValueError(f"tol must be >= 0, got {self.tol}")
        if isinstance(self.init, str):
            if self.init not in _SEEDINGS:
                from zoo import unknown_name_error

                raise unknown_name_error("k-means initialisation", self.init, _SEEDINGS)
            return None
        centroids = _as_data_matrix(self.init, "init", n_features=X.shape[1])
        if centroids.shape[0] != self.k:
            raise ValueError(f"init has {centroids.shape[0]} centroids but k={self.k}; pass an array of shape ({self.k}, {X.shape[1]})")
        return centroids

    def fit(self, X: Any, y: Any = None) -> "KMeansCoder":
        """Fit the centroids to ``X``, array of shape (n_stimuli, n_units); returns self."""
        X = _as_data_matrix(X)
        given = self._check_parameters(X)
        rng = np.random.default_rng(self.seed)
        tol = float(self.tol) * float(X.var(0).mean())
        best = None
        for _ in range(1 if given is not None else int(self.n_init)):
            start = given.copy() if given is not None else _SEEDINGS[self.init](X, int(self.k), rng)
            run = _lloyd(X, start, int(self.max_iter), tol)
            if best is None or run["inertia"] < best["inertia"]:
                best = run
        self.cluster_centers_ = best["centroids"]
        self.labels_ = best["codes"]
        self.inertia_ = best["inertia"]
        self.n_iter_ = best["n_iter"]
        self.objective_history_ = best["history"]
        self.n_reseeded_ = best["n_reseeded"]
        self.n_features_in_ = X.shape[1]
        return self

    def predict(self, X: Any) -> np.ndarray:
        """The encoder: the code (index of the nearest centroid) of each row, array of shape (n_stimuli,)."""
        check_is_fitted(self, "cluster_centers_")
        return _assign(_as_data_matrix(X, n_features=self.n_features_in_), self.cluster_centers_)[0]

    def transform(self, X: Any) -> np.ndarray:
        """Euclidean distance of each row to each centroid, array of shape (n_stimuli, k)."""
        check_is_fitted(self, "cluster_centers_")
        return np.sqrt(_squared_distances(_as_data_matrix(X, n_features=self.n_features_in_), self.cluster_centers_))

    def inverse_transform(self, codes: Any) -> np.ndarray:
        """The decoder: the centroid of each code, array of shape (n_stimuli, n_units)."""
        check_is_fitted(self, "cluster_centers_")
        codes = np.asarray(codes)
        if codes.ndim != 1 or not np.issubdtype(codes.dtype, np.integer):
            raise ValueError(f"codes must be a 1-D array of integers (what predict returns); got dtype {codes.dtype} and shape {codes.shape}")
        if len(codes) and (codes.min() < 0 or codes.max() >= len(self.cluster_centers_)):
            raise ValueError(f"codes must lie in 0..{len(self.cluster_centers_) - 1}; got {codes.min()}..{codes.max()}")
        return self.cluster_centers_[codes]

    def score(self, X: Any, y: Any = None) -> float:
        """Minus the objective J on ``X`` (larger is better, as in scikit-learn)."""
        check_is_fitted(self, "cluster_centers_")
        return -float(_assign(_as_data_matrix(X, n_features=self.n_features_in_), self.cluster_centers_)[1].sum())


def _random_inputs(X: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    return X[rng.choice(len(X), size=k, replace=False)].copy()


_SEEDINGS = {"k-means++": _kmeans_plus_plus, "random": _random_inputs}


def _lloyd(X: np.ndarray, centroids: np.ndarray, max_iter: int, tol: float) -> dict[str, Any]:
    """Alternate assignment and update steps from ``centroids`` until the codes or centroids settle."""
    row_norms = np.einsum("ij,ij->i", X, X)
    codes, nearest = _assign(X, centroids, row_norms)
    history = [float(nearest.sum())]
    n_iter = n_reseeded = 0
    for n_iter in range(1, max_iter + 1):
        updated, n_empty = _update(X, codes, centroids, nearest)
        n_reseeded += n_empty
        shift = float(((updated - centroids) ** 2).sum())
        centroids = updated
        history.append(float(((X - centroids[codes]) ** 2).sum()))
        new_codes, nearest = _assign(X, centroids, row_norms)
        history.append(float(nearest.sum()))
        unchanged = np.array_equal(new_codes, codes)
        codes = new_codes
        if unchanged or shift <= tol:
            break
    # The last assignment step ran on the final centroids, so codes and inertia belong together.
    return {"centroids": centroids, "codes": codes, "inertia": float(nearest.sum()), "n_iter": n_iter, "history": history, "n_reseeded": n_reseeded}
