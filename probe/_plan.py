"""A memory plan before a long recording: the bytes ``probe.record`` will hold on the device, in RAM and on disk.

``plan_recording`` runs one forward pass of the model on the first two stimuli to find each recorded
layer's output shape and layout (the machinery ``probe.record`` uses on its first batch), then works
out, per layer and per reducer, what a full recording of the dataset will hold. Nothing is recorded
and nothing is written. ``RecordingPlan.check`` refuses a plan that exceeds a budget, naming the layer
at which it crosses it and what to change.

Conventions (per process; see ``plan_recording`` for the details)
-----------------------------------------------------------------
- **disk**: the files an on-disk recording (``out``) writes: each layer's ``(n_stimuli, n_units)``
  array, the labels (int64) and the arrays of the reducers' results. ``.npy``/``.npz`` headers and
  the manifest (a few KiB) are left out.
- **RAM** (host memory): without ``out``, the recording's arrays (preallocated for every stimulus)
  and the reducers' results; with ``out``, what the engine keeps per batch on the host (the batch's
  stored rows; on CUDA two pinned buffers, for double buffering), the labels and the reducers'
  results.
- **device** (the model's device; host memory too when that is the CPU): per batch, the layer's raw
  output (float32) and its reduced rows, the projection matrix of a projected layer, and the
  reducers' running state. The model's weights and the activations it needs internally are not
  counted. Summing the layers gives an upper bound: the first batch holds every layer's output at
  once.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from probe._layers import LayerSelection, resolve_layers
from probe._layouts import Layout, batch_size_of, layer_layouts, trace_calls
from probe._record import STORED_DTYPES, _prepared, _reductions, _rows, _Source, _stated_layouts, _to_device
from probe._reducers import MomentsReducer, Reduction, rank_layout
from probe._topk import TopK
from zoo._device import resolve_device
from zoo._names import unknown_name_error
from zoo._reducer import MultiLayerReducer, Reducer

__all__ = ["MemoryBudgetError", "RecordingPlan", "format_bytes", "parse_size", "plan_recording"]

#: The row of a layer's stored arrays in ``RecordingPlan.to_frame`` (reducers' rows carry their name).
STORED = "stored rows"
LABELS = "labels"
_COLUMNS = ("device_bytes", "ram_bytes", "disk_bytes")
_FLOAT32 = 4
_INT64 = 8
_EXAMPLE_STIMULI = 2  # two stimuli tell outputs that lead with the batch from those that do not
_UNITS = {
    "": 1, "b": 1,
    "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
}
_SIZE = re.compile(r"\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([a-z]*)\s*", re.IGNORECASE)
# Keyword spelling: the command line shows it as flags (probe.cli._helpers.flag_spelling).
_ADVICE = (
    "keep fewer units (reduce=... 'spatial-mean', one per channel; or project=... N), store half the bytes "
    "(dtype=... 'float16'), record fewer layers, or write to a bigger disk (out=...)"
)


class MemoryBudgetError(ValueError):
    """A recording would hold more bytes than a stated budget (``RecordingPlan.check``)."""


# -- sizes in words ------------------------------------------------------------------------------
def parse_size(text: str | float) -> int:
    """Bytes of a size such as ``"8GiB"``, ``"500MB"``, ``"1.5e9"`` or ``2**30``.

    Units: B, kB/MB/GB/TB (powers of 1000) and KiB/MiB/GiB/TiB (powers of 1024), in any case.

    Raises
    ------
    ValueError
        For anything else, naming the accepted spellings.
    """
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        number, unit = float(text), ""
    else:
        match = _SIZE.fullmatch(str(text))
        if match is None or match.group(2).lower() not in _UNITS:
            raise ValueError(
                f"cannot read {text!r} as a size; write a number of bytes with an optional unit: 8GiB, 500MB, 1.5e9 "
                "(units B, kB, MB, GB, TB, KiB, MiB, GiB, TiB)"
            )
        number, unit = float(match.group(1)), match.group(2).lower()
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"a size must be a non-negative number of bytes, got {text!r}")
    return int(number * _UNITS[unit])


def format_bytes(n: float | None) -> str:
    """``1536`` -> ``"1.5 KiB"``; None (not known) -> ``"unknown"``."""
    if n is None or (isinstance(n, float) and math.isnan(n)):
        return "unknown"
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{int(n)} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


# -- the plan ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PlanRow:
    """Bytes one layer's stored rows, or one reducer of it, will take; None where not known."""

    layer: str
    item: str  # STORED, LABELS or the reducer's name
    device_bytes: int | None
    ram_bytes: int | None
    disk_bytes: int | None
    note: str = ""


