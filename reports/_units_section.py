"""The Units section: what drives single units — top-activating patches, bottom patches, histograms.

Drawn from ``analyses.TopPatches`` results; nothing is recomputed here.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from PIL import Image

from reports._render import _to_uint8_image, figure_to_data_uri, image_to_data_uri, render_fragment, table_html
from reports._report import Section

__all__ = ["save_unit_grids", "unit_grid_paths", "units_section"]

# Grids are upscaled (nearest neighbour) until they are about this many pixels wide.
_TARGET_WIDTH = 360
# Widest grid drawn in the page (px); wider ones are shrunk to it.
_MAX_SHOWN_WIDTH = 2 * _TARGET_WIDTH


def _scale(grid: np.ndarray) -> int:
    return int(max(1, min(16, _TARGET_WIDTH // max(grid.shape[1], 1))))


def _fit(grid: np.ndarray) -> np.ndarray:
    """A grid wider than the card, shrunk (area-averaged) to its width: large receptive fields of deep
    layers would otherwise make the page tens of megabytes. The saved PNG files keep full resolution."""
    width = grid.shape[1]
    if width <= _MAX_SHOWN_WIDTH:
        return grid
    height = max(1, round(grid.shape[0] * _MAX_SHOWN_WIDTH / width))
    image = Image.fromarray((np.clip(grid, 0, 1) * 255).astype(np.uint8))
    return np.asarray(image.resize((_MAX_SHOWN_WIDTH, height), Image.Resampling.BOX), dtype=np.float64) / 255


def _file_stem(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "layer"


def unit_grid_paths(out_dir: str | Path, name: str) -> dict[str, Path]:
    """Where ``save_unit_grids`` writes a layer's grids: ``{"top": path, "bottom": path}``.

    Parameters
    ----------
    out_dir
        The folder of the PNG files.
    name
        The layer name (or file stem); characters unsafe in file names are replaced.
    """
    stem = _file_stem(name)
    return {which: Path(out_dir) / f"{stem}_{which}.png" for which in ("top", "bottom")}


def save_unit_grids(
    result: Any,
    out_dir: str | Path,
    *,
    units: str | Sequence[int] = "selective",
    n_units: int = 8,
    seed: int = 0,
    stretch: bool = False,
    name: str | None = None,
) -> dict[str, Path]:
    """Write the layer's patch grids (one row per unit, one column per rank) as PNG files, atomically.

    Parameters
    ----------
    result
        An ``analyses.TopPatches``.
    out_dir
        Folder for the files ``<name>_top.png`` (and ``<name>_bottom.png`` when bottom patches exist).
    units, n_units, seed
        Which units to show (see ``TopPatches.select_units``).
    stretch
        Stretch each patch's contrast (display only).
    name
        File stem; default the layer name.

    Returns
    -------
    dict
        ``{"top": path, "bottom": path}`` for the files written.
    """
    from zoo import atomic_path

    chosen = result.select_units(units, n_units, seed)
    paths = unit_grid_paths(out_dir, name or result.layer)
    written, scale = {}, None
    for which, patches in (("top", result.patches), ("bottom", result.bottom_patches)):
        if patches.shape[1] == 0:
            continue
        grid = result.grid(chosen, which, stretch=stretch)
        pixels = _to_uint8_image(grid)
        scale = scale or _scale(grid)  # the bottom grid keeps the top grid's pixel size
        pixels = pixels.repeat(scale, axis=0).repeat(scale, axis=1)
        path = paths[which]
        with atomic_path(path, suffix=".png") as tmp:
            Image.fromarray(pixels).save(tmp, format="PNG")
        written[which] = path
    return written


def _histograms(panels: list[tuple[str, Any, np.ndarray]]) -> str | None:
    """One figure for the whole section (matplotlib's per-figure cost dominates a small section):
    per card, a ridgeline of the shown units' pooled-response histograms."""
    panels = [(title, result, chosen) for title, result, chosen in panels if result.pooled is not None]
    if not panels:
        return None
    n_columns = min(len(panels), 2)
    n_rows = -(-len(panels) // n_columns)
    height = max(0.32 * max(chosen.size for _, _, chosen in panels) + 0.9, 1.6)
    fig, axes = plt.subplots(n_rows, n_columns, figsize=(4.2 * n_columns, height * n_rows), squeeze=False)
    for ax, (title, result, chosen) in zip(axes.flat, panels):
        responses = result.pooled[:, chosen]
        edges = np.linspace(responses.min(), responses.max() + 1e-12, 41)
        for row, unit in enumerate(chosen):
            counts, _ = np.histogram(responses[:, row], bins=edges)
            ax.stairs(-row + 0.85 * counts / max(counts.max(), 1), edges, baseline=-row, fill=True, color="#4c72b0")
        if result.k:
            thresholds = result.topk.top_values[chosen, -1]
            ax.vlines(thresholds, -np.arange(chosen.size), -np.arange(chosen.size) + 0.9, colors="k", linestyles="--", linewidth=0.8)
        ax.set_yticks(-np.arange(chosen.size), [f"unit {u}" for u in _names(result, chosen)], fontsize=7)
        ax.tick_params(axis="x", labelsize=7)
        ax.set_title(title, fontsize=8)
        ax.set_xlabel(f"{result.topk.pool} response per stimulus", fontsize=7)
        ax.spines[["top", "right", "left"]].set_visible(False)
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    fig.tight_layout()
    return figure_to_data_uri(fig)


def _names(result: Any, chosen: np.ndarray) -> np.ndarray:
    """The layer's unit indices of the chosen rows (a result may cover some units only)."""
    return result.unit_names(chosen) if hasattr(result, "unit_names") else chosen


def _unit_table(result: Any, chosen: np.ndarray):
    frame = pd.DataFrame({"unit": _names(result, chosen)})
    if result.k:
        frame["top value"] = result.topk.top_values[chosen, 0]
    if result.topk.bottom_values.size:
        frame["bottom value"] = result.topk.bottom_values[chosen, 0]
    if result.pooled is not None:
        frame["mean response"] = result.pooled[:, chosen].mean(axis=0)
    if result.selectivity is not None:
        selectivity = result.selectivity.to_frame().iloc[chosen]
        frame["selectivity"] = selectivity["selectivity"].to_numpy()
        frame["preferred"] = selectivity.get("preferred_name", selectivity["preferred_class"]).to_numpy()
    return table_html(frame)


def _field_text(result: Any) -> str:
    layout = result.topk.layout
    if layout == "units":
        return "Fully connected units: whole stimuli."
    note = getattr(result, "field_note", None)
    if note:  # what the analysis measured a token (or an irregular map position) to see
        return note
    if layout == "tokens":
        return "Tokens: each crop is the token's image patch (class tokens: the whole image, resized)."
    field = result.field
    if getattr(field, "whole_input", False):
        return "Every position sees the whole stimulus: each crop is the whole image."
    return (
        f"Receptive field {field.size[0]}×{field.size[1]} px, stride {field.stride[0]}×{field.stride[1]} "
        f"({field.method}); map {field.map_shape[0]}×{field.map_shape[1]}. Grey checkerboard: outside the image."
    )


def units_section(
    results: Mapping[str, Any] | Sequence[Any],
    *,
    units: str | Sequence[int] = "selective",
    n_units: int = 8,
    seed: int = 0,
    stretch: bool = False,
    png_dir: str | Path | None = None,
    title: str = "Units",
    intro: str = "",
) -> Section:
    """Build the Units section from ``analyses.TopPatches`` results.

    Parameters
    ----------
    results
        ``{card title: TopPatches}`` or a list (titled by layer).
    units, n_units, seed
        Which units each card shows: ``"selective"`` (most class-selective; the strongest when
        unlabelled), ``"strongest"``, ``"random"`` (seeded) or explicit indices.
    stretch
        Stretch each patch's contrast in the grids (display only).
    png_dir
        Also save each card's grids there as PNG files (atomic).
    title, intro
        Section heading and an optional first paragraph.
    """
    if not isinstance(results, Mapping):
        results = {result.layer: result for result in results}
    if not results:
        raise ValueError("units_section needs at least one TopPatches result")
    cards, panels = [], []
    for card_title, result in results.items():
        chosen = result.select_units(units, n_units, seed)
        order = ", ".join(str(u) for u in _names(result, chosen))
        card = {
            "title": card_title,
            "field": _field_text(result),
            "top_uri": None,
            "top_caption": "",
            "bottom_uri": None,
            "bottom_caption": "",
            "table": _unit_table(result, chosen),
            "png": [],
        }
        scale = None
        bottom = result.topk.bottom_values[chosen]
        tied = bool(bottom.size) and bool(np.all(bottom == bottom[:, :1]))  # e.g. all zero after a ReLU
        for which, patches, label in (("top", result.patches, "largest"), ("bottom", result.bottom_patches, "smallest")):
            if patches.shape[1] and not (which == "bottom" and tied):
                grid = _fit(result.grid(chosen, which, stretch=stretch))
                scale = scale or _scale(grid)  # the bottom grid keeps the top grid's pixel size
                card[f"{which}_uri"] = image_to_data_uri(grid, scale=scale)
                card[f"{which}_caption"] = (
                    f"Rows: units {order}; columns: the {patches.shape[1]} stimuli with the {label} response, "
                    "ranked left to right."
                )
        if tied:
            card["bottom_caption"] = (
                f"Least-activating stimuli not shown: every shown unit's {bottom.shape[1]} smallest responses tie (at "
                f"{bottom[0, 0]:.3g}, e.g. zero after a ReLU), so they would be arbitrary; record the layer before "
                "its nonlinearity to see suppression."
            )
        if png_dir is not None:
            written = save_unit_grids(result, png_dir, units=chosen, stretch=stretch, name=_file_stem(card_title))
            card["png"] = [path.name for path in written.values()]
        cards.append(card)
        panels.append((card_title, result, chosen))
    body = render_fragment("sections/units.html.j2", intro=intro, cards=cards, histogram_uri=_histograms(panels))
    return Section(title, body, summary="Which stimuli drive single units most, cropped to each unit's receptive field.")
