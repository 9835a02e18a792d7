"""Checking a model's options and the training settings before anything is allocated.

A setting must have the type the model builder's signature gives (or its default has) and a value
in range; a model must fit a parameter budget, counted on PyTorch's "meta" device, which records
shapes without allocating memory, so that a mistyped width of a billion is refused at once.
"""

from __future__ import annotations

import collections.abc
import inspect
import math
import numbers
import re
import types
import typing
from typing import Any, Callable, Mapping

import torch
from torch import nn

from zoo._names import UnknownNameError, unknown_name_error

__all__ = ["MAX_PARAMETERS", "UnknownSettingError", "check_builder_config", "check_setting"]

#: The most parameters a model may have before ``create_model`` (and so ``zoo.train`` and
#: ``zoo.load``) refuses to build it: one billion, 4 GB of float32 weights, far above any zoo
#: model at its sizes of use (a ResNet-18 has 11 million) and below what a mistyped width
#: would ask for. Pass ``max_parameters=`` to those functions to raise it (None: no limit).
MAX_PARAMETERS = 1_000_000_000

# Integer settings whose name says they count a size (a width, a dimension, a number of heads,
# classes or epochs) are at least 1; every other number is at least 0.
_SIZE_SETTING = re.compile(r"(width|size|dim|hidden|shape|heads|classes)$|^(epochs|eval_every)$")


class UnknownSettingError(UnknownNameError, TypeError):
    """An option that a model's builder does not take.

    An unknown name like any other, and also the TypeError that Python raises for an unexpected
    keyword argument, which is what building the model with it used to raise.
    """


def check_builder_config(
    name: str,
    builder: Callable[..., nn.Module],
    config: Mapping[str, Any],
    *,
    max_parameters: int | None = MAX_PARAMETERS,
) -> int:
    """Check a model's options before anything is allocated; returns its parameter count.

    The options must be a dict of the builder's own arguments, each of the type its signature
    gives (or its default has), numbers in range (see ``check_setting``), and the model must have
    at most ``max_parameters`` parameters. The parameters are counted on PyTorch's "meta" device,
    which records shapes without allocating memory, so that a width of a billion is refused at once.

    Parameters
    ----------
    name
        The model's name, for messages.
    builder
        The callable that builds it (a registry entry's builder).
    config
        The options, as ``create_model(name, **config)`` would take them (without ``name``).
    max_parameters
        The budget (None: no limit, and the model is not built).

    Returns
    -------
    int
        The number of parameters (0 when ``max_parameters`` is None).

    Raises
    ------
    UnknownSettingError
        If an option is not one of the builder's arguments (also a TypeError).
    ValueError
        If ``config`` is not a dict, an option has the wrong type or range, the builder refuses
        the options, or the model has more than ``max_parameters`` parameters.
    """
    if not isinstance(config, Mapping):
        raise ValueError(f"the options of model {name!r} must be a dict of settings, got {_shown(config)}")
    parameters = _builder_parameters(builder)
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    for key, value in config.items():
        if key not in parameters:
            if takes_any:
                continue
            error = unknown_name_error(f"{name} setting", key, list(parameters))
            raise UnknownSettingError(error.message, error.name, error.closest)
        check_setting(f"{name} setting", key, value, _expected_type(parameters[key]))
    if max_parameters is None:
        return 0
    count = _count_parameters(name, builder, config, max_parameters)
    if count > max_parameters:
        raise ValueError(
            f"model {name!r} with {_shown_settings(config)} would have {count:,} parameters, more than the "
            f"limit of {max_parameters:,} (zoo.MAX_PARAMETERS); choose smaller settings, or pass max_parameters= "
            "to raise the limit if you mean it"
        )
    return count


def check_setting(kind: str, key: str, value: Any, expected: Any) -> None:
    """Check one setting's type and range.

    Types: ``int`` (not bool), ``float`` (any finite real number), ``bool``, ``str``, sequences
    of them, ``dict``, and unions with None. Ranges: integers whose name counts a size (widths,
    sizes, dims, hidden, heads, classes, epochs, batch_size...) are at least 1, ``lr`` is above 0,
    and every other number is at least 0.

    Parameters
    ----------
    kind
        How to name the setting in the message, e.g. ``"cnn setting"``.
    key
        The setting's name.
    value
        Its value.
    expected
        The type it must have (an annotation; ``inspect.Parameter.empty`` or ``Any``: any type).

    Raises
    ------
    ValueError
        Naming the setting, its value and what it must be.
    """
    if not _has_type(value, expected):
        raise ValueError(f"{kind} {key!r} must be {_type_name(expected)}, got {_shown(value)}")
    numbers_in = value if isinstance(value, (list, tuple)) else [value]
    for number in numbers_in:
        if isinstance(number, bool) or not isinstance(number, numbers.Real):
            continue
        integral = isinstance(number, numbers.Integral)
        if not integral and not math.isfinite(number):
            raise ValueError(f"{kind} {key!r} must be a finite number, got {_shown(value)}")
        if key == "lr" and number <= 0:
            raise ValueError(f"{kind} {key!r} must be a number > 0, got {_shown(value)}")
        minimum = 1 if integral and _SIZE_SETTING.search(key) else 0
        if number < minimum:
            what = "integers" if isinstance(value, (list, tuple)) else "an integer" if integral else "a number"
            raise ValueError(f"{kind} {key!r} must be {what} >= {minimum}, got {_shown(value)}")


