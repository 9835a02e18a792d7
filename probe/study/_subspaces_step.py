"""The demo's subspace step: PCA vs linear autoencoders on digits pixels and on one recorded layer."""

from __future__ import annotations

from typing import Any

import numpy as np

import probe
from analyses import compare_subspaces
from probe.study._context import DemoContext
from reports import Section, subspace_section

__all__ = ["subspaces_step"]

KS = {True: (5,), False: (2, 5, 10)}  # by ctx.quick
MAX_ITER = {True: 100, False: 2000}
N_LAYER_STIMULI = {True: 300, False: 1000}
PREFERRED_RUNS = ("cnn", "mlp", "simclr", "mae")


def _pixels(dataset: Any) -> np.ndarray:
    return np.stack([np.asarray(dataset[i][0], dtype=np.float64).ravel() for i in range(len(dataset))])


def _recorded_layer(ctx: DemoContext, min_units: int) -> tuple[str, np.ndarray] | None:
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


def subspaces_step(ctx: DemoContext) -> list[Section]:
    """PCA vs linear autoencoders (plain, uniform L2, non-uniform L2) over a small sweep of k."""
    ks = KS[ctx.quick]
    options = dict(ks=ks, max_iter=MAX_ITER[ctx.quick], device=ctx.device, random_state=ctx.seed, progress=False)
    comparisons = [compare_subspaces(_pixels(ctx.dataset("digits", "train")), source="digits pixels", **options)]
    layer = _recorded_layer(ctx, max(ks))
    if layer is not None:
        name, features = layer
        comparisons.append(compare_subspaces(features, source=name, **options))
    ctx.results["subspaces"] = comparisons
    return [subspace_section(comparisons)]
