"""Benchmark: ``analyses.linear_probe`` vs scikit-learn's LogisticRegression (lbfgs), same C.

Synthetic but realistic features: 10 Gaussian class clusters whose means differ in a random
low-dimensional subspace, with anisotropic noise whose spectrum decays like a network layer's
(power law), at 10,000 x 512. Both solvers see the same raw features (our probe with
``standardize=False``, so the two minimise the same objective) and are timed in the same run;
the script prints both times, their ratio and both test accuracies.

Run: ``.venv/bin/python benchmarks/bench_probe.py [--n 10000] [--units 512] [--C 1.0]``
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

from analyses import linear_probe


def make_features(n: int, units: int, n_classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Class clusters in a decaying-spectrum noise; returns (features (n, units), labels (n,))."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, n_classes, size=n)
    signal_axes = np.linalg.qr(rng.standard_normal((units, 32)))[0]  # (units, 32)
    means = rng.standard_normal((n_classes, 32)) @ signal_axes.T * 0.4
    # Power-law variance decay (variance of axis i proportional to 1/i), mean variance 1.
    variances = 1.0 / np.arange(1, units + 1)
    spectrum = np.sqrt(variances * units / variances.sum())
    mixing = np.linalg.qr(rng.standard_normal((units, units)))[0] * spectrum
    noise = rng.standard_normal((n, units)) @ mixing.T
    return (means[labels] + noise).astype(np.float64), labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000, help="training stimuli (the test split has n/5)")
    parser.add_argument("--units", type=int, default=512)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--C", type=float, default=1.0)
    parser.add_argument("--device", default="cpu", help="device of our probe (cpu, cuda, auto)")
    args = parser.parse_args()

    X, y = make_features(args.n + args.n // 5, args.units, args.classes, seed=0)
    X_train, y_train, X_test, y_test = X[: args.n], y[: args.n], X[args.n :], y[args.n :]
    print(f"features: train {X_train.shape}, test {X_test.shape}, {args.classes} classes, C={args.C}, "
          f"torch threads {torch.get_num_threads()}")

    started = time.perf_counter()
    reference = LogisticRegression(C=args.C, max_iter=1000).fit(X_train, y_train)
    sklearn_seconds = time.perf_counter() - started
    sklearn_accuracy = reference.score(X_test, y_test)

    linear_probe(X_train[:200], y_train[:200], X_test[:10], y_test[:10], C=args.C, standardize=False,
                 device=args.device)  # warm-up: first-call overheads of torch
    started = time.perf_counter()
    ours = linear_probe(X_train, y_train, X_test, y_test, C=args.C, standardize=False, device=args.device)
    our_seconds = time.perf_counter() - started

    print(f"sklearn LogisticRegression(lbfgs): {sklearn_seconds:8.3f} s  accuracy {sklearn_accuracy:.4f}  "
          f"iterations {int(np.max(reference.n_iter_))}")
    print(f"analyses.linear_probe ({args.device}):     {our_seconds:8.3f} s  accuracy {ours.accuracy:.4f}  "
          f"iterations {ours.n_iter}")
    print(f"speed-up: {sklearn_seconds / our_seconds:.1f}x   accuracy difference: "
          f"{100 * (ours.accuracy - sklearn_accuracy):+.2f} points   max |coef difference|: "
          f"{np.abs(ours.coef - reference.coef_).max():.2e} (max |coef| {np.abs(reference.coef_).max():.2e})")


if __name__ == "__main__":
    main()
