"""Run a function on N local processes joined in a ``gloo`` process group, as ``torchrun`` would."""

from __future__ import annotations

import multiprocessing
import os
import socket
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def free_port() -> int:
    """A TCP port nobody listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _entry(rank: int, size: int, port: int, fn: Callable[..., Any], args: tuple, kwargs: dict, results: Any) -> None:
    os.environ.update(
        {"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(size),
         "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    )
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=size, timeout=timedelta(seconds=60))
    try:
        results.put((rank, fn(rank, *args, **kwargs)))
    finally:
        if dist.is_initialized():  # a job may have left the group itself (a CLI verb under torchrun does)
            dist.destroy_process_group()


START_METHOD = "forkserver"


def start_method() -> str:
    """``"forkserver"``: each worker forks from a server process that has imported torch and the toolkit once
    (and run nothing), so workers start in a fraction of a second, without forking this (threaded) process."""
    multiprocessing.set_forkserver_preload(["torch", "torch.distributed", "zoo", "probe", "analyses"])
    return START_METHOD


def run_ranks(fn: Callable[..., Any], size: int, *args: Any, **kwargs: Any) -> dict[int, Any]:
    """Call ``fn(rank, *args, **kwargs)`` on ``size`` new processes in one gloo group (as ``torchrun`` describes
    it in the environment); returns what each rank's call returned (picklable), by rank. Raises when any fails.

    ``fn`` must be importable (a module-level function).
    """
    method = start_method()
    results = mp.get_context(method).SimpleQueue()
    mp.start_processes(_entry, args=(size, free_port(), fn, args, kwargs, results), nprocs=size, join=True,
                       start_method=method)
    returned = {}
    while not results.empty():
        rank, value = results.get()
        returned[rank] = value
    return returned
