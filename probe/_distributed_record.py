"""``probe.record`` under ``torch.distributed``: the steps where the ranks of one recording meet.

Each rank records its shard of whole batches (``probe._shards.batch_shards``) through its own
hooks and reducers. They meet four times:

1. **Opening** (``open_sink``): rank 0 opens, resumes or refuses the on-disk recording and tells
   the others; they then open their writers (``probe._store.ShardSink``). A refusal on any rank
   is raised on every rank, so that none waits for the others.
2. **The first batch** (``check_layers``): every rank has found the same layers, shapes and
   reductions, and rank 0 has created the layer files before the others open them.
3. **The end** (``merge_reducers``): every rank's reducers are gathered and folded, in rank order,
   with ``Reducer.merge``, so that every rank holds the reducers of the whole dataset.
4. **Completion** (``finish``): in memory, every rank receives the rows of the others; on disk,
   every rank syncs its rows, then rank 0 writes the extras, checksums and the complete manifest.

A recording in memory is returned on every rank; one on disk is loaded from the store on every rank.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from probe._store import MANIFEST, DiskSink, MemorySink, ShardSink, flushed_stimuli
from zoo._distributed import (
    World,
    all_gather_objects,
    barrier,
    gather_torch_objects,
    on_every_rank,
    share_from_main,
)
from zoo._reducer import MultiLayerReducer, Reducer

__all__ = ["check_layers", "check_mergeable", "check_same_everywhere", "finish", "merge_reducers", "open_sink"]


def open_sink(
    out: Any,
    identity: dict[str, Any],
    *,
    resume: bool,
    overwrite: bool,
    shards: list[range],
    current: World,
    with_reducers: bool,
    pending: Callable[[Callable[[], Any]], Any],
) -> Any | None:
    """Open this rank's sink of an on-disk distributed recording.

    Rank 0 opens, resumes or refuses the recording (a refusal is raised on every rank); the others then
    open their writers (a failure on any rank is raised on every rank).

    Returns
    -------
    The sink (a ``pending`` wrapper of it for a new recording, so that nothing is written before
    the first batch), or None when ``out`` already holds this complete recording.
    """
    opened: list[Any] = []  # rank 0's sink, kept here while the others hear what rank 0 found

    def open_on_rank0() -> str:
        if overwrite or not (Path(out) / MANIFEST).is_file():
            opened.append(pending(lambda: DiskSink(out, identity, resume=resume, overwrite=overwrite, shards=shards)))
            return "new"
        sink = DiskSink(out, identity, resume=resume, overwrite=overwrite, shards=shards)
        opened.append(sink)
        if sink.complete_existing:
            return "complete"
        if with_reducers and flushed_stimuli(out, sink.manifest):
            sink.close()
            raise ValueError(
                "resume cannot continue custom reducers (their state was not saved); record again with "
                "overwrite=True, or resume without reducers="
            )
        return "resume"

    state = share_from_main(open_on_rank0)
    if state == "complete":
        if current.is_main:
            opened[0].close()
        barrier()
        return None
    sink = None

    def open_mine() -> Any:
        nonlocal sink
        if current.is_main:
            sink = opened[0]
        else:
            shard = shards[current.rank]
            sink = pending(lambda: ShardSink(out, current.rank, shard)) if state == "new" else ShardSink(out, current.rank, shard)
        return sink

    try:
        return on_every_rank(open_mine)
    except BaseException:
        if isinstance(sink, (DiskSink, ShardSink)):
            sink.close()
        raise


def check_layers(layers: dict[str, dict[str, Any]]) -> None:
    """Every rank found rank 0's layers; returns once rank 0 has created their files (a collective)."""
    found = all_gather_objects(layers)
    different = [rank for rank, other in enumerate(found) if other != found[0]]
    if different:
        raise ValueError(
            f"ranks {different} found other layers, shapes or reductions than rank 0 on their first batch; every "
            "process must record the same model on stimuli of the same shape"
        )


