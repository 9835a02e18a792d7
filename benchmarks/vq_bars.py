"""Train the VQ-VAE on Fashion-MNIST (digits when it is not installed) for a fixed time and check its bars.

Bars: the test reconstruction error clearly below the mean image's (ratio < 0.5); the codebook's
usage and perplexity on the test set are reported (a perplexity near 1 would mean collapse). The
wall time and the load average are printed, since the machine may be shared.

Usage::

    python benchmarks/vq_bars.py [--seconds 150] [--threads 1] [--batch-size 128] [--lr 2e-3]
"""

from __future__ import annotations

import argparse
import os
import time

import torch

import zoo
from zoo.models import vq_objective

RATIO_BAR = 0.5


def load_splits() -> tuple[str, object, object]:
    """Fashion-MNIST's train and test splits, or the digits' when Fashion-MNIST is missing."""
    try:
        return "fashion-mnist", zoo.load_dataset("fashion-mnist"), zoo.load_dataset("fashion-mnist", split="test")
    except FileNotFoundError:
        return "digits", zoo.load_dataset("digits"), zoo.load_dataset("digits", split="test")


def train_for(model: torch.nn.Module, train_set, seconds: float, batch_size: int, lr: float, seed: int) -> tuple[int, float]:
    """Adam on ``vq_objective`` in shuffled minibatches until ``seconds`` have passed; returns (steps, epochs)."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        order = torch.randperm(len(train_set), generator=generator)
        for batch in order.split(batch_size):
            images, labels = train_set.get_batch(batch)
            loss, metrics = vq_objective(model, images, labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            steps += 1
            if steps % 200 == 0:
                print(f"  step {steps}: " + ", ".join(f"{k} {float(v):.4f}" for k, v in metrics.items()), flush=True)
            if time.perf_counter() - start >= seconds:
                break
    return steps, steps * batch_size / len(train_set)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=150.0, help="training time budget")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 while the machine is shared)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    dataset, train_set, test_set = load_splits()
    model = zoo.create_model("vq-vae", input_shape=list(train_set.info.input_shape))
    print(f"vq-vae on {dataset}: {len(train_set)} train / {len(test_set)} test images, config {model.config}, "
          f"{sum(p.numel() for p in model.parameters())} parameters, {args.threads} thread(s)")
    start = time.perf_counter()
    steps, epochs = train_for(model, train_set, args.seconds, args.batch_size, args.lr, args.seed)
    train_seconds = time.perf_counter() - start
    metrics = model.eval().evaluate(train_set, test_set)
    total_seconds = time.perf_counter() - start

    print(f"\ntrained {steps} steps ({epochs:.2f} epochs) in {train_seconds:.1f} s; evaluation {total_seconds - train_seconds:.1f} s")
    print(f"test recon MSE {metrics['recon_mse']:.4f} vs mean image {metrics['mean_image_mse']:.4f}: "
          f"ratio {metrics['recon_ratio']:.3f} (bar < {RATIO_BAR}: {'PASS' if metrics['recon_ratio'] < RATIO_BAR else 'FAIL'})")
    print(f"test codebook usage {metrics['codebook_usage']:.3f} of {model.config['n_codes']} codes, "
          f"perplexity {metrics['perplexity']:.1f} (uniform use would give {model.config['n_codes']})")
    print(f"wall time {total_seconds:.1f} s; load average (1, 5, 15 min) {tuple(round(v, 2) for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
