"""Benchmark of the streaming top-k pass (``probe.TopK`` through ``probe.record``).

Throughput (default): the top-k pass against the bare forward pass of the same model over the same
stimuli, measured alternately in one process; prints the ratio (bar: top-k throughput >= 0.8x bare,
i.e. top-k pass time <= 1.25x bare forward time). The recording engine's own pass (no top-k) is
shown too, to separate its overhead from the reducer's.

``--peak-ram``: a top-k pass over 50,000 synthetic stimuli generated on the fly; prints the peak
resident memory before and after, and the size the full activation maps would have had.

Examples
--------
    python benchmarks/bench_patches.py --model cnn --input 3,32,32 --layer features.relu2
    python benchmarks/bench_patches.py --peak-ram
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time

import torch
from torch.utils.data import Dataset

import probe
import zoo
from analyses._receptive_field import _run_to_layer


class SyntheticStimuli(Dataset):
    """Seeded random images made on access, so that the dataset itself holds no memory."""

    def __init__(self, n: int, shape: tuple[int, ...], seed: int = 0):
        self.n, self.shape, self.seed = n, shape, seed

    def __len__(self) -> int:
        return self.n

    def get_batch(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + int(indices[0]))
        return torch.randn((len(indices), *self.shape), generator=generator), torch.full((len(indices),), -1)

    def __getitem__(self, index: int):
        images, labels = self.get_batch(torch.tensor([index]))
        return images[0], int(labels[0])


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


def _bare(model, x, batch_size, device) -> float:
    started = time.perf_counter()
    with torch.inference_mode():
        for batch in x.split(batch_size):
            model(batch.to(device))
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started


def _recorded(model, x, layer, batch_size, device, with_topk: bool) -> float:
    reducers = {"topk": lambda: probe.TopK(9, bottom_k=9)} if with_topk else None
    started = time.perf_counter()
    probe.record(model, x, layer, reducers=reducers, batch_size=batch_size, device=device, progress=False)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started


def throughput(args: argparse.Namespace) -> None:
    device = zoo.resolve_device(args.device)
    shape = tuple(int(s) for s in args.input.split(","))
    model = zoo.create_model(args.model, input_shape=list(shape)).to(device).eval()
    x = torch.randn((args.n, *shape), generator=torch.Generator().manual_seed(0))
    layer = args.layer
    _bare(model, x[: args.batch_size], args.batch_size, device)  # warm-up
    _recorded(model, x[: args.batch_size], layer, args.batch_size, device, True)
    times = {"bare forward": [], "record (no top-k)": [], "record + top-k": []}
    for _ in range(args.repeats):
        times["bare forward"].append(_bare(model, x, args.batch_size, device))
        times["record (no top-k)"].append(_recorded(model, x, layer, args.batch_size, device, False))
        times["record + top-k"].append(_recorded(model, x, layer, args.batch_size, device, True))
    bare = statistics.median(times["bare forward"])
    print(f"model {args.model} input {shape} layer {layer} n={args.n} batch={args.batch_size} device={device}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"  {name:<20} {median:7.3f} s  {args.n / median:9.0f} stimuli/s  throughput ratio vs bare {bare / median:.3f}")
    ratio = bare / statistics.median(times["record + top-k"])
    print(f"top-k throughput / bare forward throughput = {ratio:.3f}  (bar >= 0.8: {'PASS' if ratio >= 0.8 else 'FAIL'})")


def peak_ram(args: argparse.Namespace) -> None:
    device = zoo.resolve_device(args.device)
    shape = tuple(int(s) for s in args.input.split(","))
    model = zoo.create_model(args.model, input_shape=list(shape)).to(device).eval()
    data = SyntheticStimuli(args.n, shape)
    with torch.inference_mode():
        layer_shape = tuple(_run_to_layer(model, args.layer, torch.zeros((1, *shape), device=device)).shape[1:])
    full_bytes = args.n * torch.Size(layer_shape).numel() * 4
    before = _peak_rss_mib()
    started = time.perf_counter()
    recording = probe.record(
        model, data, args.layer, reducers={"topk": lambda: probe.TopK(9, bottom_k=9)}, batch_size=args.batch_size,
        device=device, progress=not args.no_progress,
    )  # fmt: skip
    seconds = time.perf_counter() - started
    after = _peak_rss_mib()
    result = recording.extras["topk"][args.layer]
    print(f"model {args.model} layer {args.layer} output {layer_shape}, {args.n} stimuli in {seconds:.1f} s")
    print(f"  peak RSS before the pass {before:8.1f} MiB, after {after:8.1f} MiB (growth {after - before:.1f} MiB)")
    print(f"  kept: top/bottom-9 per unit {result.top_values.shape} + pooled {result.pooled.shape} "
          f"({result.pooled.nbytes / 2**20:.1f} MiB)")  # fmt: skip
    print(f"  the full activation maps would take {full_bytes / 2**20:.0f} MiB")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="cnn", help="zoo model name (default: cnn)")
    parser.add_argument("--input", default="3,32,32", help="input shape C,H,W (default: 3,32,32)")
    parser.add_argument("--layer", default="features.relu2", help="layer to rank (default: features.relu2)")
    parser.add_argument("--n", type=int, default=None, help="stimuli (default: 2048; 50,000 with --peak-ram)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--peak-ram", action="store_true", help="measure peak memory over 50,000 stimuli")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    if args.peak_ram:
        args.n = args.n or 50_000
        peak_ram(args)
    else:
        args.n = args.n or 2048
        throughput(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
