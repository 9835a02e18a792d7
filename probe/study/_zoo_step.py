"""The demo's first step: train one model of every family (every autoencoder variant too)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

import zoo
from probe.study._context import DemoContext
from reports import ModelSummary, Reconstructions, Section, zoo_section

__all__ = ["DemoModel", "DEMO_MODELS", "zoo_step"]


@dataclass(frozen=True)
class DemoModel:
    """One model the demo trains: run name, zoo model, dataset, epochs (full and quick), model options."""

    run: str
    model: str
    dataset: str = "digits"
    epochs: int = 10
    quick_epochs: int = 1
    options: dict[str, Any] = field(default_factory=dict)

    def dataset_options(self, quick: bool) -> dict[str, Any]:
        """Options for ``zoo.load_dataset``; the demo draws fewer natural patches."""
        return dict(DATASET_OPTIONS[quick].get(self.dataset, {}))


# Sized so that the whole zoo trains in about a minute on 2 CPU cores (epochs from the zoo's
# measured learning curves: the CNN passes 0.98 test accuracy by epoch 3, SimCLR's kNN accuracy
# passes 0.96 from epoch 1; the MAE needs about 30 epochs to beat the mean image and its default
# 100 to reach 0.6 of it, so its demo reconstructions stay blurry).
DEMO_MODELS: tuple[DemoModel, ...] = (
    DemoModel("cnn", "cnn", epochs=5),
    DemoModel("mlp", "mlp", epochs=8),
    DemoModel("simclr", "simclr", epochs=6),
    DemoModel("ae-linear", "ae-linear", epochs=30),
    DemoModel("ae-mlp", "ae-mlp", epochs=8),
    DemoModel("ae-conv", "ae-conv", epochs=8),
    DemoModel("ae-denoising", "ae-denoising", epochs=8),
    DemoModel("ae-sparse", "ae-sparse", epochs=8),
    DemoModel("ae-contractive", "ae-contractive", epochs=8),
    DemoModel("ae-vae", "ae-vae", epochs=8),
    DemoModel("mae", "mae", epochs=30),
    DemoModel("ae-conv-patches", "ae-conv", dataset="natural-patches", epochs=8),
)

# The datasets the demo loads; natural patches have a training draw and a held-out draw.
DEMO_DATASETS: tuple[tuple[str, str], ...] = (
    ("digits", "train"),
    ("digits", "test"),
    ("natural-patches", "train"),
    ("natural-patches", "test"),
)
# Fewer natural patches than the dataset's default 10,000 keep the demo short; --quick draws fewer still.
DATASET_OPTIONS: dict[bool, dict[str, dict[str, Any]]] = {  # by ctx.quick
    False: {"natural-patches": {"n_patches": 2000}},
    True: {"natural-patches": {"n_patches": 256}},
}

N_RECONSTRUCTIONS = 8


def _load_datasets(ctx: DemoContext) -> None:
    for name, split in DEMO_DATASETS:
        ctx.dataset(name, split, **DATASET_OPTIONS[ctx.quick].get(name, {}))


def _display(dataset, images: torch.Tensor) -> np.ndarray:
    """Map normalised (n, C, H, W) images to display arrays (n, H, W[, C]) in [0, 1]."""
    shown = dataset.info.denormalize(images.detach().cpu().float()).clamp(0, 1).numpy()
    shown = np.moveaxis(shown, 1, -1)
    return shown[..., 0] if shown.shape[-1] == 1 else shown


def _pixel_mask(mask: torch.Tensor, image_shape: tuple[int, int]) -> np.ndarray:
    """Turn a per-patch mask (n, n_patches) into a per-pixel mask (n, H, W)."""
    mask = mask.detach().cpu().float()
    if mask.dim() == 3:
        return mask.numpy()
    height, width = image_shape
    side = int(round(mask.shape[1] ** 0.5))
    grid = mask.reshape(-1, side, side)
    return grid.repeat_interleave(height // side, 1).repeat_interleave(width // side, 2).numpy()


def _reconstructions(model: torch.nn.Module, dataset) -> Reconstructions | None:
    if not hasattr(model, "reconstruct"):
        return None
    images = torch.stack([dataset[i][0] for i in range(N_RECONSTRUCTIONS)])
    device = next(model.parameters()).device
    torch.manual_seed(0)  # the MAE's mask is random: draw the same one every time
    with torch.no_grad():
        output = model.reconstruct(images.to(device))
    masks = None
    if isinstance(output, tuple):
        output, mask = output
        masks = _pixel_mask(mask, tuple(images.shape[-2:]))
    return Reconstructions(_display(dataset, images), _display(dataset, output), masks)


def _summarise(spec: DemoModel, result, seconds: float, dataset) -> ModelSummary:
    model = result.model
    return ModelSummary(
        name=spec.run,
        family=model.family,
        dataset=spec.dataset,
        architecture=str(model),
        n_parameters=sum(p.numel() for p in model.parameters() if p.requires_grad),
        history=result.history,
        metrics=dict(result.metrics),
        train_seconds=seconds,
        reconstructions=_reconstructions(model, dataset),
    )


def zoo_step(ctx: DemoContext) -> list[Section]:
    """Train every model in ``DEMO_MODELS`` into ``ctx.out / "runs"`` and summarise them."""
    _load_datasets(ctx)
    summaries = []
    for spec in DEMO_MODELS:
        started = time.perf_counter()
        result = zoo.train(
            spec.model,
            dataset=spec.dataset,
            out=ctx.out / "runs" / spec.run,
            epochs=spec.quick_epochs if ctx.quick else spec.epochs,
            seed=ctx.seed,
            device=ctx.device,
            force=True,
            progress=ctx.progress,
            dataset_options=spec.dataset_options(ctx.quick),
            **spec.options,
        )
        seconds = time.perf_counter() - started
        ctx.models[spec.run] = result.model.eval()
        ctx.run_dirs[spec.run] = result.run_dir
        ctx.results.setdefault("train_seconds", {})[spec.run] = seconds
        summaries.append(_summarise(spec, result, seconds, ctx.datasets[spec.dataset, "test"]))
    ctx.results["zoo_summaries"] = summaries
    return zoo_section(summaries)
