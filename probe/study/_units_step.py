"""The demo's Units step: top-activating patches of the natural-patches autoencoder and the digits CNN."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd

from torch.utils.data import Subset

from analyses import select_units, top_patches, unit_selectivity
from probe.study._context import StudyContext
from probe.study._top_patches import record_top_patches, record_topk
from probe.study._topk_cache import cached_topk
from reports import Section, units_section

__all__ = ["UNIT_PANELS", "units_analysis", "units_step", "unit_layers"]

# (card title, run name, dataset, layer): first layers of both models, and a later CNN layer. The
# autoencoder is read before its ReLUs, so that its bottom patches show suppression (the opposite
# edge) rather than ties at zero; the CNN after them, where class selectivity is defined.
UNIT_PANELS: tuple[tuple[str, str, str, str], ...] = (
    ("ae-conv on natural patches · encoder.conv1", "ae-conv-patches", "natural-patches", "encoder.conv1"),
    ("ae-conv on natural patches · encoder.conv2", "ae-conv-patches", "natural-patches", "encoder.conv2"),
    ("cnn on digits · features.relu1", "cnn", "digits", "features.relu1"),
    ("cnn on digits · features.relu3", "cnn", "digits", "features.relu3"),
)

# Stimuli per panel in quick mode, so that the step takes about a second.
_QUICK_STIMULI = 200


def _stimuli(ctx: StudyContext, dataset_name: str) -> Any:
    dataset = ctx.dataset(dataset_name)
    if ctx.quick and len(dataset) > _QUICK_STIMULI:
        subset = Subset(dataset, range(_QUICK_STIMULI))
        subset.info = dataset.info  # keeps denormalize for display
        return subset
    return dataset


def units_step(ctx: StudyContext) -> list[Section]:
    """Top-9 and bottom-3 patches per unit on held-out stimuli; grids saved under ``ctx.out / "units"``."""
    results = {}
    missing = sorted({run for _, run, _, _ in UNIT_PANELS if run not in ctx.models})
    panels: dict[tuple[str, str], list[tuple[str, str]]] = {}  # one streaming pass per model
    for title, run, dataset_name, layer in UNIT_PANELS:
        if run in ctx.models:
            panels.setdefault((run, dataset_name), []).append((title, layer))
    for (run, dataset_name), entries in panels.items():
        by_layer = record_top_patches(
            ctx.models[run],
            _stimuli(ctx, dataset_name),
            [layer for _, layer in entries],
            k=9,
            bottom_k=3,
            device=ctx.device,
            progress=False,
        )
        results.update({title: by_layer[layer] for title, layer in entries})
    ctx.results["top_patches"] = results
    if not results:
        raise KeyError(f"the Units step needs the trained runs {missing}; run the Zoo step first")
    intro = (
        "Each row is one unit (the most class-selective ones for the labelled digits, the strongest for "
        "the unlabelled patches); each column one of its top-9 held-out stimuli, cropped to the unit's exact "
        "receptive field. Each patch's contrast is stretched for display. A first-layer unit of an "
        "autoencoder trained on contrast-normalised natural patches should prefer an oriented edge."
        + (f" Missing runs: {', '.join(missing)}." if missing else "")
    )
    section = units_section(
        results, units="selective", n_units=8, seed=ctx.seed, stretch=True, png_dir=ctx.out / "units", intro=intro
    )
    return [section]


def unit_layers(ctx: StudyContext, model_name: str, layers: str | Sequence[str] = "auto") -> list[str]:
    """The recorded layers of a model whose units have receptive fields in the stimuli.

    ``"auto"``: every recorded layer whose output per stimulus is a map (C, H, W) or tokens (T, D).
    A list names layers as ``LAYER`` (for every model that recorded it) or ``MODEL/LAYER``.
    """
    recording = ctx.recordings[model_name]
    if layers == "auto":
        return [layer for layer in recording.layers if len(recording.shapes[layer]) >= 2]
    chosen = []
    for name in layers:
        model, sep, layer = name.rpartition("/")
        if sep and model != model_name:
            continue
        if (layer if sep else name) in recording.layers:
            chosen.append(layer if sep else name)
    return chosen


def _topk(ctx: StudyContext, name: str, layers: list[str], *, k: int, bottom_k: int) -> tuple[dict[str, Any], Any]:
    """The top-k pass of a model's layers: through the study's cache when it has one."""
    options = dict(k=k, bottom_k=bottom_k, device=ctx.device, progress=ctx.progress)
    if ctx.cache is None or name not in ctx.keys:
        return record_topk(ctx.models[name], ctx.stimuli[name], layers, **options)
    model_key, data_key = ctx.keys[name]
    topk, labels, cached = cached_topk(ctx.cache, ctx.models[name], ctx.stimuli[name], layers, model_key=model_key,
                                       data_key=data_key, **options)
    ctx.from_cache.setdefault(name, []).extend(f"top-{k} of {layer}" for layer in cached)
    ctx.recorded.setdefault(name, []).extend(f"top-{k} of {layer}" for layer in topk if layer not in cached)
    return topk, labels


def units_analysis(
    ctx: StudyContext, *, k: int = 9, bottom_k: int = 0, n_units: int = 8, layers: str | Sequence[str] = "auto"
) -> list[Section]:
    """Top-k (and bottom-k) stimuli of the units of each model's map layers, cropped to their exact
    receptive fields: one streaming pass per model (through the study's cache), then the crops of the
    ``n_units`` shown units of each layer (the most class-selective, or the strongest).

    The table ``units`` holds one row per model, layer, shown unit (its index in the layer) and rank.
    """
    results, frames, left_out, no_field = {}, [], [], []
    for name, model in ctx.models.items():
        chosen = unit_layers(ctx, name, layers)
        if not chosen:
            left_out.append(name)
            continue
        stimuli = ctx.stimuli[name]
        topk, labels = _topk(ctx, name, chosen, k=min(k, len(stimuli)), bottom_k=min(bottom_k, len(stimuli)))
        for layer, result in topk.items():  # one layer at a time: a field that cannot be mapped skips only it
            # the shown units are chosen before cropping: a deep layer's crops of every unit take gigabytes
            shown = np.sort(select_units(result, unit_selectivity(result, labels), "selective", n_units))
            try:
                patches = top_patches(model, stimuli, result.select(shown), labels=labels)
            except ValueError as err:
                no_field.append(f"{name} · {layer} ({str(err).split(';')[0]})")
                continue
            results[f"{name} · {layer}"] = patches
            frames.append(patches.to_frame().assign(model=name, layer=layer))
    if not results:
        raise ValueError(f"no recorded layer of {', '.join(left_out)} has units with receptive fields (maps or tokens); "
                         "record a convolutional or token layer, or leave the units analysis out")
    ctx.results["units"] = results
    table = pd.concat(frames, ignore_index=True)
    ctx.add_table("units", table[["model", "layer", *[c for c in table.columns if c not in ("model", "layer")]]])
    intro = (
        f"Each row is one unit (the most class-selective ones when the stimuli are labelled, else the strongest); "
        f"each column one of its top-{k} stimuli, cropped to the unit's exact receptive field."
        + (f" Left out (no map or token layer recorded): {', '.join(left_out)}." if left_out else "")
        + (f" Layers whose receptive fields cannot be mapped to the stimuli: {'; '.join(no_field)}." if no_field else "")
    )
    return [units_section(results, units="selective", n_units=n_units, seed=ctx.seed, png_dir=ctx.out / "units",
                          intro=intro)]
