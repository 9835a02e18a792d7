"""Batched, on-device image augmentations for contrastive learning.

Every image of a batch gets its own random transform, drawn from torch's global RNG (so a seeded
epoch reproduces its views). Presets suit the data: digits get small shifts, zooms, rotations and
noise but never a horizontal flip (a flipped 2 is not a 2); colour images also get flips and
colour jitter.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import torch
import torch.nn.functional as F

from zoo._names import unknown_name_error

__all__ = ["Augmentation", "augment", "augmentation_for", "augmentation_from"]


@dataclass(frozen=True)
class Augmentation:
    """Ranges of the random transforms (all in the normalised image space).

    Attributes
    ----------
    max_rotation
        Rotation angle drawn uniformly from [-max_rotation, max_rotation] degrees.
    max_shift
        Translation drawn uniformly up to this fraction of the image side, per axis.
    scale
        Zoom factor drawn uniformly from [scale[0], scale[1]] (above 1 = a random crop, enlarged).
    noise_std
        Std of additive Gaussian pixel noise.
    flip
        Mirror left-right with probability 0.5.
    color_jitter
        Strength of random brightness, contrast and saturation changes (0 = none; RGB only for saturation).
    grayscale_probability
        Probability of replacing an RGB image by its luminance.
    """

    max_rotation: float = 0.0
    max_shift: float = 0.0
    scale: tuple[float, float] = (1.0, 1.0)
    noise_std: float = 0.0
    flip: bool = False
    color_jitter: float = 0.0
    grayscale_probability: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


_PRESETS = {
    1: Augmentation(max_rotation=12.0, max_shift=0.15, scale=(0.9, 1.25), noise_std=0.15),
    3: Augmentation(max_rotation=0.0, max_shift=0.15, scale=(1.0, 1.5), flip=True, color_jitter=0.4, grayscale_probability=0.2),
}


def augmentation_for(input_shape, **overrides) -> Augmentation:
    """The preset for images of ``input_shape`` (C, H, W): grayscale -> digits-like, RGB -> natural images.

    ``overrides`` replace fields of the preset, e.g. ``augmentation_for((1, 8, 8), noise_std=0.0)``.
    """
    channels = int(input_shape[0])
    return replace(_PRESETS.get(channels, _PRESETS[1]), **_checked_fields(overrides))


def augmentation_from(fields: dict) -> Augmentation:
    """The augmentation that ``fields`` describe, every other transform off (no preset).

    ``augmentation_from({"max_shift": 0.1, "flip": True})``: shifts of up to a tenth of the side and
    mirroring, nothing else; ``Augmentation.to_dict()`` gives such a dict back.
    """
    return Augmentation(**_checked_fields(fields))


def _checked_fields(fields: dict) -> dict:
    """``fields`` with ``scale`` as a tuple; an unknown name is refused with the valid ones."""
    valid = sorted(asdict(Augmentation()))
    unknown = sorted(set(fields) - set(valid))
    if unknown:
        raise unknown_name_error("augmentation option", unknown[0], valid)
    fields = dict(fields)
    if "scale" in fields:
        fields["scale"] = tuple(fields["scale"])
    return fields


def _uniform(n: int, low: float, high: float, device) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, device=device)


def _affine(images: torch.Tensor, aug: Augmentation) -> torch.Tensor:
    n, device = images.shape[0], images.device
    angle = _uniform(n, -aug.max_rotation, aug.max_rotation, device) * (math.pi / 180)
    zoom = _uniform(n, aug.scale[0], aug.scale[1], device)
    shift = _uniform(2 * n, -2 * aug.max_shift, 2 * aug.max_shift, device).view(n, 2)  # [-1, 1] spans the image
    flip = torch.where(torch.rand(n, device=device) < 0.5, -1.0, 1.0) if aug.flip else torch.ones(n, device=device)
    cos, sin = angle.cos() / zoom, angle.sin() / zoom
    theta = torch.stack([torch.stack([cos * flip, -sin, shift[:, 0]], 1), torch.stack([sin * flip, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta.to(images.dtype), list(images.shape), align_corners=False)
    # "border" repeats the edge pixels: the background, for digits and most natural crops.
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _colour(images: torch.Tensor, aug: Augmentation) -> torch.Tensor:
    n, device = images.shape[0], images.device
    strength = aug.color_jitter
    brightness = _uniform(n, -strength, strength, device).view(n, 1, 1, 1)
    contrast = _uniform(n, 1 - strength, 1 + strength, device).view(n, 1, 1, 1)
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    images = (images - mean) * contrast + mean + brightness
    if images.shape[1] == 3:
        gray = images.mean(1, keepdim=True)
        saturation = _uniform(n, 1 - strength, 1 + strength, device).view(n, 1, 1, 1)
        images = gray + (images - gray) * saturation
    return images


def augment(images: torch.Tensor, aug: Augmentation) -> torch.Tensor:
    """One random view of each image.

    Parameters
    ----------
    images
        Normalised images of shape (batch, C, H, W), on any device.
    aug
        The ranges (see ``augmentation_for``).

    Returns
    -------
    Tensor of the same shape, dtype and device.
    """
    out = _affine(images, aug)
    if aug.color_jitter > 0:
        out = _colour(out, aug)
    if aug.grayscale_probability > 0 and out.shape[1] == 3:
        chosen = (torch.rand(out.shape[0], device=out.device) < aug.grayscale_probability).view(-1, 1, 1, 1)
        out = torch.where(chosen, out.mean(1, keepdim=True).expand_as(out), out)
    if aug.noise_std > 0:
        out = out + aug.noise_std * torch.randn_like(out)
    return out
