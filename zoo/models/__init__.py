"""Zoo architectures, one file per family; importing this package registers them all."""

from zoo.models._base import ZooModel, check_input_shape
from zoo.models.autoencoders import (
    Autoencoder,
    ContractiveAutoencoder,
    ConvAutoencoder,
    DenoisingAutoencoder,
    LinearAutoencoder,
    MLPAutoencoder,
    SparseAutoencoder,
    VariationalAutoencoder,
    contractive_objective,
    contractive_penalty,
    corrupt,
    denoising_objective,
    gaussian_kl,
    reconstruction_objective,
    sparse_objective,
    vae_objective,
)
from zoo.models.contrastive import SimCLR, nt_xent, simclr_objective
from zoo.models.mae import MaskedAutoencoder, default_patch_size, mae_objective, patchify, random_masking, unpatchify
from zoo.models.supervised import MLPClassifier, SmallCNN, SmallImageResNet18, classification_objective

__all__ = [
    "ZooModel",
    "check_input_shape",
    "SmallCNN",
    "MLPClassifier",
    "SmallImageResNet18",
    "Autoencoder",
    "LinearAutoencoder",
    "MLPAutoencoder",
    "ConvAutoencoder",
    "DenoisingAutoencoder",
    "SparseAutoencoder",
    "ContractiveAutoencoder",
    "VariationalAutoencoder",
    "MaskedAutoencoder",
    "SimCLR",
    "classification_objective",
    "reconstruction_objective",
    "denoising_objective",
    "sparse_objective",
    "contractive_objective",
    "contractive_penalty",
    "vae_objective",
    "gaussian_kl",
    "corrupt",
    "mae_objective",
    "patchify",
    "unpatchify",
    "random_masking",
    "default_patch_size",
    "simclr_objective",
    "nt_xent",
]
