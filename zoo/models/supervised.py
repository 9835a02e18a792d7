"""Supervised classifiers: a small CNN, a plain 10-layer CNN, an MLP, and ResNet-18 adapted to small images."""

from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.resnet import BasicBlock, ResNet

from zoo._augment import Augmentation, augment, augmentation_from
from zoo._registry import TrainDefaults, register_model
from zoo.models._base import ZooModel, check_input_shape, conv_trunk

__all__ = ["MLPClassifier", "SmallCNN", "SmallImageResNet18", "Tiny10CNN", "classification_objective",
           "training_augmentation"]


def classification_objective(model: nn.Module, images: torch.Tensor, labels: torch.Tensor):
    """Cross-entropy of the model's logits; also reports the batch accuracy.

    A model in training mode whose ``augmentation`` is set sees one random view of each image instead
    of the image (see ``training_augmentation``).

    Parameters
    ----------
    model
        A classifier: ``model(images)`` gives logits of shape (batch, n_classes).
    images
        Tensor of shape (batch, C, H, W).
    labels
        Integer tensor of shape (batch,), all >= 0.
    """
    if labels.numel() and int(labels.min()) < 0:
        raise ValueError("a supervised model needs labelled data (labels >= 0); use a labelled dataset such as 'digits'")
    augmentation = getattr(model, "augmentation", None)
    if augmentation is not None and model.training:
        images = augment(images, augmentation)
    logits = model(images)
    loss = F.cross_entropy(logits, labels)
    accuracy = (logits.argmax(1) == labels).float().mean()
    return loss, {"accuracy": accuracy.detach()}


_SUPERVISED = dict(objective=classification_objective)


def training_augmentation(augment: dict | None) -> Augmentation | None:
    """The augmentation a classifier trains with: None (the images as they are) when ``augment`` is None
    or empty, else the transforms it names (``zoo.augmentation_from``), every other one off.

    Parameters
    ----------
    augment
        Fields of ``zoo.Augmentation``, e.g. ``{"max_shift": 0.1, "flip": True}`` (shifts of up to a
        tenth of the side and left-right mirroring, the usual augmentation of Fashion-MNIST and CIFAR).
    """
    return augmentation_from(augment) if augment else None


def augment_config(augmentation: Augmentation | None) -> dict | None:
    """The model config's ``augment`` entry: the augmentation's fields, or None without augmentation."""
    return None if augmentation is None else augmentation.to_dict()


# Runs written before the augment option trained on the images as they are: they load and resume without augmentation.
@register_model("cnn", defaults=TrainDefaults(epochs=20, lr=3e-3, batch_size=64, weight_decay=5e-4),
                older_configs={"augment": None}, **_SUPERVISED)
