"""Helpers shared by the ``probe`` verbs: model and dataset arguments, status lines, advice in flag spelling."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:  # torch is imported inside the commands' run, so that `probe --help` stays quick
    from torch import nn

__all__ = [
    "CALL_COMMANDS",
    "DEFAULT_DATASET",
    "DatasetChoice",
    "add_dataset_arguments",
    "add_model_arguments",
    "choose_dataset",
    "flag_spelling",
    "load_model_and_stimuli",
    "load_run_or_model",
    "parse_reduce",
    "parse_settings",
    "parser_flags",
    "run_dataset",
    "status",
    "verb_flags",
]

#: The stimuli of a model that names no dataset of its own (anything but a run folder).
DEFAULT_DATASET = "digits"

#: How a model can be named on the command line (``zoo.load_model``'s spellings).
MODEL_HELP = (
    "a run directory, a zoo model name, pretrained:NAME (see zoo.list_pretrained()), torchvision:NAME, "
    "timm:NAME, hf:PATH or FILE.py:FACTORY"
)


def load_run_or_model(
    run_or_model: str, device: str = "cpu", *, weights: str | None = None, allow_download: bool = False
) -> nn.Module:
    """Any model spelling of ``zoo.load_model``: a run directory, a zoo model name (untrained),
    ``pretrained:NAME``, ``torchvision:NAME``, ``timm:NAME``, ``hf:PATH`` or ``FILE.py:FACTORY``.

    Raises
    ------
    FileNotFoundError
        When the argument looks like a path (contains a slash) but no such folder exists.
    ValueError
        When a package the spelling needs is missing (the message gives the pip line), besides
        ``zoo.load_model``'s own errors.
    """
    import zoo

    try:
        return zoo.load_model(run_or_model, weights=weights, device=device, allow_download=allow_download)
    except ModuleNotFoundError as err:
        if "pip install" not in str(err):
            raise
        raise ValueError(str(err)) from err  # a missing optional package: one line, as user errors are


def add_model_arguments(parser: Any) -> None:
    """``--weights`` and ``--allow-download``, shared by the verbs that load a model."""
    parser.add_argument(
        "--weights", default=None, metavar="FILE",
        help="a .safetensors/.pt/.pth state dict to load into the model (for torchvision:/timm: also 'pretrained')",
    )
    parser.add_argument(
        "--allow-download", action="store_true", help="download pretrained weights that are not in their cache"
    )


def parse_reduce(text: str, flag: str = "--reduce") -> Any:
    """Parse ``--reduce`` (or ``--layout``): one value (``"mean"``) or per-layer ``"layer1=flatten,fc*=auto"``."""
    if "=" not in text:
        return text.strip()
    reduce = {}
    for item in text.split(","):
        if "=" not in item:
            raise ValueError(f"{flag} item {item!r} must read LAYER=VALUE, e.g. 'conv1=flatten,fc1=auto'")
        layer, mode = item.split("=", 1)
        reduce[layer.strip()] = mode.strip()
    return reduce


def parse_settings(settings: list[str], flag: str = "--set") -> dict:
    """Turn ``["lr=0.1", "hidden=[64,32]", "activation=relu"]`` into a dict of typed values.

    Raises
    ------
    ValueError
        If an item has no ``=`` or an empty key.
    """
    parsed = {}
    for item in settings:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"{flag} expects KEY=VALUE (for example {flag} name=3), got {item!r}")
        try:
            parsed[key] = json.loads(text)
        except json.JSONDecodeError:
            parsed[key] = text
    return parsed


# -- the stimuli ---------------------------------------------------------------------------------
def add_dataset_arguments(parser: Any, *, split: bool = True) -> None:
    """``--dataset``, ``--dataset-option`` (and ``--split``): by default the run's own dataset, else digits."""
    parser.add_argument(
        "--dataset", default=None,
        help=f"dataset name (default: a run folder's own training dataset, with its options; {DEFAULT_DATASET} "
        "for any other model, which names none; see `probe datasets`)",
    )
    parser.add_argument(
        "--dataset-option", dest="dataset_options", action="append", default=[], metavar="KEY=VALUE",
        help="dataset option, repeatable, e.g. --dataset-option patch_size=12 (added to a run's own options)",
    )
    if split:
        parser.add_argument("--split", default="test", choices=["train", "test"], help="dataset split (default: test)")


def run_dataset(run_or_model: str) -> tuple[str, dict[str, Any]] | None:
    """The (name, options) of the dataset a run folder was trained on; None for any other model spelling,
    or a run whose ``config.json`` names no dataset."""
    import zoo

    path = Path(run_or_model)
    if not (path / "config.json").is_file():
        return None
    try:
        return zoo.RunDir(path).training_dataset()
    except ValueError:
        return None


class DatasetChoice(NamedTuple):
    """The stimuli a verb uses: a ``zoo.load_dataset`` name and options, and where the choice came from."""

    name: str
    options: dict[str, Any]
    source: str  # "flag" (--dataset), "run" (the run's training dataset) or "default" (DEFAULT_DATASET)

    def describe(self, split: str | None = None) -> str:
        """E.g. ``natural-patches (patch_size=12), test split (the run's training dataset)``."""
        text = self.name
        if self.options:
            text += " (" + ", ".join(f"{key}={value!r}" for key, value in self.options.items()) + ")"
        if split:
            text += f", {split} split"
        why = {
            "flag": "--dataset",
            "run": "the run's training dataset",
            "default": "the default for a model that names no dataset; choose another with --dataset",
        }[self.source]
        return f"{text} ({why})"


