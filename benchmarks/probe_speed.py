"""Benchmark: ``analyses.linear_probe`` against scikit-learn, fixed C and cross-validated C.

Measured in one run, on the same features:

- fixed C (1.0) at 10,000 x 512 (10 classes; test split 2,000): our probe with
  ``standardize=False`` against ``LogisticRegression(C=1.0)`` (lbfgs, default tolerance), which
  minimise the same objective. Two feature sets: Gaussian class clusters in power-law noise
  (``bench_probe.make_features``) and a random ReLU layer (512 units) over noisy 8x8 digits.
  The bar: ours at least 5x faster, test accuracies within 0.5 points.
- cross-validated C on a small (42 x 32) and a medium (1,000 x 64) problem: ours (``C=None``,
  standardised) against ``StandardScaler`` + ``LogisticRegressionCV`` with the same grid
  (``analyses.DEFAULT_CS``) and the same stratified folds. The bar: not slower.

Each timing is the best of ``--repeats`` runs after one warm-up call. The load average and the
thread counts are printed: on a shared machine, run with ``--threads 1`` (limits torch and, via
threadpoolctl, scikit-learn's BLAS and OpenMP pools).

Run: ``.venv/bin/python benchmarks/probe_speed.py [--threads 1] [--repeats 3]``
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
from sklearn.model_selection import StratifiedKFold
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_probe import make_features

from analyses import DEFAULT_CS, linear_probe


def relu_digits(n: int, units: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Noisy 8x8 digits through a random ReLU layer: (features (n, units), labels (n,))."""
    rng = np.random.default_rng(seed)
    pixels, labels = load_digits(return_X_y=True)
    picks = rng.integers(0, len(labels), size=n)
    noisy = pixels[picks] + rng.normal(scale=4.0, size=(n, pixels.shape[1]))
    weights = rng.standard_normal((pixels.shape[1], units)) / np.sqrt(pixels.shape[1])
    return np.maximum(noisy @ weights + rng.normal(size=units), 0.0), labels[picks]


def best_time(function, repeats: int):
    """(smallest wall time over ``repeats`` calls, the last call's result)."""
    times, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - started)
    return min(times), result


def fixed_C(name: str, X: np.ndarray, y: np.ndarray, n_train: int, repeats: int) -> None:
    X_train, y_train, X_test, y_test = X[:n_train], y[:n_train], X[n_train:], y[n_train:]
    linear_probe(X_train[:500], y_train[:500], X_test[:10], y_test[:10], C=1.0, standardize=False, device="cpu")
    theirs_s, reference = best_time(lambda: LogisticRegression(C=1.0, max_iter=1000).fit(X_train, y_train), repeats)
    ours_s, ours = best_time(lambda: linear_probe(X_train, y_train, X_test, y_test, C=1.0, standardize=False,
                                                  device="cpu"), repeats)
    theirs_accuracy = reference.score(X_test, y_test)
    print(f"[fixed C=1, {name}, {X_train.shape[0]}x{X_train.shape[1]}] sklearn {theirs_s:.3f} s "
          f"({int(np.max(reference.n_iter_))} it, acc {theirs_accuracy:.4f})  ours {ours_s:.3f} s "
          f"({ours.n_iter} it, acc {ours.accuracy:.4f})  speed-up {theirs_s / ours_s:.1f}x  "
          f"accuracy difference {100 * (ours.accuracy - theirs_accuracy):+.2f} points")


def cross_validated(name: str, X_train, y_train, X_test, y_test, repeats: int, cv: int = 5) -> None:
    folds = StratifiedKFold(n_splits=min(cv, int(np.bincount(y_train).min())), shuffle=True, random_state=0)

    def theirs():
        scaler = StandardScaler().fit(X_train)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            model = LogisticRegressionCV(Cs=list(DEFAULT_CS), cv=folds, max_iter=1000).fit(
                scaler.transform(X_train), y_train)
        return model, model.score(scaler.transform(X_test), y_test)

    linear_probe(X_train, y_train, X_test, y_test, cv=cv, device="cpu")
    theirs_s, (model, theirs_accuracy) = best_time(theirs, repeats)
    ours_s, ours = best_time(lambda: linear_probe(X_train, y_train, X_test, y_test, cv=cv, device="cpu"), repeats)
    print(f"[CV C, {name}, {X_train.shape[0]}x{X_train.shape[1]}, {folds.n_splits} folds x {len(DEFAULT_CS)} Cs] "
          f"sklearn {theirs_s:.3f} s (C {model.C_[0]:g}, acc {theirs_accuracy:.4f})  ours {ours_s:.3f} s "
          f"(C {ours.C:g}, acc {ours.accuracy:.4f})  ours/sklearn time {ours_s / theirs_s:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=0, help="threads for both libraries (0: their defaults)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"load average {os.getloadavg()}, cpus {os.cpu_count()}, torch threads {torch.get_num_threads()}, "
          f"scikit-learn threads {'limited to ' + str(args.threads) if args.threads else 'default'}")
    with threadpool_limits(args.threads or None):
        X, y = make_features(12_000, 512, 10, seed=0)
        fixed_C("clusters", X, y, 10_000, args.repeats)
        X, y = relu_digits(12_000, 512, seed=0)
        fixed_C("relu-digits", X, y, 10_000, args.repeats)

        X, y = relu_digits(1_400, 64, seed=1)
        X32 = X[:, :32]
        small = np.concatenate([np.flatnonzero(y[:1000] == c)[:4] for c in range(10)] + [np.arange(1000, 1002)])
        cross_validated("relu-digits", X32[small], y[small], X32[1002:], y[1002:], args.repeats)
        cross_validated("relu-digits", X[:1000], y[:1000], X[1000:], y[1000:], args.repeats)
    print(f"load average after {os.getloadavg()}")


if __name__ == "__main__":
    main()
