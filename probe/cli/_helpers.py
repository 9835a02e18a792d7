"""Helpers shared by the ``probe layers``, ``probe record`` and ``probe patches`` commands."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch is imported inside the commands' run, so that `probe --help` stays quick
    from torch import nn

__all__ = ["add_model_arguments", "check_model_fits_dataset", "load_run_or_model", "parse_reduce", "prepare_for_model"]

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


def prepare_for_model(model: nn.Module, dataset: Any) -> Any:
    """The dataset resized and normalised as the model expects, when it says so (``model.preprocessing``)."""
    import zoo

    preprocessing = getattr(model, "preprocessing", None)
    if not isinstance(preprocessing, zoo.Preprocessing) or getattr(dataset, "info", None) is None:
        return dataset
    return zoo.prepare_dataset(dataset, preprocessing)


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


def check_model_fits_dataset(model: nn.Module, dataset: Any, dataset_name: str) -> None:
    """Refuse a dataset whose images are not the shape the model was built for (zoo models know theirs).

    Raises
    ------
    ValueError
        Naming both shapes and the ``--dataset`` to use instead.
    """
    expected = (getattr(model, "config", None) or {}).get("input_shape")
    info = getattr(dataset, "info", None)
    if expected is None or info is None:
        return
    if tuple(expected) != tuple(info.image_shape):
        raise ValueError(
            f"--dataset {dataset_name} has images of shape {tuple(info.image_shape)}, but the model was built for "
            f"{tuple(expected)}; pass the --dataset it was trained on (its config.json names it)"
        )