def _builder_parameters(builder: Callable[..., nn.Module]) -> dict[str, inspect.Parameter]:
    # eval_str turns the string annotations of `from __future__ import annotations` into types.
    try:
        signature = inspect.signature(builder, eval_str=True)
    except (NameError, TypeError):
        signature = inspect.signature(builder)
    return dict(signature.parameters)


def _expected_type(parameter: inspect.Parameter) -> Any:
    """The parameter's annotation, or else the type of its default (a tuple of ints: a sequence of ints)."""
    if parameter.annotation is not inspect.Parameter.empty:
        return parameter.annotation
    default = parameter.default
    if default is inspect.Parameter.empty or default is None:
        return Any
    if isinstance(default, (list, tuple)):
        items = {type(item) for item in default}
        return typing.Sequence[items.pop()] if len(items) == 1 else typing.Sequence
    return type(default)


def _has_type(value: Any, expected: Any) -> bool:
    if expected is inspect.Parameter.empty or expected is Any:
        return True
    origin, args = typing.get_origin(expected), typing.get_args(expected)
    if origin in (typing.Union, types.UnionType):
        return any(_has_type(value, option) for option in args)
    if expected is type(None):
        return value is None
    if expected is bool:
        return isinstance(value, bool)
    if expected is int:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if expected is float:
        return isinstance(value, numbers.Real) and not isinstance(value, bool)
    if origin in (collections.abc.Sequence, list, tuple) or expected in (typing.Sequence, list, tuple):
        item = args[0] if args else Any
        return isinstance(value, (list, tuple)) and all(_has_type(v, item) for v in value)
    if origin in (dict, collections.abc.Mapping) or expected in (dict, typing.Mapping):
        return isinstance(value, Mapping)
    if isinstance(expected, type):
        return isinstance(value, expected)
    return True  # an annotation this check does not understand: the builder checks the value


def _type_name(expected: Any) -> str:
    origin, args = typing.get_origin(expected), typing.get_args(expected)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(option) for option in args)
    if origin in (collections.abc.Sequence, list, tuple) or expected in (typing.Sequence, list, tuple):
        item = args[0] if args else Any
        names = {int: "integers", float: "numbers", str: "strings", bool: "true/false values"}
        return f"a list of {names.get(item, 'values')}"
    names = {type(None): "null", bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    if expected in names:
        return names[expected]
    if expected in (dict, typing.Mapping) or origin in (dict, collections.abc.Mapping):
        return "a dict"
    return f"of type {getattr(expected, '__name__', expected)}"


def _count_parameters(name: str, builder: Callable[..., nn.Module], config: Mapping[str, Any], limit: int) -> int:
    """Build the model on the meta device (shapes without memory) and count its parameters."""
    try:
        with torch.device("meta"):
            model = builder(**config)
    except ValueError:  # the builder's own refusal (an odd image size, a bad option) says it best
        raise
    except Exception as err:  # tensor sizes that overflow int64, a failed assertion in a torch module...
        reason = (str(err).strip().splitlines() or [""])[0]
        raise ValueError(
            f"model {name!r} cannot be built with {_shown_settings(config)} ({type(err).__name__}: {reason}); "
            f"choose smaller or consistent settings (at most {limit:,} parameters, zoo.MAX_PARAMETERS)"
        ) from None
    return sum(parameter.numel() for parameter in model.parameters())


def _shown(value: Any, limit: int = 80) -> str:
    text = repr(value)
    text = text if len(text) <= limit else text[: limit - 3] + "..."
    return f"{text} ({type(value).__name__})"


def _shown_settings(config: Mapping[str, Any]) -> str:
    shown = ", ".join(f"{key}={value!r}" for key, value in config.items())
    return shown if len(shown) <= 200 else shown[:197] + "..."