def choose_dataset(run_or_model: str, dataset: str | None, options: list[str]) -> DatasetChoice:
    """The stimuli for a model: ``--dataset`` if given, else a run's own dataset, else ``DEFAULT_DATASET``.

    A run's stored options apply whenever its own dataset is used (also when ``--dataset`` names it);
    ``--dataset-option`` values are added on top.
    """
    given = parse_settings(options, flag="--dataset-option")
    trained = run_dataset(run_or_model)
    if dataset is not None:
        own = trained is not None and _same_dataset(dataset, trained[0])
        return DatasetChoice(dataset, {**(trained[1] if own else {}), **given}, "flag")
    if trained is not None:
        return DatasetChoice(trained[0], {**trained[1], **given}, "run")
    return DatasetChoice(DEFAULT_DATASET, given, "default")


def _same_dataset(given: str, trained: str) -> bool:
    if given == trained:
        return True
    image_folder = "imagefolder:"
    if given.startswith(image_folder) and trained.startswith(image_folder):
        return Path(given[len(image_folder):]).expanduser().resolve() == Path(trained[len(image_folder):])
    return False


def load_model_and_stimuli(verb: str, run_or_model: str, args: Any, split: str, show: bool = True) -> tuple[Any, Any, DatasetChoice]:
    """The model and its stimuli for a verb: ``--dataset`` or the run's own, resized and normalised as
    the model expects (``zoo.prepare_for``), refused when a zoo model was built for another shape.

    ``args`` carries ``weights``, ``allow_download``, ``dataset`` and ``dataset_options``; a status line
    says what each step is doing. Returns ``(model, dataset, the dataset choice)``.
    """
    import zoo

    stimuli = choose_dataset(run_or_model, args.dataset, args.dataset_options)
    status(verb, f"loading the model {run_or_model} ...", show)
    model = load_run_or_model(run_or_model, weights=args.weights, allow_download=args.allow_download)
    status(verb, f"loading the stimuli: {stimuli.describe(split)} ...", show)
    dataset = zoo.prepare_for(model, zoo.load_dataset(stimuli.name, split=split, **stimuli.options))
    zoo.check_input_shape(model, dataset, subject=f"--dataset {stimuli.name}",
                          advice="pass the --dataset it was trained on (its config.json names it)")
    return model, dataset, stimuli


# -- what the command line says ------------------------------------------------------------------
def status(verb: str, message: str, enabled: bool = True) -> None:
    """One line on stderr saying what a long step is doing (``probe record: loading the model cnn ...``).

    Like a progress bar it is shown on a terminal only, so that piped output and one-line error
    reports stay as they are; ``enabled`` is False under ``--no-progress`` / ``--quiet``.
    """
    stream = sys.stderr
    if enabled and getattr(stream, "isatty", lambda: False)():
        print(f"probe {verb}: {message}", file=stream, flush=True)


def parser_flags(parser: Any) -> list[str]:
    """The long option strings (``--overwrite``...) of an ``argparse`` parser."""
    return [option for action in parser._actions for option in action.option_strings if option.startswith("--")]


def verb_flags(add_arguments: Callable[[Any], None]) -> list[str]:
    """The long option strings that a verb's ``add_arguments`` defines."""
    import argparse

    parser = argparse.ArgumentParser(add_help=False)
    add_arguments(parser)
    return parser_flags(parser)


#: Python calls whose advice other verbs pass on (a run to retrain or resume), and the command that does the same.
CALL_COMMANDS = {"zoo.train": "probe train"}


def flag_spelling(message: str, flags: Iterable[str]) -> str:
    """Advice written for Python callers, in the spelling of the command line.

    Messages of the Python API name keyword arguments: of the call that raised them (``overwrite=True``,
    ``out=...``), or of another call spelled out (``zoo.train(..., force=True)``). On the command
    line the same advice names flags: a call of ``CALL_COMMANDS`` becomes its command
    (`` `probe train ... --force` ``); otherwise, for each flag of the verb, ``NAME=True`` becomes
    ``--NAME`` and ``NAME=...`` becomes ``--NAME ...`` (underscores read as dashes, as argparse
    spells them). Keywords the verb has no flag for stay as they are.
    """
    for call, command in CALL_COMMANDS.items():
        message = re.sub(
            rf"{re.escape(call)}\(\.\.\., (\w+)=True\)",
            lambda match, command=command: f"`{command} ... --{match[1].replace('_', '-')}`",
            message,
        )
    for flag in flags:
        keyword = re.escape(flag[2:].replace("-", "_"))
        message = re.sub(rf"(?<![\w.-]){keyword}=True\b", flag, message)
        message = re.sub(rf"(?<![\w.-]){keyword}=\.\.\.", f"{flag} ...", message)
    return message


def memory_budgets(args: Any) -> dict[str, int]:
    """``{"max_ram": bytes, "max_disk": bytes}`` of the sizes ``--max-ram`` and ``--max-disk`` give (none: {});
    a misspelt size is refused."""
    given = {flag: size for flag, size in {"max_ram": args.max_ram, "max_disk": args.max_disk}.items() if size}
    if not given:
        return {}  # `--check` alone must not import torch
    from probe._plan import parse_size

    return {flag: parse_size(size) for flag, size in given.items()}
