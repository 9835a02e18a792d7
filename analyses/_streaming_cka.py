"""CKA between all recorded layers in one streaming pass, for stimulus counts too large for Gram matrices.

Two estimators, both fed batch by batch by ``probe.record(..., reducers={"cka": StreamingCKA})``:

- ``"exact"``: per layer a running mean and, per pair of layers, the running cross-covariance
  (d_a x d_b), updated with the pairwise (Chan et al.) formula so that no large uncentred sums
  are subtracted. Linear CKA = ||C_ab||_F^2 / (||C_aa||_F ||C_bb||_F) is then exactly
  ``analyses.cka(X_a, X_b)`` on the full data, with memory independent of the stimulus count.
- ``"minibatch"``: the estimator of Nguyen, Raghu & Kornblith (2021): the unbiased HSIC of
  each batch's linear Gram matrices, averaged over batches; CKA = mean HSIC_ab /
  sqrt(mean HSIC_aa * mean HSIC_bb). Its memory is independent of the layer widths too; it
  depends on the batch composition (batches of fewer than 4 stimuli are skipped).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from analyses._similarity_maps import SimilarityMatrix
from zoo._names import unknown_name_error
from zoo._reducer import MultiLayerReducer

__all__ = ["StreamingCKA"]


def _pooling(reduce: Callable[..., torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
    """(B, C, H, W) conv maps: ``reduce`` over space; (B, T, D) token sequences: over tokens; else flatten."""

    def pool(x: torch.Tensor) -> torch.Tensor:
        if x.ndim in (3, 4):
            return reduce(x, dim=(2, 3) if x.ndim == 4 else 1)
        return x.reshape(x.shape[0], -1)

    return pool


_POOLS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "mean": _pooling(torch.mean),
    "max": _pooling(torch.amax),
    "flatten": lambda x: x.reshape(x.shape[0], -1),
}
_ESTIMATORS = ("exact", "minibatch")


def _unbiased_hsic_all_pairs(grams: list[torch.Tensor]) -> torch.Tensor:
    """Unbiased HSIC (Song et al. 2012) of every pair of (B, B) Gram matrices, shape (L, L)."""
    n = grams[0].shape[0]
    tilde = torch.stack([g - torch.diag_embed(torch.diagonal(g)) for g in grams])  # zero diagonals
    flat = tilde.reshape(len(grams), -1)
    trace_term = flat @ flat.T  # tr(K~ L~) for symmetric K~, L~
    sums = tilde.sum(dim=(1, 2))
    row_sums = tilde.sum(dim=2)  # (L, B)
    cross = row_sums @ row_sums.T  # 1^T K~ L~ 1
    return (trace_term + torch.outer(sums, sums) / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * cross) / (n * (n - 3))


class StreamingCKA(MultiLayerReducer):
    """All-pairs linear CKA over the recorded layers, accumulated batch by batch.

    Parameters
    ----------
    pool
        How a layer's output becomes a vector per stimulus: "mean" (average over space for
        (B, C, H, W), over tokens for (B, T, D)), "max", "flatten", or a callable mapping a
        tensor of shape (B, ...) to (B, n_units).
    estimator
        "exact" (running cross-covariances) or "minibatch" (Nguyen et al. 2021); see module docstring.
    dtype
        Accumulation precision (float64 by default, on the model's device).
    memory_budget
        Bytes the "exact" cross-covariances may take; exceeding it raises with the fix.

    Examples
    --------
    >>> rec = probe.record(model, data, layers, reducers={"cka": StreamingCKA})  # doctest: +SKIP
    >>> rec.extras["cka"]  # a SimilarityMatrix                                    # doctest: +SKIP
    """

    def __init__(
        self,
        pool: str | Callable[[torch.Tensor], torch.Tensor] = "mean",
        estimator: str = "exact",
        dtype: torch.dtype = torch.float64,
        memory_budget: int = 2**31,
    ) -> None:
        if isinstance(pool, str) and pool not in _POOLS:
            raise unknown_name_error("pooling", pool, tuple(_POOLS))
        if estimator not in _ESTIMATORS:
            raise unknown_name_error("streaming CKA estimator", estimator, _ESTIMATORS)
        self.pool = _POOLS[pool] if isinstance(pool, str) else pool
        self.estimator = estimator
        self.dtype = dtype
        self.memory_budget = memory_budget
        self.count = 0
        self.means: list[torch.Tensor] | None = None
        self.comoments: dict[tuple[int, int], torch.Tensor] = {}
        self.hsic_sum: torch.Tensor | None = None
        self.n_batches_used = 0

    def start(self, layers: tuple[str, ...], n_stimuli: int, device: torch.device) -> None:
        super().start(layers, n_stimuli, device)
        self.count, self.means, self.comoments, self.hsic_sum, self.n_batches_used = 0, None, {}, None, 0

    def _features(self, activations: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        missing = [layer for layer in self.layers if layer not in activations]
        if missing:
            raise KeyError(f"the batch lacks layer(s) {missing}; got {sorted(activations)}")
        features = [self.pool(activations[layer].detach()).to(self.dtype) for layer in self.layers]
        for layer, x in zip(self.layers, features):
            if not bool(torch.isfinite(x).all()):
                raise ValueError(f"layer {layer!r} produced NaN or inf activations; CKA would be undefined")
        return features

    def update(self, activations: dict[str, torch.Tensor], stimulus_index: torch.Tensor) -> None:
        features = self._features(activations)
        if self.estimator == "minibatch":
            self._update_minibatch(features)
        else:
            self._update_exact(features)

    def _update_minibatch(self, features: list[torch.Tensor]) -> None:
        if features[0].shape[0] < 4:
            return  # the unbiased HSIC needs at least 4 stimuli
        hsic = _unbiased_hsic_all_pairs([x @ x.T for x in features])
        self.hsic_sum = hsic if self.hsic_sum is None else self.hsic_sum + hsic
        self.n_batches_used += 1

    def _update_exact(self, features: list[torch.Tensor]) -> None:
        batch = features[0].shape[0]
        batch_means = [x.mean(dim=0) for x in features]
        centred = [x - m for x, m in zip(features, batch_means)]
        if self.means is None:
            widths = [x.shape[1] for x in features]
            needed = sum(widths[a] * widths[b] for a in range(len(widths)) for b in range(a, len(widths))) * 8
            if needed > self.memory_budget:
                raise ValueError(
                    f"exact streaming CKA over layers of widths {widths} needs {needed / 2**30:.1f} GiB of "
                    "cross-covariances; use pool='mean', fewer layers, estimator='minibatch', or raise memory_budget"
                )
            self.means = [torch.zeros_like(m) for m in batch_means]
        total = self.count + batch
        shifts = [m_batch - m_old for m_batch, m_old in zip(batch_means, self.means)]
        weight = self.count * batch / total
        for a in range(len(features)):
            for b in range(a, len(features)):
                update = centred[a].T @ centred[b] + weight * torch.outer(shifts[a], shifts[b])
                key = (a, b)
                self.comoments[key] = self.comoments[key] + update if key in self.comoments else update
        self.means = [m + s * (batch / total) for m, s in zip(self.means, shifts)]
        self.count = total

    def merge(self, other: "StreamingCKA") -> None:
        """Fold in another rank's sums: HSIC sums add; means and cross-covariances merge pairwise (Chan et al.)."""
        if self.estimator == "minibatch":
            if other.hsic_sum is not None:
                theirs = other.hsic_sum.to(self.device)
                self.hsic_sum = theirs if self.hsic_sum is None else self.hsic_sum + theirs
                self.n_batches_used += other.n_batches_used
            return
        if other.means is None:
            return
        if self.means is None:
            self.count, self.means = other.count, [m.to(self.device) for m in other.means]
            self.comoments = {key: value.to(self.device) for key, value in other.comoments.items()}
            return
        total = self.count + other.count
        shifts = [theirs.to(self.device) - mine for theirs, mine in zip(other.means, self.means)]
        weight = self.count * other.count / total
        for (a, b), comoment in other.comoments.items():
            self.comoments[a, b] = self.comoments[a, b] + comoment.to(self.device) + weight * torch.outer(shifts[a], shifts[b])
        self.means = [mine + shift * (other.count / total) for mine, shift in zip(self.means, shifts)]
        self.count = total

    def __getstate__(self) -> dict:
        # The pooling function may be a closure or a lambda, which cannot be pickled; merging (the only
        # use of a pickled copy, sent between the ranks of a distributed recording) does not need it.
        state = dict(self.__dict__)
        state["pool"] = None
        return state

    def result(self) -> SimilarityMatrix:
        k = len(self.layers)
        if self.estimator == "minibatch":
            if self.hsic_sum is None:
                raise ValueError("no batch of at least 4 stimuli was seen; the minibatch CKA estimator needs them")
            inner = (self.hsic_sum / self.n_batches_used).cpu().numpy()
            n_used = self.n_batches_used
        else:
            if self.count < 3:
                raise ValueError(f"streaming CKA saw {self.count} stimuli; it needs at least 3")
            inner = np.zeros((k, k))
            for (a, b), comoment in self.comoments.items():
                inner[a, b] = inner[b, a] = float(torch.linalg.matrix_norm(comoment) ** 2)
            n_used = self.count
        diagonal = np.diag(inner).copy()
        degenerate = [self.layers[i] for i in np.flatnonzero(diagonal <= 0)]
        if degenerate:
            raise ValueError(f"layer(s) {degenerate} are the same for every stimulus, so CKA with them is undefined")
        values = inner / np.sqrt(np.outer(diagonal, diagonal))
        np.fill_diagonal(values, 1.0)
        return SimilarityMatrix(
            values,
            list(self.layers),
            [""] * k,
            list(self.layers),
            "linear CKA" if self.estimator == "exact" else "linear CKA (minibatch unbiased HSIC)",
            self.count if self.estimator == "exact" else int(self.n_stimuli),
            {"estimator": self.estimator, "batches_used": n_used},
        )
