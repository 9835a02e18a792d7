"""The study file of ``probe analyze STUDY.toml``: read it, check every name, type and file, fill the defaults.

A study file is TOML::

    out = "runs/my-study"
    [data]
    dataset = "imagefolder:images"
    limit = 500
    [[models]]
    name = "resnet"
    arch = "torchvision:resnet18"
    weights = "resnet18.safetensors"
    layers = ["layer1", "layer2", "layer3", "layer4", "avgpool"]
    [analyses]
    similarity = { measures = ["rdm", "cka"] }

``StudySpec.from_file`` returns a ``StudySpec`` in which every relative path is resolved against the
study file's folder, every model is a ``zoo.load_model`` spelling and every analysis has all its
options (the defaults are those of ``ANALYSES``). Every problem found is reported at once, in one
``StudySpecError`` whose lines name the key (``models[1].layers``, ``analyses.similarity.measure``).

Checking takes milliseconds and loads neither torch nor any model: the zoo's names (datasets,
pretrained networks, zoo models) are read from the zoo when it is already imported, and otherwise
from a copy kept here that ``tests/test_study_spec.py`` compares with the zoo. Whether a layer
exists, or a torchvision or timm architecture does, is checked when the models are loaded.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import math
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, from PyPI (pip install tomli)
    import tomli as tomllib

__all__ = [
    "ANALYSES",
    "DataSpec",
    "ModelEntrySpec",
    "Option",
    "StudySpec",
    "StudySpecError",
    "default_analyses",
]


# ----------------------------------------------------------------------------------------------
# options and their defaults


@dataclass(frozen=True)
class Option:
    """One option of a study's table: the types it takes, its default and what it does.

    Types are checked strictly: a bool is not an int, and an int is accepted (as a float) where a
    float is expected. A list must be non-empty and must not repeat a value.

    Attributes
    ----------
    types
        The accepted Python types of the value: ``int``, ``float``, ``str``, ``list``, ``dict``.
    default
        The value when the option is not given (None: none).
    help
        What the option does, in one line (shown in the template).
    items
        For a list: the accepted types of its items; for a table: of its values.
    choices
        The only strings allowed (for a string, or the items of a list), besides ``patterns``.
    patterns
        Regular expressions that a string may match in full in place of one of ``choices``, each with how it
        reads in messages: ``((r"rbf-cka-[0-9.]+", "'rbf-cka-<fraction>'"),)``.
    gt, ge, lt
        Bounds of a number (or of the numbers of a list): greater than, at least, less than.
    words
        Strings accepted in place of the value, e.g. ``("auto",)``.
    path_suffix
        A string that is not one of ``words`` is a path to a file with this suffix, which must exist;
        it is resolved against the study file's folder.
    repeats
        A list may hold the same value twice (layer widths); otherwise a repeated value is refused.
    """

    types: tuple[type, ...]
    default: Any
    help: str
    items: tuple[type, ...] | None = None
    choices: tuple[str, ...] | None = None
    patterns: tuple[tuple[str, str], ...] = ()
    gt: float | None = None
    ge: float | None = None
    lt: float | None = None
    words: tuple[str, ...] = ()
    path_suffix: str | None = None
    repeats: bool = False

    def expected(self) -> str:
        """The value in words, for messages: ``"an integer > 0"``, ``"'auto' or a list of strings"``."""
        if self.path_suffix is not None:
            kinds = [f"a path to a {self.path_suffix} file"]
        else:
            kinds = [self._kind(t) for t in self.types]
        words = [repr(w) for w in self.words]
        return _either(words + kinds)

    def matches_pattern(self, value: str) -> bool:
        """Whether ``value`` matches one of ``patterns`` in full."""
        return any(re.fullmatch(pattern, value) for pattern, _ in self.patterns)

    def _kind(self, kind: type) -> str:
        if kind is list:
            inner = _either(self._item_kind(t, plural=True) for t in self.items or (str,))
            return f"a list of {inner}"
        if kind is dict:
            return f"a table of {_either(self._item_kind(t, plural=True) for t in self.items or (str,))}"
        return self._item_kind(kind, plural=False)

    def _item_kind(self, kind: type, plural: bool) -> str:
        if kind is str and self.choices is not None:
            listed = ", ".join([*map(repr, self.choices), *(shown for _, shown in self.patterns)])
            return listed if plural else f"one of {listed}"
        noun = {int: "integer", float: "number", str: "string", bool: "boolean", dict: "table", list: "list",
                object: "value"}[kind]
        if kind is str:
            noun = "non-empty string"
        bounds = self._bounds() if kind in (int, float) else ""
        if plural:
            return f"{noun}s{bounds}"
        return f"{'an' if noun[0] in 'aeiou' else 'a'} {noun}{bounds}"

    def _bounds(self) -> str:
        if self.gt is not None and self.lt is not None:
            return f" in ({_number(self.gt)}, {_number(self.lt)})"
        parts = []
        if self.gt is not None:
            parts.append(f" > {_number(self.gt)}")
        if self.ge is not None:
            parts.append(f" >= {_number(self.ge)}")
        if self.lt is not None:
            parts.append(f" < {_number(self.lt)}")
        return " and".join(parts)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _either(options: Any) -> str:
    options = list(options)
    return options[0] if len(options) == 1 else ", ".join(options[:-1]) + " or " + options[-1]


#: The names of ``analyses.list_measures()``, kept here so that checking a study file loads no torch
#: (``tests/test_study_spec.py`` compares them with the registry).
MEASURE_NAMES = ("linear-cka", "debiased-cka", "rbf-cka", "cca", "svcca", "pwcca", "procrustes", "shape",
                 "mutual-knn", "cknna", "regression", "rsa", "rsa-whitened")
#: Names a measure may also have: RBF CKA at another (positive) bandwidth, ``analyses.get_measure``'s
#: ``RBF_CKA_NAME`` (``tests/test_study_spec.py`` checks that they agree).
MEASURE_PATTERNS = ((r"rbf-cka-((?=[0.]*[1-9])(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?)",
                     "'rbf-cka-<fraction of the median distance>'"),)

#: Every analysis a study can run, in the order they run, with its options: name -> {option: Option}.
#: The runner (``probe.study._study``) and the template (``probe init-study``) read these defaults.
ANALYSES: dict[str, dict[str, Option]] = {
    "summary": {},
    "layers": {},
    "similarity": {
        "measures": Option((list,), ["rdm", "cka"], "'rdm' (RDMs, their correlations, MDS) and/or 'cka' (linear CKA)",
                           items=(str,), choices=("rdm", "cka")),
        "reference": Option((str,), "labels", "'labels' (the category RDM), 'none', or a .npy file holding an "
                            "n x n RDM (or k x n x n: k subjects, pooled, with their noise ceiling)",
                            words=("labels", "none"), path_suffix=".npy"),
        "n_stimuli": Option((int,), 250, "a class-balanced subsample of this many stimuli", gt=1),
        "n_bootstrap": Option((int,), 0, "bootstrap resamples for the ranking's intervals (0: none)", ge=0),
        "models": Option((list,), "all", "the models compared (those recorded on the same stimuli are compared "
                         "together); 'all'", items=(str,), words=("all",)),
        "max_rdm_panels": Option((int,), 8, "RDM heatmaps shown per group of models", ge=0),
    },
    "measures": {
        "measures": Option((list,), "all", "names of analyses.list_measures() (and 'rbf-cka-<fraction>'), or 'all'",
                           items=(str,), words=("all",), choices=MEASURE_NAMES, patterns=MEASURE_PATTERNS),
        "n_stimuli": Option((int,), 300, "a class-balanced subsample of this many stimuli", gt=3),
        "components": Option((int,), 64, "each layer reduced to this many top principal components first (0: none)",
                             ge=0),
        "models": Option((list,), "all", "the models compared (those recorded on the same stimuli are compared "
                         "together); 'all'", items=(str,), words=("all",)),
        "seed_models": Option((list,), "none", "models that are seeds of one architecture (the same layers): layer "
                              "identification and the seed-to-seed ceiling; 'none'", items=(str,), words=("none",)),
        "ceiling_measure": Option((str,), "linear-cka", "the measure of the ceiling figure (one of measures)",
                                  choices=MEASURE_NAMES, patterns=MEASURE_PATTERNS),
    },
    "units": {
        "k": Option((int,), 9, "top-activating patches shown per unit", gt=0),
        "bottom_k": Option((int,), 0, "least-activating patches shown per unit", ge=0),
        "n_units": Option((int,), 8, "units shown per layer", gt=0),
        "layers": Option((list,), "auto", "LAYER or MODEL/LAYER names; 'auto': every map or token layer",
                         items=(str,), words=("auto",)),
        "stretch": Option((bool,), "auto", "stretch each patch's contrast for display; 'auto': for grey stimuli",
                          words=("auto",)),
        "distinct_stimuli": Option((bool,), "auto", "a unit's top-k come from k different stimuli; 'auto': when "
                                   "there are at least 4 k stimuli", words=("auto",)),
    },
    "subspaces": {
        "ks": Option((list,), [2, 5, 10], "subspace dimensions compared", items=(int,), gt=0),
        "max_iter": Option((int,), 2000, "iterations of each autoencoder fit", gt=0),
        "n_stimuli": Option((int,), 1000, "stimuli used to fit the subspaces", gt=1),
        "layer": Option((str,), "auto", "'MODEL/LAYER'; 'auto': each model's deepest fitting layer", words=("auto",)),
        "pixels": Option((bool,), False, "also compare on the stimuli's pixels (of the first model's stimuli)"),
    },
    "transfer": {
        "labels_per_class": Option((list,), [1, 10, 100], "labelled examples per class (label efficiency)",
                                   items=(int,), gt=0),
        "test_fraction": Option((float,), 0.4, "share of each class held out to score the probes", gt=0, lt=1),
        "seeds": Option((list,), [0], "seeds of the draws of labelled examples", items=(int,), ge=0),
        "C": Option((float,), 1.0, "inverse L2 strength of the logistic probes", gt=0),
        "max_iter": Option((int,), 300, "iterations of each probe's fit", gt=0),
        "models": Option((list,), "all", "the models whose every layer is probed; 'all'", items=(str,),
                         words=("all",)),
        "features": Option((list,), "last", "MODEL/LAYER names of the label-efficiency curves; 'last': each "
                           "model's last layer", items=(str,), words=("last",)),
    },
    "neighbours": {
        "models": Option((list,), "all", "the models shown; 'all'", items=(str,), words=("all",)),
        "layers": Option((list,), "auto", "MODEL/LAYER names; 'auto': up to 5 of each model's recorded layers",
                         items=(str,), words=("auto",)),
        "n_queries": Option((int,), 4, "query stimuli (one per class in turn)", gt=0),
        "k": Option((int,), 6, "nearest stimuli shown per query and layer", gt=0),
        "metric": Option((str,), "cosine", "similarity of two responses", choices=("cosine", "euclidean")),
    },
    "code_plane": {
        "models": Option((list,), "auto", "the autoencoders shown; 'auto': every autoencoder of the study",
                         items=(str,), words=("auto",)),
        "n_grid": Option((int,), 12, "decoded images per side of the grid", gt=1),
    },
    "codes": {
        "models": Option((list,), "all", "the models whose layers are clustered; 'all'", items=(str,), words=("all",)),
        "layers": Option((list,), "auto", "MODEL/LAYER names; 'auto': up to 5 of each model's recorded layers",
                         items=(str,), words=("auto",)),
        "k": Option((int,), "classes", "k-means codes per layer; 'classes': the stimuli's number of classes (10 when "
                    "unlabelled)", gt=1, words=("classes",)),
        "pixels": Option((bool,), True, "also cluster the pixels, with the centroids shown as images"),
    },
    "colorization": {
        "models": Option((list,), "all", "the colorization models of the study; 'all'", items=(str,), words=("all",)),
        "n_images": Option((int,), 6, "test images shown as grey input, prediction and truth", gt=0),
    },
    "words": {
        "vectors": Option((list,), "auto", "the word vectors compared: names of the study's language models "
                          "(word2vec, masked LM) and 'glove-6b-50d'; 'auto': every language model of the study, and "
                          "GloVe when installed", items=(str,), words=("auto",)),
        "queries": Option((list,), ["king", "water", "red", "horse", "three"],
                          "words whose nearest neighbours are shown", items=(str,)),
        "analogies": Option((str,), "auto", "Google's analogy set (questions-words.txt); 'auto': found offline "
                            "(gensim's test data); 'none'", words=("auto", "none"), path_suffix=".txt"),
        "method": Option((str,), "3cosadd", "how an analogy is solved", choices=("3cosadd", "3cosmul")),
        "restrict_vocab": Option((int,), 300000, "analogies are answered among this many most frequent words "
                                 "(as gensim's evaluate_word_analogies)", gt=0),
        "categories": Option((dict,), "builtin", "word categories whose geometry is compared: a table of category "
                             "-> list of words; 'builtin': countries, capitals, animals, colours, numbers",
                             items=(list,), words=("builtin",)),
    },
    "captions": {
        "models": Option((list,), "all", "the image-text (CLIP-style) models of the study; 'all'", items=(str,),
                         words=("all",)),
        "n_cka": Option((int,), 1000, "test images of the CKA measures", gt=1),
        "probe_per_class": Option((int,), "all", "training images per class of the linear probes; 'all'", gt=0,
                                  words=("all",)),
    },
    "mask_ratio": {
        "ratios": Option((list,), [0.25, 0.5, 0.75, 0.9], "mask ratios; one MAE is trained per ratio",
                         items=(float,), gt=0, lt=1),
        "epochs": Option((int,), 3, "training epochs of each MAE", gt=0),
        "dataset": Option((str,), "digits", "a labelled dataset of zoo.list_datasets() the MAEs train on"),
        "seeds": Option((list,), [0], "seeds; one MAE is trained per ratio and seed (error bars with two or more)",
                        items=(int,), ge=0),
    },
    "finetune": {
        "models": Option((list,), ["cnn", "ae-conv", "mae", "simclr"], "zoo models pretrained on pretrain_classes "
                         "and adapted to probe_classes", items=(str,)),
        "dataset": Option((str,), "digits", "a labelled dataset of zoo.list_datasets()"),
        "pretrain_classes": Option((list,), [0, 1, 2, 3, 4], "labels the encoders are pretrained on", items=(int,), ge=0),
        "probe_classes": Option((list,), [5, 6, 7, 8, 9], "unseen labels they are adapted to", items=(int,), ge=0),
        "labels_per_class": Option((list,), [1, 10, 100], "labelled images per probe class", items=(int,), gt=0),
        "seeds": Option((list,), [0, 1, 2], "seeds of the labelled draws and the new heads", items=(int,), ge=0),
        "pretrain_epochs": Option((int,), 3, "pretraining epochs of each model", gt=0),
        "steps": Option((int,), 200, "optimiser steps of each fine-tuning", gt=0),
    },
    "greedy": {
        "dataset": Option((str,), "digits", "a labelled dataset of zoo.list_datasets(); images are flattened"),
        "widths": Option((list,), [256, 128, 64], "hidden widths of the MLP, bottom first", items=(int,), gt=0,
                         repeats=True),
        "labels_per_class": Option((list,), [10, 100], "labelled images per class (every image is added as 'all')",
                                   items=(int,), gt=0),
        "seeds": Option((list,), [0, 1, 2], "one pretraining, labelled draw and initialisation per seed",
                        items=(int,), ge=0),
        "activation": Option((str,), "relu", "hidden nonlinearity", choices=("relu", "sigmoid", "tanh")),
        "pretrain_epochs": Option((int,), 10, "epochs of each greedy layer", gt=0),
        "finetune_epochs": Option((int,), 20, "passes over the labelled images (at least 300 steps)", gt=0),
    },
    "function_views": {
        "dataset": Option((str,), "moons", "the 2-D dataset", choices=("moons", "spiral")),
        "widths": Option((list,), [8, 8, 2], "hidden widths of the tanh MLP", items=(int,), gt=0, repeats=True),
        "epochs": Option((int,), 300, "full-batch training steps", gt=0),
    },
    "mlm_ratio": {
        "ratios": Option((list,), [0.05, 0.15, 0.3, 0.5], "mask ratios; one masked language model is trained per "
                         "ratio", items=(float,), gt=0, lt=1),
        "epochs": Option((int,), 2, "training epochs of each model", gt=0),
        "dataset": Option((str,), "pydoc-topics", "a text corpus of zoo.list_datasets() the models train on"),
    },
}

#: What each analysis shows, in one line (for the template and messages).
ANALYSIS_HELP = {
    "summary": "a table of each model: source, parameters, layers; a zoo run's training curve",
    "layers": "per-layer summary of the recorded layers",
    "similarity": "how alike the layers are (RDMs, CKA) and how they match a reference",
    "measures": "every similarity measure side by side (CKA, CCA, Procrustes, shape, kNN, regression, RSA), where "
                "they disagree, and layer identification across seeds",
    "units": "the image patches that drive single units most (and least)",
    "subspaces": "PCA vs linear autoencoders on one layer per model",
    "transfer": "linear probes on every layer; accuracy vs labels per class",
    "neighbours": "a few query stimuli and their nearest stimuli in the pixels and at each layer",
    "code_plane": "autoencoders: the stimuli in the plane of the code, and what is decoded across it",
    "codes": "k-means codes of the pixels and of each layer: centroids, and how the codes match the classes; "
             "VQ-VAE codebook use",
    "colorization": "colorization models: grey input, predicted colour and truth, and the colour error",
    "words": "word vectors: nearest neighbours, analogies, the geometry of word categories",
    "captions": "image-text models: zero-shot accuracy on seen and held-out classes, image-caption similarity",
    "mask_ratio": "MAEs trained with different mask ratios, their frozen encoders probed (trains models)",
    "finetune": "encoders pretrained on some classes, adapted to unseen ones by a linear probe, by fine-tuning "
                "the last block, or all of it, with few labels (trains models)",
    "greedy": "greedy layer-wise pretraining against end-to-end training of a deep MLP, by labels per class "
              "(trains models)",
    "function_views": "an MLP on a 2-D dataset: the input plane as each layer maps it (trains a model)",
    "mlm_ratio": "masked language models trained with different mask ratios (trains models)",
}


#: Analyses that train models: they run only when the study names them.
OPT_IN_ANALYSES = ("mask_ratio", "finetune", "greedy", "function_views", "mlm_ratio")


def default_analyses() -> dict[str, dict[str, Any]]:
    """Every analysis but those that train models, with its default options (fresh copies): what a study
    without ``[analyses]`` runs."""
    return {name: {key: _copy(option.default) for key, option in options.items()} for name, options in ANALYSES.items()
            if name not in OPT_IN_ANALYSES}


def _copy(value: Any) -> Any:
    if isinstance(value, list):
        return [_copy(v) for v in value]
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    return value


# Top level, [data] and [[models]]; None defaults are filled in (out, title, data.seed) or mean "not given".
_TOP: dict[str, Option] = {
    "out": Option((str,), None, "output folder (default: runs/<study file name>)"),
    "title": Option((str,), None, "the report's title (default: 'Study: <study file name>')"),
    "description": Option((str,), "", "a paragraph under the title: what the study is for"),
    "seed": Option((int,), 0, "seed of everything random", ge=0),
    "device": Option((str,), "auto", "'auto', 'cpu', 'cuda', 'cuda:1', 'mps'"),
    "batch_size": Option((int,), 64, "stimuli per batch when recording", gt=0),
}
_SECTIONS = ("data", "models", "analyses")
_DATA: dict[str, Option] = {
    "dataset": Option((str,), None, "a name of zoo.list_datasets(), e.g. 'digits' or 'imagefolder:PATH'"),
    "split": Option((str,), "test", "which split", choices=("train", "test")),
    "limit": Option((int,), None, "a seeded subset of this many stimuli (default: all)", gt=0),
    "per_class": Option((int,), None, "a seeded, class-balanced subset: this many stimuli of each class", gt=0),
    "seed": Option((int,), None, "the subset's seed (default: the study's seed)", ge=0),
    "options": Option((dict,), {}, "keyword options of zoo.load_dataset", items=(object,)),
}
_SOURCES = ("run", "arch", "pretrained", "factory")
_MODEL: dict[str, Option] = {
    "name": Option((str,), None, "the model's name in the report (unique)"),
    "run": Option((str,), None, "a zoo run folder"),
    "arch": Option((str,), None, "torchvision:NAME, timm:NAME, hf:PATH or a zoo model name"),
    "pretrained": Option((str,), None, "a name of zoo.list_pretrained()"),
    "factory": Option((str,), None, "path/to/file.py:function"),
    "weights": Option((str,), None, "a weights file (with arch or factory), or 'pretrained'"),
    "layers": Option((list,), "auto", "layers to record", items=(str,), words=("auto",)),
    "reduce": Option((str, dict), "auto", "what is kept of each layer (one for all, or per layer)", items=(str,)),
    "layout": Option((str, dict), None, "how each layer's output is laid out (one for all, or per layer)",
                     items=(str,)),
    "train": Option((dict,), None, "with run: train this zoo model into the run folder first, unless it is trained "
                    "there already: { model = \"cnn\", dataset = \"digits\", epochs = 5 }", items=(object,)),
    "data": Option((dict,), None, "this model's own stimuli, a table shaped as [data] (default: the study's)",
                   items=(object,)),
    "init": Option((str,), "weights", "with pretrained: 'random' builds the network with fresh weights (a "
                   "random-weights baseline)", choices=("weights", "random")),
    "input_size": Option((int,), None, "show the stimuli to the model at this many pixels (default: its own "
                         "input size)", gt=0),
}
# The ``train`` table of a model: what ``zoo.train`` is given.
_TRAIN: dict[str, Option] = {
    "model": Option((str,), None, "a name of zoo.list_models()"),
    "dataset": Option((str,), "digits", "the dataset it trains on (its train split; its test split evaluates)"),
    "epochs": Option((int,), None, "passes over the training set (default: the model's own)", gt=0),
    "seed": Option((int,), None, "the training seed (default: the study's); seeds of one architecture set the "
                   "measures analysis's ceiling", ge=0),
    "dataset_options": Option((dict,), {}, "keyword options of zoo.load_dataset", items=(object,)),
    "settings": Option((dict,), {}, "training settings and model options, e.g. { lr = 0.001, code_dim = 8 }",
                       items=(object,)),
}


# ----------------------------------------------------------------------------------------------
# what the zoo knows, without importing torch

# Copies of zoo.list_datasets(), zoo.list_pretrained(), zoo.list_models() and the schemes of
# zoo.load_model, used while the zoo is not imported (importing it imports torch, which takes seconds).
# tests/test_study_spec.py checks that they equal the zoo's.
_OFFLINE_DATASETS = (
    "bible-kjv", "cifar10", "digits", "fashion-mnist", "mnist", "mnist-subset", "natural-patches", "photos",
    "pydoc-topics", "wordnet-glosses", "imagefolder:PATH", "text:PATH",
)
_OFFLINE_PRETRAINED = ("alexnet", "efficientnet-lite0", "mobilenet_v3_small", "resnet18", "resnet50", "vgg16")
_OFFLINE_MODELS = (
    "ae-contractive", "ae-conv", "ae-denoising", "ae-linear", "ae-mlp", "ae-sparse", "ae-vae", "clip", "cnn",
    "cnn10", "colorization", "mae", "mlm", "mlp", "resnet18", "simclr", "vq-vae", "word2vec",
)
_OFFLINE_SCHEMES = ("zoo", "pretrained", "torchvision", "timm", "hf")
# As in zoo/_model_spec.py: the weights value that asks torchvision or timm for their own weights, a
# torchvision weights name, and FILE.py:FACTORY.
_LIBRARY_WEIGHTS = "pretrained"
_TORCHVISION_WEIGHTS_NAME = re.compile(r"[A-Z][A-Z0-9_]*")
_FACTORY = re.compile(r"(?P<file>.+\.py):(?P<factory>[A-Za-z_]\w*)")
_IMAGEFOLDER = "imagefolder:"
_TEXT = "text:"
# The pretrained word vectors a words analysis can name beside the study's models (zoo.list_word_vectors()).
GLOVE = "glove-6b-50d"


@dataclass(frozen=True)
class _Zoo:
    datasets: tuple[str, ...]
    pretrained: tuple[str, ...]
    models: tuple[str, ...]
    schemes: tuple[str, ...]
    unknown_name_error: Callable[..., Exception]


_FOUNDATIONS: dict[str, ModuleType] = {}


def _zoo_foundation(name: str) -> ModuleType:
    """A module of the zoo's foundations that imports only the standard library (``_names``, ``_io``).

    From the zoo when it is imported; otherwise its file is run on its own (once), so that torch,
    which ``import zoo`` imports, is not.
    """
    if "zoo" in sys.modules or name in _FOUNDATIONS:
        return importlib.import_module(f"zoo.{name}") if "zoo" in sys.modules else _FOUNDATIONS[name]
    try:
        package = importlib.util.find_spec("zoo")
        location = Path(next(iter(package.submodule_search_locations))) / f"{name}.py"
        spec = importlib.util.spec_from_file_location(f"_neuroprobe_zoo_{name}", location)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    except (ImportError, OSError, AttributeError, TypeError, StopIteration):  # not a plain folder: import the zoo
        return importlib.import_module(f"zoo.{name}")
    _FOUNDATIONS[name] = module
    return module


def _zoo() -> _Zoo:
    """The zoo's names: live when the zoo is imported (names registered at run time count), else the copies."""
    zoo = sys.modules.get("zoo")
    unknown_name_error = _zoo_foundation("_names").unknown_name_error
    if zoo is not None and all(hasattr(zoo, n) for n in ("list_datasets", "list_pretrained", "list_models")):
        from zoo._model_spec import _SCHEMES

        return _Zoo(tuple(zoo.list_datasets()), tuple(zoo.list_pretrained()), tuple(zoo.list_models()),
                    tuple(_SCHEMES), unknown_name_error)
    return _Zoo(_OFFLINE_DATASETS, _OFFLINE_PRETRAINED, _OFFLINE_MODELS, _OFFLINE_SCHEMES, unknown_name_error)


