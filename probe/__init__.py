"""The recording engine: forward hooks on named layers, streamed through reducers.

``probe.record`` takes any ``torch.nn.Module`` and a dataset and records the chosen layers in one
streaming pass on the model's device. Each layer's output goes through a reducer that keeps only
what an analysis needs (pooled or projected activations, a running top-k, running moments), in
memory or in an on-disk store that a killed run never leaves looking complete.

The command line (``probe.cli``) and the study pipeline that trains, records, analyses and reports
(``probe.study``) sit above the engine and are imported on their own.
"""

from probe._layers import describe_layers, resolve_layers
from probe._layouts import LAYOUTS, Layout
from probe._record import record
from probe._recording import Recording
from probe._reducers import REDUCTIONS, Moments, MomentsReducer, Reduction
from probe._topk import TopK, TopKResult
from zoo._reducer import MultiLayerReducer, Reducer

__all__ = [
    "record",
    "Recording",
    "Reducer",
    "MultiLayerReducer",
    "Reduction",
    "REDUCTIONS",
    "MomentsReducer",
    "Moments",
    "TopK",
    "TopKResult",
    "resolve_layers",
    "describe_layers",
    "Layout",
    "LAYOUTS",
]
