"""The study's ``codes`` analysis: k-means codes of the pixels and of each layer against the classes, and the
codebook use of every VQ-VAE."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from analyses import CodebookUsage, LayerCodes, codebook_usage, kmeans_codes
from probe.study._context import StudyContext, dataset_labels, display_pixels, stimulus_pixels
from probe.study._neighbours_step import shown_layers
from probe.study._transfer_step import MAX_PIXELS
from reports import Section, codes_section
from zoo import iterate_batches

__all__ = ["PIXELS_LAYER", "codes_analysis", "codes_findings", "is_vq_model", "model_codebook_usage"]

# The layer name of the pixels' codes (their model is "").
PIXELS_LAYER = "pixels"
# Number of classes assumed by k = "classes" when the stimuli have no labels.
UNLABELLED_K = 10


def is_vq_model(model: Any) -> bool:
    """Whether a model has a codebook: a ``codes`` method and ``config["n_codes"]`` (the zoo's VQ-VAE)."""
    config = getattr(model, "config", None)
    return callable(getattr(model, "codes", None)) and isinstance(config, dict) and "n_codes" in config


@torch.no_grad()
def model_codebook_usage(model: Any, stimuli: Any, *, name: str = "", device: str | torch.device = "cpu",
                         batch_size: int = 256) -> CodebookUsage:
    """The codebook use of a VQ model over every stimulus: its ``codes`` at every grid position, counted."""
    model = model.eval().to(device)
    indices = [model.codes(images.to(device)).flatten().cpu() for images, _ in iterate_batches(stimuli, batch_size)]
    return codebook_usage(torch.cat(indices), int(model.config["n_codes"]), model=name)


def _check_names(ctx: StudyContext, models: Sequence[str] | str, layers: Sequence[str] | str) -> None:
    if models != "all":
        for name in models:
            if name not in ctx.recordings:
                raise ValueError(f"codes.models names {name!r}, which is not a recorded model of the study; "
                                 f"recorded: {', '.join(ctx.recordings) or 'none'}")
    if layers != "auto":
        for item in layers:
            model, _, layer = item.partition("/")
            if model not in ctx.recordings or layer not in ctx.recordings[model].layers:
                where = (f"recorded layers of {model!r}: {', '.join(ctx.recordings[model].layers)}"
                         if model in ctx.recordings else f"recorded models: {', '.join(ctx.recordings)}")
                raise ValueError(f"codes.layers names {item!r}, which is not MODEL/LAYER of a recorded layer; {where}")


def _number_of_codes(k: int | str, labels: np.ndarray | None, n_stimuli: int) -> int:
    if k != "classes":
        return int(k)
    classes = len(np.unique(labels[labels >= 0])) if labels is not None else UNLABELLED_K
    return max(2, min(classes, n_stimuli))


def codes_analysis(ctx: StudyContext, *, models: Sequence[str] | str = "all", layers: Sequence[str] | str = "auto",
                   k: int | str = "classes", pixels: bool = True) -> list[Section]:
    """k-means codes of the pixels (when ``pixels``) and of each shown layer, per group of stimuli, compared with
    the classes; and the codebook use of each VQ-VAE among the models.

    ``k = "classes"`` takes the stimuli's number of classes (``UNLABELLED_K`` when they have no labels). The table
    ``codes`` has one row per (model, layer), the pixels' with model ``""`` and layer ``"pixels"``; the table
    ``codebook`` one row per VQ-VAE. ``ctx.results["codes"]`` holds ``{"layers": {stimuli: [LayerCodes]},
    "codebooks": {model: CodebookUsage}}``.
    """
    _check_names(ctx, models, layers)
    sections, frames, by_group, codebooks = [], [], {}, {}
    for words, names in ctx.stimulus_groups(models).items():
        rows = shown_layers(ctx, names, layers)
        stimuli = ctx.stimuli[names[0]]
        group_books = [model_codebook_usage(ctx.models[n], ctx.stimuli[n], name=n, device=ctx.device)
                       for n in names if n in ctx.models and is_vq_model(ctx.models[n])]
        cluster_pixels = pixels and np.asarray(stimuli[0][0]).size <= MAX_PIXELS
        if not rows and not cluster_pixels and not group_books:
            continue
        labels = dataset_labels(stimuli)
        labels = labels if (labels >= 0).any() else None
        n = len(stimuli)
        n_codes = _number_of_codes(k, labels, n)
        results, pixel_images = [], None
        if cluster_pixels:
            pixel_codes = kmeans_codes(stimulus_pixels(stimuli), labels, n_codes, seed=ctx.seed, layer=PIXELS_LAYER)
            shape = tuple(torch.as_tensor(stimuli[0][0]).shape)
            pixel_images = display_pixels(stimuli, torch.as_tensor(pixel_codes.centroids, dtype=torch.float32)
                                          .reshape(n_codes, *shape))
            results.append(pixel_codes)
        for model, layer in rows:
            responses = np.asarray(ctx.recordings[model][layer]).reshape(n, -1)
            results.append(kmeans_codes(responses, labels, n_codes, seed=ctx.seed, layer=layer, model=model))
        by_group[words] = results
        codebooks.update({book.model: book for book in group_books})
        frames += [r.to_frame().assign(stimuli=words) for r in results]
        class_names = getattr(getattr(stimuli, "info", None), "class_names", None)
        title = "Codes: k-means and vector quantisation" + (f" · {words}" if words else "")
        intro = (f"Each layer of {words or 'the study'} turned into one of {n_codes} codes by k-means, and how well "
                 "the codes match the classes: the adjusted Rand index (0 for chance, 1 for the classes exactly) and "
                 "the purity (share of stimuli whose code's most common class is their own).")
        if pixels and not cluster_pixels:
            intro += f" The pixels are not clustered: the images have over {MAX_PIXELS} values."
        sections.append(codes_section(results, pixel_images=pixel_images, class_names=class_names,
                                      codebooks=group_books, title=title, intro=intro))
    if not sections:
        return []
    ctx.results["codes"] = {"layers": by_group, "codebooks": codebooks}
    if frames:
        ctx.add_table("codes", pd.concat(frames))
    if codebooks:
        ctx.add_table("codebook", pd.concat([book.to_frame() for book in codebooks.values()]))
    return sections


def _name(codes: LayerCodes) -> str:
    return f"{codes.model} · {codes.layer}" if codes.model else "the pixels"


def codes_findings(ctx: StudyContext) -> list[Any]:
    """Per group of stimuli, the layer whose k-means codes agree best with the classes (adjusted Rand index),
    against the pixels'; per VQ-VAE, how much of its codebook it uses (``Finding`` objects)."""
    from probe.study._findings import Finding  # here, not at the top: _findings imports this module's finder

    result = ctx.results.get("codes")
    if not result:
        return []
    findings = []
    for words, layer_codes in result["layers"].items():
        layers = [c for c in layer_codes if c.model and np.isfinite(c.adjusted_rand)]
        if not layers:
            continue
        best = max(layers, key=lambda c: c.adjusted_rand)
        pixel = next((c for c in layer_codes if not c.model and np.isfinite(c.adjusted_rand)), None)
        text = (f"k-means codes ({best.k} codes) match the classes best at {_name(best)}: adjusted Rand index "
                f"{best.adjusted_rand:.2f}, purity {best.purity:.2f}")
        if pixel is not None:
            text += f" (the pixels' codes: {pixel.adjusted_rand:.2f}, purity {pixel.purity:.2f})"
        findings.append(Finding("Codes", text + ".", "codes", words, best.model, best.adjusted_rand))
    for name, book in result["codebooks"].items():
        findings.append(Finding(
            "Codes", f"{name} uses {int((book.counts > 0).sum())} of its {book.n_codes} codes on the stimuli "
            f"(perplexity {book.perplexity:.1f}; {book.n_codes} if all were used equally).", "codes",
            ctx.data_of.get(name, ""), name, book.perplexity))
    return findings
