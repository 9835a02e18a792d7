"""``probe record RUN_OR_MODEL --layers ... --out PATH``: record layers to an on-disk store."""

from __future__ import annotations

import argparse

from probe.cli._helpers import MODEL_HELP, add_dataset_arguments, add_model_arguments

HELP = (
    "record layers of a trained run (or any model) over a dataset into an on-disk recording folder; under "
    "`torchrun --nproc-per-node N` each process records its share of the stimuli into the one folder"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN_OR_MODEL", help=MODEL_HELP)
    add_dataset_arguments(parser)
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
    parser.add_argument("--num-workers", type=int, default=0,
                        help="DataLoader worker processes that decode stimuli (per process under torchrun; default 0)")
    parser.add_argument("--amp", action="store_true",
                        help="run the forward pass under autocast (float16 on CUDA, bfloat16 on the CPU)")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted recording at --out")
    parser.add_argument("--overwrite", action="store_true", help="replace the recording at --out")
    parser.add_argument("--no-progress", action="store_true", help="no status lines or progress bar")
    parser.add_argument("--plan", action="store_true",
                        help="print the bytes the recording will hold on the device, in RAM and on disk, per layer, "
                        "and exit without recording")
    parser.add_argument("--max-ram", default=None, metavar="SIZE",
                        help="refuse to start a recording that would hold more RAM than this (8GiB, 500MB, 1.5e9)")
    parser.add_argument("--max-disk", default=None, metavar="SIZE",
                        help="refuse to start a recording that would write more than this to disk (8GiB, 500MB, 1.5e9)")
    add_model_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Record; under ``torchrun --nproc-per-node N`` each process records its share of the stimuli into the one store."""
    from zoo._distributed import torchrun_group

    with torchrun_group(args.device) as current:
        return _record(args, current)


def _record(args: argparse.Namespace, current) -> int:
    import sys

    from probe import record
    from probe.cli._helpers import load_model_and_stimuli, memory_budgets, status

    budgets = memory_budgets(args)  # a misspelt size is refused before the model loads
    show = not args.no_progress and current.is_main  # one process speaks for a distributed run
    model, dataset, _ = load_model_and_stimuli("record", args.run_dir, args, args.split, show)
    if current.distributed:  # an architecture without weights is built at random: every rank takes rank 0's
        from zoo._distributed import broadcast_module

        broadcast_module(model)
    if args.layers is None and not hasattr(model, "recordable_layers"):
        raise ValueError(f"{args.run_dir} has no recordable_layers(); name the layers with --layers (see `probe layers`)")
    layers = args.layers or model.recordable_layers()
    if args.plan or budgets:
        status("record", "planning the recording's memory (one forward pass on two stimuli) ...", show)
        plan = _plan(model, dataset, layers, args, current.size)
        if args.plan and current.is_main:
            print(plan)
        plan.check(**budgets)
        if args.plan:
            return 0
    status("record", f"recording {len(dataset)} stimuli into {args.out} ...", show)
    flushed_before = _flushed(args.out)
    try:
        recording = record(
            model, dataset, layers, **_recording_options(args), resume=args.resume, overwrite=args.overwrite,
            progress=show, num_workers=args.num_workers, amp=args.amp,
        )
    except Exception:
        # A pass that failed before its first flush left nothing (probe.record removes it); one that
        # flushed stimuli left them for --resume: say so, as the error alone would not.
        kept = _flushed(args.out)
        if kept > flushed_before and current.is_main:
            print(f"probe record: the {kept} stimuli recorded before the error are kept in {args.out}; continue "
                  "with --resume once the cause is fixed, or start again with --overwrite", file=sys.stderr)
        raise
    if current.is_main:
        print(recording.to_frame().to_string(index=False))
        processes = f" by {current.size} processes" if current.distributed else ""
        print(f"recorded {recording.n_stimuli} stimuli x {len(recording.layers)} layers to {args.out}{processes}")
    return 0


def _recording_options(args: argparse.Namespace) -> dict:
    """The options of ``probe.record`` (and of its memory plan) that these arguments give."""
    from probe.cli._helpers import parse_reduce

    return {
        "reduce": parse_reduce(args.reduce),
        "layout": None if args.layout is None else parse_reduce(args.layout, flag="--layout"),
        "batch_size": args.batch_size,
        "device": args.device,
        "out": args.out,
        "dtype": args.dtype,
        "project": args.project,
    }


def _plan(model, dataset, layers, args: argparse.Namespace, world_size: int = 1):
    """The memory plan (``probe._plan.RecordingPlan``) of the recording these arguments ask for."""
    from probe._plan import plan_recording

    return plan_recording(model, dataset, layers, **_recording_options(args), world_size=world_size)


def _flushed(out: str) -> int:
    """The stimuli an incomplete recording at ``out`` holds (0 when there is none)."""
    from probe._store import flushed_stimuli, read_manifest

    try:
        manifest = read_manifest(out)
    except (OSError, ValueError):
        return 0
    return 0 if manifest.get("complete") else flushed_stimuli(out, manifest)
