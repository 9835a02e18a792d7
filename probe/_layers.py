"""Addressing layers: by module name, a list of names, a glob or a predicate."""

from __future__ import annotations

import fnmatch
from typing import Any, Callable, Iterable, Mapping, Union

import pandas as pd
import torch
from torch import nn

from probe._layer_names import is_glob, resolve_layer_names
from zoo._names import unknown_name_error

__all__ = ["LayerSelection", "resolve_layers", "describe_layers", "per_layer"]

#: What ``record``'s ``layers`` accepts: a name, a glob (``"layer*.0"``), a list of names or globs,
#: or a predicate ``(name, module) -> bool`` over ``model.named_modules()``.
LayerSelection = Union[str, Iterable[str], Callable[[str, nn.Module], bool]]


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
    if callable(layers) and not isinstance(layers, str):
        chosen = [name for name, module in model.named_modules() if layers(name, module)]
        if not chosen:
            raise ValueError("the layer predicate selected no module; check it against model.named_modules()")
        return chosen
    names = [name for name, _ in model.named_modules() if name]
    return resolve_layer_names(names, layers, unknown_name_error=unknown_name_error)


def per_layer(option: Any, names: list[str], what: str, default: Any) -> dict[str, Any]:
    """Expand a single value or a {name or glob: value} dict to one value per layer of ``names``."""
    if not isinstance(option, Mapping):
        return dict.fromkeys(names, option)
    chosen = dict.fromkeys(names, default)
    for key, value in option.items():
        matches = [n for n in names if fnmatch.fnmatchcase(n, key)] if is_glob(key) else [key] * (key in names)
        if not matches:
            raise KeyError(
                f"{what} names layer {key!r}, which is not among the recorded layers {names}; "
                "use a recorded layer's name (or a glob matching some)"
            )
        for name in matches:
            chosen[name] = value
    return chosen


def describe_layers(
    model: nn.Module,
    example: Any,
    layers: LayerSelection | None = None,
    layout: str | Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """One dry forward pass that reports each layer's output shape, layout and parameter count.

    Parameters
    ----------
    model
        The model; its mode and device are left as they were.
    example
        A batch of stimuli on the model's device: a tensor of shape (batch, C, H, W), or a dict of
        tensors (``input_ids``, ``attention_mask``...) passed as keyword arguments. Give two
        stimuli or more, so that outputs that do not lead with the batch can be told.
    layers
        Which layers to list; default ``model.recordable_layers()`` when the model has it, else
        every named module.
    layout
        Layouts to state, as ``probe.record``'s ``layout=`` (one name, or ``{name or glob: name}``).

    Returns
    -------
    pandas.DataFrame
        Columns ``layer``, ``type``, ``output_shape`` (per stimulus; ``name#k`` rows for modules
        called several times), ``layout`` (what ``probe.record`` will read it as: ``channels-first``,
        ``channels-last``, ``tokens``, ``tokens+N``, ``vector``; ``ambiguous`` for a 4-d output it
        would refuse unless stated or flattened, ``not per stimulus`` for an output whose first
        dimension is not the batch), ``n_params`` (the module's own and its children's parameters).
    """
    from probe._layouts import Layout, LayoutFinder, batch_size_of, trace_calls

    if layers is None:
        layers = model.recordable_layers() if hasattr(model, "recordable_layers") else [n for n, _ in model.named_modules() if n]
    names = resolve_layers(model, layers)
    stated = {name: None if value is None else Layout.parse(value) for name, value in per_layer(layout, names, "layout", None).items()}
    modules = dict(model.named_modules())
    batch = batch_size_of(example)

    was_training = {m: m.training for m in model.modules()}
    model.eval()
    try:
        with torch.no_grad():
            calls = trace_calls(model, example)
    finally:
        for module, training in was_training.items():
            module.training = training
    finder = LayoutFinder(calls)
    by_name: dict[str, list[int]] = {name: [] for name in names}
    for index, call in enumerate(calls):
        if call.name in by_name:
            by_name[call.name].append(index)
    rows = []
    for name in names:
        n_params = sum(p.numel() for p in modules[name].parameters())
        for position, index in enumerate(by_name[name] or [None], start=1):
            shape = None if index is None else calls[index].output_shape
            if index is None:
                found = "not called"
            elif not shape:
                found = "no tensor output"
            elif shape[0] != batch:
                found = "not per stimulus"
            elif stated[name] is not None:
                found = stated[name].name if stated[name].fits(shape) is None else f"not {stated[name].name}"
            else:
                layout_found = finder.find(index)
                found = layout_found.name if layout_found is not None else "ambiguous"
            rows.append(
                {
                    "layer": name if len(by_name[name]) <= 1 else f"{name}#{position}",
                    "type": type(modules[name]).__name__,
                    "output_shape": "not called" if index is None else "x".join(map(str, (shape or ())[1:])) or "scalar",
                    "layout": found,
                    "n_params": n_params,
                }
            )
    return pd.DataFrame(rows, columns=["layer", "type", "output_shape", "layout", "n_params"])
