"""``probe models``: every model the other verbs load, and how to spell it.

Three sections: the zoo's architectures (untrained until ``probe train``), the pretrained networks
(with whether their weights and packages are here, so that they load offline, and how to get them
when not), and the other spellings ``zoo.load_model`` accepts.
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

HELP = "list the models that can be loaded: zoo models, pretrained networks (offline or not) and other spellings"

SECTIONS = ("zoo", "pretrained", "spellings")

#: The spellings of ``zoo.load_model`` besides a zoo or pretrained name: (spelling, what it loads, package it needs).
OTHER_SPELLINGS = (
    ("RUN_DIR", "a run folder written by `probe train`: its weights, settings and training dataset", None),
    ("zoo:NAME", "an untrained zoo model; the bare NAME works when no other spelling claims it", None),
    ("pretrained:NAME", "a pretrained network of the list above, with its preprocessing and class names", None),
    ("torchvision:NAME", ("a torchvision architecture (torchvision.models.list_models()); random weights unless "
                          "--weights FILE, or --weights pretrained for torchvision's own"), "torchvision"),
    ("timm:NAME", ("a timm architecture (timm.list_models()); random weights unless --weights FILE, or --weights "
                   "pretrained for timm's own"), "timm"),
    ("hf:PATH", ("a Hugging Face model from a local folder, or a Hub id already in the Hugging Face cache "
                 "(--allow-download fetches it)"), "transformers"),
    ("FILE.py:FACTORY", "FACTORY() of your own Python file, with --weights FILE loaded into it if given", None),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``probe models``'s arguments to ``parser``."""
    parser.add_argument(
        "--family", default=None, help="only the zoo models of this family (e.g. supervised, autoencoder)"
    )
    parser.add_argument(
        "--only", choices=SECTIONS, default=None,
        help="one section: zoo (architectures to train), pretrained (networks with weights) or spellings",
    )


def run(args: argparse.Namespace) -> int:
    import zoo

    sections = [args.only] if args.only else (["zoo"] if args.family else list(SECTIONS))
    if args.family is not None:
        families = sorted({zoo.model_entry(name).family for name in zoo.list_models()})
        if args.family not in families:
            raise zoo.unknown_name_error("model family", args.family, families)
    printers = {"zoo": _print_zoo, "pretrained": _print_pretrained, "spellings": _print_spellings}
    for position, section in enumerate(sections):
        if position:
            print()
        printers[section](args)
    return 0


def _print_zoo(args: argparse.Namespace) -> None:
    import zoo

    rows = []
    for name in zoo.list_models(args.family):
        entry = zoo.model_entry(name)
        objective = entry.objective.__name__.removesuffix("_objective")
        rows.append((name, entry.family, objective, str(entry.defaults.epochs)))
    which = f"of the {args.family} family" if args.family else "(spell them NAME or zoo:NAME)"
    print(f"zoo models {which}: untrained until `probe train NAME --out RUN`")
    _print_table(("name", "family", "objective", "epochs"), rows)


def pretrained_availability(name: str) -> tuple[bool, str]:
    """Whether ``pretrained:NAME`` loads here without the internet, and if not, how to get it.

    The entry's own weight lookup runs with its file reader replaced by a check that the file exists,
    so nothing is read or downloaded: a missing package raises ModuleNotFoundError (with the pip
    line) and weights missing from their cache FileNotFoundError (with the folder and the download).

    Returns
    -------
    tuple
        ``(available, how to get it)``; the second is "" when available.
    """
    from unittest import mock

    from probe.cli._helpers import flag_spelling
    from zoo import _pretrained

    def exists(path, *args, **kwargs):
        if not Path(path).is_file():
            raise FileNotFoundError(f"the weights file {str(path)!r} is missing")
        return {}

    try:
        with mock.patch.object(_pretrained, "load_state_dict_file", exists):
            _pretrained.pretrained_entry(name).state_dict(False)
    except (ModuleNotFoundError, FileNotFoundError) as err:
        return False, flag_spelling(str(err), ["--allow-download"])
    return True, ""


def _print_pretrained(args: argparse.Namespace) -> None:
    import zoo
    from zoo._pretrained import pretrained_entry

    print("pretrained networks (spell them pretrained:NAME): 'offline' ones load without the internet")
    rows = []
    for name in zoo.list_pretrained():
        available, install = pretrained_availability(name)
        rows.append((name, "offline" if available else "not here", pretrained_entry(name).source))
        if install:
            rows.append(("", "", f"to get it: {install}"))
    _print_table(("name", "weights", "source"), rows)


def _print_spellings(args: argparse.Namespace) -> None:
    from zoo._model_spec import PIP_HF
    from zoo._pretrained import PIP_PRETRAINED

    pip_lines = {"timm": PIP_PRETRAINED, "transformers": PIP_HF}
    print("other spellings, for `probe layers`, `probe record`, `probe patches` and zoo.load_model:")
    rows = []
    for spelling, meaning, package in OTHER_SPELLINGS:
        if package is not None and importlib.util.find_spec(package) is None:
            meaning += f" (needs {package}, which is not installed: {pip_lines.get(package, f'pip install {package}')})"
        rows.append((spelling, meaning))
    _print_table(("spelling", "what it loads"), rows)


def _print_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    """Left-aligned columns, the last one unpadded."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header) - 1)]
    for row in [header, *rows]:
        cells = [cell.ljust(width) for cell, width in zip(row, widths)]
        print("  " + "  ".join([*cells, row[-1]]).rstrip())
