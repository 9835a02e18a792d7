"""Centered kernel alignment (Kornblith et al. 2019), exact and with every convention stated.

``cka(X, Y)`` follows the reference implementation of the paper's authors (the "CKA reference
demo", google-research/similarity):

- linear kernel: CKA = ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F), Xc the stimulus-centred
  features; computed in feature space or through n x n Gram matrices, whichever is cheaper
  (identical up to rounding).
- RBF kernel: K_ij = exp(-||x_i - x_j||^2 / (2 sigma^2)). With ``sigma=None``, sigma is
  ``median_fraction`` (default 0.5) times the square root of the median squared distance, the
  median taken over all n^2 entries of the distance matrix, diagonal zeros included (the
  reference's ``gram_rbf(x, threshold)``).
- ``debiased=True``: the unbiased HSIC estimator (Song et al. 2012) in numerator and
  denominator, as in Kornblith's ``center_gram(unbiased=True)``; it can be slightly negative.

Undefined cases raise ``ValueError`` instead of returning NaN: a representation that is the same
for every stimulus (its centred Gram matrix is zero), an RBF bandwidth of zero (more than half of
the pairs are identical stimuli: pass ``sigma``), fewer than 3 stimuli (4 for ``debiased``),
different stimulus counts, NaN or inf.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from analyses._memory import check_memory, square_bytes, stimuli
from analyses._rdm import MIN_STIMULI, as_float_tensor, gram
from zoo._names import unknown_name_error

__all__ = ["cka", "CKA_KERNELS"]

CKA_KERNELS = ("linear", "rbf")

# What to use instead when the Gram matrices are too large for memory (the memory guard's advice).
STREAMING_ADVICE = (
    "use analyses.StreamingCKA (probe.record(model, data, layers, reducers={'cka': StreamingCKA})), which "
    "accumulates linear CKA batch by batch in memory independent of the stimulus count, or a subset of the stimuli"
)


def gram_copies(X: torch.Tensor) -> int:
    """(n, n) buffers that ``gram(X)`` holds at its peak: one from NumPy, three while torch's is symmetrised."""
    return 1 if X.device.type == "cpu" and X.dtype == torch.float64 else 3


# (n, n) buffers at the peak of ``centre_gram(_rbf_gram(X))``: the Gram matrix, the squared distances
# and two temporaries (of the distances, then of NumPy's median or the kernel's exponent).
RBF_GRAM_COPIES = 4


