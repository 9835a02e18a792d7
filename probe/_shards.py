"""The shards of a distributed recording: which stimuli each process records, and how far it got.

Under ``torch.distributed`` every process (rank) records a contiguous run of whole batches: the
batches ``0 .. n_batches - 1`` that one process would make are split with ``zoo.shard_range``, so a
rank's batches are exactly the batches of a one-process recording (the same stimuli in each),
and its rows land at their global indices in the one store.

Each rank of an on-disk recording keeps its own progress file, ``progress/rank-NNN.json``
(atomically rewritten at every flush, after its rows are synced): the stimulus its shard is safely
recorded up to, the stimuli it skipped and its float16 overflow counts. So a killed job resumes
every rank where that rank stopped. The manifest (rank 0's) lists the shards and the progress
files; the progress files are deleted when the recording completes. ``probe._store.ShardSink`` is the
writer of ranks 1 and up.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from zoo._distributed import shard_range
from zoo._io import atomic_write_json

__all__ = ["batch_shards", "progress_file", "read_progress", "shard_entries", "write_progress"]

PROGRESS_FOLDER = "progress"


def batch_shards(n_stimuli: int, batch_size: int, world_size: int) -> list[range]:
    """Each rank's stimuli: whole batches of ``batch_size``, split contiguously over the ranks.

    Raises
    ------
    ValueError
        When there are fewer batches than processes (a rank would record nothing).
    """
    n_batches = math.ceil(n_stimuli / batch_size)
    if n_batches < world_size:
        raise ValueError(
            f"{n_stimuli} stimuli in batches of {batch_size} make {n_batches} batches, fewer than the {world_size} "
            "processes; use a smaller batch_size or fewer processes (torchrun --nproc-per-node)"
        )
    shards = []
    for rank in range(world_size):
        batches = shard_range(n_batches, rank, world_size)
        shards.append(range(batches.start * batch_size, min(batches.stop * batch_size, n_stimuli)))
    return shards


def shard_entries(shards: list[range]) -> list[dict[str, int]]:
    """The manifest's description of the shards: ``[{"start", "stop"}, ...]`` in rank order."""
    return [{"start": shard.start, "stop": shard.stop} for shard in shards]


def progress_file(rank: int) -> str:
    """A rank's progress file, relative to the recording folder."""
    return f"{PROGRESS_FOLDER}/rank-{rank:03d}.json"


def read_progress(path: str | Path, rank: int, shard: range) -> dict[str, Any]:
    """A rank's progress: ``{"n_done", "skipped", "float16_overflow"}``; its shard's start when none was written.

    ``n_done`` is the global index of the first stimulus of the shard not yet safely on disk.
    """
    file = Path(path) / progress_file(rank)
    fresh = {"n_done": shard.start, "skipped": [], "float16_overflow": {}}
    if not file.is_file():
        return fresh
    try:
        progress = json.loads(file.read_text())
    except json.JSONDecodeError:
        return fresh  # written atomically, so this is damage from outside: record the shard again
    n_done = progress.get("n_done")
    if not isinstance(n_done, int) or not shard.start <= n_done <= shard.stop:
        return fresh
    return {
        "n_done": n_done,
        "skipped": [int(index) for index in progress.get("skipped", [])],
        "float16_overflow": dict(progress.get("float16_overflow", {})),
    }


def write_progress(path: str | Path, rank: int, n_done: int, skipped: list[int], overflow: dict[str, Any]) -> None:
    """Say (atomically) that this rank's shard is on disk up to stimulus ``n_done``."""
    file = Path(path) / progress_file(rank)
    file.parent.mkdir(exist_ok=True)
    atomic_write_json(file, {"rank": rank, "n_done": int(n_done), "skipped": list(skipped), "float16_overflow": overflow})
