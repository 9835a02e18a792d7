"""The demo's subspace step: PCA vs linear autoencoders on digits pixels and on one recorded layer."""

from __future__ import annotations

from typing import Any, Sequence

import pandas as pd

import numpy as np

import probe
from analyses import compare_subspaces
from probe.study._context import StudyContext
from reports import Section, subspace_section

__all__ = ["subspaces_analysis", "subspaces_step"]

KS = {True: (5,), False: (2, 5, 10)}  # by ctx.quick
MAX_ITER = {True: 100, False: 2000}
N_LAYER_STIMULI = {True: 300, False: 1000}
PREFERRED_RUNS = ("cnn", "mlp", "simclr", "mae")


def _pixels(dataset: Any) -> np.ndarray:
    return np.stack([np.asarray(dataset[i][0], dtype=np.float64).ravel() for i in range(len(dataset))])


def _recorded_layer(ctx: StudyContext, min_units: int) -> tuple[str, np.ndarray] | None:
    """(name, features) of the deepest hidden layer with enough units from the preferred run."""
    recordings = dict(ctx.recordings)
    runs = [run for run in PREFERRED_RUNS if run in recordings] + [run for run in recordings if run not in PREFERRED_RUNS]
    if not runs and "cnn" in ctx.models:
        model = ctx.models["cnn"]
        recordings["cnn"] = probe.record(model, ctx.dataset("digits", "test"), model.recordable_layers(), device=ctx.device,
                                         progress=False)
        runs = ["cnn"]
    for run in runs:
        recording = recordings[run]
        for layer in reversed(recording.layers[:-1] or recording.layers):  # skip the logits when there are others
            features = np.asarray(recording[layer], dtype=np.float64)
            features = features[: N_LAYER_STIMULI[ctx.quick]]
            if min(features.shape) >= min_units and np.ptp(features, axis=0).max() > 0:
                return f"{run}:{layer}", features
    return None


def subspaces_step(ctx: StudyContext) -> list[Section]:
    """PCA vs linear autoencoders (plain, uniform L2, non-uniform L2) over a small sweep of k."""
    ks = KS[ctx.quick]
    options = dict(ks=ks, max_iter=MAX_ITER[ctx.quick], device=ctx.device, random_state=ctx.seed, progress=False)
    comparisons = [compare_subspaces(_pixels(ctx.dataset("digits", "train")), source="digits pixels", **options)]
    layer = _recorded_layer(ctx, max(ks))
    if layer is not None:
        name, features = layer
        comparisons.append(compare_subspaces(features, source=name, **options))
    return _subspaces_result(ctx, comparisons)


# Widest layer the subspace analysis takes: the linear autoencoders fit n_units x k weights per
# method and k, with L-BFGS over the whole set of stimuli.
MAX_UNITS = 4096


def subspaces_analysis(
    ctx: StudyContext, *, ks: Sequence[int] = (2, 5, 10), max_iter: int = 2000, n_stimuli: int = 1000,
    layer: str = "auto",
) -> list[Section]:
    """PCA vs linear autoencoders (plain, uniform L2, non-uniform L2) on recorded layers.

    ``layer="auto"`` compares, for every model, its deepest recorded layer with at least ``max(ks)``
    and at most ``MAX_UNITS`` units that varies over the stimuli (the last one is skipped when there
    are others: it is usually the classifier's output); ``"MODEL/LAYER"`` compares that one. The
    table ``subspaces`` holds every comparison's rows (``SubspaceComparison.to_frame``).
    """
    options = dict(ks=tuple(ks), max_iter=max_iter, device=ctx.device, random_state=ctx.seed, progress=False)
    chosen = _chosen_layers(ctx, layer, max(ks))
    if not chosen:
        raise ValueError(f"no recorded layer has between {max(ks)} and {MAX_UNITS} units that vary over the stimuli; "
                         "record one (or lower the analysis's ks)")
    comparisons = []
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