# ----------------------------------------------------------------------------------------------
# the spec


class StudySpecError(ValueError):
    """Everything wrong with a study file, reported together.

    Parameters
    ----------
    problems
        One line per problem, each starting with the key it is about (``models[1].layers: ...``); a
        single string is one problem.
    source
        The study file as the user named it (None: not from a file).

    Attributes
    ----------
    problems
        The lines, in the order they were found.
    source
        As given.
    """

    def __init__(self, problems: str | Sequence[str], source: str | None = None):
        self.problems = (problems,) if isinstance(problems, str) else tuple(problems)
        self.source = source
        where = f"{source}: " if source else ""
        if len(self.problems) == 1:
            message = f"{where}{self.problems[0]}"
        else:
            heading = f"{source} has" if source else "the study has"
            message = f"{heading} {len(self.problems)} problems:\n" + "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(message)


@dataclass(frozen=True)
class DataSpec:
    """The stimuli of a study.

    Attributes
    ----------
    dataset
        The name for ``zoo.load_dataset``, as given, except that ``imagefolder:PATH`` has PATH absolute.
    split
        ``"train"`` or ``"test"``.
    limit
        Keep a seeded subset of this many stimuli; None: all.
    per_class
        Keep a seeded subset of this many stimuli of each class (before ``limit``); None: all.
    seed
        The subset's seed.
    options
        Keyword options for ``zoo.load_dataset``.
    """

    dataset: str
    split: str = "test"
    limit: int | None = None
    seed: int = 0
    options: dict[str, Any] = field(default_factory=dict)
    per_class: int | None = None


