"""The "two ways to visualize a function" section: the input plane as each layer of a 2-D network maps it."""

from __future__ import annotations

from typing import Any

import numpy as np

from reports._render import figure_to_data_uri, render_fragment, table_html
from reports._report import Section

__all__ = ["function_views_section"]

_CLASS_COLOURS = ("#1b9e77", "#d95f02", "#7570b3", "#e7298a")


def _panels(views: Any) -> str:
    import matplotlib.pyplot as plt

    n = len(views.layers)
    fig, axes = plt.subplots(1, n, figsize=(2.2 * n, 2.5), squeeze=False)
    for ax, layer in zip(axes[0], views.layers):
        grid = views.grid[layer]
        for line in grid:  # horizontal lines of the input grid
            ax.plot(line[:, 0], line[:, 1], color="0.75", linewidth=0.5)
        for line in grid.transpose(1, 0, 2):  # vertical ones
            ax.plot(line[:, 0], line[:, 1], color="0.75", linewidth=0.5)
        points = views.points[layer]
        for label in np.unique(views.labels):
            chosen = views.labels == label
            ax.scatter(points[chosen, 0], points[chosen, 1], s=4, color=_CLASS_COLOURS[int(label) % 4],
                       label=f"class {label}")
        view = "units" if views.n_units[layer] <= 2 else f"PCA, {views.explained_variance[layer]:.0%} of var."
        ax.set_title(f"{layer}\n({views.n_units[layer]} units; {view})", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0, 0].legend(fontsize=7, frameon=False, loc="lower left")
    fig.tight_layout()
    return figure_to_data_uri(fig)


def function_views_section(experiment: Any, *, title: str = "Two ways to visualize a function") -> Section:
    """Build the section from ``probe.study.function_views_experiment``'s result (or anything with ``views``,
    ``dataset``, ``widths``, ``accuracy`` and ``to_frame()``).

    Returns
    -------
    Section
        One row of panels, input to output: the input grid's lines and the data points as each layer maps
        them, and the table of the views.
    """
    views = experiment.views
    if not views.layers:
        raise ValueError("function_views_section needs at least one layer")
    intro = (f"A tanh MLP (hidden widths {', '.join(map(str, experiment.widths))}) trained on the 2-D "
             f"{experiment.dataset} dataset (accuracy {experiment.accuracy:.2f} on its points). A function can be drawn "
             "as its output over the input plane, or as the input plane itself carried through the layers: here the "
             "grid lines of the plane and the data points, as each layer maps them. Layer by layer the plane is "
             "stretched and folded until a straight line separates the classes before the read-out.")
    body = render_fragment("sections/figures.html.j2", intro=intro, items=[
        {"title": "The input plane through the layers", "uri": _panels(views),
         "caption": "Grey: lines of a regular grid over the input plane; dots: the data, coloured by class. Layers "
                    "wider than 2 are shown on the first two principal components of the data's responses."},
        {"title": "Views", "table": table_html(experiment.to_frame().round(3))},
    ])
    return Section(title, body, summary=f"{experiment.dataset}: {len(views.layers)} layers, accuracy "
                                        f"{experiment.accuracy:.2f}")
