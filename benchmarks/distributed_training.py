"""Distributed training: one model trained by 1 process and by 2 processes (DDP, gloo, CPU), same seed.

Both runs start in fresh processes (``torch.multiprocessing.spawn``), one CPU thread each, so the
2-process run uses two cores where the 1-process run uses one. Printed: each run's test accuracy
and their difference in points, each run's training wall time (``zoo.train`` alone) and the time
with process start-up, the 1-process / 2-process ratio, and the load average before and after
(timings on a shared machine depend on what else runs).

The default (``cnn`` of width 8 on Fashion-MNIST, or digits when it is not installed, 2 epochs of
batches of 128) takes about 3 minutes on 2 free cores. The two runs differ where distributed
training differs from one process: the model's BatchNorm normalises each process's half batch
with its own statistics, and its dropout draws per process (see ``zoo.train``).

Run: ``.venv/bin/python benchmarks/distributed_training.py [--dataset digits] [--epochs 2] [--set width=8]``
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import zoo

DEFAULT_SETTINGS = {"width": 8, "hidden": 64, "batch_size": 128}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _worker(rank: int, size: int, port: int, queue, train_kwargs: dict) -> None:
    torch.set_num_threads(1)
    if size > 1:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        dist.init_process_group("gloo", rank=rank, world_size=size, timeout=timedelta(minutes=5))
    try:
        started = time.perf_counter()
        result = zoo.train(**train_kwargs)
        seconds = time.perf_counter() - started
    finally:
        if size > 1:
            dist.destroy_process_group()
    if rank == 0:
        queue.put({"metrics": result.metrics, "train_seconds": seconds, "epoch_seconds": list(result.history["seconds"])})


def run(size: int, train_kwargs: dict) -> dict:
    """Train in ``size`` fresh processes; rank 0's metrics, its ``zoo.train`` time and the time with start-up."""
    queue = mp.get_context("spawn").SimpleQueue()
    started = time.perf_counter()
    mp.spawn(_worker, args=(size, _free_port(), queue, train_kwargs), nprocs=size, join=True)
    return {**queue.get(), "total_seconds": time.perf_counter() - started}


def _default_dataset() -> str:
    available = {status.name for status in zoo.dataset_status() if status.available}
    return "fashion-mnist" if "fashion-mnist" in available else "digits"


def _setting(text: str) -> tuple[str, object]:
    key, _, value = text.partition("=")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="cnn")
    parser.add_argument("--dataset", default=None, help="default: fashion-mnist when installed, else digits")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-every", type=int, default=None,
                        help="evaluate every this many epochs (default: after the last one only; rank 0 evaluates "
                        "alone, so evaluations add the same time to both runs)")
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                        help=f"model or training setting (default: {DEFAULT_SETTINGS})")
    args = parser.parse_args()
    settings = {**DEFAULT_SETTINGS, **dict(_setting(text) for text in args.settings)}
    dataset = args.dataset or _default_dataset()
    print(f"{args.model} on {dataset}, {args.epochs} epochs, seed {args.seed}, {settings}")
    print(f"load average before: {os.getloadavg()}")
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        for size in (1, 2):
            train_kwargs = {"model_name": args.model, "dataset": dataset, "out": str(Path(folder) / f"{size}-process"),
                            "epochs": args.epochs, "seed": args.seed, "device": "cpu", "progress": False,
                            "eval_every": args.eval_every or args.epochs, **settings}
            results[size] = run(size, train_kwargs)
            metrics = results[size]["metrics"]
            figures = ", ".join(f"{key}={value:.4f}" for key, value in metrics.items() if isinstance(value, float))
            epochs = ", ".join(f"{seconds:.1f}" for seconds in results[size]["epoch_seconds"])
            print(f"{size} process{'es' if size > 1 else ''}: {figures}; train {results[size]['train_seconds']:.1f} s "
                  f"({results[size]['total_seconds']:.1f} s with start-up; epochs, with their evaluation: {epochs} s)")
    for name in ("test_accuracy", "knn_accuracy"):
        one, two = results[1]["metrics"].get(name), results[2]["metrics"].get(name)
        if one is not None and two is not None:
            print(f"{name}: 1 process {one:.4f}, 2 processes {two:.4f}, difference {100 * (two - one):+.2f} points")
    ratio = results[1]["train_seconds"] / results[2]["train_seconds"]
    print(f"train time 1 process / 2 processes: {ratio:.2f}x")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