@dataclass(frozen=True)
class ModelEntrySpec:
    """One model of a study.

    Attributes
    ----------
    name
        Its name in the report (any text; unique within the study).
    source
        How it was named: ``"run"``, ``"arch"``, ``"pretrained"`` or ``"factory"``.
    spec
        The ``zoo.load_model`` spelling: a run folder's absolute path, ``torchvision:NAME`` (as given; an
        ``hf:`` folder made absolute), ``pretrained:NAME``, or ``/ABS/file.py:function``.
    weights
        For ``arch`` and ``factory``: a weights file's absolute path, ``"pretrained"`` (or a torchvision
        weights name) for the library's own weights, or None (random weights).
    layers
        ``"auto"`` or the layer names to record.
    reduce
        What is kept of each layer: one reduction name for all, or ``{layer: name}``.
    layout
        How each layer's output is laid out: a name, ``{layer: name}``, or None (the recorder decides).
    train
        For a run: ``zoo.train``'s arguments (``model``, ``dataset``, ``epochs``, ``dataset_options``,
        ``settings``) when the study trains it into its run folder first; None: the run exists.
    data
        The model's own stimuli; None: the study's.
    init
        ``"weights"`` (the model's weights) or ``"random"`` (a pretrained network's architecture with
        fresh weights).
    input_size
        The side in pixels at which the model sees the stimuli; None: its preprocessing's own.
    """

    name: str
    source: str
    spec: str
    weights: str | None = None
    layers: str | tuple[str, ...] = "auto"
    reduce: str | dict[str, str] = "auto"
    layout: str | dict[str, str] | None = None
    train: dict[str, Any] | None = None
    data: DataSpec | None = None
    init: str = "weights"
    input_size: int | None = None


