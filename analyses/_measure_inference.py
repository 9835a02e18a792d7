"""Inference for any similarity measure: bootstrap confidence intervals over stimuli and permutation tests.

- ``bootstrap_measure``: resample the stimuli with replacement, recompute the measure on both
  representations, and report the percentile interval. Measures that read neighbours or RDMs
  (``Measure.duplicates_ok`` is False) would see a repeated stimulus as a pair at distance zero, so
  their resamples keep each drawn stimulus once (about 63 % of the stimuli per resample).
- ``permutation_test_measure``: shuffle which stimulus of Y goes with which stimulus of X, recompute the
  measure, and compare: p = (1 + #{null at least as close as observed}) / (1 + n_permutations), never 0.
  "Close" follows the measure's kind (larger similarities, smaller distances).

Same seed, same result.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from analyses._measures import get_measure, prepare_pair

__all__ = ["MeasureBootstrap", "MeasurePermutation", "bootstrap_measure", "permutation_test_measure"]


@dataclass
class MeasureBootstrap:
    """A measure's estimate with its bootstrap distribution and percentile interval."""

    measure: str
    kind: str
    estimate: float
    samples: np.ndarray
    ci_low: float
    ci_high: float
    confidence: float
    n_stimuli: int

    def to_frame(self) -> pd.DataFrame:
        """One row: measure, kind, estimate, ci_low, ci_high, confidence, sd (of the samples), n_bootstrap, n_stimuli."""
        return pd.DataFrame([{
            "measure": self.measure, "kind": self.kind, "estimate": self.estimate, "ci_low": self.ci_low,
            "ci_high": self.ci_high, "confidence": self.confidence, "sd": float(np.std(self.samples, ddof=1)),
            "n_bootstrap": len(self.samples), "n_stimuli": self.n_stimuli,
        }])


@dataclass
class MeasurePermutation:
    """A measure's observed value against its null distribution under shuffled stimulus pairings."""

    measure: str
    kind: str
    observed: float
    null: np.ndarray
    p_value: float
    n_stimuli: int

    def to_frame(self) -> pd.DataFrame:
        """One row: measure, kind, observed, null_mean, null_sd, p_value, n_permutations, n_stimuli."""
        return pd.DataFrame([{
            "measure": self.measure, "kind": self.kind, "observed": self.observed,
            "null_mean": float(self.null.mean()), "null_sd": float(self.null.std(ddof=1)),
            "p_value": self.p_value, "n_permutations": len(self.null), "n_stimuli": self.n_stimuli,
        }])


def _on(X: torch.Tensor, index: np.ndarray) -> torch.Tensor:
    return X[torch.as_tensor(index, device=X.device)]


def bootstrap_measure(
    X: Any,
    Y: Any,
    measure: str = "linear-cka",
    *,
    n_bootstrap: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    progress: bool = True,
) -> MeasureBootstrap:
    """Bootstrap confidence interval of a measure between two representations, resampling stimuli.

    Parameters
    ----------
    X, Y
        Arrays of shape (n_stimuli, units_x) and (n_stimuli, units_y), the same stimuli in the same order.
    measure
        A name from ``analyses.list_measures()``.
    n_bootstrap
        Number of resamples (at least 2).
    confidence
        Level of the percentile interval, in (0, 1).
    seed
        Seed of the resampling.
    progress
        Show a progress bar.

    Returns
    -------
    MeasureBootstrap

    Raises
    ------
    ValueError
        The measure is undefined on a resample (for example CCA once a resample has too few distinct
        stimuli); the message names the resample and the reason.
    """
    spec = get_measure(measure)
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    if n_bootstrap < 2:
        raise ValueError(f"n_bootstrap must be at least 2, got {n_bootstrap}")
    X, Y = prepare_pair(X, Y)
    n = X.shape[0]
    estimate = spec.compare(spec.prepare(X), spec.prepare(Y))
    rng = np.random.default_rng(seed)
    samples = np.empty(n_bootstrap)
    for b in tqdm(range(n_bootstrap), desc=f"bootstrap {spec.name}", disable=not progress, leave=False):
        index = rng.integers(0, n, n)
        if not spec.duplicates_ok:
            index = np.unique(index)
        try:
            samples[b] = spec.compare(spec.prepare(_on(X, index)), spec.prepare(_on(Y, index)))
        except ValueError as error:
            raise ValueError(f"{spec.name} is undefined on bootstrap resample {b} ({len(np.unique(index))} distinct "
                             f"stimuli): {error}") from None
    alpha = (1 - confidence) / 2
    low, high = np.quantile(samples, [alpha, 1 - alpha])
    return MeasureBootstrap(spec.name, spec.kind, float(estimate), samples, float(low), float(high), confidence, n)


def permutation_test_measure(
    X: Any,
    Y: Any,
    measure: str = "linear-cka",
    *,
    n_permutations: int = 1000,
    seed: int = 0,
    progress: bool = True,
) -> MeasurePermutation:
    """Is the measure between X and Y beyond what unrelated stimulus pairings give?

    Parameters
    ----------
    X, Y
        Arrays of shape (n_stimuli, units_x) and (n_stimuli, units_y), the same stimuli in the same order.
    measure
        A name from ``analyses.list_measures()``.
    n_permutations
        Number of shuffles of Y's stimuli (at least 1).
    seed
        Seed of the shuffles.
    progress
        Show a progress bar.

    Returns
    -------
    MeasurePermutation
        ``p_value`` = (1 + #{null at least as close as observed}) / (1 + n_permutations).
    """
    spec = get_measure(measure)
    if n_permutations < 1:
        raise ValueError(f"n_permutations must be at least 1, got {n_permutations}")
    X, Y = prepare_pair(X, Y)
    n = X.shape[0]
    prepared_x = spec.prepare(X)
    observed = spec.compare(prepared_x, spec.prepare(Y))
    rng = np.random.default_rng(seed)
    null = np.empty(n_permutations)
    for p in tqdm(range(n_permutations), desc=f"permutations {spec.name}", disable=not progress, leave=False):
        null[p] = spec.compare(prepared_x, spec.prepare(_on(Y, rng.permutation(n))))
    as_close = spec.closeness(null) >= spec.closeness(np.array(observed))
    p_value = (1 + int(as_close.sum())) / (1 + n_permutations)
    return MeasurePermutation(spec.name, spec.kind, float(observed), null, p_value, n)
