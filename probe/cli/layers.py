"""``probe layers RUN_OR_MODEL``: list a model's recordable layers with output shapes and sizes."""

from __future__ import annotations

import argparse

from probe.cli._helpers import MODEL_HELP, add_dataset_arguments, add_model_arguments

HELP = "list the recordable layers of a run or any model, with output shapes (one dry batch) and parameter counts"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_or_model", metavar="RUN_OR_MODEL", help=MODEL_HELP)
    add_dataset_arguments(parser, split=False)  # the test split's first stimuli give the input shape
    parser.add_argument("--all", action="store_true", help="list every named module, not only the recordable layers")
    add_model_arguments(parser)


def run(args: argparse.Namespace) -> int:
    import torch

    from probe import describe_layers
    from probe.cli._helpers import load_model_and_stimuli, status

    model, dataset, stimuli = load_model_and_stimuli("layers", args.run_or_model, args, "test")
    example = torch.stack([torch.as_tensor(dataset[i][0]) for i in range(min(2, len(dataset)))])
    device = next(iter(model.parameters()), torch.empty(0)).device
    layers = [name for name, _ in model.named_modules() if name] if args.all else None
    status("layers", "one dry batch through the model ...")
    table = describe_layers(model, example.to(device), layers)
    print(table.to_string(index=False))
    # A run records its own dataset without --dataset; any other choice must be named again.
    dataset_flag = "" if stimuli.source == "run" else f" --dataset {stimuli.name}"
    print(f"{len(table)} layers; record them with `probe record {args.run_or_model}{dataset_flag} --layers NAME ...`")
    return 0