@dataclass
class RecordingPlan:
    """What a recording will hold, per layer and per reducer (see the module docstring for the conventions).

    Attributes
    ----------
    rows
        One ``PlanRow`` per layer x (stored rows | reducer name), in recording order, then the labels.
    n_stimuli
        Stimuli of the whole dataset.
    batch_size, dtype, out, world_size
        As passed to ``plan_recording``.
    shapes
        Layer -> its raw output shape per stimulus.
    n_units
        Layer -> its stored units.
    """

    rows: list[PlanRow]
    n_stimuli: int
    batch_size: int
    dtype: str
    out: str | None
    world_size: int = 1
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    n_units: dict[str, int] = field(default_factory=dict)

    def to_frame(self) -> pd.DataFrame:
        """One row per layer x (stored rows | reducer); columns ``layer``, ``item``, ``device_bytes``,
        ``ram_bytes``, ``disk_bytes`` (nullable integers: missing where a reducer's size is unknown), ``note``."""
        frame = pd.DataFrame(
            [vars(row) for row in self.rows], columns=["layer", "item", *_COLUMNS, "note"]
        )
        for column in _COLUMNS:
            frame[column] = frame[column].astype("Int64")
        return frame

    @property
    def totals(self) -> dict[str, int]:
        """Known bytes summed over the rows: ``{"device_bytes", "ram_bytes", "disk_bytes"}``."""
        return {column: sum(getattr(row, column) or 0 for row in self.rows) for column in _COLUMNS}

    @property
    def unknown(self) -> list[str]:
        """``"layer: reducer"`` of the rows whose size is not known (never counted as 0 silently)."""
        return [f"{row.layer}: {row.item}" for row in self.rows if any(getattr(row, c) is None for c in _COLUMNS)]

    def check(self, max_ram: int | str | None = None, max_disk: int | str | None = None,
              max_device: int | str | None = None) -> None:
        """Refuse a plan that exceeds a budget (bytes, or sizes such as ``"8GiB"``).

        Raises
        ------
        MemoryBudgetError
            Naming the first layer, in recording order, at which the cumulative total crosses the
            budget, the bytes needed and the budget, and what to change.
        """
        for what, column, budget in (("RAM", "ram_bytes", max_ram), ("disk", "disk_bytes", max_disk),
                                     ("device memory", "device_bytes", max_device)):
            if budget is None:
                continue
            budget = parse_size(budget)
            layer = first_crossing(self.rows, column, budget)
            if layer is not None:
                raise MemoryBudgetError(budget_message(what, layer, self.totals[column], budget, self.unknown))

    def __str__(self) -> str:
        frame = self.to_frame()
        shown = pd.DataFrame({
            "layer": frame["layer"],
            "item": frame["item"],
            "device": [format_bytes(None if pd.isna(v) else v) for v in frame["device_bytes"]],
            "RAM": [format_bytes(None if pd.isna(v) else v) for v in frame["ram_bytes"]],
            "disk": [format_bytes(None if pd.isna(v) else v) for v in frame["disk_bytes"]],
            "note": frame["note"],
        })
        totals = self.totals
        where = f"on disk at {self.out}" if self.out is not None else "in memory"
        lines = [
            f"plan: {self.n_stimuli} stimuli x {len(self.n_units)} layers, {self.dtype}, batch {self.batch_size}, "
            f"recorded {where}" + (f", {self.world_size} processes (per process)" if self.world_size > 1 else ""),
            shown.to_string(index=False),
            (f"total: device {format_bytes(totals['device_bytes'])}, RAM {format_bytes(totals['ram_bytes'])}, "
             f"disk {format_bytes(totals['disk_bytes'])}"),
        ]
        if self.unknown:
            lines.append(f"not counted (unknown size): {', '.join(self.unknown)}")
        return "\n".join(lines)


def first_crossing(rows: list[PlanRow], column: str, budget: int, spent: int = 0) -> str | None:
    """The layer of the first row at which ``spent`` plus the running total of ``column`` exceeds ``budget``."""
    for row in rows:
        spent += getattr(row, column) or 0
        if spent > budget:
            return row.layer
    return None


