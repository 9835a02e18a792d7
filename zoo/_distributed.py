"""Running on ``torch.distributed``: which process this is, its share of the stimuli, and the few
collectives the toolkit needs.

Every function here works without a process group too: then there is one process, rank 0 of a
world of 1, whose shard is everything, and the collectives return their input. So code that
calls them runs unchanged under ``python`` and under ``torchrun --nproc-per-node N``.

When one rank decides or fails, the others must hear of it rather than wait in a collective that
rank will never reach: ``share_from_main``, ``main_first``, ``on_every_rank`` and ``any_rank`` raise
an error of any rank on every rank.

The toolkit does not start processes itself: ``torchrun`` (or ``torch.multiprocessing.spawn``)
does, and ``init_distributed`` joins the group it describes in the environment (``RANK``,
``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``, ``LOCAL_RANK``).
"""

from __future__ import annotations

import io
import os
import pickle
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist

__all__ = [
    "World",
    "all_gather_objects",
    "any_rank",
    "barrier",
    "broadcast_module",
    "broadcast_object",
    "close_distributed",
    "gather_torch_objects",
    "init_distributed",
    "main_first",
    "on_every_rank",
    "shard_range",
    "share_from_main",
    "single_process",
    "torchrun_group",
    "world",
]

T = TypeVar("T")

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


@contextmanager
def torchrun_group(device: str | torch.device = "auto") -> Iterator[World]:
    """Inside, this process is in the group ``torchrun`` describes (``init_distributed``), when there is
    one; it leaves the group at the end if it joined it here. Yields this process's ``World``."""
    joined = init_distributed(device)
    try:
        yield world()
    finally:
        if joined:
            close_distributed()


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


# -- deciding together -------------------------------------------------------------------------


def _portable(error: BaseException) -> tuple[Any, str]:
    """An error as (its class, its message), the class replaced by RuntimeError when it cannot be pickled."""
    try:
        pickle.dumps(type(error))
        kind: Any = type(error)
    except (pickle.PicklingError, AttributeError, TypeError):  # a class defined inside a function
        kind = RuntimeError
    return kind, str(error)


def _rebuilt(portable: tuple[Any, str], rank: int) -> BaseException:
    kind, message = portable
    try:
        error = kind(message)
    except TypeError:  # a class that takes more than a message
        error = RuntimeError(message)
    error.add_note(f"raised on rank {rank} of the distributed run; every rank stops with it")
    error.raised_on_rank = rank  # the rank that reports it (a CLI prints it there only)
    return error


def share_from_main(action: Callable[[], T]) -> T:
    """Run ``action`` on rank 0 alone and return its result on every rank (pickled to the others).

    An error that ``action`` raises on rank 0 is raised on every rank, so that none waits for a
    collective that rank 0 will never reach. In one process, ``action()``.
    """
    current = world()
    if not current.distributed:
        return action()
    if not current.is_main:
        status, payload = broadcast_object(None)
        if status == "error":
            raise _rebuilt(payload, 0)
        return payload
    try:
        result = action()
    except BaseException as err:
        broadcast_object(("error", _portable(err)))
        raise
    broadcast_object(("ok", result))
    return result


def main_first(action: Callable[[], T], then: Callable[[], T] | None = None) -> T:
    """Run ``action`` on rank 0, and once it succeeded ``then`` (default: ``action``) on the other ranks.

    For what rank 0 must check or prepare before the others read it (a checkpoint to validate, a
    dataset to download). An error on any rank is raised on every rank. Returns this rank's result.
    """
    current = world()
    if not current.distributed:
        return action()
    if current.is_main:
        try:
            result = action()
        except BaseException as err:
            broadcast_object(_portable(err))
            raise
        broadcast_object(None)
        return on_every_rank(lambda: result)
    failure = broadcast_object(None)
    if failure is not None:
        raise _rebuilt(failure, 0)
    return on_every_rank(then or action)


def on_every_rank(action: Callable[[], T]) -> T:
    """Run ``action`` on every rank; when it fails on any rank, every rank raises (the failing rank's own
    error there, a copy of the first failing rank's elsewhere), so that none waits for the others."""
    try:
        result = action()
    except BaseException as err:
        any_rank(err)
        raise
    any_rank(None)
    return result


def any_rank(error: BaseException | None) -> None:
    """Share whether this rank failed (``error``) and raise the first failing rank's error on the others.

    Every rank must call it; the rank whose ``error`` is given raises it itself afterwards.
    """
    outcomes = all_gather_objects(None if error is None else _portable(error))
    if error is not None:
        return
    for rank, outcome in enumerate(outcomes):
        if outcome is not None:
            raise _rebuilt(outcome, rank)
