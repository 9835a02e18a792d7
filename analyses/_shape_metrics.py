"""Shape metrics (Williams et al. 2021), orthogonal Procrustes distance and linear regression fit.

Every representation, an array of shape (n_stimuli, n_units) with the same stimuli in the same order
as the other, is centred over stimuli (a translation of its units changes nothing). Directions of the
centred representation whose singular value is below ``max(n, units) * eps * largest`` are dropped before
whitening or regression, so constant and duplicated units add nothing there (without whitening they add
nothing anyway); a representation whose centred values are all within rounding of zero
(``n * eps * max |X|``) counts as the same for every stimulus. Representations with different unit counts
are compared directly: netrep zero-pads the narrower one, which leaves every quantity below unchanged.

Conventions:

- ``shape_distance(X, Y, alpha)``: the angular shape metric of netrep's ``LinearMetric(alpha,
  center_columns=True, score_method="angular")``. Each centred representation is partially whitened,
  ``Xw = Xc (alpha I + (1 - alpha) C^(-1/2))`` with ``C = Xc^T Xc`` (not divided by n_stimuli, as in
  netrep's ``whiten``; its variance-preserving rescaling is one factor per representation and cancels;
  netrep floors C's eigenvalues at an absolute 1e-7 where we drop directions by the relative tolerance
  above, which agrees whenever C's non-zero eigenvalues exceed 1e-7).
  The distance is ``arccos(||Xw^T Yw||_* / (||Xw||_F ||Yw||_F))`` (``||.||_*`` the nuclear norm): the
  angle between the two after the best rotation; in [0, pi/2]. It is a metric (symmetric, triangle
  inequality), 0 exactly when the whitened shapes are equal. ``alpha=1``: no whitening, invariant to
  rotations, permutations and isotropic scaling of units (angular Procrustes). ``alpha=0``: fully
  whitened, invariant to any invertible linear map of the units; its cosine is the sum of the
  canonical correlations over ``sqrt(rank_x * rank_y)``, the mean canonical correlation when both
  ranks are equal. For ``0 < alpha < 1`` the blend of a scale-free and a scale-carrying term makes the
  value depend on the overall scale of each representation (and on n_stimuli), as in netrep: rescale
  inputs consistently when comparing such values.
- ``procrustes_distance(X, Y)``: each centred representation scaled to unit Frobenius norm, then
  ``min_Q ||X^ - Y^ Q||_F = sqrt(2 - 2 ||X^^T Y^||_*)`` over orthogonal Q; in [0, sqrt 2], a metric,
  invariant to rotations, permutations, isotropic scaling and translation. netrep's
  ``score_method="euclidean"`` gives the same value only for inputs already scaled to unit norm (it does
  not normalise); its angular score is ``shape_distance(alpha=1) = arccos(1 - d^2 / 2)``.
- ``regression_r2(X, Y)``: the share of Y's variance (summed over its centred units) that a least-squares
  fit from X with an intercept explains, scikit-learn's ``r2_score(multioutput="variance_weighted")``;
  in [0, 1]; not symmetric. ``ridge > 0`` fits scikit-learn's ``Ridge(alpha=ridge)`` instead (intercept
  not penalised). A constant X explains nothing (0).

What is refused (``ValueError``), rather than a NaN or a value that says nothing about the data: fewer than
3 stimuli, different stimulus counts, NaN or inf; a representation that is the same for every stimulus
(as either side of a shape distance, as Y of a regression); whitening (``alpha < 1``) when the two ranks
together exceed ``n_stimuli - 1``, where the whitened subspaces must share directions whatever the data
(as for CCA); an unpenalised regression from an X spanning ``n_stimuli - 1`` directions, which fits any Y
perfectly.

Each measure ``m`` is split for all-pairs comparisons: ``prepare_m(X)`` summarises one validated,
float64 (n_stimuli, n_units) tensor once, in stimulus space (at most ``min(n_stimuli, n_units)``
columns), and ``compare_m(a, b)`` computes the measure from two summaries.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from analyses._cka import flatten_pair

__all__ = [
    "compare_procrustes",
    "compare_regression",
    "compare_shape",
    "prepare_procrustes",
    "prepare_regression",
    "prepare_shape",
    "procrustes_distance",
    "regression_r2",
    "shape_distance",
]

MIN_STIMULI = 3


@dataclass(frozen=True)
class Decomposition:
    """A centred representation's thin SVD, kept directions only: ``Xc = U diag(S) V^T``."""

    U: torch.Tensor  # (n_stimuli, rank), orthonormal columns
    S: torch.Tensor  # (rank,), descending

    @property
    def n_stimuli(self) -> int:
        return self.U.shape[0]

    @property
    def rank(self) -> int:
        return self.U.shape[1]


