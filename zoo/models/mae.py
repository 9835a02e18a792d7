"""Masked autoencoder (He et al. 2022): a small ViT encoder sees a random subset of patches, a light decoder fills in the rest."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from zoo._registry import TrainDefaults, register_model
from zoo.models._base import ZooModel, check_input_shape

__all__ = ["MaskedAutoencoder", "patchify", "unpatchify", "random_masking", "mae_objective", "default_patch_size"]


def patchify(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Cut images of shape (batch, C, H, W) into patches of shape (batch, n_patches, patch_size**2 * C).

    Patches are in row-major order over the (H / p, W / p) grid; each patch is flattened as (p, p, C).
    """
    batch, channels, height, width = images.shape
    if height % patch_size or width % patch_size:
        raise ValueError(f"image size {height}x{width} is not divisible by patch_size {patch_size}")
    rows, cols = height // patch_size, width // patch_size
    x = images.reshape(batch, channels, rows, patch_size, cols, patch_size)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(batch, rows * cols, patch_size * patch_size * channels)


def unpatchify(patches: torch.Tensor, patch_size: int, image_shape: Sequence[int]) -> torch.Tensor:
    """Inverse of ``patchify``: (batch, n_patches, p*p*C) -> (batch, C, H, W) for ``image_shape`` = (C, H, W)."""
    channels, height, width = image_shape
    rows, cols = height // patch_size, width // patch_size
    x = patches.reshape(patches.shape[0], rows, cols, patch_size, patch_size, channels)
    return x.permute(0, 5, 1, 3, 2, 4).reshape(patches.shape[0], channels, height, width)


def random_masking(n_batch: int, n_patches: int, mask_ratio: float, device=None, generator: torch.Generator | None = None):
    """Draw an independent random mask per sample.

    Returns
    -------
    ids_keep
        Long tensor of shape (batch, n_keep): indices of the visible patches.
    ids_restore
        Long tensor of shape (batch, n_patches) that undoes the shuffle (visible first, then masked).
    mask
        Float tensor of shape (batch, n_patches), 1 where the patch is hidden.
    """
    n_keep = max(1, int(round(n_patches * (1 - mask_ratio))))
    noise = torch.rand(n_batch, n_patches, device=device, generator=generator)
    ids_shuffle = noise.argsort(dim=1)
    ids_restore = ids_shuffle.argsort(dim=1)
    mask = torch.ones(n_batch, n_patches, device=device)
    mask[:, :n_keep] = 0
    return ids_shuffle[:, :n_keep], ids_restore, torch.gather(mask, 1, ids_restore)


