"""The code-plane section: an autoencoder's stimuli in its 2-D code, and the images it decodes over the plane."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from reports._render import figure_to_data_uri, image_grid, render_fragment
from reports._report import Section

__all__ = ["code_plane_section"]


def _figure(plane: Any) -> str:
    import matplotlib.pyplot as plt

    fig, (scatter, decoded) = plt.subplots(1, 2, figsize=(8.4, 4.0))
    labels = plane.labels
    classes = [c for c in np.unique(labels) if c >= 0]
    colours = plt.get_cmap("tab10")
    for c in classes:
        chosen = labels == c
        name = plane.class_names[c] if plane.class_names is not None and c < len(plane.class_names) else str(c)
        scatter.scatter(plane.points[chosen, 0], plane.points[chosen, 1], s=5, color=colours(int(c) % 10), label=name)
    if not classes:
        scatter.scatter(plane.points[:, 0], plane.points[:, 1], s=5, color="0.4")
    scatter.set_xlim(plane.axes[0][0], plane.axes[0][-1])
    scatter.set_ylim(plane.axes[1][0], plane.axes[1][-1])
    axis = "code" if plane.code_dim == 2 else "PC"
    scatter.set_xlabel(f"{axis} 1")
    scatter.set_ylabel(f"{axis} 2")
    scatter.set_title("the stimuli's codes", fontsize=9)
    if classes:
        scatter.legend(fontsize=6, markerscale=2, frameon=False, loc="center left", bbox_to_anchor=(1.0, 0.5))
    n_grid = plane.decoded.shape[0]
    tiles = plane.decoded.reshape(n_grid * n_grid, *plane.decoded.shape[2:])
    decoded.imshow(image_grid(tiles, n_grid), cmap="gray" if tiles.ndim == 3 else None, vmin=0, vmax=1)
    decoded.set_xticks([])
    decoded.set_yticks([])
    decoded.set_title("decoded over the same plane", fontsize=9)
    fig.tight_layout()
    return figure_to_data_uri(fig)


def code_plane_section(planes: Sequence[Any], *, title: str = "Autoencoder code planes") -> Section:
    """Build the section from ``probe.study.code_plane`` results, one card per model.

    Returns
    -------
    Section
        Per model: the stimuli in the plane of its code, coloured by class, beside a grid of the images it
        decodes at the same points of the plane.
    """
    if not planes:
        raise ValueError("code_plane_section needs at least one code plane")
    items = []
    for plane in planes:
        if plane.code_dim == 2:
            how = "its 2-D code"
        else:
            how = (f"the plane of the first two principal components of its {plane.code_dim}-D code "
                   f"({plane.explained_variance:.0%} of the codes' variance; the rest of the code stays at its mean)")
        items.append({"title": plane.model, "uri": _figure(plane),
                      "caption": f"Left: the stimuli in {how}, coloured by class. Right: what the decoder makes of "
                                 "each point of a grid over the same plane (2nd to 98th percentile of the codes)."})
    intro = ("Where an autoencoder puts the stimuli, and what lies between them: a smooth code decodes to images that "
             "morph from one class into the next; gaps decode to blends no stimulus looks like.")
    body = render_fragment("sections/figures.html.j2", intro=intro, items=items)
    return Section(title, body, summary=", ".join(f"{p.model} ({p.code_dim}-D code)" for p in planes))
