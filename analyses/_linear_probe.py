"""Linear probes and kNN read-outs on frozen features.

``linear_probe`` fits multinomial L2 logistic regression with full-batch L-BFGS in torch and
minimises exactly scikit-learn's objective (``LogisticRegression(C=C)``, lbfgs, scikit-learn
1.9)::

    C * sum_n cross_entropy(W x_n + b, y_n) + 0.5 * ||W||_F^2        (b not penalised)

with one weight vector for two classes (as scikit-learn does) and one per class otherwise.
Speed comes from solving it in better coordinates, which leaves the minimiser unchanged: the
weights are written ``W = q @ basis.T`` with a basis that whitens an estimate of the Hessian,
``covariance + 4 / (C n)`` (the float64 covariance of a strided subsample of the centred
training features; a Cholesky factor, or, when rounding leaves a singular covariance indefinite,
its eigenvectors scaled: any estimate gives an exact reparametrisation). With fewer
stimuli than units the basis spans the stimuli instead (the optimal W lies in their span, so
directions with zero variance are dropped exactly). The first iterate is one Newton-like step
from ``W = 0`` with the intercept at the class log-priors. L-BFGS runs in float32 (half the
memory traffic of float64, which sets the CPU's speed) and, only where that stops short of
``tol``, finishes in float64. ``tol`` defaults to scikit-learn's. On the CPU, small problems
(``_SCIPY_SIZE``) are solved in float64 by SciPy's L-BFGS-B, the solver scikit-learn calls, in the
same coordinates; on an accelerator, cross-validation of C on small problems fits every (fold, C)
pair in one batched L-BFGS run, free of per-fit Python overhead. Along a path of C the solution
(weights and intercept) of one C starts the next.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from sklearn.metrics import precision_recall_fscore_support
from sklearn.model_selection import StratifiedKFold

from zoo import knn_predict, resolve_device

__all__ = ["linear_probe", "knn_accuracy", "ProbeResult", "DEFAULT_CS"]

DEFAULT_CS: tuple[float, ...] = tuple(float(c) for c in np.logspace(-4, 3, 8))
"""Log grid of inverse penalties searched by cross-validation when ``C`` is None."""

# C used when the training split is too small to cross-validate (fewer than 2 labels per class).
_FALLBACK_C = 1.0

# Stimuli (at most, beyond 4 per unit) whose covariance sets the preconditioner.
_GRAM_ROWS = 2048

# On the CPU, problems of at most this many feature entries (stimuli x units) are solved by SciPy's
# L-BFGS-B in float64 (see _lbfgs_scipy); larger ones by torch in float32.
_SCIPY_SIZE = 200_000

# Curvature pairs L-BFGS remembers (torch path): 100 halves the iterations on features whose Hessian the
# covariance preconditioner matches poorly (a random ReLU layer: 218 -> 101), at a negligible cost per step.
_HISTORY = 100

# On an accelerator, cross-validation solves every fold and C at once (one batched L-BFGS, free of
# per-fit Python overhead) when n_train * n_units and n_units are at most these.
_BATCHED_CV_SIZE = 20_000
_BATCHED_CV_UNITS = 256


def _as_features(array: Any, name: str) -> np.ndarray | torch.Tensor:
    if isinstance(array, torch.Tensor):
        features = array.detach()
        # A sum is finite when every entry is (and far cheaper to check); only overflow needs the full test.
        finite = bool(torch.isfinite(features.sum())) or bool(torch.isfinite(features).all())
    else:
        features = np.asarray(array)
        if features.dtype.kind not in "fiub":
            raise ValueError(f"{name} must be numeric; got dtype {features.dtype}")
        finite = bool(np.isfinite(features.sum())) or bool(np.all(np.isfinite(features)))
    if features.ndim != 2:
        raise ValueError(f"{name} must have shape (n_stimuli, n_units); got shape {tuple(features.shape)}; "
                         "flatten it with .reshape(len(x), -1)")
    if not finite:
        raise ValueError(f"{name} contains NaN or infinite values; remove those stimuli or units (or impute) first")
    return features


def _as_labels(labels: Any, n: int, name: str) -> np.ndarray:
    labels = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if labels.ndim != 1 or len(labels) != n:
        raise ValueError(f"{name} must have shape ({n},), one label per stimulus; got shape {labels.shape}")
    return labels


def _validate(X_train, y_train, X_test, y_test):
    X_train, X_test = _as_features(X_train, "X_train"), _as_features(X_test, "X_test")
    if X_train.shape[1] != X_test.shape[1]:
        raise ValueError(
            f"X_train has {X_train.shape[1]} units but X_test has {X_test.shape[1]}; "
            "train and test features must come from the same layer"
        )
    y_train = _as_labels(y_train, X_train.shape[0], "y_train")
    y_test = _as_labels(y_test, X_test.shape[0], "y_test")
    classes = np.unique(y_train)
    if len(classes) < 2:
        raise ValueError(f"y_train holds a single class ({classes.tolist()}); a probe needs at least 2 classes")
    unseen = np.setdiff1d(np.unique(y_test), classes)
    if len(unseen):
        raise ValueError(f"y_test has classes {unseen.tolist()} that y_train lacks; add training examples of them")
    return X_train, y_train, X_test, y_test, classes


@dataclass
class ProbeResult:
    """A linear probe's scores on the test split.

    Attributes
    ----------
    accuracy
        Fraction of test stimuli classified correctly.
    C
        The inverse penalty used.
    C_selection
        ``"fixed"`` (given), ``"cv"`` (stratified k-fold on the training split) or ``"fallback"``
        (too few labels per class to cross-validate; ``C = 1``).
    per_class
        DataFrame with one row per class: class, precision, recall, f1, support.
    cv_scores
        Mean cross-validated accuracy per candidate C (empty unless ``C_selection == "cv"``).
    n_train, n_test, n_units, n_classes
        Sizes.
    n_iter
        L-BFGS iterations of the final fit.
    seconds
        Wall time of the whole call.
    coef, intercept
        Arrays of shape (n_outputs, n_units) and (n_outputs,) in the (standardised, if asked)
        feature space; n_outputs is 1 for two classes.
    layer, model
        Labels for tables and figures.
    """

    accuracy: float
    C: float
    C_selection: str
    per_class: pd.DataFrame
    cv_scores: dict[float, float]
    n_train: int
    n_test: int
    n_units: int
    n_classes: int
    n_iter: int
    seconds: float
    coef: np.ndarray = field(repr=False)
    intercept: np.ndarray = field(repr=False)
    layer: str = ""
    model: str = ""

    def to_frame(self) -> pd.DataFrame:
        """One-row summary: model, layer, accuracy, C, C_selection, sizes, n_iter, seconds."""
        keys = ["model", "layer", "accuracy", "C", "C_selection", "n_train", "n_test", "n_units", "n_classes",
                "n_iter", "seconds"]
        return pd.DataFrame([{key: getattr(self, key) for key in keys}])


class _Preconditioned:
    """Training features and the probe's solving coordinates (see the module docstring).

    The weights are parametrised as ``W = q @ basis.T``; the features are only centred, never
    rotated (a product with ``basis`` per step is far cheaper than rotating every stimulus).
    """

    def __init__(self, features: torch.Tensor, dtype: torch.dtype):
        n, d = features.shape
        self.n, self.dtype, self._source = n, dtype, features
        self.mean = features.mean(dim=0)
        # Cast, then centre in place: two quick passes (a mixed-precision subtraction is slow). The
        # cast may round off an offset's digits; the float64 finish (see _fit_logistic) does not.
        self.centered = features.to(dtype, copy=True).sub_(self.mean.to(dtype))
        self._float64 = self.centered if dtype == torch.float64 else None
        self.axes = None
        if d <= n:
            # Any invertible basis leaves the minimiser unchanged, so a strided subsample of
            # stimuli is enough to estimate the covariance the basis whitens.
            rows = self.centered[:: max(1, n // max(4 * d, _GRAM_ROWS))].to(torch.float64)
            self.covariance = rows.T @ rows / len(rows)
        else:  # fewer stimuli than units: the optimal W lies in the span of the (n, n) Gram's vectors
            centered64 = features - self.mean
            gram_values, gram_vectors = torch.linalg.eigh(centered64 @ centered64.T / n)
            keep = gram_values > gram_values.max().clamp_min(1e-300) * 1e-12
            self.variances, gram_vectors = gram_values[keep], gram_vectors[:, keep]
            self.axes = centered64.T @ gram_vectors / torch.sqrt(self.variances * n)  # (d, r), orthonormal

    def basis(self, C: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(basis, coordinates) with ``W = q @ basis.T`` and ``q = W @ coordinates``.

        The basis whitens ``covariance + 4 / (C n)``, an estimate of the Hessian of the
        objective (the 4 is 1 / the largest curvature of the loss, 1/4).
        """
        ridge = 4.0 / (C * self.n)
        if self.axes is not None:
            scales = (self.variances + ridge).rsqrt()
            return self.axes * scales, self.axes / scales
        return self._whitening(self.covariance, ridge)

    @staticmethod
    def _whitening(matrix: torch.Tensor, ridge: float) -> tuple[torch.Tensor, torch.Tensor]:
        eye = torch.eye(len(matrix), dtype=torch.float64, device=matrix.device)
        lower, info = torch.linalg.cholesky_ex(matrix + ridge * eye)
        if int(info) == 0:
            # W = q @ L^-1 gives basis.T @ (matrix + ridge) @ basis = identity.
            return torch.linalg.solve_triangular(lower, eye, upper=False).T, lower
        # Rank-deficient features (e.g. after a LayerNorm) with a ridge below rounding: whiten by
        # eigenvectors, the rounding's negative eigenvalues taken as 0.
        values, vectors = torch.linalg.eigh(matrix)
        scales = (values.clamp_min(0.0) + max(ridge, float(values.max()) * 1e-12)).rsqrt()
        return vectors * scales, vectors / scales

    def centered_as(self, dtype: torch.dtype) -> torch.Tensor:
        if self._float64 is None:
            self._float64 = (self._source - self.mean).to(torch.float64)
        return self.centered if dtype == self.dtype else self._float64


