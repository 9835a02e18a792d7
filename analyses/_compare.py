"""Comparing RDMs on their upper triangles, with rsatoolbox's definitions.

============  ========================================================================
method        definition on the condensed vectors a, b (p = number of stimulus pairs)
============  ========================================================================
"pearson"     Pearson r (rsatoolbox "corr")
"spearman"    Pearson r of the ranks, ties given their average rank (rsatoolbox "spearman")
"rho-a"       12 * sum(ra_c * rb_c) / (p^3 - p), ra_c the mean-centred ranks: Spearman's
              rho without tie correction (Nili et al. 2014; rsatoolbox "rho-a")
"tau-a"       (concordant - discordant) / (p (p - 1) / 2) (rsatoolbox "tau-a")
"tau-b"       scipy.stats.kendalltau, tie-corrected (rsatoolbox "tau-b" / "kendall")
"cosine"      a.b / (|a| |b|) without centring (rsatoolbox "cosine")
"cosine_cov"  whitened cosine a'V^-1 b / sqrt(a'V^-1 a b'V^-1 b), V below (rsatoolbox
              "cosine_cov"; Diedrichsen et al. 2020)
"corr_cov"    whitened Pearson: "cosine_cov" of a - mean(a) and b - mean(b), the plain
              mean, as rsatoolbox "corr_cov" centres
============  ========================================================================

A constant RDM has no Pearson, Spearman, tau-b or corr_cov correlation with anything: that raises
``ValueError``. tau-a and rho-a are defined (0) for a constant RDM, which is why they are the
recommended choices for models that predict tied dissimilarities. Cosine and cosine_cov are defined
for every RDM but the all-zero one, which raises.

The whitened methods weight the pairs by V^-1, V = 2 I + B B^T the covariance (up to scale) of
distance estimates from patterns with independent noise of equal variance: rsatoolbox's default
``sigma_k = I``, for which its ``_get_v`` builds V = Xi * Xi (elementwise), Xi = C C^T, C the
pair-contrast matrix. B is the (n_pairs, n_stimuli) incidence matrix, a one at both stimuli of each
pair. By Woodbury, with B^T B = (n - 2) I + J, ``a'V^-1 b = (a.b - r_a.r_b / n + 2 s_a s_b / n^2) / 2``,
r the row sums of the square RDM and s the sum of the condensed vector: O(n^2) time and memory, so
5,000 stimuli (12.5 M pairs) are compared in about a second. rsatoolbox does not solve with V for
``sigma_k=None``; it takes the Frobenius inner product of the double-centred matrices -H A H / 2 (the
linear CKA of the implied kernels), which is the same number: -H A H / 2 restricted to the pairs is
-V^-1 a. Other ``sigma_k`` are not supported. The whitened methods need whole condensed RDMs (length
n(n-1)/2, the upper triangle in row-major order), not an arbitrary subset of pairs.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import scipy.stats

from analyses._memory import check_memory, stimuli
from analyses._rdm import RDM, is_symmetric, n_stimuli_from_pairs
from zoo._names import unknown_name_error

__all__ = ["compare_rdms", "COMPARISON_METHODS"]

# What to use instead when RDMs are too large to compare in memory (the memory guard's advice).
SUBSET_ADVICE = (
    "compare the RDMs on a random subset of the stimuli (RDM.subset), for example a few thousand, which "
    "estimates the same comparison"
)


def rdm_vectors(rdms: Any, name: str = "RDM") -> tuple[np.ndarray, bool]:
    """Condensed vectors of one or several RDMs: (array of shape (k, n_pairs), whether one was given).

    Accepts an ``RDM``, a square matrix, a condensed vector, an array of shape (k, n, n) or
    (k, n_pairs), or a list of any of these.
    """
    if isinstance(rdms, RDM):
        return rdms.condensed()[None, :], True
    if isinstance(rdms, (list, tuple)):
        vectors = [rdm_vectors(item, f"{name}[{i}]")[0] for i, item in enumerate(rdms)]
        lengths = {v.shape[1] for v in vectors}
        if len(lengths) != 1:
            raise ValueError(f"the RDMs in {name} cover different numbers of stimulus pairs {sorted(lengths)}")
        return np.concatenate(vectors), False
    array = np.asarray(rdms, dtype=np.float64)
    if array.ndim == 1:
        n_stimuli_from_pairs(array.size)
        vectors, single = array[None, :], True
    elif array.ndim == 2 and array.shape[0] == array.shape[1] and _looks_square(array):
        vectors, single = RDM(array, check=True).condensed()[None, :], True  # condensed() checks its memory
    elif array.ndim == 2:
        n_stimuli_from_pairs(array.shape[1])
        vectors, single = array, False
    elif array.ndim == 3 and array.shape[1] == array.shape[2]:
        k, n = array.shape[:2]
        # the condensed forms and their stack
        check_memory(2 * 4 * n * (n - 1) * k, f"the condensed forms of {k} RDMs of {stimuli(n)}", SUBSET_ADVICE)
        vectors, single = np.stack([RDM(m).condensed() for m in array]), False
    else:
        raise ValueError(
            f"{name} has shape {array.shape}; pass an RDM, a square matrix, a condensed vector, "
            "or a stack of shape (k, n, n) or (k, n_pairs)"
        )
    if not np.isfinite(vectors).all():
        raise ValueError(f"{name} contains NaN or inf; RDMs must be finite")
    return vectors, single


def rdm_sizes(rdms: Any) -> tuple[int, int, int] | None:
    """(number of RDMs, stimulus pairs, bytes ``rdm_vectors`` allocates for them), read from shapes alone.

    None when the shapes say nothing sensible (``rdm_vectors`` then refuses the input itself).
    """
    if isinstance(rdms, RDM):
        n_pairs = rdms.n_stimuli * (rdms.n_stimuli - 1) // 2
        return 1, n_pairs, 0 if rdms._condensed is not None else 8 * n_pairs
    if isinstance(rdms, (list, tuple)):
        sizes = [rdm_sizes(item) for item in rdms]
        if not sizes or None in sizes:
            return None
        k, n_pairs = sum(s[0] for s in sizes), max(s[1] for s in sizes)
        return k, n_pairs, sum(s[2] for s in sizes) + 8 * k * n_pairs  # and their concatenation
    shape = np.shape(rdms)
    if len(shape) == 3 and shape[1] == shape[2]:
        n_pairs = shape[1] * (shape[1] - 1) // 2
        return shape[0], n_pairs, 2 * 8 * shape[0] * n_pairs  # the condensed forms and their stack
    if len(shape) == 2 and shape[0] == shape[1]:
        n_pairs = shape[0] * (shape[0] - 1) // 2
        return 1, n_pairs, 8 * n_pairs
    if len(shape) in (1, 2):
        return (1, shape[0], 0) if len(shape) == 1 else (shape[0], shape[1], 0)
    return None


def _described_pairs(n_pairs: int) -> str:
    try:
        return f"RDMs of {stimuli(n_stimuli_from_pairs(n_pairs))}"
    except ValueError:
        return f"{n_pairs:,} stimulus pairs"


def _looks_square(array: np.ndarray) -> bool:
    return bool(np.allclose(np.diag(array), 0) and is_symmetric(array, rtol=1e-5, atol=1e-8))


def _centre(vectors: np.ndarray) -> np.ndarray:
    return vectors - vectors.mean(axis=1, keepdims=True)


def _cosine_matrix(a: np.ndarray, b: np.ndarray, method: str) -> np.ndarray:
    norm_a, norm_b = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    for norms, which in ((norm_a, "first"), (norm_b, "second")):
        if (norms == 0).any():
            raise ValueError(
                f"an RDM in the {which} argument is constant, so its {method} correlation is undefined; "
                "use method='tau-a' or 'rho-a', which are defined for tied dissimilarities"
            )
    return np.clip((a @ b.T) / np.outer(norm_a, norm_b), -1.0, 1.0)


def _ranks(vectors: np.ndarray) -> np.ndarray:
    """Row-wise ranks from 1, ties given their average rank (``scipy.stats.rankdata(axis=1)``).

    One batched sort for all rows; 2-3x faster than scipy's, which matters inside bootstraps.
    """
    n_rows, n_columns = vectors.shape
    order = np.argsort(vectors, axis=1)
    ordered = np.take_along_axis(vectors, order, axis=1)
    starts_group = np.empty(ordered.shape, dtype=bool)
    starts_group[:, 0] = True
    np.not_equal(ordered[:, 1:], ordered[:, :-1], out=starts_group[:, 1:])
    flat = starts_group.ravel()
    starts = np.flatnonzero(flat)
    ends = np.append(starts[1:], flat.size) - 1  # every row opens a group, so groups never span rows
    average_rank = (starts % n_columns + ends % n_columns) / 2.0 + 1.0
    ranks_in_order = average_rank[np.cumsum(flat) - 1].reshape(n_rows, n_columns)
    ranks = np.empty_like(ranks_in_order)
    np.put_along_axis(ranks, order, ranks_in_order, axis=1)
    return ranks


def _pearson(a, b):
    return _cosine_matrix(_centre(a), _centre(b), "pearson")


def _spearman(a, b):
    return _cosine_matrix(_centre(_ranks(a)), _centre(_ranks(b)), "spearman")


def _cosine(a, b):
    return _cosine_matrix(a, b, "cosine")


def _row_sums(vectors: np.ndarray) -> np.ndarray:
    """Row sums of the square RDMs, array of shape (k, n), from condensed vectors of shape (k, n_pairs).

    Walks the upper triangle row by row (views only), so nothing of the size of the RDMs is allocated.
    """
    n = n_stimuli_from_pairs(vectors.shape[1])
    sums = np.zeros((vectors.shape[0], n))
    start = 0
    for i in range(n - 1):
        row = vectors[:, start : start + n - 1 - i]  # pairs (i, i+1), ..., (i, n-1)
        sums[:, i] += row.sum(axis=1)
        sums[:, i + 1 :] += row
        start += n - 1 - i
    return sums


def whitened_summary(vectors: np.ndarray, method: str, which: str = "first") -> tuple:
    """What the whitened comparisons need of condensed vectors (k, n_pairs): the vectors, their square RDMs'
    row sums, their totals and their whitened norms sqrt(a'V^-1 a); an all-zero RDM raises."""
    try:
        n = n_stimuli_from_pairs(vectors.shape[1])
    except ValueError:
        raise ValueError(
            f"{method} whitens over every pair of n stimuli, so it needs whole condensed RDMs, but got "
            f"{vectors.shape[1]} pairs, which is not an upper triangle (n(n-1)/2: 3, 6, 10, ...); a subset of pairs, "
            "such as the stimulus bootstrap's (which drops duplicated stimuli), needs an unwhitened method"
        ) from None
    row_sums, totals = _row_sums(vectors), vectors.sum(axis=1)
    squared = _whitened_inner(vectors, vectors, row_sums, row_sums, totals, totals, n, diagonal=True)
    norms = np.sqrt(np.maximum(squared, 0))
    if (norms == 0).any():  # V is positive definite: a'V^-1 a is 0 only for a = 0
        raise ValueError(
            f"an RDM in the {which} argument is all zeros, so its {method} similarity is undefined; "
            "use method='tau-a' or 'rho-a', which are defined for tied dissimilarities"
        )
    return vectors, row_sums, totals, norms


def whitened_cosine_of(summary_a: tuple, summary_b: tuple) -> np.ndarray:
    """a'V^-1 b / sqrt(a'V^-1 a b'V^-1 b) for every row of two ``whitened_summary`` results."""
    (a, r_a, s_a, norm_a), (b, r_b, s_b, norm_b) = summary_a, summary_b
    inner = _whitened_inner(a, b, r_a, r_b, s_a, s_b, r_a.shape[1])
    return np.clip(inner / np.outer(norm_a, norm_b), -1.0, 1.0)


def _whitened_cosine(a: np.ndarray, b: np.ndarray, method: str) -> np.ndarray:
    """a'V^-1 b / sqrt(a'V^-1 a b'V^-1 b) for all rows, V = 2 I + B B^T (module docstring)."""
    return whitened_cosine_of(whitened_summary(a, method, "first"), whitened_summary(b, method, "second"))


def _whitened_inner(a, b, r_a, r_b, s_a, s_b, n: int, diagonal: bool = False) -> np.ndarray:
    """a'V^-1 b = (a.b - r_a.r_b / n + 2 s_a s_b / n^2) / 2 (Woodbury); only a_i'V^-1 a_i when diagonal."""
    if diagonal:
        return 0.5 * (np.einsum("ij,ij->i", a, a) - np.einsum("ij,ij->i", r_a, r_a) / n + 2.0 * s_a**2 / n**2)
    return 0.5 * (a @ b.T - r_a @ r_b.T / n + 2.0 * np.outer(s_a, s_b) / n**2)


def _cosine_cov(a, b):
    return _whitened_cosine(a, b, "cosine_cov")


def corr_cov_summary(vectors: np.ndarray, which: str = "first") -> tuple:
    """``whitened_summary`` of the centred condensed vectors (k, n_pairs), as corr_cov compares them.

    Centring leaves nothing of a constant RDM: that is refused.
    """
    if (np.ptp(vectors, axis=1) == 0).any():
        raise ValueError(
            f"an RDM in the {which} argument is constant, so its corr_cov correlation is undefined; "
            "use method='tau-a' or 'rho-a', which are defined for tied dissimilarities"
        )
    return whitened_summary(_centre(vectors), "corr_cov", which)


def _corr_cov(a, b):
    return whitened_cosine_of(corr_cov_summary(a, "first"), corr_cov_summary(b, "second"))


def _rho_a(a, b):
    n_pairs = a.shape[1]
    return _centre(_ranks(a)) @ _centre(_ranks(b)).T * 12.0 / (n_pairs**3 - n_pairs)


def _tie_pairs(vector: np.ndarray) -> int:
    counts = np.unique(vector, return_counts=True)[1].astype(np.int64)
    return int((counts * (counts - 1) // 2).sum())


def _tau_b_single(a: np.ndarray, b: np.ndarray) -> float:
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        raise ValueError(
            "an RDM is constant, so Kendall's tau-b is undefined; use method='tau-a', defined for tied dissimilarities"
        )
    return float(scipy.stats.kendalltau(a, b, variant="b").statistic)


def _tau_a_single(a: np.ndarray, b: np.ndarray) -> float:
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return 0.0  # every pair is tied in one vector: no concordant or discordant pair
    total = a.size * (a.size - 1) // 2
    tau_b = scipy.stats.kendalltau(a, b, variant="b").statistic
    # tau_b = (C - D) / sqrt((total - ties_a) (total - ties_b)); tau_a = (C - D) / total
    return float(tau_b * np.sqrt(float(total - _tie_pairs(a)) * float(total - _tie_pairs(b))) / total)


def _pairwise(single: Callable[[np.ndarray, np.ndarray], float]) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    def compare_all(a, b):
        return np.array([[single(x, y) for y in b] for x in a])

    return compare_all


_METHODS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "pearson": _pearson,
    "spearman": _spearman,
    "rho-a": _rho_a,
    "tau-a": _pairwise(_tau_a_single),
    "tau-b": _pairwise(_tau_b_single),
    "cosine": _cosine,
    "corr_cov": _corr_cov,
    "cosine_cov": _cosine_cov,
}
_ALIASES = {"corr": "pearson", "correlation": "pearson", "kendall": "tau-b"}
# Methods defined on whole RDMs only (their whitening reads every pair of every stimulus).
WHOLE_RDM_METHODS = ("corr_cov", "cosine_cov")
COMPARISON_METHODS: tuple[str, ...] = tuple(_METHODS)
# Peak working bytes per element of the compared vectors (measured with tracemalloc, rounded up):
# centred copies for pearson, norms' temporaries for cosine, the sort and rank arrays of the rank
# methods, scipy's kendalltau on one pair at a time, and the centred copies of corr_cov (cosine_cov
# allocates only its row sums, (k, n)).
_BYTES_PER_ELEMENT = {"pearson": 16, "cosine": 8, "spearman": 40, "rho-a": 40, "corr_cov": 16, "cosine_cov": 1}
_BYTES_PER_PAIR_ELEMENT = {"tau-a": 48, "tau-b": 48}


def compare_bytes(k_a: int, k_b: int, n_pairs: int, method: str) -> int:
    """Estimated peak working bytes of comparing (k_a, n_pairs) vectors with (k_b, n_pairs) ones."""
    method = resolve_method(method)
    if method in _BYTES_PER_PAIR_ELEMENT:
        return _BYTES_PER_PAIR_ELEMENT[method] * n_pairs
    return _BYTES_PER_ELEMENT[method] * (k_a + k_b) * n_pairs


def resolve_method(method: str) -> str:
    method = _ALIASES.get(method, method)
    if method not in _METHODS:
        raise unknown_name_error("RDM comparison method", method, (*COMPARISON_METHODS, *_ALIASES))
    return method


def compare_vectors(a: np.ndarray, b: np.ndarray, method: str) -> np.ndarray:
    """All-pairs comparison of condensed vectors, arrays of shape (k_a, p) and (k_b, p) -> (k_a, k_b)."""
    if a.shape[1] != b.shape[1]:
        raise ValueError(
            f"the RDMs cover different numbers of stimulus pairs ({a.shape[1]} vs {b.shape[1]}, i.e. "
            f"{n_stimuli_from_pairs(a.shape[1])} vs {n_stimuli_from_pairs(b.shape[1])} stimuli); compute both on the same stimuli"
        )
    if a.shape[1] < 3:
        raise ValueError(f"only {a.shape[1]} stimulus pair(s); comparing RDMs needs at least 3 stimuli")
    method = resolve_method(method)
    check_memory(
        compare_bytes(a.shape[0], b.shape[0], a.shape[1], method),
        f"comparing {a.shape[0]} x {b.shape[0]} RDMs over {a.shape[1]:,} stimulus pairs ({method})",
        SUBSET_ADVICE,
    )
    return _METHODS[method](a, b)


def compare_rdms(A: Any, B: Any, method: str = "spearman") -> float | np.ndarray:
    """Compare RDMs on their upper triangles.

    Parameters
    ----------
    A, B
        One RDM each (``RDM``, square matrix or condensed vector) or several (a list, or an
        array of shape (k, n, n) or (k, n_pairs)), over the same stimuli in the same order.
    method
        "pearson", "spearman", "rho-a", "tau-a", "tau-b", "cosine", "corr_cov" or "cosine_cov"
        (aliases: "corr", "kendall"); definitions in this module's docstring.

    Returns
    -------
    float or numpy.ndarray
        A float when A and B are single RDMs, else an array of shape (k_A, k_B).

    Raises
    ------
    ValueError
        Unknown method, different stimulus counts, NaN, a constant RDM for a method that is
        undefined on it, or (corr_cov, cosine_cov) vectors that are not whole condensed RDMs.
    MemoryLimitError
        The comparison's working memory (it grows with the number of stimulus pairs) would exceed
        the memory limit (``analyses.set_memory_limit``); raised before it is allocated.
    """
    method = resolve_method(method)
    sizes = rdm_sizes(A), rdm_sizes(B)
    if None not in sizes:
        (k_a, pairs_a, bytes_a), (k_b, pairs_b, bytes_b) = sizes
        n_pairs = max(pairs_a, pairs_b)
        check_memory(
            bytes_a + bytes_b + compare_bytes(k_a, k_b, n_pairs, method),
            f"analyses.compare_rdms ({method}, {k_a} x {k_b} RDMs) on {_described_pairs(n_pairs)}",
            SUBSET_ADVICE,
        )
    a, single_a = rdm_vectors(A, "A")
    b, single_b = rdm_vectors(B, "B")
    result = compare_vectors(a, b, method)
    return float(result[0, 0]) if single_a and single_b else result
