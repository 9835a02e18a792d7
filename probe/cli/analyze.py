"""``probe analyze STUDY.toml``: run a study file (models, stimuli, analyses) and write its report."""

from __future__ import annotations

import argparse

HELP = "run a study file: record its models (cached), run its analyses, write report.html and results/*.csv"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("study", metavar="STUDY.toml", help="the study file (write an example with `probe init-study`)")
    parser.add_argument("--out", default=None, help="output folder (default: the study file's `out`)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 or auto (default: the study file's `device`)")
    parser.add_argument("--check", action="store_true",
                        help="only check the study file (names, types, files), without loading torch or any model")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars or status lines")
    parser.add_argument("--plan", action="store_true",
                        help="print, per model, the bytes its recordings will hold on the device, in RAM and on disk, "
                        "and exit without recording")
    parser.add_argument("--max-ram", default=None, metavar="SIZE",
                        help="refuse to start a study one of whose recording passes needs more RAM than this "
                        "(8GiB, 500MB, 1.5e9)")
    parser.add_argument("--max-disk", default=None, metavar="SIZE",
                        help="refuse to start a study whose recordings would write more than this into its cache "
                        "(8GiB, 500MB, 1.5e9)")


def run(args: argparse.Namespace) -> int:
    from probe.cli._helpers import memory_budgets
    from probe.study._layer_listing import precheck_layers
    from probe.study._spec import StudySpec

    budgets = memory_budgets(args)  # a misspelt size is refused before anything loads
    spec = StudySpec.from_file(args.study)  # every name, type and file is checked before torch loads
    precheck_layers(spec)  # and the layer names, against those stored when each model was last built
    if args.check:
        print(f"{args.study}: {len(spec.models)} models, analyses {', '.join(spec.analyses)}; output {spec.out}")
        return 0
    from probe.study import Study
    from zoo._distributed import torchrun_group

    with torchrun_group(args.device or spec.device) as current:  # under torchrun: the ranks record together
        return _run_study(Study(spec, out=args.out), args, budgets, current.is_main)


def _run_study(study, args: argparse.Namespace, budgets: dict[str, int], main: bool) -> int:
    """Plan, check the budgets and run the study; rank 0 alone prints (and writes the report)."""
    if args.plan or budgets:
        from probe.study._plan_study import plan_study

        plan = plan_study(study.spec, device=args.device)
        if args.plan and main:
            print(plan)
        plan.check(**budgets)
        if args.plan:
            return 0
    result = study.run(progress=not args.no_progress and main, device=args.device)
    if not main:
        return 0
    for model in result.recordings:
        recorded, cached = result.recorded.get(model, []), result.from_cache.get(model, [])
        print(f"  {model:<20} {len(recorded)} recorded, {len(cached)} read from the cache (layers and top-k passes)")
    for name, reason in result.failed.items():
        print(f"  left out: {name} ({reason})")
    print(f"report: {result.report}")
    print(f"tables: {result.out / 'results'} ({len(result.tables)} CSV files)")
    return 0