@dataclass(frozen=True)
class ShapeSummary:
    """A (partially whitened) representation in stimulus space: ``factor factor^T = Xw Xw^T``, with at most
    ``min(n_stimuli, n_units)`` columns. ``rank``: the directions it spans when whitened (the only case
    that reads it); the factor's width, an upper bound, when ``alpha = 1``."""

    factor: torch.Tensor
    alpha: float
    rank: int

    @property
    def n_stimuli(self) -> int:
        return self.factor.shape[0]


@dataclass(frozen=True)
class RegressionSummary:
    """A representation as predictor (its column space, with ridge shrinkage weights) and as target (a
    factor F with ``F F^T = Xc Xc^T``)."""

    basis: torch.Tensor  # (n_stimuli, rank) orthonormal basis of the centred column space
    weights: torch.Tensor  # (rank,) S^2 / (S^2 + ridge); ones without ridge
    factor: torch.Tensor
    ridge: float

    @property
    def n_stimuli(self) -> int:
        return self.factor.shape[0]

    @property
    def rank(self) -> int:
        return self.basis.shape[1]


def _centre(X: torch.Tensor) -> torch.Tensor:
    """Centre over stimuli; a representation whose centred values are rounding noise becomes exactly zero."""
    if X.shape[0] < MIN_STIMULI:
        raise ValueError(f"got {X.shape[0]} stimuli; these measures need at least {MIN_STIMULI}")
    Xc = X - X.mean(dim=0)
    scale = X.abs().max()
    if Xc.abs().max() <= X.shape[0] * torch.finfo(X.dtype).eps * scale:
        return torch.zeros_like(Xc)
    return Xc


def _factor(Xc: torch.Tensor) -> torch.Tensor:
    """F of shape (n, min(n, units)) with ``F F^T = Xc Xc^T``: Xc itself, or for a layer wider than the
    stimulus count the triangular factor of ``Xc^T = Q R`` (``Xc Xc^T = R^T R``)."""
    if Xc.shape[1] <= Xc.shape[0]:
        return Xc
    return torch.linalg.qr(Xc.T, mode="r")[1].T


def _decompose(Xc: torch.Tensor) -> Decomposition:
    """Thin SVD through a QR factorisation (the SVD then runs on a min(n, units) square matrix)."""
    if Xc.shape[1] <= Xc.shape[0]:
        Q, R = torch.linalg.qr(Xc)
        small, S, _ = torch.linalg.svd(R)
        U = Q @ small
    else:
        R = torch.linalg.qr(Xc.T, mode="r")[1]
        U, S, _ = torch.linalg.svd(R.T)
    keep = S > S[0] * max(Xc.shape) * torch.finfo(S.dtype).eps if S[0] > 0 else S > 0
    return Decomposition(U[:, keep], S[keep])


def _nuclear_norm(M: torch.Tensor) -> torch.Tensor:
    """Sum of singular values, from the eigenvalues of the smaller of M^T M and M M^T (several times faster
    than an SVD on the CPU; a singular value near zero carries an absolute error of about
    ``sqrt(eps) * ||M||_2``)."""
    gram = M.T @ M if M.shape[1] <= M.shape[0] else M @ M.T
    return torch.linalg.eigvalsh(gram).clamp_min(0.0).sqrt().sum()


def _check_same_stimuli(n_a: int, n_b: int) -> None:
    if n_a != n_b:
        raise ValueError(f"X has {n_a} stimuli and Y {n_b}; pass the same stimuli in the same order")


def _cosine(a: ShapeSummary, b: ShapeSummary) -> float:
    """``||Xw^T Yw||_* / (||Xw||_F ||Yw||_F)``, clipped to [0, 1] against rounding."""
    _check_same_stimuli(a.n_stimuli, b.n_stimuli)
    if a.alpha != b.alpha:
        raise ValueError(f"the summaries were prepared with alpha={a.alpha} and alpha={b.alpha}; "
                         "prepare both with the same alpha")
    if a.alpha < 1.0 and a.rank + b.rank > a.n_stimuli - 1:
        raise ValueError(
            f"too few stimuli to whiten: the two representations span {a.rank} and {b.rank} directions, more than "
            f"the {a.n_stimuli - 1} that {a.n_stimuli} centred stimuli allow together, so whitened shapes would "
            "share directions whatever the data; use more stimuli, reduce the units first (e.g. PCA), or use "
            "alpha=1 (no whitening)"
        )
    nuclear = _nuclear_norm(a.factor.T @ b.factor)
    cosine = nuclear / (torch.linalg.norm(a.factor) * torch.linalg.norm(b.factor))
    return min(max(float(cosine), 0.0), 1.0)


