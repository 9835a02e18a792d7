"""Colorization as a pretext task (Zhang, Isola & Efros 2016): predict colour from lightness.

An RGB image is converted to CIE Lab; the network sees only the lightness L and predicts the colour
(a, b) of every pixel. As in the paper, the prediction is a classification over quantised ab bins
rather than a regression: the ab plane is cut into squares of side ``AB_BIN_SIZE`` (10) and only the
squares that hold an sRGB colour at some lightness are kept (the in-gamut bins, 262). A regression
on ab (L2 or smooth L1) is pulled towards the mean of the plausible colours, which for most objects
is a desaturated brown-grey; a distribution over bins keeps several modes apart (a shirt may be red or
blue), and the annealed mean (softmax of the logits at temperature 0.38, then the mean of the bin
centres under it) decodes it to a colour more vivid than the mean and less noisy than the mode.

The target of every pixel is its true ab soft-encoded on its 5 nearest bins with a Gaussian kernel of
sigma 5 (the paper's choice); the loss is the cross-entropy of the predicted bin distribution against
it, averaged over pixels. The paper's class rebalancing (weighting rare, saturated colours up) is
left out: it needs bin frequencies of a large image collection, and our photo crops are few.

Grey inputs (1 channel) are read as the lightness of a colourless image: L from the grey level and
ab targets of 0. Such a model learns nothing about colour; it exists so that the registry's shape
contract (built for ``(1, 8, 8)`` images, trained a few steps on digits) holds. Built for a dataset
(``mean``/``std`` given, as ``zoo.train`` does) a grey model is refused, and so is evaluating one.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from zoo._data import iterate_batches
from zoo._registry import TrainDefaults, register_model
from zoo.models._base import ZooModel, check_input_shape, conv_trunk

__all__ = [
    "AB_BIN_SIZE",
    "ANNEALED_MEAN_TEMPERATURE",
    "Colorization",
    "ab_bin_centres",
    "annealed_mean",
    "colorization_loss",
    "colorization_objective",
    "lab_to_rgb",
    "rgb_to_lab",
    "soft_encode_ab",
]

AB_BIN_SIZE = 10.0
# The grid of bin centres spans -110..110 in a and b, which holds every sRGB colour.
_AB_LIMIT = 110.0
ANNEALED_MEAN_TEMPERATURE = 0.38
_SOFT_NEIGHBOURS = 5
_SOFT_SIGMA = 5.0

# sRGB (linear) to CIE XYZ under D65, and the D65 white point (2 degree observer), as scikit-image uses.
_XYZ_FROM_RGB = torch.tensor(
    [[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169], [0.019334, 0.119193, 0.950227]], dtype=torch.float64
)
_WHITE_D65 = torch.tensor([0.95047, 1.0, 1.08883], dtype=torch.float64)
_EPSILON = 0.008856  # (6/29)^3: below it the cube root is replaced by a line
_KAPPA = 7.787


def _apply_matrix(matrix: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``matrix @ pixel`` for every pixel of x, shape (..., 3, H, W)."""
    return torch.einsum("ij,...jhw->...ihw", matrix.to(x), x)


def _white(x: torch.Tensor) -> torch.Tensor:
    return _WHITE_D65.to(x).view(3, 1, 1)


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """sRGB pixels in [0, 1] to CIE Lab (D65): sRGB -> linear -> XYZ -> Lab.

    Parameters
    ----------
    rgb
        Tensor of shape (..., 3, H, W); values outside [0, 1] are clipped first.

    Returns
    -------
    Tensor of the same shape: L in [0, 100], a and b about in [-110, 110].
    """
    rgb = rgb.clamp(0.0, 1.0)
    linear = torch.where(rgb > 0.04045, ((rgb + 0.055) / 1.055).pow(2.4), rgb / 12.92)
    xyz = _apply_matrix(_XYZ_FROM_RGB, linear) / _white(linear)
    f = torch.where(xyz > _EPSILON, xyz.clamp_min(_EPSILON).pow(1.0 / 3.0), _KAPPA * xyz + 16.0 / 116.0)
    fx, fy, fz = f.unbind(-3)
    return torch.stack([116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)], dim=-3)


