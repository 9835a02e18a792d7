"""Greedy layer-wise pretraining vs end-to-end training of the same deep MLP, at 10, 100 and all labels per class.

Per seed, an MLP (784-256-128-64-10 on Fashion-MNIST) has its hidden layers pretrained greedily, each as an
autoencoder of the codes below, on the training images without labels; it is then fine-tuned end to end on
the labelled subset. The reference is the same MLP from random weights, trained on the same labels with the
same optimiser, steps, minibatch order and head initialisation. Test accuracy on the whole test split; mean ±
sd over seeds, and the paired difference (greedy minus end to end).

Fashion-MNIST when installed (``apt-get install dataset-fashion-mnist``), else scikit-learn's digits.
``--threads 1`` (the default) keeps torch from oversubscribing a CPU shared with other jobs.

Run: ``.venv/bin/python benchmarks/greedy_bars.py [--budgets 10 100 all] [--seeds 0 1 2] [--pretrain-images N]``
"""

from __future__ import annotations

import argparse
import os
import time

import pandas as pd
import torch

import zoo
from probe.study._pretraining_experiments import greedy_layerwise_experiment


def _dataset() -> str:
    try:
        zoo.load_dataset("fashion-mnist", split="test")
        return "fashion-mnist"
    except (FileNotFoundError, ModuleNotFoundError):
        return "digits"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default=None, help="default: fashion-mnist when installed, else digits")
    parser.add_argument("--widths", type=int, nargs="*", default=[256, 128, 64])
    parser.add_argument("--budgets", nargs="*", default=["10", "100", "all"], help="labels per class, or 'all'")
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])
    parser.add_argument("--pretrain-epochs", type=int, default=5)
    parser.add_argument("--pretrain-images", type=int, default=None, help="unlabelled images (default: all)")
    parser.add_argument("--finetune-epochs", type=int, default=3)
    parser.add_argument("--min-finetune-steps", type=int, default=300)
    parser.add_argument("--activation", default="relu")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dataset = args.dataset or _dataset()
    budgets = [b if b == "all" else int(b) for b in args.budgets]
    started = time.perf_counter()
    result = greedy_layerwise_experiment(
        dataset, widths=args.widths, labels_per_class=budgets, seeds=args.seeds, pretrain_epochs=args.pretrain_epochs,
        finetune_epochs=args.finetune_epochs, min_finetune_steps=args.min_finetune_steps,
        pretrain_images=args.pretrain_images, activation=args.activation, lr=args.lr, device=args.device, progress=False)
    seconds = time.perf_counter() - started
    pd.set_option("display.width", 200)
    pd.set_option("display.max_columns", 20)
    print(f"dataset {dataset}, widths {tuple(args.widths)}, activation {args.activation}, seeds {args.seeds}; "
          f"pretrained on {result.n_pretrain} unlabelled training images x {args.pretrain_epochs} epochs per layer; "
          f"fine-tuned {args.finetune_epochs} epochs (at least {args.min_finetune_steps} Adam steps, lr {args.lr})")
    ratios = result.reconstruction.groupby("layer")["ratio"].agg(["mean", "std"])
    print("reconstruction ratio per layer (autoencoder MSE / mean-code MSE, mean ± sd over seeds): "
          + ", ".join(f"layer {layer}: {row['mean']:.3f} ± {row['std']:.3f}" for layer, row in ratios.iterrows()))
    summary = result.summary()
    difference = result.difference().set_index("budget")
    for budget in summary["budget"].unique():
        rows = summary[summary["budget"] == budget].set_index("method")
        cells = "  ".join(f"{method}: {row['accuracy_mean']:.4f} ± {row['accuracy_sd']:.4f}" for method, row in rows.iterrows())
        diff = difference.loc[budget]
        print(f"{budget:>4} labels/class  {cells}  difference (greedy - end to end, paired by seed): "
              f"{diff['difference_mean']:+.4f} ± {diff['difference_sd']:.4f} (n={int(diff['n_seeds'])})")
    print(f"wall time {seconds:.1f} s, torch threads {torch.get_num_threads()}, load average {os.getloadavg()}")


if __name__ == "__main__":
    main()
