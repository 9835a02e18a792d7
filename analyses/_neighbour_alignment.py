"""Nearest-neighbour alignment of two representations: mutual k-NN and CKNNA (Huh et al. 2024).

Both measures follow "The Platonic Representation Hypothesis" (Huh, Cheung, Wang and Isola 2024) and the
conventions of its authors' code (platonic-rep, ``metrics.py`` with the feature preparation of
``measure_alignment.py``), restated here:

- Neighbours by cosine. Each stimulus's features (flattened, float64) are divided by their L2 norm, so the
  kernel is ``K_ij = <x_i, x_j> / (||x_i|| ||x_j||)``, and the k neighbours of stimulus i are the k other
  stimuli with the largest ``K_ij``. A stimulus is never its own neighbour, so ``1 <= k < n_stimuli``.
  Features are not centred: adding a constant to every stimulus changes the result.
- Ties. The reference ranks with ``argsort``/``torch.topk``, whose order among equal values is unspecified.
  Here an exact tie in ``K_ij`` goes to the lower stimulus index. Duplicated stimuli (identical rows) are
  detected and share one computed similarity, so they tie exactly: the copies of a stimulus are each other's
  first neighbours, lowest index first. Rows equal only up to a positive factor have the same direction, but
  their cosines may differ in the last bit, so rounding orders them.
- ``mutual_knn``: the mean over stimuli of ``|N_X(i) & N_Y(i)| / k``, the share of neighbours the two
  representations agree on. A similarity in [0, 1]: 1 for identical neighbour sets; about ``k / (n - 1)``
  for unrelated ones. Symmetric.
- ``cknna`` (centred kernel nearest-neighbour alignment): CKA restricted to mutual neighbours. With
  ``M_ij = 1`` when j is among the k neighbours of i in both X and Y, ``A = M * K`` and ``B = M * L``
  (elementwise; ``K``, ``L`` the cosine kernels, zero diagonal),
  ``cknna = HSIC(A, B) / (sqrt(HSIC(A_X, A_X) HSIC(B_Y, B_Y)) + 1e-6)``, where ``A_X`` keeps K on X's own
  neighbours, ``B_Y`` L on Y's, and HSIC is the unbiased estimator of Song et al. 2012 (their eq. 5):
  ``HSIC(A, B) = [tr(A B) + 1'A1 1'B1 / ((n-1)(n-2)) - 2 1'A B1 / (n-2)] / (n (n-3))``. The masks are not
  symmetric (j a neighbour of i does not make i one of j), so neither are A and B; the formula is applied to
  them as they are, like the reference's (its ``unbiased=True`` default, the paper's setting). The 1e-6 in
  the denominator is the reference's, kept so that values match it; it pulls every value slightly towards 0
  (``cknna(X, X)`` is ``h / (h + 1e-6)``, just under 1). Requires ``k >= 2`` and at least 4 stimuli.
  Range: a similarity, 1 (just under) for identical representations, near 0 for unrelated ones. It is not
  bounded to [-1, 1] by construction and can be negative (unbiased HSIC estimates can be, and cosines can
  be negative). Because A and B are not symmetric, the ``1'A B1`` term makes it not exactly symmetric in X
  and Y; swapping them changes it by small amounts (1e-3 to 1e-2 on random data; see the tests).

Both are invariant to anything that keeps every cosine: rotations (orthogonal maps) of the units, permutation
of units, isotropic scaling, and scaling each stimulus by its own positive factor.

The reference's pipeline also clips each layer's features at their 95th absolute percentile before
normalising (``remove_outliers``). That is a preprocessing choice, not part of the measures, and is not done
here: clip first to reproduce the paper's numbers.

Refused with ``ValueError`` (cosine neighbourhoods are undefined or arbitrary there): a stimulus whose features
are all zero (it has no direction: drop it), a representation whose stimuli all point in the same direction
(every cosine is 1, so neighbours would come from the tie rule alone: record a layer that varies), ``k`` outside
``1 .. n_stimuli - 1``, NaN or inf, different stimulus counts, and for ``cknna`` ``k < 2``, fewer than 4
stimuli, or a representation whose own-neighbour HSIC is not positive (the normalisation is undefined).

Shared-decomposition protocol: ``prepare_knn(X, k)`` summarises one layer as its neighbour indices and their
cosines, arrays of shape (n_stimuli, k); ``compare_mutual_knn`` and ``compare_cknna`` work on two summaries in
O(n k^2), so all pairs of many layers cost little once each layer is prepared (preparing is one pass over the
n x n cosines, in blocks of rows).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from analyses._cka import flatten_pair

__all__ = ["NeighbourSummary", "cknna", "compare_cknna", "compare_mutual_knn", "mutual_knn", "prepare_knn"]

# The reference adds this to CKNNA's denominator; kept so that values match its.
CKNNA_EPS = 1e-6

# Rows of the (n, n) cosine matrix handled at once: about 16 MiB of float64 per block.
_BLOCK_ELEMENTS = 2**21


@dataclass(frozen=True)
class NeighbourSummary:
    """One layer's k nearest neighbours (by cosine, self excluded, ties to the lower index).

    Attributes
    ----------
    indices
        Tensor of shape (n_stimuli, k): row i lists i's neighbours, most similar first (ties: lower index first).
    similarities
        Tensor of shape (n_stimuli, k): the cosine of stimulus i with each of them.
    reverse
        Tensor of shape (n_stimuli, k): where i stands among the neighbours of its r-th neighbour j
        (``indices[j, reverse[i, r]] == i``), or k when i is not one of j's neighbours.
    own_hsic
        The unbiased HSIC of the cosines kept on the layer's own neighbours (CKNNA's normaliser), or None
        with fewer than 4 stimuli.
    """

    indices: torch.Tensor
    similarities: torch.Tensor
    reverse: torch.Tensor
    own_hsic: float | None

    @property
    def n_stimuli(self) -> int:
        return self.indices.shape[0]

    @property
    def k(self) -> int:
        return self.indices.shape[1]


def _check_k(k: Any, n: int) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k < n:
        raise ValueError(
            f"k must be an integer from 1 to n_stimuli - 1 = {n - 1} (a stimulus is not its own neighbour); got {k!r}"
        )
    return k


def _unit_directions(X: torch.Tensor, name: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Unit-norm rows to take cosines between, and, when some stimuli are duplicated, each stimulus's row
    among them (None when every row is distinct and the rows are X's own, in order)."""
    distinct, inverse = torch.unique(X, dim=0, return_inverse=True)
    norms = torch.linalg.vector_norm(distinct, dim=1)
    zero = norms == 0
    if bool(zero.any()):
        stimuli = torch.nonzero(zero[inverse]).flatten()
        raise ValueError(
            f"{name} has {len(stimuli)} stimulus/stimuli whose features are all zero (first: index "
            f"{int(stimuli[0])}); they have no direction, so their cosine neighbours are undefined: drop them"
        )
    directions = distinct / norms[:, None]
    if bool(((directions - directions[0]).abs() <= 1e-12).all()):
        raise ValueError(
            f"every stimulus of {name} points in the same direction, so every cosine is 1 and no neighbour is "
            "nearer than another; record a layer that varies across stimuli, or drop this one"
        )
    if len(distinct) == len(X):
        return X / torch.linalg.vector_norm(X, dim=1, keepdim=True), None
    return directions, inverse


