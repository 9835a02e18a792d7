"""The nearest-stimuli section: for a few queries, the most similar stimuli at each layer, as image galleries."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from markupsafe import Markup, escape
from matplotlib.colors import to_rgb
from PIL import Image

from reports._render import _to_uint8_image, figure_to_data_uri, image_grid, render_fragment
from reports._report import Section

__all__ = ["neighbour_mosaic", "neighbours_section"]

_SAME, _OTHER = "#1b9e77", "#d95f02"  # frame colours: neighbour of the query's class, of another class
_TILE = 80  # pixels per image in a gallery (nearest-neighbour up, area-averaged down)
_FRAME = 4  # pixels of the coloured frame around each neighbour
_GAP = 10  # white pixels between tiles
_BOX = _TILE + 2 * _FRAME  # a tile with its frame
_STEP = _BOX + _GAP  # from one tile to the next, across and down
_DPI = 96


def _tile(image: np.ndarray) -> np.ndarray:
    """One stimulus as a ``_TILE`` x ``_TILE`` RGB array in [0, 1]: small images stay crisp (each pixel
    repeated), large ones are area-averaged."""
    pixels = Image.fromarray(_to_uint8_image(image)).convert("RGB")
    small = max(pixels.size) * 2 <= _TILE
    pixels = pixels.resize((_TILE, _TILE), Image.Resampling.NEAREST if small else Image.Resampling.BOX)
    return np.asarray(pixels, dtype=np.float64) / 255


def neighbour_mosaic(results: Sequence[Any], query_row: int, images: np.ndarray) -> np.ndarray:
    """The pixels of one gallery: a row per layer, the query then its neighbours, each neighbour framed
    green when of the query's class and orange otherwise (no frame without labels).

    Parameters
    ----------
    results
        ``analyses.StimulusNeighbours``, one per row, all with the same queries.
    query_row
        Which of their queries (an index into ``queries``).
    images
        The stimuli, shape (n_stimuli, H, W) or (n_stimuli, H, W, 3), values in [0, 1].

    Returns
    -------
    numpy.ndarray
        RGB array in [0, 1] of shape (rows * _STEP - _GAP, (k + 1) * _STEP - _GAP, 3).
    """
    same, other = (np.asarray(to_rgb(colour)) for colour in (_SAME, _OTHER))
    framed = []
    for result in results:
        query = int(result.queries[query_row])
        for column, index in enumerate([query, *result.neighbours[query_row].tolist()]):
            box = np.ones((_BOX, _BOX, 3))  # the query's frame stays white
            if column and result.labels is not None:
                box[:] = same if result.labels[index] == result.labels[query] else other
            box[_FRAME : _FRAME + _TILE, _FRAME : _FRAME + _TILE] = _tile(images[index])
            framed.append(box)
    return image_grid(np.stack(framed), n_columns=results[0].neighbours.shape[1] + 1, padding=_GAP, fill=1.0)


def _gallery(results: Sequence[Any], query_row: int, images: np.ndarray, class_names: Sequence[str] | None) -> str:
    """One figure: the mosaic drawn pixel for pixel, the similarity above each neighbour, the layers on the left.
    (One image in one axes: a grid of axes, one per stimulus, took seconds per gallery to draw.)"""
    mosaic = neighbour_mosaic(results, query_row, images)
    height, width = mosaic.shape[:2]
    # the axes take the mosaic's size at the figure's resolution, so that each pixel is drawn once
    fig = plt.figure(figsize=(width / _DPI, height / _DPI), dpi=_DPI)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(mosaic, interpolation="nearest")
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.set_xticks([])
    centres = np.arange(len(results)) * _STEP + _BOX / 2
    ax.set_yticks(centres, [result.layer if result.layer else result.model for result in results], fontsize=8)
    ax.tick_params(axis="y", length=0)
    for row, result in enumerate(results):
        for column, score in enumerate(result.scores[query_row], start=1):
            ax.text(column * _STEP + _BOX / 2, row * _STEP - 1, f"{score:.2f}", ha="center", va="bottom", fontsize=7)
    query = int(results[0].queries[query_row])
    name = ""
    if results[0].labels is not None:
        label = int(results[0].labels[query])
        name = f" ({class_names[label]})" if class_names is not None and 0 <= label < len(class_names) else f" ({label})"
    ax.text(_BOX / 2, -1, f"query{name}", ha="center", va="bottom", fontsize=7)
    return figure_to_data_uri(fig, dpi=_DPI)


def neighbours_section(results: Sequence[Any], images: np.ndarray, *, title: str = "Nearest stimuli",
                       class_names: Sequence[str] | None = None, intro: str = "", max_queries: int = 6) -> Section:
    """Build the section from ``analyses.StimulusNeighbours`` of the same queries, one per layer (in order).

    Parameters
    ----------
    results
        One result per layer (and model), all with the same queries; each becomes a row of every gallery.
    images
        The stimuli for display, shape (n_stimuli, H, W) or (n_stimuli, H, W, 3), values in [0, 1].
    class_names
        Names of the labels, for the query captions.
    title, intro
        Heading and first paragraph.
    max_queries
        Galleries drawn at most.

    Returns
    -------
    Section
        One gallery per query and a table of the label agreement per layer.
    """
    if not results:
        raise ValueError("neighbours_section needs at least one analyses.StimulusNeighbours")
    queries = results[0].queries
    if any(not np.array_equal(r.queries, queries) for r in results):
        raise ValueError("every result must have the same queries (one row per layer of the same galleries)")
    images = np.asarray(images, dtype=np.float64)
    if images.ndim not in (3, 4) or len(images) <= int(max(int(r.neighbours.max()) for r in results)):
        raise ValueError(f"images must have shape (n_stimuli, H, W[, 3]) covering every stimulus, got {images.shape}")
    items = [{"uri": _gallery(results, row, images, class_names),
              "caption": "Rows: layers, input to output. First column: the query; then its nearest stimuli by "
                         f"{results[0].metric} similarity (value above each), framed green when of the query's class, "
                         "orange otherwise."}
             for row in range(min(len(queries), max_queries))]
    agreement = [(f"{r.model} · {r.layer}" if r.model else r.layer, r.label_agreement()) for r in results]
    if any(np.isfinite(value) for _, value in agreement):
        rows = "".join(f"<tr><td>{escape(name)}</td><td>{value:.2f}</td></tr>" for name, value in agreement
                       if np.isfinite(value))
        items.append({"title": "Neighbours of the query's class",
                      "table": Markup(f'<table class="table"><thead><tr><th>layer</th><th>share of neighbours of the '
                                      f"query's class</th></tr></thead><tbody>{rows}</tbody></table>")})
    body = render_fragment("sections/figures.html.j2", intro=intro, items=items)
    finite = [value for _, value in agreement if np.isfinite(value)]
    summary = (f"{len(queries)} queries, {len(results)} layers" +
               (f"; neighbours of the query's class: {finite[0]:.0%} first, {finite[-1]:.0%} last" if finite else ""))
    return Section(title, body, summary=summary)
