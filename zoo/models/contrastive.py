"""SimCLR (Chen et al. 2020): a conv encoder and a projection head trained with NT-Xent on two augmented views."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from zoo._augment import augment, augmentation_for
from zoo._ddp import gather_with_grad
from zoo._registry import TrainDefaults, register_model
from zoo.models._base import ZooModel, check_input_shape, conv_trunk

__all__ = ["SimCLR", "nt_xent", "simclr_objective"]

# Added to the self-similarity logits: effectively -inf for the softmax, yet finite in fp16.
_SELF_SIMILARITY_LOGIT = -1e4


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5, *,
            across_ranks: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised temperature-scaled cross-entropy (NT-Xent) of two batches of projections.

    Each of the 2n embeddings must pick its partner view among the 2n - 1 others; the loss is the
    cross-entropy over cosine similarities divided by ``temperature``, with self-similarity masked
    by a large negative finite logit.

    With ``across_ranks`` in a distributed run, ``z1`` and ``z2`` are this rank's slice of the
    batch: every rank gathers all slices (with gradients, ``zoo._ddp.gather_with_grad``) and
    computes the loss of the global batch, whose negatives are all ranks' embeddings, as SimCLR
    does at scale. Each rank then returns the one-process loss; the gather's backward sums the
    ranks' (identical) gradients into each slice, so DDP's average over ranks is the one-process
    gradient, whatever the slices' sizes. Every rank must call it together.

    Parameters
    ----------
    z1, z2
        Projections of the two views, each of shape (n, d); row i of z1 and of z2 are one image.
    temperature
        Softmax temperature (> 0).
    across_ranks
        Gather the batch of all ranks first (no effect without a process group).

    Returns
    -------
    loss
        Scalar: mean over the 2n anchors.
    accuracy
        Scalar (detached): fraction of anchors whose most similar other embedding is the partner.
    """
    if z1.shape != z2.shape or z1.dim() != 2:
        raise ValueError(f"z1 and z2 must both have shape (n, d), got {tuple(z1.shape)} and {tuple(z2.shape)}")
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    if across_ranks:
        z1, z2 = gather_with_grad(z1), gather_with_grad(z2)
    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)
    logits = (z @ z.T) / temperature
    self_mask = torch.eye(2 * n, dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_mask, _SELF_SIMILARITY_LOGIT)
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    loss = F.cross_entropy(logits, targets)
    accuracy = (logits.argmax(1) == targets).float().mean()
    return loss, accuracy.detach()


def simclr_objective(model: SimCLR, images: torch.Tensor, labels: torch.Tensor | None = None):
    """NT-Xent between two augmented views of every image (the model's augmentation and temperature).

    In a distributed run the negatives are the global batch's (``nt_xent(..., across_ranks=True)``).
    """
    views = torch.cat([augment(images, model.augmentation), augment(images, model.augmentation)])
    z1, z2 = model.project(views).chunk(2)
    loss, accuracy = nt_xent(z1, z2, model.config["temperature"], across_ranks=True)
    return loss, {"pair_accuracy": accuracy}


@register_model("simclr", objective=simclr_objective, defaults=TrainDefaults(epochs=40, lr=3e-3, batch_size=256, weight_decay=1e-4))
class SimCLR(ZooModel):
    """A conv encoder (three 3x3 conv layers with BatchNorm, a linear layer) and an MLP projection head.

    Parameters
    ----------
    input_shape
        (C, H, W) of the images.
    width
        Channels of the first conv layer (then 2x and 4x).
    feature_dim
        Size of the representation ``encode`` returns.
    projection_dim
        Size of the projection the loss sees.
    temperature
        NT-Xent temperature.
    augment
        Overrides of the dataset-appropriate augmentation preset (see ``zoo.augmentation_for``).
    """

    family = "contrastive"

    def __init__(
        self,
        input_shape: Sequence[int] = (1, 8, 8),
        width: int = 32,
        feature_dim: int = 128,
        projection_dim: int = 64,
        temperature: float = 0.2,
        augment: dict | None = None,
    ):
        super().__init__()
        channels, height, width_px = check_input_shape(input_shape, min_side=2)
        self.augmentation = augmentation_for(input_shape, **(augment or {}))
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.config = {
            "input_shape": [channels, height, width_px],
            "width": width,
            "feature_dim": feature_dim,
            "projection_dim": projection_dim,
            "temperature": float(temperature),
            "augment": self.augmentation.to_dict(),
        }
        self.features = nn.Sequential(
            OrderedDict(
                **conv_trunk(channels, width),
                flatten=nn.Flatten(),
                fc=nn.Linear(4 * width * 4, feature_dim, bias=False),
                bn_fc=nn.BatchNorm1d(feature_dim),
                relu_fc=nn.ReLU(),
            )
        )
        self.projection = nn.Sequential(
            OrderedDict(fc1=nn.Linear(feature_dim, feature_dim), relu1=nn.ReLU(), fc2=nn.Linear(feature_dim, projection_dim))
        )

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """Projections of shape (batch, projection_dim): what NT-Xent compares."""
        return self.projection(self.features(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(x)

    def recordable_layers(self) -> list[str]:
        return ["features.relu1", "features.relu2", "features.relu3", "features.relu_fc", "projection.fc2"]