def check_mergeable(reducer: Reducer | MultiLayerReducer, name: str) -> None:
    """Refuse, before the pass, a reducer that cannot fold the shards of a distributed recording."""
    base = Reducer if isinstance(reducer, Reducer) else MultiLayerReducer
    if type(reducer).merge is base.merge:
        raise ValueError(
            f"reducers[{name!r}] ({type(reducer).__name__}) has no merge(other), so the shards of a distributed "
            "recording cannot be combined; define merge (see probe.Reducer.merge) or record in one process"
        )


def merge_reducers(
    per_layer: dict[str, dict[str, Reducer]], multi: dict[str, MultiLayerReducer], device: torch.device
) -> None:
    """Replace every rank's reducers, in place, by the fold of all ranks' (in rank order, the same on every rank)."""
    for reducers in per_layer.values():
        gathered = gather_torch_objects(reducers, device)
        for layer in reducers:
            merged = gathered[0][layer]
            for other in gathered[1:]:
                merged.merge(other[layer])
            reducers[layer] = merged
    for name, reducer in multi.items():
        gathered = gather_torch_objects(reducer, device)
        merged = gathered[0]
        for other in gathered[1:]:
            merged.merge(other)
        multi[name] = merged


def _merged_overflow(counts: list[dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Per layer, the float16 overflow of every rank together (counts summed, the largest magnitude kept)."""
    merged: dict[str, dict[str, Any]] = {}
    for per_rank in counts:
        for layer, entry in per_rank.items():
            total = merged.setdefault(layer, {"count": 0, "largest": None})
            total["count"] += int(entry.get("count", 0))
            if entry.get("largest") is not None:
                total["largest"] = max(total["largest"] or 0.0, float(entry["largest"]))
    return merged


def finish(sink: MemorySink | DiskSink | ShardSink, shard: range, extras: dict[str, Any]) -> None:
    """Complete a distributed recording: every rank's rows (in memory) or the manifest (on disk)."""
    gathered = all_gather_objects((list(sink.skipped), sink.float16_overflow))
    sink.skipped = sorted(index for skipped, _ in gathered for index in skipped)
    sink.float16_overflow = _merged_overflow([overflow for _, overflow in gathered])
    if isinstance(sink, MemorySink):
        _share_rows(sink, shard)
        return
    on_every_rank(lambda: sink.flush(shard.stop))  # every rank's rows are on disk from here on
    share_from_main(lambda: sink.finish(extras))  # rank 0 writes the extras, checksums and the complete manifest


def _share_rows(sink: MemorySink, shard: range) -> None:
    """Give every rank's in-memory recording the rows and labels that the other ranks recorded."""
    mine = ({name: array[shard.start : shard.stop] for name, array in sink.arrays.items()}, sink.labels[shard.start : shard.stop])
    for (start, stop), (rows, labels) in all_gather_objects(((shard.start, shard.stop), mine)):
        for name, part in rows.items():
            sink.arrays[name][start:stop] = part
        sink.labels[start:stop] = np.asarray(labels)


def check_same_everywhere(model: dict[str, Any], dataset: dict[str, Any]) -> None:
    """Refuse, on every rank, a recording whose processes hold other weights or other stimuli than rank 0's."""
    found = all_gather_objects((model, dataset))
    for rank, (other_model, other_dataset) in enumerate(found[1:], start=1):
        if other_model != found[0][0]:
            raise ValueError(
                f"rank {rank} holds another model than rank 0 (other weights or layers), so its shard would not be "
                "recorded from the same network; load the same checkpoint on every process, or seed the model's "
                "construction alike (torch.manual_seed before building it)"
            )
        if other_dataset != found[0][1]:
            raise ValueError(
                f"rank {rank} holds other stimuli than rank 0 (another dataset, seed or order); every process must "
                "pass the same data to probe.record, which gives each its share"
            )