@dataclass(frozen=True)
class StudySpec:
    """A checked study: its stimuli, models and analyses, with every path absolute and every default filled.

    Attributes
    ----------
    path
        The study file, absolute; None when built from a dict or text.
    folder
        Where relative paths resolve: the study file's folder.
    out
        The output folder, absolute.
    title
        The report's title.
    seed
        Seed of everything random.
    device
        ``"auto"``, ``"cpu"``, ``"cuda"``...
    batch_size
        Stimuli per batch when recording.
    data
        The stimuli.
    models
        The models, in the file's order.
    analyses
        Analysis name -> all its options (defaults filled), in the order they run (that of ``ANALYSES``).
    text
        The study file's text, or a TOML rendering of the dict it was built from (copied next to the report).
    description
        A paragraph shown under the report's title ("" for none).

    Examples
    --------
    >>> spec = StudySpec.from_file("study.toml")
    >>> spec.models[0].spec, spec.analyses["similarity"]["measures"]
    ('torchvision:resnet18', ['rdm', 'cka'])
    """

    path: Path | None
    folder: Path
    out: Path
    title: str
    seed: int
    device: str
    batch_size: int
    data: DataSpec
    models: tuple[ModelEntrySpec, ...]
    analyses: dict[str, dict[str, Any]]
    text: str
    description: str = ""

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> StudySpec:
        """Read and check a study file.

        Parameters
        ----------
        path
            The TOML file; relative paths in it resolve against its folder.

        Raises
        ------
        StudySpecError
            The file is missing or unreadable, is not valid TOML (the message gives the line), or has
            problems (all of them, one line each).
        """
        shown = os.fspath(path)
        file = Path(path).expanduser().absolute()
        try:
            text = file.read_bytes().decode("utf-8-sig")
        except FileNotFoundError:
            raise StudySpecError(f"file not found: {shown!r} (looked at {file})") from None
        except IsADirectoryError:
            raise StudySpecError(f"{shown!r} is a folder, not a study file (looked at {file})") from None
        except (OSError, UnicodeDecodeError) as err:
            raise StudySpecError(f"cannot read {shown!r}: {err}") from None
        mapping = _parse_toml(text, shown)
        return _build(mapping, file.parent, stem=file.stem, text=text, path=file, source=shown)

    @classmethod
    def from_text(cls, text: str, folder: str | os.PathLike) -> StudySpec:
        """Check a study given as TOML text; relative paths resolve against ``folder``."""
        mapping = _parse_toml(text, None)
        return _build(mapping, Path(folder).expanduser().absolute(), stem="study", text=text, path=None, source=None)

    @classmethod
    def from_dict(cls, mapping: Mapping[str, Any], folder: str | os.PathLike | None = None,
                  text: str | None = None) -> StudySpec:
        """Check a study given as a dict shaped as the file (what ``tomllib`` reads from it).

        Parameters
        ----------
        mapping
            The study; a value of None counts as not given.
        folder
            Where relative paths resolve (default: the working directory).
        text
            The study's text, kept as ``text``; default: a TOML rendering of ``mapping``.
        """
        folder = Path.cwd() if folder is None else Path(folder).expanduser().absolute()
        return _build(mapping, folder, stem="study", text=text, path=None, source=None)


