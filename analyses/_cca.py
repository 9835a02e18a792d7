"""Canonical correlation analysis between two representations: mean squared CCA, SVCCA and PWCCA.

Both representations, arrays of shape (n_stimuli, n_units) with the same stimuli in the same order, are
centred over stimuli. The canonical correlations are the cosines of the principal angles between the
two column spaces: the singular values of ``Qx^T Qy``, with ``Qx``, ``Qy`` orthonormal bases of the
centred representations (from their SVDs; directions whose singular value is below
``max(n, units) * eps * largest`` are dropped, so constant units and duplicated units do not count).
They are invariant to any invertible linear map of either representation's units, hence to rotation,
scaling and permutation of units; so is ``cca_similarity``. ``svcca`` is invariant to rotations,
isotropic scaling and permutations (its first step reads each direction's variance); ``pwcca`` to
permuting or isotropically scaling X's units and to any invertible map of Y (its weights sum absolute
values over X's units).

Conventions, all similarities in [0, 1] (1: the same subspace):

- ``cca_similarity``: the mean squared canonical correlation, R^2_CCA of Kornblith et al. 2019.
- ``svcca`` (Raghu et al. 2017): each representation reduced to its top principal directions that keep
  ``variance`` (99 %) of its variance, then the mean canonical correlation.
- ``pwcca`` (Morcos et al. 2018): the canonical correlations averaged with weights that say how much of
  the first representation each canonical variate accounts for, ``w_i ∝ sum_j |<h_i, x_j>|`` (``h_i`` the
  i-th canonical variate of X, ``x_j`` its centred units). It is not symmetric: pass the representation
  whose structure matters as X.

CCA is degenerate with too few stimuli: once the two ranks together exceed ``n_stimuli - 1``, the two
subspaces must share directions and correlations of 1 appear whatever the data. The functions refuse
that case and say what to do.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from analyses._cka import flatten_pair

__all__ = [
    "canonical_correlations",
    "cca_similarity",
    "svcca",
    "pwcca",
    "CCASummary",
    "prepare_cca",
    "compare_cca",
    "compare_svcca",
    "compare_pwcca",
]


def _basis(centred: torch.Tensor, name: str, variance: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """An orthonormal basis of the centred representation's column space (n, rank) and its singular values,
    truncated to the top directions that keep ``variance`` of the variance when given."""
    U, S, _ = torch.linalg.svd(centred, full_matrices=False)
    keep = S > S.max() * max(centred.shape) * torch.finfo(S.dtype).eps if len(S) else S > 0
    if not bool(keep.any()):
        raise ValueError(f"{name} is the same for every stimulus: it spans no direction, so no canonical "
                         "correlation is defined; drop it or record a layer that varies")
    U, S = U[:, keep], S[keep]
    if variance is not None:
        share = torch.cumsum(S**2, dim=0) / (S**2).sum()
        rank = int(torch.searchsorted(share, torch.tensor(variance, dtype=share.dtype)).item()) + 1
        U, S = U[:, : min(rank, len(S))], S[: min(rank, len(S))]
    return U, S


def _check_pair(Qx: torch.Tensor, Qy: torch.Tensor, n: int) -> None:
    if Qx.shape[1] + Qy.shape[1] > n - 1:
        raise ValueError(
            f"too few stimuli for CCA: the two representations span {Qx.shape[1]} and {Qy.shape[1]} directions, "
            f"more than the {n - 1} that {n} centred stimuli allow together, so canonical correlations of 1 would "
            "appear whatever the data; use more stimuli, or reduce the units first (svcca keeps the top principal "
            "directions)"
        )


def _correlations(Qx: torch.Tensor, Qy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Canonical correlations (descending) and the X-side rotation (rank_x, k) that gives the canonical variates."""
    u, rho, _ = torch.linalg.svd(Qx.T @ Qy, full_matrices=False)
    return rho.clamp(0.0, 1.0), u


@dataclass
class CCASummary:
    """One representation prepared for CCA: its centred units, an orthonormal basis of their span, and
    the singular values of that basis's directions."""

    centred: torch.Tensor
    basis: torch.Tensor
    singular_values: torch.Tensor


