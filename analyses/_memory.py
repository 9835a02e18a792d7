"""The memory guard: analyses whose memory grows with n_stimuli² estimate it first and refuse above a limit.

An RDM of 50,000 stimuli is 20 GB; a process that tries to allocate it is killed by the operating
system (or thrashes) long after the call that asked for it. So every analysis that builds
n_stimuli x n_stimuli matrices (or vectors of all stimulus pairs) computes its estimate with the
sizes it was given, before it allocates anything that large, and calls ``check_memory``, which
raises ``MemoryLimitError`` naming the estimate, the limit, the streaming or chunked variant to use
instead, and how to raise the limit. The check is a few multiplications, so normal sizes do not
notice it.

The limit, in bytes, is the first of

1. the value given to ``set_memory_limit`` (process-wide; also usable as a context manager that
   restores the previous setting on exit),
2. the environment variable ``NEUROPROBE_MAX_BYTES`` (a number of bytes, or a size such as
   "512MB", "16GB"; "unlimited" turns the guard off),
3. ``DEFAULT_MEMORY_LIMIT``, 4 GiB.

Sizes written with a unit are binary: "1KB" = 1024 bytes, "1GB" = 2**30 bytes ("KiB", "GiB" are
read the same way).
"""

from __future__ import annotations

import math
import os
import re
from typing import Self

__all__ = [
    "DEFAULT_MEMORY_LIMIT",
    "MEMORY_LIMIT_ENV",
    "MemoryLimitError",
    "check_memory",
    "get_memory_limit",
    "parse_bytes",
    "set_memory_limit",
]

#: The limit when neither ``set_memory_limit`` nor ``NEUROPROBE_MAX_BYTES`` says otherwise.
DEFAULT_MEMORY_LIMIT = 4 * 2**30
#: The environment variable read when no limit was set in the process.
MEMORY_LIMIT_ENV = "NEUROPROBE_MAX_BYTES"

_UNITS = {"": 1, "B": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)(?:e([+-]?\d+))?\s*(?:([KMGT])I?B?|(B))?\s*$", re.IGNORECASE)
_UNLIMITED = {"unlimited", "inf", "none"}

_limit_override: float | None = None


class MemoryLimitError(MemoryError, ValueError):
    """An analysis would need more memory than the limit allows; nothing large was allocated.

    It is both a ``MemoryError`` and a ``ValueError`` (a request too large for the limit is a bad
    argument), so that code catching either, such as the ``probe`` command line, reports it.

    Attributes
    ----------
    needed
        The estimated peak, in bytes.
    limit
        The limit in force, in bytes.
    """

    def __init__(self, message: str, needed: int, limit: float) -> None:
        super().__init__(message)
        self.needed, self.limit = needed, limit


def parse_bytes(value: float | str, what: str = "memory size") -> float:
    """Bytes from an int, or from a string such as "512MB", "1.5GB", "4GiB" (binary units) or "unlimited".

    Returns ``math.inf`` for "unlimited" (also "inf", "none") and for ``math.inf``.
    """
    if isinstance(value, bool):
        raise ValueError(f"{what} {value!r} not understood; pass bytes (int) or a string like '512MB' or '4GB'")
    if isinstance(value, (int, float)) or hasattr(value, "__index__"):
        number = float(value) if isinstance(value, float) else int(value)
    else:
        text = str(value).strip()
        if text.lower() in _UNLIMITED:
            return math.inf
        match = _SIZE.match(text)
        if match is None:
            raise ValueError(
                f"{what} {value!r} not understood; pass bytes (int) or a string like '512MB' or '4GB' (or 'unlimited')"
            )
        mantissa, exponent, unit, plain_b = match.groups()
        number = float(mantissa) * 10 ** int(exponent or 0) * _UNITS[(unit or plain_b or "").upper()]
        number = int(number)
    if math.isnan(number) or number < 0:
        raise ValueError(f"{what} must be a non-negative number of bytes, got {value!r}")
    return number


def get_memory_limit() -> float:
    """The limit in force, in bytes (``math.inf`` when unlimited); see the module docstring for its source."""
    if _limit_override is not None:
        return _limit_override
    from_env = os.environ.get(MEMORY_LIMIT_ENV, "").strip()
    if from_env:
        return parse_bytes(from_env, f"the environment variable {MEMORY_LIMIT_ENV}")
    return DEFAULT_MEMORY_LIMIT


class set_memory_limit:
    """Set the memory limit of the analyses for this process; usable as a plain call or a context manager.

    Parameters
    ----------
    limit
        Bytes (int), a size string such as "16GB", "unlimited" (no guard), or None to go back to
        ``NEUROPROBE_MAX_BYTES`` or the default.

    Examples
    --------
    >>> analyses.set_memory_limit("32GB")            # from now on  # doctest: +SKIP
    >>> with analyses.set_memory_limit("64GB"):      # only inside the block  # doctest: +SKIP
    ...     big = analyses.rdm(X)
    """

    def __init__(self, limit: float | str | None) -> None:
        global _limit_override
        new = None if limit is None else parse_bytes(limit, "memory limit")
        self.previous = _limit_override
        _limit_override = new

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info) -> None:
        global _limit_override
        _limit_override = self.previous

    def __repr__(self) -> str:
        return f"set_memory_limit({_format_bytes(get_memory_limit())})"


def _format_bytes(n: float) -> str:
    if n == math.inf:
        return "unlimited"
    for unit, factor in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= factor:
            return f"{n / factor:.1f} {unit}"
    return f"{int(n)} bytes"


def _suggested_limit(needed: int) -> str:
    """A round limit above ``needed``, in the units the user will type."""
    for unit, factor in (("GB", 2**30), ("MB", 2**20), ("KB", 2**10)):
        if needed >= factor:
            return f"{math.ceil(needed * 1.25 / factor)}{unit}"
    return str(math.ceil(needed * 1.25))


def check_memory(bytes_needed: int, what: str, alternative: str) -> None:
    """Refuse, before allocating, an analysis whose estimated peak memory is above the limit.

    Parameters
    ----------
    bytes_needed
        The estimated peak of the analysis's own working memory (not counting its inputs).
    what
        The analysis and its size, in words: ``"analyses.rdm on 50,000 stimuli"``.
    alternative
        What to use instead (a chunked or streaming variant), as a sentence fragment.

    Raises
    ------
    MemoryLimitError
        If ``bytes_needed`` exceeds ``get_memory_limit()``.
    """
    limit = get_memory_limit()
    if bytes_needed <= limit:
        return
    suggested = _suggested_limit(bytes_needed)
    raise MemoryLimitError(
        f"{what} would need about {_format_bytes(bytes_needed)} of memory, above the memory limit of "
        f"{_format_bytes(limit)}. {alternative[:1].upper()}{alternative[1:]}; or, if this machine has the memory, "
        f"raise the limit with analyses.set_memory_limit({suggested!r}) or the environment variable "
        f"{MEMORY_LIMIT_ENV}={suggested}.",
        int(bytes_needed),
        limit,
    )


def square_bytes(n: int, copies: float, itemsize: int = 8) -> int:
    """Bytes of ``copies`` matrices of shape (n, n) with ``itemsize``-byte entries."""
    return int(copies * itemsize * n * n)


def stimuli(n: int) -> str:
    return f"{n:,} stimuli"