def _lbfgs(inputs: torch.Tensor, basis: torch.Tensor, C: float, one_hot: torch.Tensor, q: torch.Tensor,
           b: torch.Tensor, max_iter: int, tol: float) -> tuple[torch.Tensor, torch.Tensor, int, float]:
    """L-BFGS over (q, b) on mean CE + ||W||^2 / (2 C n) with ``W = q @ basis.T``, logits ``inputs @ W.T + b``.

    The penalty is taken on W itself, so ``basis`` need not be orthonormal: any basis of the
    span the optimum lies in gives the same minimiser.

    Returns (q, b, iterations, largest gradient entry at the last evaluation).
    """
    dtype = inputs.dtype
    q = q.to(dtype).clone()
    b = b.to(dtype).clone()
    basis, one_hot = basis.to(dtype), one_hot.to(dtype)
    penalty = 1.0 / (C * inputs.shape[0])
    binary = q.shape[0] == 1
    n = inputs.shape[0]
    # Probabilities below exp(floor) are kept at exp(floor) (a change far below any tolerance):
    # subnormal numbers would slow every product with them tenfold or more.
    floor = math.log(torch.finfo(dtype).tiny) + 2.0
    optimizer = torch.optim.LBFGS(
        [q, b], lr=1.0, max_iter=max_iter, tolerance_grad=tol,
        tolerance_change=1e-14 if dtype == torch.float64 else 1e-9, history_size=_HISTORY, line_search_fn="strong_wolfe",
    )
    last = {"grad": float("inf")}

    # Loss and gradient by hand: two products with the features per evaluation, half autograd's cost.
    def closure() -> torch.Tensor:
        weights = q @ basis.T
        logits = torch.addmm(b, inputs, weights.T)
        if binary:
            loss = (F.softplus(logits) - one_hot * logits).sum() / n
            residual = (torch.sigmoid(logits.clamp(min=floor)) - one_hot) / n
        else:
            log_norm = torch.logsumexp(logits, dim=1, keepdim=True)
            loss = (log_norm - logits).mul_(one_hot).sum() / n
            residual = (torch.exp((logits - log_norm).clamp_(min=floor)) - one_hot) / n
        loss = loss + 0.5 * penalty * (weights**2).sum()
        q.grad = (residual.T @ inputs + penalty * weights) @ basis
        b.grad = residual.sum(dim=0)
        last["grad"] = max(float(q.grad.abs().max()), float(b.grad.abs().max()))
        return loss

    optimizer.step(closure)
    return q, b, int(optimizer.state[q].get("n_iter", 0)), last["grad"]


