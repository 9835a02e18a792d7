"""The codes section: k-means centroids of the pixels as images, how each layer's k-means codes match the classes,
and how each VQ-VAE uses its codebook."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from reports._render import figure_to_data_uri, render_fragment, table_html
from reports._report import Section

__all__ = ["codes_section"]

# Centroid images per row of the pixel-centroid figure.
_CENTROIDS_PER_ROW = 10
_ARI_COLOR, _PURITY_COLOR, _RATIO_COLOR = "#1f77b4", "#ff7f0e", "#7f7f7f"


def _class_name(label: int, class_names: Sequence[str] | None) -> str:
    if label < 0:
        return "–"
    return str(class_names[label]) if class_names is not None and label < len(class_names) else str(label)


def _centroid_figure(codes: Any, images: np.ndarray, class_names: Sequence[str] | None) -> str:
    """The k centroids as images, each titled with its code's most common class and its size, largest code first."""
    import matplotlib.pyplot as plt

    order = np.argsort(-codes.code_sizes, kind="stable")
    columns = min(len(order), _CENTROIDS_PER_ROW)
    rows = -(-len(order) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(0.9 * columns + 0.4, 1.15 * rows + 0.2), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    grey = images.ndim == 3
    for position, code in enumerate(order):
        ax = axes.ravel()[position]
        ax.imshow(images[code], cmap="gray" if grey else None, vmin=0, vmax=1)
        labelled = codes.majority[code] >= 0
        ax.set_title((f"{_class_name(int(codes.majority[code]), class_names)}\n" if labelled else "")
                     + f"n={int(codes.code_sizes[code])}", fontsize=6.5, pad=2)
    fig.subplots_adjust(wspace=0.15, hspace=0.5)
    return figure_to_data_uri(fig)


def _ordered(layer_codes: Sequence[Any]) -> list[Any]:
    """The pixels first, then the layers grouped by model (models in order of first appearance, layers in the
    order given, which is depth order)."""
    pixels = [c for c in layer_codes if not c.model]
    models = list(dict.fromkeys(c.model for c in layer_codes if c.model))
    return pixels + [c for model in models for c in layer_codes if c.model == model]


def _agreement_figure(layer_codes: Sequence[Any]) -> str:
    """Bars per layer: adjusted Rand index and purity, or (without labels) the share of variance left unexplained."""
    import matplotlib.pyplot as plt

    shown = _ordered(layer_codes)
    several = len({c.model for c in shown if c.model}) > 1
    names = [("pixels" if not c.model else f"{c.model} · {c.layer}" if several else c.layer) for c in shown]
    labelled = any(np.isfinite(c.adjusted_rand) for c in shown)
    x = np.arange(len(shown))
    fig, ax = plt.subplots(figsize=(min(max(3.5, 0.7 * len(shown) + 1.5), 9.0), 3.0))
    if labelled:
        ax.bar(x - 0.2, [c.adjusted_rand for c in shown], 0.4, color=_ARI_COLOR, label="adjusted Rand index")
        ax.bar(x + 0.2, [c.purity for c in shown], 0.4, color=_PURITY_COLOR, label="purity")
        ax.set_ylabel("agreement with the classes")
        ax.legend(fontsize=7, frameon=False)
    else:
        ax.bar(x, [c.inertia_ratio for c in shown], 0.6, color=_RATIO_COLOR)
        ax.set_ylabel("variance left unexplained")
    for i in range(1, len(shown)):  # a line between the pixels and each model's layers
        if shown[i].model != shown[i - 1].model:
            ax.axvline(i - 0.5, color="0.6", linewidth=0.8, linestyle=":")
    ax.set_ylim(min(0.0, *(c.adjusted_rand for c in shown if np.isfinite(c.adjusted_rand))) if labelled else 0.0,
                1.05)
    ax.set_xticks(x)
    ax.set_xticklabels(names, rotation=30, ha="right", fontsize=7)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    return figure_to_data_uri(fig)


def _codebook_figure(book: Any) -> str:
    """A VQ-VAE's code use counts, sorted from the most used code down."""
    import matplotlib.pyplot as plt

    counts = np.sort(np.asarray(book.counts))[::-1]
    fig, ax = plt.subplots(figsize=(7.0, 2.6))
    ax.bar(np.arange(len(counts)), counts, 0.9, color=_ARI_COLOR)
    ax.set_xlabel("codes, most used first")
    ax.set_ylabel("times chosen")
    ax.set_title(f"{book.model}: {book.usage:.0%} of {book.n_codes} codes used, perplexity {book.perplexity:.1f}",
                 fontsize=9)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    return figure_to_data_uri(fig)


def codes_section(layer_codes: Sequence[Any], *, pixel_images: np.ndarray | None = None,
                  class_names: Sequence[str] | None = None, codebooks: Sequence[Any] = (),
                  title: str = "Codes: k-means and vector quantisation", intro: str = "") -> Section:
    """Build the section from ``analyses.LayerCodes`` (the pixels' with model ``""``) and ``analyses.CodebookUsage``.

    Parameters
    ----------
    layer_codes
        One result per layer, in depth order per model; the pixels' (model ``""``) drawn first.
    pixel_images
        The pixels' centroids for display, shape (k, H, W) or (k, H, W, 3) in [0, 1]; drawn when given.
    class_names
        Names of the labels, for the centroids' titles.
    codebooks
        The codebook use of each VQ-VAE, one figure each.
    title, intro
        Heading and first paragraph.

    Returns
    -------
    Section
        The pixel centroids (when given), the agreement of each layer's codes with the classes with its table,
        and each codebook's use with its table.
    """
    if not layer_codes and not codebooks:
        raise ValueError("codes_section needs at least one analyses.LayerCodes or analyses.CodebookUsage")
    items = []
    pixels = next((c for c in layer_codes if not c.model), None)
    if pixel_images is not None:
        if pixels is None:
            raise ValueError("pixel_images were given but no LayerCodes of the pixels (model '')")
        pixel_images = np.asarray(pixel_images, dtype=np.float64)
        if pixel_images.ndim not in (3, 4) or len(pixel_images) != pixels.k:
            raise ValueError(f"pixel_images must have shape ({pixels.k}, H, W[, 3]), one per code; got {pixel_images.shape}")
        items.append({"title": "The pixels' k-means centroids",
                      "uri": _centroid_figure(pixels, pixel_images, class_names),
                      "caption": f"The {pixels.k} centroids of k-means on the pixels, largest code first: the decoder "
                                 "maps each code back to its centroid, the mean image of its stimuli. Above each: the "
                                 "code's most common class and its number of stimuli."})
    if layer_codes:
        frame = pd.concat([c.to_frame() for c in _ordered(layer_codes)])
        frame["model"] = frame["model"].replace("", "–")
        labelled = any(np.isfinite(c.adjusted_rand) for c in layer_codes)
        caption = ("Per layer (the pixels first, then each model's layers in depth order): the adjusted Rand index "
                   "of the k-means codes against the classes (0 for chance, 1 for the classes exactly) and their purity."
                   if labelled else "Per layer: the share of variance the k-means centroids leave unexplained "
                   "(the stimuli have no labels).")
        items.append({"title": "Do the codes match the classes?", "uri": _agreement_figure(layer_codes),
                      "caption": caption,
                      "table": table_html(frame[["model", "layer", "k", "n_units", "inertia_ratio", "adjusted_rand",
                                                 "normalized_mutual_info", "purity", "used_codes", "largest_code"]],
                                          float_format="{:.3f}")})
    for book in codebooks:
        items.append({"title": f"Codebook use · {book.model}", "uri": _codebook_figure(book),
                      "caption": "How often each code of the VQ-VAE's codebook is chosen over all grid positions of "
                                 "the stimuli. Perplexity is exp of the entropy of the code frequencies: the number of "
                                 "equally used codes that would be as spread out.",
                      "table": table_html(book.to_frame(), float_format="{:.3f}")})
    body = render_fragment("sections/figures.html.j2", intro=intro, items=items)
    parts = []
    best = max((c for c in layer_codes if c.model and np.isfinite(c.adjusted_rand)), key=lambda c: c.adjusted_rand,
               default=None)
    if best is not None:
        parts.append(f"best match with the classes: {best.model} · {best.layer} (ARI {best.adjusted_rand:.2f})")
    if pixels is not None and np.isfinite(pixels.adjusted_rand):
        parts.append(f"pixels ARI {pixels.adjusted_rand:.2f}")
    parts += [f"{b.model}: perplexity {b.perplexity:.1f} of {b.n_codes}" for b in codebooks]
    summary = "; ".join(parts) or f"{len(layer_codes)} layers clustered"
    return Section(title, body, summary=summary)