def _ranked(scores: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
    """The columns of each row ordered by descending score, equal scores by ascending column."""
    columns = torch.sort(columns, dim=1).values
    order = torch.sort(scores.gather(1, columns), dim=1, descending=True, stable=True).indices
    return columns.gather(1, order)


def _top_k_lowest_index(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Column indices of each row's k largest scores, ties to the lower index, most similar first (rows, k)."""
    # torch.topk's choice among equal values is unspecified: a value equal to the k-th largest was left out
    # exactly when the (k+1)-th largest equals it (the -inf of the stimulus itself never does)
    top = torch.topk(scores, k + 1, dim=1)  # k < n_stimuli, the row's length
    threshold = top.values[:, k - 1 : k]
    columns = top.indices[:, :k]
    tied = torch.nonzero(top.values[:, k] == threshold[:, 0]).flatten()
    if len(tied):
        rows, limit = scores[tied], threshold[tied]
        above, at = rows > limit, rows == limit
        room = k - above.sum(dim=1, keepdim=True)
        keep = above | (at & (torch.cumsum(at, dim=1) <= room))
        columns = columns.clone()
        columns[tied] = torch.nonzero(keep)[:, 1].reshape(len(tied), k)
    return _ranked(scores, columns)


def _reverse_ranks(indices: torch.Tensor) -> torch.Tensor:
    """For each (i, r), the rank of i among the neighbours of j = indices[i, r], or k where it is not one."""
    n, k = indices.shape
    back = indices[indices] == torch.arange(n, device=indices.device)[:, None, None]  # (n, k, k)
    return torch.where(back.any(dim=2), back.to(torch.int8).argmax(dim=2), k)


def _hsic_unbiased(indices: torch.Tensor, reverse: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Song et al.'s unbiased HSIC of two n x n matrices A, B with zero diagonal that are nonzero only where
    row i has column indices[i, r]; there they hold a[i, r] and b[i, r], both arrays of shape (n, k)."""
    n = indices.shape[0]
    # tr(A B) = sum_ij A_ij B_ji; B_ji sits in row j at rank reverse[i, r] (k: absent, read as 0)
    b_padded = torch.cat([b, torch.zeros(n, 1, dtype=b.dtype, device=b.device)], dim=1)
    trace = (a * b_padded[indices, reverse]).sum()
    totals = a.sum() * b.sum() / ((n - 1) * (n - 2))
    # 1'A B 1 = sum_l (column sums of A)_l (row sums of B)_l
    column_sums = torch.zeros(n, dtype=a.dtype, device=a.device).index_add_(0, indices.flatten(), a.flatten())
    cross = 2 * (column_sums * b.sum(dim=1)).sum() / (n - 2)
    return (trace + totals - cross) / (n * (n - 3))


def prepare_knn(X: torch.Tensor, k: int = 10) -> NeighbourSummary:
    """Summarise one layer by its k nearest neighbours, for ``compare_mutual_knn`` and ``compare_cknna``.

    Parameters
    ----------
    X
        Validated float64 tensor of shape (n_stimuli, n_units) (as from ``analyses._cka.flatten_units``).
    k
        Neighbours per stimulus, from 1 to n_stimuli - 1.

    Returns
    -------
    NeighbourSummary
        Neighbour indices, their cosines and reverse ranks, each of shape (n_stimuli, k), and the layer's
        own-neighbour HSIC.

    Raises
    ------
    ValueError
        ``k`` out of range, a stimulus with all-zero features, or all stimuli in one direction.
    """
    return _prepare(X, k, "X")


def _prepare(X: torch.Tensor, k: int, name: str) -> NeighbourSummary:
    n = X.shape[0]
    k = _check_k(k, n)
    directions, inverse = _unit_directions(X, name)
    rows = max(1, _BLOCK_ELEMENTS // n)
    indices, similarities = [], []
    for start in range(0, n, rows):
        block = torch.arange(start, min(start + rows, n), device=X.device)
        if inverse is None:
            cosines = directions[block] @ directions.T
        else:  # cosines between distinct rows, spread to stimuli so that duplicated stimuli tie exactly
            cosines = (directions[inverse[block]] @ directions.T).index_select(1, inverse)
        cosines[torch.arange(len(block), device=X.device), block] = -torch.inf
        nearest = _top_k_lowest_index(cosines, k)
        indices.append(nearest)
        similarities.append(cosines.gather(1, nearest))
    indices, similarities = torch.cat(indices), torch.cat(similarities)
    reverse = _reverse_ranks(indices)
    own = float(_hsic_unbiased(indices, reverse, similarities, similarities)) if n >= 4 else None
    return NeighbourSummary(indices, similarities, reverse, own)


def _check_summaries(a: NeighbourSummary, b: NeighbourSummary) -> None:
    if a.n_stimuli != b.n_stimuli:
        raise ValueError(
            f"the summaries have {a.n_stimuli} and {b.n_stimuli} stimuli; prepare both layers from the same stimuli"
        )
    if a.k != b.k:
        raise ValueError(f"the summaries use k = {a.k} and k = {b.k}; prepare both layers with the same k")


def compare_mutual_knn(a: NeighbourSummary, b: NeighbourSummary) -> float:
    """Mutual k-NN alignment of two prepared layers: the mean share of neighbours they agree on, in [0, 1]."""
    _check_summaries(a, b)
    shared = (a.indices[:, :, None] == b.indices.to(a.indices.device)[:, None, :]).sum()
    return float(shared) / (a.n_stimuli * a.k)


def compare_cknna(a: NeighbourSummary, b: NeighbourSummary) -> float:
    """CKNNA of two prepared layers (a as X, b as Y): CKA with unbiased HSIC restricted to mutual neighbours.

    Raises
    ------
    ValueError
        Mismatched summaries, ``k < 2``, fewer than 4 stimuli, or an own-neighbour HSIC that is not positive.
    """
    _check_summaries(a, b)
    n, k = a.n_stimuli, a.k
    if k < 2:
        raise ValueError(f"CKNNA needs k >= 2 (as the reference requires); got k = {k}")
    if n < 4:
        raise ValueError(f"CKNNA's unbiased HSIC needs at least 4 stimuli; got {n}")
    for name, summary in (("X", a), ("Y", b)):
        if not summary.own_hsic > 0:
            raise ValueError(
                f"the HSIC of {name}'s cosines on its own neighbours is {summary.own_hsic:.3g}, not positive, so "
                "CKNNA's normalisation is undefined; use a larger k, more stimuli, or mutual_knn"
            )
    device = a.indices.device
    match = a.indices[:, :, None] == b.indices.to(device)[:, None, :]  # (n, k, k): at most one True per (i, r)
    mutual = match.any(dim=2)
    # both masked kernels are laid out on a's neighbours; entries outside the mutual ones are zero
    a_values = torch.where(mutual, a.similarities, 0.0)
    b_values = (match * b.similarities.to(device)[:, None, :]).sum(dim=2)
    cross = _hsic_unbiased(a.indices, a.reverse, a_values, b_values)
    return float(cross) / (math.sqrt(a.own_hsic * b.own_hsic) + CKNNA_EPS)


def _pair(X: Any, Y: Any, k: int) -> tuple[NeighbourSummary, NeighbourSummary]:
    X, Y = flatten_pair(X, Y)
    return _prepare(X, k, "X"), _prepare(Y, k, "Y")


def mutual_knn(X: Any, Y: Any, k: int = 10) -> float:
    """Mutual k-nearest-neighbour alignment (Huh et al. 2024): the mean over stimuli of the share of its k
    cosine neighbours that X and Y agree on. A similarity in [0, 1], symmetric.

    Parameters
    ----------
    X, Y
        Arrays of shape (n_stimuli, units_x) and (n_stimuli, units_y) (NumPy or torch, any float dtype;
        higher-rank arrays are flattened per stimulus), the same stimuli in the same order.
    k
        Neighbours per stimulus, from 1 to n_stimuli - 1 (a stimulus is not its own neighbour).

    Raises
    ------
    ValueError
        See the module docstring: all-zero stimuli, all stimuli in one direction, k out of range, NaN or inf,
        different stimulus counts.
    """
    return compare_mutual_knn(*_pair(X, Y, k))


def cknna(X: Any, Y: Any, k: int = 10) -> float:
    """CKNNA (Huh et al. 2024): CKA with the unbiased HSIC of the cosine kernels restricted to pairs that are
    neighbours in both X and Y. 1 (just under) for identical representations, near 0 for unrelated ones, can
    be negative; see the module docstring for the exact formula, its 1e-6 and its slight asymmetry.

    Parameters
    ----------
    X, Y
        Arrays of shape (n_stimuli, units_x) and (n_stimuli, units_y), as for ``mutual_knn``.
    k
        Neighbours per stimulus, from 2 to n_stimuli - 1.

    Raises
    ------
    ValueError
        As ``mutual_knn``, and k < 2, fewer than 4 stimuli, or an own-neighbour HSIC that is not positive.
    """
    return compare_cknna(*_pair(X, Y, k))