def _lbfgs_scipy(inputs: torch.Tensor, basis: torch.Tensor, C: float, one_hot: torch.Tensor, q: torch.Tensor,
                 b: torch.Tensor, max_iter: int, tol: float) -> tuple[torch.Tensor, torch.Tensor, int, float]:
    """``_lbfgs``'s problem, solved by SciPy's L-BFGS-B in float64 NumPy (the solver scikit-learn calls).

    On small CPU problems torch's Python-level L-BFGS spends more time on its own bookkeeping than on
    the arithmetic; SciPy's Fortran loop does not. Same objective, coordinates and stopping rule
    (largest gradient entry at most ``tol``).
    """
    from scipy.optimize import minimize

    X = inputs.detach().cpu().numpy().astype(np.float64, copy=False)
    B = basis.detach().cpu().numpy().astype(np.float64, copy=False)
    Y = one_hot.detach().cpu().numpy().astype(np.float64)
    n, (n_outputs, rank) = X.shape[0], q.shape
    penalty = 1.0 / (C * n)
    binary = n_outputs == 1
    floor = math.log(np.finfo(np.float64).tiny) + 2.0

    def loss_and_gradient(theta: np.ndarray) -> tuple[float, np.ndarray]:
        q_, b_ = theta[: n_outputs * rank].reshape(n_outputs, rank), theta[n_outputs * rank:]
        weights = q_ @ B.T
        logits = X @ weights.T + b_
        if binary:
            loss = (np.logaddexp(0.0, logits) - Y * logits).sum() / n
            residual = (1.0 / (1.0 + np.exp(-np.maximum(logits, floor))) - Y) / n
        else:
            top = logits.max(axis=1, keepdims=True)
            log_norm = top + np.log(np.exp(logits - top).sum(axis=1, keepdims=True))
            loss = ((log_norm - logits) * Y).sum() / n
            residual = (np.exp(np.maximum(logits - log_norm, floor)) - Y) / n
        loss += 0.5 * penalty * float((weights**2).sum())
        gradient_q = (residual.T @ X + penalty * weights) @ B
        return loss, np.concatenate([gradient_q.ravel(), residual.sum(axis=0)])

    start = np.concatenate([q.detach().cpu().numpy().astype(np.float64).ravel(),
                            b.detach().cpu().numpy().astype(np.float64)])
    result = minimize(loss_and_gradient, start, jac=True, method="L-BFGS-B",
                      options={"maxiter": max_iter, "gtol": tol, "ftol": 64 * np.finfo(float).eps, "maxls": 50})
    theta = torch.as_tensor(result.x, device=q.device)
    grad = float(np.abs(result.jac).max()) if result.jac is not None else float("inf")
    return theta[: n_outputs * rank].reshape(n_outputs, rank), theta[n_outputs * rank:], int(result.nit), grad


