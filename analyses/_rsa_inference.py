"""Inference on RDM comparisons: bootstrap over stimuli and permutation of stimulus labels.

- Bootstrap (confidence intervals): resample stimuli with replacement; a pair made of two copies
  of the same stimulus is a duplicated-diagonal entry (its dissimilarity is 0 by construction)
  and is dropped; the other pairs are compared; the interval is the percentile interval of the
  bootstrap distribution. The whitened methods (corr_cov, cosine_cov) need whole RDMs and are refused.
- Permutation test (is the relation above chance?): permute the stimulus labels of B (rows and
  columns together); p = (1 + #{null >= observed}) / (1 + n_permutations), so p is never 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import pandas as pd
from scipy.spatial.distance import squareform
from tqdm.auto import tqdm

from analyses._compare import WHOLE_RDM_METHODS, compare_bytes, compare_vectors, rdm_vectors, resolve_method
from analyses._memory import check_memory, square_bytes, stimuli
from analyses._rdm import RDM, n_stimuli_from_pairs

__all__ = ["BootstrapResult", "PermutationResult", "bootstrap_rdm_comparison", "permutation_test_rdms"]


def _stimulus_count(rdm_like: Any) -> int | None:
    """The stimulus count of an RDM-like input, read from its shape (None when that says nothing)."""
    if isinstance(rdm_like, RDM):
        return rdm_like.n_stimuli
    shape = np.shape(rdm_like)
    if len(shape) == 1 and shape[0] > 0:
        try:
            return n_stimuli_from_pairs(shape[0])
        except ValueError:
            return None  # rdm_vectors says what is wrong
    return shape[0] if len(shape) == 2 and shape[0] == shape[1] else None


def _candidate_values(B: Any) -> list[Any]:
    return list(B.values()) if isinstance(B, Mapping) else list(B) if isinstance(B, (list, tuple)) else [B]


def inference_bytes(n: int, n_candidates: int, method: str, bootstrap: bool) -> int:
    """Estimated peak bytes of a bootstrap (or permutation test) over RDMs of ``n`` stimuli.

    The square matrices (reference, candidates and, for the bootstrap, their stack), the upper
    triangle's index vectors, and one resample: its pair indices, the gathered vectors and the
    comparison's working memory.
    """
    p = n * (n - 1) // 2
    k = n_candidates
    if bootstrap:
        squares = square_bytes(n, 1 + 2 * k)
        resample = (16 + 1 + 16) * p + 8 * (1 + k) * p
    else:
        squares = square_bytes(n, 2)
        resample = 16 * p + 8 * 2 * p
    return squares + 16 * p + resample + compare_bytes(1, k, p, method)


def _check_inference_memory(A: Any, B: Any, method: str, bootstrap: bool) -> None:
    candidates = _candidate_values(B)
    counts = [_stimulus_count(x) for x in [A, *candidates]]
    if any(count is None for count in counts):
        return  # malformed input: _square refuses it with its own message
    n = max(counts)
    check_memory(
        inference_bytes(n, len(candidates), method, bootstrap),
        f"analyses.{'bootstrap_rdm_comparison' if bootstrap else 'permutation_test_rdms'} on RDMs of {stimuli(n)}",
        "run it on a random subset of the stimuli (RDM.subset), for example a few thousand; the resampling "
        "distribution is then that of the subset",
    )


def _square(rdm_like: Any, name: str) -> np.ndarray:
    vectors, single = rdm_vectors(rdm_like, name)
    if not single:
        raise ValueError(f"{name} must be a single RDM (RDM, square matrix or condensed vector)")
    return squareform(vectors[0], checks=False)


def _candidates(B: Any) -> tuple[list[str], list[np.ndarray]]:
    if isinstance(B, Mapping):
        return [str(k) for k in B], [_square(v, f"B[{k!r}]") for k, v in B.items()]
    if isinstance(B, (list, tuple)):
        names = [getattr(v, "name", None) or f"rdm_{i}" for i, v in enumerate(B)]
        return names, [_square(v, f"B[{i}]") for i, v in enumerate(B)]
    return [getattr(B, "name", None) or "B"], [_square(B, "B")]


def _check_sizes(A: np.ndarray, candidates: list[np.ndarray]) -> None:
    for matrix in candidates:
        if matrix.shape != A.shape:
            raise ValueError(
                f"the RDMs cover different stimuli ({A.shape[0]} vs {matrix.shape[0]}); compute them on the same stimuli"
            )


@dataclass
class BootstrapResult:
    """Bootstrap distribution of RDM comparisons, one column per candidate.

    Attributes
    ----------
    names
        The candidate RDMs compared with A.
    estimate
        Array of shape (n_candidates,): the comparison on all stimuli.
    samples
        Array of shape (n_bootstrap, n_candidates).
    ci_low, ci_high
        Percentile confidence bounds, arrays of shape (n_candidates,).
    confidence, method, n_stimuli
        The interval's level, comparison method and stimulus count.
    """

    names: list[str]
    estimate: np.ndarray
    samples: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    confidence: float
    method: str
    n_stimuli: int

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "name": self.names,
                "estimate": self.estimate,
                "ci_low": self.ci_low,
                "ci_high": self.ci_high,
                "bootstrap_std": self.samples.std(axis=0, ddof=1),
                "confidence": self.confidence,
                "method": self.method,
                "n_bootstrap": self.samples.shape[0],
                "n_stimuli": self.n_stimuli,
            }
        )


def bootstrap_rdm_comparison(
    A: Any,
    B: Any,
    method: str = "spearman",
    *,
    n_bootstrap: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    progress: bool = True,
) -> BootstrapResult:
    """Confidence intervals of RDM comparisons by bootstrapping stimuli.

    Parameters
    ----------
    A
        The reference RDM (``RDM``, square matrix or condensed vector).
    B
        One candidate RDM, a list of them, or a dict ``{name: RDM}``; same stimuli as A.
    method
        Comparison method (see ``analyses.compare_rdms``).
    n_bootstrap
        Number of resamples.
    confidence
        Level of the percentile interval.
    seed
        Seed of the resampling (same seed, same result).

    Returns
    -------
    BootstrapResult
    """
    method = resolve_method(method)
    if method in WHOLE_RDM_METHODS:
        raise ValueError(
            f"the bootstrap cannot use {method!r}: a resample drops the pairs of repeated stimuli, and the whitening "
            "of corr_cov and cosine_cov is defined on whole RDMs only; use 'pearson' or 'cosine' for bootstrap "
            "intervals, or permutation_test_rdms, which keeps whole RDMs"
        )
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    if n_bootstrap < 2:
        raise ValueError(f"n_bootstrap must be at least 2, got {n_bootstrap}")
    _check_inference_memory(A, B, method, bootstrap=True)
    reference = _square(A, "A")
    names, candidates = _candidates(B)
    _check_sizes(reference, candidates)
    n = reference.shape[0]
    rows, cols = np.triu_indices(n, 1)
    stack = np.stack(candidates)
    estimate = compare_vectors(reference[rows, cols][None], stack[:, rows, cols], method)[0]
    rng = np.random.default_rng(seed)
    samples = np.empty((n_bootstrap, len(candidates)))
    for b in tqdm(range(n_bootstrap), desc="bootstrap", disable=not progress, leave=False):
        index = rng.integers(0, n, n)
        i, j = index[rows], index[cols]
        distinct = i != j  # pairs of two copies of one stimulus are the duplicated diagonal
        i, j = i[distinct], j[distinct]
        samples[b] = compare_vectors(reference[i, j][None], stack[:, i, j], method)[0]
    alpha = (1 - confidence) / 2
    ci_low, ci_high = np.quantile(samples, [alpha, 1 - alpha], axis=0)
    return BootstrapResult(names, estimate, samples, ci_low, ci_high, confidence, method, n)


@dataclass
class PermutationResult:
    """Permutation test of RDM relatedness.

    Attributes
    ----------
    observed
        The comparison of A and B on the true stimulus labels.
    p_value
        (1 + #{null >= observed}) / (1 + n_permutations).
    null_distribution
        Array of shape (n_permutations,).
    method, n_stimuli
        Comparison method and stimulus count.
    """

    observed: float
    p_value: float
    null_distribution: np.ndarray
    method: str
    n_stimuli: int

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "observed": [self.observed],
                "p_value": [self.p_value],
                "null_mean": [self.null_distribution.mean()],
                "null_95th_percentile": [np.quantile(self.null_distribution, 0.95)],
                "n_permutations": [self.null_distribution.size],
                "method": [self.method],
                "n_stimuli": [self.n_stimuli],
            }
        )


def permutation_test_rdms(
    A: Any,
    B: Any,
    method: str = "spearman",
    *,
    n_permutations: int = 1000,
    seed: int = 0,
    progress: bool = True,
) -> PermutationResult:
    """Test whether two RDMs are related by permuting the stimulus labels of B (one-sided).

    Parameters
    ----------
    A, B
        Single RDMs over the same stimuli (``RDM``, square matrix or condensed vector).
    method
        Comparison method (see ``analyses.compare_rdms``).
    n_permutations
        Number of random relabellings.
    seed
        Seed of the permutations.

    Returns
    -------
    PermutationResult
    """
    method = resolve_method(method)
    if n_permutations < 1:
        raise ValueError(f"n_permutations must be at least 1, got {n_permutations}")
    _check_inference_memory(A, [B], method, bootstrap=False)
    first, second = _square(A, "A"), _square(B, "B")
    _check_sizes(first, [second])
    n = first.shape[0]
    rows, cols = np.triu_indices(n, 1)
    reference = first[rows, cols][None]
    observed = float(compare_vectors(reference, second[rows, cols][None], method)[0, 0])
    rng = np.random.default_rng(seed)
    null = np.empty(n_permutations)
    for p in tqdm(range(n_permutations), desc="permutations", disable=not progress, leave=False):
        order = rng.permutation(n)
        null[p] = compare_vectors(reference, second[order[rows], order[cols]][None], method)[0, 0]
    p_value = (1 + int((null >= observed).sum())) / (1 + n_permutations)
    return PermutationResult(observed, p_value, null, method, n)
