"""Wall time and peak memory of each stage of a study, for its report's provenance."""

from __future__ import annotations

import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

__all__ = ["StepMeter", "StepUsage"]

_CLEAR_REFS = Path("/proc/self/clear_refs")
_STATUS = Path("/proc/self/status")


@dataclass
class StepUsage:
    """What one step used.

    Attributes
    ----------
    seconds
        Wall time.
    peak_rss
        The process's peak resident memory during the step, in bytes. Where Linux lets the peak be
        reset (``/proc/self/clear_refs``), it is the step's own; elsewhere the process's peak so far
        (``per_step`` is then False).
    per_step
        Whether ``peak_rss`` is the step's own peak.
    peak_gpu
        Peak memory allocated by torch on the CUDA device during the step, in bytes; None without CUDA.
    """

    seconds: float
    peak_rss: int
    per_step: bool
    peak_gpu: int | None = None


def _reset_peak_rss() -> bool:
    try:
        _CLEAR_REFS.write_text("5")  # Linux: reset the peak resident set size ("VmHWM") of this process
        return True
    except OSError:
        return False


def _peak_rss() -> int:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB on Linux


@dataclass
class StepMeter:
    """Measure steps: ``with meter.step("record"): ...``; ``meter.usage`` maps names to ``StepUsage``.

    Examples
    --------
    >>> meter = StepMeter()
    >>> with meter.step("load"):
    ...     data = list(range(10))
    >>> meter.usage["load"].seconds >= 0
    True
    """

    usage: dict[str, StepUsage] = field(default_factory=dict)

    def step(self, name: str) -> "_Step":
        return _Step(self, name)


class _Step:
    def __init__(self, meter: StepMeter, name: str):
        self.meter, self.name = meter, name

    def __enter__(self) -> "_Step":
        self.per_step = _reset_peak_rss()
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.reset_peak_memory_stats()
        self.started = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        used = torch.cuda.is_available() and torch.cuda.is_initialized()
        gpu = torch.cuda.max_memory_allocated() if used else None
        self.meter.usage[self.name] = StepUsage(time.perf_counter() - self.started, _peak_rss(), self.per_step, gpu)
