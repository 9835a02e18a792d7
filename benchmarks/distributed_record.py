"""Distributed recording at scale on the CPU: a synthetic dataset of up to 200,000 stimuli through a small
network, recorded to disk by 1 and by 2 gloo processes (one thread each).

Prints, per run: stimuli per process, wall time, throughput per process and in total, peak RSS per process
(``ru_maxrss``, which includes importing torch), and the scaling from 1 to 2 processes measured in the same
invocation; checks that the 2-process store equals the 1-process store bit for bit; and shows that peak RSS
per process stays flat as the number of stimuli grows (the rows go to disk as they are made).

    .venv/bin/python benchmarks/distributed_record.py                 # 50,000 and 200,000 stimuli
    .venv/bin/python benchmarks/distributed_record.py --sizes 20000   # a quick run
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from _spawn import run_ranks

import probe
import zoo
from probe._shards import batch_shards

LAYERS = ["1", "4", "7", "9"]


class SyntheticStimuli(Dataset):
    """``n`` deterministic 1x16x16 stimuli made on demand (nothing held in memory), with 10 labels."""

    def __init__(self, n: int):
        self.n = n
        grid = torch.linspace(0, 1, 16)
        self.y, self.x = torch.meshgrid(grid, grid, indexing="ij")

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int):
        frequency, phase = 1 + (index % 97) / 10, (index % 89) / 14
        image = torch.sin(2 * torch.pi * frequency * (self.x * np.cos(phase) + self.y * np.sin(phase)))
        return image[None], index % 10


def network() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.ReLU(), nn.Linear(512, 64), nn.Linear(64, 10),
    ).eval()


def _record(rank: int, n: int, out: str, report: str) -> None:
    torch.set_num_threads(1)
    network()  # built once before, so that the baseline holds what every process holds anyway
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    started = time.perf_counter()
    recording = probe.record(network(), SyntheticStimuli(n), LAYERS, batch_size=256, device="cpu", out=out,
                             reducers={"moments": probe.MomentsReducer}, progress=False)
    seconds = time.perf_counter() - started
    world = zoo.world()
    shard = len(batch_shards(recording.n_stimuli, 256, world.size)[world.rank])
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    Path(f"{report}-rank{rank}.json").write_text(json.dumps({"seconds": seconds, "stimuli": shard, "peak_rss": peak, "baseline_rss": baseline}))


def run(n: int, processes: int, folder: Path) -> list[dict]:
    out, report = folder / f"store-{n}-{processes}", folder / f"report-{n}-{processes}"
    # Both start the same way: forked from a server that has imported torch and the toolkit (a process of
    # its own, so that its peak RSS is not inherited from this one's, as a spawned child's is across exec).
    run_ranks(_record, processes, n, str(out), str(report))
    return [json.loads(Path(f"{report}-rank{rank}.json").read_text()) for rank in range(processes)]


def same_stores(a: Path, b: Path) -> bool:
    one, two = probe.Recording.load(a, verify=False), probe.Recording.load(b, verify=False)
    return all(np.array_equal(one[layer], two[layer]) for layer in one.layers) and np.array_equal(one.labels, two.labels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[50_000, 200_000])
    parser.add_argument("--folder", default=None, help="where the stores go (default: a temporary folder, removed)")
    args = parser.parse_args()
    folder = Path(args.folder or tempfile.mkdtemp(prefix="distributed-record-"))
    folder.mkdir(parents=True, exist_ok=True)
    print(f"load average before: {os.getloadavg()}")
    rows = []
    try:
        for n in args.sizes:
            results = {processes: run(n, processes, folder) for processes in (1, 2)}
            one_total = results[1][0]["stimuli"] / results[1][0]["seconds"]
            two_total = sum(r["stimuli"] for r in results[2]) / max(r["seconds"] for r in results[2])
            identical = same_stores(folder / f"store-{n}-1", folder / f"store-{n}-2")
            for processes, per_rank in results.items():
                for rank, r in enumerate(per_rank):
                    rows.append((n, processes, rank, r["stimuli"], r["seconds"], r["stimuli"] / r["seconds"], r["peak_rss"],
                                 r["baseline_rss"]))
            print(f"{n:>8,} stimuli: 1 process {one_total:,.0f} stimuli/s, 2 processes {two_total:,.0f} stimuli/s "
                  f"in total: scaling x{two_total / one_total:.2f}; stores bit-identical: {identical}; "
                  f"load average {os.getloadavg()[0]:.2f}")
            for processes in (1, 2):
                shutil.rmtree(folder / f"store-{n}-{processes}", ignore_errors=True)
    finally:
        if args.folder is None:
            shutil.rmtree(folder, ignore_errors=True)
    print("\npeak RSS: the process's maximum; baseline: before recording (torch, the toolkit and the model imported)")
    print(f"{'stimuli':>9} {'procs':>5} {'rank':>4} {'its share':>9} {'seconds':>8} {'stimuli/s':>10} {'peak RSS':>9} "
          f"{'baseline':>9} {'growth':>8}")
    for n, processes, rank, share, seconds, rate, peak, baseline in rows:
        print(f"{n:>9,} {processes:>5} {rank:>4} {share:>9,} {seconds:>8.1f} {rate:>10,.0f} {peak / 2**20:>5.0f} MiB "
              f"{baseline / 2**20:>5.0f} MiB {(peak - baseline) / 2**20:>4.0f} MiB")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
