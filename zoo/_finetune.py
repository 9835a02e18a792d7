"""Fine-tuning: a zoo encoder plus a linear head, trained end to end on a labelled dataset."""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch
from torch import nn

from zoo._data import iterate_batches
from zoo._device import resolve_device

__all__ = ["TRAINABLE_PARTS", "FinetuneResult", "FinetunedClassifier", "finetune", "last_block"]

# What ``finetune`` may train: everything, the encoder's last block with the head, or the head alone.
TRAINABLE_PARTS = ("all", "last_block", "head")


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
    normalize_features
        Put a batch norm without learned scale or shift before the linear layer (as MAE's linear
        probing does), so that every feature enters standardised: encoders whose features differ in
        scale by orders of magnitude (a mean of LayerNorm outputs, an L2-normalised embedding) then
        learn at the same rates. Its running statistics become part of the model.
    """

    def __init__(self, encoder: nn.Module, n_features: int, n_classes: int, normalize_features: bool = False):
        super().__init__()
        self.encoder = encoder
        linear = nn.Linear(n_features, n_classes)
        if normalize_features:
            nn.init.zeros_(linear.weight)  # no random direction for the few first steps to undo
            nn.init.zeros_(linear.bias)
            self.head = nn.Sequential(nn.BatchNorm1d(n_features, affine=False), linear)
        else:
            self.head = linear

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
        One row per epoch: epoch, steps (optimiser steps so far), train_loss, test_accuracy.
    accuracy
        Test accuracy after the last epoch.
    trained_modules
        Names of the encoder's modules whose weights were trained (``[""]``: all of it; empty: none,
        only the head).
    """

    model: FinetunedClassifier
    history: pd.DataFrame
    accuracy: float
    trained_modules: list[str] = dataclasses.field(default_factory=list)


def _example_input(model: nn.Module) -> torch.Tensor:
    shape = getattr(model, "config", {}).get("input_shape") or getattr(model, "input_shape", None)
    if shape is None:
        raise TypeError(f"{type(model).__name__} has no config['input_shape']; last_block needs it to trace encode")
    parameter = next(model.parameters())
    generator = torch.Generator().manual_seed(0)
    return torch.randn(2, *shape, generator=generator).to(parameter.device)


def _has_matrix(module: nn.Module, learning: set[int], recurse: bool) -> bool:
    return any(p.ndim >= 2 and id(p) in learning for p in module.parameters(recurse=recurse))