def budget_message(what: str, layer: str, needed: int, budget: int, unknown: list[str]) -> str:
    """The refusal of a plan over budget: where it crosses, how much, and what to change."""
    message = (
        f"the recording needs {format_bytes(needed)} ({needed} bytes) of {what}, over the budget of "
        f"{format_bytes(budget)} ({budget} bytes); it crosses the budget at layer {layer!r}. To fit, {_ADVICE}"
    )
    if unknown:
        message += f" (not counted, size unknown: {', '.join(unknown)})"
    return message


# -- planning --------------------------------------------------------------------------------------
def plan_recording(
    model: nn.Module,
    data: Any,
    layers: LayerSelection,
    reduce: str | Reduction | Mapping[str, str | Reduction] = "auto",
    batch_size: int = 256,
    dtype: str = "float32",
    project: int | Mapping[str, int] | None = None,
    reducers: Mapping[str, Callable[[], Reducer | MultiLayerReducer]] | None = None,
    out: Any = None,
    world_size: int = 1,
    layout: str | Mapping[str, str] | None = None,
    *,
    device: str | torch.device | None = "auto",
) -> RecordingPlan:
    """The bytes ``probe.record(model, data, layers, ...)`` with these options will hold, without recording.

    One forward pass on the first two stimuli (on the model's current device, in eval mode; modes are
    restored) gives each layer's raw output shape and layout; the rest is arithmetic.

    Parameters
    ----------
    model, data, layers, reduce, batch_size, dtype, project, reducers, out, layout
        As ``probe.record`` takes them; ``out`` is only read to tell an on-disk recording from one in
        memory (nothing is written).
    world_size
        Processes of a distributed recording. In memory, every process ends with the whole
        recording, and while the ranks exchange their rows it also holds the others' rows as they
        arrive: counted as two copies of the recording per process (an upper bound). An on-disk
        recording's files are shared, so disk is the whole recording, written once. Reducers' state
        is per process (a ``TopK``'s pooled responses are indexed by the global stimulus index, so they
        stay full size).
    device
        Where ``probe.record`` will run (``"auto"``: CUDA when present): on CUDA the host keeps two
        pinned buffers of a batch's rows (double buffering) for an on-disk recording, one otherwise.

    Returns
    -------
    RecordingPlan
        Rows per layer (``"stored rows"``) and per reducer, then ``"labels"``; bytes per process.

    Notes
    -----
    The reducers ``probe.TopK``, ``probe.MomentsReducer`` and ``analyses.StreamingCKA`` are sized here
    from their attributes. Another reducer may define ``planned_bytes(layer_shape, n_stimuli) ->
    {"device": ..., "ram": ..., "disk": ...}`` (per layer; the result's bytes); without it, its row's
    sizes are unknown (listed, never counted as 0).

    Raises
    ------
    KeyError, ValueError
        As ``probe.record`` raises them before its first batch: unknown layers, bad options, a layer
        whose output does not lead with the batch or whose layout cannot be told.
    """
    if dtype not in STORED_DTYPES:
        raise unknown_name_error("stored dtype", dtype, STORED_DTYPES)
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"world_size must be a positive integer, got {world_size!r}")
    names = resolve_layers(model, layers)
    stated = _stated_layouts(layout, names)
    reductions = _reductions(reduce, project, 0, names, stated)
    n_stimuli = _Source(data, batch_size, 0, pin_memory=False).n_stimuli
    shapes, layouts = _traced_layers(model, data, names, stated, reductions)
    context = _Context(
        n_stimuli=n_stimuli,
        n_held=n_stimuli if world_size == 1 else 2 * n_stimuli,
        batch=min(batch_size, n_stimuli),
        itemsize=np.dtype(STORED_DTYPES[dtype][0]).itemsize,
        on_disk=out is not None,
        host_buffers=2 if resolve_device(device).type == "cuda" else 1,
        n_layers=len(shapes),
    )
    resolved = {name: reductions[name.split("#")[0]].resolve(shapes[name], layouts[name]) for name in shapes}
    n_units = {name: resolved[name].n_units(shapes[name]) for name in shapes}
    instances = {name: factory() for name, factory in (reducers or {}).items()}
    rows: list[PlanRow] = []
    for position, name in enumerate(shapes):
        rows.append(_stored_row(name, shapes[name], resolved[name], n_units[name], context))
        for reducer_name, reducer in instances.items():
            layer_shapes = list(shapes.values())[: position + 1]
            rows.append(_reducer_row(reducer_name, reducer, name, layer_shapes, layouts[name], context))
    rows.append(_labels_row(context))
    return RecordingPlan(rows, n_stimuli, batch_size, dtype, None if out is None else str(out), world_size,
                         shapes, n_units)


