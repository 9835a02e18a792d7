"""``probe patches``: top-activating patches of a trained run's layer, as PNG grids and a CSV table."""

from __future__ import annotations

import argparse
from pathlib import Path

from probe.cli._helpers import MODEL_HELP, add_model_arguments

HELP = "top-k (and bottom-k) image patches per unit of a layer, cropped to receptive fields: PNG grids + CSV"


def _units(text: str) -> str | list[int]:
    if text in ("selective", "random", "strongest"):
        return text
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--units must be 'selective', 'strongest', 'random' or comma-separated unit indices, got {text!r}"
        ) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``probe patches``'s arguments to ``parser``."""
    parser.add_argument("run_dir", metavar="RUN_OR_MODEL", help=f"{MODEL_HELP} (a trained run folder from probe train)")
    parser.add_argument("--layer", required=True, action="append", help="module name to analyse (repeatable)")
    parser.add_argument(
        "--dataset", default=None, help="dataset name (default: the run's training dataset; required for other models)"
    )
    parser.add_argument(
        "--dataset-option", dest="dataset_options", action="append", default=[], metavar="KEY=VALUE",
        help="dataset option, repeatable, e.g. --dataset-option patch_size=12 (added to a run's own options)",
    )
    parser.add_argument("--split", default="test", choices=("train", "test"), help="dataset split (default: test)")
    parser.add_argument("--k", type=int, default=9, help="top stimuli per unit (default: 9)")
    parser.add_argument("--bottom-k", type=int, default=0, help="most suppressive stimuli per unit (default: 0)")
    parser.add_argument("--units", type=_units, default="selective", help="selective | strongest | random | 0,5,7")
    parser.add_argument("--n-units", type=int, default=16, help="units per grid (default: 16)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random unit sample (default: 0)")
    parser.add_argument("--stretch", action="store_true", help="stretch each patch's contrast in the PNG grids")
    parser.add_argument("--batch-size", type=int, default=256, help="stimuli per forward pass (default: 256)")
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (default: auto)")
    parser.add_argument(
        "--out", type=Path, required=True, help="folder for <layer>_top.png, <layer>_bottom.png and patches.csv"
    )
    parser.add_argument("--force", action="store_true", help="overwrite the grids and patches.csv of an earlier run in --out")
    parser.add_argument("--no-progress", action="store_true", help="no status lines or progress bar")
    add_model_arguments(parser)


def run(args: argparse.Namespace) -> int:
    import pandas as pd

    import zoo
    from probe.cli._helpers import load_model_and_stimuli, status
    from probe.study import record_top_patches
    from reports import save_unit_grids, unit_grid_paths

    is_run = Path(args.run_dir).is_dir()
    if not is_run and ("/" in args.run_dir or args.run_dir.startswith(".")) and ":" not in args.run_dir:
        raise FileNotFoundError(f"run folder {args.run_dir} does not exist; train one with probe train")
    if not is_run and not args.dataset:
        raise ValueError(f"name the stimuli with --dataset: {args.run_dir} is not a run folder that names its dataset")
    csv_path = args.out / "patches.csv"
    targets = [csv_path, *(path for layer in args.layer for path in unit_grid_paths(args.out, layer).values())]
    existing = [str(path) for path in targets if path.exists()]
    if existing and not args.force:
        raise FileExistsError(
            f"--out {args.out} already holds {', '.join(existing[:3])}{' ...' if len(existing) > 3 else ''}; "
            "pass --force to overwrite them, or choose another --out"
        )
    show = not args.no_progress
    model, dataset, _ = load_model_and_stimuli("patches", args.run_dir, args, args.split, show)
    status("patches", f"recording the top {args.k} stimuli per unit of {', '.join(args.layer)} ...", show)
    results = record_top_patches(
        model,
        dataset,
        args.layer,
        k=args.k,
        bottom_k=args.bottom_k,
        batch_size=args.batch_size,
        device=args.device,
        progress=not args.no_progress,
    )
    status("patches", f"drawing the grids into {args.out} ...", show)
    frames = []
    for layer, result in results.items():
        written = save_unit_grids(
            result, args.out, units=args.units, n_units=args.n_units, seed=args.seed, stretch=args.stretch
        )
        for path in written.values():
            print(f"wrote {path}")
        frames.append(result.to_frame())
    with zoo.atomic_path(csv_path, suffix=".csv") as tmp:
        pd.concat(frames, ignore_index=True).to_csv(tmp, index=False)
    print(f"wrote {csv_path}")
    return 0
