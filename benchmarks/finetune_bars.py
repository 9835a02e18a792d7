"""Fine-tuning against linear read-outs, for every image family of the zoo, on Fashion-MNIST's class split.

Each model is pretrained on classes 0-4 (T-shirt, trouser, pullover, dress, coat), then adapted to
classes 5-9 (sandal, shirt, sneaker, bag, ankle boot), which it never saw, with 1, 10 and 100 labelled
images per class: a linear probe on the frozen encoder, fine-tuning its last block with a new head,
and fine-tuning everything (``probe.study.finetune_comparison``). Every cell is the mean and standard
deviation over seeds (the labelled draw and the head). Pretraining runs are kept in ``--out`` and
reused. Wall time and load average are printed.

Usage::

    python benchmarks/finetune_bars.py [--models cnn ae-conv vq-vae mae simclr clip] [--seeds 0 1 2]
        [--pretrain-epochs 3] [--steps 200] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import pandas as pd
import torch

from probe.study import finetune_comparison

# One model per image family: supervised, autoencoder, vector-quantised, masked, contrastive, image-text.
FAMILY_MODELS = ["cnn", "ae-conv", "vq-vae", "mae", "simclr", "clip"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=FAMILY_MODELS)
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--labels", type=int, nargs="+", default=[1, 10, 100], help="labels per class")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--pretrain-epochs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=200, help="optimiser steps of each fine-tuning")
    parser.add_argument("--out", type=Path, default=Path("runs/finetune-bars"), help="pretraining runs (reused)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's own)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    pd.set_option("display.width", 200, "display.max_columns", 30, "display.precision", 3)
    started = time.perf_counter()
    comparison = finetune_comparison(args.models, dataset=args.dataset, labels_per_class=args.labels, seeds=args.seeds,
                                     pretrain_epochs=args.pretrain_epochs, steps=args.steps, out=args.out,
                                     device=args.device, progress=False)
    seconds = time.perf_counter() - started
    print(f"== {args.dataset}: pretrained on classes {comparison.pretrain_classes}, adapted to "
          f"{comparison.probe_classes} (chance {comparison.chance:.2f}) ==")
    for model, metrics in comparison.pretrain_metrics.items():
        shown = ", ".join(f"{k} {v:.3f}" for k, v in metrics.items() if isinstance(v, float))
        print(f"  {model} pretraining: {shown}")
    summary = comparison.summary()
    table = summary.assign(cell=[f"{m:.3f} ± {s:.3f}" for m, s in zip(summary["accuracy_mean"], summary["accuracy_std"])])
    print(table.pivot_table(index=["model", "adaptation"], columns="labels_per_class", values="cell", aggfunc="first",
                            sort=False).to_string())
    print("\nmean gain over the linear probe (accuracy points):")
    print(comparison.gains().to_string(index=False))
    trained = comparison.to_frame().drop_duplicates(["model", "adaptation"])[["model", "adaptation", "trained"]]
    print("\nwhat each adaptation trained:\n" + trained.to_string(index=False))
    print(f"\n{seconds:.0f} s (including pretraining runs reused from {args.out}); load average {os.getloadavg()}")


if __name__ == "__main__":
    main()
