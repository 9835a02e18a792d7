"""The vector-quantised autoencoder (VQ-VAE, van den Oord et al. 2017).

A conv encoder maps an image to a grid of vectors z; each is replaced by its nearest entry e of a
learned codebook; a conv decoder maps the grid of codebook vectors back to the image. The nearest-code
choice has no gradient, so the straight-through estimator copies the decoder's gradient at the
quantised vectors onto z. The loss, in the normalised input space, is

    recon_mse + mean ||sg[z] - e||^2 + beta * mean ||z - sg[e]||^2

(sg: stop-gradient; squared errors averaged over the code vectors' elements): the codebook loss
moves the codes towards the encoder's outputs, the commitment loss keeps the encoder near its codes.
Codes that no input chose for ``restart_after`` training steps are moved onto encoder outputs of the
current batch (dead-code restarts), drawn with torch's global random number generator.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from zoo._registry import TrainDefaults, register_model
from zoo.models.autoencoders import Autoencoder

__all__ = ["VectorQuantizer", "VQVAE", "vq_objective", "code_perplexity"]


def code_perplexity(indices: torch.Tensor, n_codes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Codebook usage and perplexity of a batch of code indices.

    Parameters
    ----------
    indices
        Long tensor of any shape, values in 0..n_codes-1.
    n_codes
        Size of the codebook.

    Returns
    -------
    usage
        Fraction of the codes chosen at least once (0-d tensor).
    perplexity
        ``exp(H)`` of the histogram of the chosen codes, H its entropy in nats (0 log 0 = 0): 1 when
        one code takes everything, ``n_codes`` when all are used equally (0-d tensor).
    """
    counts = torch.bincount(indices.flatten(), minlength=n_codes).float()
    p = counts / counts.sum()
    entropy = -(p * p.clamp_min(1e-30).log()).sum()
    return (counts > 0).float().mean(), entropy.exp()


