"""What a model expects of its input, and datasets prepared to match it without hand-written transforms.

A ``Preprocessing`` says the input size, the channels and the normalisation a network was trained with
(and its class names). ``prepare_dataset`` takes a zoo dataset back to pixels in [0, 1]
(``dataset.info.denormalize``) and hands each image to the network as it expects: grayscale repeated to
RGB, resized (antialiased), normalised.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from zoo._data import ChannelNormalization, DatasetInfo

__all__ = ["PreparedDataset", "Preprocessing", "check_input_shape", "prepare_dataset", "prepare_for"]

_INTERPOLATIONS = ("bilinear", "bicubic", "nearest", "area")
_ANTIALIASED = ("bilinear", "bicubic")
# ITU-R 601 luma, the weights torchvision's rgb_to_grayscale uses.
_LUMA = (0.299, 0.587, 0.114)


@dataclass(frozen=True)
class Preprocessing(ChannelNormalization):
    """How to turn pixels in [0, 1] into what a network expects.

    Attributes
    ----------
    input_size
        (H, W) of the network's input.
    mean, std
        Per-channel normalisation: the input is ``(pixel - mean) / std``.
    channels
        Channels of the input (3 for RGB, 1 for grayscale).
    class_names
        One name per output class of a classifier, or None.
    interpolation
        How images are resized: ``"bilinear"`` or ``"bicubic"`` (both antialiased), ``"nearest"``, ``"area"``.
    crop_fraction
        The evaluation crop of the network's training recipe: the short side is resized to
        ``input_size / crop_fraction`` and the centre ``input_size`` cropped (ImageNet: 224 / 256 = 0.875).
        Used only when a crop is asked for (``crop=True``); 1.0 means no crop.
    """

    input_size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    channels: int = 3
    class_names: tuple[str, ...] | None = field(default=None, repr=False)
    interpolation: str = "bilinear"
    crop_fraction: float = 1.0

    def __post_init__(self) -> None:
        size = tuple(int(v) for v in self.input_size)
        if len(size) != 2 or min(size) < 1:
            raise ValueError(f"input_size must be (H, W) of positive ints, got {self.input_size!r}")
        mean, std = tuple(float(v) for v in self.mean), tuple(float(v) for v in self.std)
        if not (len(mean) == len(std) == self.channels) or self.channels < 1:
            raise ValueError(
                f"mean and std need one value per channel ({self.channels}), got {len(mean)} and {len(std)}"
            )
        if not all(math.isfinite(v) for v in mean) or not all(math.isfinite(v) and v > 0 for v in std):
            raise ValueError(f"mean must be finite and std finite and positive, got mean {mean} and std {std}")
        if self.interpolation not in _INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {_INTERPOLATIONS}, got {self.interpolation!r}")
        if not 0 < float(self.crop_fraction) <= 1:
            raise ValueError(f"crop_fraction must be in (0, 1], got {self.crop_fraction!r}")
        object.__setattr__(self, "input_size", size)
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)
        object.__setattr__(self, "crop_fraction", float(self.crop_fraction))
        if self.class_names is not None:
            object.__setattr__(self, "class_names", tuple(str(c) for c in self.class_names))

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the network's input."""
        return (self.channels, *self.input_size)

    def __call__(self, pixels: torch.Tensor, *, crop: bool = False) -> torch.Tensor:
        """Pixels in [0, 1], shape (C, H, W) or (n, C, H, W), as the network's input of shape ``image_shape``.

        Parameters
        ----------
        pixels
            Float pixels in [0, 1] (or uint8 pixels in 0..255) with 1 or 3 channels: grayscale is
            repeated to RGB, RGB turned to luma for a grayscale network.
        crop
            Resize the short side to ``input_size / crop_fraction`` and crop the centre (the
            network's evaluation recipe) instead of resizing the whole image to ``input_size``.
        """
        single = pixels.dim() == 3
        x = pixels.unsqueeze(0) if single else pixels
        if x.dim() != 4:
            raise ValueError(f"pixels must have shape (C, H, W) or (n, C, H, W), got {tuple(pixels.shape)}")
        x = x.float() / 255 if x.dtype == torch.uint8 else x.float()
        x = self._resized(self._with_channels(x), crop)
        x = self.normalize(x)
        return x[0] if single else x

    def _with_channels(self, x: torch.Tensor) -> torch.Tensor:
        have = x.shape[1]
        if not _convertible(have, self.channels):
            raise ValueError(f"cannot turn images with {have} channels into the {self.channels} the network expects")
        if have == self.channels:
            return x
        if have == 1:
            return x.expand(-1, self.channels, -1, -1)
        weights = torch.as_tensor(_LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        return (x * weights).sum(dim=1, keepdim=True)

    def _resized(self, x: torch.Tensor, crop: bool) -> torch.Tensor:
        height, width = self.input_size
        if crop and self.crop_fraction < 1:
            scale = max(height, width) / self.crop_fraction / min(x.shape[-2:])
            size = (max(height, round(x.shape[-2] * scale)), max(width, round(x.shape[-1] * scale)))
            x = self._interpolate(x, size)
            top, left = (size[0] - height) // 2, (size[1] - width) // 2
            return x[..., top : top + height, left : left + width]
        return self._interpolate(x, (height, width))

    def _interpolate(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        if tuple(x.shape[-2:]) == tuple(size):
            return x
        options: dict[str, Any] = {"mode": self.interpolation}
        if self.interpolation in _ANTIALIASED:
            options.update(align_corners=False, antialias=True)
        return F.interpolate(x, size=size, **options)


class PreparedDataset(Dataset):
    """A zoo dataset whose images are handed to a network as its ``Preprocessing`` says.

    ``info`` is the base dataset's with the network's image shape, mean and std, so that
    ``info.denormalize`` turns items back into (resized) pixels; labels and class names are the base's.
    """

    def __init__(self, base: Dataset, preprocessing: Preprocessing, crop: bool = False):
        self.base, self.preprocessing, self.crop = base, preprocessing, crop
        info = base.info
        changes = {"image_shape": preprocessing.image_shape, "mean": preprocessing.mean, "std": preprocessing.std}
        if dataclasses.is_dataclass(info):  # keeps every other field of the base's info
            self.info = dataclasses.replace(info, **changes)
        else:
            name, class_names = getattr(info, "name", type(base).__name__), getattr(info, "class_names", None)
            self.info = DatasetInfo(name, class_names=class_names, **changes)
        split = getattr(base, "split", None)
        if isinstance(split, str):
            self.split = split

    def __len__(self) -> int:
        return len(self.base)

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        return self.preprocessing(self.base.info.denormalize(torch.as_tensor(x).float()), crop=self.crop)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, Any]:
        x, label = self.base[index]
        return self._prepare(x), label


class _BatchedPreparedDataset(PreparedDataset):
    """A prepared dataset whose base cuts whole batches (``get_batch``), as ``zoo.iterate_batches`` prefers."""

    def get_batch(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = self.base.get_batch(indices)
        return self._prepare(images), labels

    def to(self, device: str | torch.device) -> _BatchedPreparedDataset:
        return _BatchedPreparedDataset(self.base.to(device), self.preprocessing, self.crop)


def prepare_dataset(dataset: Dataset, preprocessing: Preprocessing | None, *, crop: bool = False) -> Dataset:
    """The dataset with its images resized and normalised as a network expects; no transforms to write.

    Parameters
    ----------
    dataset
        A dataset with ``info`` (``zoo.DatasetInfo``: every zoo dataset), whose ``info.denormalize``
        maps its items back to pixels in [0, 1].
    preprocessing
        What the network expects (``model.preprocessing`` of a model from ``zoo.load_model``); None
        returns the dataset unchanged.
    crop
        Apply the network's evaluation crop (see ``Preprocessing.crop_fraction``); by default the
        whole image is resized, so that no part of a stimulus is cut off.

    Returns
    -------
    Dataset
        ``dataset`` itself when its images already have the shape and normalisation (and no crop is
        asked for); otherwise a ``PreparedDataset`` whose items have shape ``preprocessing.image_shape``
        and whose ``info`` says the new image shape, mean and std (labels and class names are kept).

    Raises
    ------
    ValueError
        If the dataset has no ``info``, or its images have channels the network cannot take.
    """
    if preprocessing is None:
        return dataset
    info = getattr(dataset, "info", None)
    if info is None or not callable(getattr(info, "denormalize", None)):
        raise ValueError(
            f"cannot prepare a {type(dataset).__name__} for the network: it has no info.denormalize to take its "
            "images back to pixels in [0, 1]; load it with zoo.load_dataset, or apply model.preprocessing "
            "to its pixels yourself"
        )
    if not _convertible(info.n_channels, preprocessing.channels):
        raise ValueError(
            f"{info.name} has images with {info.n_channels} channels; the network takes {preprocessing.channels}"
        )
    cropping = crop and preprocessing.crop_fraction < 1
    same_stats = _same(info.mean, preprocessing.mean) and _same(info.std, preprocessing.std)
    if not cropping and tuple(info.image_shape) == preprocessing.image_shape and same_stats:
        return dataset
    kind = _BatchedPreparedDataset if callable(getattr(dataset, "get_batch", None)) else PreparedDataset
    return kind(dataset, preprocessing, crop=cropping)


def prepare_for(model: nn.Module, dataset: Dataset, *, crop: bool = False) -> Dataset:
    """``prepare_dataset(dataset, model.preprocessing)``; the dataset unchanged when the model has none."""
    return prepare_dataset(dataset, getattr(model, "preprocessing", None), crop=crop)


def check_input_shape(model: nn.Module, dataset: Dataset, *, subject: str, advice: str) -> None:
    """Refuse a dataset whose items are not the shape a zoo model was built for (its
    ``config["input_shape"]``), or a corpus whose vocabulary is not the language model's; models that do
    not say, or datasets without ``info``, pass.

    Parameters
    ----------
    subject
        How the message names the dataset, e.g. ``"--dataset digits"``.
    advice
        What to do instead, in the caller's spelling (a flag, a key of a study file...).

    Raises
    ------
    ValueError
        Naming both shapes, then ``advice``.
    """
    config = getattr(model, "config", None) or {}
    expected, info = config.get("input_shape"), getattr(dataset, "info", None)
    if expected is not None and info is not None and tuple(expected) != tuple(info.input_shape):
        items = "sequences" if hasattr(info, "vocabulary") else "images"
        raise ValueError(
            f"{subject} has {items} of shape {tuple(info.input_shape)}, but the model was built for {tuple(expected)}; "
            f"{advice}"
        )
    vocabulary = getattr(info, "vocabulary", None)
    if config.get("vocabulary") is not None and vocabulary is not None and \
            list(config["vocabulary"]) != list(vocabulary.words):
        # the same ids would name other words: every result would be silently wrong
        raise ValueError(
            f"{subject} numbers its words by another vocabulary ({len(vocabulary)} words) than the model's "
            f"({len(config['vocabulary'])} words); {advice} (the same corpus with the same options)"
        )


def _convertible(have: int, want: int) -> bool:
    """Channels turned into the network's: equal, grayscale repeated, or RGB to luma."""
    return have == want or have == 1 or (have == 3 and want == 1)


def _same(a: Sequence[float], b: Sequence[float]) -> bool:
    return len(a) == len(b) and all(math.isclose(x, y, rel_tol=1e-6, abs_tol=1e-9) for x, y in zip(a, b))