def lab_to_rgb(lab: torch.Tensor, clip: bool = True) -> torch.Tensor:
    """CIE Lab (D65) to sRGB, the inverse of ``rgb_to_lab``.

    Parameters
    ----------
    lab
        Tensor of shape (..., 3, H, W).
    clip
        Clip the result to [0, 1] (colours outside the sRGB gamut land on its edge); False keeps
        out-of-gamut values, which is how ``ab_bin_centres`` tells them apart.

    Returns
    -------
    Tensor of the same shape.
    """
    lightness, a, b = lab.unbind(-3)
    fy = (lightness + 16.0) / 116.0
    fx = fy + a / 500.0
    fz = (fy - b / 200.0).clamp_min(0.0)  # as scikit-image: a negative z is no colour
    f = torch.stack([fx, fy, fz], dim=-3)
    xyz = torch.where(f.pow(3) > _EPSILON, f.pow(3), (f - 16.0 / 116.0) / _KAPPA) * _white(lab)
    linear = _apply_matrix(torch.linalg.inv(_XYZ_FROM_RGB), xyz)
    rgb = torch.where(linear > 0.0031308, 1.055 * linear.clamp_min(0.0031308).pow(1.0 / 2.4) - 0.055, 12.92 * linear)
    return rgb.clamp(0.0, 1.0) if clip else rgb


@functools.lru_cache(maxsize=4)
def _in_gamut_centres(bin_size: float) -> torch.Tensor:
    steps = round(_AB_LIMIT / bin_size)
    axis = torch.arange(-steps, steps + 1, dtype=torch.float64, device="cpu") * bin_size
    a, b = torch.meshgrid(axis, axis, indexing="ij")
    centres = torch.stack([a.flatten(), b.flatten()], dim=1)  # (n_grid, 2)
    lightness = torch.linspace(0.0, 100.0, 101, dtype=torch.float64, device="cpu")[:, None]
    offsets = torch.linspace(-bin_size / 2, bin_size / 2, 6, dtype=torch.float64, device="cpu")
    in_gamut = torch.zeros(len(centres), dtype=torch.bool, device="cpu")
    for offset_a in offsets:  # points over each bin's square, edges included
        for offset_b in offsets:
            a_values, b_values = centres[:, 0] + offset_a, centres[:, 1] + offset_b
            lab = torch.stack([lightness.expand(-1, len(centres)), a_values.expand(101, -1), b_values.expand(101, -1)])
            rgb = lab_to_rgb(lab, clip=False)  # one image whose pixels are every (L, point) pair
            in_gamut |= ((rgb >= 0) & (rgb <= 1)).all(0).any(0)
    return centres[in_gamut].float()


def ab_bin_centres(bin_size: float = AB_BIN_SIZE) -> torch.Tensor:
    """The in-gamut ab bins: squares of side ``bin_size`` on a grid through 0 over [-110, 110]^2, kept
    where some point of the square (a 6 x 6 grid over it, edges included) is an sRGB colour at some
    lightness L in 0, 1, ..., 100. At side 10 that keeps 262 of the 529 squares (the paper's 313 are
    the bins ImageNet's pixels fall in, through its own gamut computation).

    Returns
    -------
    Float tensor of shape (n_bins, 2): the squares' centres, on the CPU, in (a, b) raster order.
    """
    if bin_size <= 0:
        raise ValueError(f"bin_size must be positive, got {bin_size}")
    return _in_gamut_centres(float(bin_size)).clone()