def prepare_shape(X: torch.Tensor, alpha: float = 1.0) -> ShapeSummary:
    """Summarise one representation for ``compare_shape``.

    Parameters
    ----------
    X
        Validated float64 tensor of shape (n_stimuli, n_units).
    alpha
        Whitening parameter in [0, 1]: 0 whitens fully, 1 not at all.

    Returns
    -------
    ShapeSummary
        A factor with ``factor factor^T = Xw Xw^T`` (the whitened representation up to a rotation of its
        units, which no shape distance sees), at most ``min(n_stimuli, n_units)`` columns: with
        ``alpha < 1``, ``U diag(alpha S + 1 - alpha)`` from the thin SVD ``Xc = U diag(S) V^T``; with
        ``alpha = 1``, Xc itself or, for a layer wider than the stimulus count, ``R^T`` from ``Xc^T = Q R``.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1] (0: fully whitened, 1: no whitening); got {alpha}")
    Xc = _centre(X)
    if not bool(Xc.any()):
        raise ValueError("the representation is the same for every stimulus, so its shape is undefined; drop it "
                         "or record a layer that varies")
    if alpha == 1.0:  # no whitening: any stimulus-space factor will do, no decomposition needed
        factor = _factor(Xc)
        return ShapeSummary(factor, 1.0, factor.shape[1])
    d = _decompose(Xc)
    # Xc V = U S, so Xw = Xc V diag(alpha + (1 - alpha) / S) V^T = U diag(alpha S + 1 - alpha) V^T
    return ShapeSummary(d.U * (alpha * d.S + (1.0 - alpha)), float(alpha), d.rank)


def compare_shape(a: ShapeSummary, b: ShapeSummary) -> float:
    """The angular shape distance, in [0, pi/2], from two ``prepare_shape`` summaries (same alpha)."""
    return math.acos(_cosine(a, b))


def prepare_procrustes(X: torch.Tensor) -> ShapeSummary:
    """Summarise one representation for ``compare_procrustes``: ``prepare_shape(X, alpha=1)``."""
    return prepare_shape(X, 1.0)


def compare_procrustes(a: ShapeSummary, b: ShapeSummary) -> float:
    """The normalised Procrustes distance, in [0, sqrt 2], from two ``prepare_procrustes`` summaries."""
    if a.alpha != 1.0 or b.alpha != 1.0:
        raise ValueError("the Procrustes distance takes summaries from prepare_procrustes (alpha=1)")
    return math.sqrt(max(2.0 - 2.0 * _cosine(a, b), 0.0))


def shape_distance(X: Any, Y: Any, alpha: float = 1.0) -> float:
    """Angular shape metric of Williams et al. 2021 (netrep ``LinearMetric``, angular score).

    Parameters
    ----------
    X, Y
        Arrays of shape (n_stimuli, units_x) and (n_stimuli, units_y) (NumPy or torch; higher-rank arrays
        are flattened per stimulus); the unit counts may differ.
    alpha
        Partial whitening in [0, 1]: 1 (default) no whitening, the Procrustes end, invariant to rotations,
        permutations and isotropic scaling; 0 full whitening, the CCA end, invariant to any invertible
        linear map.

    Returns
    -------
    float
        ``arccos(||Xw^T Yw||_* / (||Xw||_F ||Yw||_F))`` in [0, pi/2]; symmetric, a metric.

    Raises
    ------
    ValueError
        See the module docstring: too few or mismatched stimuli, NaN/inf, a constant representation, or
        whitening (``alpha < 1``) with ranks that together exceed ``n_stimuli - 1``.
    """
    Xt, Yt = flatten_pair(X, Y)
    return compare_shape(prepare_shape(Xt, alpha), prepare_shape(Yt, alpha))


def procrustes_distance(X: Any, Y: Any) -> float:
    """Orthogonal Procrustes distance between two representations scaled to unit size.

    Parameters
    ----------
    X, Y
        Arrays of shape (n_stimuli, units_x) and (n_stimuli, units_y); the unit counts may differ.

    Returns
    -------
    float
        ``min_Q ||X^ - Y^ Q||_F = sqrt(2 - 2 ||X^^T Y^||_*)`` in [0, sqrt 2], with X^, Y^ the centred
        representations divided by their Frobenius norms and Q orthogonal; symmetric, a metric, invariant
        to rotations, permutations, isotropic scaling and translation. Its angular counterpart is
        ``shape_distance(X, Y, alpha=1) = arccos(1 - d^2 / 2)``.

    Raises
    ------
    ValueError
        Too few or mismatched stimuli, NaN/inf, or a representation that is the same for every stimulus.
    """
    Xt, Yt = flatten_pair(X, Y)
    return compare_procrustes(prepare_procrustes(Xt), prepare_procrustes(Yt))


def prepare_regression(X: torch.Tensor, ridge: float = 0.0) -> RegressionSummary:
    """Summarise one representation for ``compare_regression``, as predictor and as target.

    Parameters
    ----------
    X
        Validated float64 tensor of shape (n_stimuli, n_units).
    ridge
        Ridge penalty (scikit-learn's ``Ridge(alpha=ridge)``), 0 for ordinary least squares.
    """
    if not ridge >= 0.0:
        raise ValueError(f"ridge must be 0 (least squares) or positive; got {ridge}")
    Xc = _centre(X)
    d = _decompose(Xc)
    weights = d.S**2 / (d.S**2 + ridge) if ridge > 0 else torch.ones_like(d.S)
    return RegressionSummary(d.U, weights, _factor(Xc), float(ridge))


def compare_regression(a: RegressionSummary, b: RegressionSummary) -> float:
    """R^2 of the linear fit of b's representation from a's, in [0, 1], from two ``prepare_regression``
    summaries (a predicts b; prepared with the same ridge)."""
    _check_same_stimuli(a.n_stimuli, b.n_stimuli)
    if a.ridge != b.ridge:
        raise ValueError(f"the summaries were prepared with ridge={a.ridge} and ridge={b.ridge}; "
                         "prepare both with the same ridge")
    total = b.factor.square().sum()
    if not total > 0:
        raise ValueError("Y is the same for every stimulus, so it has no variance to explain; drop it or record "
                         "a layer that varies")
    if a.ridge == 0 and a.rank >= a.n_stimuli - 1:
        raise ValueError(
            f"X spans {a.rank} directions, all the {a.n_stimuli - 1} that {a.n_stimuli} centred stimuli have, so "
            "least squares fits any Y perfectly (R^2 = 1 whatever the data); use more stimuli than units, "
            "reduce X's units first (e.g. PCA), or pass ridge > 0"
        )
    # The fit is U diag(w) U^T Yc and ||Yc - fit||^2 = ||F||^2 - sum_i (2 w_i - w_i^2) |(U^T F)_i|^2 for any
    # F with F F^T = Yc Yc^T
    projected = (a.basis.T @ b.factor).square().sum(dim=1)
    explained = ((2 * a.weights - a.weights**2) * projected).sum()
    return min(max(float(explained / total), 0.0), 1.0)


def regression_r2(X: Any, Y: Any, ridge: float = 0.0) -> float:
    """Share of Y's variance explained by a linear fit from X with an intercept.

    Parameters
    ----------
    X, Y
        Arrays of shape (n_stimuli, units_x) (the predictor) and (n_stimuli, units_y) (the target).
    ridge
        Ridge penalty on the coefficients (not the intercept), scikit-learn's ``Ridge(alpha=ridge)``;
        0 (default) for ordinary least squares. Its scale is that of X's squared singular values.

    Returns
    -------
    float
        ``1 - sum ||residuals||^2 / sum ||Yc||^2`` over Y's units (scikit-learn's
        ``r2_score(Y, fit, multioutput="variance_weighted")``), in [0, 1]; 0 when X is constant. Not
        symmetric: ``regression_r2(Y, X)`` gives the other direction. It measures fit on the same stimuli,
        so it grows with X's rank (random data give about ``rank_x / (n_stimuli - 1)``); hold out stimuli or
        use ridge for a fair comparison.

    Raises
    ------
    ValueError
        Too few or mismatched stimuli, NaN/inf, a constant Y, or (without ridge) an X that spans
        ``n_stimuli - 1`` directions, which fits anything.
    """
    Xt, Yt = flatten_pair(X, Y)
    return compare_regression(prepare_regression(Xt, ridge), prepare_regression(Yt, ridge))
