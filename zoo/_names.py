"""One error for every "unknown name": what was asked, the closest valid names, how to list them all.

Every package (datasets, models, layers, reductions, metrics, CLI verbs) refuses an unknown name with
``unknown_name_error``, so that the wording, the closeness cutoff and the format are the same
everywhere. It lives in the zoo, the bottom of the flow, so that every package can import it.
"""

from __future__ import annotations

import difflib
from typing import Iterable

__all__ = ["UnknownNameError", "unknown_name_error", "CLOSEST_CUTOFF", "MAX_CLOSEST", "MAX_LISTED"]

#: difflib similarity (0..1) a valid name needs to be offered as a correction.
CLOSEST_CUTOFF = 0.6
#: At most this many corrections are offered, closest first.
MAX_CLOSEST = 5
#: Valid names are listed in the message when there are at most this many; else ``listing`` says how to list them.
MAX_LISTED = 30


class UnknownNameError(KeyError, ValueError):
    """A name (of a dataset, model, layer, option...) that is not one of the valid ones.

    It is both a ``KeyError`` (a failed lookup) and a ``ValueError`` (a bad argument), so that code
    catching either keeps working. ``str(error)`` is the plain message (a bare ``KeyError`` would
    quote it).

    Attributes
    ----------
    name
        What was asked for.
    closest
        The closest valid names, closest first (possibly empty).
    """

    def __init__(self, message: str, name: object = None, closest: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.message, self.name, self.closest = message, name, tuple(closest)

    def __str__(self) -> str:
        return self.message


def unknown_name_error(kind: str, name: object, valid: Iterable[object], *, listing: str | None = None,
                       hint: str | None = None) -> UnknownNameError:
    """Build the error for an unknown ``name`` among ``valid`` ones (to be raised by the caller).

    The message reads ``unknown KIND 'NAME'; did you mean 'A', 'B'? Valid names: ... List them all with
    LISTING.``. The valid names are shown when there are at most ``MAX_LISTED`` of them (or no
    ``listing`` is given, then cut short); the listing is shown whenever it is given.

    Parameters
    ----------
    kind
        What the name names, in words: ``"dataset"``, ``"layer"``, ``"RDM metric"``.
    name
        What was asked for.
    valid
        Every valid name.
    listing
        How to list every valid name (a command or a call, e.g. ``"`probe layers RUN_OR_MODEL`"``).
    hint
        A last sentence for names that are valid without being listed (e.g. how a parametrised name is written).

    Returns
    -------
    UnknownNameError
    """
    valid = [str(v) for v in valid]
    closest = tuple(difflib.get_close_matches(str(name), valid, n=MAX_CLOSEST, cutoff=CLOSEST_CUTOFF))
    message = f"unknown {kind} {name!r}"
    message += f"; did you mean {', '.join(map(repr, closest))}?" if closest else "."
    if not valid:
        message += " There are no valid names."
    elif len(valid) <= MAX_LISTED or listing is None:
        more = f" and {len(valid) - MAX_LISTED} more" if len(valid) > MAX_LISTED else ""
        message += f" Valid names: {', '.join(map(repr, valid[:MAX_LISTED]))}{more}."
    if listing is not None:
        message += f" List them all with {listing}."
    if hint is not None:
        message += f" {hint}"
    return UnknownNameError(message, name, closest)
