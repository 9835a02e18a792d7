"""Inputs shared by the tests of similarity measures."""

from __future__ import annotations

import numpy as np


def correlated_pair(n=200, units_x=12, units_y=9, seed=0, noise_x=0.8, noise_y=1.2):
    """Two representations of n stimuli sharing a 4-dimensional signal, each with its own Gaussian noise."""
    rng = np.random.default_rng(seed)
    shared = rng.standard_normal((n, 4))
    X = shared @ rng.standard_normal((4, units_x)) + noise_x * rng.standard_normal((n, units_x))
    Y = shared @ rng.standard_normal((4, units_y)) + noise_y * rng.standard_normal((n, units_y))
    return X, Y
