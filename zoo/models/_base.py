"""The contract every zoo model honours, whatever its family."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Sequence

import torch
from torch import nn

__all__ = ["ZooModel", "check_input_shape"]


def conv_trunk(channels: int, width: int) -> OrderedDict[str, nn.Module]:
    """The three-block convolutional trunk of the digits CNN and the SimCLR encoder.

    conv-BN-ReLU (``width`` channels), conv-BN-ReLU-maxpool (2 ``width``), conv-BN-ReLU (4 ``width``),
    then adaptive average pooling to 2x2, so its output has ``4 * width * 4`` features whatever the
    image size. The module names are part of the checkpoints' keys: keep them.
    """
    return OrderedDict(
        conv1=nn.Conv2d(channels, width, 3, padding=1, bias=False),
        bn1=nn.BatchNorm2d(width),
        relu1=nn.ReLU(),
        conv2=nn.Conv2d(width, 2 * width, 3, padding=1, bias=False),
        bn2=nn.BatchNorm2d(2 * width),
        relu2=nn.ReLU(),
        pool2=nn.MaxPool2d(2),
        conv3=nn.Conv2d(2 * width, 4 * width, 3, padding=1, bias=False),
        bn3=nn.BatchNorm2d(4 * width),
        relu3=nn.ReLU(),
        pool3=nn.AdaptiveAvgPool2d(2),
    )


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
