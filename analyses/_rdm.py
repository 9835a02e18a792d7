"""Representational dissimilarity matrices (RDMs), computed from Gram matrices in torch.

Every metric except crossnobis is a Gram matrix of transformed stimulus patterns followed by an
element-wise step, so one code path serves the direct computation and the chunked, on-disk one:

===============  ==========================================  ==================================
metric           dissimilarity of stimuli i and j            rsatoolbox equivalent
===============  ==========================================  ==================================
"euclidean"      ||x_i - x_j||                               none (rsatoolbox has no root)
"sqeuclidean"    ||x_i - x_j||^2                             "euclidean" = ours / n_units
                                                             (``per_unit=True``)
"correlation"    1 - Pearson r of x_i and x_j over units     "correlation" (identical)
"cosine"         1 - cos(x_i, x_j)                           none
"mahalanobis"    (x_i - x_j)^T P (x_i - x_j), P a noise      "mahalanobis" with ``noise=P`` =
                 precision (squared, as is usual in RSA)     ours / n_units (``per_unit=True``)
"crossnobis"     leave-one-run-out (a_i - a_j)^T P (b_i -    "crossnobis" = ours / n_units
                 b_j), a = mean of the other runs, b = the   (``per_unit=True``)
                 left-out run, averaged over runs
===============  ==========================================  ==================================

Conventions: the diagonal is exactly zero and the matrix exactly symmetric; squared distances
that come out slightly negative through floating-point cancellation are clipped to zero (not
crossnobis, whose off-diagonal values are unbiased estimates and may be negative by design).
Inputs are validated at the door: NaN or inf, fewer than 3 stimuli, or a stimulus for which the
metric is undefined (a constant pattern for "correlation", an all-zero one for "cosine") raise
``ValueError`` naming the stimuli and the fix, never a silent NaN.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from analyses._memory import check_memory, parse_bytes, square_bytes, stimuli
from zoo._names import unknown_name_error

__all__ = ["RDM", "rdm", "rdm_chunked", "RDM_METRICS"]

# What to use instead when an RDM is too large for memory (the memory guard's advice).
CHUNKED_ADVICE = (
    "use analyses.rdm_chunked(X, metric, path='rdm.npy', condensed=True), which computes the RDM in row blocks "
    "within memory_budget and writes it to disk, or compute the RDM on a subset of the stimuli"
)

MIN_STIMULI = 3


# ----------------------------------------------------------------------------------------- inputs
def as_float_tensor(X: Any, name: str = "X", dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Turn a NumPy array, torch tensor or nested list into a finite tensor on its own device.

    NumPy float64 input is wrapped without a copy; torch input stays on its device.
    """
    if isinstance(X, torch.Tensor):
        tensor = X.detach().to(dtype)
    else:
        array = np.asarray(X)
        if array.dtype == object or not np.issubdtype(array.dtype, np.number):
            raise ValueError(f"{name} must be a numeric array, got dtype {array.dtype}; convert it with np.asarray(..., float)")
        tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float64)).to(dtype)
    # on the CPU NumPy's check is one pass; torch.isfinite makes several
    all_finite = np.isfinite(tensor.numpy()).all() if tensor.device.type == "cpu" else torch.isfinite(tensor).all()
    if not bool(all_finite):
        finite = torch.isfinite(tensor)
        n_bad = int((~finite).sum())
        where = torch.nonzero(~finite)[0].tolist()
        raise ValueError(
            f"{name} contains {n_bad} NaN or inf value(s) (first at index {tuple(where)}); "
            "drop or impute those stimuli/units before computing dissimilarities"
        )
    return tensor


def check_stimulus_count(n_stimuli: int, name: str = "X") -> None:
    if n_stimuli < MIN_STIMULI:
        raise ValueError(
            f"{name} has {n_stimuli} stimuli; an RDM needs at least {MIN_STIMULI} (so that it has more "
            "than one pair to compare); record more stimuli"
        )


def gram(A: torch.Tensor, B: torch.Tensor | None = None) -> torch.Tensor:
    """``A @ B.T`` (``A @ A.T`` when B is None) on the operands' device.

    On the CPU a self-Gram goes through NumPy, whose BLAS call for ``a @ a.T`` is the symmetric
    rank-k update (half the work of a general product, and exactly symmetric).
    """
    if B is None and A.device.type == "cpu" and A.dtype == torch.float64:
        a = A.contiguous().numpy()
        return torch.from_numpy(a @ a.T)
    if B is None:
        G = A @ A.T
        return (G + G.T) / 2
    return A @ B.T


