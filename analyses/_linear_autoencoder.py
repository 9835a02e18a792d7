"""A linear autoencoder as a scikit-learn estimator, trained full-batch with L-BFGS in torch."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np
import torch
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from zoo import resolve_device

__all__ = ["LinearAutoencoder"]


def _as_data_tensor(X: Any, name: str = "X") -> torch.Tensor:
    """Validate a data matrix; return it as a float64 tensor on its own device."""
    tensor = X.detach() if isinstance(X, torch.Tensor) else torch.as_tensor(np.asarray(X, dtype=np.float64))
    if tensor.ndim != 2:
        raise ValueError(
            f"{name} must be a 2-D array of shape (n_stimuli, n_units); got shape {tuple(tensor.shape)}; "
            "flatten images first, e.g. X.reshape(len(X), -1)"
        )
    if tensor.shape[0] < 2 or tensor.shape[1] < 1:
        raise ValueError(f"{name} needs at least 2 stimuli and 1 unit; got shape {tuple(tensor.shape)}")
    if tensor.device.type == "mps":
        tensor = tensor.cpu()
    tensor = tensor.to(torch.float64)
    if not torch.isfinite(tensor).all():
        raise ValueError(f"{name} contains NaN or infinite values; remove or impute them before fitting")
    return tensor


@contextmanager
def _few_threads_for_small(factor: torch.Tensor, max_elements: int = 256 * 256) -> Iterator[None]:
    """Run on one CPU thread while the training matrix is small.

    Thousands of L-BFGS steps on a (64, 64) matrix gain nothing from intra-op threads, and on a
    busy machine every step then waits for a second thread to be scheduled (measured 17x slower
    on 2 shared cores). The previous thread count is restored on exit.
    """
    if factor.device.type != "cpu" or factor.numel() > max_elements or torch.get_num_threads() == 1:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class LinearAutoencoder(TransformerMixin, BaseEstimator):
    """Linear autoencoder ``x -> W_dec (W_enc (x - mean)) + mean``, optionally with L2 penalties.

    Minimises, full-batch with L-BFGS (strong-Wolfe line search, float64)::

        mean_n || x_n - W_dec W_enc x_n ||^2 + sum_i l2_i (||W_enc[i, :]||^2 + ||W_dec[:, i]||^2)

    over centred data. Without a penalty the optimum spans PCA's subspace but its axes are any
    invertible mix of the principal directions (Baldi & Hornik 1989). With a uniform penalty the
    decoder's left singular vectors are the principal directions (Kunin et al. 2019). With
    penalties that increase across code units the decoder's columns are the principal directions
    themselves, in order (Bao et al. 2020). A component survives while its penalty is below its
    variance.

    Parameters
    ----------
    n_components
        Code size k.
    l2
        ``0.0`` (no penalty), a float (the same penalty on every code unit), ``"non-uniform"``
        (penalties ``l2_scale * i / k`` for code unit i = 1..k), or an array of shape (k,) of
        per-unit penalties. Penalties are absolute, in the units of the data's variance.
    l2_scale
        Largest penalty of ``"non-uniform"``; default half the mean per-unit variance (larger
        gaps between the penalties make the columns align in fewer iterations; a component
        whose variance is below its penalty is switched off).
    max_iter
        Maximum L-BFGS iterations.
    tol
        Stop when the gradient's largest entry, or the relative decrease of the loss over 20
        L-BFGS iterations, falls below ``tol`` (for the loss normalised by the data's total
        variance).
    history_size
        L-BFGS memory.
    device
        ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"``...
    random_state
        Seed of the initial weights.

    Attributes
    ----------
    components_
        Array of shape (k, n_units): the decoder's columns as rows (like ``PCA.components_``).
    encoder_weight_
        Array of shape (k, n_units).
    decoder_weight_
        Array of shape (n_units, k).
    mean_
        Array of shape (n_units,).
    l2_
        Array of shape (k,): the penalty of each code unit.
    n_iter_
        L-BFGS iterations run.
    loss_curve_
        Loss (in the data's units) at every function evaluation.

    Examples
    --------
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.linear_model import LogisticRegression
    >>> pipe = make_pipeline(LinearAutoencoder(10, l2="non-uniform"), LogisticRegression())
    """

    def __init__(
        self,
        n_components: int = 2,
        *,
        l2: float | str | np.ndarray = 0.0,
        l2_scale: float | None = None,
        max_iter: int = 5000,
        tol: float = 1e-10,
        history_size: int = 50,
        device: str | torch.device = "auto",
        random_state: int = 0,
    ) -> None:
        self.n_components = n_components
        self.l2 = l2
        self.l2_scale = l2_scale
        self.max_iter = max_iter
        self.tol = tol
        self.history_size = history_size
        self.device = device
        self.random_state = random_state

    def _penalties(self, k: int, mean_variance: float) -> np.ndarray:
        if isinstance(self.l2, str):
            if self.l2 != "non-uniform":
                raise ValueError(f"l2={self.l2!r} is not understood; use a float, 'non-uniform' or an array of shape ({k},)")
            scale = 0.5 * mean_variance if self.l2_scale is None else float(self.l2_scale)
            return scale * np.arange(1, k + 1) / k
        penalties = np.asarray(self.l2, dtype=np.float64)
        if penalties.ndim == 0:
            penalties = np.full(k, float(penalties))
        if penalties.shape != (k,):
            raise ValueError(f"l2 must be a float or an array of shape (n_components,) = ({k},); got shape {penalties.shape}")
        if not np.all(np.isfinite(penalties)) or np.any(penalties < 0):
            raise ValueError(f"l2 penalties must be finite and non-negative; got {penalties}")
        return penalties

    def fit(self, X: Any, y: Any = None) -> "LinearAutoencoder":
        """Fit to data ``X`` of shape (n_stimuli, n_units); ``y`` is ignored. Returns ``self``."""
        device = resolve_device(self.device)
        data = _as_data_tensor(X).to(device)
        n_stimuli, n_units = data.shape
        k = int(self.n_components)
        if not 1 <= k <= min(n_stimuli, n_units):
            raise ValueError(
                f"n_components={self.n_components} must be between 1 and min(n_stimuli, n_units) = "
                f"{min(n_stimuli, n_units)} for data of shape {tuple(data.shape)}; lower n_components"
            )
        mean = data.mean(dim=0)
        centered = data - mean
        total_variance = float((centered**2).sum() / n_stimuli)
        if total_variance <= 0:
            raise ValueError("X has zero variance (every stimulus is the same); there is no subspace to find")
        penalties = self._penalties(k, total_variance / n_units)

        # The loss depends on the data only through its covariance, so train on a factor Z with
        # Z.T Z = cov: (n_units, n_units) from a QR when that is smaller than the data. Scaling to
        # unit total variance (penalties scaled alike) leaves the minimiser unchanged and makes
        # the tolerances meaningful.
        factor = centered / np.sqrt(n_stimuli * total_variance)
        if n_stimuli > n_units:
            factor = torch.linalg.qr(factor, mode="r")[1]
        scaled_penalties = torch.as_tensor(penalties / total_variance, dtype=torch.float64, device=device)

        generator = torch.Generator(device="cpu").manual_seed(int(self.random_state))
        init_scale = 1.0 / np.sqrt(n_units)
        encoder = (torch.randn(k, n_units, generator=generator, dtype=torch.float64) * init_scale).to(device)
        decoder = (torch.randn(n_units, k, generator=generator, dtype=torch.float64) * init_scale).to(device)
        encoder.requires_grad_(True)
        decoder.requires_grad_(True)
        chunk = 20
        optimizer = torch.optim.LBFGS(
            [encoder, decoder],
            lr=1.0,
            max_iter=chunk,
            tolerance_grad=float(self.tol),
            tolerance_change=0.0,
            history_size=int(self.history_size),
            line_search_fn="strong_wolfe",
        )
        losses: list[float] = []

        def closure() -> torch.Tensor:
            optimizer.zero_grad()
            residual = factor - (factor @ encoder.T) @ decoder.T
            penalty = (scaled_penalties * ((encoder**2).sum(dim=1) + (decoder**2).sum(dim=0))).sum()
            loss = (residual**2).sum() + penalty
            loss.backward()
            losses.append(float(loss.detach()))
            return loss

        # L-BFGS runs in chunks so that we can stop on a stalled relative decrease: without a
        # penalty the optimum is a continuum (any invertible mix of the principal axes), along
        # which the loss stops changing long before the gradient is exactly zero.
        state = optimizer.state[encoder]
        previous = np.inf
        with _few_threads_for_small(factor):
            while state.get("n_iter", 0) < int(self.max_iter):
                optimizer.step(closure)
                current = losses[-1]
                stalled = previous - current <= 1e-9 * max(abs(current), 1e-300)
                converged = float(max(encoder.grad.abs().max(), decoder.grad.abs().max())) <= self.tol
                if stalled or converged:
                    break
                previous = current
        self.n_iter_ = int(state.get("n_iter", 0))
        self.loss_curve_ = [loss * total_variance for loss in losses]
        self.encoder_weight_ = encoder.detach().cpu().numpy()
        self.decoder_weight_ = decoder.detach().cpu().numpy()
        self.components_ = self.decoder_weight_.T.copy()
        self.mean_ = mean.cpu().numpy()
        self.l2_ = penalties
        self.n_features_in_ = n_units
        return self

    def _check_input(self, X: Any, width: int, name: str) -> np.ndarray:
        check_is_fitted(self, "components_")
        array = X.detach().cpu().numpy() if isinstance(X, torch.Tensor) else np.asarray(X, dtype=np.float64)
        if array.ndim != 2 or array.shape[1] != width:
            raise ValueError(f"{name} must have shape (n, {width}); got {array.shape}")
        if not np.all(np.isfinite(array)):
            raise ValueError(f"{name} contains NaN or infinite values; remove or impute them first")
        return array.astype(np.float64, copy=False)

    def transform(self, X: Any) -> np.ndarray:
        """Encode: array of shape (n_stimuli, n_units) -> codes of shape (n_stimuli, k)."""
        array = self._check_input(X, self.n_features_in_, "X")
        return (array - self.mean_) @ self.encoder_weight_.T

    def inverse_transform(self, codes: Any) -> np.ndarray:
        """Decode: codes of shape (n_stimuli, k) -> reconstructions of shape (n_stimuli, n_units)."""
        array = self._check_input(codes, self.encoder_weight_.shape[0], "codes")
        return array @ self.decoder_weight_.T + self.mean_

    def reconstruction_error(self, X: Any) -> float:
        """Mean squared reconstruction error per element of ``X`` (shape (n_stimuli, n_units))."""
        array = self._check_input(X, self.n_features_in_, "X")
        return float(np.mean((self.inverse_transform(self.transform(array)) - array) ** 2))