class SmallCNN(ZooModel):
    """Three 3x3 conv layers (BatchNorm, ReLU) and a two-layer classifier head.

    Parameters
    ----------
    input_shape
        (C, H, W) of the images.
    n_classes
        Number of output classes.
    width
        Channels of the first conv layer (then 2x and 4x).
    hidden
        Width of the hidden fully connected layer, whose output ``encode`` returns.
    augment
        Training augmentation (see ``training_augmentation``); None: none.
    """

    family = "supervised"

    def __init__(self, input_shape: Sequence[int] = (1, 8, 8), n_classes: int = 10, width: int = 32, hidden: int = 128,
                 augment: dict | None = None):
        super().__init__()
        channels, height, width_px = check_input_shape(input_shape, min_side=2)
        self.augmentation = training_augmentation(augment)
        self.config = {"input_shape": [channels, height, width_px], "n_classes": n_classes, "width": width, "hidden": hidden,
                       "augment": augment_config(self.augmentation)}
        self.features = nn.Sequential(conv_trunk(channels, width))
        self.fc1 = nn.Linear(4 * width * 4, hidden)
        self.relu_fc1 = nn.ReLU()
        self.dropout = nn.Dropout(0.2)
        self.fc2 = nn.Linear(hidden, n_classes)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu_fc1(self.fc1(self.features(x).flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.dropout(self.encode(x)))

    def recordable_layers(self) -> list[str]:
        return ["features.relu1", "features.relu2", "features.relu3", "relu_fc1", "fc2"]


# (output channels, stride, kernel) of Tiny-10's eight conv layers (Kornblith et al. 2019, Table E.1): two 3x3 at 16,
# a strided 3x3 and two 3x3 at 32, a strided 3x3 and a 3x3 at 64 (valid padding), a 1x1 at 64.
_TINY10_CONVS = ((1, 1, 3), (1, 1, 3), (2, 2, 3), (2, 1, 3), (2, 1, 3), (4, 2, 3), (4, 1, 3), (4, 1, 1))
_TINY10_UNPADDED = 7  # the conv whose padding is ``conv7_padding``
CONV_PADDINGS = ("valid", "same")


# Runs written before an option existed load and resume as they were trained: without augmentation, and with
# "same" padding in the 7th conv.
@register_model("cnn10", defaults=TrainDefaults(epochs=10, lr=3e-3, batch_size=128, weight_decay=5e-4),
                older_configs={"augment": None, "conv7_padding": "same"}, **_SUPERVISED)
class Tiny10CNN(ZooModel):
    """The plain 10-layer CNN of the layer-identification test (Kornblith et al. 2019, "Tiny-10").

    Eight conv-BN-ReLU layers (``width``, ``width``, strided ``2 width``, ``2 width``, ``2 width``, strided
    ``4 width``, ``4 width`` without padding, and a 1x1 ``4 width``), global average pooling and a linear
    read-out: ten recordable layers, ``relu1`` ... ``relu8``, ``pool`` and ``logits``. On 28x28 images the maps
    are 28, 28, 14, 14, 14, 7, 5 and 5 pixels wide (32, 32, 16, 16, 16, 8, 6, 6 on CIFAR's 32x32).

    Parameters
    ----------
    input_shape
        (C, H, W) of the images (at least 9x9 with ``conv7_padding="valid"``, else 4x4).
    n_classes
        Number of output classes.
    width
        Channels of the first two conv layers (16 in the paper).
    augment
        Training augmentation (see ``training_augmentation``); None: none.
    conv7_padding
        ``"valid"`` (no padding: the paper's layout, the default) or ``"same"`` (padding 1, which keeps the map's
        size; the zoo's layout before this option existed, with which older runs load).
    """

    family = "supervised"

    def __init__(self, input_shape: Sequence[int] = (1, 28, 28), n_classes: int = 10, width: int = 16,
                 augment: dict | None = None, conv7_padding: str = "valid"):
        super().__init__()
        if conv7_padding not in CONV_PADDINGS:
            raise ValueError(f"conv7_padding must be one of {CONV_PADDINGS}, not {conv7_padding!r}")
        channels, height, width_px = check_input_shape(input_shape, min_side=4)
        if conv7_padding == "valid" and min(height, width_px) < 9:
            raise ValueError(f"input_shape {tuple(input_shape)}: the unpadded 7th conv of cnn10 needs images of at "
                             "least 9x9; give conv7_padding='same' for smaller ones")
        self.augmentation = training_augmentation(augment)
        self.config = {"input_shape": [channels, height, width_px], "n_classes": n_classes, "width": width,
                       "augment": augment_config(self.augmentation), "conv7_padding": conv7_padding}
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        previous = channels
        for i, (multiple, stride, kernel) in enumerate(_TINY10_CONVS, start=1):
            padding = 0 if i == _TINY10_UNPADDED and conv7_padding == "valid" else kernel // 2
            layers[f"conv{i}"] = nn.Conv2d(previous, multiple * width, kernel, stride, padding=padding, bias=False)
            layers[f"bn{i}"] = nn.BatchNorm2d(multiple * width)
            layers[f"relu{i}"] = nn.ReLU()
            previous = multiple * width
        layers["pool"] = nn.AdaptiveAvgPool2d(1)
        layers["flatten"] = nn.Flatten()
        self.features = nn.Sequential(layers)
        self.logits = nn.Linear(previous, n_classes)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits(self.features(x))

    def recordable_layers(self) -> list[str]:
        return [f"features.relu{i}" for i in range(1, len(_TINY10_CONVS) + 1)] + ["features.pool", "logits"]


@register_model("mlp", defaults=TrainDefaults(epochs=40, lr=2e-3, batch_size=64, weight_decay=1e-3), **_SUPERVISED)
class MLPClassifier(ZooModel):
    """A fully connected classifier: flatten, hidden layers with ReLU, linear read-out.

    Parameters
    ----------
    hidden
        Widths of the hidden layers; ``encode`` returns the last one's ReLU output.
    """

    family = "supervised"

    def __init__(self, input_shape: Sequence[int] = (1, 8, 8), n_classes: int = 10, hidden: Sequence[int] = (256, 128)):
        super().__init__()
        shape = check_input_shape(input_shape)
        hidden = [int(h) for h in hidden]
        if not hidden:
            raise ValueError("hidden must list at least one layer width")
        self.config = {"input_shape": list(shape), "n_classes": n_classes, "hidden": hidden}
        layers: OrderedDict[str, nn.Module] = OrderedDict(flatten=nn.Flatten())
        previous = shape[0] * shape[1] * shape[2]
        for i, size in enumerate(hidden, start=1):
            layers[f"fc{i}"] = nn.Linear(previous, size)
            layers[f"relu{i}"] = nn.ReLU()
            previous = size
        self.body = nn.Sequential(layers)
        self.dropout = nn.Dropout(0.1)
        self.head = nn.Linear(previous, n_classes)
        self._n_hidden = len(hidden)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.body(x)))

    def recordable_layers(self) -> list[str]:
        return [f"body.relu{i}" for i in range(1, self._n_hidden + 1)] + ["head"]


@register_model("resnet18", defaults=TrainDefaults(epochs=15, lr=2e-3, batch_size=128, weight_decay=5e-4), **_SUPERVISED)
class SmallImageResNet18(ResNet, ZooModel):
    """torchvision's ResNet-18 for small images: a 3x3 stride-1 stem and no max-pool.

    Module names are torchvision's (``conv1``, ``layer1.0.conv1``, ..., ``fc``), so a torchvision
    state_dict maps onto it (all but ``conv1``, whose kernel is 3x3 here, and ``fc`` when the class
    count differs).

    Parameters
    ----------
    input_shape
        (C, H, W); any number of channels.
    n_classes
        Outputs of ``fc``.
    """

    family = "supervised"

    def __init__(self, input_shape: Sequence[int] = (1, 8, 8), n_classes: int = 10):
        super().__init__(BasicBlock, [2, 2, 2, 2], num_classes=n_classes)
        shape = check_input_shape(input_shape)
        self.config = {"input_shape": list(shape), "n_classes": n_classes}
        self.conv1 = nn.Conv2d(shape[0], 64, kernel_size=3, stride=1, padding=1, bias=False)
        nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")
        self.maxpool = nn.Identity()

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.encode(x))

    def recordable_layers(self) -> list[str]:
        return ["relu", "layer1", "layer2", "layer3", "layer4", "avgpool", "fc"]