# -------------------------------------------------------------------------------------- the object
class RDM:
    """A representational dissimilarity matrix with its metric and stimulus descriptors.

    Parameters
    ----------
    matrix
        Array of shape (n_stimuli, n_stimuli): symmetric, zero diagonal (checked).
    metric
        How the dissimilarities were computed (see ``analyses.rdm``).
    descriptors
        Per-stimulus metadata, name -> array of shape (n_stimuli,), for example ``{"label": y}``.
    name
        Optional name, such as the layer the RDM comes from.

    Notes
    -----
    ``np.asarray(rdm)`` gives the square matrix; ``rdm.condensed()`` the upper triangle in the
    row-major order of ``scipy.spatial.distance.squareform`` and rsatoolbox.
    """

    def __init__(
        self,
        matrix: Any,
        metric: str = "unknown",
        descriptors: Mapping[str, Any] | None = None,
        name: str | None = None,
        *,
        check: bool = True,
    ) -> None:
        matrix = matrix if isinstance(matrix, np.memmap) else np.asarray(matrix, dtype=np.float64)
        if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
            raise ValueError(
                f"an RDM must be a square matrix, got shape {matrix.shape}; "
                "use RDM.from_condensed for an upper-triangle vector"
            )
        if check:
            _check_square_rdm(matrix)
        self._matrix, self._condensed = matrix, None
        self.metric = metric
        self.name = name
        self.descriptors = _check_descriptors(descriptors, matrix.shape[0])

    @classmethod
    def from_condensed(
        cls,
        vector: Any,
        metric: str = "unknown",
        descriptors: Mapping[str, Any] | None = None,
        name: str | None = None,
        *,
        check: bool = True,
    ) -> "RDM":
        """Build an RDM from its upper triangle (array of shape (n_stimuli * (n_stimuli - 1) / 2,)).

        The vector is kept as given (a memmap stays on disk); the square matrix is built only
        when asked for (``np.asarray(rdm)``, ``rdm.matrix``).
        """
        vector = vector if isinstance(vector, np.memmap) else np.asarray(vector, dtype=np.float64)
        if vector.ndim != 1:
            raise ValueError(f"a condensed RDM is a vector, got shape {vector.shape}")
        n = n_stimuli_from_pairs(vector.size)
        if check and not np.isfinite(vector).all():
            raise ValueError("the condensed RDM contains NaN or inf; an RDM must be finite")
        instance = cls.__new__(cls)
        instance._matrix, instance._condensed = None, vector
        instance.metric, instance.name = metric, name
        instance.descriptors = _check_descriptors(descriptors, n)
        return instance

    @property
    def n_stimuli(self) -> int:
        if self._matrix is None:
            return n_stimuli_from_pairs(self._condensed.size)
        return self._matrix.shape[0]

    @property
    def matrix(self) -> np.ndarray:
        """Array of shape (n_stimuli, n_stimuli) (built from the condensed form on first use)."""
        if self._matrix is None:
            n = self.n_stimuli
            # the matrix and the two index vectors of the upper triangle
            check_memory(
                square_bytes(n, 2), f"the square matrix of a condensed RDM of {stimuli(n)}",
                "work with rdm.condensed() (the upper triangle), which every comparison in analyses accepts",
            )
            matrix = np.zeros((n, n))
            rows, cols = np.triu_indices(n, 1)
            matrix[rows, cols] = self._condensed
            matrix[cols, rows] = self._condensed
            self._matrix = matrix
        return self._matrix

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        matrix = np.asarray(self.matrix)
        return matrix.astype(dtype) if dtype is not None else matrix

    def __len__(self) -> int:
        return self.n_stimuli

    def __repr__(self) -> str:
        label = f"{self.name!r}, " if self.name else ""
        return f"RDM({label}metric={self.metric!r}, n_stimuli={self.n_stimuli}, descriptors={sorted(self.descriptors)})"

    def condensed(self) -> np.ndarray:
        """The upper triangle, array of shape (n_stimuli * (n_stimuli - 1) / 2,)."""
        if self._condensed is not None:
            return np.asarray(self._condensed, dtype=np.float64)
        n = self.n_stimuli
        check_memory(
            4 * n * (n - 1), f"the condensed form of an RDM of {stimuli(n)}",
            "compute the RDM with analyses.rdm_chunked(X, metric, path='rdm.npy', condensed=True), which keeps "
            "the upper triangle on disk",
        )
        return upper_triangle(self._matrix)

    def subset(self, index: Any) -> "RDM":
        """The RDM of a subset (or reordering) of stimuli, with descriptors carried along."""
        index = np.asarray(index)
        if index.dtype == bool:
            index = np.flatnonzero(index)
        check_memory(
            square_bytes(index.size, 1), f"RDM.subset to {stimuli(index.size)}",
            "take fewer stimuli, or compute the subset's RDM with analyses.rdm_chunked(X[index], metric, path=...)",
        )
        matrix = np.asarray(self.matrix)[np.ix_(index, index)]
        descriptors = {key: value[index] for key, value in self.descriptors.items()}
        return RDM(matrix, self.metric, descriptors, self.name, check=False)

    def sorted_by(self, descriptor: str) -> "RDM":
        """The RDM with stimuli ordered by a descriptor (stable), for example by class label."""
        if descriptor not in self.descriptors:
            raise unknown_name_error("descriptor", descriptor, sorted(self.descriptors))
        return self.subset(np.argsort(self.descriptors[descriptor], kind="stable"))

    def to_frame(self) -> pd.DataFrame:
        """One row per stimulus pair i < j: stimulus_i, stimulus_j, dissimilarity, descriptors."""
        n_pairs = self.n_stimuli * (self.n_stimuli - 1) // 2
        # index columns, values and the metric/name columns, built once and copied once into the frame
        check_memory(
            n_pairs * 8 * (9 + 4 * len(self.descriptors)), f"RDM.to_frame for {stimuli(self.n_stimuli)}",
            "use rdm.condensed() (a NumPy vector of the upper triangle, in the same pair order) instead of a DataFrame",
        )
        rows, cols = np.triu_indices(self.n_stimuli, 1)
        frame = pd.DataFrame({"stimulus_i": rows, "stimulus_j": cols, "dissimilarity": self.condensed()})
        for key, value in self.descriptors.items():
            frame[f"{key}_i"], frame[f"{key}_j"] = value[rows], value[cols]
        frame["metric"] = self.metric
        if self.name is not None:
            frame["name"] = self.name
        return frame