def soft_encode_ab(
    ab: torch.Tensor, centres: torch.Tensor, n_neighbours: int = _SOFT_NEIGHBOURS, sigma: float = _SOFT_SIGMA
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each pixel's ab as weights on its nearest bins (Gaussian kernel on the distance, normalised).

    Parameters
    ----------
    ab
        Tensor of shape (n, 2, H, W).
    centres
        Tensor of shape (n_bins, 2) (``ab_bin_centres()``).
    n_neighbours, sigma
        How many nearest bins share a pixel, and the kernel's width in ab units.

    Returns
    -------
    indices
        Long tensor of shape (n, H, W, n_neighbours): the nearest bins, nearest first.
    weights
        Tensor of shape (n, H, W, n_neighbours), summing to 1 over the last axis.
    """
    points = ab.movedim(1, -1)  # (n, H, W, 2)
    distances = torch.cdist(points.reshape(-1, 2), centres.to(ab))  # (n_pixels, n_bins)
    nearest, indices = distances.topk(min(n_neighbours, len(centres)), dim=1, largest=False)
    weights = torch.softmax(-nearest.pow(2) / (2 * sigma**2), dim=1)  # exp(-d^2 / 2 sigma^2), normalised
    shape = (*points.shape[:-1], indices.shape[1])
    return indices.reshape(shape), weights.reshape(shape)


def annealed_mean(logits: torch.Tensor, centres: torch.Tensor, temperature: float = ANNEALED_MEAN_TEMPERATURE) -> torch.Tensor:
    """Decode bin logits to ab: the mean of the bin centres under ``softmax(logits / temperature)``.

    Temperature 1 gives the distribution's mean, towards 0 its mode; the paper's 0.38 lies between.

    Parameters
    ----------
    logits
        Tensor of shape (n, n_bins, H, W).
    centres
        Tensor of shape (n_bins, 2).

    Returns
    -------
    Tensor of shape (n, 2, H, W).
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    probabilities = torch.softmax(logits.float() / temperature, dim=1)
    return torch.einsum("nqhw,qc->nchw", probabilities, centres.to(probabilities))


def colorization_loss(logits: torch.Tensor, ab: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the predicted bin distribution against the soft-encoded true ab, mean over pixels.

    Parameters
    ----------
    logits
        Tensor of shape (n, n_bins, H, W).
    ab
        The true colour, tensor of shape (n, 2, H, W).
    centres
        Tensor of shape (n_bins, 2).
    """
    indices, weights = soft_encode_ab(ab.float(), centres)
    log_probabilities = torch.log_softmax(logits.float(), dim=1).movedim(1, -1)  # (n, H, W, n_bins)
    return -(weights * log_probabilities.gather(-1, indices)).sum(-1).mean()


def colorization_objective(model: Colorization, images: torch.Tensor, labels: torch.Tensor):
    """The colorization loss of a batch of normalised images; also reports the mean ab error per pixel.

    Labels are ignored (the colour is the target). As in the paper, the loss is computed at the network's
    output resolution (here half the image's), against the true ab averaged over 2 x 2 pixels; the
    reported ``ab_error`` is measured there too.
    """
    lab = model.lab(images)
    logits = model.coarse_logits(model.lightness_input(lab))
    ab = F.avg_pool2d(lab[:, 1:], 2)  # the true colour at the logits' half resolution
    loss = colorization_loss(logits, ab, model.ab_centres)
    with torch.no_grad():
        error = (annealed_mean(logits, model.ab_centres, model.temperature) - ab).norm(dim=1).mean()
    return loss, {"ab_error": error.detach()}


@register_model(
    "colorization",
    objective=colorization_objective,
    defaults=TrainDefaults(epochs=30, lr=2e-3, batch_size=64, weight_decay=1e-4),
)
class Colorization(ZooModel):
    """L -> ab colorization network: the zoo's conv trunk on the lightness, two dilated 3x3 convs
    (2 ``width`` channels, widening the receptive field) and a 1x1 conv to one logit per in-gamut ab
    bin, at half resolution (where the loss is computed), upsampled bilinearly to the image.

    Parameters
    ----------
    input_shape
        (C, H, W) of the images: C = 3 (RGB), or 1 for the registry's shape checks (see the module).
    width
        Channels of the trunk's first conv layer (then 2x and 4x, as the digits CNN).
    mean, std
        The dataset's per-channel normalisation (``DatasetInfo.mean`` / ``std``): a stored image is
        ``(pixel - mean) / std``. None: images are pixels in [0, 1] as they are.
    temperature
        Of the annealed mean that decodes bin distributions to ab.

    ``encode`` returns the trunk's pooled features (what a linear probe reads), ``forward`` the bin
    logits of shape (n, n_bins, H, W), ``colorize`` the predicted RGB image.
    """

    family = "pretext"
    primary_metric = "ab_error_ratio"

    def __init__(
        self,
        input_shape: Sequence[int] = (3, 32, 32),
        width: int = 32,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        temperature: float = ANNEALED_MEAN_TEMPERATURE,
    ):
        super().__init__()
        channels, height, width_px = check_input_shape(input_shape, min_side=2)
        if channels not in (1, 3):
            raise ValueError(f"colorization needs RGB images (3 channels), got input_shape {tuple(input_shape)}")
        if (mean is None) != (std is None):
            raise ValueError("give both mean and std (the dataset's normalisation), or neither")
        if mean is not None:
            mean, std = [float(v) for v in mean], [float(v) for v in std]
            if len(mean) != channels or len(std) != channels or min(std) <= 0:
                raise ValueError(f"mean and std need {channels} values each (one per channel), std > 0; got {mean}, {std}")
            if channels == 1:
                raise ValueError(
                    "colorization needs colour images: this dataset has 1 channel (grey), so there is no colour to "
                    "predict; train it on RGB images, e.g. zoo.train('colorization', dataset='photos', "
                    "dataset_options={'crop': 32})"
                )
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.config = {
            "input_shape": [channels, height, width_px],
            "width": width,
            "mean": mean,
            "std": std,
            "temperature": float(temperature),
        }
        self.temperature = float(temperature)
        stats = (mean, std) if mean is not None else ([0.0] * channels, [1.0] * channels)
        self.register_buffer("pixel_mean", torch.tensor(stats[0]).view(1, channels, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(stats[1]).view(1, channels, 1, 1), persistent=False)
        self.register_buffer("ab_centres", ab_bin_centres().to(self.pixel_mean.device), persistent=False)
        self.features = nn.Sequential(conv_trunk(1, width))
        hidden = 2 * width
        self.decoder = nn.Sequential(
            nn.Conv2d(4 * width, hidden, 3, padding=2, dilation=2, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(),
            nn.Conv2d(hidden, hidden, 3, padding=2, dilation=2, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(),
        )
        self.head = nn.Conv2d(hidden, len(self.ab_centres), 1)

    @property
    def n_bins(self) -> int:
        return len(self.ab_centres)

    def pixels(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised images back to pixels in [0, 1], shape (n, C, H, W)."""
        return (x * self.pixel_std + self.pixel_mean).clamp(0.0, 1.0)

    def lab(self, x: torch.Tensor) -> torch.Tensor:
        """Lab of normalised images, shape (n, 3, H, W); a grey image (1 channel) has a = b = 0."""
        pixels = self.pixels(x.float())
        lab = rgb_to_lab(pixels.expand(-1, 3, -1, -1))
        if pixels.shape[1] == 1:  # D65's rounded white point leaves ~0.005 of colour on grey: exactly none
            lab = torch.cat([lab[:, :1], torch.zeros_like(lab[:, 1:])], dim=1)
        return lab

    @staticmethod
    def lightness_input(lab: torch.Tensor) -> torch.Tensor:
        """The network's input: L scaled from [0, 100] to [-1, 1], shape (n, 1, H, W)."""
        return lab[:, :1] / 50.0 - 1.0

    def _trunk(self, lightness: torch.Tensor) -> torch.Tensor:
        return self.features[:-1](lightness)  # all but the final pooling: half resolution

    def coarse_logits(self, lightness: torch.Tensor) -> torch.Tensor:
        """Logits over ab bins at half resolution (what the loss reads): shape (n, n_bins, H // 2, W // 2)
        for the network input ``lightness`` of shape (n, 1, H, W)."""
        return self.head(self.decoder(self._trunk(lightness)))

    def bin_logits(self, lightness: torch.Tensor) -> torch.Tensor:
        """``coarse_logits`` upsampled bilinearly to the image: shape (n, n_bins, H, W)."""
        logits = self.coarse_logits(lightness)
        return F.interpolate(logits, size=lightness.shape[-2:], mode="bilinear", align_corners=False)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        lightness = self.lightness_input(self.lab(x))
        return self.features.pool3(self._trunk(lightness)).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bin_logits(self.lightness_input(self.lab(x)))

    def predict_ab(self, x: torch.Tensor) -> torch.Tensor:
        """The annealed-mean ab of every pixel of normalised images: shape (n, 2, H, W)."""
        return annealed_mean(self(x), self.ab_centres, self.temperature)

    def colorize(self, x: torch.Tensor) -> torch.Tensor:
        """The input's lightness with the predicted ab, as an RGB image normalised as the dataset's.

        Returns
        -------
        Tensor of shape (n, 3, H, W); for a grey model the one channel's mean and std normalise all three.
        """
        lab = self.lab(x)
        ab = annealed_mean(self.bin_logits(self.lightness_input(lab)), self.ab_centres, self.temperature)
        rgb = lab_to_rgb(torch.cat([lab[:, :1], ab], dim=1))
        return (rgb - self.pixel_mean) / self.pixel_std

    def recordable_layers(self) -> list[str]:
        return ["features.relu1", "features.relu2", "features.relu3", "decoder.2", "decoder.5", "head"]

    @torch.no_grad()
    def evaluate(self, train_set, test_set) -> dict[str, float]:
        """Mean ab error per pixel on ``test_set`` (Euclidean, in Lab units) beside that of predicting
        grey (ab = 0), their ratio (below 1: better than grey) and the accuracy of the most likely bin
        against the bin nearest the true colour."""
        info = test_set.info
        if info.n_channels != 3:
            raise ValueError(
                f"colorization needs colour images; dataset {info.name!r} has {info.n_channels} channel(s): "
                "evaluate on RGB images such as 'photos'"
            )
        expected = (list(self.pixel_mean.flatten().tolist()), list(self.pixel_std.flatten().tolist()))
        if not (torch.allclose(torch.tensor(expected[0]), torch.tensor(info.mean)) and torch.allclose(torch.tensor(expected[1]), torch.tensor(info.std))):
            raise ValueError(
                f"this model reads images normalised with mean={expected[0]}, std={expected[1]}, but dataset "
                f"{info.name!r} has mean={list(info.mean)}, std={list(info.std)}; build it with "
                "mean=list(info.mean), std=list(info.std)"
            )
        device = self.ab_centres.device
        error = grey = correct = 0.0
        n_pixels = 0
        for images, _ in iterate_batches(test_set, 256):
            images = images.to(device)
            lab = self.lab(images)
            logits = self.bin_logits(self.lightness_input(lab))
            truth = lab[:, 1:]
            error += float((annealed_mean(logits, self.ab_centres, self.temperature) - truth).norm(dim=1).sum())
            grey += float(truth.norm(dim=1).sum())
            nearest = soft_encode_ab(truth, self.ab_centres, n_neighbours=1)[0][..., 0]
            correct += float((logits.argmax(1) == nearest).sum())
            n_pixels += truth.shape[0] * truth.shape[2] * truth.shape[3]
        return {
            "ab_error": error / n_pixels,
            "grey_ab_error": grey / n_pixels,
            "ab_error_ratio": error / grey if grey > 0 else float("nan"),
            "bin_accuracy": correct / n_pixels,
        }