class VectorQuantizer(nn.Module):
    """A codebook of ``n_codes`` vectors of ``code_dim``; its forward returns the quantised grid.

    The forward (what a recording of this layer sees) takes and returns tensors of shape
    (batch, code_dim, h, w); the returned vectors are codebook entries (up to rounding), carrying the
    straight-through gradient to the input.
    """

    def __init__(self, n_codes: int, code_dim: int):
        super().__init__()
        self.codebook = nn.Parameter(torch.empty(n_codes, code_dim).uniform_(-1.0 / n_codes, 1.0 / n_codes))
        # Training steps since each code was last chosen (kept in checkpoints so that a resumed run restarts the same codes).
        self.register_buffer("steps_unused", torch.zeros(n_codes, dtype=torch.long))

    def nearest(self, z: torch.Tensor) -> torch.Tensor:
        """Index of the nearest code of each vector of ``z`` (batch, code_dim, h, w): shape (batch, h, w)."""
        flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
        distances = (flat.pow(2).sum(1, keepdim=True) - 2 * flat @ self.codebook.T + self.codebook.pow(2).sum(1))
        return distances.argmin(1).reshape(z.shape[0], z.shape[2], z.shape[3])

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """Codebook vectors of ``indices`` (batch, h, w), shape (batch, code_dim, h, w)."""
        return self.codebook[indices].permute(0, 3, 1, 2)

    def quantize(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The straight-through output, the chosen codebook vectors (with the codebook's gradient) and their indices."""
        indices = self.nearest(z)
        chosen = self.lookup(indices)
        return z + (chosen - z).detach(), chosen, indices

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.quantize(z)[0]

    @torch.no_grad()
    def restart_dead_codes(self, z: torch.Tensor, restart_after: int) -> int:
        """Move codes unused for ``restart_after`` steps onto random vectors of ``z``; returns how many moved."""
        if restart_after <= 0:
            return 0
        dead = torch.nonzero(self.steps_unused >= restart_after).flatten()
        if len(dead) == 0:
            return 0
        flat = z.detach().permute(0, 2, 3, 1).reshape(-1, z.shape[1])
        picks = torch.randint(flat.shape[0], (len(dead),), device=flat.device)
        self.codebook[dead] = flat[picks].to(self.codebook.dtype)
        self.steps_unused[dead] = 0
        return len(dead)

    @torch.no_grad()
    def count_usage(self, indices: torch.Tensor) -> None:
        """One training step: reset the counters of the chosen codes, advance the others'."""
        chosen = torch.bincount(indices.flatten(), minlength=self.codebook.shape[0]) > 0
        self.steps_unused.add_(1).masked_fill_(chosen, 0)


def vq_objective(model: "VQVAE", images: torch.Tensor, labels: torch.Tensor | None = None):
    """Reconstruction + codebook + ``beta`` * commitment loss (see the module's docstring).

    In training steps (train mode, gradients on) the dead codes are restarted first and the usage
    counters are advanced. Logs ``recon_mse``, ``codebook_loss``, ``commitment_loss``,
    ``codebook_usage`` (fraction of codes used in the batch) and ``perplexity``.
    """
    z = model.encoder(images)
    training_step = model.training and torch.is_grad_enabled()
    if training_step:
        model.quantizer.restart_dead_codes(z, model.config["restart_after"])
    quantized, chosen, indices = model.quantizer.quantize(z)
    if training_step:
        model.quantizer.count_usage(indices)
    recon = F.mse_loss(model.decode_grid(quantized), images)
    codebook = F.mse_loss(chosen, z.detach())
    commitment = F.mse_loss(z, chosen.detach())
    usage, perplexity = code_perplexity(indices, model.config["n_codes"])
    loss = recon + codebook + model.config["beta"] * commitment
    metrics = {"recon_mse": recon.detach(), "codebook_loss": codebook.detach(), "commitment_loss": commitment.detach(),
               "codebook_usage": usage, "perplexity": perplexity}
    return loss, metrics


@register_model("vq-vae", objective=vq_objective, defaults=TrainDefaults(epochs=30, lr=2e-3, batch_size=64, weight_decay=0.0))
class VQVAE(Autoencoder):
    """A VQ-VAE: two stride-2 conv layers to a (H/4, W/4) grid of ``code_dim`` vectors, a codebook, and the mirror.

    Parameters
    ----------
    width
        Channels of the first conv layer (the second has twice as many).
    n_codes
        Codebook size.
    code_dim
        Length of each code vector.
    beta
        Weight of the commitment loss.
    restart_after
        Training steps a code may go unused before it is restarted (0: never).

    Notes
    -----
    ``encode`` returns the quantised grid flattened, shape (batch, code_dim * H/4 * W/4);
    ``codes`` returns the code indices, shape (batch, H/4, W/4); the ``quantizer`` layer records
    the quantised grid.
    """

    def __init__(self, input_shape: Sequence[int] = (1, 8, 8), width: int = 32, n_codes: int = 64, code_dim: int = 16, beta: float = 0.25, restart_after: int = 100):
        super().__init__()
        channels, height, width_px = self._set_shape(input_shape, width=width, n_codes=n_codes, code_dim=code_dim, beta=float(beta), restart_after=restart_after)
        if height % 4 or width_px % 4:
            raise ValueError(f"vq-vae halves the image twice, so its height and width must be multiples of 4; got {height}x{width_px}; crop or pad the images")
        if n_codes < 2 or code_dim < 1 or width < 1:
            raise ValueError(f"vq-vae needs n_codes >= 2, code_dim >= 1 and width >= 1; got {n_codes}, {code_dim}, {width}")
        if beta < 0 or restart_after < 0:
            raise ValueError(f"beta and restart_after must be >= 0; got {beta} and {restart_after}")
        self.grid = (height // 4, width_px // 4)
        self.encoder = nn.Sequential(
            OrderedDict(
                conv1=nn.Conv2d(channels, width, 4, stride=2, padding=1),
                relu1=nn.ReLU(),
                conv2=nn.Conv2d(width, 2 * width, 4, stride=2, padding=1),
                relu2=nn.ReLU(),
                conv3=nn.Conv2d(2 * width, 2 * width, 3, padding=1),
                relu3=nn.ReLU(),
                code=nn.Conv2d(2 * width, code_dim, 1),
            )
        )
        self.quantizer = VectorQuantizer(n_codes, code_dim)
        self.decoder = nn.Sequential(
            OrderedDict(
                conv1=nn.Conv2d(code_dim, 2 * width, 3, padding=1),
                relu1=nn.ReLU(),
                deconv1=nn.ConvTranspose2d(2 * width, width, 4, stride=2, padding=1),
                relu2=nn.ReLU(),
                out=nn.ConvTranspose2d(width, channels, 4, stride=2, padding=1),
            )
        )

    def decode_grid(self, quantized: torch.Tensor) -> torch.Tensor:
        """Images of shape (batch, C, H, W) from a grid of code vectors (batch, code_dim, H/4, W/4)."""
        return self.decoder(quantized)

    def decode(self, code: torch.Tensor) -> torch.Tensor:
        """Images from ``encode``'s flattened codes, shape (batch, code_dim * H/4 * W/4)."""
        return self.decode_grid(code.reshape(code.shape[0], -1, *self.grid))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.quantizer(self.encoder(x)).flatten(1)

    def codes(self, x: torch.Tensor) -> torch.Tensor:
        """Index of the chosen code at each grid position: long tensor of shape (batch, H/4, W/4)."""
        return self.quantizer.nearest(self.encoder(x))

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode_grid(self.quantizer(self.encoder(x)))

    def recordable_layers(self) -> list[str]:
        return ["encoder.relu1", "encoder.relu2", "encoder.code", "quantizer", "decoder.relu1", "decoder.relu2", "decoder.out"]

    @torch.no_grad()
    def evaluate(self, train_set, test_set) -> dict[str, float]:
        """The autoencoders' reconstruction measures, plus ``codebook_usage`` and ``perplexity`` over the whole test set."""
        from zoo._data import iterate_batches
        from zoo._evaluate import _autoencoder

        metrics = _autoencoder(self, train_set, test_set)
        device = self.quantizer.codebook.device
        indices = torch.cat([self.codes(images.to(device)).flatten() for images, _ in iterate_batches(test_set, 512)])
        usage, perplexity = code_perplexity(indices, self.config["n_codes"])
        return {**metrics, "codebook_usage": float(usage), "perplexity": float(perplexity)}
