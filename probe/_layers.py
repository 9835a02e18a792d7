"""Addressing layers: by module name, a list of names, a glob or a predicate."""

from __future__ import annotations

import fnmatch
from typing import Callable, Iterable, Union

import pandas as pd
import torch
from torch import nn

from zoo._names import unknown_name_error

__all__ = ["LayerSelection", "resolve_layers", "describe_layers"]

#: What ``record``'s ``layers`` accepts: a name, a glob (``"layer*.0"``), a list of names or globs,
#: or a predicate ``(name, module) -> bool`` over ``model.named_modules()``.
LayerSelection = Union[str, Iterable[str], Callable[[str, nn.Module], bool]]

_GLOB_CHARS = set("*?[")


#: How to list every layer name of a model, for error messages.
LIST_LAYERS = "`probe layers RUN_OR_MODEL` or [name for name, _ in model.named_modules()]"


def _unknown_layer_error(name: str, valid: list[str]) -> KeyError:
    return unknown_name_error("layer", name, valid, listing=LIST_LAYERS)


def resolve_layers(model: nn.Module, layers: LayerSelection) -> list[str]:
    """Turn a layer selection into module names of ``model``, in ``named_modules()`` order for
    globs and predicates, and in the given order for explicit names.

    Parameters
    ----------
    model
        Any module.
    layers
        A module name, a glob pattern (fnmatch), a list of names and/or patterns, or a predicate
        ``(name, module) -> bool``. The root module itself is named ``""``.

    Returns
    -------
    list of str
        Distinct module names.

    Raises
    ------
    KeyError
        For a name that is not a module of ``model`` (the message lists the nearest names).
    ValueError
        When the selection is empty or selects nothing.
    """
    modules = dict(model.named_modules())
    valid = [name for name in modules if name]
    if callable(layers) and not isinstance(layers, str):
        chosen = [name for name, module in modules.items() if layers(name, module)]
        if not chosen:
            raise ValueError("the layer predicate selected no module; check it against model.named_modules()")
        return chosen
    patterns = [layers] if isinstance(layers, str) else list(layers)
    if not patterns:
        raise ValueError("no layers given; pass a name, a list, a glob such as 'layer*' or a predicate")
    chosen: list[str] = []
    for pattern in patterns:
        if not isinstance(pattern, str):
            raise ValueError(f"layer names must be strings, got {pattern!r}")
        if _GLOB_CHARS & set(pattern):
            matches = [name for name in valid if fnmatch.fnmatchcase(name, pattern)]
            if not matches:
                raise _unknown_layer_error(pattern, valid)
        elif pattern in modules:
            matches = [pattern]
        else:
            raise _unknown_layer_error(pattern, valid)
        chosen.extend(name for name in matches if name not in chosen)
    return chosen


def describe_layers(model: nn.Module, example: torch.Tensor, layers: LayerSelection | None = None) -> pd.DataFrame:
    """One dry forward pass that reports each layer's output shape and parameter count.

    Parameters
    ----------
    model
        The model; its mode and device are left as they were.
    example
        A batch of stimuli of shape (batch, C, H, W) on the model's device.
    layers
        Which layers to list; default ``model.recordable_layers()`` when the model has it, else
        every named module.

    Returns
    -------
    pandas.DataFrame
        Columns ``layer``, ``type``, ``output_shape`` (per stimulus; ``name#k`` rows for modules
        called several times), ``n_params`` (the module's own and its children's parameters).
    """
    from probe._hooks import capture_outputs

    if layers is None:
        layers = model.recordable_layers() if hasattr(model, "recordable_layers") else [n for n, _ in model.named_modules() if n]
    names = resolve_layers(model, layers)
    modules = dict(model.named_modules())
    shapes: dict[str, list[tuple[int, ...]]] = {name: [] for name in names}

    def keep_shape(name: str, call: int, output: torch.Tensor) -> None:
        shapes[name].append(tuple(output.shape[1:]))

    was_training = {m: m.training for m in model.modules()}
    model.eval()
    try:
        with torch.no_grad(), capture_outputs(model, names, keep_shape) as capture:
            capture.forward(example)
    finally:
        for module, training in was_training.items():
            module.training = training
    rows = []
    for name in names:
        n_params = sum(p.numel() for p in modules[name].parameters())
        calls = shapes[name] or [None]
        for call, shape in enumerate(calls, start=1):
            rows.append(
                {
                    "layer": name if len(calls) == 1 else f"{name}#{call}",
                    "type": type(modules[name]).__name__,
                    "output_shape": "not called" if shape is None else "x".join(map(str, shape)) or "scalar",
                    "n_params": n_params,
                }
            )
    return pd.DataFrame(rows, columns=["layer", "type", "output_shape", "n_params"])
