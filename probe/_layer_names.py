"""Layer selection over a list of module names, without the model (and without torch).

``probe.resolve_layers`` resolves names and globs here, and so does the study's check of its layer
names before torch is imported (``probe.study._layer_listing``), so that both choose the same
layers and refuse a bad name with the same message. This module imports only the standard library.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable, Sequence

__all__ = ["LIST_LAYERS", "is_glob", "resolve_layer_names"]

#: How to list every layer name of a model, for error messages.
LIST_LAYERS = "`probe layers RUN_OR_MODEL` or [name for name, _ in model.named_modules()]"

_GLOB_CHARS = frozenset("*?[")


def is_glob(pattern: str) -> bool:
    """Whether ``pattern`` is an fnmatch pattern (holds ``*``, ``?`` or ``[``) rather than a plain name."""
    return bool(_GLOB_CHARS & set(pattern))


def resolve_layer_names(
    names: Sequence[str],
    layers: str | Iterable[str],
    *,
    unknown_name_error: Callable[..., Exception],
) -> list[str]:
    """Turn layer names and globs into module names: globs in the order of ``names``, explicit names
    in the given order, each name once.

    Parameters
    ----------
    names
        Every module name of the model, in ``named_modules()`` order, without the root's ``""``
        (which an explicit ``""`` still selects; globs never match it).
    layers
        A module name, a glob pattern (fnmatch), or a list of names and/or patterns.
    unknown_name_error
        ``zoo.unknown_name_error``, which builds the error for an unknown name. It is passed in
        because importing the zoo imports torch.

    Returns
    -------
    list of str
        Distinct module names.

    Raises
    ------
    KeyError
        For a name, or a glob matching nothing, that is not a module (the message lists the nearest names).
    ValueError
        When the selection is empty or holds something other than strings.
    """
    patterns = [layers] if isinstance(layers, str) else list(layers)
    if not patterns:
        raise ValueError("no layers given; pass a name, a list, a glob such as 'layer*' or a predicate")
    valid = list(names)
    known = set(valid) | {""}
    chosen: list[str] = []
    for pattern in patterns:
        if not isinstance(pattern, str):
            raise ValueError(f"layer names must be strings, got {pattern!r}")
        if is_glob(pattern):
            matches = [name for name in valid if fnmatch.fnmatchcase(name, pattern)]
        else:
            matches = [pattern] if pattern in known else []
        if not matches:
            raise unknown_name_error("layer", pattern, valid, listing=LIST_LAYERS)
        chosen.extend(name for name in matches if name not in chosen)
    return chosen
