"""The nearest-stimuli section: for a few queries, the most similar stimuli at each layer, as image galleries."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from markupsafe import Markup, escape

from reports._render import figure_to_data_uri, render_fragment
from reports._report import Section

__all__ = ["neighbours_section"]

_SAME, _OTHER = "#1b9e77", "#d95f02"  # frame colours: neighbour of the query's class, of another class


def _gallery(results: Sequence[Any], query_row: int, images: np.ndarray, class_names: Sequence[str] | None) -> str:
    """One figure: a row per layer, the query then its neighbours, framed by whether their class matches."""
    import matplotlib.pyplot as plt

    k = results[0].neighbours.shape[1]
    fig, axes = plt.subplots(len(results), k + 1, figsize=(1.0 * (k + 1) + 1.6, 1.05 * len(results)), squeeze=False)
    grey = images.ndim == 3
    for row, result in enumerate(results):
        query = int(result.queries[query_row])
        shown = [query, *result.neighbours[query_row].tolist()]
        for column, index in enumerate(shown):
            ax = axes[row, column]
            ax.imshow(images[index], cmap="gray" if grey else None, vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if column and result.labels is not None:
                colour = _SAME if result.labels[index] == result.labels[query] else _OTHER
                for spine in ax.spines.values():
                    spine.set_edgecolor(colour)
                    spine.set_linewidth(2.5)
            if column:
                ax.set_title(f"{result.scores[query_row, column - 1]:.2f}", fontsize=7, pad=2)
        label = result.layer if result.layer else result.model
        axes[row, 0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
    query = int(results[0].queries[query_row])
    name = ""
    if results[0].labels is not None:
        label = int(results[0].labels[query])
        name = f" ({class_names[label]})" if class_names is not None and 0 <= label < len(class_names) else f" ({label})"
    axes[0, 0].set_title(f"query{name}", fontsize=7, pad=2)
    fig.subplots_adjust(wspace=0.08, hspace=0.25)
    return figure_to_data_uri(fig)


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
