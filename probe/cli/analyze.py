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


def run(args: argparse.Namespace) -> int:
    from probe.study._layer_listing import precheck_layers
    from probe.study._spec import StudySpec

    spec = StudySpec.from_file(args.study)  # every name, type and file is checked before torch loads
    precheck_layers(spec)  # and the layer names, against those stored when each model was last built
    if args.check:
        print(f"{args.study}: {len(spec.models)} models, analyses {', '.join(spec.analyses)}; output {spec.out}")
        return 0
    from probe.study import Study

    study = Study(spec, out=args.out)
    result = study.run(progress=not args.no_progress, device=args.device)
    for model in result.recordings:
        recorded, cached = result.recorded.get(model, []), result.from_cache.get(model, [])
        print(f"  {model:<20} {len(recorded)} recorded, {len(cached)} read from the cache (layers and top-k passes)")
    for name, reason in result.failed.items():
        print(f"  left out: {name} ({reason})")
    print(f"report: {result.report}")
    print(f"tables: {result.out / 'results'} ({len(result.tables)} CSV files)")
    return 0
