"""Noise ceiling of a reference RDM measured in several subjects (or repetitions), as rsatoolbox's.

How well could any model explain the reference, given how much the subjects disagree? With k subject
RDMs over the same stimuli and a comparison method (any of ``analyses.compare_rdms``):

- upper bound: each subject compared with the pooled RDM of all k subjects, averaged over subjects.
  The pooled RDM includes the subject itself, so this overestimates the best possible model;
- lower bound: each subject compared with the pooled RDM of the other k - 1 (leave one out), averaged
  over subjects. The pooled RDM is a model fitted without that subject, so a true model should reach it.

Pooling follows rsatoolbox (``rsatoolbox.inference.boot_noise_ceiling`` with ``pool_rdm`` from
``rsatoolbox.util.inference_util``), choosing for each method the mean that method rewards most:

==================================  ==========================================================
method                              pooled RDM
==================================  ==========================================================
"pearson", "corr_cov"               mean of the z-scored RDM vectors
"cosine", "cosine_cov"              mean of the RDM vectors divided by their root mean square
"spearman", "rho-a", "tau-a",       mean of the ranks (ties given their average rank)
"tau-b"
==================================  ==========================================================

(rsatoolbox also shifts the pooled correlation RDMs to be positive, which no correlation sees, and
pools cosine_cov and corr_cov without whitening; so does this module.)

Every subject's lower value is at most its upper value for pearson, cosine, corr_cov and cosine_cov:
the pooled RDM of all subjects is the leave-one-out one plus a positive multiple of the subject's own
(normalised) vector, which can only shrink the angle to it. The same holds for tau-a: adding the
subject's own ranks can turn a pair ordered against the subject into a tie or a pair ordered with it,
never the reverse. For spearman, rho-a and tau-b, which re-rank the pooled ranks and divide by tie
counts, this module claims no such inequality (random searches found no exception).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from analyses._compare import (
    SUBSET_ADVICE,
    _ranks,
    compare_bytes,
    compare_vectors,
    rdm_sizes,
    rdm_vectors,
    resolve_method,
)
from analyses._memory import check_memory
from analyses._rdm import n_stimuli_from_pairs

__all__ = ["NoiseCeiling", "noise_ceiling", "pool_rdms"]


@dataclass(frozen=True)
class NoiseCeiling:
    """Lower and upper bound of the noise ceiling, and each subject's values behind them.

    Attributes
    ----------
    lower, upper
        The bounds: the means of ``lower_per_subject`` and ``upper_per_subject``.
    lower_per_subject, upper_per_subject
        Arrays of shape (n_subjects,): each subject against the pooled RDM of the others, and of all.
    method
        The comparison method (resolved: "corr" is reported as "pearson").
    n_subjects, n_stimuli
        The number of RDMs pooled, and of the stimuli they cover.
    """

    lower: float
    upper: float
    lower_per_subject: np.ndarray
    upper_per_subject: np.ndarray
    method: str
    n_subjects: int
    n_stimuli: int

    def to_frame(self) -> pd.DataFrame:
        """One row per subject: subject index, lower and upper value, and the method and sizes."""
        return pd.DataFrame(
            {
                "subject": np.arange(self.n_subjects),
                "lower": self.lower_per_subject,
                "upper": self.upper_per_subject,
                "method": self.method,
                "n_subjects": self.n_subjects,
                "n_stimuli": self.n_stimuli,
            }
        )


def _z_scored(vectors: np.ndarray) -> np.ndarray:
    centred = vectors - vectors.mean(axis=1, keepdims=True)
    return centred / centred.std(axis=1, keepdims=True)


def _rms_scaled(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.sqrt(np.mean(vectors**2, axis=1, keepdims=True))


# What each method pools, before the mean is taken.
_POOLING = {
    "pearson": _z_scored,
    "corr_cov": _z_scored,
    "cosine": _rms_scaled,
    "cosine_cov": _rms_scaled,
    "spearman": _ranks,
    "rho-a": _ranks,
    "tau-a": _ranks,
    "tau-b": _ranks,
}


def _check_poolable(vectors: np.ndarray, method: str) -> None:
    """Refuse, naming the subject, an RDM the pooling would divide by zero."""
    if _POOLING[method] is _z_scored:
        flat, what, instead = np.ptp(vectors, axis=1) == 0, "constant", "a rank method such as 'rho-a'"
    elif _POOLING[method] is _rms_scaled:
        flat, what, instead = ~vectors.any(axis=1), "all zeros", "another subject's RDM or drop this one"
    else:
        return
    if flat.any():
        raise ValueError(
            f"subject {int(np.flatnonzero(flat)[0])}'s RDM is {what}, so it cannot be normalised for pooling "
            f"under method={method!r}; use {instead}"
        )


def pool_rdms(rdms: Any, method: str = "spearman") -> np.ndarray:
    """The subjects' pooled RDM as ``method`` pools it (module docstring): the reference a model is compared
    with, as a condensed vector.

    Parameters
    ----------
    rdms
        As for ``noise_ceiling`` (k >= 1 RDMs over the same stimuli).
    method
        Comparison method, any of ``analyses.compare_rdms``.
    """
    method = resolve_method(method)
    vectors, _ = rdm_vectors(rdms, "rdms")
    _check_poolable(vectors, method)
    return _POOLING[method](vectors).mean(axis=0)


def noise_ceiling(rdms: Any, method: str = "spearman") -> NoiseCeiling:
    """Noise ceiling of a reference RDM measured in several subjects (rsatoolbox's leave-one-out rule).

    Parameters
    ----------
    rdms
        The subjects' RDMs over the same stimuli in the same order: a list of RDMs (``RDM``, square
        matrices or condensed vectors), or an array of shape (k, n, n) or (k, n_pairs); k >= 2.
    method
        Comparison method, any of ``analyses.compare_rdms``; it also sets the pooling (module docstring).

    Returns
    -------
    NoiseCeiling

    Raises
    ------
    ValueError
        Fewer than 2 RDMs, RDMs over different numbers of stimuli, NaN, an RDM the method cannot
        normalise (constant for pearson and corr_cov, all zeros for cosine and cosine_cov), or a
        pooled RDM on which the method is undefined (e.g. two exactly opposite subjects under pearson).
    MemoryLimitError
        The working memory would exceed the memory limit (``analyses.set_memory_limit``).
    """
    method = resolve_method(method)
    sizes = rdm_sizes(rdms)
    if sizes is not None:
        k, n_pairs, input_bytes = sizes
        # normalised copies, their sum, one leave-one-out mean, and the comparisons
        needed = input_bytes + 8 * (k + 2) * n_pairs + compare_bytes(k, 1, n_pairs, method)
        check_memory(needed, f"analyses.noise_ceiling ({method}, {k} RDMs of {n_pairs:,} pairs)", SUBSET_ADVICE)
    vectors, single = rdm_vectors(rdms, "rdms")
    k = vectors.shape[0]
    if single or k < 2:
        raise ValueError(
            f"a noise ceiling needs the reference measured at least twice (subjects or repetitions), got {k} "
            "RDM; pass a list of RDMs or an array of shape (k, n, n) or (k, n_pairs) with k >= 2"
        )
    _check_poolable(vectors, method)
    normalised = _POOLING[method](vectors)
    total = normalised.sum(axis=0)
    upper = compare_vectors(vectors, (total / k)[None], method)[:, 0]
    lower = np.array(
        [compare_vectors(vectors[i : i + 1], ((total - normalised[i]) / (k - 1))[None], method)[0, 0] for i in range(k)]
    )
    return NoiseCeiling(
        lower=float(lower.mean()),
        upper=float(upper.mean()),
        lower_per_subject=lower,
        upper_per_subject=upper,
        method=method,
        n_subjects=k,
        n_stimuli=n_stimuli_from_pairs(vectors.shape[1]),
    )
