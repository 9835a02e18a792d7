"""``probe train``: train a zoo model (or a family's default model) into a run directory."""

from __future__ import annotations

import argparse
import sys

from probe.cli._helpers import parse_settings

HELP = "train a zoo model on a dataset into a run folder (resumable, never pickled)"

DISTRIBUTED_HELP = (
    "Distributed: `torchrun --nproc-per-node N -m probe train ...` (or `torchrun ... .venv/bin/probe train ...`) "
    "trains with DistributedDataParallel, gloo on the CPU and nccl with one GPU per process. Every process takes "
    "its slice of each batch of batch_size items (at least N; a multiple of N gives the one-process gradient), so "
    "the schedule and the result are a one-process run's up to the order of sums, except that BatchNorm "
    "normalises each process's slice with its own statistics, and augmentations, masks and dropout draw per "
    "process. Contrastive losses (simclr, clip) take their negatives from the whole batch. Rank 0 alone writes "
    "--out and prints; --resume works the same way."
)

# A family name picks the model that best represents it.
FAMILY_DEFAULT_MODEL = {
    "supervised": "cnn",
    "autoencoder": "ae-conv",
    "mae": "mae",
    "contrastive": "simclr",
    "image-text": "clip",
    "word-embedding": "word2vec",
    "masked-lm": "mlm",
    "pretext": "colorization",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``probe train``'s arguments to ``parser``."""
    parser.add_argument(
        "model",
        metavar="FAMILY_OR_MODEL",
        help=f"a zoo model name (see zoo.list_models()) or a family ({', '.join(FAMILY_DEFAULT_MODEL)}), "
        "which picks its default model",
    )
    parser.add_argument("--dataset", default=None, help="dataset name (default: digits, or the resumed run's)")
    parser.add_argument("--out", required=True, help="run folder to write (config.json, log.csv, model.safetensors, state/)")
    parser.add_argument(
        "--epochs", type=int, default=None,
        help="number of epochs (default: the model's own, or the resumed run's; with --resume, more than the run "
        "has trains a finished run further)",
    )
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: 0, or the resumed run's)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto (default: auto)")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its last checkpoint, with its stored settings (dataset, seed, epochs, --set); "
        "with a larger --epochs, train a finished run further",
    )
    parser.add_argument("--force", action="store_true", help="delete an earlier run in --out first")
    parser.add_argument(
        "--set",
        dest="settings",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="model or training setting (lr, batch_size, weight_decay, warmup_epochs, optimizer=adamw|sgd, or the "
        "model's own), repeatable; VALUE is read as JSON when it parses (3, 0.1, [64,32], true), else as a string",
    )
    parser.add_argument(
        "--dataset-option",
        dest="dataset_options",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="dataset option, repeatable, e.g. --dataset-option patch_size=12 for natural-patches",
    )
    parser.add_argument("--quiet", action="store_true", help="no status lines or progress bar")
    parser.epilog = DISTRIBUTED_HELP


def resolve_model_name(name: str) -> str:
    """Map a family name to its default model; check a model name against the registry.

    Raises
    ------
    LookupError
        If ``name`` is neither a family nor a registered model; the message lists the nearest names.
    """
    import zoo

    if name in FAMILY_DEFAULT_MODEL:
        return FAMILY_DEFAULT_MODEL[name]
    models = list(zoo.list_models())
    if name in models:
        return name
    raise zoo.unknown_name_error("family or model", name, [*FAMILY_DEFAULT_MODEL, *models])


def check_dataset_name(name: str) -> None:
    """Raise LookupError listing the valid dataset names when ``name`` is not one of them."""
    import zoo

    patterns = ("imagefolder:PATH", "text:PATH")
    names = [valid for valid in zoo.list_datasets() if valid not in patterns]
    if name in names or name.startswith(tuple(pattern.removesuffix("PATH") for pattern in patterns)):
        return
    raise zoo.unknown_name_error("dataset", name, [*names, *patterns])


