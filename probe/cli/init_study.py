"""``probe init-study [PATH]``: write a commented example study file to edit."""

from __future__ import annotations

import argparse

HELP = "write a commented example study file (models, stimuli, analyses) to edit and run with `probe analyze`"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", nargs="?", default="study.toml", metavar="PATH", help="where to write (default study.toml)")
    parser.add_argument("--force", action="store_true", help="replace an existing file at PATH")


def run(args: argparse.Namespace) -> int:
    from probe.study._template import write_template

    path = write_template(args.path, force=args.force)
    print(f"wrote {path}; edit it, then run `probe analyze {path}`")
    return 0
