"""Layer identification (Kornblith et al. 2019, Table 2): does CKA find the same layer in another seed?

Trains ``--seeds`` copies of the digits CNN (``zoo.train("cnn", seed=s)``), records their layers on
the digits test split, and for every ordered pair of different seeds and every layer of model A
checks whether the most similar layer of model B (by the chosen measure) is the same layer.
The paper reports 99.3 % for linear CKA on CIFAR-10 CNNs.

    .venv/bin/python benchmarks/layer_identification.py --seeds 5 --epochs 10

Run directories go to ``runs/layer-identification`` (reused when present, so a re-run only scores).
Also checks the streaming CKA reducer against the in-memory CKA on one model.
"""

from __future__ import annotations

import argparse
import itertools
import time
from collections import Counter
from pathlib import Path

import numpy as np

import probe
import zoo
from analyses import StreamingCKA, cka_matrix, rdm_similarity_matrix


def identification_accuracy(
    similarities: dict[tuple[int, int], np.ndarray], layers: list[str]
) -> tuple[float, int, int, Counter]:
    """Fraction of (pair, layer) cases where the argmax over B's layers is A's layer index,
    and the confusions as a Counter of (layer of A, layer picked in B)."""
    correct = total = 0
    confusions: Counter = Counter()
    for block in similarities.values():
        picked = block.argmax(axis=1)
        correct += int((picked == np.arange(block.shape[0])).sum())
        total += block.shape[0]
        confusions.update((layers[i], layers[j]) for i, j in enumerate(picked) if i != j)
    return correct / total, correct, total, confusions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--out", default="runs/layer-identification")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--reduce", default="flatten", help="how conv maps become vectors (flatten, mean)")
    parser.add_argument("--split", default="test", help="digits split whose stimuli are recorded (test: 360, train)")
    args = parser.parse_args()

    dataset = zoo.load_dataset("digits", split=args.split)
    recordings = {}
    started = time.perf_counter()
    for seed in range(args.seeds):
        run_dir = Path(args.out) / f"cnn-seed{seed}"
        if (run_dir / "model.safetensors").exists():
            model = zoo.load(run_dir)
        else:
            # force: an interrupted earlier run without final weights is started again
            model = zoo.train(
                "cnn", "digits", out=run_dir, epochs=args.epochs, seed=seed, device=args.device, force=True,
                progress=False,
            ).model
        layers = model.recordable_layers()
        recordings[f"seed{seed}"] = probe.record(model, dataset, layers, reduce=args.reduce, device=args.device,
                                                 progress=False)
        if seed == 0:
            streamed = probe.record(model, dataset, layers, reduce="auto", device=args.device, progress=False,
                                    reducers={"cka": lambda: StreamingCKA(pool="mean")}, batch_size=64)
            direct = cka_matrix(streamed, progress=False).values
            streaming_error = np.abs(streamed.extras["cka"].values - direct).max()
    print(f"{args.seeds} CNNs trained/loaded and recorded in {time.perf_counter() - started:.1f} s; "
          f"{len(dataset)} {args.split} stimuli; layers {layers}; reduce={args.reduce}")
    print(f"streaming CKA (batches of 64) vs in-memory CKA, max |difference|: {streaming_error:.1e}")

    measures = {
        "linear CKA": lambda reps: cka_matrix(reps, progress=False),
        "RBF CKA (0.5 median)": lambda reps: cka_matrix(reps, "rbf", progress=False),
        "RDM correlation (pearson, correlation RDMs)": lambda reps: rdm_similarity_matrix(reps, progress=False),
    }
    for label, measure in measures.items():
        started = time.perf_counter()
        matrix = measure(recordings)
        blocks = {
            (a, b): matrix.block(f"seed{a}", f"seed{b}").to_numpy()
            for a, b in itertools.permutations(range(args.seeds), 2)
        }
        accuracy, correct, total, confusions = identification_accuracy(blocks, layers)
        print(f"{label:45s} layer identification {100 * accuracy:5.1f} % ({correct}/{total}) "
              f"[{time.perf_counter() - started:.1f} s]")
        for (layer_a, layer_b), count in confusions.most_common():
            print(f"    {layer_a} -> {layer_b}: {count}x")
        hidden = {pair: block[:-1, :-1] for pair, block in blocks.items()}
        accuracy, correct, total, _ = identification_accuracy(hidden, layers[:-1])
        print(f"    without the output layer ({layers[-1]}): {100 * accuracy:5.1f} % ({correct}/{total})")


if __name__ == "__main__":
    main()