def stored_run_settings(out: str) -> dict:
    """The settings a run was started with, read from its ``config.json``, so that ``--resume`` needs no repeats.

    Returns
    -------
    dict
        Any of ``dataset``, ``dataset_options``, ``seed``, ``epochs`` and ``settings`` (the model
        options and training hyper-parameters, as ``--set`` would give them); {} when ``out``
        holds no config (``zoo.train`` then reports that there is nothing to resume).
    """
    import zoo

    run = zoo.RunDir(out)
    if not run.config_path.is_file():
        return {}
    config = run.read_config()
    model = dict(config.get("model") or {})
    training = dict(config.get("training") or {})
    dataset = config.get("dataset") or {}
    # Shapes and class counts follow from the dataset; the objective from the model.
    settings = {k: v for k, v in model.items() if k not in ("name", "input_shape", "n_classes")}
    settings.update({k: v for k, v in training.items() if k not in ("seed", "epochs", "objective")})
    stored = {"settings": settings, "dataset_options": dict(dataset.get("options") or {})}
    stored.update({key: training[key] for key in ("seed", "epochs") if key in training})
    if "name" in dataset:
        stored["dataset"] = run.training_dataset()[0]  # an image folder by its absolute path, from anywhere
    return stored


def run(args: argparse.Namespace) -> int:
    """Train, then print where the run was written and its final metrics.

    Under ``torchrun`` this process joins the group torchrun describes (``zoo._distributed.torchrun_group``)
    and leaves it at the end; rank 0 alone prints (a copy of another rank's error is not printed again). Returns 0 on success and 1 when training
    diverged (its last good checkpoint is kept).
    """
    from zoo._distributed import torchrun_group

    with torchrun_group(args.device):
        return _train(args)


def _train(args: argparse.Namespace) -> int:
    """``run``'s work in this process (one of several under torchrun)."""
    import zoo
    from probe.cli._helpers import flag_spelling, status, verb_flags
    from probe.study._layer_listing import remember_run_layers

    model_name = resolve_model_name(args.model)
    stored = stored_run_settings(args.out) if args.resume else {}
    dataset = args.dataset or stored.get("dataset", "digits")
    check_dataset_name(dataset)
    dataset_options = {**stored.get("dataset_options", {}), **parse_settings(args.dataset_options, flag="--dataset-option")}
    settings = {**stored.get("settings", {}), **parse_settings(args.settings)}
    epochs = args.epochs if args.epochs is not None else stored.get("epochs")
    # A finished run's epochs: resumed with as many, zoo.train checks the settings and returns it untrained.
    finished = zoo.RunDir(args.out).read_metrics().get("epochs") if args.resume else None
    if finished is not None and epochs is not None and epochs > finished:
        what = f"training {args.out} further, from {finished} to {epochs} epochs"
    else:
        what = f"{'resuming' if args.resume else 'training'} {model_name} on {dataset} into {args.out}"
    main = zoo.world().is_main
    status("train", f"{what} (loading the data and building the model first) ...", main and not args.quiet)
    try:
        result = zoo.train(
            model_name,
            dataset=dataset,
            out=args.out,
            epochs=epochs,
            seed=args.seed if args.seed is not None else stored.get("seed", 0),
            device=args.device,
            resume=args.resume,
            force=args.force,
            progress=not args.quiet,
            dataset_options=dataset_options,
            **settings,
        )
    except zoo.TrainingDivergedError as err:
        if getattr(args, "traceback", False) and main:
            raise
        if main:  # every rank stops together; one reports
            print(f"probe train: error: {flag_spelling(str(err), verb_flags(add_arguments))}", file=sys.stderr)
        return 1
    if not main:
        return 0
    remember_run_layers(result.run_dir, result.model)  # a study of the run checks its layer names before loading it
    if finished is not None and finished == epochs:
        print(f"{result.run_dir} already has {finished} epochs (it is finished); nothing to train. Pass --epochs N "
              f"with N larger than {finished} to train it further")
    elif finished is not None:
        print(f"trained {result.run_dir} further, from {finished} to {epochs} epochs")
    else:
        print(f"trained {model_name!r} on {dataset!r}; run written to {result.run_dir}")
    metrics = {key: value for key, value in (result.metrics or {}).items() if isinstance(value, (int, float))}
    if metrics:
        print("final metrics: " + ", ".join(f"{key}={_format(value)}" for key, value in metrics.items()))
    return 0


def _format(value: float | int) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
