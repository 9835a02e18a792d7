"""Rendering helpers shared by every report section: templates, figures and images as data URIs."""

from __future__ import annotations

import base64
import io
from typing import Any

import matplotlib

matplotlib.use("Agg")  # reports are written headless; never open a window

import jinja2
import numpy as np
import pandas as pd
from markupsafe import Markup
from matplotlib.figure import Figure
from PIL import Image

__all__ = [
    "render_fragment",
    "figure_to_data_uri",
    "image_to_data_uri",
    "image_grid",
    "table_html",
]

_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("reports", "templates"),
    autoescape=True,  # every value is escaped unless it is Markup we built ourselves
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def render_fragment(template_name: str, **context: Any) -> Markup:
    """Render a template from ``reports/templates`` with autoescaping, as safe HTML.

    Parameters
    ----------
    template_name
        File name relative to ``reports/templates``, for example ``"sections/zoo.html.j2"``.
    **context
        Values the template reads. Strings are escaped; pass ``Markup`` for trusted HTML.
    """
    return Markup(_ENV.get_template(template_name).render(**context))


def _png_data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def figure_to_data_uri(fig: Figure, dpi: int = 96) -> str:
    """Encode a matplotlib figure as a PNG data URI and close the figure."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return _png_data_uri(buffer.getvalue())


def line_plot_to_data_uri(fig: Figure, ax: Any, xlabel: str, ylabel: str, legend_fontsize: int = 7) -> str:
    """Label a one-axes plot, add its legend, drop the top and right spines, and encode it (see
    ``figure_to_data_uri``)."""
    import seaborn as sns

    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=legend_fontsize)
    sns.despine(fig)
    return figure_to_data_uri(fig)


def _to_uint8_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[0] in (1, 3) and image.shape[-1] not in (1, 3):
        image = np.moveaxis(image, 0, -1)  # (C, H, W) -> (H, W, C)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.dtype != np.uint8:
        image = np.clip(np.nan_to_num(image.astype(np.float64)), 0.0, 1.0)
        image = np.round(image * 255).astype(np.uint8)
    return image


def image_to_data_uri(image: np.ndarray, scale: int = 1) -> str:
    """Encode an image as a PNG data URI.

    Parameters
    ----------
    image
        Array of shape (H, W), (H, W, C) or (C, H, W) with C in {1, 3}; floats are read in [0, 1]
        and clipped, uint8 is taken as is.
    scale
        Integer upscaling with nearest-neighbour sampling, so that 8×8 digits stay crisp.
    """
    pixels = _to_uint8_image(image)
    if scale > 1:
        pixels = pixels.repeat(scale, axis=0).repeat(scale, axis=1)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return _png_data_uri(buffer.getvalue())


def image_grid(images: np.ndarray, n_columns: int, padding: int = 1, fill: float = 1.0) -> np.ndarray:
    """Tile images into one grid image.

    Parameters
    ----------
    images
        Array of shape (n, H, W) or (n, H, W, C), values in [0, 1].
    n_columns
        Images per row.
    padding
        Pixels between images.
    fill
        Value of the padding.

    Returns
    -------
    numpy.ndarray
        Array of shape (rows * (H + padding) - padding, n_columns * (W + padding) - padding[, C]).
    """
    images = np.asarray(images, dtype=np.float64)
    n, height, width = images.shape[:3]
    n_rows = -(-n // n_columns)
    grid_shape = (n_rows * (height + padding) - padding, n_columns * (width + padding) - padding)
    grid = np.full(grid_shape + images.shape[3:], fill, dtype=np.float64)
    for i, image in enumerate(images):
        row, column = divmod(i, n_columns)
        top, left = row * (height + padding), column * (width + padding)
        grid[top : top + height, left : left + width] = image
    return grid


def table_html(frame: pd.DataFrame, float_format: str = "{:.4g}", index: bool = False) -> Markup:
    """Render a DataFrame as an escaped HTML table, in a box that scrolls sideways when the table is
    wider than the page."""
    html = frame.to_html(
        index=index,
        escape=True,
        border=0,
        classes="table",
        float_format=float_format.format,
        na_rep="–",
    )
    return Markup(f'<div class="scroll-x">{html}</div>')
