"""The study's ``neighbours`` analysis: a few query stimuli and their nearest stimuli at each layer."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch

from analyses import nearest_stimuli, pick_queries
from probe.study._context import StudyContext, dataset_labels, display_pixels, stimulus_pixels
from reports import Section, neighbours_section

__all__ = ["neighbours_analysis", "display_images", "shown_layers"]

# Layers of one model shown by layers = "auto": evenly spaced from first to last.
MAX_AUTO_LAYERS = 5


def display_images(stimuli: Any) -> np.ndarray:
    """Every stimulus as a display image, (n, H, W) or (n, H, W, 3) in [0, 1]."""
    return display_pixels(stimuli, torch.stack([torch.as_tensor(stimuli[i][0]) for i in range(len(stimuli))]))


def shown_layers(ctx: StudyContext, names: Sequence[str], layers: Sequence[str] | str) -> list[tuple[str, str]]:
    """(model, layer) rows: those named as MODEL/LAYER, or with ``"auto"`` up to ``MAX_AUTO_LAYERS`` of each
    model's recorded layers, evenly spaced."""
    if layers != "auto":
        rows = [tuple(item.split("/", 1)) for item in layers]
        for model, layer in rows:
            if model in names and layer not in ctx.recordings[model].layers:
                raise ValueError(f"neighbours.layers names {model}/{layer}, which is not a recorded layer of {model!r}; "
                                 f"recorded: {', '.join(ctx.recordings[model].layers)}")
        return [(model, layer) for model, layer in rows if model in names]
    rows = []
    for name in names:
        recorded = list(ctx.recordings[name].layers)
        picks = np.unique(np.linspace(0, len(recorded) - 1, min(len(recorded), MAX_AUTO_LAYERS)).round().astype(int))
        rows += [(name, recorded[i]) for i in picks]
    return rows


def neighbours_analysis(ctx: StudyContext, *, models: Sequence[str] | str = "all", layers: Sequence[str] | str = "auto",
                        n_queries: int = 4, k: int = 6, metric: str = "cosine") -> list[Section]:
    """For ``n_queries`` stimuli (one per class in turn, seeded), their ``k`` nearest stimuli in the pixels and
    in each shown layer, per group of stimuli. The table ``neighbours`` holds every (layer, query, rank)."""
    sections, frames = [], []
    for words, names in ctx.stimulus_groups(models).items():
        rows = shown_layers(ctx, names, layers)
        if not rows:
            continue
        stimuli = ctx.stimuli[names[0]]
        labels = dataset_labels(stimuli)
        labels = labels if (labels >= 0).any() else None
        queries = pick_queries(labels, len(stimuli), min(n_queries, len(stimuli)), seed=ctx.seed)
        k_shown = min(k, len(stimuli) - 1)
        results = [nearest_stimuli(stimulus_pixels(stimuli), queries, k_shown, metric=metric, labels=labels,
                                   layer="pixels")]
        for model, layer in rows:
            responses = np.asarray(ctx.recordings[model][layer]).reshape(len(stimuli), -1)
            results.append(nearest_stimuli(responses, queries, k_shown, metric=metric, labels=labels, model=model,
                                           layer=f"{model} · {layer}" if len(names) > 1 else layer))
        frames += [r.to_frame().assign(stimuli=words) for r in results]
        ctx.results.setdefault("neighbours", {})[words] = results
        class_names = getattr(getattr(stimuli, "info", None), "class_names", None)
        title = "Nearest stimuli" + (f" · {words}" if words else "")
        intro = (f"What “similar” means at each depth: {len(queries)} query stimuli of {words or 'the study'} and "
                 f"their {k_shown} most similar stimuli ({metric}) in the pixels and in each layer shown.")
        sections.append(neighbours_section(results, display_images(stimuli), title=title, class_names=class_names,
                                           intro=intro))
    if frames:
        ctx.add_table("neighbours", pd.concat(frames))
    return sections
