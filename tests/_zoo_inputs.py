"""Options and inputs that build and feed any registered zoo model: images for image models, token ids
for the language models (which are built for a vocabulary, not an image shape)."""

from __future__ import annotations

import torch

import zoo

TEXT_FAMILIES = {"word-embedding", "masked-lm"}
WORDS = ["<pad>", "<unk>", "<mask>", "the", "cat", "sat", "on", "mat", "dog", "ran", "away"]
COUNTS = [0, 3, 0, 40, 10, 8, 12, 6, 9, 5, 4]
SEQUENCE_LENGTH = 8


def is_text_model(name: str) -> bool:
    """Whether the zoo model ``name`` reads token ids (word2vec, the masked LM)."""
    return zoo.model_entry(name).family in TEXT_FAMILIES


def model_options(name: str, input_shape=(1, 8, 8), n_classes: int = 10) -> dict:
    """Options that build ``name``: a small vocabulary for language models, else the image shape (and
    classes for supervised models)."""
    if is_text_model(name):
        return {"input_shape": [SEQUENCE_LENGTH], "vocabulary": WORDS, "word_counts": COUNTS}
    family = zoo.model_entry(name).family
    options = {"input_shape": input_shape, **({"n_classes": n_classes} if family == "supervised" else {})}
    if name == "cnn10" and min(input_shape[1:]) < 9:  # too small for Tiny-10's unpadded 7th conv
        options["conv7_padding"] = "same"
    return options


def example_input(model: torch.nn.Module, batch: int = 3, seed: int = 0) -> torch.Tensor:
    """A seeded batch the model takes: token ids of real words, or Gaussian images."""
    generator = torch.Generator().manual_seed(seed)
    shape = (batch, *model.config["input_shape"])
    if model.family in TEXT_FAMILIES:
        return torch.randint(3, len(WORDS), shape, generator=generator)
    return torch.randn(*shape, generator=generator)
