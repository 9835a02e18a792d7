"""Benchmark: ``analyses.receptive_field`` on residual networks at 224 px.

For torchvision's ResNet-18 and ResNet-50 (random weights: the geometry does not depend on them),
times ``receptive_field(model, layer, (3, 224, 224), method="auto")`` for layer1..layer4 and prints
each result (method, size, stride, start, map) with the machine's load average. Each layer is
timed ``--repeat`` times; the first call and the median of all are shown (the first call of a
model also pays for importing and warming torch.fx).

``--gradient`` also times ``method="gradient"`` (the float64 backward passes the "auto" method
used to fall back to for residual networks) on the listed layers, for comparison; it is slow, and
it refuses fields wider than the image on both sides (ResNet layer4 at 224 px).

Usage::

    python benchmarks/bench_receptive_field.py [--models resnet18 resnet50] [--repeat 3]
    python benchmarks/bench_receptive_field.py --models resnet18 --gradient layer1
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
import torchvision

from analyses import receptive_field

LAYERS = ("layer1", "layer2", "layer3", "layer4")


def _timed(model, layer, method):
    started = time.perf_counter()
    field = receptive_field(model, layer, (3, 224, 224), method=method)
    return time.perf_counter() - started, field


def _describe(field) -> str:
    return (
        f"{field.method:8s} size {field.size[0]:4d}  stride {field.stride[0]:2d}  start {field.start[0]:5d}  "
        f"map {field.map_shape[0]}x{field.map_shape[1]}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["resnet18", "resnet50"])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--gradient", nargs="*", default=[], metavar="LAYER", help="also time method='gradient' here")
    args = parser.parse_args()

    print(
        f"receptive_field at 224 px; torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{os.cpu_count()} CPUs, load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}"
    )
    for name in args.models:
        torch.manual_seed(0)
        model = getattr(torchvision.models, name)(weights=None).eval()
        print(f"\n{name}")
        for layer in LAYERS:
            times, field = [], None
            for _ in range(args.repeat):
                seconds, field = _timed(model, layer, "auto")
                times.append(seconds)
            print(
                f"  {layer:7s} auto      first {times[0] * 1e3:7.1f} ms  median {statistics.median(times) * 1e3:7.1f} ms  "
                f"{_describe(field)}"
            )
            if layer in args.gradient:
                started = time.perf_counter()
                try:
                    measured = _describe(_timed(model, layer, "gradient")[1])
                except ValueError as err:  # a field wider than the image on both sides cannot be measured
                    measured = f"refused: {str(err).split('(gradient: ')[-1].split(';')[0]}"
                seconds = time.perf_counter() - started
                print(f"  {layer:7s} gradient  {seconds:7.1f} s                          {measured}")
    print(f"\nload average at the end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