def flatten_units(X: Any, name: str, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """A finite tensor of shape (n_stimuli, n_units); higher-rank input is flattened per stimulus."""
    tensor = as_float_tensor(X, name, dtype)
    if tensor.ndim == 1:
        tensor = tensor[:, None]
    return tensor.reshape(tensor.shape[0], -1)


def flatten_pair(X: Any, Y: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Two representations as finite float64 tensors of shape (n_stimuli, n_units), Y on X's device; refused
    unless they cover the same number of stimuli."""
    X = flatten_units(X, "X")
    Y = flatten_units(Y, "Y").to(X.device)
    if X.shape[0] != Y.shape[0]:
        raise ValueError(f"X has {X.shape[0]} stimuli and Y {Y.shape[0]}; pass the same stimuli in the same order")
    return X, Y


def check_pair(X: torch.Tensor, Y: torch.Tensor, debiased: bool) -> None:
    if X.shape[0] != Y.shape[0]:
        raise ValueError(
            f"X has {X.shape[0]} stimuli and Y {Y.shape[0]}; CKA compares representations of the same stimuli, "
            "so pass the same stimuli in the same order"
        )
    needed = 4 if debiased else MIN_STIMULI
    if X.shape[0] < needed:
        raise ValueError(f"CKA{' (debiased)' if debiased else ''} needs at least {needed} stimuli, got {X.shape[0]}")


def _rbf_gram(X: torch.Tensor, sigma: float | None, median_fraction: float, name: str) -> torch.Tensor:
    G = gram(X)
    squared_norms = torch.diagonal(G)
    squared_distances = (squared_norms[:, None] + squared_norms[None, :] - 2 * G).clamp_min_(0.0)
    if sigma is None:
        # NumPy's median (mean of the two middle values), as in the reference; torch.median takes the lower one
        median = float(np.median(squared_distances.cpu().numpy()))
        bandwidth_sq = median_fraction**2 * median
    else:
        if not sigma > 0:
            raise ValueError(f"sigma must be positive, got {sigma}")
        bandwidth_sq = float(sigma) ** 2
    if bandwidth_sq <= 0:
        raise ValueError(
            f"the RBF bandwidth for {name} is zero: the median distance between its stimuli is 0 (most stimuli are "
            "identical); pass an explicit sigma"
        )
    return torch.exp(-squared_distances / (2 * bandwidth_sq))


def centre_gram(K: torch.Tensor, unbiased: bool) -> torch.Tensor:
    """Double-centre a Gram matrix; ``unbiased`` gives the U-statistic form (zero diagonal)."""
    K = K.clone()
    n = K.shape[0]
    if unbiased:
        K.fill_diagonal_(0.0)
        means = K.sum(dim=0) / (n - 2)
        means -= means.sum() / (2 * (n - 1))
        K -= means[:, None]
        K -= means[None, :]
        K.fill_diagonal_(0.0)
    else:
        means = K.mean(dim=0)
        means -= means.mean() / 2
        K -= means[:, None]
        K -= means[None, :]
    return K


def _ratio(numerator: torch.Tensor, norm_x: torch.Tensor, norm_y: torch.Tensor) -> float:
    for norm, which in ((norm_x, "X"), (norm_y, "Y")):
        if not float(norm) > 0:
            raise ValueError(
                f"{which} is the same for every stimulus (its centred Gram matrix is zero), so CKA is undefined; "
                "drop this layer or check that the stimuli differ"
            )
    return float(numerator / (norm_x * norm_y))


def debiased_inner(xty_sq, rows_x, rows_y, total_x, total_y, n: int):
    """Unbiased-HSIC form of ||Xc^T Yc||^2 from per-stimulus squared norms (Kornblith's helper)."""
    return xty_sq - n / (n - 2.0) * (rows_x @ rows_y) + total_x * total_y / ((n - 1.0) * (n - 2.0))


def _linear_cka(X: torch.Tensor, Y: torch.Tensor, debiased: bool) -> float:
    n = X.shape[0]
    Xc, Yc = X - X.mean(dim=0), Y - Y.mean(dim=0)
    feature_cost = n * (X.shape[1] * Y.shape[1] + X.shape[1] ** 2 + Y.shape[1] ** 2)
    gram_cost = n * n * (X.shape[1] + Y.shape[1])
    if feature_cost > gram_cost:
        # Kx, Ky and their product, or gram()'s temporaries next to Kx
        copies = 2 + max(1, gram_copies(Xc) - 1)
        check_memory(
            square_bytes(n, copies, X.element_size()), f"analyses.cka (linear kernel) on {stimuli(n)}", STREAMING_ADVICE
        )
    if feature_cost <= gram_cost:
        xy = torch.linalg.matrix_norm(Xc.T @ Yc) ** 2
        xx = torch.linalg.matrix_norm(gram(Xc.T)) ** 2
        yy = torch.linalg.matrix_norm(gram(Yc.T)) ** 2
    else:
        Kx, Ky = gram(Xc), gram(Yc)
        xy, xx, yy = (Kx * Ky).sum(), (Kx * Kx).sum(), (Ky * Ky).sum()
    if debiased:
        rows_x, rows_y = (Xc * Xc).sum(dim=1), (Yc * Yc).sum(dim=1)
        total_x, total_y = rows_x.sum(), rows_y.sum()
        xy = debiased_inner(xy, rows_x, rows_y, total_x, total_y, n)
        xx = debiased_inner(xx, rows_x, rows_x, total_x, total_x, n)
        yy = debiased_inner(yy, rows_y, rows_y, total_y, total_y, n)
    return _ratio(xy, xx.clamp_min(0).sqrt(), yy.clamp_min(0).sqrt())


def cka(
    X: Any,
    Y: Any,
    kernel: str = "linear",
    sigma: float | None = None,
    *,
    median_fraction: float = 0.5,
    debiased: bool = False,
    dtype: torch.dtype = torch.float64,
) -> float:
    """Centered kernel alignment between two representations of the same stimuli.

    Parameters
    ----------
    X, Y
        Arrays of shape (n_stimuli, n_units_x) and (n_stimuli, n_units_y), NumPy or torch
        (computed on X's device); higher-rank arrays are flattened per stimulus.
    kernel
        "linear" or "rbf".
    sigma
        RBF bandwidth. None: ``median_fraction`` x the median distance (see module docstring),
        computed for X and Y separately.
    median_fraction
        The fraction of the median distance used when ``sigma`` is None (0.5, as in the paper).
    debiased
        Use the unbiased HSIC estimator (Song et al. 2012), recommended when n_units is large
        relative to n_stimuli.
    dtype
        Working precision (float64 by default).

    Returns
    -------
    float
        CKA in [0, 1] (debiased: may be slightly below 0).

    Raises
    ------
    MemoryLimitError
        The (n_stimuli, n_stimuli) Gram matrices (RBF kernel, or linear with more units than
        stimuli) would exceed the memory limit (``analyses.set_memory_limit``); raised before they
        are built. ``StreamingCKA`` streams linear CKA instead.
    """
    if kernel not in CKA_KERNELS:
        raise unknown_name_error("CKA kernel", kernel, CKA_KERNELS)
    X = flatten_units(X, "X", dtype)
    Y = flatten_units(Y, "Y", dtype).to(X.device)
    check_pair(X, Y, debiased)
    if kernel == "linear":
        return _linear_cka(X, Y, debiased)
    n = X.shape[0]
    # Kx is kept while Ky is built
    check_memory(
        square_bytes(n, 1 + RBF_GRAM_COPIES, X.element_size()), f"analyses.cka (RBF kernel) on {stimuli(n)}",
        "use kernel='linear' with analyses.StreamingCKA, which streams linear CKA in memory independent of the "
        "stimulus count, or a subset of the stimuli",
    )
    Kx = centre_gram(_rbf_gram(X, sigma, median_fraction, "X"), debiased)
    Ky = centre_gram(_rbf_gram(Y, sigma, median_fraction, "Y"), debiased)
    return _ratio((Kx * Ky).sum(), torch.linalg.matrix_norm(Kx), torch.linalg.matrix_norm(Ky))
