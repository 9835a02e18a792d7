"""All-pairs maps for every similarity measure: 10 layers x 5,000 stimuli in one run (issue 16's speed bar).

The layers are those of a random-feature network on Fashion-MNIST (or digits, when Fashion-MNIST is not
installed): the pixels go through ``--layers`` ReLU layers of ``--width`` units with random Gaussian weights,
each layer recorded. ``analyses.measure_matrices`` prepares every layer once per measure and fills the
10 x 10 map from the pair step; the reference is the same map computed pair by pair with
``analyses.compare_representations`` (every layer prepared again for every pair), timed in the same run.

    .venv/bin/python benchmarks/measure_maps.py --stimuli 5000 --threads 2
    .venv/bin/python benchmarks/measure_maps.py --device cuda      # on a GPU

Prints, per measure: seconds for the map, seconds pair by pair, their ratio, the largest difference between
the two maps, and the load average.
"""

from __future__ import annotations

import argparse
import os
import resource
import time

import numpy as np
import torch

import zoo
from analyses import compare_representations, list_measures, measure_matrices


def random_feature_layers(images: np.ndarray, n_layers: int, width: int, seed: int) -> dict[str, np.ndarray]:
    """Each layer: ReLU of the previous one times a random Gaussian matrix (He scaling)."""
    rng = np.random.default_rng(seed)
    h = images.reshape(len(images), -1).astype(np.float64)
    h = (h - h.mean(0)) / (h.std(0) + 1e-8)
    layers = {}
    for i in range(n_layers):
        weights = rng.standard_normal((h.shape[1], width)) * np.sqrt(2.0 / h.shape[1])
        h = np.maximum(h @ weights, 0.0)
        layers[f"layer{i + 1}"] = h.astype(np.float32)
    return layers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stimuli", type=int, default=5000)
    parser.add_argument("--layers", type=int, default=10)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--measures", nargs="*", default=None, help="default: every measure")
    parser.add_argument("--no-reference", action="store_true", help="skip the pair-by-pair reference")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    available = {status.name for status in zoo.dataset_status() if status.available}
    name = "fashion-mnist" if "fashion-mnist" in available else "digits"
    dataset = zoo.load_dataset(name, split="test")
    n = min(args.stimuli, len(dataset))
    images = np.stack([np.asarray(dataset[i][0]) for i in range(n)])
    layers = random_feature_layers(images, args.layers, args.width, seed=0)
    if args.device != "cpu":
        layers = {k: torch.as_tensor(v, device=args.device) for k, v in layers.items()}
    measures = args.measures or list_measures()
    print(f"{args.layers} layers x {n} stimuli of {name}, {args.width} units each; {args.threads} threads; "
          f"device {args.device}; load average at start {os.getloadavg()[0]:.2f}")
    compare_representations(layers["layer1"][:300], layers["layer2"][:300], "procrustes")  # warm up the linear algebra
    total = 0.0
    print(f"{'measure':<14}{'map (s)':>10}{'pairwise (s)':>14}{'ratio':>8}{'max |diff|':>12}")
    for measure in measures:
        started = time.perf_counter()
        maps = measure_matrices(layers, [measure], progress=False, on_undefined="raise")
        seconds = time.perf_counter() - started
        total += seconds
        if args.no_reference:
            print(f"{measure:<14}{seconds:>10.2f}")
            continue
        names = list(layers)
        started = time.perf_counter()
        reference = np.array([[compare_representations(layers[a], layers[b], measure) if (
            not maps.measures[measure].symmetric or j >= i) else np.nan for j, b in enumerate(names)]
            for i, a in enumerate(names)])
        pairwise = time.perf_counter() - started
        upper = ~np.isnan(reference)
        difference = np.abs(maps[measure].values[upper] - reference[upper]).max()
        print(f"{measure:<14}{seconds:>10.2f}{pairwise:>14.2f}{pairwise / seconds:>8.1f}{difference:>12.1e}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"every measure: {total:.1f} s for the maps; peak RSS {peak:.2f} GiB; load average at end "
          f"{os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
