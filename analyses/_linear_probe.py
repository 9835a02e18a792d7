"""Linear probes and kNN read-outs on frozen features.

``linear_probe`` fits multinomial L2 logistic regression with full-batch L-BFGS in torch and
minimises exactly scikit-learn's objective (``LogisticRegression(C=C)``, lbfgs, scikit-learn
1.9)::

    C * sum_n cross_entropy(W x_n + b, y_n) + 0.5 * ||W||_F^2        (b not penalised)

with one weight vector for two classes (as scikit-learn does) and one per class otherwise.
Speed comes from solving it in better coordinates, which leaves the minimiser unchanged:
features are centred (absorbed by the unpenalised intercept), rotated onto the principal axes of
the training features (the optimal W lies in their span, so directions with zero variance are
dropped exactly), and each axis is rescaled by ``(variance + 4 / (C n))^(-1/2)``, an estimate of
the inverse square root of the Hessian's diagonal, as a preconditioner for L-BFGS.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Sequence

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


def _as_features(array: Any, name: str) -> np.ndarray | torch.Tensor:
    if isinstance(array, torch.Tensor):
        features = array.detach()
        finite = bool(torch.isfinite(features).all())
    else:
        features = np.asarray(array)
        if features.dtype.kind not in "fiub":
            raise ValueError(f"{name} must be numeric; got dtype {features.dtype}")
        finite = bool(np.all(np.isfinite(features)))
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
    """Training features in the probe's solving coordinates (see the module docstring)."""

    def __init__(self, features: torch.Tensor, dtype: torch.dtype):
        n = features.shape[0]
        self.mean = features.mean(dim=0)
        centered = features - self.mean
        # Gram and eigh in float64 even on GPU: they are small and their accuracy sets the rest.
        if features.shape[1] <= n:
            variances, axes = torch.linalg.eigh(centered.T @ centered / n)
            keep = variances > variances.max().clamp_min(1e-300) * 1e-12
            self.variances, self.axes = variances[keep], axes[:, keep]  # axes: (n_units, r)
            self.projected = centered @ self.axes
        else:  # fewer stimuli than units: eigendecompose the smaller (n, n) Gram matrix instead
            gram_values, gram_vectors = torch.linalg.eigh(centered @ centered.T / n)
            keep = gram_values > gram_values.max().clamp_min(1e-300) * 1e-12
            self.variances, gram_vectors = gram_values[keep], gram_vectors[:, keep]
            norms = torch.sqrt(self.variances * n)
            self.projected = gram_vectors * norms  # = centered @ axes
            self.axes = centered.T @ gram_vectors / norms
        self.n = n
        self.dtype = dtype

    def scales(self, C: float) -> torch.Tensor:
        return (self.variances + 4.0 / (C * self.n)).rsqrt()


def _fit_logistic(
    data: _Preconditioned, targets: torch.Tensor, n_outputs: int, C: float, warm: torch.Tensor | None,
    max_iter: int, tol: float,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Minimise C * sum CE + 0.5 ||W||^2 in the preconditioned coordinates.

    Returns (weights in the rotated space, shape (n_outputs, r); intercept (n_outputs,); n_iter).
    """
    dtype = data.dtype
    scales = data.scales(C)
    inputs = (data.projected * scales).to(dtype)
    penalty_weights = (scales**2).to(dtype) / (2.0 * C * data.n)
    q = torch.zeros(n_outputs, inputs.shape[1], dtype=dtype, device=inputs.device)
    if warm is not None:
        q = (warm / scales).to(dtype)
    b = torch.zeros(n_outputs, dtype=dtype, device=inputs.device)
    binary = n_outputs == 1
    one_hot = F.one_hot(targets, n_outputs).to(dtype) if not binary else targets.to(dtype)[:, None]
    n = inputs.shape[0]
    optimizer = torch.optim.LBFGS(
        [q, b], lr=1.0, max_iter=max_iter, tolerance_grad=tol,
        tolerance_change=1e-14 if dtype == torch.float64 else 1e-9, history_size=20, line_search_fn="strong_wolfe",
    )

    # Loss and gradient by hand: two matrix products per evaluation, half of autograd's cost here.
    def closure() -> torch.Tensor:
        logits = torch.addmm(b, inputs, q.T)
        if binary:
            loss = (F.softplus(logits) - one_hot * logits).sum() / n
            residual = (torch.sigmoid(logits) - one_hot) / n
        else:
            log_norm = torch.logsumexp(logits, dim=1, keepdim=True)
            loss = (log_norm - logits).mul_(one_hot).sum() / n
            residual = (torch.exp(logits - log_norm) - one_hot) / n
        loss = loss + (penalty_weights * q**2).sum()
        q.grad = residual.T @ inputs + 2.0 * penalty_weights * q
        b.grad = residual.sum(dim=0)
        return loss

    optimizer.step(closure)
    n_iter = int(optimizer.state[q].get("n_iter", 0))
    return (q.detach().to(torch.float64) * scales), b.detach().to(torch.float64), n_iter


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
        weights, intercept, n_iter = _fit_logistic(data, targets, n_outputs, float(C), warm, max_iter, tol)
        warm = weights
        full_weights = weights @ data.axes.T  # (n_outputs, n_units), centred features
        full_intercept = intercept - full_weights @ data.mean
        predictions = [_predict(full_weights, full_intercept, test) for test in tests]
        results.append((full_weights, full_intercept, n_iter, predictions))
    return results


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
    tol: float = 1e-7,
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
        falls below ``tol``.
    device
        ``"auto"``: CUDA when present. float64 on the CPU, float32 on a GPU.
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
    dtype = torch.float64 if device.type == "cpu" else torch.float32
    train, test = _to_tensor(X_train, device), _to_tensor(X_test, device)
    if standardize:
        center, scale = train.mean(dim=0), train.std(dim=0, unbiased=False)
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        train, test = (train - center) / scale, (test - center) / scale
    train_index = np.searchsorted(classes, y_train)
    targets = torch.as_tensor(train_index, device=device)

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
            correct = np.zeros(len(Cs))
            for fit_rows, held_rows in folds.split(np.zeros(len(train_index)), train_index):
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
