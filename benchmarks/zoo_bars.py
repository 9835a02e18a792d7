"""Train every zoo model on digits with its defaults and check the zoo's bars.

Bars: CNN test accuracy >= 0.98; SimCLR kNN test accuracy >= 0.95; every autoencoder's and the
MAE's test reconstruction MSE clearly below the mean-image MSE (ratio < 1); the linear
autoencoder's test reconstruction error within 1 % of PCA's with the same number of components.
Training times are printed in seconds and relative to the CNN's (measured in the same run), so the
figures can be compared across machines.

Usage::

    python benchmarks/zoo_bars.py [--models cnn simclr ...] [--out DIR] [--device auto]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.decomposition import PCA

import zoo

# model -> (metric, comparison, threshold)
BARS = {
    "cnn": ("test_accuracy", ">=", 0.98),
    "simclr": ("knn_accuracy", ">=", 0.95),
    "mae": ("recon_ratio", "<", 0.5),
}
RECON_BAR = ("recon_ratio", "<", 0.5)  # "clearly below 1" for every autoencoder
PCA_TOLERANCE = 0.01


def pca_test_mse(n_components: int) -> float:
    """Test-set reconstruction MSE (normalised pixels) of sklearn PCA fitted on the digits train split."""
    train = zoo.load_dataset("digits", "train")
    test = zoo.load_dataset("digits", "test")
    x_train = train.get_batch(torch.arange(len(train)))[0].flatten(1).double().numpy()
    x_test = test.get_batch(torch.arange(len(test)))[0].flatten(1).double().numpy()
    pca = PCA(n_components=n_components).fit(x_train)
    return float(np.mean((pca.inverse_transform(pca.transform(x_test)) - x_test) ** 2))


def _check(value: float, comparison: str, threshold: float) -> str:
    ok = value >= threshold if comparison == ">=" else value < threshold
    return "PASS" if ok else "FAIL"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="*", default=None, help="models to train (default: all but resnet18)")
    parser.add_argument("--out", default=None, help="folder for the run directories (default: a temporary folder)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    models = args.models or [name for name in zoo.list_models() if name != "resnet18"]
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="zoo_bars_"))
    torch.set_num_threads(max(1, min(torch.get_num_threads(), 2)))

    rows = []
    for name in models:
        started = time.perf_counter()
        result = zoo.train(name, dataset="digits", out=out / name, seed=args.seed, device=args.device, force=True, progress=False)
        seconds = time.perf_counter() - started
        rows.append((name, result, seconds))
        print(f"trained {name:15s} {result.metrics['epochs']:4d} epochs in {seconds:7.1f} s", flush=True)

    reference = next((seconds for name, _, seconds in rows if name == "cnn"), None)
    print("\nmodel            epochs  seconds  x cnn  metrics                                                    bar")
    failures = 0
    for name, result, seconds in rows:
        metrics = result.metrics
        shown = {k: metrics[k] for k in ("test_accuracy", "knn_accuracy", "recon_mse", "mean_image_mse", "recon_ratio") if k in metrics}
        text = ", ".join(f"{k}={v:.4f}" for k, v in shown.items())
        bar = BARS.get(name, RECON_BAR if result.model.family == "autoencoder" else None)
        verdict = ""
        if bar is not None:
            verdict = f"{bar[0]} {bar[1]} {bar[2]}: {_check(metrics[bar[0]], *bar[1:])}"
            failures += verdict.endswith("FAIL")
        ratio = f"{seconds / reference:5.2f}" if reference else "  n/a"
        print(f"{name:15s} {metrics['epochs']:6d} {seconds:8.1f} {ratio}  {text:58s} {verdict}")

    linear = next((result for name, result, _ in rows if name == "ae-linear"), None)
    if linear is not None:
        k = linear.model.config["code_dim"]
        pca_mse = pca_test_mse(k)
        ae_mse = linear.metrics["recon_mse"]
        relative = ae_mse / pca_mse - 1
        verdict = "PASS" if relative <= PCA_TOLERANCE else "FAIL"
        failures += verdict == "FAIL"
        print(f"\nlinear AE vs PCA (k={k}): AE test MSE {ae_mse:.5f}, PCA test MSE {pca_mse:.5f}, "
              f"AE / PCA - 1 = {relative:+.3%} (bar <= {PCA_TOLERANCE:.0%}): {verdict}")
    print(f"\n{failures} bar(s) failed; run directories in {out}")


if __name__ == "__main__":
    main()