def prepare_cca(X: torch.Tensor, variance: float | None = None, name: str = "X") -> CCASummary:
    """The per-layer part of every CCA measure, computed once per layer in all-pairs maps.

    Parameters
    ----------
    X
        A validated float64 tensor of shape (n_stimuli, n_units) (``flatten_units``).
    variance
        Keep only the top principal directions explaining this share of the variance (SVCCA's step).
    """
    if X.shape[0] < 3:
        raise ValueError(f"{name} has {X.shape[0]} stimuli; canonical correlations need at least 3")
    centred = X - X.mean(dim=0)
    basis, singular_values = _basis(centred, name, variance)
    return CCASummary(centred, basis, singular_values)


def _checked(a: CCASummary, b: CCASummary) -> None:
    if a.centred.shape[0] != b.centred.shape[0]:
        raise ValueError(
            f"X has {a.centred.shape[0]} stimuli and Y {b.centred.shape[0]}; pass the same stimuli in the same order"
        )
    _check_pair(a.basis, b.basis.to(a.basis.device), a.centred.shape[0])


def compare_cca(a: CCASummary, b: CCASummary) -> float:
    """Mean squared canonical correlation of two prepared representations."""
    _checked(a, b)
    return float((_correlations(a.basis, b.basis.to(a.basis.device))[0] ** 2).mean())


def compare_svcca(a: CCASummary, b: CCASummary) -> float:
    """Mean canonical correlation of two representations prepared with ``prepare_cca(X, variance)``."""
    _checked(a, b)
    return float(_correlations(a.basis, b.basis.to(a.basis.device))[0].mean())


def compare_pwcca(a: CCASummary, b: CCASummary) -> float:
    """PWCCA of two prepared representations; ``a`` sets the weights."""
    _checked(a, b)
    rho, rotation = _correlations(a.basis, b.basis.to(a.basis.device))
    variates = a.basis @ rotation  # (n, k): unit-norm canonical variates of X
    weights = (variates.T @ a.centred).abs().sum(dim=1)
    return float((weights * rho).sum() / weights.sum())


def _pair(X: Any, Y: Any, variance: float | None = None) -> tuple[CCASummary, CCASummary]:
    X, Y = flatten_pair(X, Y)
    a, b = prepare_cca(X, variance, "X"), prepare_cca(Y, variance, "Y")
    _checked(a, b)
    return a, b


def canonical_correlations(X: Any, Y: Any) -> np.ndarray:
    """The canonical correlations of two representations, in descending order.

    Parameters
    ----------
    X, Y
        Arrays of shape (n_stimuli, units_x) and (n_stimuli, units_y) (NumPy or torch; higher-rank
        arrays are flattened per stimulus).

    Returns
    -------
    np.ndarray
        min(rank_x, rank_y) correlations in [0, 1].

    Raises
    ------
    ValueError
        Different stimulus counts, fewer than 3 stimuli, NaN or inf, a constant representation, or
        ranks that together exceed ``n_stimuli - 1`` (see the module docstring).
    """
    a, b = _pair(X, Y)
    return _correlations(a.basis, b.basis)[0].cpu().numpy()


def cca_similarity(X: Any, Y: Any) -> float:
    """Mean squared canonical correlation (R^2_CCA, Kornblith et al. 2019): a similarity in [0, 1],
    symmetric, invariant to invertible linear maps of either representation. Raises as
    ``canonical_correlations``."""
    return compare_cca(*_pair(X, Y))


def svcca(X: Any, Y: Any, variance: float = 0.99) -> float:
    """SVCCA (Raghu et al. 2017): the mean canonical correlation of the two representations reduced to their
    top principal directions keeping ``variance`` of their variance; a similarity in [0, 1], symmetric.

    Parameters
    ----------
    X, Y
        Arrays of shape (n_stimuli, units).
    variance
        Share of each representation's variance its kept directions explain, in (0, 1].
    """
    if not 0.0 < variance <= 1.0:
        raise ValueError(f"variance must lie in (0, 1]; got {variance}")
    return compare_svcca(*_pair(X, Y, variance))


def pwcca(X: Any, Y: Any) -> float:
    """PWCCA (Morcos et al. 2018): canonical correlations weighted by how much of X each canonical variate
    accounts for, ``w_i ∝ sum_j |<h_i, x_j>|``; a similarity in [0, 1]. Not symmetric (X sets the weights).
    Raises as ``canonical_correlations``."""
    return compare_pwcca(*_pair(X, Y))
