"""Subspaces: principal angles, subspace distance, axis alignment, and PCA vs linear autoencoders.

A linear autoencoder trained to its optimum spans PCA's subspace but, without regularisation, not
PCA's axes (Baldi & Hornik 1989; Plaut 2018). With a uniform L2 penalty the principal directions
are the left singular vectors of the decoder (Kunin et al. 2019); with penalties that increase
across code units the decoder's columns themselves are the principal directions, in order (Bao
et al. 2020). ``compare_subspaces`` measures all three claims over a sweep of code sizes k.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch
from scipy.optimize import linear_sum_assignment
from tqdm.auto import tqdm

from analyses._linear_autoencoder import LinearAutoencoder, _as_data_tensor
from zoo._names import unknown_name_error

__all__ = [
    "principal_angles",
    "subspace_distance",
    "axis_alignment_error",
    "compare_subspaces",
    "SubspaceComparison",
]


def _as_float64_tensor(array: Any, name: str) -> torch.Tensor:
    """Return ``array`` as a 2-D float64 tensor on its own device (NumPy arrays go to the CPU)."""
    tensor = array.detach() if isinstance(array, torch.Tensor) else torch.as_tensor(np.asarray(array))
    if tensor.ndim == 1:
        tensor = tensor[:, None]
    if tensor.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array of shape (n_dims, n_vectors); got shape {tuple(tensor.shape)}")
    if tensor.device.type == "mps":  # no float64 on MPS
        tensor = tensor.cpu()
    tensor = tensor.to(torch.float64)
    if not torch.isfinite(tensor).all():
        raise ValueError(f"{name} contains NaN or infinite values; remove or impute them first")
    return tensor


def _orthonormal_basis(matrix: torch.Tensor) -> torch.Tensor:
    q, _ = torch.linalg.qr(matrix, mode="reduced")
    return q


def principal_angles(A: Any, B: Any) -> np.ndarray:
    """Principal angles between the column spaces of ``A`` and ``B``.

    Parameters
    ----------
    A
        Array of shape (n_dims, p): its columns span the first subspace.
    B
        Array of shape (n_dims, q): its columns span the second subspace.

    Returns
    -------
    numpy.ndarray
        Array of shape (min(p, q),): the angles in radians, ascending.

    Notes
    -----
    Both bases are orthonormalised by QR; the cosines are the singular values of
    ``Q_A.T @ Q_B``, clipped to [0, 1]. Small angles are taken from the sines instead (singular
    values of ``Q_B - Q_A Q_A.T Q_B``), as in Knyazev & Argentati (2002) and
    ``scipy.linalg.subspace_angles``, because ``arccos`` loses precision near 0.
    """
    a, b = _as_float64_tensor(A, "A"), _as_float64_tensor(B, "B")
    if a.shape[0] != b.shape[0]:
        raise ValueError(
            f"A and B must live in the same space: A has {a.shape[0]} rows and B has {b.shape[0]}; "
            "pass vectors as columns, e.g. principal_angles(pca.components_.T, ae.components_.T)"
        )
    b = b.to(a.device)
    qa, qb = _orthonormal_basis(a), _orthonormal_basis(b)
    if qa.shape[1] < qb.shape[1]:
        qa, qb = qb, qa
    cosines = torch.linalg.svdvals(qa.T @ qb).clamp(0.0, 1.0).flip(0)  # ascending
    sines = torch.linalg.svdvals(qb - qa @ (qa.T @ qb)).clamp(0.0, 1.0)  # descending = ascending angles
    angles = torch.where(cosines**2 < 0.5, torch.arccos(cosines), torch.arcsin(sines[: cosines.shape[0]]))
    return np.sort(angles.cpu().numpy())


def subspace_distance(A: Any, B: Any) -> float:
    """Mean squared sine of the principal angles between the column spaces of ``A`` and ``B``.

    0 when the subspaces coincide, 1 when they are orthogonal. For two k-dimensional subspaces
    it equals ``||P_A - P_B||_F^2 / (2 k)`` with ``P`` the orthogonal projectors.

    Parameters
    ----------
    A, B
        Arrays of shape (n_dims, p) and (n_dims, q) whose columns span the subspaces.
    """
    return float(np.mean(np.sin(principal_angles(A, B)) ** 2))


def axis_alignment_error(vectors: Any, reference: Any) -> float:
    """How far a set of axes is from a reference set of axes, ignoring order and sign.

    Parameters
    ----------
    vectors
        Array of shape (k, n_dims): one axis per row (e.g. a decoder's columns, as rows).
    reference
        Array of shape (k, n_dims): the reference axes (e.g. ``PCA.components_``).

    Returns
    -------
    float
        ``mean_i (1 - |cos(v_i, r_match(i))|)`` where rows are normalised and matched one-to-one
        by the Hungarian assignment that maximises the summed ``|cos|``. 0 when every vector is
        parallel (or anti-parallel) to a distinct reference axis; near ``1 - sqrt(1/k)``-ish
        values when the vectors are a generic rotation of the reference axes.
    """
    v, r = _as_float64_tensor(vectors, "vectors"), _as_float64_tensor(reference, "reference")
    if v.shape != r.shape:
        raise ValueError(
            f"vectors and reference must have the same shape (k, n_dims); got {tuple(v.shape)} and {tuple(r.shape)}"
        )
    r = r.to(v.device)
    v = v / v.norm(dim=1, keepdim=True).clamp_min(torch.finfo(v.dtype).tiny)
    r = r / r.norm(dim=1, keepdim=True).clamp_min(torch.finfo(r.dtype).tiny)
    cosines = (v @ r.T).abs().clamp(0.0, 1.0).cpu().numpy()
    rows, columns = linear_sum_assignment(cosines, maximize=True)
    return float(np.mean(1.0 - cosines[rows, columns]))


@dataclass
class SubspaceComparison:
    """PCA vs linear autoencoders over a sweep of code sizes.

    Attributes
    ----------
    source
        What was analysed (``"pixels"``, a layer name, ...).
    n_stimuli, n_units
        Shape of the data.
    ks
        The code sizes compared.
    metrics
        One row per (k, method): ``reconstruction_mse`` (mean squared error per element),
        ``unexplained_variance`` (fraction of total variance the reconstruction misses),
        ``subspace_distance`` (to PCA's k-dimensional subspace, mean sin^2 of the principal
        angles), ``max_angle_deg``, ``column_alignment_error`` (decoder columns vs PCA's
        components, see ``axis_alignment_error``), ``singular_vector_alignment_error`` (left
        singular vectors of the decoder vs PCA's components), ``n_iter`` and ``seconds``.
    angles
        Principal angles in radians (ascending) to PCA's subspace, by (k, method).
    explained_variance_ratio
        PCA's explained variance ratio, array of shape (max(ks),).
    estimators
        The fitted estimators by (k, method), for further inspection.
    """

    source: str
    n_stimuli: int
    n_units: int
    ks: tuple[int, ...]
    metrics: pd.DataFrame
    angles: dict[tuple[int, str], np.ndarray]
    explained_variance_ratio: np.ndarray
    estimators: dict[tuple[int, str], Any] = field(default_factory=dict, repr=False)

    def to_frame(self) -> pd.DataFrame:
        """Tidy table: one row per (k, method), with ``source``, ``n_stimuli`` and ``n_units``."""
        frame = self.metrics.copy()
        frame.insert(0, "source", self.source)
        frame["n_stimuli"], frame["n_units"] = self.n_stimuli, self.n_units
        return frame

    def angles_frame(self) -> pd.DataFrame:
        """Long table of principal angles: columns k, method, index, angle_deg."""
        rows = [
            {"k": k, "method": method, "index": i + 1, "angle_deg": float(np.degrees(angle))}
            for (k, method), angles in self.angles.items()
            for i, angle in enumerate(angles)
        ]
        return pd.DataFrame(rows, columns=["k", "method", "index", "angle_deg"])


def _default_l2(data: torch.Tensor) -> float:
    # A tenth of the mean per-unit variance: small enough that the leading components survive
    # (they do while the penalty stays below their variance), large enough to separate the
    # decoder's singular values so that its singular vectors are identifiable.
    return 0.1 * float(data.var(dim=0, unbiased=False).mean())


def compare_subspaces(
    X: Any,
    ks: Sequence[int] = (2, 5, 10, 20),
    *,
    methods: Sequence[str] = ("linear-ae", "linear-ae-l2", "linear-ae-nonuniform"),
    l2: float | None = None,
    source: str = "",
    max_iter: int = 5000,
    device: str | torch.device = "auto",
    random_state: int = 0,
    progress: bool = True,
) -> SubspaceComparison:
    """Compare PCA with linear autoencoders (plain, uniform L2, non-uniform L2) for each k.

    Parameters
    ----------
    X
        Array of shape (n_stimuli, n_units): raw stimuli (flattened) or a recorded layer.
    ks
        Code sizes; each must be at most ``min(n_stimuli, n_units)``.
    methods
        Autoencoders to fit, among ``"linear-ae"`` (no penalty), ``"linear-ae-l2"`` (uniform L2,
        Kunin et al. 2019) and ``"linear-ae-nonuniform"`` (penalties increasing across code
        units, Bao et al. 2020). PCA is always included as the reference.
    l2
        Penalty of ``"linear-ae-l2"``; the penalties of ``"linear-ae-nonuniform"`` rise linearly
        to ``5 * l2``. Default: a tenth of the mean per-unit variance of ``X``.
    source
        Label stored in the result (``"pixels"``, a layer name, ...).
    max_iter
        L-BFGS iterations per autoencoder.
    device
        Where the autoencoders train (``"auto"``: CUDA when present).
    random_state
        Seed of the autoencoders' initial weights.
    progress
        Show a progress bar over the fits.

    Returns
    -------
    SubspaceComparison
    """
    data = _as_data_tensor(X, "X")
    n_stimuli, n_units = data.shape
    ks = tuple(int(k) for k in ks)
    limit = min(n_stimuli, n_units)
    if not ks or any(k < 1 or k > limit for k in ks):
        raise ValueError(
            f"every k in ks must be between 1 and min(n_stimuli, n_units) = {limit}; got {ks}; "
            "drop the larger code sizes or record more stimuli/units"
        )
    penalties = {"linear-ae": lambda k, top: 0.0, "linear-ae-l2": lambda k, top: top}
    penalties["linear-ae-nonuniform"] = lambda k, top: 5 * top * np.arange(1, k + 1) / k
    unknown = [m for m in methods if m not in penalties]
    if unknown:
        raise unknown_name_error("subspace method", unknown[0], sorted(penalties))
    top = _default_l2(data) if l2 is None else float(l2)

    centered = data - data.mean(dim=0)
    total_variance = float((centered**2).sum(dim=1).mean())
    _, singular_values, vt = torch.linalg.svd(centered, full_matrices=False)
    variances = singular_values**2 / n_stimuli
    explained_variance_ratio = (variances / variances.sum()).cpu().numpy()[: max(ks)]

    rows, angles, estimators = [], {}, {}
    for k in ks:
        pca_mse = float(variances[k:].sum()) / n_units
        rows.append(
            dict(k=k, method="pca", reconstruction_mse=pca_mse, unexplained_variance=pca_mse * n_units / total_variance,
                 subspace_distance=0.0, max_angle_deg=0.0, column_alignment_error=0.0,
                 singular_vector_alignment_error=0.0, n_iter=0, seconds=0.0)
        )
    fits = [(k, m) for k in ks for m in methods]
    bar = tqdm(fits, desc=f"subspaces {source}".strip(), disable=not progress, leave=False)
    for k, method in bar:
        pca_axes = vt[:k].cpu()
        started = time.perf_counter()
        ae = LinearAutoencoder(k, l2=penalties[method](k, top), max_iter=max_iter, device=device,
                               random_state=random_state).fit(data)
        seconds = time.perf_counter() - started
        decoder = torch.as_tensor(ae.components_, dtype=torch.float64)  # (k, n_units)
        left_singular, _, _ = torch.linalg.svd(decoder.T, full_matrices=False)
        theta = principal_angles(pca_axes.T, decoder.T)
        mse = ae.reconstruction_error(data)
        rows.append(
            dict(k=k, method=method, reconstruction_mse=mse, unexplained_variance=mse * n_units / total_variance,
                 subspace_distance=float(np.mean(np.sin(theta) ** 2)), max_angle_deg=float(np.degrees(theta.max())),
                 column_alignment_error=axis_alignment_error(decoder, pca_axes),
                 singular_vector_alignment_error=axis_alignment_error(left_singular.T, pca_axes),
                 n_iter=ae.n_iter_, seconds=seconds)
        )
        angles[k, method] = theta
        estimators[k, method] = ae
    metrics = pd.DataFrame(rows).sort_values(["k", "method"], kind="stable").reset_index(drop=True)
    return SubspaceComparison(source=source, n_stimuli=n_stimuli, n_units=n_units, ks=ks, metrics=metrics,
                              angles=angles, explained_variance_ratio=explained_variance_ratio, estimators=estimators)