@dataclass(frozen=True)
class _Context:
    n_stimuli: int
    n_held: int  # rows a process holds in memory at its peak (two copies when the ranks exchange theirs)
    batch: int
    itemsize: int
    on_disk: bool
    host_buffers: int
    n_layers: int


def _example(data: Any) -> Any:
    """The first two stimuli (one when there is one) of any data ``probe.record`` takes."""
    x, _ = next(_Source(data, _EXAMPLE_STIMULI, 0, pin_memory=False).batches(0))
    return _rows(x, slice(0, _EXAMPLE_STIMULI))


def _model_device(model: nn.Module) -> torch.device:
    tensor = next(iter([*model.parameters(), *model.buffers()]), None)
    return torch.device("cpu") if tensor is None else tensor.device


def _traced_layers(
    model: nn.Module, data: Any, names: list[str], stated: dict[str, Layout | None], reductions: dict[str, Reduction]
) -> tuple[dict[str, tuple[int, ...]], dict[str, Layout | None]]:
    """Each recorded array's raw shape per stimulus and layout, named as ``probe.record`` names them
    (``name#k`` for a module called k times), in recording order."""
    device = _model_device(model)
    x = _to_device(_example(data), device)
    with _prepared(model, device), torch.no_grad():  # eval mode, as probe.record runs it; modes restored after
        calls = trace_calls(model, x)
    need = {name: reductions[name].mode != "flatten" for name in names}
    found = layer_layouts(calls, names, stated, batch_size_of(x), need)
    counts = {name: sum(1 for call in calls if call.name == name) for name in names}
    shapes: dict[str, tuple[int, ...]] = {}
    layouts: dict[str, Layout | None] = {}
    for name in names:
        for call in (call for call in calls if call.name == name):
            array = name if counts[name] == 1 else f"{name}#{call.call}"
            shapes[array] = tuple(call.output_shape[1:])
            layouts[array] = found.get((name, call.call))
    return shapes, layouts


def _stored_row(name: str, shape: tuple[int, ...], reduction: Reduction, n_units: int, context: _Context) -> PlanRow:
    """The bytes of a layer's stored rows: the recording's array, the host's batch buffers, the device's batch."""
    rows_bytes = n_units * context.itemsize
    batch_rows = context.batch * rows_bytes
    device = context.batch * (_product(shape) + n_units) * _FLOAT32
    note = ""
    n_reduced = reduction.n_reduced(shape)
    if reduction.project is not None and n_reduced > reduction.project:
        device += n_reduced * reduction.project * _FLOAT32
        note = f"projected {n_reduced} -> {reduction.project} units"
    if context.on_disk:
        return PlanRow(name, STORED, device, context.host_buffers * batch_rows, context.n_stimuli * rows_bytes, note)
    return PlanRow(name, STORED, device, context.n_held * rows_bytes, 0, note)


def _labels_row(context: _Context) -> PlanRow:
    """int64 labels: an array of every stimulus (in memory, as the rows) and, on disk, ``labels.npy``."""
    if context.on_disk:
        return PlanRow(LABELS, LABELS, 0, context.n_stimuli * _INT64, context.n_stimuli * _INT64)
    return PlanRow(LABELS, LABELS, 0, context.n_held * _INT64, 0)


def _reducer_row(reducer_name: str, reducer: Any, layer: str, layer_shapes: list[tuple[int, ...]],
                 layout: Layout | None, context: _Context) -> PlanRow:
    """The bytes of one reducer on one layer: its own ``planned_bytes``, a built-in's, or unknown."""
    shape = layer_shapes[-1]
    planned = getattr(reducer, "planned_bytes", None)
    if callable(planned):
        sizes = planned(shape, context.n_stimuli)
        return PlanRow(layer, reducer_name, *(_bytes_of(sizes, key) for key in ("device", "ram", "disk")))
    if isinstance(reducer, TopK):
        sized = _topk_bytes(reducer, shape, layout, context)
    elif isinstance(reducer, MomentsReducer):
        sized = _moments_bytes(reducer, shape, layout, context)
    elif type(reducer).__name__ == "StreamingCKA" and isinstance(reducer, MultiLayerReducer):
        sized = _streaming_cka_bytes(reducer, layer_shapes, context)
    else:
        return PlanRow(layer, reducer_name, None, None, None,
                       f"{type(reducer).__name__} has no planned_bytes(layer_shape, n_stimuli); its size is unknown")
    device, ram, saved, note = sized
    if device is None:
        return PlanRow(layer, reducer_name, None, None, None, note)
    return PlanRow(layer, reducer_name, device, ram, saved if context.on_disk else 0, note)