def n_stimuli_from_pairs(n_pairs: int) -> int:
    n = int(round((1 + np.sqrt(1 + 8 * n_pairs)) / 2))
    if n * (n - 1) // 2 != n_pairs or n_pairs == 0:
        raise ValueError(
            f"a condensed RDM of length {n_pairs} is not an upper triangle (lengths are n(n-1)/2: 3, 6, 10, ...); "
            "pass the square matrix or scipy.spatial.distance.squareform(matrix)"
        )
    return n


def upper_triangle(matrix: np.ndarray) -> np.ndarray:
    """The upper triangle of a square matrix in row-major order (scipy's ``squareform``), as float64.

    Row by row, so that nothing but the result is allocated (``np.triu_indices`` would take twice
    its size again in index vectors).
    """
    n = matrix.shape[0]
    out = np.empty(n * (n - 1) // 2)
    offset = 0
    for i in range(n - 1):
        out[offset : offset + n - i - 1] = matrix[i, i + 1 :]
        offset += n - i - 1
    return out


def _block_rows(n: int) -> int:
    """Rows per block of about 2**20 entries, to check an (n, n) matrix without (n, n) temporaries."""
    return max(1, 2**20 // max(n, 1))


def is_symmetric(matrix: np.ndarray, rtol: float, atol: float) -> bool:
    """``np.allclose(matrix, matrix.T, rtol, atol)``, one block of rows at a time."""
    n, step = matrix.shape[0], _block_rows(matrix.shape[0])
    return all(
        np.allclose(matrix[start : start + step], matrix[:, start : start + step].T, rtol=rtol, atol=atol)
        for start in range(0, n, step)
    )


def _check_square_rdm(matrix: np.ndarray, atol: float = 1e-8) -> None:
    n, step = matrix.shape[0], _block_rows(matrix.shape[0])
    largest = 0.0
    for start in range(0, n, step):
        block = np.asarray(matrix[start : start + step])
        if not np.isfinite(block).all():
            raise ValueError("the RDM contains NaN or inf; an RDM must be finite")
        largest = max(largest, float(np.abs(block).max(initial=0.0)))
    scale = max(largest, 1.0)
    if not is_symmetric(matrix, 0, atol * scale):
        raise ValueError("the RDM is not symmetric; symmetrise it with (M + M.T) / 2 if that is intended")
    if np.abs(np.diag(matrix)).max(initial=0.0) > atol * scale:
        raise ValueError("the RDM has a non-zero diagonal; a stimulus must have zero dissimilarity to itself")


def _check_descriptors(descriptors: Mapping[str, Any] | None, n_stimuli: int) -> dict[str, np.ndarray]:
    checked = {}
    for key, value in (descriptors or {}).items():
        value = np.asarray(value)
        if value.shape != (n_stimuli,):
            raise ValueError(
                f"descriptor {key!r} has shape {value.shape}; it needs one entry per stimulus, shape ({n_stimuli},)"
            )
        checked[str(key)] = value
    return checked


# ------------------------------------------------------------------------------ Gram-based metrics
@dataclass
class _Prepared:
    """Transformed patterns Z whose Gram matrix gives the RDM through ``finish``."""

    Z: torch.Tensor
    finish: Callable[[torch.Tensor, torch.Tensor | None, torch.Tensor | None], torch.Tensor]

    def squared_norms(self) -> torch.Tensor | None:
        """Per-stimulus squared norms of Z, for the distance metrics only (1 - G needs none)."""
        if self.finish is _one_minus:
            return None
        return torch.linalg.vector_norm(self.Z, dim=1).square_()


# The finishing steps work in place: G is always a fresh buffer, and at n = 20,000 a copy is 3 GB.
def _one_minus(G, _rows, _cols):
    return G.neg_().add_(1.0)


def _squared_distance(G, rows, cols):
    # r_i + r_j first: that sum is exactly symmetric, so the result is too
    return G.mul_(-2.0).add_(rows[:, None] + cols[None, :]).clamp_min_(0.0)


def _distance(G, rows, cols):
    return _squared_distance(G, rows, cols).sqrt_()


def _check_nonzero_rows(norms: torch.Tensor, reference: torch.Tensor, metric: str, what: str) -> None:
    degenerate = norms <= 1e-12 * reference.clamp_min(1e-300)
    degenerate |= norms == 0
    if bool(degenerate.any()):
        bad = torch.nonzero(degenerate).flatten().tolist()
        raise ValueError(
            f"{len(bad)} stimulus pattern(s) are {what} (stimuli {bad[:10]}), so the {metric} distance is undefined "
            "for them; drop those stimuli or use metric='euclidean'"
        )


def _prepare_correlation(X: torch.Tensor, **_) -> _Prepared:
    centred = X - X.mean(dim=1, keepdim=True)
    norms = torch.linalg.vector_norm(centred, dim=1)
    _check_nonzero_rows(norms, torch.linalg.vector_norm(X, dim=1), "correlation", "constant across units")
    return _Prepared(centred.div_(norms[:, None]), _one_minus)


def _prepare_cosine(X: torch.Tensor, **_) -> _Prepared:
    norms = X.norm(dim=1)
    _check_nonzero_rows(norms, torch.ones_like(norms), "cosine", "all zero")
    return _Prepared(X / norms[:, None], _one_minus)


def _prepare_sqeuclidean(X: torch.Tensor, **_) -> _Prepared:
    return _Prepared(X, _squared_distance)


def _prepare_euclidean(X: torch.Tensor, **_) -> _Prepared:
    return _Prepared(X, _distance)


def _prepare_mahalanobis(X: torch.Tensor, precision: torch.Tensor | None = None, **_) -> _Prepared:
    if precision is None:
        raise ValueError(
            "metric='mahalanobis' needs noise_precision= or noise_covariance= (array of shape (n_units, n_units))"
        )
    return _Prepared(X @ _precision_factor(precision), _squared_distance)


_PREPARE: dict[str, Callable[..., _Prepared]] = {
    "euclidean": _prepare_euclidean,
    "sqeuclidean": _prepare_sqeuclidean,
    "correlation": _prepare_correlation,
    "cosine": _prepare_cosine,
    "mahalanobis": _prepare_mahalanobis,
}
RDM_METRICS: tuple[str, ...] = (*_PREPARE, "crossnobis")
_PER_UNIT_METRICS = {"sqeuclidean", "mahalanobis", "crossnobis"}
# metrics whose finishing step adds the squared norms as an (n, n) temporary
_DISTANCE_METRICS = {"euclidean", "sqeuclidean", "mahalanobis"}


def _precision_factor(precision: torch.Tensor) -> torch.Tensor:
    """L with L @ L.T = precision, so that ||(x_i - x_j) @ L||^2 is the squared Mahalanobis distance."""
    try:
        return torch.linalg.cholesky(precision)
    except torch.linalg.LinAlgError as error:
        raise ValueError(
            "the noise precision is not positive definite; regularise the noise covariance "
            "(for example shrink it towards its diagonal) before inverting it"
        ) from error


def _resolve_precision(
    noise_precision: Any, noise_covariance: Any, n_units: int, device: torch.device, dtype: torch.dtype
) -> torch.Tensor | None:
    if noise_precision is not None and noise_covariance is not None:
        raise ValueError("pass either noise_precision or noise_covariance, not both")
    given = noise_precision if noise_precision is not None else noise_covariance
    if given is None:
        return None
    matrix = as_float_tensor(given, "noise matrix", dtype).to(device)
    if matrix.shape != (n_units, n_units):
        raise ValueError(f"the noise matrix has shape {tuple(matrix.shape)}; it must be ({n_units}, {n_units})")
    if not torch.allclose(matrix, matrix.T, atol=1e-10 * float(matrix.abs().max().clamp_min(1.0))):
        raise ValueError("the noise matrix must be symmetric")
    matrix = (matrix + matrix.T) / 2
    if noise_covariance is not None:
        _precision_factor(matrix)  # refuses a singular covariance with a clear message
        matrix = torch.linalg.inv(matrix)
        matrix = (matrix + matrix.T) / 2
    return matrix


def _finish_square(D: torch.Tensor, symmetrise: bool = False) -> torch.Tensor:
    # Gram-based metrics are symmetric by construction (gram() returns an exactly symmetric G)
    if symmetrise:
        D = (D + D.T) / 2
    D.fill_diagonal_(0.0)
    return D


# -------------------------------------------------------------------------------------- crossnobis
def _crossnobis_runs(
    X: Any, runs: Any, conditions: Any, dtype: torch.dtype
) -> tuple[torch.Tensor, np.ndarray | None]:
    """Arrange repeated measurements as a tensor of shape (n_runs, n_stimuli, n_units)."""
    if runs is None:
        data = as_float_tensor(X, "X", dtype)
        if data.ndim != 3:
            raise ValueError(
                f"metric='crossnobis' needs repeated measurements: X of shape (n_runs, n_stimuli, n_units), "
                f"or X of shape (n_observations, n_units) with runs= (one run/partition label per row); got {tuple(data.shape)}"
            )
        return data, None
    data = as_float_tensor(X, "X", dtype)
    runs = np.asarray(runs)
    if data.ndim != 2 or runs.shape != (data.shape[0],):
        raise ValueError(
            f"with runs=, X must have shape (n_observations, n_units) and runs shape (n_observations,); "
            f"got X {tuple(data.shape)} and runs {runs.shape}"
        )
    run_values = np.unique(runs)
    if conditions is None:
        counts = {int((runs == value).sum()) for value in run_values}
        if len(counts) != 1:
            raise ValueError(
                "the runs have different numbers of rows; pass conditions= (the stimulus of every row) so that rows "
                "can be matched across runs"
            )
        stacked = torch.stack([data[torch.from_numpy(np.flatnonzero(runs == value))] for value in run_values])
        return stacked, None
    conditions = np.asarray(conditions)
    if conditions.shape != runs.shape:
        raise ValueError(f"conditions has shape {conditions.shape}; it needs one entry per row, shape {runs.shape}")
    condition_values = np.unique(conditions)
    stacked = torch.zeros((len(run_values), len(condition_values), data.shape[1]), dtype=dtype, device=data.device)
    for r, run in enumerate(run_values):
        for c, condition in enumerate(condition_values):
            rows = np.flatnonzero((runs == run) & (conditions == condition))
            if rows.size == 0:
                raise ValueError(
                    f"stimulus {condition!r} is missing from run {run!r}; crossnobis needs every stimulus in every run"
                )
            stacked[r, c] = data[torch.from_numpy(rows)].mean(dim=0)  # repeats within a run are averaged
    return stacked, condition_values


def _crossnobis(runs_data: torch.Tensor, precision: torch.Tensor | None) -> torch.Tensor:
    n_runs = runs_data.shape[0]
    if n_runs < 2:
        raise ValueError(f"crossnobis needs at least 2 runs to cross-validate, got {n_runs}")
    if precision is not None:
        runs_data = runs_data @ _precision_factor(precision)
    total = runs_data.sum(dim=0)
    accumulated = torch.zeros(runs_data.shape[1], runs_data.shape[1], dtype=runs_data.dtype, device=runs_data.device)
    for held_out in runs_data:
        training = (total - held_out) / (n_runs - 1)
        K = training @ held_out.T
        diagonal = torch.diagonal(K)
        accumulated += diagonal[:, None] + diagonal[None, :] - K - K.T
    return _finish_square(accumulated / n_runs, symmetrise=True)


def estimate_noise_covariance(runs_data: torch.Tensor) -> torch.Tensor:
    """Ledoit-Wolf-shrunk covariance of the residuals around each stimulus's mean over runs."""
    from sklearn.covariance import ledoit_wolf

    residuals = runs_data - runs_data.mean(dim=0, keepdim=True)
    residuals = residuals.reshape(-1, runs_data.shape[-1]).cpu().numpy()
    covariance, _ = ledoit_wolf(residuals, assume_centered=True)
    # residuals around n_runs means lose one degree of freedom per stimulus
    covariance *= runs_data.shape[0] / max(runs_data.shape[0] - 1, 1)
    return torch.from_numpy(covariance).to(device=runs_data.device, dtype=runs_data.dtype)


# ------------------------------------------------------------------------------------ public entry
def rdm(
    X: Any,
    metric: str = "correlation",
    descriptors: Mapping[str, Any] | None = None,
    *,
    noise_precision: Any = None,
    noise_covariance: Any = None,
    runs: Any = None,
    conditions: Any = None,
    per_unit: bool = False,
    dtype: torch.dtype = torch.float64,
    name: str | None = None,
) -> RDM:
    """Compute a representational dissimilarity matrix.

    Parameters
    ----------
    X
        Array of shape (n_stimuli, n_units), NumPy or torch (computed on the tensor's device).
        For ``metric="crossnobis"``: array of shape (n_runs, n_stimuli, n_units), or shape
        (n_observations, n_units) together with ``runs``.
    metric
        One of "euclidean", "sqeuclidean", "correlation", "cosine", "mahalanobis", "crossnobis";
        the table in this module's docstring gives each definition and its rsatoolbox twin.
    descriptors
        Per-stimulus metadata, name -> array of shape (n_stimuli,), for example ``{"label": y}``.
    noise_precision, noise_covariance
        Array of shape (n_units, n_units) for "mahalanobis" and (optionally, for noise
        whitening) "crossnobis". For "crossnobis", ``noise_covariance="residuals"`` estimates it
        from the residuals around each stimulus's mean over runs (Ledoit-Wolf shrinkage).
    runs
        Array of shape (n_observations,): the run/partition of every row of a 2-D X
        (crossnobis). Without ``conditions``, each run's rows must list the stimuli in the same
        order.
    conditions
        Array of shape (n_observations,): the stimulus of every row (crossnobis with ``runs``);
        repeats within a run are averaged and the RDM's rows follow ``np.unique(conditions)``.
    per_unit
        Divide by n_units, rsatoolbox's convention for its squared metrics ("sqeuclidean",
        "mahalanobis", "crossnobis" only).
    dtype
        Working precision; float64 by default, on any device, so results are exact to ~1e-12.
    name
        Stored on the result (for example the layer).

    Returns
    -------
    RDM
        ``np.asarray(result)`` is the array of shape (n_stimuli, n_stimuli).

    Raises
    ------
    ValueError
        Unknown metric (with the nearest names), NaN/inf in X, fewer than 3 stimuli, a stimulus
        for which the metric is undefined, a missing or singular noise matrix.
    MemoryLimitError
        The (n_stimuli, n_stimuli) work would exceed the memory limit (``analyses.set_memory_limit``);
        raised before it is allocated. ``rdm_chunked`` with ``path`` computes it on disk instead.
    """
    if metric not in RDM_METRICS:
        raise unknown_name_error("RDM metric", metric, RDM_METRICS)
    if per_unit and metric not in _PER_UNIT_METRICS:
        raise ValueError(f"per_unit=True applies only to {sorted(_PER_UNIT_METRICS)}, not {metric!r}")
    descriptors = dict(descriptors or {})
    if metric == "crossnobis":
        runs_data, condition_values = _crossnobis_runs(X, runs, conditions, dtype)
        check_stimulus_count(runs_data.shape[1])
        _check_rdm_memory(runs_data.shape[1], metric, runs_data, per_unit)
        if isinstance(noise_covariance, str):
            if noise_covariance != "residuals":
                raise ValueError(f"noise_covariance={noise_covariance!r}: the only string accepted is 'residuals'")
            noise_covariance = estimate_noise_covariance(runs_data)
        precision = _resolve_precision(noise_precision, noise_covariance, runs_data.shape[-1], runs_data.device, dtype)
        D = _crossnobis(runs_data, precision)
        n_units = runs_data.shape[-1]
        if condition_values is not None:
            descriptors.setdefault("condition", condition_values)
    else:
        data = as_float_tensor(X, "X", dtype)
        if data.ndim != 2:
            raise ValueError(f"X must have shape (n_stimuli, n_units), got {tuple(data.shape)}; flatten or pool units first")
        check_stimulus_count(data.shape[0])
        _check_rdm_memory(data.shape[0], metric, data, per_unit)
        precision = _resolve_precision(noise_precision, noise_covariance, data.shape[1], data.device, dtype)
        prepared = _PREPARE[metric](data, precision=precision)
        squared = prepared.squared_norms()
        D = _finish_square(prepared.finish(gram(prepared.Z), squared, squared))
        n_units = data.shape[1]
    if per_unit:
        D = D / n_units
    return RDM(D.cpu().numpy(), metric, descriptors, name, check=False)


def rdm_bytes(
    n_stimuli: int,
    metric: str,
    itemsize: int = 8,
    *,
    per_unit: bool = False,
    cpu_float64: bool = True,
    on_cpu: bool = True,
) -> int:
    """Estimated peak bytes of the (n_stimuli, n_stimuli) work of ``rdm`` (its input not counted).

    The Gram matrix (one buffer, or three while a non-NumPy Gram is symmetrised), a temporary of
    the distance metrics' finishing step, the per-unit division, crossnobis's accumulator and its
    four temporaries, and the float64 result on the host when the work ran elsewhere or in
    another precision.
    """
    if metric == "crossnobis":
        peak = 5 + (1 if per_unit else 0)
    else:
        finishing = 2 if metric in _DISTANCE_METRICS else 1
        peak = max(1 if cpu_float64 else 3, finishing, 2 if per_unit else 1)
    needed = square_bytes(n_stimuli, peak, itemsize)
    if not on_cpu:
        needed += square_bytes(n_stimuli, 1, itemsize)
    if itemsize != 8:
        needed += square_bytes(n_stimuli, 1, 8)
    return needed


def _check_rdm_memory(n_stimuli: int, metric: str, data: torch.Tensor, per_unit: bool) -> None:
    needed = rdm_bytes(
        n_stimuli, metric, data.element_size(), per_unit=per_unit,
        cpu_float64=data.device.type == "cpu" and data.dtype == torch.float64, on_cpu=data.device.type == "cpu",
    )
    advice = "use a subset of the stimuli" if metric == "crossnobis" else CHUNKED_ADVICE
    check_memory(needed, f"analyses.rdm (metric={metric!r}) on {stimuli(n_stimuli)}", advice)


def rdm_chunked(
    X: Any,
    metric: str = "correlation",
    *,
    path: str | os.PathLike | None = None,
    condensed: bool = False,
    memory_budget: int | str = "256MB",
    descriptors: Mapping[str, Any] | None = None,
    noise_precision: Any = None,
    noise_covariance: Any = None,
    per_unit: bool = False,
    dtype: torch.dtype = torch.float64,
    name: str | None = None,
    progress: bool = True,
) -> RDM:
    """Compute a large RDM in row blocks within a memory budget, optionally straight to disk.

    Same metrics and conventions as ``rdm`` (except "crossnobis"), same values to rounding.

    Parameters
    ----------
    X
        Array of shape (n_stimuli, n_units); may itself be a ``np.memmap``.
    path
        Where to write a ``.npy`` file (square float64 matrix, or the condensed upper triangle
        when ``condensed``). It is written to a temporary file and renamed when complete, so an
        interrupted run never leaves a torn file. None keeps the result in memory, within the
        memory limit (``analyses.set_memory_limit``; ``MemoryLimitError`` above it).
    condensed
        Store only the upper triangle: n(n-1)/2 values instead of n^2.
    memory_budget
        Bytes (or a string such as "512MB") for the working blocks: the Gram block of
        (block_rows, n_stimuli) values and its temporaries. The transformed data (as large as X)
        is not counted.

    Returns
    -------
    RDM
        Backed by a read-only memmap when ``path`` is given; a condensed result keeps only the
        upper triangle (``rdm.condensed()``) until the square matrix is asked for.
    """
    if metric not in _PREPARE:
        raise unknown_name_error("chunked RDM metric", metric, tuple(_PREPARE))
    if per_unit and metric not in _PER_UNIT_METRICS:
        raise ValueError(f"per_unit=True applies only to {sorted(_PER_UNIT_METRICS)}, not {metric!r}")
    data = as_float_tensor(X, "X", dtype)
    if data.ndim != 2:
        raise ValueError(f"X must have shape (n_stimuli, n_units), got {tuple(data.shape)}")
    n, n_units = data.shape
    check_stimulus_count(n)
    budget = parse_bytes(memory_budget, "memory budget")
    if path is None:
        result_bytes = 4 * n * (n - 1) if condensed else square_bytes(n, 1)
        check_memory(
            result_bytes + min(budget, square_bytes(n, 4)),
            f"analyses.rdm_chunked (metric={metric!r}, path=None) on {stimuli(n)}",
            "pass path='rdm.npy' (with condensed=True to halve it) so that the RDM is written to disk instead of "
            "kept in memory",
        )
    precision = _resolve_precision(noise_precision, noise_covariance, n_units, data.device, dtype)
    prepared = _PREPARE[metric](data, precision=precision)
    squared = prepared.squared_norms()
    bytes_per_row = 4 * 8 * n  # the block, the finished block and two temporaries, float64
    block_rows = int(max(1, min(n, budget // bytes_per_row)))
    scale = 1.0 / n_units if per_unit else 1.0

    def allocate(target):
        shape = (n * (n - 1) // 2,) if condensed else (n, n)
        if target is None:
            return np.zeros(shape)
        return np.lib.format.open_memmap(target, mode="w+", dtype=np.float64, shape=shape)

    def fill(out: np.ndarray) -> None:
        starts = range(0, n, block_rows)
        for start in tqdm(starts, desc=f"RDM blocks ({metric})", disable=not progress, leave=False):
            stop = min(start + block_rows, n)
            G = prepared.Z[start:stop] @ prepared.Z[start:].T
            rows, cols = (None, None) if squared is None else (squared[start:stop], squared[start:])
            block = prepared.finish(G, rows, cols)
            if scale != 1.0:
                block *= scale
            local = torch.arange(stop - start, device=block.device)
            block[local, local] = 0.0  # the diagonal sits at column offset == row offset
            block = block.cpu().numpy()
            width = stop - start
            block[:, :width] = (block[:, :width] + block[:, :width].T) / 2  # exact symmetry where blocks meet
            if condensed:
                for r in range(stop - start):
                    i = start + r
                    offset = i * n - i * (i + 1) // 2
                    out[offset : offset + n - i - 1] = block[r, r + 1 :]
            else:
                out[start:stop, start:] = block
                out[start:, start:stop] = block.T

    if path is None:
        result = allocate(None)
        fill(result)
    else:
        from zoo import atomic_path

        path = os.fspath(path)
        with atomic_path(path, suffix=".npy") as tmp:
            out = allocate(tmp)
            fill(out)
            out.flush()
            del out
        result = np.load(path, mmap_mode="r")
    if condensed:
        return RDM.from_condensed(result, metric, descriptors, name, check=False)
    return RDM(result, metric, descriptors, name, check=False)
