"""Top-activating patches in one call: the engine records a running top-k, the analysis crops it."""

from __future__ import annotations

from typing import Literal, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from analyses import TopPatches, top_patches
from probe import TopK, TopKResult, record, resolve_layers

__all__ = ["record_top_patches", "record_topk"]


def record_top_patches(
    model: nn.Module,
    data: Dataset | DataLoader | torch.Tensor,
    layer: str | Sequence[str],
    k: int = 9,
    bottom_k: int = 0,
    *,
    distinct_stimuli: bool = True,
    pool: Literal["max", "mean"] = "max",
    batch_size: int = 256,
    device: str | torch.device = "auto",
    patch_size: int | None = None,
    field_method: Literal["auto", "exact", "gradient"] = "auto",
    amp: bool = False,
    layout: str = "auto",
    progress: bool = True,
) -> TopPatches | dict[str, TopPatches]:
    """The top-k (and bottom-k) stimuli of every unit of a layer, cropped to their receptive fields.

    One streaming pass (``probe.record`` with a ``probe.TopK`` reducer) on the device, then
    ``analyses.top_patches`` over the winners only.

    Parameters
    ----------
    model
        Any module; ``probe.record`` puts it back where it was, and the second pass runs there.
    data
        A Dataset returning ``(image, label)`` (zoo datasets), a DataLoader without shuffling, or a
        tensor of shape (n_stimuli, C, H, W).
    layer
        Module name, or a list of names (recorded in the same single pass). A module that runs
        several times per forward pass is named per call, ``name#k`` (k from 1); in a list, its
        plain name stands for all its calls.
    k, bottom_k
        Entries per unit with the largest and the smallest values.
    distinct_stimuli, pool, layout
        See ``probe.TopK``.
    batch_size
        Stimuli per forward pass.
    device
        Where the streaming pass runs (``"auto"``: CUDA when present).
    patch_size, field_method
        See ``analyses.top_patches``.
    amp
        Run the streaming pass under autocast (float16 on CUDA): faster on large models, values
        ranked at half precision.
    progress
        Show a progress bar.

    Returns
    -------
    TopPatches
        Or ``{layer: TopPatches}`` when ``layer`` is a list.

    Raises
    ------
    KeyError
        Unknown layer.
    ValueError
        k larger than the dataset; a layer without unit structure; a receptive field that can be
        neither computed nor measured; a single name that stands for several recorded calls.
    """
    chosen, labels = record_topk(model, data, layer, k, bottom_k, distinct_stimuli=distinct_stimuli, pool=pool,
                                 batch_size=batch_size, device=device, amp=amp, layout=layout, progress=progress)
    patches = top_patches(
        model,
        data,
        chosen,
        labels=labels,
        batch_size=batch_size,
        patch_size=patch_size,
        field_method=field_method,
        amp=amp,
    )
    return next(iter(patches.values())) if isinstance(layer, str) else patches


def record_topk(
    model: nn.Module,
    data: Dataset | DataLoader | torch.Tensor,
    layer: str | Sequence[str],
    k: int = 9,
    bottom_k: int = 0,
    *,
    distinct_stimuli: bool = True,
    pool: Literal["max", "mean"] = "max",
    batch_size: int = 256,
    device: str | torch.device = "auto",
    amp: bool = False,
    layout: str = "auto",
    progress: bool = True,
) -> tuple[dict[str, TopKResult], np.ndarray]:
    """The streaming half of ``record_top_patches``: one pass that keeps each unit's top-k.

    Parameters are those of ``record_top_patches``. Returns ``({layer: probe.TopKResult}, labels)``;
    a module that runs several times per forward pass gives one entry per call (``name#k``) unless
    one call was asked for.
    """
    requested = [layer] if isinstance(layer, str) else list(layer)
    if not requested:
        raise ValueError("record_top_patches needs at least one layer name")
    modules = dict(model.named_modules())
    layers = list(dict.fromkeys(_module_name(name, modules) for name in requested))  # `name#k`: record its module
    calls_asked = {name for name in requested if _module_name(name, modules) != name}
    plain = [name for name in requested if name not in calls_asked]
    whole_modules = set(resolve_layers(model, plain)) if plain else set()  # all their calls are wanted
    n_stimuli = len(data.dataset if isinstance(data, DataLoader) else data)
    if max(k, bottom_k) > n_stimuli:
        raise ValueError(f"k={max(k, bottom_k)} is larger than the dataset ({n_stimuli} stimuli); pass k <= {n_stimuli}")
    recording = record(
        model,
        data,
        layers,
        reducers={"topk": lambda: TopK(k, bottom_k=bottom_k, distinct_stimuli=distinct_stimuli, pool=pool, layout=layout)},
        batch_size=batch_size,
        device=device,
        amp=amp,
        progress=progress,
    )
    recorded = recording.extras["topk"]
    # a module that ran once is recorded as `name`: `name#1` asks for it
    single = {f"{key}#1": key for key in recorded if key in modules}
    missing = [name for name in calls_asked if name not in recorded and name not in single]
    if missing:
        raise ValueError(f"layers {missing} were not recorded: the forward pass gave {list(recorded)}")
    asked = {single.get(name, name) for name in calls_asked}
    chosen = {
        key: result for key, result in recorded.items() if key in asked or _module_name(key, modules) in whole_modules
    }
    if isinstance(layer, str) and len(chosen) > 1:
        raise ValueError(
            f"layer {layer!r} stands for {len(chosen)} recorded layers (a module that runs several times per "
            f"forward pass is recorded per call); name one: {', '.join(map(repr, chosen))}"
        )
    return chosen, recording.labels


def _module_name(name: str, modules: dict[str, nn.Module]) -> str:
    """The module to record for a layer name: itself, or ``base`` of ``base#k`` (its k-th call)."""
    base, sep, call = name.rpartition("#")
    return base if name not in modules and sep and call.isdigit() and base in modules else name
