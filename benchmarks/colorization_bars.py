"""Train the colorization pretext model on photo crops for a fixed time; its ab error and a linear probe.

Prints the test ab error (mean Euclidean error per pixel in Lab units) beside that of predicting grey
(ab = 0): a ratio below 1 is better than grey. Then a linear probe of the pooled trunk features
(``encode``) on which photograph a crop comes from (the photos dataset's labels: 16 photographs, train
crops from the left 80 % of each, test crops from the right 20 %), beside the same probe on the same
network untrained (random weights). The wall time and the load average are printed, since the machine
may be shared. Needs scikit-image (the photographs) and scikit-learn (the probe).

Usage::

    python benchmarks/colorization_bars.py [--seconds 170] [--threads 1] [--crop 32] [--n-crops 4000]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

import zoo
from zoo.models import colorization_objective


def train_for(model: torch.nn.Module, train_set, seconds: float, batch_size: int, lr: float, seed: int) -> tuple[int, float]:
    """AdamW on ``colorization_objective`` in shuffled minibatches until ``seconds`` have passed, with the
    learning rate decaying linearly in time to 10 %; returns (steps, epochs)."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for batch in torch.randperm(len(train_set), generator=generator).split(batch_size):
            elapsed = time.perf_counter() - start
            if elapsed >= seconds:
                break
            for group in optimizer.param_groups:
                group["lr"] = lr * (1 - 0.9 * elapsed / seconds)
            images, labels = train_set.get_batch(batch)
            loss, metrics = colorization_objective(model, images, labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            steps += 1
            if steps % 100 == 0:
                print(f"  step {steps}: loss {float(loss.detach()):.3f}, ab_error {float(metrics['ab_error']):.2f}", flush=True)
    return steps, steps * batch_size / len(train_set)


@torch.no_grad()
def features(model: torch.nn.Module, dataset) -> tuple[np.ndarray, np.ndarray]:
    model.eval()
    images, labels = dataset.get_batch(torch.arange(len(dataset)))
    return torch.cat([model.encode(chunk) for chunk in images.split(512)]).numpy(), labels.numpy()


def probe_accuracy(model: torch.nn.Module, train_set, test_set) -> float:
    """Test accuracy of a logistic regression (C = 1) on standardised pooled features."""
    train_x, train_y = features(model, train_set)
    test_x, test_y = features(model, test_set)
    scaler = StandardScaler().fit(train_x)
    probe = LogisticRegression(C=1.0, max_iter=2000).fit(scaler.transform(train_x), train_y)
    return float(probe.score(scaler.transform(test_x), test_y))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=170.0, help="training time budget")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 while the machine is shared)")
    parser.add_argument("--crop", type=int, default=32, help="side of the photo crops, in pixels (at most 77)")
    parser.add_argument("--n-crops", type=int, default=4000, help="training crops (the test split has 400)")
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    wall_start = time.perf_counter()

    train_set = zoo.load_dataset("photos", split="train", crop=args.crop, n_crops=args.n_crops, seed=args.seed)
    test_set = zoo.load_dataset("photos", split="test", crop=args.crop, n_crops=400, seed=args.seed)
    info = train_set.info
    torch.manual_seed(args.seed)
    model = zoo.create_model(
        "colorization", input_shape=info.input_shape, width=args.width, mean=list(info.mean), std=list(info.std)
    )
    untrained = zoo.create_model(**model.config)
    untrained.load_state_dict(model.state_dict())
    print(f"photos: {len(train_set)} train / {len(test_set)} test crops of {args.crop} px, {model.n_bins} ab bins, "
          f"{sum(p.numel() for p in model.parameters()):,} parameters, {args.threads} thread(s)")

    steps, epochs = train_for(model, train_set, args.seconds, args.batch_size, args.lr, args.seed)
    model.eval()
    metrics = model.evaluate(train_set, test_set)
    untrained_metrics = untrained.eval().evaluate(train_set, test_set)
    print(f"trained {steps} steps ({epochs:.1f} epochs) in {args.seconds:.0f} s")
    print(f"test ab error {metrics['ab_error']:.2f} vs grey {metrics['grey_ab_error']:.2f}: "
          f"ratio {metrics['ab_error_ratio']:.3f} (below 1 = better than grey; untrained {untrained_metrics['ab_error_ratio']:.3f}); "
          f"bin accuracy {metrics['bin_accuracy']:.3f} (untrained {untrained_metrics['bin_accuracy']:.3f})")

    chance = 1 / info.n_classes
    trained_probe, random_probe = probe_accuracy(model, train_set, test_set), probe_accuracy(untrained, train_set, test_set)
    print(f"linear probe, which of {info.n_classes} photographs (test crops from unseen regions): trained "
          f"{trained_probe:.3f}, untrained {random_probe:.3f}, chance {chance:.3f}; ratio trained/untrained "
          f"{trained_probe / random_probe:.2f}")
    print(f"wall time {time.perf_counter() - wall_start:.0f} s; load average {os.getloadavg()}")


if __name__ == "__main__":
    main()
