"""Autoencoders: linear, undercomplete MLP and conv, denoising, sparse, contractive and variational.

Each variant's loss is a pure function here, beside its model. All losses are computed in the
normalised input space; ``recon_mse`` is the mean squared error per pixel.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from zoo._names import unknown_name_error
from zoo._registry import TrainDefaults, register_model
from zoo.models._base import ZooModel, check_input_shape

__all__ = [
    "Autoencoder",
    "LinearAutoencoder",
    "MLPAutoencoder",
    "ConvAutoencoder",
    "DenoisingAutoencoder",
    "SparseAutoencoder",
    "ContractiveAutoencoder",
    "VariationalAutoencoder",
    "reconstruction_objective",
    "denoising_objective",
    "sparse_objective",
    "contractive_objective",
    "vae_objective",
    "corrupt",
    "contractive_penalty",
    "gaussian_kl",
]


# --- objectives -----------------------------------------------------------------------------------


def reconstruction_objective(model: "Autoencoder", images: torch.Tensor, labels: torch.Tensor | None = None):
    """Mean squared reconstruction error per pixel."""
    loss = F.mse_loss(model.reconstruct(images), images)
    return loss, {"recon_mse": loss.detach()}


_CORRUPTIONS = {
    # Gaussian noise of std `level` (the data have unit variance).
    "gaussian": lambda x, level: x + level * torch.randn_like(x),
    # Each pixel set to the dataset mean (0 after normalisation) with probability `level`.
    "masking": lambda x, level: x * (torch.rand_like(x) >= level).to(x.dtype),
}


def corrupt(images: torch.Tensor, kind: str = "gaussian", level: float = 0.5) -> torch.Tensor:
    """Corrupt normalised images of shape (batch, C, H, W) with ``"gaussian"`` noise or ``"masking"``."""
    if kind not in _CORRUPTIONS:
        raise unknown_name_error("corruption", kind, _CORRUPTIONS)
    return _CORRUPTIONS[kind](images, level)


def denoising_objective(model: "DenoisingAutoencoder", images: torch.Tensor, labels: torch.Tensor | None = None):
    """Reconstruct the clean images from corrupted ones (the model's ``corruption`` and ``noise_level``)."""
    noisy = corrupt(images, model.config["corruption"], model.config["noise_level"])
    loss = F.mse_loss(model.decode(model.encode(noisy)), images)
    return loss, {"denoise_mse": loss.detach()}


def sparse_objective(model: "SparseAutoencoder", images: torch.Tensor, labels: torch.Tensor | None = None):
    """Reconstruction error plus ``l1_weight`` times the mean L1 norm of the code."""
    code = model.encode(images)
    recon = F.mse_loss(model.decode(code), images)
    l1 = code.abs().sum(1).mean()
    active = (code > 0).float().mean()
    return recon + model.config["l1_weight"] * l1, {"recon_mse": recon.detach(), "code_l1": l1.detach(), "active_fraction": active.detach()}


def contractive_penalty(code: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Squared Frobenius norm of the Jacobian of ``h = sigmoid(W x + b)``, per sample.

    For a sigmoid layer dh_j/dx_i = h_j (1 - h_j) W_ji, so
    ||J||_F^2 = sum_j (h_j (1 - h_j))^2 sum_i W_ji^2 (exact, no autograd needed).

    Parameters
    ----------
    code
        The layer's output h, shape (batch, code_dim).
    weight
        W, shape (code_dim, input_dim).

    Returns
    -------
    Tensor of shape (batch,).
    """
    return ((code * (1 - code)) ** 2) @ (weight**2).sum(1)


def contractive_objective(model: "ContractiveAutoencoder", images: torch.Tensor, labels: torch.Tensor | None = None):
    """Reconstruction error plus ``contraction_weight`` times the mean squared Frobenius norm of the encoder's Jacobian."""
    code = model.encode(images)
    recon = F.mse_loss(model.decode(code), images)
    jacobian = contractive_penalty(code, model.encoder.fc.weight).mean()
    return recon + model.config["contraction_weight"] * jacobian, {"recon_mse": recon.detach(), "jacobian_frobenius2": jacobian.detach()}


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) per sample, shape (batch,), for inputs of shape (batch, d)."""
    mu, logvar = mu.float(), logvar.float()  # exp(logvar) can overflow float16 under autocast
    return 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1)


def vae_objective(model: "VariationalAutoencoder", images: torch.Tensor, labels: torch.Tensor | None = None):
    """Negative ELBO per pixel: MSE of a reparameterised sample's reconstruction + ``beta`` * KL / n_pixels.

    This is the Gaussian likelihood with variance ``beta / 2`` per pixel, scaled by 1 / n_pixels.
    """
    mu, logvar = model.posterior(images)
    sample = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
    recon = F.mse_loss(model.decode(sample), images)
    kl = gaussian_kl(mu, logvar).mean()
    loss = recon + model.config["beta"] * kl / images[0].numel()
    return loss, {"recon_mse": recon.detach(), "kl": kl.detach()}


# --- models ---------------------------------------------------------------------------------------


class Autoencoder(ZooModel):
    """Base: ``encoder`` maps images to a code, ``decoder`` maps the code back to an image."""

    family = "autoencoder"
    encoder: nn.Module
    decoder: nn.Module

    def _set_shape(self, input_shape: Sequence[int], **config) -> tuple[int, int, int]:
        shape = check_input_shape(input_shape)
        self.input_shape = shape
        self.n_pixels = shape[0] * shape[1] * shape[2]
        self.config = {"input_shape": list(shape), **config}
        return shape

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def decode(self, code: torch.Tensor) -> torch.Tensor:
        """Images of shape (batch, C, H, W) from codes of shape (batch, code_dim)."""
        return self.decoder(code).reshape(code.shape[0], *self.input_shape)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """x_hat of the same shape as x, (batch, C, H, W), in the normalised space."""
        return self.decode(self.encode(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.reconstruct(x)


def _mlp(sizes: Sequence[int], prefix: str, last_activation: type[nn.Module] | None, flatten: bool = False) -> nn.Sequential:
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    if flatten:
        layers["flatten"] = nn.Flatten()
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:]), start=1):
        is_last = i == len(sizes) - 1
        layers[f"{prefix}{i}" if not is_last else "code" if prefix == "fc" else "out"] = nn.Linear(n_in, n_out)
        if not is_last:
            layers[f"relu{i}"] = nn.ReLU()
        elif last_activation is not None:
            layers["code_act"] = last_activation()
    return nn.Sequential(layers)


@register_model("ae-linear", objective=reconstruction_objective, defaults=TrainDefaults(epochs=150, lr=1e-2, batch_size=128, weight_decay=0.0))
class LinearAutoencoder(Autoencoder):
    """``x_hat = D (E x + b) + c``: no nonlinearity, so at its optimum it spans the top ``code_dim`` principal components.

    Parameters
    ----------
    code_dim
        Size of the code (the PCA comparison uses the same number of components).
    """

    def __init__(self, input_shape: Sequence[int] = (1, 8, 8), code_dim: int = 16):
        super().__init__()
        self._set_shape(input_shape, code_dim=code_dim)
        self.encoder = nn.Linear(self.n_pixels, code_dim)
        self.decoder = nn.Linear(code_dim, self.n_pixels)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x.flatten(1))

    def recordable_layers(self) -> list[str]:
        return ["encoder", "decoder"]


@register_model("ae-mlp", objective=reconstruction_objective, defaults=TrainDefaults(epochs=30, lr=3e-3, batch_size=64, weight_decay=1e-5))
class MLPAutoencoder(Autoencoder):
    """Undercomplete fully connected autoencoder: input -> hidden (ReLU) -> code -> hidden (ReLU) -> output.

    Parameters
    ----------
    hidden
        Widths of the encoder's hidden layers (the decoder mirrors them).
    code_dim
        Size of the (linear) code.
    """

    # The code's nonlinearity (a module class), or None for a linear code.
    code_activation: type[nn.Module] | None = None

    def __init__(self, input_shape: Sequence[int] = (1, 8, 8), hidden: Sequence[int] = (256,), code_dim: int = 32):
        super().__init__()
        self._build(input_shape, hidden, code_dim)

    def _build(self, input_shape: Sequence[int], hidden: Sequence[int], code_dim: int, **variant_config) -> None:
        hidden = [int(h) for h in hidden]
        self._set_shape(input_shape, hidden=hidden, code_dim=code_dim, **variant_config)
        self.encoder = _mlp([self.n_pixels, *hidden, code_dim], "fc", self.code_activation, flatten=True)
        self.decoder = _mlp([code_dim, *hidden[::-1], self.n_pixels], "fc_dec", None)

    def recordable_layers(self) -> list[str]:
        names = [name for name, module in self.named_modules() if isinstance(module, (nn.ReLU, nn.Sigmoid))]
        code = "encoder.code_act" if self.code_activation is not None else "encoder.code"
        encoder_relus = [n for n in names if n.startswith("encoder.") and n != code]
        decoder_relus = [n for n in names if n.startswith("decoder.")]
        return encoder_relus + [code] + decoder_relus + ["decoder.out"]


@register_model("ae-denoising", objective=denoising_objective, defaults=TrainDefaults(epochs=30, lr=3e-3, batch_size=64, weight_decay=1e-5))
class DenoisingAutoencoder(MLPAutoencoder):
    """The MLP autoencoder trained to undo a corruption of its input.

    Parameters
    ----------
    corruption
        ``"gaussian"`` (additive noise of std ``noise_level``) or ``"masking"`` (each pixel dropped
        to the mean with probability ``noise_level``).
    noise_level
        Strength of the corruption.
    """

    def __init__(self, input_shape: Sequence[int] = (1, 8, 8), hidden: Sequence[int] = (256,), code_dim: int = 32, corruption: str = "gaussian", noise_level: float = 0.5):
        if corruption not in _CORRUPTIONS:
            raise unknown_name_error("corruption", corruption, _CORRUPTIONS)
        if not 0 <= noise_level or (corruption == "masking" and noise_level >= 1):
            raise ValueError(f"noise_level must be >= 0 (and < 1 for masking), got {noise_level}")
        nn.Module.__init__(self)
        self._build(input_shape, hidden, code_dim, corruption=corruption, noise_level=float(noise_level))


@register_model("ae-sparse", objective=sparse_objective, defaults=TrainDefaults(epochs=30, lr=3e-3, batch_size=64, weight_decay=0.0))
class SparseAutoencoder(MLPAutoencoder):
    """An overcomplete MLP autoencoder with a ReLU code penalised by its L1 norm.

    Parameters
    ----------
    code_dim
        Size of the code (larger than the input by default on digits).
    l1_weight
        Weight of the code's L1 norm in the loss.
    """

    code_activation = nn.ReLU

    def __init__(self, input_shape: Sequence[int] = (1, 8, 8), hidden: Sequence[int] = (256,), code_dim: int = 128, l1_weight: float = 1e-3):
        nn.Module.__init__(self)
        self._build(input_shape, hidden, code_dim, l1_weight=float(l1_weight))


@register_model("ae-contractive", objective=contractive_objective, defaults=TrainDefaults(epochs=40, lr=3e-3, batch_size=64, weight_decay=0.0))
class ContractiveAutoencoder(Autoencoder):
    """One sigmoid encoder layer and a linear decoder, with the encoder's Jacobian penalised (Rifai et al. 2011).

    Parameters
    ----------
    code_dim
        Number of sigmoid code units.
    contraction_weight
        Weight of the mean squared Frobenius norm of the Jacobian d code / d input.
    """

    def __init__(self, input_shape: Sequence[int] = (1, 8, 8), code_dim: int = 64, contraction_weight: float = 0.01):
        super().__init__()
        self._set_shape(input_shape, code_dim=code_dim, contraction_weight=float(contraction_weight))
        self.encoder = nn.Sequential(OrderedDict(flatten=nn.Flatten(), fc=nn.Linear(self.n_pixels, code_dim), code=nn.Sigmoid()))
        self.decoder = nn.Sequential(OrderedDict(out=nn.Linear(code_dim, self.n_pixels)))

    def recordable_layers(self) -> list[str]:
        return ["encoder.code", "decoder.out"]


@register_model("ae-vae", objective=vae_objective, defaults=TrainDefaults(epochs=40, lr=2e-3, batch_size=64, weight_decay=0.0))
class VariationalAutoencoder(Autoencoder):
    """A Gaussian VAE with MLP encoder and decoder; ``encode`` returns the posterior mean.

    Parameters
    ----------
    hidden
        Widths of the encoder's hidden layers (mirrored by the decoder).
    code_dim
        Latent dimensions.
    beta
        Weight of the KL term (see ``vae_objective``).
    """

    def __init__(self, input_shape: Sequence[int] = (1, 8, 8), hidden: Sequence[int] = (256,), code_dim: int = 16, beta: float = 0.1):
        super().__init__()
        hidden = [int(h) for h in hidden]
        self._set_shape(input_shape, hidden=hidden, code_dim=code_dim, beta=float(beta))
        trunk = _mlp([self.n_pixels, *hidden], "fc", None, flatten=True)
        trunk.add_module(f"relu{len(hidden)}", nn.ReLU())
        self.encoder = trunk
        self.fc_mu = nn.Linear(hidden[-1], code_dim)
        self.fc_logvar = nn.Linear(hidden[-1], code_dim)
        self.decoder = _mlp([code_dim, *hidden[::-1], self.n_pixels], "fc_dec", None)
        self._n_hidden = len(hidden)

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log-variance of q(z | x), each of shape (batch, code_dim)."""
        features = self.encoder(x)
        return self.fc_mu(features), self.fc_logvar(features).clamp(-15.0, 15.0)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc_mu(self.encoder(x))

    def recordable_layers(self) -> list[str]:
        decoder = [f"decoder.relu{i}" for i in range(1, self._n_hidden + 1)]
        return [f"encoder.relu{i}" for i in range(1, self._n_hidden + 1)] + ["fc_mu"] + decoder + ["decoder.out"]


@register_model("ae-conv", objective=reconstruction_objective, defaults=TrainDefaults(epochs=20, lr=3e-3, batch_size=64, weight_decay=1e-5))
class ConvAutoencoder(Autoencoder):
    """Undercomplete conv autoencoder: two conv layers (the second with stride 2), a linear code, and the mirror.

    Parameters
    ----------
    width
        Channels of the first conv layer (the second has twice as many).
    code_dim
        Size of the code.
    """

    def __init__(self, input_shape: Sequence[int] = (1, 8, 8), width: int = 32, code_dim: int = 32):
        super().__init__()
        channels, height, width_px = self._set_shape(input_shape, width=width, code_dim=code_dim)
        if height % 2 or width_px % 2:
            raise ValueError(f"ae-conv needs an even image height and width, got {height}x{width_px}; crop or resize the images")
        inner = (2 * width, height // 2, width_px // 2)
        self.encoder = nn.Sequential(
            OrderedDict(
                conv1=nn.Conv2d(channels, width, 3, padding=1),
                relu1=nn.ReLU(),
                conv2=nn.Conv2d(width, 2 * width, 3, stride=2, padding=1),
                relu2=nn.ReLU(),
                flatten=nn.Flatten(),
                code=nn.Linear(math.prod(inner), code_dim),
            )
        )
        self.decoder = nn.Sequential(
            OrderedDict(
                fc=nn.Linear(code_dim, math.prod(inner)),
                relu_fc=nn.ReLU(),
                unflatten=nn.Unflatten(1, inner),
                deconv1=nn.ConvTranspose2d(2 * width, width, 4, stride=2, padding=1),
                relu1=nn.ReLU(),
                out=nn.Conv2d(width, channels, 3, padding=1),
            )
        )

    def recordable_layers(self) -> list[str]:
        return ["encoder.relu1", "encoder.relu2", "encoder.code", "decoder.relu_fc", "decoder.relu1", "decoder.out"]
