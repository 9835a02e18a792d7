"""The ``probe`` command line: one verb per module in this package.

Each command module defines ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``.
Adding a verb is adding a module and one entry to ``COMMANDS``.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import sys

__all__ = ["main", "console_main", "build_parser", "COMMANDS", "USER_ERRORS"]

# verb -> module. A verb module imports torch and the packages it needs inside ``run``, so that
# ``probe --help`` and argument errors answer at once.
COMMANDS = {
    "demo": "probe.cli.demo",
    "train": "probe.cli.train",
    "layers": "probe.cli.layers",
    "record": "probe.cli.record",
    "patches": "probe.cli.patches",
    "analyze": "probe.cli.analyze",
    "init-study": "probe.cli.init_study",
    "models": "probe.cli.models",
    "datasets": "probe.cli.datasets",
}

# Errors that come from the user's input, a file or a busy folder (zoo.FolderLockedError is an OSError), or a
# diverged run; printed as one line, without a traceback.
USER_ERRORS = (ValueError, LookupError, OSError, FloatingPointError)


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser with one sub-parser per available verb."""
    parser = argparse.ArgumentParser(
        prog="probe",
        description="Neuroscience-style analysis of neural networks: train, record, analyse, report.",
    )
    parser.add_argument("--traceback", action="store_true", help="show the full traceback on errors")
    verbs = parser.add_subparsers(dest="command", metavar="COMMAND")
    for verb, module_name in COMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name == module_name:  # verb not built yet
                continue
            raise
        sub = verbs.add_parser(verb, help=module.HELP, description=module.HELP)
        module.add_arguments(sub)
        sub.set_defaults(run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``probe`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return _run_verb(args)
    except KeyboardInterrupt:
        print("probe: interrupted", file=sys.stderr)
        return 130
    except USER_ERRORS as err:
        if args.traceback:
            raise
        # The Python API's advice names keyword arguments (overwrite=True); here it names the verb's flags.
        from probe.cli._helpers import flag_spelling, parser_flags

        verb_parser = parser._subparsers._group_actions[0].choices[args.command]
        print(f"probe {args.command}: error: {flag_spelling(str(err), parser_flags(verb_parser))}", file=sys.stderr)
        return 2


def _run_verb(args: argparse.Namespace) -> int:
    """The verb's exit status; under torchrun, 1 without a word for a copy of another process's error
    (``zoo._distributed`` raises those on every rank), which the process it happened in reports."""
    try:
        return int(args.run(args) or 0)
    except BaseException as err:
        if getattr(err, "raised_on_rank", None) is None:  # this process's own error
            raise
        return 1


def console_main() -> int:
    """Entry point of the ``probe`` console script and ``python -m probe``: ``main`` for a process that
    ends right after it."""
    status = main()
    # At exit the interpreter's garbage collector walks every object torch, pandas and matplotlib
    # created (over a second on 2 cores). Freezing them skips that walk; objects are still freed and
    # files were closed by the command itself.
    gc.freeze()
    return status


if __name__ == "__main__":
    sys.exit(console_main())
