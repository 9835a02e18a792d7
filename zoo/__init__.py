"""The model zoo: datasets, architectures, objectives, training and checkpoints.

A zoo model is any ``torch.nn.Module`` that honours one contract (see ``zoo.ZooModel``):
``encode(x)`` returns the representation used for transfer, ``recordable_layers()`` names the
layers worth recording, and ``config`` says how it was built.
"""

from zoo._device import resolve_device
from zoo._io import atomic_path, atomic_write_bytes, atomic_write_json, atomic_write_text

__all__ = [
    "resolve_device",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
]