def _parse_toml(text: str, source: str | None) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise StudySpecError(f"not valid TOML: {err}", source) from None


# ----------------------------------------------------------------------------------------------
# checking

_MISSING = object()


class _Checker:
    """Collects the problems of one study; each check adds lines and returns the value (or ``_MISSING``)."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.problems: list[str] = []
        self.zoo = _zoo()

    def add(self, key: str, message: str) -> None:
        self.problems.append(f"{key}: {message}" if key else message)

    # -- names ------------------------------------------------------------------------------
    def closest(self, name: str, valid: Sequence[str]) -> tuple[str, ...]:
        return self.zoo.unknown_name_error("name", name, valid).closest

    def unknown(self, key: str, what: str, name: str, valid: Sequence[str], where: str, plural: str,
                patterns: Sequence[tuple[str, str]] = ()) -> None:
        """``unknown key 'measure' in [analyses.similarity]; did you mean 'measures'? Valid keys: ...``."""
        closest = self.closest(name, valid)
        message = f"unknown {what} {name!r}" + (f" {where}" if where else "")
        message += f"; did you mean {', '.join(map(repr, closest))}?" if closest else "."
        if valid:
            message += f" Valid {plural}: {', '.join([*map(repr, valid), *(shown for _, shown in patterns)])}."
        else:
            message += " It takes no options." if plural == "keys" else f" There are no {plural}."
        self.add(key, message)

    def unknown_keys(self, key: str, table: Mapping[str, Any], valid: Sequence[str], where: str) -> None:
        for name in table:
            if name not in valid:
                self.unknown(_join(key, name), "key", name, list(valid), where, "keys")

    # -- values -----------------------------------------------------------------------------
    def table(self, key: str, value: Any, what: str) -> Mapping[str, Any] | None:
        if value is _MISSING:
            return None
        if not isinstance(value, Mapping):
            self.add(key, f"expected {what}, got {_shown(value)}")
            return None
        return value

    def options(self, key: str, table: Mapping[str, Any], options: Mapping[str, Option], where: str) -> dict[str, Any]:
        """Check ``table`` against ``options``; returns every option, given or default (``_MISSING`` when wrong)."""
        self.unknown_keys(key, table, list(options), where)
        values = {}
        for name, option in options.items():
            given = table.get(name)
            values[name] = _copy(option.default) if given is None else self.value(_join(key, name), given, option)
        return values

    def value(self, key: str, value: Any, option: Option) -> Any:
        """The checked (and normalised: int -> float, paths absolute) value, or ``_MISSING``."""
        if isinstance(value, str) and value in option.words:
            return value
        if option.path_suffix is not None and isinstance(value, str):
            path = self.path(key, value, "file")
            if path is not None and path.suffix != option.path_suffix:
                self.add(key, f"expected {option.expected()}, got {value!r}")
                return _MISSING
            return _MISSING if path is None else str(path)
        kind = next((t for t in option.types if _is_a(value, t)), None)
        if kind is None:
            self.add(key, f"expected {option.expected()}, got {_shown(value)}")
            return _MISSING
        if kind is list:
            return self.sequence(key, value, option)
        if kind is dict:
            return self.mapping(key, value, option)
        return self.scalar(key, value, kind, option, option.expected())

    def scalar(self, key: str, value: Any, kind: type, option: Option, expected: str) -> Any:
        if kind is str:
            if option.choices is not None and value not in option.choices and not option.matches_pattern(value):
                self.unknown(key, "value", value, option.choices, "", "values", patterns=option.patterns)
                return _MISSING
            if not value.strip():
                self.add(key, f"expected {expected}, got an empty string")
                return _MISSING
            return value
        number = float(value) if kind is float else value
        if ((kind is float and not math.isfinite(number)) or (option.gt is not None and not number > option.gt)
                or (option.ge is not None and not number >= option.ge)
                or (option.lt is not None and not number < option.lt)):
            self.add(key, f"expected {expected}, got {_shown(value)}")
            return _MISSING
        return number

    def sequence(self, key: str, value: Sequence[Any], option: Option) -> Any:
        if not value:
            self.add(key, f"expected {option.expected()}, got an empty list")
            return _MISSING
        items, ok = [], True
        single = Option(option.items or (str,), None, "", choices=option.choices, patterns=option.patterns,
                        gt=option.gt, ge=option.ge, lt=option.lt)
        for index, item in enumerate(value):
            kind = next((t for t in single.types if _is_a(item, t)), None)
            if kind is None:
                self.add(f"{key}[{index}]", f"expected {single.expected()}, got {_shown(item)}")
                ok = False
                continue
            checked = self.scalar(f"{key}[{index}]", item, kind, single, single.expected())
            ok = ok and checked is not _MISSING
            items.append(checked)
        if ok and not option.repeats:
            repeated = sorted({repr(v) for i, v in enumerate(items) if v in items[:i]})
            if repeated:
                self.add(key, f"repeats {', '.join(repeated)}; give each value once")
                return _MISSING
        return items if ok else _MISSING

    def mapping(self, key: str, value: Mapping[str, Any], option: Option) -> Any:
        if option.items == (object,):  # any TOML values, e.g. the options of zoo.load_dataset
            return _copy(dict(value))
        checked, ok = {}, True
        if option.items == (list,):  # name -> list of strings, e.g. word categories
            words = Option((list,), None, "", items=(str,))
            for name, item in value.items():
                if isinstance(item, list):
                    checked[name] = self.sequence(_join(key, name), item, words)
                else:
                    self.add(_join(key, name), f"expected {words.expected()}, got {_shown(item)}")
                    checked[name] = _MISSING
                ok = ok and checked[name] is not _MISSING
            return checked if ok else _MISSING
        single = Option(option.items or (str,), None, "")
        for name, item in value.items():
            if not isinstance(item, str) or not item.strip():
                self.add(_join(key, name), f"expected {single.expected()}, got {_shown(item)}")
                ok = False
            checked[name] = item
        return checked if ok else _MISSING

    # -- paths ------------------------------------------------------------------------------
    def resolve(self, value: str) -> Path:
        return Path(os.path.normpath(self.folder / Path(value).expanduser()))

    def path(self, key: str, value: str, kind: str) -> Path | None:
        """The absolute path of ``value`` (a ``kind``: ``"file"`` or ``"folder"``), or None after a problem."""
        if not value.strip():
            self.add(key, f"expected a path to a {kind}, got an empty string")
            return None
        path = self.resolve(value)
        if not path.exists():
            self.add(key, f"{kind} not found: {value!r} (looked at {path})")
            return None
        if kind == "file" and not path.is_file():
            self.add(key, f"{value!r} is not a file (looked at {path})")
            return None
        if kind == "folder" and not path.is_dir():
            self.add(key, f"{value!r} is not a folder (looked at {path})")
            return None
        return path


def _join(key: str, name: str) -> str:
    shown = name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else json.dumps(name, ensure_ascii=False)
    return f"{key}.{shown}" if key else shown


def _is_a(value: Any, kind: type) -> bool:
    if isinstance(value, bool):
        return kind is bool
    if kind is float:
        return isinstance(value, (int, float))
    if kind is list:
        return isinstance(value, (list, tuple))
    if kind is dict:
        return isinstance(value, Mapping)
    return isinstance(value, kind)


def _shown(value: Any) -> str:
    """A value as the user wrote it, with its TOML type: ``'ten' (a string)``, ``true (a boolean)``."""
    if isinstance(value, bool):
        return f"{str(value).lower()} (a boolean)"
    if isinstance(value, str):
        return f"{value!r} (a string)"
    if isinstance(value, int):
        return f"{value} (an integer)"
    if isinstance(value, float):
        return f"{value} (a number)"
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, (list, tuple)):
        return "a list"
    return f"{value!r} (a {type(value).__name__})"


# ----------------------------------------------------------------------------------------------
# the sections


def _build(mapping: Any, folder: Path, *, stem: str, text: str | None, path: Path | None,
           source: str | None) -> StudySpec:
    check = _Checker(folder)
    if not isinstance(mapping, Mapping):
        raise StudySpecError(f"expected a table of settings, got {_shown(mapping)}", source)
    mapping = {key: value for key, value in mapping.items() if value is not None}
    check.unknown_keys("", mapping, [*_TOP, *_SECTIONS], "at the top level of the study")
    top = check.options("", {k: v for k, v in mapping.items() if k in _TOP}, _TOP, "")
    seed = top["seed"]
    data = _data(check, mapping.get("data", _MISSING), 0 if seed is _MISSING else seed)
    models = _models(check, mapping.get("models", _MISSING), 0 if seed is _MISSING else seed)
    analyses = _analyses(check, mapping.get("analyses", _MISSING), models, _model_names(mapping.get("models")))
    if check.problems:
        raise StudySpecError(check.problems, source)
    out = check.resolve(top["out"] if top["out"] is not None else f"runs/{stem}")
    title = top["title"] if top["title"] is not None else f"Study: {stem}"
    if text is None:
        text = to_toml(mapping)
    return StudySpec(path=path, folder=folder, out=out, title=title, description=top["description"], seed=seed,
                     device=top["device"],
                     batch_size=top["batch_size"], data=data, models=tuple(models), analyses=analyses, text=text)


def _data(check: _Checker, value: Any, study_seed: int, key: str = "data") -> DataSpec | None:
    if value is _MISSING:
        check.add(key, "missing; add a [data] table with dataset = a name of zoo.list_datasets(), e.g. "
                       "dataset = \"imagefolder:images\"")
        return None
    table = check.table(key, value, f"a table ([{key}]) with dataset = ...")
    if table is None:
        return None
    table = {name: item for name, item in table.items() if item is not None}
    values = check.options(key, table, _DATA, f"in [{key}]")
    dataset = values["dataset"]
    if "dataset" not in table:
        check.add(f"{key}.dataset", "missing; name the stimuli, e.g. dataset = \"digits\" or \"imagefolder:images\" "
                                    "(a folder of class sub-folders); see zoo.list_datasets()")
    elif dataset is not _MISSING:
        dataset = _dataset(check, dataset, values["split"], key)
    if any(v is _MISSING for v in values.values()) or dataset in (None, _MISSING):
        return None
    seed = study_seed if values["seed"] is None else values["seed"]
    return DataSpec(dataset=dataset, split=values["split"], limit=values["limit"], seed=seed,
                    options=values["options"], per_class=values["per_class"])


def _prefixed_path(check: _Checker, key: str, name: str, prefix: str, kind: str, described: str) -> Path | None:
    """The absolute path of ``PREFIX:PATH`` (``imagefolder:``, ``text:``), or None after a problem."""
    given = name[len(prefix):]
    if not given:
        check.add(f"{key}.dataset", f"{prefix} names no {kind}; write {prefix}PATH, with PATH {described} (relative "
                                    "to the study file's folder)")
        return None
    return check.path(f"{key}.dataset", given, kind)


def _dataset(check: _Checker, name: str, split: Any, key: str = "data") -> str | None:
    """The dataset name, checked as ``zoo.load_dataset`` does; an image folder's or a text's path made absolute."""
    if name.startswith(_IMAGEFOLDER):
        folder = _prefixed_path(check, key, name, _IMAGEFOLDER, "folder", "a folder of class sub-folders")
        if folder is None:
            return None
        if split == "test" and not (folder / "test").is_dir():
            given = name[len(_IMAGEFOLDER):]
            check.add(f"{key}.split", f"the image folder {given!r} has no test/ sub-folder ({folder / 'test'}), so it "
                                    "has no test split: its class sub-folders are the train split; write "
                                    "split = \"train\", or put the images in train/ and test/ sub-folders")
            return None
        return f"{_IMAGEFOLDER}{folder}"
    if name.startswith(_TEXT):
        path = _prefixed_path(check, key, name, _TEXT, "file or folder", "a UTF-8 text file or a folder of .txt files")
        return None if path is None else f"{_TEXT}{path}"
    if name not in check.zoo.datasets:
        error = check.zoo.unknown_name_error("dataset", name, check.zoo.datasets, listing="zoo.list_datasets()")
        check.add(f"{key}.dataset", str(error))
        return None
    return name


def _models(check: _Checker, value: Any, study_seed: int) -> list[ModelEntrySpec]:
    add_one = ("add at least one [[models]] table with a name and one of run = \"RUN_FOLDER\", "
               "arch = \"torchvision:resnet18\", pretrained = \"NAME\" or factory = \"file.py:function\"")
    if value is _MISSING:
        check.add("models", f"missing; {add_one}")
        return []
    if isinstance(value, Mapping):
        check.add("models", "expected an array of tables, got one table: write [[models]] (two brackets) above "
                            "each model")
        return []
    if not isinstance(value, (list, tuple)) or not value:
        check.add("models", f"expected an array of tables ([[models]]), got {_shown(value)}; {add_one}")
        return []
    models, names = [], {}
    for index, entry in enumerate(value):
        key = f"models[{index}]"
        table = check.table(key, entry, "a table ([[models]]) with a name and a source")
        if table is None:
            continue
        table = {k: v for k, v in table.items() if v is not None}
        model = _model(check, key, table, study_seed)
        name = table.get("name")
        if isinstance(name, str) and name.strip():
            if name in names:
                check.add(f"{key}.name", f"duplicate model name {name!r} (also {names[name]}.name); give every "
                                         "model its own name")
            names.setdefault(name, key)
        if model is not None:
            models.append(model)
    return models


def _model(check: _Checker, key: str, table: Mapping[str, Any], study_seed: int) -> ModelEntrySpec | None:
    values = check.options(key, table, _MODEL, "in [[models]]")
    ok = not any(v is _MISSING for v in values.values())
    if "name" not in table:
        check.add(f"{key}.name", "missing; give the model a name (any text, shown in the report)")
        ok = False
    sources = [s for s in _SOURCES if s in table]
    if not sources:
        check.add(key, "no source; give exactly one of run = \"RUN_FOLDER\" (a zoo run), arch = \"torchvision:NAME\" "
                       "(with weights = \"FILE\"), pretrained = \"NAME\" or factory = \"file.py:function\"")
        return None
    if len(sources) > 1:
        check.add(key, f"{len(sources)} sources ({', '.join(sources)}); give exactly one of run, arch, pretrained, "
                       "factory")
        return None
    source = sources[0]
    if values[source] is _MISSING:
        return None
    train = _train(check, f"{key}.train", values["train"], source)
    if source == "run" and train is not None:
        spec = None if train is _MISSING else str(check.resolve(values[source]))  # the study makes the folder
    else:
        spec = _SOURCE_CHECKS[source](check, f"{key}.{source}", values[source])
    weights = values["weights"]
    if weights is not None and weights is not _MISSING:
        weights = _weights(check, f"{key}.weights", weights, source, spec)
    data = None
    if values["data"] not in (None, _MISSING):
        data = _data(check, values["data"], study_seed, f"{key}.data")
        ok = ok and data is not None
    if values["init"] == "random" and source != "pretrained":
        check.add(f"{key}.init", "init = \"random\" goes with pretrained = \"NAME\" only; an arch or factory without "
                                 "weights has random weights already")
        ok = False
    if not ok or spec is None or weights is _MISSING or train is _MISSING:
        return None
    layers = values["layers"] if values["layers"] == "auto" else tuple(values["layers"])
    return ModelEntrySpec(name=values["name"], source=source, spec=spec, weights=weights, layers=layers,
                          reduce=values["reduce"], layout=values["layout"], train=train, data=data,
                          init=values["init"], input_size=values["input_size"])


def _train(check: _Checker, key: str, value: Any, source: str) -> dict[str, Any] | None:
    """The checked ``train`` table of a model (None: not given; ``_MISSING`` after a problem)."""
    if value is None or value is _MISSING:
        return value
    if source != "run":
        check.add(key, "train goes with run = \"RUN_FOLDER\" only (the folder the zoo model is trained into)")
        return _MISSING
    values = check.options(key, value, _TRAIN, f"in [{key}]")
    if "model" not in value:
        check.add(f"{key}.model", "missing; name the zoo model to train, e.g. model = \"cnn\" (see zoo.list_models())")
        return _MISSING
    if any(v is _MISSING for v in values.values()):
        return _MISSING
    if values["model"] not in check.zoo.models:
        check.add(f"{key}.model", str(check.zoo.unknown_name_error("zoo model", values["model"], check.zoo.models,
                                                                    listing="zoo.list_models()")))
        return _MISSING
    dataset = _dataset(check, values["dataset"], "train", key)
    return _MISSING if dataset is None else {**values, "dataset": dataset}


def _run(check: _Checker, key: str, value: str) -> str | None:
    folder = check.path(key, value, "folder")
    if folder is None:
        return None
    if not (folder / "config.json").is_file():
        check.add(key, f"{value!r} is not a zoo run folder: it has no config.json (looked at {folder}); give a "
                       "folder written by `probe train`")
        return None
    return str(folder)


def _arch(check: _Checker, key: str, value: str) -> str | None:
    scheme, colon, rest = value.partition(":")
    zoo = check.zoo
    if colon and scheme in zoo.schemes:
        if not rest:
            check.add(key, f"{value!r} names no model after {scheme + ':'!r}; write {scheme}:NAME")
            return None
        if scheme == "pretrained":
            check.add(key, f"write pretrained = {rest!r} (in place of arch = {value!r})")
            return None
        if scheme == "hf":
            return _hugging_face(check, key, rest)
        if scheme == "zoo" and rest not in zoo.models:
            check.add(key, str(zoo.unknown_name_error("zoo model", rest, zoo.models, listing="zoo.list_models()")))
            return None
        return value
    if _FACTORY.fullmatch(value) or value.endswith(".py"):
        check.add(key, f"{value!r} is a Python file: write factory = \"FILE.py:FUNCTION\" (in place of arch)")
        return None
    if colon and not re.fullmatch(r"[A-Za-z]", scheme):
        check.add(key, str(zoo.unknown_name_error("model spelling", f"{scheme}:", [f"{s}:" for s in zoo.schemes])))
        return None
    if "/" in value or "\\" in value or value.startswith("."):
        check.add(key, f"{value!r} is a path: give a zoo run folder with run = {value!r}, a Hugging Face folder with "
                       f"arch = \"hf:{value}\"")
        return None
    in_zoo, in_pretrained = value in zoo.models, value in zoo.pretrained
    if in_zoo and in_pretrained:
        check.add(key, f"{value!r} names more than one model; write arch = \"zoo:{value}\" (the zoo's untrained "
                       f"model), arch = \"torchvision:{value}\" (torchvision's architecture) or pretrained = "
                       f"{value!r} (pretrained weights)")
        return None
    if in_pretrained:
        check.add(key, f"{value!r} is a pretrained network: write pretrained = {value!r} (in place of arch)")
        return None
    if not in_zoo:
        error = zoo.unknown_name_error("model", value, zoo.models, listing="zoo.list_models()")
        check.add(key, f"{error} A library's model is spelled torchvision:{value}, timm:{value} or hf:PATH.")
        return None
    return value


def _hugging_face(check: _Checker, key: str, rest: str) -> str | None:
    """``hf:PATH``: a local folder made absolute (it must exist when spelled as a path), else a Hub id as is."""
    local = check.resolve(rest)
    if rest.startswith((".", "/", "~")) or Path(rest).is_absolute():
        folder = check.path(key, rest, "folder")
        return None if folder is None else f"hf:{folder}"
    return f"hf:{local}" if local.is_dir() else f"hf:{rest}"


def _pretrained(check: _Checker, key: str, value: str) -> str | None:
    zoo = check.zoo
    if value not in zoo.pretrained:
        check.add(key, str(zoo.unknown_name_error("pretrained network", value, zoo.pretrained,
                                                  listing="zoo.list_pretrained()")))
        return None
    return f"pretrained:{value}"


def _factory(check: _Checker, key: str, value: str) -> str | None:
    match = _FACTORY.fullmatch(value)
    if match is None:
        check.add(key, f"expected \"path/to/file.py:function\", got {value!r}")
        return None
    file = check.path(key, match["file"], "file")
    if file is None:
        return None
    function = match["factory"]
    try:
        tree = ast.parse(file.read_bytes(), filename=str(file))
    except SyntaxError as err:
        check.add(key, f"{match['file']} is not valid Python: {err.msg} (line {err.lineno})")
        return None
    except (OSError, ValueError) as err:
        check.add(key, f"cannot read {match['file']} ({file}): {err}")
        return None
    defined, listed = _top_level_names(tree.body)
    if function not in defined:
        error = check.zoo.unknown_name_error(f"factory in {match['file']}", function, listed)
        check.add(key, str(error))
        return None
    return f"{file}:{function}"


def _top_level_names(body: list[ast.stmt]) -> tuple[set[str], list[str]]:
    """Every name a module's top level binds (also inside ``if`` and ``try``), and its public defs and classes."""
    defined, listed = set(), []
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            defined.add(node.name)
            if not node.name.startswith("_"):
                listed.append(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            defined.update(n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            defined.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
        else:
            for inner in ("body", "orelse", "finalbody", "handlers"):
                more, public = _top_level_names([n for n in getattr(node, inner, []) if isinstance(n, ast.AST)])
                defined |= more
                listed += [n for n in public if n not in listed]
    return defined, listed


_SOURCE_CHECKS: dict[str, Callable[[_Checker, str, str], str | None]] = {
    "run": _run,
    "arch": _arch,
    "pretrained": _pretrained,
    "factory": _factory,
}


def _weights(check: _Checker, key: str, value: str, source: str, spec: str | None) -> Any:
    """An absolute weights file, ``"pretrained"`` or a torchvision weights name; ``_MISSING`` after a problem."""
    if source not in ("arch", "factory"):
        own = "a zoo run brings its weights" if source == "run" else "a pretrained network brings its own weights"
        check.add(key, f"weights go with arch or factory only; {own}: drop weights, or name the architecture with "
                       "arch = \"torchvision:NAME\" or factory = \"file.py:function\"")
        return _MISSING
    if source == "arch" and spec is None and (value == _LIBRARY_WEIGHTS or _TORCHVISION_WEIGHTS_NAME.fullmatch(value)):
        return value  # the arch has a problem already; whether it takes library weights is unknown
    scheme = spec.partition(":")[0] if spec is not None and source == "arch" else ""
    if scheme == "hf":
        check.add(key, "an hf: model loads the weights of its folder; drop weights")
        return _MISSING
    if scheme in ("torchvision", "timm") and value == _LIBRARY_WEIGHTS:
        return value
    if (scheme == "torchvision" and _TORCHVISION_WEIGHTS_NAME.fullmatch(value)
            and not check.resolve(value).exists()):
        return value  # a torchvision weights name, e.g. IMAGENET1K_V2
    if value == _LIBRARY_WEIGHTS:
        check.add(key, "weights = \"pretrained\" (the library's own weights) goes with arch = \"torchvision:NAME\" or "
                       "\"timm:NAME\" only; give a weights file")
        return _MISSING
    path = check.path(key, value, "file")
    return _MISSING if path is None else str(path)


def _model_names(value: Any) -> list[str]:
    """The names of the ``[[models]]`` tables, also of those with problems."""
    tables = value if isinstance(value, (list, tuple)) else []
    names = [t.get("name") for t in tables if isinstance(t, Mapping)]
    return list(dict.fromkeys(n for n in names if isinstance(n, str) and n.strip()))


def _analyses(check: _Checker, value: Any, models: list[ModelEntrySpec],
              names: list[str]) -> dict[str, dict[str, Any]]:
    if value is _MISSING:
        return default_analyses()
    table = check.table("analyses", value, "a table ([analyses]) of analysis name -> options")
    if table is None:
        return {}
    if not table:
        check.add("analyses", f"names no analysis; name at least one of {', '.join(ANALYSES)} (e.g. layers = {{}}), "
                              "or drop [analyses] to run them all")
        return {}
    chosen = {}
    for name, options in table.items():
        key = _join("analyses", name)
        if name not in ANALYSES:
            check.unknown(key, "analysis", name, list(ANALYSES), "in [analyses]", "analyses")
            continue
        given = check.table(key, options, f"a table of options (may be empty: {name} = {{}})")
        if given is not None:
            chosen[name] = check.options(key, given, ANALYSES[name], f"in [{key}]")
    _subspace_layer(check, chosen.get("subspaces"), models, names)
    _transfer_options(check, chosen.get("transfer"), names)
    _measures_options(check, chosen.get("measures"), names)
    for name in ("similarity", "measures", "transfer", "captions", "neighbours", "code_plane", "codes",
                 "colorization"):
        _model_list(check, f"analyses.{name}.models", (chosen.get(name) or {}).get("models"), names)
    vectors = (chosen.get("words") or {}).get("vectors")
    if isinstance(vectors, list):
        _model_list(check, "analyses.words.vectors", vectors, [*names, GLOVE])
    _finetune_options(check, chosen.get("finetune"))
    for name in ("mask_ratio", "finetune", "greedy", "mlm_ratio"):
        if chosen.get(name) and chosen[name]["dataset"] is not _MISSING:
            resolved = _dataset(check, chosen[name]["dataset"], "train", f"analyses.{name}")
            chosen[name]["dataset"] = resolved or chosen[name]["dataset"]  # a path made absolute
    return {name: chosen[name] for name in ANALYSES if name in chosen}


def _finetune_options(check: _Checker, options: dict[str, Any] | None) -> None:
    """The fine-tuning comparison names zoo models (not the study's) and two disjoint sets of classes."""
    if not options:
        return
    models = options.get("models")
    for i, model in enumerate(models if isinstance(models, list) else []):
        if isinstance(model, str) and model not in _OFFLINE_MODELS:
            closest = check.closest(model, _OFFLINE_MODELS)
            check.add(f"analyses.finetune.models[{i}]", f"unknown zoo model {model!r}"
                      + (f"; did you mean {', '.join(map(repr, closest))}?" if closest else "")
                      + " (probe models lists them)")
    pretrain, probe = options.get("pretrain_classes"), options.get("probe_classes")
    if isinstance(pretrain, list) and isinstance(probe, list):
        shared = sorted(set(pretrain) & set(probe))
        if shared:
            check.add("analyses.finetune", f"classes {shared} are in both pretrain_classes and probe_classes; they must be "
                      "disjoint, so that the adaptation is to classes the encoders never saw")
        elif len(set(probe)) < 2:
            check.add("analyses.finetune.probe_classes", "needs at least two classes")


def _measures_options(check: _Checker, options: dict[str, Any] | None, names: list[str]) -> None:
    """``measures.seed_models`` names two or more of the study's models, and the ceiling's measure is computed."""
    if options is None:
        return
    key, seeds = "analyses.measures", options["seed_models"]
    if not isinstance(seeds, list):
        return
    _model_list(check, f"{key}.seed_models", seeds, names)
    if len(seeds) < 2:
        check.add(f"{key}.seed_models", "needs at least two models (seeds of one architecture), or 'none'")
    measures, ceiling = options["measures"], options["ceiling_measure"]
    computed = {_measure_key(m) for m in measures} if isinstance(measures, list) else None
    if computed is not None and isinstance(ceiling, str) and _measure_key(ceiling) not in computed:
        check.add(f"{key}.ceiling_measure", f"{ceiling!r} is not among the measures computed "
                  f"({', '.join(map(repr, measures))}); add it to measures or choose one of them")


def _measure_key(name: str) -> Any:
    """A measure name, with RBF CKA's bandwidth read as a number (``rbf-cka-0.40`` is ``rbf-cka-0.4``)."""
    bandwidth = re.fullmatch(MEASURE_PATTERNS[0][0], name)
    return ("rbf-cka", float(bandwidth.group(1))) if bandwidth else name


def _model_list(check: _Checker, key: str, value: Any, names: list[str]) -> None:
    """An analysis's ``models``: ``"all"`` or names of the study's models."""
    if isinstance(value, list):
        for index, name in enumerate(value):
            if name not in names:
                check.unknown(f"{key}[{index}]", "model", name, names, "", "models")


def _transfer_options(check: _Checker, options: dict[str, Any] | None, names: list[str]) -> None:
    """``transfer.models`` names models of the study and ``transfer.features`` is MODEL/LAYER."""
    if options is None:
        return
    key = "analyses.transfer"
    if isinstance(options["features"], list):
        for index, feature in enumerate(options["features"]):
            owner = max((n for n in names if feature.startswith(n + "/")), key=len, default=None)
            if owner is None or not feature[len(owner) + 1:]:
                check.add(f"{key}.features[{index}]", f"expected \"MODEL/LAYER\" with MODEL one of "
                                                      f"{', '.join(map(repr, names))}, got {feature!r}")



def _subspace_layer(check: _Checker, options: dict[str, Any] | None, models: list[ModelEntrySpec],
                    names: list[str]) -> None:
    """``subspaces.layer``: ``"auto"`` or ``"MODEL/LAYER"`` with MODEL a model of the study (and LAYER one of
    its layers when they are listed)."""
    layer = None if options is None else options["layer"]
    if layer in (None, "auto", _MISSING):
        return
    key = "analyses.subspaces.layer"
    owner = max((n for n in names if layer.startswith(n + "/")), key=len, default=None)
    if owner is None:
        model = layer.split("/")[0]
        if "/" not in layer:
            listed = ", ".join(map(repr, names))
            check.add(key, f"expected \"MODEL/LAYER\" or \"auto\", got {layer!r}; models: {listed}")
        else:
            check.unknown(key, "model", model, names, f"in {layer!r}", "models")
        return
    entry = next((m for m in models if m.name == owner), None)
    name = layer[len(owner) + 1:]
    if not name:
        check.add(key, f"{layer!r} names no layer after the model; write \"{owner}/LAYER\"")
    elif entry is not None and entry.layers != "auto" and name not in entry.layers:
        check.unknown(key, "layer", name, list(entry.layers), f"of model {owner!r} (its layers)", "layers")


# ----------------------------------------------------------------------------------------------
# a TOML rendering of a dict, for the text of a study built from one


def to_toml(mapping: Mapping[str, Any]) -> str:
    """``mapping`` (what ``tomllib`` reads) as TOML text that reads back equal; None values are left out."""
    lines: list[str] = []
    _toml_table(lines, [], mapping)
    return "\n".join(lines).strip() + "\n"


def _toml_table(lines: list[str], path: list[str], table: Mapping[str, Any]) -> None:
    plain, tables, arrays = [], [], []
    for key, value in table.items():
        if value is None:
            continue
        if isinstance(value, Mapping) and value:
            tables.append((key, value))
        elif isinstance(value, (list, tuple)) and value and all(isinstance(v, Mapping) for v in value):
            arrays.append((key, value))
        else:
            plain.append(f"{_toml_key(key)} = {_toml_value(value)}")
    lines += plain
    for key, value in tables:
        lines += ["", f"[{'.'.join(_toml_key(k) for k in [*path, key])}]"]
        _toml_table(lines, [*path, key], value)
    for key, items in arrays:
        for item in items:
            lines += ["", f"[[{'.'.join(_toml_key(k) for k in [*path, key])}]]"]
            _toml_table(lines, [*path, key], item)


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key, ensure_ascii=False)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, str)):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, os.PathLike):
        return json.dumps(os.fspath(value), ensure_ascii=False)
    if isinstance(value, Mapping):
        inner = ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items() if v is not None)
        return f"{{ {inner} }}" if inner else "{}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if hasattr(value, "isoformat"):  # TOML dates and times
        return value.isoformat()
    raise TypeError(f"cannot write {type(value).__name__} as TOML: {value!r}")
