"""Transfer bars on scikit-learn's digits: class-split transfer and the MAE mask-ratio sweep.

- Class-split transfer: each model is pretrained on digits 0-4 only, frozen, and probed (linear
  probe with cross-validated C, cosine 5-NN) on digits 5-9 (train split -> test split), against
  raw pixels and against the same architecture at its initial weights.
- MAE mask-ratio sweep: one MAE per mask ratio, frozen encoder probed on all ten digits, with
  each run's reconstruction ratio (masked-patch error over the mean image's; < 1 beats the mean image).

Every run is trained in a fresh folder (``--out``, default a temporary one), so the figures are
recomputed. Accuracies are printed with their difference to the raw-pixel / random-weight
references of the same run.

On a CPU shared with other jobs, ``--threads 1`` avoids thread oversubscription (on 2 busy cores
an MAE epoch took ~10 s with torch's default threads and ~1.3 s with one).

Run: ``.venv/bin/python benchmarks/transfer_bars.py [--models cnn simclr ae-mlp] [--epochs N] [--mae-epochs 50] [--threads 1]``
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from probe.study import class_split_transfer, mask_ratio_sweep


def class_split_bars(models: list[str], epochs: int | None, out: Path, device: str, seed: int) -> pd.DataFrame:
    frames = []
    for model_name in models:
        started = time.perf_counter()
        result = class_split_transfer(model_name, (0, 1, 2, 3, 4), (5, 6, 7, 8, 9), epochs=epochs, seed=seed,
                                      out=out / f"class-split-{model_name}", device=device, progress=False)
        frame = result.to_frame()
        reference = frame.set_index("representation")
        for column in ("probe_accuracy", "knn_accuracy"):
            frame[f"{column}_minus_pixels"] = frame[column] - reference.loc["raw pixels", column]
            frame[f"{column}_minus_random"] = frame[column] - reference.loc["random weights", column]
        frame["pretrain_metrics"] = ", ".join(f"{k}={v:.3f}" for k, v in result.pretrain_metrics.items())
        frame["seconds"] = time.perf_counter() - started
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=["cnn", "simclr", "ae-mlp"])
    parser.add_argument("--epochs", type=int, default=None, help="pretraining epochs (default: each model's own)")
    parser.add_argument("--ratios", type=float, nargs="*", default=[0.25, 0.5, 0.75, 0.9])
    parser.add_argument("--mae-epochs", type=int, default=50)
    parser.add_argument("--out", type=Path, default=None, help="run folder (default: a temporary one)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's own)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    pd.set_option("display.width", 200, "display.max_columns", 30, "display.precision", 3)
    with tempfile.TemporaryDirectory() as temporary:
        out = args.out if args.out is not None else Path(temporary)
        if args.models:
            print("== class-split transfer: pretrain on digits 0-4, probe on digits 5-9 (chance 0.2) ==")
            print(class_split_bars(args.models, args.epochs, out, args.device, args.seed).to_string(index=False))
        if args.ratios:
            print(f"\n== MAE mask-ratio sweep on digits ({args.mae_epochs} epochs per ratio) ==")
            started = time.perf_counter()
            sweep = mask_ratio_sweep(args.ratios, epochs=args.mae_epochs, out=out / "mask-ratio", seed=args.seed,
                                     device=args.device, progress=False).to_frame()
            best = sweep.loc[sweep["probe_accuracy"].idxmax(), "mask_ratio"]
            print(sweep.drop(columns="run_dir").to_string(index=False))
            print(f"best probe accuracy at mask ratio {best:g}; {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
