"""The demo's Layers step: record every zoo model's recordable layers on held-out stimuli."""

from __future__ import annotations

from typing import Any

import pandas as pd

from torch import nn
from torch.utils.data import Subset

from probe import record
from probe.study._context import StudyContext
from reports import Section, layers_section
from zoo import RunDir

__all__ = ["layers_analysis", "layers_step"]

# Stimuli per model in quick mode, so that the step takes a second or two.
_QUICK_STIMULI = 256


def _trained_on(ctx: StudyContext, name: str, model: nn.Module) -> str:
    """The dataset a model was trained on: its run's config.json, else the one whose shape fits."""
    run_dir = ctx.run_dirs.get(name)
    if run_dir is not None and (run_dir / "config.json").is_file():
        dataset_name, _ = RunDir(run_dir).training_dataset()
        if (dataset_name, "test") in ctx.datasets:
            return dataset_name
    input_shape = list(getattr(model, "config", {}).get("input_shape", []))
    for dataset_name in ("digits", "natural-patches"):
        held_out = ctx.datasets.get((dataset_name, "test"))
        if held_out is not None and list(held_out.info.image_shape) == input_shape:
            return dataset_name
    return "digits"


def _stimuli(ctx: StudyContext, dataset_name: str) -> Any:
    dataset = ctx.dataset(dataset_name)
    if ctx.quick and len(dataset) > _QUICK_STIMULI:
        return Subset(dataset, range(_QUICK_STIMULI))
    return dataset


def layers_step(ctx: StudyContext) -> list[Section]:
    """Record ``model.recordable_layers()`` of every model in ``ctx.models`` on its held-out data.

    Digits models are recorded on ``("digits", "test")``, natural-patches models on
    ``("natural-patches", "test")``; recordings are kept in ``ctx.recordings[name]``.
    """
    if not ctx.models:
        return []
    for name, model in ctx.models.items():
        stimuli = _stimuli(ctx, _trained_on(ctx, name, model))
        ctx.recordings[name] = record(
            model, stimuli, model.recordable_layers(), batch_size=512, device=ctx.device, progress=False
        )
    return layers_analysis(ctx)


def layers_analysis(ctx: StudyContext) -> list[Section]:
    """Per layer of every recording in ``ctx.recordings``: units, value range, sparsity, a histogram.

    The table ``layers`` holds one row per model and layer (``probe.Recording.to_frame``).
    """
    if not ctx.recordings:
        raise KeyError("the layers analysis needs recordings; record the models first")
    frames = [recording.to_frame().assign(model=name) for name, recording in ctx.recordings.items()]
    table = pd.concat(frames, ignore_index=True)
    ctx.add_table("layers", table[["model", *[c for c in table.columns if c != "model"]]])
    return layers_section(ctx.recordings)
