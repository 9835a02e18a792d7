"""Greedy layer-wise pretraining against end-to-end training of the same deep MLP.

Each hidden layer of the MLP is first trained alone, as a one-hidden-layer autoencoder on the
codes of the layer below (on every training image, without labels); the trained encoders are
frozen and stacked. The stack then initialises the MLP, which is fine-tuned end to end with a few
labels per class, and compared with the same MLP trained end to end from random weights on the
same labels with the same optimiser, steps and seeds.

Everything is plain torch on flattened pixels: no zoo model is registered, no run folder written.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

import zoo
from analyses import sample_per_class

__all__ = [
    "GreedyLayerwiseResult",
    "GreedyStack",
    "LayerAutoencoder",
    "build_mlp",
    "fine_tune",
    "greedy_layerwise_experiment",
    "greedy_pretrain",
    "labelled_subset",
    "pretrained_mlp",
]

ACTIVATIONS = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}
METHODS = ("greedy pretrained", "end to end")

# Streams of derived seeds, so that initialisation and shuffling draw from independent generators.
_AUTOENCODER_INIT, _AUTOENCODER_ORDER, _CLASSIFIER_ORDER, _PRETRAIN_SUBSET = range(4)


def _derived_seed(seed: int, stream: int, index: int = 0) -> int:
    return int(np.random.SeedSequence([seed, stream, index]).generate_state(1)[0])


def _activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise zoo.unknown_name_error("activation", name, ACTIVATIONS)
    return ACTIVATIONS[name]()


def _checked_widths(widths: Sequence[int]) -> tuple[int, ...]:
    checked = tuple(int(w) for w in widths)
    if not checked or any(w < 1 or w != original for w, original in zip(checked, widths)):
        raise ValueError(f"widths must be a non-empty sequence of positive integers (units per hidden layer); got {widths}")
    return checked


def _batches(n: int, batch_size: int, generator: torch.Generator):
    order = torch.randperm(n, generator=generator)
    return order.split(batch_size)


class LayerAutoencoder(nn.Module):
    """One layer's autoencoder: ``encoder`` (Linear + nonlinearity) and a linear ``decoder``.

    Parameters
    ----------
    n_inputs
        Size of the codes it reconstructs (the input, or the layer below's width).
    width
        Units of its hidden layer (the deep MLP's layer it trains).
    activation
        ``"relu"``, ``"sigmoid"`` or ``"tanh"``.
    """

    def __init__(self, n_inputs: int, width: int, activation: str = "relu") -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(n_inputs, width), _activation(activation))
        self.decoder = nn.Linear(width, n_inputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


@dataclass
class GreedyStack:
    """The outcome of ``greedy_pretrain``.

    Attributes
    ----------
    encoder
        ``nn.Sequential`` of Linear, nonlinearity, Linear, nonlinearity... (copies of the trained
        autoencoders' encoders, in order): maps inputs of shape (n, n_inputs) to the top codes.
    autoencoders
        The trained ``LayerAutoencoder`` of each layer, bottom first.
    reconstruction
        One row per layer: layer (1-based), width, recon_mse (the autoencoder's mean squared error
        on the codes it was trained on), mean_code_mse (the error of predicting each code by its
        mean) and ratio = recon_mse / mean_code_mse (< 1: better than the mean).
    """

    encoder: nn.Sequential
    autoencoders: list[LayerAutoencoder]
    reconstruction: pd.DataFrame

    @property
    def ratios(self) -> list[float]:
        """Each layer's reconstruction ratio, bottom first."""
        return [float(r) for r in self.reconstruction["ratio"]]


@torch.no_grad()
def _codes(module: nn.Module, X: torch.Tensor, batch_size: int = 8192) -> torch.Tensor:
    return torch.cat([module(chunk) for chunk in X.split(batch_size)])


@torch.no_grad()
def _reconstruction_errors(autoencoder: LayerAutoencoder, inputs: torch.Tensor) -> tuple[float, float]:
    reconstruction = _codes(autoencoder, inputs)
    recon_mse = float(((reconstruction - inputs) ** 2).mean())
    mean_code_mse = float(((inputs - inputs.mean(0)) ** 2).mean())
    return recon_mse, mean_code_mse


def greedy_pretrain(
    X: torch.Tensor | np.ndarray,
    widths: Sequence[int],
    epochs: int,
    seed: int = 0,
    *,
    activation: str = "relu",
    lr: float = 1e-3,
    batch_size: int = 128,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> GreedyStack:
    """Train a deep MLP's hidden layers one at a time, each as an autoencoder of the layer below.

    Layer 1 is trained (Adam, mean squared error) as ``Linear + nonlinearity`` encoder and
    ``Linear`` decoder on ``X``; it is then frozen, the codes of ``X`` are computed, and layer 2
    is trained on them the same way, and so on. No labels are used.

    Parameters
    ----------
    X
        Inputs of shape (n_stimuli, n_inputs), e.g. flattened images.
    widths
        Units per hidden layer, bottom first.
    epochs
        Passes over ``X`` per layer.
    seed
        Seed of every layer's initial weights and of the shuffling (derived per layer).
    activation
        Encoder nonlinearity: ``"relu"``, ``"sigmoid"`` or ``"tanh"``.
    lr, batch_size
        Adam's learning rate and the minibatch size.
    device
        Where to train (``"auto"``: CUDA when present).
    progress
        A progress bar over layers.

    Returns
    -------
    GreedyStack

    Raises
    ------
    ValueError
        Inputs not of shape (n, d) or not finite, bad widths or epochs, or a layer whose codes are
        all constant (nothing to reconstruct: lower ``lr`` or try another ``activation``).
    """
    widths = _checked_widths(widths)
    if int(epochs) < 1:
        raise ValueError(f"epochs must be at least 1; got {epochs}")
    device = zoo.resolve_device(device)
    inputs = torch.as_tensor(X, dtype=torch.float32).to(device)
    if inputs.ndim != 2 or len(inputs) < 2:
        raise ValueError(f"X must have shape (n_stimuli >= 2, n_inputs); got {tuple(inputs.shape)}; flatten images first")
    if not torch.isfinite(inputs).all():
        raise ValueError("X holds NaN or infinite values; clean the inputs before pretraining")
    autoencoders, rows = [], []
    for layer, width in enumerate(tqdm(widths, desc="greedy layers", disable=not progress, leave=False), start=1):
        torch.manual_seed(_derived_seed(seed, _AUTOENCODER_INIT, layer))
        autoencoder = LayerAutoencoder(inputs.shape[1], width, activation).to(device)
        optimiser = torch.optim.Adam(autoencoder.parameters(), lr=lr)
        order = torch.Generator().manual_seed(_derived_seed(seed, _AUTOENCODER_ORDER, layer))
        for _ in range(int(epochs)):
            for rows_in_batch in _batches(len(inputs), batch_size, order):
                batch = inputs[rows_in_batch.to(device)]
                loss = nn.functional.mse_loss(autoencoder(batch), batch)
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
        autoencoder.eval().requires_grad_(False)
        recon_mse, mean_code_mse = _reconstruction_errors(autoencoder, inputs)
        if mean_code_mse == 0.0:
            raise ValueError(f"the inputs of layer {layer} are constant across stimuli (dead units below); "
                             "lower lr, train fewer epochs or use activation='tanh'")
        rows.append({"layer": layer, "width": width, "recon_mse": recon_mse, "mean_code_mse": mean_code_mse,
                         "ratio": recon_mse / mean_code_mse})
        autoencoders.append(autoencoder)
        inputs = _codes(autoencoder.encoder, inputs)
    encoder = nn.Sequential(*(module for autoencoder in autoencoders for module in copy.deepcopy(autoencoder.encoder)))
    return GreedyStack(encoder=encoder.requires_grad_(True), autoencoders=autoencoders, reconstruction=pd.DataFrame(rows))


def build_mlp(n_inputs: int, widths: Sequence[int], n_classes: int, seed: int, activation: str = "relu") -> nn.Sequential:
    """The deep MLP both methods train, at its seed-determined initial weights.

    ``torch.manual_seed(seed)``, then ``Sequential(body=Sequential(Linear, nonlinearity, ...),
    head=Linear(widths[-1], n_classes))`` with PyTorch's default initialisation, built bottom up.

    Parameters
    ----------
    n_inputs
        Input size (pixels per image).
    widths
        Units per hidden layer, bottom first.
    n_classes
        Outputs of the linear classifier head.
    seed
        Seed of the initial weights.
    activation
        ``"relu"``, ``"sigmoid"`` or ``"tanh"``.
    """
    widths = _checked_widths(widths)
    torch.manual_seed(seed)
    body, previous = [], int(n_inputs)
    for width in widths:
        body += [nn.Linear(previous, width), _activation(activation)]
        previous = width
    return nn.Sequential(OrderedDict(body=nn.Sequential(*body), head=nn.Linear(previous, int(n_classes))))


def pretrained_mlp(stack: GreedyStack | nn.Sequential, n_classes: int, seed: int) -> nn.Sequential:
    """The deep MLP with its body copied from a greedy stack and its head as ``build_mlp`` draws it.

    The head's initial weights equal those of ``build_mlp(..., seed)``, so that the two methods
    differ only in the body's starting point. The stack itself is not modified.

    Parameters
    ----------
    stack
        A ``GreedyStack`` or its ``encoder``.
    n_classes
        Outputs of the classifier head.
    seed
        Seed of the head's initial weights.
    """
    encoder = stack.encoder if isinstance(stack, GreedyStack) else stack
    linears = [module for module in encoder if isinstance(module, nn.Linear)]
    activation = next(name for name, kind in ACTIVATIONS.items() if isinstance(encoder[1], kind))
    model = build_mlp(linears[0].in_features, [layer.out_features for layer in linears], n_classes, seed, activation)
    model.body.load_state_dict(encoder.state_dict())
    return model.to(linears[0].weight.device)


def labelled_subset(labels: np.ndarray | torch.Tensor, per_class: int | str | None, seed: int) -> np.ndarray:
    """Sorted row indices of ``per_class`` stimuli of every class, drawn without replacement.

    The draw is the toolkit's (``analyses.sample_per_class``, as ``analyses.label_efficiency`` draws):
    ``np.random.default_rng(seed)``, then each class in increasing label order; a class with fewer
    stimuli gives all of them.

    Parameters
    ----------
    labels
        Labels of shape (n_stimuli,).
    per_class
        Labels per class, or ``"all"`` / None for every stimulus.
    seed
        Seed of the draw.
    """
    labels = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)
    if per_class is None or per_class == "all":
        return np.arange(len(labels))
    if isinstance(per_class, str) or int(per_class) != per_class or per_class < 1:
        raise ValueError(f"labels per class must be a positive integer or 'all'; got {per_class!r}")
    return sample_per_class(labels, int(per_class), seed)


def fine_tune(
    model: nn.Module,
    X: torch.Tensor,
    y: torch.Tensor,
    epochs: int,
    seed: int,
    *,
    lr: float = 1e-3,
    batch_size: int = 128,
    min_steps: int = 0,
) -> nn.Module:
    """Train every weight of ``model`` with cross-entropy and Adam (in place; returns it).

    Parameters
    ----------
    model
        Maps inputs of shape (n, d) to logits of shape (n, n_classes).
    X, y
        Inputs of shape (n, d) and labels of shape (n,), on the model's device.
    epochs
        Passes over the labelled stimuli.
    seed
        Seed of the minibatch order.
    lr, batch_size
        Adam's learning rate and the minibatch size.
    min_steps
        Keep making passes until at least this many optimiser steps are taken (10 labels per class
        fill one minibatch, so a few epochs would be a few steps).
    """
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    order = torch.Generator().manual_seed(_derived_seed(seed, _CLASSIFIER_ORDER))
    model.train()
    steps, epoch = 0, 0
    while epoch < int(epochs) or steps < int(min_steps):
        for rows in _batches(len(X), batch_size, order):
            rows = rows.to(X.device)
            loss = nn.functional.cross_entropy(model(X[rows]), y[rows])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            steps += 1
        epoch += 1
    return model.eval()


@torch.no_grad()
def _accuracy(model: nn.Module, X: torch.Tensor, y: torch.Tensor) -> float:
    predictions = torch.cat([model(chunk).argmax(1) for chunk in X.split(8192)])
    return float((predictions == y).double().mean())


def _flat_split(dataset: str, split: str, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, Any]:
    data = zoo.load_dataset(dataset, split=split)
    images, labels = zip(*zoo.iterate_batches(data, 4096))
    return torch.cat(images).flatten(1).float().to(device), torch.cat(labels).long().to(device), data.info


def _budget_name(budget: int | str | None) -> str:
    return "all" if budget is None or budget == "all" else str(int(budget))


@dataclass
class GreedyLayerwiseResult:
    """Test accuracy of greedy-pretrained and end-to-end MLPs over label budgets and seeds.

    Attributes
    ----------
    frame
        One row per method x budget x seed: method (``"greedy pretrained"`` or ``"end to end"``),
        budget (``"10"``, ``"100"``, ``"all"``), labels_per_class (mean labels per class used),
        seed, n_train, accuracy (on the test split).
    reconstruction
        The greedy stacks' layer table (see ``GreedyStack.reconstruction``) with a seed column.
    dataset, widths
        What was trained on, the hidden widths.
    n_pretrain
        Unlabelled training images the stacks were pretrained on.
    """

    frame: pd.DataFrame
    reconstruction: pd.DataFrame
    dataset: str
    widths: tuple[int, ...]
    n_pretrain: int

    def to_frame(self) -> pd.DataFrame:
        """The per-run table, plus reconstruction_ratio_<layer> columns (the stack the greedy run started from; NaN for end to end)."""
        ratios = self.reconstruction.pivot(index="seed", columns="layer", values="ratio")
        ratios.columns = [f"reconstruction_ratio_{layer}" for layer in ratios.columns]
        frame = self.frame.merge(ratios, left_on="seed", right_index=True, how="left")
        frame.loc[frame["method"] != METHODS[0], list(ratios.columns)] = np.nan
        return frame.reset_index(drop=True)

    def summary(self) -> pd.DataFrame:
        """Mean and standard deviation (ddof=1; 0 for one seed) of accuracy over seeds per method and budget."""
        summary = self.frame.groupby(["method", "budget"], sort=False).agg(
            labels_per_class=("labels_per_class", "mean"), accuracy_mean=("accuracy", "mean"),
            accuracy_sd=("accuracy", "std"), n_seeds=("seed", "nunique"))
        return summary.reset_index().fillna({"accuracy_sd": 0.0})

    def difference(self) -> pd.DataFrame:
        """Greedy minus end-to-end accuracy per budget, paired by seed (same labels, same head init): mean, sd, n_seeds."""
        paired = self.frame.pivot_table(index=["budget", "seed"], columns="method", values="accuracy", sort=False)
        paired["difference"] = paired[METHODS[0]] - paired[METHODS[1]]
        summary = paired.groupby(level="budget", sort=False)["difference"].agg(["mean", "std", "count"])
        summary.columns = ["difference_mean", "difference_sd", "n_seeds"]
        return summary.reset_index().fillna({"difference_sd": 0.0})


def greedy_layerwise_experiment(
    dataset: str = "digits",
    widths: Sequence[int] = (256, 128, 64),
    labels_per_class: Sequence[int | str | None] = (10, 100, "all"),
    seeds: Sequence[int] = (0, 1, 2),
    *,
    pretrain_epochs: int = 10,
    finetune_epochs: int = 20,
    min_finetune_steps: int = 300,
    pretrain_images: int | None = None,
    activation: str = "relu",
    lr: float = 1e-3,
    batch_size: int = 128,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> GreedyLayerwiseResult:
    """Does greedy layer-wise pretraining on unlabelled images help a deep MLP learn from few labels?

    Per seed: ``greedy_pretrain`` on the training images (no labels). Then per budget, on the
    same labelled subset (``labelled_subset(train labels, budget, seed)``): (a) the MLP
    initialised from the stack (``pretrained_mlp``) and fine-tuned end to end, and (b) the same
    MLP from its seed-determined random weights (``build_mlp``), trained the same way (same
    optimiser, steps, minibatch order and head initialisation). Both are scored on the whole
    test split.

    Parameters
    ----------
    dataset
        A labelled zoo dataset (``"digits"``, ``"fashion-mnist"``...); images are flattened.
    widths
        Units per hidden layer, bottom first.
    labels_per_class
        Budgets: positive integers, ``"all"`` (or None) for every training image.
    seeds
        One pretraining, one labelled draw and one initialisation per seed.
    pretrain_epochs
        Epochs per greedy layer.
    finetune_epochs, min_finetune_steps
        Passes over the labelled subset, extended to at least ``min_finetune_steps`` optimiser
        steps (so that 10 labels per class are not trained for only a handful of steps).
    pretrain_images
        Pretrain on this many training images drawn with the seed (None: all of them), to save time.
    activation
        Hidden nonlinearity of the autoencoders and the MLP.
    lr, batch_size
        Adam's learning rate and minibatch size, for pretraining and fine-tuning.
    device
        Where to train (``"auto"``: CUDA when present).
    progress
        A progress bar over runs.

    Returns
    -------
    GreedyLayerwiseResult
    """
    widths = _checked_widths(widths)
    budgets = list(labels_per_class)
    for budget in budgets:
        if budget is not None and budget != "all" and (isinstance(budget, str) or int(budget) != budget or budget < 1):
            raise ValueError(f"labels_per_class must hold positive integers or 'all'; got {budgets}")
    if not budgets or not seeds:
        raise ValueError("labels_per_class and seeds must each hold at least one value")
    device = zoo.resolve_device(device)
    X_train, y_train, info = _flat_split(dataset, "train", device)
    X_test, y_test, _ = _flat_split(dataset, "test", device)
    if not info.n_classes:
        raise ValueError(f"dataset {dataset!r} is unlabelled; the comparison needs labels, pick a labelled one")
    n_pretrain = len(X_train) if pretrain_images is None else min(int(pretrain_images), len(X_train))
    rows, reconstruction = [], []
    bar = tqdm(total=len(seeds) * (1 + 2 * len(budgets)), desc="greedy vs end to end", disable=not progress)
    for seed in seeds:
        pretrain_rows = np.random.default_rng(_derived_seed(seed, _PRETRAIN_SUBSET)).permutation(len(X_train))[:n_pretrain]
        stack = greedy_pretrain(X_train[torch.as_tensor(np.sort(pretrain_rows), device=device)], widths,
                                pretrain_epochs, seed, activation=activation, lr=lr, batch_size=batch_size, device=device)
        reconstruction.append(stack.reconstruction.assign(seed=seed))
        bar.update()
        for budget in budgets:
            labelled = torch.as_tensor(labelled_subset(y_train.cpu().numpy(), budget, seed), device=device)
            starts = {METHODS[0]: pretrained_mlp(stack, info.n_classes, seed),
                      METHODS[1]: build_mlp(X_train.shape[1], widths, info.n_classes, seed, activation).to(device)}
            for method, model in starts.items():
                fine_tune(model, X_train[labelled], y_train[labelled], finetune_epochs, seed, lr=lr,
                          batch_size=batch_size, min_steps=min_finetune_steps)
                rows.append({"method": method, "budget": _budget_name(budget),
                                 "labels_per_class": len(labelled) / info.n_classes, "seed": seed, "n_train": len(labelled),
                                 "accuracy": _accuracy(model, X_test, y_test)})
                bar.update()
    bar.close()
    return GreedyLayerwiseResult(frame=pd.DataFrame(rows), reconstruction=pd.concat(reconstruction, ignore_index=True),
                                 dataset=dataset, widths=widths, n_pretrain=n_pretrain)
