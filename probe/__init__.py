"""Recording: forward hooks on named layers, streamed through reducers, and the ``probe`` CLI.

``probe`` takes any ``torch.nn.Module`` and a dataset, and records the chosen layers in one
streaming pass on the model's device.
"""

from probe._reducer_base import MultiLayerReducer, Reducer

__all__ = ["Reducer", "MultiLayerReducer"]

# Each block below belongs to one part of the package; its owner edits only that block.
# --- recording engine (issue 3) ---
from probe._layers import describe_layers, resolve_layers
from probe._record import record
from probe._recording import Recording
from probe._reducers import REDUCTIONS, Moments, MomentsReducer, Reduction

__all__ += ["record", "Recording", "Reduction", "REDUCTIONS", "MomentsReducer", "Moments"]
__all__ += ["resolve_layers", "describe_layers"]
# --- end recording engine ---

# --- top-k reducer (issue 5) ---
from probe._topk import TopK, TopKResult

__all__ += ["TopK", "TopKResult"]
# --- end top-k reducer ---

# --- transfer experiments that train zoo models (issue 6) ---
from probe._transfer import ClassSplitTransfer, MaskRatioSweep, class_split_transfer, encode_features, mask_ratio_sweep

__all__ += ["MaskRatioSweep", "encode_features", "mask_ratio_sweep", "ClassSplitTransfer", "class_split_transfer"]
# --- end transfer experiments ---
