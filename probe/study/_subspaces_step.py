"""The subspaces analysis: PCA vs linear autoencoders (plain, uniform L2, non-uniform L2) on recorded layers."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd

from analyses import compare_subspaces
from probe.study._context import StudyContext, stimulus_pixels
from reports import Section, subspace_section

__all__ = ["subspaces_analysis"]


# Widest layer the subspace analysis takes: the linear autoencoders fit n_units x k weights per
# method and k, with L-BFGS over the whole set of stimuli.
MAX_UNITS = 4096


def subspaces_analysis(
    ctx: StudyContext, *, ks: Sequence[int] = (2, 5, 10), max_iter: int = 2000, n_stimuli: int = 1000,
    layer: str = "auto", pixels: bool = False,
) -> list[Section]:
    """PCA vs linear autoencoders (plain, uniform L2, non-uniform L2) on recorded layers.

    ``layer="auto"`` compares, for every model, its deepest recorded layer with at least ``max(ks)``
    and at most ``MAX_UNITS`` units that varies over the stimuli (the last one is skipped when there
    are others: it is usually the classifier's output); ``"MODEL/LAYER"`` compares that one. The
    table ``subspaces`` holds every comparison's rows (``SubspaceComparison.to_frame``). ``pixels``
    adds a comparison on the pixels of the first model's stimuli (as that model sees them), first.
    """
    options = dict(ks=tuple(ks), max_iter=max_iter, device=ctx.device, random_state=ctx.seed, progress=False)
    chosen = _chosen_layers(ctx, layer, max(ks))
    if not chosen:
        raise ValueError(f"no recorded layer has between {max(ks)} and {MAX_UNITS} units that vary over the stimuli; "
                         "record one (or lower the analysis's ks)")
    comparisons = []
    if pixels and ctx.stimuli:
        first = next(iter(ctx.stimuli))
        words = ctx.data_of.get(first, "the stimuli")
        comparisons.append(compare_subspaces(stimulus_pixels(ctx.stimuli[first], n_stimuli), source=f"pixels of {words}",
                                             **options))
    for model, name in chosen:
        features = np.asarray(ctx.recordings[model][name], dtype=np.float64)[:n_stimuli]
        comparisons.append(compare_subspaces(features, source=f"{model}:{name}", **options))
    return _subspaces_result(ctx, comparisons)


def _chosen_layers(ctx: StudyContext, layer: str, min_units: int) -> list[tuple[str, str]]:
    if layer != "auto":
        model, _, name = layer.rpartition("/")
        if model not in ctx.recordings or name not in ctx.recordings[model].layers:
            recorded = [f"{m}/{n}" for m, rec in ctx.recordings.items() for n in rec.layers]
            raise KeyError(f"the subspaces analysis's layer {layer!r} is not recorded; recorded: {', '.join(recorded)}")
        return [(model, name)]
    chosen = []
    for model, recording in ctx.recordings.items():
        for name in reversed(recording.layers[:-1] or recording.layers):
            features = np.asarray(recording[name])
            if min_units <= features.shape[1] <= MAX_UNITS and min(features.shape) >= min_units \
                    and np.ptp(features, axis=0).max() > 0:
                chosen.append((model, name))
                break
    return chosen


def _subspaces_result(ctx: StudyContext, comparisons: list[Any]) -> list[Section]:
    ctx.results["subspaces"] = comparisons
    ctx.add_table("subspaces", pd.concat([c.to_frame().assign(source=c.source) for c in comparisons], ignore_index=True))
    return [subspace_section(comparisons)]
