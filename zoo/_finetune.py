"""Fine-tuning: a zoo encoder plus a linear head, trained end to end on a labelled dataset."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch
from torch import nn

from zoo._data import iterate_batches
from zoo._device import resolve_device

__all__ = ["FinetunedClassifier", "FinetuneResult", "finetune"]


class FinetunedClassifier(nn.Module):
    """``head(encoder.encode(x))``: a zoo encoder with a linear read-out.

    Parameters
    ----------
    encoder
        Any module with ``encode(x) -> (batch, d)``.
    n_features
        d, the width of ``encode``'s output.
    n_classes
        Number of output classes.
    """

    def __init__(self, encoder: nn.Module, n_features: int, n_classes: int):
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(n_features, n_classes)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The encoder's representation, shape (batch, d)."""
        return self.encoder.encode(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of shape (batch, n_classes)."""
        return self.head(self.encoder.encode(x))


@dataclass
class FinetuneResult:
    """What ``finetune`` returns.

    Attributes
    ----------
    model
        The fine-tuned ``FinetunedClassifier`` in eval mode (the input model is left untouched).
    history
        One row per epoch: epoch, train_loss, test_accuracy.
    accuracy
        Test accuracy after the last epoch.
    """

    model: FinetunedClassifier
    history: pd.DataFrame
    accuracy: float


@torch.no_grad()
def _accuracy(model: nn.Module, dataset: Any, device: torch.device, batch_size: int) -> float:
    model.eval()
    correct = total = 0
    for images, labels in iterate_batches(dataset, batch_size):
        predicted = model(images.to(device)).argmax(dim=1).cpu()
        correct += int((predicted == labels).sum())
        total += len(labels)
    return correct / total


def finetune(
    model: nn.Module,
    train: Any,
    test: Any,
    *,
    epochs: int = 10,
    lr: float = 1e-3,
    encoder_lr: float | None = None,
    freeze_encoder: bool = False,
    batch_size: int = 128,
    weight_decay: float = 1e-4,
    device: str | torch.device = "auto",
    seed: int = 0,
    progress: bool = True,
) -> FinetuneResult:
    """Train a copy of ``model``'s encoder with a new linear head, end to end, on labelled data.

    Parameters
    ----------
    model
        A zoo model (anything with ``encode``); it is copied, never modified.
    train, test
        Labelled datasets (``dataset[i] -> (image, label)``), e.g. from ``zoo.load_dataset``.
    epochs
        Passes over ``train``.
    lr
        Learning rate of the head (AdamW).
    encoder_lr
        Learning rate of the encoder; default ``lr / 10``, the usual gentler step for pretrained
        weights.
    freeze_encoder
        Train only the head (a linear probe trained by SGD) for comparison.
    batch_size, weight_decay
        Optimisation settings.
    device
        ``"auto"``: CUDA when present.
    seed
        Seeds the head's initialisation and the batch order.
    progress
        Show a progress bar over epochs.

    Returns
    -------
    FinetuneResult
    """
    from tqdm.auto import trange

    if not hasattr(model, "encode"):
        raise TypeError(f"{type(model).__name__} has no encode(x); fine-tuning needs a zoo model or an encoder with one")
    if epochs < 1:
        raise ValueError(f"epochs must be at least 1; got {epochs}")
    labels = torch.as_tensor([int(train[i][1]) for i in range(len(train))])
    if (labels < 0).any():
        raise ValueError("the training set has unlabelled items (label -1); fine-tuning needs a labelled dataset")
    n_classes = int(labels.max()) + 1
    device = resolve_device(device)
    torch.manual_seed(seed)
    encoder = copy.deepcopy(model).to(device)
    with torch.no_grad():
        encoder.eval()
        n_features = encoder.encode(train[0][0][None].to(device)).shape[1]
    classifier = FinetunedClassifier(encoder, n_features, n_classes).to(device)
    encoder.requires_grad_(not freeze_encoder)
    groups = [{"params": classifier.head.parameters(), "lr": lr}]
    if not freeze_encoder:
        groups.append({"params": encoder.parameters(), "lr": lr / 10 if encoder_lr is None else encoder_lr})
    optimizer = torch.optim.AdamW(groups, weight_decay=weight_decay)
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for epoch in trange(epochs, desc="fine-tuning", disable=not progress, leave=False):
        classifier.train()
        if freeze_encoder:
            encoder.eval()  # keep batch-norm statistics and dropout of a frozen encoder fixed
        total, count = 0.0, 0
        for images, batch_labels in iterate_batches(train, batch_size, shuffle=True, generator=generator):
            images, batch_labels = images.to(device), batch_labels.to(device)
            loss = nn.functional.cross_entropy(classifier(images), batch_labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total, count = total + float(loss.detach()) * len(batch_labels), count + len(batch_labels)
        rows.append(dict(epoch=epoch + 1, train_loss=total / count,
                         test_accuracy=_accuracy(classifier, test, device, 512)))
    classifier.eval()
    history = pd.DataFrame(rows)
    return FinetuneResult(model=classifier, history=history, accuracy=float(history["test_accuracy"].iloc[-1]))
