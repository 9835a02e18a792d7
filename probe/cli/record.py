"""``probe record RUN_DIR --dataset D --layers ... --out PATH``: record layers to an on-disk store."""

from __future__ import annotations

import argparse

from probe.cli._helpers import MODEL_HELP, add_model_arguments

HELP = "record layers of a trained run (or any model) over a dataset into an on-disk recording folder"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN_DIR", help=MODEL_HELP)
    parser.add_argument("--dataset", default="digits", help="dataset name (default digits)")
    parser.add_argument("--split", default="test", choices=["train", "test"], help="dataset split (default test)")
    parser.add_argument("--layers", nargs="+", default=None, help="layer names or globs (default: the model's recordable layers)")
    parser.add_argument("--out", required=True, help="recording folder to write")
    parser.add_argument("--reduce", default="auto", help="reduction: one mode or LAYER=MODE,... (default auto)")
    parser.add_argument(
        "--layout",
        default=None,
        help="how layer outputs are arranged where it cannot be told: one of channels-first, channels-last, tokens, "
        "tokens+N, vector, or LAYER=LAYOUT,... (default: detected)",
    )
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16"])
    parser.add_argument("--project", type=int, default=None, help="random-project layers wider than this many units")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted recording at --out")
    parser.add_argument("--overwrite", action="store_true", help="replace the recording at --out")
    parser.add_argument("--no-progress", action="store_true")
    add_model_arguments(parser)


def run(args: argparse.Namespace) -> int:
    import zoo
    from probe import record
    from probe.cli._helpers import check_model_fits_dataset, load_run_or_model, parse_reduce, prepare_for_model

    model = load_run_or_model(args.run_dir, weights=args.weights, allow_download=args.allow_download)
    dataset = prepare_for_model(model, zoo.load_dataset(args.dataset, split=args.split))
    check_model_fits_dataset(model, dataset, args.dataset)
    if args.layers is None and not hasattr(model, "recordable_layers"):
        raise ValueError(f"{args.run_dir} has no recordable_layers(); name the layers with --layers (see `probe layers`)")
    layers = args.layers or model.recordable_layers()
    recording = record(
        model,
        dataset,
        layers,
        reduce=parse_reduce(args.reduce),
        layout=None if args.layout is None else parse_reduce(args.layout, flag="--layout"),
        batch_size=args.batch_size,
        device=args.device,
        out=args.out,
        dtype=args.dtype,
        project=args.project,
        resume=args.resume,
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    print(recording.to_frame().to_string(index=False))
    print(f"recorded {recording.n_stimuli} stimuli x {len(recording.layers)} layers to {args.out}")
    return 0
