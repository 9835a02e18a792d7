"""One colour per model, the same in every figure of a report.

Figures that colour by model take their colours from ``model_colors`` called with the study's
model order, so that a model keeps its colour from the MDS plot to the ranking bars to the
transfer curves. Baselines that are not models (raw pixels) are drawn in ``BASELINE_COLOR``.
"""

from __future__ import annotations

import colorsys
from typing import Iterable, Sequence

__all__ = ["BASELINE_COLOR", "model_colors", "model_of"]

# tab10, then tab20's lighter partners in the same hue order: the first ten models get the strong
# colours, neighbours in the list never share a hue, and 20 models stay distinct.
_PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
    "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5",
)

BASELINE_COLOR = "#000000"

_GOLDEN_RATIO = 0.618033988749895


def _extra_color(index: int) -> str:
    """Colours past the palette: hues a golden-ratio turn apart, at two lightnesses."""
    hue = (index * _GOLDEN_RATIO) % 1.0
    lightness = 0.38 if index % 2 else 0.55
    red, green, blue = colorsys.hls_to_rgb(hue, lightness, 0.75)
    return "#{:02x}{:02x}{:02x}".format(*(round(255 * c) for c in (red, green, blue)))


def _unique(names: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(names))


def model_colors(names: Sequence[str]) -> dict[str, str]:
    """Assign each model a colour, by its first position in ``names``.

    Parameters
    ----------
    names
        Model names in the study's order; repeats are ignored. Pass the same list to every figure
        of a report (all its models, not only those a figure shows) and each model keeps its colour.

    Returns
    -------
    dict
        Model name -> hex colour. The first 20 models get distinct colours (tab10, then tab20's
        lighter partners); further models get hues spread by the golden ratio.
    """
    return {
        name: _PALETTE[i] if i < len(_PALETTE) else _extra_color(i) for i, name in enumerate(_unique(names))
    }


def model_of(feature_name: str, models: Sequence[str]) -> str | None:
    """The model a feature set belongs to: the longest of ``models`` that starts its name.

    Feature sets are named after their model, e.g. ``"simclr encoder"`` or ``"cnn · fc2"``.

    Returns
    -------
    str or None
        The model, or None when no model name starts ``feature_name`` followed by a space, "/",
        ":" or the end of the name.
    """
    matches = [m for m in models if feature_name.startswith(m) and feature_name[len(m) : len(m) + 1] in ("", " ", "/", ":")]
    return max(matches, key=len, default=None)
