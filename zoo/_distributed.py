"""Running on ``torch.distributed``: which process this is, its share of the stimuli, and the few
collectives the toolkit needs.

Every function here works without a process group too: then there is one process, rank 0 of a
world of 1, whose shard is everything, and the collectives return their input. So code that
calls them runs unchanged under ``python`` and under ``torchrun --nproc-per-node N``.

The toolkit does not start processes itself: ``torchrun`` (or ``torch.multiprocessing.spawn``)
does, and ``init_distributed`` joins the group it describes in the environment (``RANK``,
``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``, ``LOCAL_RANK``).
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

__all__ = [
    "World",
    "all_gather_objects",
    "barrier",
    "broadcast_module",
    "broadcast_object",
    "close_distributed",
    "gather_torch_objects",
    "init_distributed",
    "shard_range",
    "single_process",
    "world",
]

#: How long a collective waits for the other processes before failing (a rank that died).
DEFAULT_TIMEOUT = timedelta(minutes=30)


@dataclass(frozen=True)
class World:
    """This process's place among the processes of a run.

    Attributes
    ----------
    rank
        This process's index, 0 to ``size - 1``; rank 0 writes manifests, checkpoints and reports.
    size
        The number of processes (1 without a process group).
    local_rank
        The index among the processes on this machine (which GPU to use).
    """

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        """Whether more than one process takes part."""
        return self.size > 1

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0."""
        return self.rank == 0


_alone = False  # set by single_process()


def world() -> World:
    """The current process's ``World``: from the default process group when one is initialised, else one process.

    Inside ``single_process()`` it is one process whatever the group.
    """
    if not _alone and dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", dist.get_rank())))
    return World()


@contextmanager
def single_process() -> Iterator[None]:
    """Work on this rank alone: inside, ``world()`` is one process and the collectives here do nothing.

    For what rank 0 does by itself after the ranks have recorded together (a study's analyses and
    report), so that a recording made there is an ordinary one-process recording.
    """
    global _alone
    before, _alone = _alone, True
    try:
        yield
    finally:
        _alone = before


def init_distributed(device: str | torch.device = "auto", timeout: timedelta = DEFAULT_TIMEOUT) -> bool:
    """Join the process group that ``torchrun`` describes in the environment, when there is one.

    Parameters
    ----------
    device
        The device the run will use: ``"cuda"`` (or ``"auto"`` with CUDA present) picks the ``nccl``
        backend and this process's GPU (``LOCAL_RANK``); anything else picks ``gloo``.
    timeout
        How long a collective waits for the other processes.

    Returns
    -------
    bool
        True when this call initialised the group (the caller closes it with ``close_distributed``);
        False when there is no group to join (``WORLD_SIZE`` unset or 1) or one is already initialised.
    """
    if not dist.is_available() or dist.is_initialized() or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    missing = [name for name in ("RANK", "MASTER_ADDR", "MASTER_PORT") if name not in os.environ]
    if missing:
        raise RuntimeError(
            f"WORLD_SIZE is {os.environ['WORLD_SIZE']} but {', '.join(missing)} is not set; start distributed runs with "
            "`torchrun --nproc-per-node N ...`, which sets them"
        )
    cuda = torch.cuda.is_available() and str(device).split(":")[0] in ("auto", "cuda")
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend="nccl" if cuda else "gloo", timeout=timeout)
    return True


def close_distributed() -> None:
    """Leave the process group (without waiting for the others: rank 0 may still be writing a report alone)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def shard_range(n_items: int, rank: int, size: int) -> range:
    """The contiguous share of ``n_items`` that process ``rank`` of ``size`` takes.

    The first ``n_items % size`` ranks take one item more, so every item belongs to exactly one
    rank (none dropped, none repeated) and the shards, in rank order, are ``range(n_items)``.
    """
    if size < 1 or not 0 <= rank < size:
        raise ValueError(f"rank {rank} is not one of the {size} processes")
    base, extra = divmod(n_items, size)
    start = rank * base + min(rank, extra)
    return range(start, start + base + (1 if rank < extra else 0))


def barrier() -> None:
    """Wait for every process (nothing to wait for in one process)."""
    if world().distributed:
        dist.barrier()


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj`` (picklable), in rank order, on every rank; ``[obj]`` in one process."""
    current = world()
    if not current.distributed:
        return [obj]
    gathered: list[Any] = [None] * current.size
    dist.all_gather_object(gathered, obj)
    return gathered


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank (``obj`` itself in one process)."""
    if not world().distributed:
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=src)
    return holder[0]


def gather_torch_objects(obj: Any, device: str | torch.device = "cpu") -> list[Any]:
    """Like ``all_gather_objects`` for objects that hold tensors on any device (reducers).

    Each object is serialised with ``torch.save`` and loaded back onto ``device``, so that a CUDA
    tensor of one rank does not have to exist on another rank's GPU.
    """
    if not world().distributed:
        return [obj]
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    payloads = all_gather_objects(buffer.getvalue())
    return [torch.load(io.BytesIO(payload), map_location=device, weights_only=False) for payload in payloads]


def broadcast_module(module: torch.nn.Module, src: int = 0) -> None:
    """Give every rank rank ``src``'s parameters and buffers (as DistributedDataParallel does when it starts).

    For a model built without weights to load (an untrained architecture), whose random initial
    weights would otherwise differ from process to process.
    """
    if not world().distributed:
        return
    state = broadcast_object({name: tensor.detach().cpu() for name, tensor in module.state_dict().items()}
                             if world().rank == src else None, src=src)
    module.load_state_dict(state)
