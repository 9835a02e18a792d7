"""The units analysis: top-activating patches of units, cropped to their exact receptive fields."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd

from analyses import select_units, top_patches, unit_selectivity
from probe.study._context import StudyContext
from probe.study._top_patches import record_topk
from probe.study._topk_cache import cached_topk
from reports import Section, units_section

__all__ = ["layers_with_units", "unit_layers", "units_analysis"]


def unit_layers(ctx: StudyContext, model_name: str, layers: str | Sequence[str] = "auto") -> list[str]:
    """The recorded layers of a model whose units have receptive fields in the stimuli.

    ``"auto"``: every recorded layer whose output per stimulus is a map (C, H, W) or tokens (T, D).
    A list names layers as ``LAYER`` (for every model that recorded it) or ``MODEL/LAYER``.
    """
    recording = ctx.recordings[model_name]
    return layers_with_units({layer: recording.shapes[layer] for layer in recording.layers}, model_name, layers)


def layers_with_units(shapes: dict[str, tuple[int, ...]], model_name: str, layers: str | Sequence[str]) -> list[str]:
    """``unit_layers`` among a model's layers and their output shapes per stimulus (recorded or planned)."""
    if layers == "auto":
        return [layer for layer, shape in shapes.items() if len(shape) >= 2]
    chosen = []
    for name in layers:
        model, sep, layer = name.rpartition("/")
        if sep and model != model_name:
            continue
        if (layer if sep else name) in shapes:
            chosen.append(layer if sep else name)
    return chosen


def _topk(ctx: StudyContext, name: str, layers: list[str], *, k: int, bottom_k: int,
          distinct_stimuli: bool = True) -> tuple[dict[str, Any], Any]:
    """The top-k pass of a model's layers: through the study's cache when it has one."""
    options = dict(k=k, bottom_k=bottom_k, distinct_stimuli=distinct_stimuli, device=ctx.device,
                   progress=ctx.progress)
    if ctx.cache is None or name not in ctx.keys:
        return record_topk(ctx.models[name], ctx.stimuli[name], layers, **options)
    model_key, data_key = ctx.keys[name]
    topk, labels, cached = cached_topk(ctx.cache, ctx.models[name], ctx.stimuli[name], layers, model_key=model_key,
                                       data_key=data_key, **options)
    ctx.from_cache.setdefault(name, []).extend(f"top-{k} of {layer}" for layer in cached)
    ctx.recorded.setdefault(name, []).extend(f"top-{k} of {layer}" for layer in topk if layer not in cached)
    return topk, labels


def units_analysis(
    ctx: StudyContext, *, k: int = 9, bottom_k: int = 0, n_units: int = 8, layers: str | Sequence[str] = "auto",
    stretch: bool | str = "auto", distinct_stimuli: bool | str = "auto",
) -> list[Section]:
    """Top-k (and bottom-k) stimuli of the units of each model's map layers, cropped to their exact
    receptive fields: one streaming pass per model (through the study's cache), then the crops of the
    ``n_units`` shown units of each layer (the most class-selective, or the strongest). One section per
    group of models recorded on the same stimuli.

    Parameters
    ----------
    k, bottom_k
        Top and bottom stimuli shown per unit.
    n_units
        Units shown per layer.
    layers
        ``"auto"`` (every recorded map or token layer) or ``LAYER`` / ``MODEL/LAYER`` names.
    stretch
        Stretch each patch's contrast for display; ``"auto"``: for grey (one-channel) stimuli.
    distinct_stimuli
        A unit's top-k come from k different stimuli; ``"auto"``: when there are at least ``4 k`` stimuli
        (a handful of photographs: a unit's strongest responses anywhere in them).

    The table ``units`` holds one row per model, layer, shown unit (its index in the layer) and rank.
    """
    results, frames, left_out, no_field = {}, [], [], []
    by_group: dict[str, dict[str, Any]] = {}
    groups = ctx.stimulus_groups()
    for words, names in groups.items():
        for name in names:
            chosen = unit_layers(ctx, name, layers)
            if not chosen:
                left_out.append(name)
                continue
            model, stimuli = ctx.models[name], ctx.stimuli[name]
            distinct = len(stimuli) >= 4 * k if distinct_stimuli == "auto" else bool(distinct_stimuli)
            topk, labels = _topk(ctx, name, chosen, k=min(k, len(stimuli)), bottom_k=min(bottom_k, len(stimuli)),
                                 distinct_stimuli=distinct)
            for layer, result in topk.items():  # one layer at a time: a field that cannot be mapped skips only it
                # the shown units are chosen before cropping: a deep layer's crops of every unit take gigabytes
                shown = np.sort(select_units(result, unit_selectivity(result, labels), "selective", n_units))
                try:
                    patches = top_patches(model, stimuli, result.select(shown), labels=labels)
                except ValueError as err:
                    no_field.append(f"{name} · {layer} ({str(err).split(';')[0]})")
                    continue
                results[f"{name} · {layer}"] = patches
                by_group.setdefault(words, {})[f"{name} · {layer}"] = patches
                frames.append(patches.to_frame().assign(model=name, layer=layer))
    if not results:
        if layers != "auto":
            raise ValueError(f"none of the units analysis's layers {list(layers)} is a recorded layer whose receptive "
                             "fields can be mapped; name recorded layers as LAYER or MODEL/LAYER")
        raise ValueError(f"no recorded layer of {', '.join(left_out)} has units with receptive fields (maps or tokens); "
                         "record a convolutional or token layer, or leave the units analysis out")
    ctx.results["units"] = results
    table = pd.concat(frames, ignore_index=True)
    ctx.add_table("units", table[["model", "layer", *[c for c in table.columns if c not in ("model", "layer")]]])
    sections = []
    for index, (words, group) in enumerate(by_group.items()):
        grey = _is_grey(ctx.stimuli[next(iter(group)).split(" · ")[0]]) if stretch == "auto" else bool(stretch)
        intro = (
            f"Stimuli: {words or 'the study'}. Each row is one unit (the most class-selective ones when the stimuli "
            f"are labelled, else the strongest); each column one of its top-{k} stimuli, cropped to the unit's "
            "exact receptive field." + (" Each patch's contrast is stretched for display." if grey else "")
        )
        if index == 0:
            intro += (f" Left out (no map or token layer recorded): {', '.join(left_out)}." if left_out else "") + (
                f" Layers whose receptive fields cannot be mapped to the stimuli: {'; '.join(no_field)}."
                if no_field else "")
        title = f"Units · {words}" if len(by_group) > 1 and words else "Units"
        png_dir = ctx.out / ("units" if index == 0 else f"units-{index + 1}")
        sections.append(units_section(group, units="selective", n_units=n_units, seed=ctx.seed, stretch=grey,
                                      png_dir=png_dir, title=title, intro=intro))
    return sections


def _is_grey(stimuli: Any) -> bool:
    """Whether the stimuli have one channel (their first item's leading axis)."""
    first = stimuli[0][0]
    return int(np.asarray(first).shape[0]) == 1 if np.asarray(first).ndim == 3 else True
