"""``probe demo``: train a small zoo on the embedded data, analyse it, and write one HTML report."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

HELP = "train one model of each family, add a pretrained network, analyse them all: runs/demo/report.html"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("runs/demo"), help="output folder (default: runs/demo)")
    parser.add_argument("--quick", action="store_true", help="a few seconds' version, for tests")
    parser.add_argument("--seed", type=int, default=0, help="seed for everything trained or sampled")
    parser.add_argument("--device", default="auto", help="'auto' (CUDA when present), 'cpu' or 'cuda'")
    parser.add_argument("--force", action="store_true", help="run in a folder that is not empty (the demo's runs and "
                        "recordings there are reused when their settings match)")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="hide progress bars")


def _check_out(out: Path, force: bool) -> None:
    if out.exists() and any(out.iterdir()) and not force:
        raise FileExistsError(
            f"{out} already exists and is not empty; pass --force to run the demo there (reusing its trained runs and "
            "recordings), or --out another folder"
        )


def run(args: argparse.Namespace) -> int:
    _check_out(args.out, args.force)  # before importing torch and the study code: a refusal comes at once
    from probe.study import run_demo

    started = time.perf_counter()
    result = run_demo(args.out, quick=args.quick, seed=args.seed, device=args.device, progress=args.progress)
    total = time.perf_counter() - started
    for step, seconds in result.timings.items():
        print(f"  {step:<28} {seconds:7.1f} s")
    print(f"demo finished in {total:.1f} s; report: {result.report}")
    return 0
