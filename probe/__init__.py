"""Recording: forward hooks on named layers, streamed through reducers, and the ``probe`` CLI.

``probe`` takes any ``torch.nn.Module`` and a dataset, and records the chosen layers in one
streaming pass on the model's device.
"""

from probe._reducer_base import MultiLayerReducer, Reducer

__all__ = ["Reducer", "MultiLayerReducer"]

# Each block below belongs to one part of the package; its owner edits only that block.
# --- recording engine (issue 3) ---
# --- end recording engine ---

# --- top-k reducer (issue 5) ---
# --- end top-k reducer ---
