"""Helpers shared by the ``probe layers`` and ``probe record`` commands."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

__all__ = ["load_run_or_model", "parse_reduce", "check_model_fits_dataset"]


def load_run_or_model(run_or_model: str, device: str = "cpu") -> nn.Module:
    """A model from a run directory (``zoo.load``) or a zoo model name (``zoo.create_model``, untrained).

    Raises
    ------
    FileNotFoundError
        When the argument looks like a path (contains a slash) but no such folder exists.
    """
    import zoo

    path = Path(run_or_model)
    if path.is_dir():
        return zoo.load(path, device=device)
    if "/" in run_or_model or run_or_model.startswith("."):
        raise FileNotFoundError(
            f"run directory {run_or_model} does not exist; pass a run directory from `probe train` "
            "or a zoo model name (see zoo.list_models())"
        )
    return zoo.create_model(run_or_model)


def parse_reduce(text: str) -> Any:
    """Parse ``--reduce``: one mode (``"mean"``) or per-layer ``"layer1=flatten,fc*=auto"``."""
    if "=" not in text:
        return text.strip()
    reduce = {}
    for item in text.split(","):
        if "=" not in item:
            raise ValueError(f"--reduce item {item!r} must read LAYER=MODE, e.g. 'conv1=flatten,fc1=auto'")
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
