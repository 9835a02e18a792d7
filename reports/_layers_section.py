"""The Layers section: per model, the recorded layers, their shapes and activation statistics."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from reports._render import image_to_data_uri, render_fragment
from reports._report import Section

__all__ = ["layers_section", "histogram_image"]

_HISTOGRAM_ROWS = 400  # stimuli read per layer for its histogram (evenly spaced; on-disk layers stay lazy)
_BAR_COLOUR = np.array([0.30, 0.45, 0.69])


def _sample(values: np.ndarray) -> np.ndarray:
    rows = np.unique(np.linspace(0, len(values) - 1, min(len(values), _HISTOGRAM_ROWS)).astype(int))
    sample = np.asarray(values[rows], dtype=np.float64).ravel()
    return sample[np.isfinite(sample)]


def histogram_image(values: np.ndarray, bins: int = 40, height: int = 32, bar_width: int = 3) -> np.ndarray:
    """A small histogram drawn straight into pixels (no axes), for tables with one row per layer.

    Parameters
    ----------
    values
        Array of any shape; non-finite values are ignored.
    bins, height, bar_width
        Number of bins, image height in pixels, pixels per bin.

    Returns
    -------
    numpy.ndarray
        RGB image of shape (height, bins * bar_width, 3), values in [0, 1]; bar heights are
        proportional to the counts, the tallest bin fills the height.
    """
    values = np.asarray(values, dtype=np.float64).ravel()
    values = values[np.isfinite(values)]
    counts = np.histogram(values, bins=bins)[0] if values.size else np.zeros(bins)
    tallest = counts.max() if counts.max() > 0 else 1
    bar_heights = np.ceil(counts / tallest * height).astype(int)
    filled = np.arange(height)[::-1, None] < np.repeat(bar_heights, bar_width)[None, :]  # (height, width)
    image = np.ones((height, bins * bar_width, 3))
    image[filled] = _BAR_COLOUR
    return image


def layers_section(recordings: Mapping[str, Any], title: str = "Layers") -> list[Section]:
    """Build the Layers section from recordings.

    Parameters
    ----------
    recordings
        Model name -> ``probe.Recording``.
    title
        Section heading.

    Returns
    -------
    list of Section
        One section with a card per model: a row per recorded layer with its raw output shape
        per stimulus, reduction and units, activation statistics (``Recording.to_frame``: mean,
        std, fraction of exact zeros, dead units = constant over every stimulus) and a small
        histogram of its recorded values with their range.
    """
    if not recordings:
        raise ValueError("layers_section needs at least one recording; pass {model name: probe.Recording}")
    cards = []
    for name, recording in recordings.items():
        rows = []
        for row in recording.to_frame().to_dict("records"):
            sample = _sample(recording[row["layer"]])
            rows.append(
                {
                    **row,
                    "histogram_uri": image_to_data_uri(histogram_image(sample)),
                    "range": f"{sample.min():.3g} to {sample.max():.3g}" if sample.size else "no finite values",
                }
            )
        cards.append({"title": name, "n_stimuli": recording.n_stimuli, "rows": rows})
    body = render_fragment(
        "sections/layers.html.j2",
        intro=(
            "Each recorded layer's output is reduced per stimulus (spatial mean for convolutional maps, mean over "
            "tokens for transformer blocks, flattened otherwise) before any analysis. Dead units are units whose "
            "response is the same for every stimulus (for example ReLUs that never fire). Histograms show the "
            "recorded values of up to 400 evenly spaced stimuli, each scaled to its tallest bin."
        ),
        cards=cards,
    )
    n_layers = sum(len(card["rows"]) for card in cards)
    summary = f"{len(cards)} model{'s' * (len(cards) != 1)}, {n_layers} recorded layers"
    return [Section(title, body, summary=summary)]
