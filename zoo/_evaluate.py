"""Evaluating a trained zoo model: kNN accuracy of frozen features, accuracy, reconstruction error.

Which measures apply follows from the model's family (a dict lookup), and kNN accuracy is added
wherever the data are labelled. Reconstruction errors are mean squared errors per pixel in the
normalised input space, reported beside the error of predicting the mean training image, so that
their ratio (below 1 = better than the mean image) is visible.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from zoo._data import iterate_batches
from zoo._names import unknown_name_error

__all__ = ["evaluate_model", "extract_features", "knn_predict", "primary_metric", "PRIMARY_METRIC", "EVAL_MASK_SEED"]

# The MAE's masks during evaluation are drawn from this seed, so every evaluation sees the same masks.
EVAL_MASK_SEED = 12345

# The measure each family is judged by (logged per epoch under this name).
PRIMARY_METRIC = {
    "supervised": "test_accuracy",
    "autoencoder": "recon_ratio",
    "mae": "recon_ratio",
    "contrastive": "knn_accuracy",
}


def primary_metric(model: nn.Module) -> str:
    """The measure a model is judged by: its family's in ``PRIMARY_METRIC``, or a model class's own
    ``primary_metric`` attribute (families whose measures live beside their models)."""
    own = getattr(model, "primary_metric", None)
    return own if isinstance(own, str) else PRIMARY_METRIC[model.family]


def _model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def extract_features(model: nn.Module, dataset, batch_size: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """``model.encode`` of every image, in eval mode, on the model's device.

    Returns
    -------
    features
        Float tensor of shape (n_stimuli, d) on the model's device.
    labels
        Long tensor of shape (n_stimuli,) on the CPU.
    """
    device = _model_device(model)
    features, labels = [], []
    for images, batch_labels in iterate_batches(dataset, batch_size):
        features.append(model.encode(images.to(device)).float().flatten(1))
        labels.append(batch_labels.cpu())
    return torch.cat(features), torch.cat(labels)


# Similarity of every query row to every training row; larger is nearer.
_KNN_SCORES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "cosine": lambda query, train: F.normalize(query, dim=1) @ F.normalize(train, dim=1).T,
    "euclidean": lambda query, train: -torch.cdist(query, train),
}


@torch.no_grad()
def knn_predict(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    query_features: torch.Tensor,
    k: int = 5,
    *,
    metric: str = "cosine",
    batch_size: int = 1024,
) -> torch.Tensor:
    """Majority vote of the ``k`` nearest training items (ties between classes: the smallest label).

    This is the one kNN vote of the toolkit: the zoo's training-time evaluation and
    ``analyses.knn_accuracy`` both use it.

    Parameters
    ----------
    train_features
        Float tensor of shape (n_train, d); the vote runs on its device and in its precision.
    train_labels
        Long tensor of shape (n_train,), values >= 0.
    query_features
        Tensor of shape (n_query, d).
    k
        Number of neighbours.
    metric
        ``"cosine"`` (similarity of L2-normalised features, the usual self-supervised read-out) or
        ``"euclidean"``.
    batch_size
        Queries per similarity block, bounding memory to (batch_size, n_train).

    Returns
    -------
    Long tensor of shape (n_query,) on the CPU.
    """
    if metric not in _KNN_SCORES:
        raise unknown_name_error("kNN metric", metric, _KNN_SCORES)
    if not 1 <= k <= train_features.shape[0]:
        raise ValueError(f"k must be between 1 and the number of training items ({train_features.shape[0]}), got {k}")
    train = train_features if train_features.is_floating_point() else train_features.float()
    labels = train_labels.to(train.device)
    n_classes = int(labels.max()) + 1
    predictions = []
    for start in range(0, query_features.shape[0], batch_size):
        query = query_features[start : start + batch_size].to(device=train.device, dtype=train.dtype)
        neighbours = _KNN_SCORES[metric](query, train).topk(k, dim=1).indices
        votes = F.one_hot(labels[neighbours], n_classes).sum(1)
        predictions.append(votes.argmax(1).cpu())  # argmax returns the first maximum: the smallest label
    return torch.cat(predictions)


def _knn_accuracy(model: nn.Module, train_set, test_set, k: int) -> float:
    train_features, train_labels = extract_features(model, train_set)
    test_features, test_labels = extract_features(model, test_set)
    predicted = knn_predict(train_features, train_labels, test_features, k)
    return float((predicted == test_labels).float().mean())


@torch.no_grad()
def _supervised(model: nn.Module, train_set, test_set) -> dict[str, float]:
    device = _model_device(model)
    correct = total = 0
    for images, labels in iterate_batches(test_set, 512):
        correct += int((model(images.to(device)).argmax(1).cpu() == labels.cpu()).sum())
        total += len(labels)
    return {"test_accuracy": correct / total}


@torch.no_grad()
def _mean_image(dataset, device) -> torch.Tensor:
    total, count = None, 0
    for images, _ in iterate_batches(dataset, 1024):
        batch_sum = images.to(device).double().sum(0)
        total = batch_sum if total is None else total + batch_sum
        count += images.shape[0]
    return (total / count).float()


@torch.no_grad()
def _autoencoder(model: nn.Module, train_set, test_set) -> dict[str, float]:
    device = _model_device(model)
    mean_image = _mean_image(train_set, device)
    recon = baseline = 0.0
    n_values = 0
    for images, _ in iterate_batches(test_set, 512):
        images = images.to(device)
        recon += float((model.reconstruct(images).float() - images).pow(2).sum())
        baseline += float((mean_image - images).pow(2).sum())
        n_values += images.numel()
    return {"recon_mse": recon / n_values, "mean_image_mse": baseline / n_values, "recon_ratio": recon / baseline}


@torch.no_grad()
def _mae(model: nn.Module, train_set, test_set) -> dict[str, float]:
    """Errors on the hidden patches only (what the MAE predicts), with masks from ``EVAL_MASK_SEED``."""
    from zoo.models.mae import patchify

    device = _model_device(model)
    mean_patches = patchify(_mean_image(train_set, device)[None], model.patch_size)
    recon = baseline = 0.0
    n_hidden = 0.0
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(EVAL_MASK_SEED)
        for images, _ in iterate_batches(test_set, 512):
            images = images.to(device)
            x_hat, mask = model.reconstruct(images)
            target = patchify(images, model.patch_size)
            error = (patchify(x_hat.float(), model.patch_size) - target).pow(2).mean(-1)
            recon += float((error * mask).sum())
            baseline += float(((mean_patches - target).pow(2).mean(-1) * mask).sum())
            n_hidden += float(mask.sum())
    return {"recon_mse": recon / n_hidden, "mean_image_mse": baseline / n_hidden, "recon_ratio": recon / baseline}


_FAMILY_MEASURES: dict[str, Callable[[nn.Module, object, object], dict[str, float]]] = {
    "supervised": _supervised,
    "autoencoder": _autoencoder,
    "mae": _mae,
    "contrastive": lambda model, train_set, test_set: {},
}


def evaluate_model(model: nn.Module, train_set, test_set, k: int = 5) -> dict[str, float]:
    """All measures that apply to ``model`` on the given splits, computed in eval mode on the model's device.

    Parameters
    ----------
    model
        A zoo model: its family picks the measures, unless the model has its own
        ``evaluate(train_set, test_set) -> dict`` (the language and image-text families do).
    train_set, test_set
        The training split (kNN memory, mean image) and the held-out split (scored).
    k
        Neighbours for the kNN accuracy.

    Returns
    -------
    dict
        ``knn_accuracy`` (labelled data), ``test_accuracy`` (supervised), ``recon_mse``,
        ``mean_image_mse`` and ``recon_ratio`` (autoencoders, MAE).
    """
    family = getattr(model, "family", None)
    own = getattr(model, "evaluate", None)
    if own is None and family not in _FAMILY_MEASURES:
        raise unknown_name_error("model family", family, _FAMILY_MEASURES)
    was_training = model.training
    model.eval()
    try:
        metrics = dict(own(train_set, test_set) if own is not None else _FAMILY_MEASURES[family](model, train_set, test_set))
        if train_set.info.n_classes > 0:
            metrics["knn_accuracy"] = _knn_accuracy(model, train_set, test_set, k)
    finally:
        model.train(was_training)
    return metrics
