"""The units analysis's top-k pass through the study's cache: the stimuli are recorded once.

The streaming pass over every stimulus that keeps each unit's running top-k (a ``probe.TopK``
recording) gives a few arrays per layer. They are stored in the cache folder under a key of the
model, the stimuli, the layer and the top-k options; a later run crops the patches from them
(``analyses.top_patches``: receptive fields and a re-check on the winners only) without recording
the stimuli again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from torch import nn

from probe import TopKResult
from probe.study._top_patches import record_topk
from zoo._io import atomic_write_bytes

__all__ = ["cached_topk"]

TOPK_CACHE_VERSION = 1
_ARRAYS = ("top_values", "top_stimulus", "top_position", "bottom_values", "bottom_stimulus", "bottom_position", "pooled",
           "unit_ids")


def _key(model_key: str, data_key: str, layer: str, options: dict[str, Any]) -> str:
    described = {"model": model_key, "data": data_key, "layer": layer, "options": options,
                 "version": TOPK_CACHE_VERSION}
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:24]


def _save(path: Path, topk: TopKResult, labels: np.ndarray) -> None:
    """One ``.npz`` per layer, written atomically: the arrays, the labels and the scalar fields."""
    fields = {f.name: getattr(topk, f.name) for f in dataclasses.fields(topk) if f.name not in _ARRAYS}
    fields["map_shape"] = list(fields["map_shape"])
    arrays = {name: getattr(topk, name) for name in _ARRAYS if getattr(topk, name) is not None}
    buffer = io.BytesIO()
    np.savez(buffer, labels=np.asarray(labels), fields=np.array(json.dumps(fields)), **arrays)
    atomic_write_bytes(path, buffer.getvalue())


def _load(path: Path) -> tuple[TopKResult, np.ndarray] | None:
    """The stored result, or None when the file is missing or unreadable (it is then recorded again)."""
    try:
        with np.load(path, allow_pickle=False) as stored:
            fields = json.loads(str(stored["fields"]))
            fields["map_shape"] = tuple(fields["map_shape"])
            arrays = {name: stored[name] for name in _ARRAYS if name in stored.files}
            labels = stored["labels"]
    except (OSError, ValueError, KeyError):
        return None
    return TopKResult(**fields, **arrays), labels


def cached_topk(
    folder: str | os.PathLike,
    model: nn.Module,
    stimuli: Any,
    layers: Sequence[str],
    *,
    model_key: str,
    data_key: str,
    k: int,
    bottom_k: int = 0,
    distinct_stimuli: bool = True,
    device: Any = "auto",
    progress: bool = True,
) -> tuple[dict[str, TopKResult], np.ndarray, list[str]]:
    """The top-k pass of ``record_topk(model, stimuli, layers, k, bottom_k)``, read from the cache where
    an earlier run stored it; the missing layers are recorded in one pass and stored.

    Parameters
    ----------
    folder
        The cache folder (``OUT/cache``); results go to ``folder / "topk"``.
    model, stimuli, layers, k, bottom_k, distinct_stimuli, device, progress
        As ``probe.study.record_topk``.
    model_key, data_key
        What identifies the model's weights and the stimuli (as for the recordings cache).

    Returns
    -------
    (dict, labels, list)
        ``{layer: probe.TopKResult}`` (a module that runs several times per forward pass gives one
        entry per call, ``name#k``; such a module is recorded again on every run), the stimuli's
        labels, and the layers whose top-k came from the cache.
    """
    options = {"k": k, "bottom_k": bottom_k, "pool": "max", "distinct_stimuli": bool(distinct_stimuli)}

    def path(layer: str) -> Path:
        return Path(folder) / "topk" / f"{_key(model_key, data_key, layer, options)}.npz"

    stored = {layer: _load(path(layer)) for layer in layers if path(layer).is_file()}
    stored = {layer: value for layer, value in stored.items() if value is not None}
    results = {layer: topk for layer, (topk, _) in stored.items()}
    labels = next(iter(stored.values()))[1] if stored else None
    missing = [layer for layer in layers if layer not in stored]
    if missing:
        recorded, labels = record_topk(model, stimuli, missing, k=k, bottom_k=bottom_k,
                                       distinct_stimuli=distinct_stimuli, device=device, progress=progress)
        for layer, topk in recorded.items():
            path(layer).parent.mkdir(parents=True, exist_ok=True)
            _save(path(layer), topk, labels)
        results.update(recorded)
    return results, np.asarray(labels), list(stored)