def _sincos_1d(dim: int, positions: torch.Tensor) -> torch.Tensor:
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2))
    angles = positions.double()[:, None] * omega[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def _sincos_2d(dim: int, rows: int, cols: int) -> torch.Tensor:
    """Fixed 2-D sine-cosine position embedding of shape (1, rows * cols, dim)."""
    if dim % 4:
        raise ValueError(f"embedding dimension must be a multiple of 4 for 2-D sin-cos positions, got {dim}")
    grid_r, grid_c = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
    emb = torch.cat([_sincos_1d(dim // 2, grid_r.flatten()), _sincos_1d(dim // 2, grid_c.flatten())], dim=1)
    return emb.float()[None]


def _blocks(n: int, dim: int, heads: int, mlp_ratio: float) -> nn.ModuleList:
    if dim % heads:
        raise ValueError(f"embedding dimension {dim} is not divisible by {heads} attention heads")
    return nn.ModuleList(
        nn.TransformerEncoderLayer(dim, heads, int(dim * mlp_ratio), dropout=0.0, activation="gelu", batch_first=True, norm_first=True)
        for _ in range(n)
    )


_PATCH_CANDIDATES = (2, 4, 7, 8, 16, 32)


def default_patch_size(height: int, width: int) -> int:
    """A patch side for H x W images: the smallest of 2, 4, 7, 8 giving at most 64 patches, else the smallest
    of 16, 32 giving at most 256 (2 for 8x8 digits, 4 for 28x28 and 32x32, 16 for 224x224)."""
    dividing = [p for p in _PATCH_CANDIDATES if height % p == 0 and width % p == 0]
    for limit, largest in ((64, 8), (256, 32)):
        for p in dividing:
            if p <= largest and (height // p) * (width // p) <= limit:
                return p
    raise ValueError(f"no patch size in {_PATCH_CANDIDATES} divides a {height}x{width} image into <= 256 patches; pass patch_size=")


def mae_objective(model: "MaskedAutoencoder", images: torch.Tensor, labels: torch.Tensor | None = None):
    """Mean squared error on the masked patches only (of per-patch normalised pixels if ``norm_pix_loss``)."""
    pred, mask = model.predict_patches(images)
    target = model.patch_target(images)
    per_patch = (pred - target).pow(2).mean(-1)
    loss = (per_patch * mask).sum() / mask.sum()
    return loss, {"masked_mse": loss.detach()}


@register_model("mae", objective=mae_objective, defaults=TrainDefaults(epochs=100, lr=2e-3, batch_size=64, weight_decay=0.05))
class MaskedAutoencoder(ZooModel):
    """A small ViT masked autoencoder.

    Parameters
    ----------
    input_shape
        (C, H, W); H and W must be divisible by ``patch_size``.
    patch_size
        Side of the square patches (default: ``default_patch_size(H, W)``, 2 for 8x8 digits).
    embed_dim, depth, num_heads
        Encoder width, number of transformer blocks and attention heads.
    decoder_dim, decoder_depth, decoder_heads
        The (lighter) decoder's width, blocks and heads.
    mlp_ratio
        Hidden width of the transformer MLPs relative to the block width.
    mask_ratio
        Fraction of patches hidden from the encoder during training (0.75 as in the paper).
    norm_pix_loss
        Predict per-patch normalised pixels (mean 0, variance 1 within each patch).
    """

    family = "mae"

    def __init__(
        self,
        input_shape: Sequence[int] = (1, 8, 8),
        patch_size: int | None = None,
        embed_dim: int = 64,
        depth: int = 4,
        num_heads: int = 4,
        decoder_dim: int = 32,
        decoder_depth: int = 2,
        decoder_heads: int = 4,
        mlp_ratio: float = 2.0,
        mask_ratio: float = 0.75,
        norm_pix_loss: bool = False,
    ):
        super().__init__()
        shape = check_input_shape(input_shape, min_side=2)
        patch_size = int(patch_size) if patch_size is not None else default_patch_size(shape[1], shape[2])
        if shape[1] % patch_size or shape[2] % patch_size:
            raise ValueError(f"patch_size {patch_size} does not divide the {shape[1]}x{shape[2]} images")
        if not 0 <= mask_ratio < 1:
            raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
        self.config = {
            "input_shape": list(shape),
            "patch_size": patch_size,
            "embed_dim": embed_dim,
            "depth": depth,
            "num_heads": num_heads,
            "decoder_dim": decoder_dim,
            "decoder_depth": decoder_depth,
            "decoder_heads": decoder_heads,
            "mlp_ratio": mlp_ratio,
            "mask_ratio": float(mask_ratio),
            "norm_pix_loss": bool(norm_pix_loss),
        }
        self.input_shape, self.patch_size, self.mask_ratio = shape, patch_size, float(mask_ratio)
        rows, cols = shape[1] // patch_size, shape[2] // patch_size
        self.n_patches = rows * cols
        patch_dim = patch_size * patch_size * shape[0]
        self.patch_embed = nn.Linear(patch_dim, embed_dim)
        self.register_buffer("pos_embed", _sincos_2d(embed_dim, rows, cols), persistent=False)
        self.blocks = _blocks(depth, embed_dim, num_heads, mlp_ratio)
        self.norm = nn.LayerNorm(embed_dim)
        self.decoder_embed = nn.Linear(embed_dim, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        self.register_buffer("decoder_pos_embed", _sincos_2d(decoder_dim, rows, cols), persistent=False)
        self.decoder_blocks = _blocks(decoder_depth, decoder_dim, decoder_heads, mlp_ratio)
        self.decoder_norm = nn.LayerNorm(decoder_dim)
        self.decoder_pred = nn.Linear(decoder_dim, patch_dim)
        nn.init.normal_(self.mask_token, std=0.02)

    # encoder --------------------------------------------------------------------------------------

    def _encode_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            tokens = block(tokens)
        return self.norm(tokens)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Mean of the encoder's output tokens over all (unmasked) patches: shape (batch, embed_dim)."""
        tokens = self.patch_embed(patchify(x, self.patch_size)) + self.pos_embed
        return self._encode_tokens(tokens).mean(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encode(x)

    # masked prediction ----------------------------------------------------------------------------

    def predict_patches(self, x: torch.Tensor, mask_ratio: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode a random visible subset, decode every patch.

        Returns
        -------
        pred
            Tensor of shape (batch, n_patches, p*p*C): the predicted patches (per-patch normalised
            pixels if ``norm_pix_loss``).
        mask
            Tensor of shape (batch, n_patches), 1 for hidden patches. Drawn from torch's global RNG.
        """
        ratio = self.mask_ratio if mask_ratio is None else mask_ratio
        tokens = self.patch_embed(patchify(x, self.patch_size)) + self.pos_embed
        ids_keep, ids_restore, mask = random_masking(x.shape[0], self.n_patches, ratio, device=x.device)
        visible = torch.gather(tokens, 1, ids_keep[..., None].expand(-1, -1, tokens.shape[-1]))
        latent = self.decoder_embed(self._encode_tokens(visible))
        n_hidden = self.n_patches - latent.shape[1]
        full = torch.cat([latent, self.mask_token.to(latent.dtype).expand(x.shape[0], n_hidden, -1)], dim=1)
        full = torch.gather(full, 1, ids_restore[..., None].expand(-1, -1, full.shape[-1])) + self.decoder_pos_embed
        for block in self.decoder_blocks:
            full = block(full)
        return self.decoder_pred(self.decoder_norm(full)), mask.to(x.dtype)

    def patch_target(self, x: torch.Tensor) -> torch.Tensor:
        """The training target, shape (batch, n_patches, p*p*C): pixels, per-patch normalised if ``norm_pix_loss``."""
        target = patchify(x, self.patch_size)
        if self.config["norm_pix_loss"]:
            target = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6).sqrt()
        return target

    def reconstruct(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Predict the image from a random 1 - mask_ratio of its patches.

        Returns
        -------
        x_hat
            Tensor of shape (batch, C, H, W) in the normalised input space (with ``norm_pix_loss``
            each patch is mapped back with the true patch's mean and std, for display).
        mask
            Tensor of shape (batch, n_patches), 1 where the patch was hidden.
        """
        pred, mask = self.predict_patches(x)
        if self.config["norm_pix_loss"]:
            patches = patchify(x, self.patch_size)
            pred = pred * (patches.var(-1, keepdim=True) + 1e-6).sqrt() + patches.mean(-1, keepdim=True)
        return unpatchify(pred, self.patch_size, self.input_shape), mask

    def recordable_layers(self) -> list[str]:
        return ["patch_embed"] + [f"blocks.{i}" for i in range(len(self.blocks))] + ["norm"]
