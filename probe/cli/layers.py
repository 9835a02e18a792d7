"""``probe layers RUN_OR_MODEL``: list a model's recordable layers with output shapes and sizes."""

from __future__ import annotations

import argparse

import torch

from probe.cli._helpers import MODEL_HELP, add_model_arguments

HELP = "list the recordable layers of a run or any model, with output shapes (one dry batch) and parameter counts"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_or_model", metavar="RUN_OR_MODEL", help=MODEL_HELP)
    parser.add_argument("--dataset", default="digits", help="dataset whose stimuli give the input shape (default digits)")
    parser.add_argument("--all", action="store_true", help="list every named module, not only the recordable layers")
    add_model_arguments(parser)


def run(args: argparse.Namespace) -> int:
    import zoo
    from probe import describe_layers
    from probe.cli._helpers import check_model_fits_dataset, load_run_or_model, prepare_for_model

    model = load_run_or_model(args.run_or_model, weights=args.weights, allow_download=args.allow_download)
    dataset = prepare_for_model(model, zoo.load_dataset(args.dataset, split="test"))
    check_model_fits_dataset(model, dataset, args.dataset)
    example = torch.stack([torch.as_tensor(dataset[i][0]) for i in range(min(2, len(dataset)))])
    device = next(iter(model.parameters()), torch.empty(0)).device
    layers = [name for name, _ in model.named_modules() if name] if args.all else None
    table = describe_layers(model, example.to(device), layers)
    print(table.to_string(index=False))
    print(f"{len(table)} layers; record them with `probe record RUN_DIR --dataset {args.dataset} --layers NAME ...`")
    return 0