def _fit_logistic(
    data: _Preconditioned, targets: torch.Tensor, n_outputs: int, C: float,
    warm: tuple[torch.Tensor, torch.Tensor] | None, max_iter: int, tol: float,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Minimise C * sum CE + 0.5 ||W||^2 in the preconditioned coordinates.

    Solves in ``data.dtype`` and, where that stops short of ``tol`` (float32 resolves the
    gradient to about 1e-5), finishes in float64 from there. Returns (weights on the centred
    features, shape (n_outputs, n_units); intercept (n_outputs,); n_iter), in float64.
    """
    basis, coordinates = data.basis(C)
    device = data.centered.device
    one_hot = F.one_hot(targets, n_outputs) if n_outputs > 1 else targets[:, None]
    if warm is not None:  # the previous C's solution: weights on the centred features and intercept
        q = warm[0] @ coordinates
        b = warm[1].clone()
    else:  # one Newton-like step from W = 0 with the intercept at the class log-priors
        priors = one_hot.to(torch.float64).mean(dim=0).clamp(1e-12, 1 - 1e-12)
        b = torch.log(priors) if n_outputs > 1 else torch.log(priors / (1 - priors))
        gradient = -(one_hot.to(data.dtype).T @ data.centered).to(torch.float64) / data.n  # centred: sum_n x_n = 0
        curvature = priors * (1 - priors)
        q = -(gradient @ basis) / curvature[:, None]
    if device.type == "cpu" and data.centered.numel() <= _SCIPY_SIZE:
        q, b, n_iter, _ = _lbfgs_scipy(data.centered_as(torch.float64), basis, C, one_hot, q, b, max_iter, tol)
        return q.to(torch.float64) @ basis.T, b.to(torch.float64), n_iter
    q, b, n_iter, grad = _lbfgs(data.centered, basis, C, one_hot, q, b, max_iter, tol)
    if grad > tol and n_iter < max_iter and data.dtype != torch.float64:
        q, b, more, _ = _lbfgs(data.centered_as(torch.float64), basis, C, one_hot, q, b, max_iter - n_iter, tol)
        n_iter += more
    return q.to(torch.float64) @ basis.T, b.to(torch.float64), n_iter


def _predict(weights: torch.Tensor, intercept: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    logits = features @ weights.T + intercept
    return (logits[:, 0] > 0).long() if weights.shape[0] == 1 else logits.argmax(dim=1)


def _to_tensor(array: Any, device: torch.device) -> torch.Tensor:
    tensor = array if isinstance(array, torch.Tensor) else torch.as_tensor(np.asarray(array))
    return tensor.to(device=device, dtype=torch.float64)


def _fit_predict(train: torch.Tensor, targets: torch.Tensor, n_classes: int, Cs: Sequence[float], tests: list,
                 dtype: torch.dtype, max_iter: int, tol: float):
    """Fit one probe per C (warm-started along the path); return predictions on each test array."""
    data = _Preconditioned(train, dtype)
    n_outputs = 1 if n_classes == 2 else n_classes
    warm, results = None, []
    for C in Cs:
        full_weights, intercept, n_iter = _fit_logistic(data, targets, n_outputs, float(C), warm, max_iter, tol)
        warm = full_weights, intercept
        full_intercept = intercept - full_weights @ data.mean
        predictions = [_predict(full_weights, full_intercept, test) for test in tests]
        results.append((full_weights, full_intercept, n_iter, predictions))
    return results


def _cross_validate_batched(train: torch.Tensor, targets: torch.Tensor, n_classes: int, Cs: Sequence[float],
                            splits: list, max_iter: int, tol: float) -> np.ndarray:
    """Held-out correct counts per C, every (fold, C) probe fitted by one L-BFGS run in float64.

    The objective is the sum of the independent per-(fold, C) objectives (each the mean
    cross-entropy plus ``||W||^2 / (2 C n_fold)``), so its minimiser is theirs; each block is
    whitened by its own ``covariance + 4 / (C n_fold)`` (see ``_Preconditioned.basis``).
    Folds are padded to one length with rows of zero weight.
    """
    device, dtype = train.device, torch.float64
    n_folds, n_Cs, units = len(splits), len(Cs), train.shape[1]
    n_outputs = 1 if n_classes == 2 else n_classes
    longest = max(len(fit_rows) for fit_rows, _ in splits)
    inputs = torch.zeros(n_folds, longest, units, dtype=dtype, device=device)
    targets_1hot = torch.zeros(n_folds, longest, n_outputs, dtype=dtype, device=device)
    weights_n = torch.zeros(n_folds, longest, dtype=dtype, device=device)  # 1 / n_fold on real rows
    means = []
    for f, (fit_rows, _) in enumerate(splits):
        rows = train[fit_rows].to(dtype)
        means.append(rows.mean(dim=0))
        inputs[f, : len(rows)] = rows - means[-1]
        labels = targets[fit_rows]
        targets_1hot[f, : len(rows)] = (F.one_hot(labels, n_outputs) if n_outputs > 1 else labels[:, None]).to(dtype)
        weights_n[f, : len(rows)] = 1.0 / len(rows)
    sizes = torch.tensor([len(fit_rows) for fit_rows, _ in splits], dtype=dtype, device=device)
    Cs_tensor = torch.tensor(list(Cs), dtype=dtype, device=device)
    penalty = 1.0 / (Cs_tensor[None, :] * sizes[:, None])  # (folds, Cs)
    covariance = inputs.transpose(1, 2) @ inputs / sizes[:, None, None]
    eye = torch.eye(units, dtype=dtype, device=device)
    lower = torch.linalg.cholesky(covariance[:, None] + 4.0 * penalty[..., None, None] * eye)
    basis = torch.linalg.solve_triangular(lower, eye.expand_as(lower), upper=False).transpose(-1, -2)
    q = torch.zeros(n_folds, n_Cs, n_outputs, units, dtype=dtype, device=device)
    b = torch.zeros(n_folds, n_Cs, n_outputs, dtype=dtype, device=device)
    optimizer = torch.optim.LBFGS([q, b], lr=1.0, max_iter=max_iter, tolerance_grad=tol, tolerance_change=1e-14,
                                  history_size=10, line_search_fn="strong_wolfe")
    row_weights = weights_n[:, :, None, None]
    floor = math.log(torch.finfo(dtype).tiny) + 2.0  # no subnormal probabilities (see _lbfgs)
    one_hot = targets_1hot[:, :, None, :]
    weighted_one_hot = one_hot * row_weights
    basis_t = basis.transpose(-1, -2).contiguous()
    block_penalty = penalty[..., None, None]

    def closure() -> torch.Tensor:
        weights = q @ basis_t  # (folds, Cs, outputs, units)
        logits = (inputs @ weights.reshape(n_folds, -1, units).transpose(1, 2)).reshape(
            n_folds, longest, n_Cs, n_outputs) + b[:, None]
        if n_outputs == 1:
            loss = (F.softplus(logits) * row_weights).sum() - (weighted_one_hot * logits).sum()
            residual = (torch.sigmoid(logits.clamp(min=floor)) - one_hot) * row_weights
        else:
            log_norm = torch.logsumexp(logits, dim=3, keepdim=True)
            loss = ((log_norm - logits) * weighted_one_hot).sum()
            residual = (torch.exp((logits - log_norm).clamp_(min=floor)) - one_hot) * row_weights
        loss = loss + 0.5 * (block_penalty * weights**2).sum()
        weight_grad = (residual.reshape(n_folds, longest, -1).transpose(1, 2) @ inputs).reshape(weights.shape)
        q.grad = (weight_grad + block_penalty * weights) @ basis
        b.grad = residual.sum(dim=1)
        return loss

    optimizer.step(closure)
    weights = (q @ basis.transpose(-1, -2)).detach()
    correct = np.zeros(n_Cs)
    for f, (_, held_rows) in enumerate(splits):
        held = train[held_rows].to(dtype) - means[f]
        for i in range(n_Cs):
            predictions = _predict(weights[f, i], b[f, i].detach(), held)
            correct[i] += float((predictions == targets[held_rows]).sum())
    return correct


@contextlib.contextmanager
def _single_threaded(active: bool) -> Iterator[None]:
    """Run small CPU problems on one thread (torch's and the BLAS pools). Thread pools cost more than they
    give there, and torch's and NumPy's pools spinning side by side slowed SciPy's solver 4x on 2 cores."""
    if not active:
        yield
        return
    from threadpoolctl import threadpool_limits

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(1):
            yield
    finally:
        torch.set_num_threads(previous)


def linear_probe(
    X_train: Any,
    y_train: Any,
    X_test: Any,
    y_test: Any,
    C: float | None = None,
    *,
    Cs: Sequence[float] = DEFAULT_CS,
    cv: int = 5,
    standardize: bool = True,
    max_iter: int = 1000,
    tol: float = 1e-4,
    device: str | torch.device = "auto",
    random_state: int = 0,
    layer: str = "",
    model: str = "",
) -> ProbeResult:
    """Train a linear read-out on frozen features and score it on a test split.

    Parameters
    ----------
    X_train, X_test
        Arrays of shape (n_train, n_units) and (n_test, n_units) (NumPy or torch).
    y_train, y_test
        Integer (or any sortable) labels of shape (n_train,) and (n_test,).
    C
        Inverse penalty, as in ``sklearn.linear_model.LogisticRegression``. None: choose it from
        ``Cs`` by stratified ``cv``-fold cross-validation on the training split only (largest
        mean accuracy; ties go to the smaller C). With fewer than 2 labels in some class, no
        cross-validation is possible and ``C = 1`` is used (``C_selection == "fallback"``).
    Cs
        Candidate values of C.
    cv
        Folds (reduced to the smallest class count when that is lower).
    standardize
        Scale every unit to zero mean and unit variance (statistics of the training split)
        before fitting. This changes the objective (the penalty then weighs standardised
        weights) and makes one grid of C fit every layer; pass False to reproduce
        ``LogisticRegression`` on the raw features.
    max_iter
        L-BFGS iterations per fit.
    tol
        L-BFGS stops when the largest gradient entry of the objective divided by ``C * n_train``
        (in the solving coordinates) falls below ``tol``; the default is scikit-learn's. Below
        about 1e-5 the fit finishes in float64; pass 1e-8 or so to pin the exact minimiser.
    device
        ``"auto"``: CUDA when present. The solver works in float32 (then float64 if ``tol``
        asks for it) on every device.
    random_state
        Seed of the cross-validation folds.
    layer, model
        Labels stored in the result.

    Returns
    -------
    ProbeResult
    """
    started = time.perf_counter()
    X_train, y_train, X_test, y_test, classes = _validate(X_train, y_train, X_test, y_test)
    device = resolve_device(device)
    dtype = torch.float32
    train, test = _to_tensor(X_train, device), _to_tensor(X_test, device)
    if standardize:
        center, scale = train.mean(dim=0), train.std(dim=0, unbiased=False)
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        train, test = (train - center) / scale, (test - center) / scale
    train_index = np.searchsorted(classes, y_train)
    targets = torch.as_tensor(train_index, device=device)

    small_cpu = device.type == "cpu" and train.numel() <= _SCIPY_SIZE
    with _single_threaded(small_cpu):
        cv_scores: dict[float, float] = {}
        if C is not None:
            if not np.isfinite(C) or C <= 0:
                raise ValueError(f"C must be a positive finite number; got {C}")
            chosen, selection = float(C), "fixed"
        else:
            min_count = int(np.bincount(train_index).min())
            if min_count < 2:
                chosen, selection = _FALLBACK_C, "fallback"
            else:
                Cs = sorted(float(c) for c in Cs)
                folds = StratifiedKFold(n_splits=min(cv, min_count), shuffle=True, random_state=random_state)
                splits = list(folds.split(np.zeros(len(train_index)), train_index))
                small = len(train_index) * train.shape[1] <= _BATCHED_CV_SIZE and train.shape[1] <= _BATCHED_CV_UNITS
                if small and device.type != "cpu":  # on the CPU, SciPy's solver is faster still (_lbfgs_scipy)
                    correct = _cross_validate_batched(train, targets, len(classes), Cs, splits, max_iter, tol)
                else:
                    correct = np.zeros(len(Cs))
                    for fit_rows, held_rows in splits:
                        fits = _fit_predict(train[fit_rows], targets[fit_rows], len(classes), Cs, [train[held_rows]],
                                            dtype, max_iter, tol)
                        for i, (*_, predictions) in enumerate(fits):
                            correct[i] += float((predictions[0] == targets[held_rows]).sum())
                accuracy_by_C = correct / len(train_index)
                cv_scores = dict(zip(Cs, accuracy_by_C.tolist()))
                chosen, selection = Cs[int(np.argmax(accuracy_by_C))], "cv"

        weights, intercept, n_iter, (predictions,) = _fit_predict(train, targets, len(classes), [chosen], [test], dtype,
                                                                 max_iter, tol)[0]
    predicted = classes[predictions.cpu().numpy()]
    precision, recall, f1, support = precision_recall_fscore_support(y_test, predicted, labels=classes,
                                                                     zero_division=0)
    per_class = pd.DataFrame({"class": classes, "precision": precision, "recall": recall, "f1": f1,
                              "support": support})
    return ProbeResult(
        accuracy=float(np.mean(predicted == y_test)), C=chosen, C_selection=selection, per_class=per_class,
        cv_scores=cv_scores, n_train=len(y_train), n_test=len(y_test), n_units=int(train.shape[1]),
        n_classes=len(classes), n_iter=n_iter, seconds=time.perf_counter() - started,
        coef=weights.cpu().numpy(), intercept=intercept.cpu().numpy(), layer=layer, model=model,
    )


def knn_accuracy(
    X_train: Any,
    y_train: Any,
    X_test: Any,
    y_test: Any,
    k: int = 5,
    *,
    metric: str = "cosine",
    batch_size: int = 1024,
    device: str | torch.device = "auto",
) -> float:
    """Accuracy of a k-nearest-neighbour vote on frozen features.

    Parameters
    ----------
    X_train, X_test
        Arrays of shape (n_train, n_units) and (n_test, n_units).
    y_train, y_test
        Labels of shape (n_train,) and (n_test,).
    k
        Neighbours per vote; ties between classes go to the smallest label (as scikit-learn's
        ``KNeighborsClassifier``).
    metric
        ``"cosine"`` (similarity of L2-normalised features, the usual self-supervised read-out)
        or ``"euclidean"``.
    batch_size
        Test stimuli per distance block, bounding memory to (batch_size, n_train).
    device
        ``"auto"``: CUDA when present.

    Returns
    -------
    float
        Fraction of test stimuli whose vote matches their label.
    """
    X_train, y_train, X_test, y_test, classes = _validate(X_train, y_train, X_test, y_test)
    device = resolve_device(device)
    dtype = torch.float64 if device.type == "cpu" else torch.float32
    train, test = _to_tensor(X_train, device).to(dtype), _to_tensor(X_test, device).to(dtype)
    train_index = torch.as_tensor(np.searchsorted(classes, y_train), device=device)
    votes = knn_predict(train, train_index, test, k, metric=metric, batch_size=batch_size)
    predicted = classes[votes.numpy()]
    return float(np.mean(predicted == y_test))
