"""The contract every zoo model honours, whatever its family."""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

__all__ = ["ZooModel", "check_input_shape"]


def check_input_shape(input_shape: Sequence[int], min_side: int = 1) -> tuple[int, int, int]:
    """Validate ``input_shape`` = (C, H, W) and return it as a tuple of ints."""
    shape = tuple(int(v) for v in input_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"input_shape must be (channels, height, width) with positive sizes, got {tuple(input_shape)}")
    if min(shape[1:]) < min_side:
        raise ValueError(f"input_shape {shape}: images must be at least {min_side}x{min_side} for this model")
    return shape


class ZooModel(nn.Module):
    """Base class of zoo models.

    Attributes
    ----------
    family
        ``"supervised"``, ``"autoencoder"``, ``"mae"`` or ``"contrastive"``.
    config
        JSON-able dict of how the model was built (``"name"`` is added by ``zoo.create_model``),
        always including ``"input_shape"`` as [C, H, W].
    """

    family: str = ""
    config: dict[str, Any]

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The representation used for transfer: tensor of shape (batch, d) for input (batch, C, H, W)."""
        raise NotImplementedError

    def recordable_layers(self) -> list[str]:
        """Names (from ``named_modules()``) of the layers worth recording, input to output."""
        raise NotImplementedError
