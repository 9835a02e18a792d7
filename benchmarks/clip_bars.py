"""CLIP bars: zero-shot accuracy on seen classes against a linear probe, and on held-out classes.

The issue's bars, on Fashion-MNIST (digits when it is not installed):
- zero-shot accuracy on the seen classes' test images (among the seen names) within 10 points of a
  supervised linear probe on the same frozen image embeddings;
- zero-shot accuracy on the held-out classes' test images (among the held-out names) well above chance.

The model is trained in a fresh folder (``--out``, default a temporary one) with
``CLIP_BAR_SETTINGS`` (or ``--demo``: ``CLIP_DEMO_SETTINGS``), then measured by
``clip_zero_shot_experiment``. Every figure is printed with the wall time and the load average
(timings on a shared machine depend on what else runs).

Run: ``.venv/bin/python benchmarks/clip_bars.py [--demo] [--dataset fashion-mnist] [--held-out Pullover Sneaker]``
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from probe.study._caption_experiments import CLIP_BAR_SETTINGS, CLIP_DEMO_SETTINGS, clip_zero_shot_experiment


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default=None, help="default: fashion-mnist when installed, else digits")
    parser.add_argument("--held-out", nargs="*", default=None, help="class names held out (default: the dataset's)")
    parser.add_argument("--demo", action="store_true", help="the demo's smaller settings")
    parser.add_argument("--out", type=Path, default=None, help="run folder (default: a temporary one)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's own)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    settings = dict(CLIP_DEMO_SETTINGS if args.demo else CLIP_BAR_SETTINGS)
    print(f"settings: {settings}, torch threads {torch.get_num_threads()}, load average before "
          f"{tuple(round(v, 2) for v in os.getloadavg())}")
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp) / "clip"
        started = time.perf_counter()
        result = clip_zero_shot_experiment(args.dataset, args.held_out, out=out, seed=args.seed, progress=False,
                                           **settings)
        seconds = time.perf_counter() - started
    pd.set_option("display.width", 200)
    frame = result.to_frame()
    print(f"\n{result.dataset}: trained on {', '.join(result.seen_classes)}; held out {', '.join(result.held_out_classes)}; "
          f"text encoder {result.text_encoder}")
    print(frame[["images", "method", "candidates", "accuracy", "chance", "n_test", "n_train"]].to_string(index=False))
    seen_gap = result.score("seen", "linear probe", "seen names") - result.score("seen", "zero-shot", "seen names")
    held = result.score("held-out", "zero-shot", "held-out names")
    chance = 1 / len(result.held_out_classes)
    print(f"\nbar 1: linear probe - zero-shot on seen classes = {seen_gap * 100:+.1f} points "
          f"({'PASS' if seen_gap <= 0.10 else 'FAIL'}: within 10)")
    print(f"bar 2: zero-shot on held-out classes {held:.3f} vs chance {chance:.3f} "
          f"({'PASS' if held >= chance + 0.25 * (1 - chance) else 'FAIL'}: at least a quarter of the way from chance to 1)")
    print(f"\nrun metrics: {result.run_metrics}")
    print(f"image embedding vs class caption embedding CKA: {result.image_text_cka:.3f}")
    print("image-side CKA:\n" + pd.DataFrame(result.image_cka.values, index=result.image_cka.names,
                                             columns=result.image_cka.names).round(3).to_string())
    print("text-side CKA:\n" + pd.DataFrame(result.text_cka.values, index=result.text_cka.names,
                                            columns=result.text_cka.names).round(3).to_string())
    cross = result.cross_modal.pivot(index="image_layer", columns="text_stage", values="cka")
    cross = cross.loc[list(dict.fromkeys(result.cross_modal["image_layer"])), list(dict.fromkeys(result.cross_modal["text_stage"]))]
    print("cross-modal CKA:\n" + cross.round(3).to_string())
    print(f"\nwall time {seconds:.1f} s (training and measures); load average after "
          f"{tuple(round(v, 2) for v in os.getloadavg())} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