def _bytes_of(sizes: Mapping[str, Any], key: str) -> int | None:
    value = sizes.get(key) if isinstance(sizes, Mapping) else None
    return None if value is None else int(value)


def _topk_bytes(reducer: TopK, shape: tuple[int, ...], layout: Layout | None,
                context: _Context) -> tuple[int | None, int | None, int | None, str]:
    """Device: int64 keys (and int64 positions of distinct stimuli) of the k kept per unit, the pooled
    responses (float32, every stimulus) and a batch's candidates. Result (RAM): float32 values, int64
    stimuli and positions of the kept entries, and the pooled responses. Disk: none (an on-disk
    recording does not save a ``TopKResult``, which is not plain arrays)."""
    source = Layout.parse(reducer.layout) if reducer.layout != "auto" else layout
    if source is None:
        if len(shape) + 1 >= 4:
            return None, None, None, "the layer's layout cannot be told; TopK refuses it"
        source = rank_layout(len(shape) + 1)
    if source.is_map:
        spatial, n_units = source.map_shape(shape)
        n_positions = _product(spatial)
    elif source.kind == "tokens":
        n_units, n_positions = shape[-1], shape[0]
    else:
        n_units, n_positions = shape[-1] if shape else 1, 1
    kept = reducer.top_k + reducer.bottom_k
    pooled = context.n_stimuli * n_units * _FLOAT32 if reducer.keep_pooled else 0
    per_entry = 2 * _INT64 if reducer.distinct_stimuli else _INT64
    candidates = context.batch * (1 if reducer.distinct_stimuli else n_positions)
    device = n_units * kept * per_entry + pooled + n_units * (min(kept, context.n_stimuli) + candidates) * _INT64
    result = n_units * kept * (_FLOAT32 + 2 * _INT64) + pooled
    return device, result, 0, f"k={reducer.top_k}, bottom_k={reducer.bottom_k} of {n_units} units; not saved to disk"


def _moments_bytes(reducer: Any, shape: tuple[int, ...], layout: Layout | None,
                   context: _Context) -> tuple[int, int, int, str]:
    """Running mean (n_units) and scatter (n_units x n_units) in float64, and a batch's float64 copy and
    scatter; an on-disk recording saves the result's arrays (and the count, one int64)."""
    reduction = reducer.reduction.resolve(shape, layout)
    n_units = reduction.n_units(shape)
    state = (n_units + n_units * n_units) * 8
    device = 2 * state + context.batch * n_units * 8
    n_reduced = reduction.n_reduced(shape)
    if reduction.project is not None and n_reduced > reduction.project:
        device += n_reduced * reduction.project * _FLOAT32
    return device, state, state + _INT64, f"mean and covariance of {n_units} units (float64)"


def _streaming_cka_bytes(
    reducer: Any, layer_shapes: list[tuple[int, ...]], context: _Context
) -> tuple[int, int, int, str]:
    """The part of ``StreamingCKA``'s state that this (the last of ``layer_shapes``) layer adds: its mean
    and its cross-covariances with itself and the layers before it (exact), or its row of the HSIC
    sums (minibatch); plus a copy of its raw batch (multi-layer reducers are fed after the pass) and,
    in the result, its row of the similarity matrix (float64). Disk: none (a ``SimilarityMatrix`` is not
    saved by an on-disk recording)."""
    itemsize = torch.empty((), dtype=reducer.dtype).element_size()
    widths = [int(reducer.pool(torch.empty((1, *shape), device="meta")).shape[1]) for shape in layer_shapes]
    width, position = widths[-1], len(widths)
    raw_copy = context.batch * _product(layer_shapes[-1]) * _FLOAT32
    if reducer.estimator == "minibatch":
        state = position * itemsize + context.batch * context.batch * itemsize  # HSIC sums and this layer's Gram
        note = "minibatch HSIC sums"
    else:
        state = (width + width * sum(widths)) * itemsize
        note = f"cross-covariances of {width} units with {position} layers"
    return state + raw_copy, context.n_layers * 8, 0, note


def _product(shape: tuple[int, ...]) -> int:
    return int(np.prod(shape, dtype=np.int64)) if shape else 1
