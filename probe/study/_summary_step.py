"""The study's summary: what each model is, where it came from, what was recorded of it."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch

from probe.study._context import StudyContext, display_pixels
from reports import ModelSummary, Reconstructions, Section, render_fragment, table_html, zoo_section
from zoo import RunDir

# Stimuli an autoencoder's card shows with their reconstructions.
N_RECONSTRUCTIONS = 8

__all__ = ["summary_analysis"]


def summary_analysis(ctx: StudyContext) -> list[Section]:
    """One row per model (source, weights, parameters, layers, stimuli, layers read from the cache, and for
    a zoo run how long it was trained on what),
    and the training curve and final metrics of each model that is a zoo run.

    The table ``summary`` holds the rows; ``ctx.sources`` says where each model came from.
    """
    sources = ctx.sources
    rows = []
    for name, model in ctx.models.items():
        recording = ctx.recordings.get(name)
        cached = ctx.from_cache.get(name, [])
        rows.append({
            "model": name,
            "source": sources.get(name, {}).get("spec", type(model).__name__),
            "weights": sources.get(name, {}).get("weights") or "",
            "parameters": sum(p.numel() for p in model.parameters()),
            "layers": len(recording.layers) if recording is not None else 0,
            "stimuli": recording.n_stimuli if recording is not None else 0,
            "from cache": f"{len(cached)} of {len(recording.layers)}" if recording is not None else "",
            "trained": _training_words(ctx.run_dirs[name]) if name in ctx.run_dirs else "",
        })
    table = pd.DataFrame(rows)
    ctx.add_table("summary", table)
    intro = "Where each model came from and what was recorded of it."
    sections = [Section("Models", render_fragment("sections/table.html.j2", intro=intro, table=table_html(table)),
                        summary=f"{len(rows)} models; layers read from the recordings cache are counted in 'from cache'")]
    runs = [_run_summary(name, ctx.run_dirs[name], ctx.models[name], ctx.stimuli.get(name), ctx.timings)
            for name in ctx.models if name in ctx.run_dirs]
    if runs:
        sections += zoo_section(runs)
    return sections


def _training_words(run_dir: Any) -> str:
    """How a zoo run was trained, from its config.json: ``"5 epochs on digits"``."""
    run = RunDir.open(run_dir)
    epochs = (run.read_config().get("training") or {}).get("epochs")
    return f"{epochs} epochs on {run.training_dataset()[0]}" if epochs is not None else ""


def _run_summary(name: str, run_dir: Any, model: Any, stimuli: Any, timings: dict[str, float]) -> ModelSummary:
    run = RunDir.open(run_dir)
    history = pd.DataFrame(run.read_log_rows()).apply(pd.to_numeric, errors="coerce")
    config = run.read_config()
    metrics = run.read_metrics() if run.metrics_path.is_file() else {}
    return ModelSummary(
        name=name,
        family=str(getattr(model, "family", config.get("family", ""))),
        dataset=run.training_dataset()[0],
        architecture=str(model),
        n_parameters=sum(p.numel() for p in model.parameters() if p.requires_grad),
        history=history,
        metrics=dict(metrics),
        train_seconds=timings.get(f"train {name}"),
        reconstructions=None if stimuli is None else _reconstructions(model, stimuli),
    )


def _pixel_mask(mask: torch.Tensor, image_shape: tuple[int, int]) -> np.ndarray:
    """Turn a per-patch mask (n, n_patches) into a per-pixel mask (n, H, W)."""
    mask = mask.detach().cpu().float()
    if mask.dim() == 3:
        return mask.numpy()
    height, width = image_shape
    side = int(round(mask.shape[1] ** 0.5))
    grid = mask.reshape(-1, side, side)
    return grid.repeat_interleave(height // side, 1).repeat_interleave(width // side, 2).numpy()


def _reconstructions(model: Any, stimuli: Any) -> Reconstructions | None:
    """The first stimuli and the model's reconstructions of them (with the MAE's mask), for a model that
    reconstructs; None otherwise."""
    if not hasattr(model, "reconstruct") or len(stimuli) == 0:
        return None
    images = torch.stack([torch.as_tensor(stimuli[i][0]) for i in range(min(N_RECONSTRUCTIONS, len(stimuli)))])
    device = next(model.parameters()).device
    generator_state = torch.get_rng_state()
    torch.manual_seed(0)  # the MAE's mask is random: draw the same one every time
    with torch.no_grad():
        output = model.reconstruct(images.to(device))
    torch.set_rng_state(generator_state)
    masks = None
    if isinstance(output, tuple):
        output, mask = output
        masks = _pixel_mask(mask, tuple(images.shape[-2:]))
    return Reconstructions(display_pixels(stimuli, images), display_pixels(stimuli, output), masks)