def last_block(model: nn.Module) -> list[str]:
    """The names of the modules that make up the last block of ``model.encode``.

    The block is found by tracing ``encode`` on a random input and back-propagating through it: it is the
    last recordable layer (``model.recordable_layers()``) to finish that holds a weight matrix the
    output's gradient reaches, or, when no recordable layer holds one (layers recorded at their
    activations), the last such module; then every later module with parameters the gradient reaches
    (a final normalisation). A codebook that a straight-through estimator bypasses is never chosen.

    Parameters
    ----------
    model
        A zoo model (``encode`` and ``config["input_shape"]``).

    Returns
    -------
    list of str
        Module names, e.g. ``["blocks.3", "norm"]`` for the MAE and ``["fc1"]`` for the small CNN.
    """
    if not hasattr(model, "encode"):
        raise TypeError(f"{type(model).__name__} has no encode(x); last_block needs a zoo model")
    traced = copy.deepcopy(model).eval()
    finished: dict[str, int] = {}
    modules = dict(traced.named_modules())

    def note_finished(name: str) -> None:
        finished.setdefault(name, len(finished))

    handles = [module.register_forward_hook(lambda _m, _i, _o, name=name: note_finished(name))
               for name, module in modules.items() if name]
    try:
        traced.zero_grad(set_to_none=True)
        traced.encode(_example_input(traced)).float().sum().backward()
    finally:
        for handle in handles:
            handle.remove()
    learning = {id(p) for p in traced.parameters() if p.grad is not None and bool(p.grad.abs().sum() > 0)}
    recordable = [name for name in getattr(traced, "recordable_layers", list)() if name in finished]
    candidates = [name for name in recordable if _has_matrix(modules[name], learning, recurse=True)]
    if not candidates:
        candidates = [name for name in finished if _has_matrix(modules[name], learning, recurse=False)]
    if not candidates:
        raise ValueError(f"no weights of {type(model).__name__}.encode receive a gradient; it has no block to fine-tune")
    block = max(candidates, key=finished.__getitem__)
    later = [name for name in finished if finished[name] > finished[block] and not name.startswith(block + ".")
             and any(id(p) in learning for p in modules[name].parameters(recurse=False))]
    return [block, *later]


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
    trainable: str | None = None,
    normalize_features: bool = False,
    steps: int | None = None,
    eval_every: int = 1,
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
        Train only the head (a linear probe trained by SGD) for comparison; the same as
        ``trainable="head"``.
    trainable
        What is trained besides the head: ``"all"`` (the default), ``"last_block"`` (the encoder's
        last block, see ``last_block``; the rest stays frozen, in eval mode) or ``"head"``.
    normalize_features
        Standardise the features before the head with a batch norm without affine parameters, the
        head's weights starting at zero (see ``FinetunedClassifier``); ``finetune_comparison`` uses
        it so that no encoder is slowed by the scale of its features.
    steps
        Train for this many optimiser steps instead of ``epochs`` (the last epoch is cut short), so
        that budgets of 5 and of 5,000 labelled images get the same number of updates.
    eval_every
        Score the test set every this many epochs (always after the last); other epochs have NaN.
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
    if steps is not None and steps < 1:
        raise ValueError(f"steps must be at least 1; got {steps}")
    if eval_every < 1:
        raise ValueError(f"eval_every must be at least 1; got {eval_every}")
    if trainable is None:
        trainable = "head" if freeze_encoder else "all"
    elif trainable not in TRAINABLE_PARTS:
        raise ValueError(f"trainable must be one of {TRAINABLE_PARTS}; got {trainable!r}")
    elif freeze_encoder and trainable != "head":
        raise ValueError(f"freeze_encoder=True contradicts trainable={trainable!r}; pass one of them")
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
    classifier = FinetunedClassifier(encoder, n_features, n_classes, normalize_features).to(device)
    trained_modules = {"all": [""], "head": [], "last_block": last_block(model) if trainable == "last_block" else []}[trainable]
    encoder.requires_grad_(False)
    named = dict(encoder.named_modules())
    for name in trained_modules:
        named[name].requires_grad_(True)
    encoder_parameters = [p for p in encoder.parameters() if p.requires_grad]
    groups = [{"params": classifier.head.parameters(), "lr": lr}]
    if encoder_parameters:
        groups.append({"params": encoder_parameters, "lr": lr / 10 if encoder_lr is None else encoder_lr})
    optimizer = torch.optim.AdamW(groups, weight_decay=weight_decay)
    generator = torch.Generator().manual_seed(seed)
    if steps is not None:
        epochs = math.ceil(steps / math.ceil(len(train) / batch_size))
    rows, step = [], 0
    for epoch in trange(epochs, desc="fine-tuning", disable=not progress, leave=False):
        classifier.train()
        if trainable != "all":
            encoder.eval()  # frozen parts keep their batch-norm statistics; dropout stays off
            for name in trained_modules:
                named[name].train()
        total, count = 0.0, 0
        for images, batch_labels in iterate_batches(train, batch_size, shuffle=True, generator=generator):
            if steps is not None and step == steps:
                break
            images, batch_labels = images.to(device), batch_labels.to(device)
            loss = nn.functional.cross_entropy(classifier(images), batch_labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            total, count = total + float(loss.detach()) * len(batch_labels), count + len(batch_labels)
        last = epoch + 1 == epochs
        accuracy = _accuracy(classifier, test, device, 512) if last or (epoch + 1) % eval_every == 0 else float("nan")
        rows.append(dict(epoch=epoch + 1, steps=step, train_loss=total / count, test_accuracy=accuracy))
    classifier.eval()
    history = pd.DataFrame(rows)
    return FinetuneResult(model=classifier, history=history, accuracy=float(history["test_accuracy"].iloc[-1]),
                          trained_modules=trained_modules)
