"""The recording engine: forward hooks on named layers, streamed through reducers.

``probe.record`` takes any ``torch.nn.Module`` and a dataset and records the chosen layers in one
streaming pass on the model's device. Each layer's output goes through a reducer that keeps only
what an analysis needs (pooled or projected activations, a running top-k, running moments), in
memory or in an on-disk store that a killed run never leaves looking complete.

The command line (``probe.cli``) and the study pipeline that trains, records, analyses and reports
(``probe.study``) sit above the engine and are imported on their own.

The engine's names are imported on first use (PEP 562), so that ``import probe.cli`` and
``probe --help`` do not pay for importing torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what static tools and readers see; at run time each name loads on first use
    from probe._layers import describe_layers, resolve_layers  # noqa: F401
    from probe._layouts import LAYOUTS, Layout  # noqa: F401
    from probe._plan import MemoryBudgetError, RecordingPlan, plan_recording  # noqa: F401
    from probe._record import record  # noqa: F401
    from probe._recording import Recording  # noqa: F401
    from probe._reducers import REDUCTIONS, Moments, MomentsReducer, Reduction  # noqa: F401
    from probe._topk import TopK, TopKResult  # noqa: F401
    from zoo._reducer import MultiLayerReducer, Reducer  # noqa: F401

# public name -> the module that defines it
_EXPORTS = {
    "record": "probe._record",
    "Recording": "probe._recording",
    "Reducer": "zoo._reducer",
    "MultiLayerReducer": "zoo._reducer",
    "Reduction": "probe._reducers",
    "REDUCTIONS": "probe._reducers",
    "MomentsReducer": "probe._reducers",
    "Moments": "probe._reducers",
    "TopK": "probe._topk",
    "TopKResult": "probe._topk",
    "resolve_layers": "probe._layers",
    "describe_layers": "probe._layers",
    "Layout": "probe._layouts",
    "LAYOUTS": "probe._layouts",
    "plan_recording": "probe._plan",
    "RecordingPlan": "probe._plan",
    "MemoryBudgetError": "probe._plan",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'probe' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
