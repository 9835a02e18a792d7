"""What ``zoo.train`` needs to train under ``torch.distributed``: the objective wrapped for
``DistributedDataParallel``, each rank's slice of every batch and a gather that keeps gradients.
(How the ranks share rank 0's decisions and errors is in ``zoo._distributed``.)

In one process (no process group) every function here does what one process would: the slice
is the whole batch, the gather returns its input, and actions run where they are called.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset

from zoo._distributed import shard_range, world

__all__ = ["ObjectiveModule", "check_batch_fits_world", "gather_with_grad", "rank_batches", "wrap_for_ddp"]


class ObjectiveModule(nn.Module):
    """``objective(model, images, labels)`` as a module, so that ``DistributedDataParallel`` syncs the
    gradients of every parameter the objective uses, whichever model methods it calls (``project``,
    ``encode``, ...), not only those reached through ``model.forward``."""

    def __init__(self, model: nn.Module, objective: Callable[..., tuple[torch.Tensor, dict[str, torch.Tensor]]]):
        super().__init__()
        self.model = model
        self.objective = objective

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return self.objective(self.model, images, labels)


def wrap_for_ddp(model: nn.Module, objective: Callable, device: torch.device) -> nn.Module:
    """The objective of ``model`` wrapped in ``DistributedDataParallel`` (rank 0's weights are broadcast).

    The graph is declared static: an objective may leave parameters out of its loss (a part of the
    model it does not train), as long as it leaves out the same ones at every step, which spares
    ``find_unused_parameters``'s search of the graph at every step (and its warning when there is
    nothing to find). Rank 0's buffers (BatchNorm running statistics) are broadcast at every
    forward, as DDP does by default.
    """
    device_ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(ObjectiveModule(model, objective), device_ids=device_ids, static_graph=True)


def check_batch_fits_world(batch_size: int, n_items: int, size: int) -> None:
    """Refuse a (global) batch that cannot give every one of ``size`` processes at least one item.

    Raises
    ------
    ValueError
        Naming the batch size, the world size and the fix.
    """
    effective = min(batch_size, n_items)
    if effective < size:
        raise ValueError(
            f"batch_size={batch_size} on a training set of {n_items} items is smaller than the {size} processes, "
            f"so some would get no data; use batch_size >= {size} (a multiple of {size} gives every process an equal "
            "share) or fewer processes"
        )


def rank_batches(
    dataset: Dataset,
    batch_size: int,
    generator: torch.Generator,
    drop_last: bool,
    rank: int,
    size: int,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """This rank's contiguous slice of each shuffled batch that ``iterate_batches`` would yield.

    Every rank draws the same order from ``generator`` (seeded alike on every rank), cuts it into
    the same global batches, and takes ``shard_range(len(batch), rank, size)`` of each: the slices,
    in rank order, are the one-process batch. Only this rank's items are loaded.

    Parameters
    ----------
    dataset
        A dataset with ``get_batch(indices)`` (held in one tensor) or any map-style dataset.
    batch_size
        The global batch size (items per step over all ranks).
    generator
        Draws the order (as ``iterate_batches(..., shuffle=True, generator=generator)`` does).
    drop_last
        Skip a last, incomplete global batch (when the data hold at least one batch).
    rank, size
        This process and the number of processes.
    """
    for indices in _shuffled_index_batches(dataset, batch_size, generator, drop_last):
        share = shard_range(len(indices), rank, size)
        mine = indices[share.start : share.stop]
        if hasattr(dataset, "get_batch"):
            yield dataset.get_batch(mine)
            continue
        # A generator of its own, so that the loader does not draw from the global one (augmentations).
        for images, labels in DataLoader(dataset, batch_sampler=[mine.tolist()], generator=torch.Generator()):
            yield images, torch.as_tensor(labels).long()


def _shuffled_index_batches(dataset: Dataset, batch_size: int, generator: torch.Generator,
                            drop_last: bool) -> Iterator[torch.Tensor]:
    """The indices of the batches ``iterate_batches(dataset, ..., shuffle=True)`` yields, drawn from ``generator``
    as it draws them (for a dataset without ``get_batch``, through a DataLoader over the indices)."""
    n = len(dataset)
    drop = drop_last and n >= batch_size
    if hasattr(dataset, "get_batch"):
        order = torch.randperm(n, generator=generator)
        stop = n - n % batch_size if drop else n
        for start in range(0, stop, batch_size):
            yield order[start : start + batch_size]
        return
    yield from DataLoader(range(n), batch_size=batch_size, shuffle=True, generator=generator, drop_last=drop)


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Every rank's ``tensor`` concatenated along the first dimension, in rank order; ``tensor`` itself
    in one process.

    The gather is differentiable: the gradient that reaches this rank's rows is the sum, over ranks,
    of each rank's gradient with respect to them (as ``torch.distributed.nn.functional.all_gather``,
    deprecated in this torch, gives). Ranks may hold different numbers of rows (unequal batch
    slices). Every rank must call it, in the same order.
    """
    current = world()
    if not current.distributed:
        return tensor
    own_rows = torch.tensor([tensor.shape[0]], device=tensor.device)
    rows = [torch.zeros_like(own_rows) for _ in range(current.size)]
    dist.all_gather(rows, own_rows)
    return _GatherRows.apply(tensor, [int(count) for count in rows], current.rank)


class _GatherRows(torch.autograd.Function):
    """All ranks' rows, concatenated; backward sums the ranks' gradients and keeps this rank's rows."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor, counts: list[int], rank: int) -> torch.Tensor:
        ctx.start, ctx.stop = sum(counts[:rank]), sum(counts[: rank + 1])
        longest = max(counts)
        padded = tensor.new_zeros((longest, *tensor.shape[1:]))  # the collective needs equal shapes
        padded[: tensor.shape[0]] = tensor
        parts = [torch.empty_like(padded) for _ in counts]
        dist.all_gather(parts, padded.contiguous())
        return torch.cat([part[:count] for part, count in zip(parts, counts)])

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        total = grad.contiguous().clone()
        dist.all_reduce(total)
        return total[ctx.start : ctx.stop], None, None
