"""The demo's Units step: top-activating patches of the natural-patches autoencoder and the digits CNN."""

from __future__ import annotations

from typing import Any

from torch.utils.data import Subset

from probe.study._context import DemoContext
from probe.study._top_patches import record_top_patches
from reports import Section, units_section

__all__ = ["UNIT_PANELS", "units_step"]

# (card title, run name, dataset, layer): first layers of both models, and a later CNN layer. The
# autoencoder is read before its ReLUs, so that its bottom patches show suppression (the opposite
# edge) rather than ties at zero; the CNN after them, where class selectivity is defined.
UNIT_PANELS: tuple[tuple[str, str, str, str], ...] = (
    ("ae-conv on natural patches · encoder.conv1", "ae-conv-patches", "natural-patches", "encoder.conv1"),
    ("ae-conv on natural patches · encoder.conv2", "ae-conv-patches", "natural-patches", "encoder.conv2"),
    ("cnn on digits · features.relu1", "cnn", "digits", "features.relu1"),
    ("cnn on digits · features.relu3", "cnn", "digits", "features.relu3"),
)

# Stimuli per panel in quick mode, so that the step takes about a second.
_QUICK_STIMULI = 200


def _stimuli(ctx: DemoContext, dataset_name: str) -> Any:
    dataset = ctx.dataset(dataset_name)
    if ctx.quick and len(dataset) > _QUICK_STIMULI:
        subset = Subset(dataset, range(_QUICK_STIMULI))
        subset.info = dataset.info  # keeps denormalize for display
        return subset
    return dataset


def units_step(ctx: DemoContext) -> list[Section]:
    """Top-9 and bottom-3 patches per unit on held-out stimuli; grids saved under ``ctx.out / "units"``."""
    results = {}
    missing = sorted({run for _, run, _, _ in UNIT_PANELS if run not in ctx.models})
    panels: dict[tuple[str, str], list[tuple[str, str]]] = {}  # one streaming pass per model
    for title, run, dataset_name, layer in UNIT_PANELS:
        if run in ctx.models:
            panels.setdefault((run, dataset_name), []).append((title, layer))
    for (run, dataset_name), entries in panels.items():
        by_layer = record_top_patches(
            ctx.models[run],
            _stimuli(ctx, dataset_name),
            [layer for _, layer in entries],
            k=9,
            bottom_k=3,
            device=ctx.device,
            progress=False,
        )
        results.update({title: by_layer[layer] for title, layer in entries})
    ctx.results["top_patches"] = results
    if not results:
        raise KeyError(f"the Units step needs the trained runs {missing}; run the Zoo step first")
    intro = (
        "Each row is one unit (the most class-selective ones for the labelled digits, the strongest for "
        "the unlabelled patches); each column one of its top-9 held-out stimuli, cropped to the unit's exact "
        "receptive field. Each patch's contrast is stretched for display. A first-layer unit of an "
        "autoencoder trained on contrast-normalised natural patches should prefer an oriented edge."
        + (f" Missing runs: {', '.join(missing)}." if missing else "")
    )
    section = units_section(
        results, units="selective", n_units=8, seed=ctx.seed, stretch=True, png_dir=ctx.out / "units", intro=intro
    )
    return [section]
