"""Report section for representational similarity: RDMs, CKA maps, RDM-MDS, reference ranking."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import scipy.stats
from matplotlib.figure import Figure

from reports._colors import BASELINE_COLOR, model_colors
from reports._labels import place_labels
from reports._render import figure_to_data_uri, render_fragment, table_html
from reports._report import Section

__all__ = ["similarity_section"]


def _percentiles(matrix: np.ndarray) -> np.ndarray:
    """Display transform: each off-diagonal dissimilarity as its percentile within the RDM."""
    n = matrix.shape[0]
    rows, cols = np.triu_indices(n, 1)
    shown = np.zeros_like(matrix, dtype=np.float64)
    values = scipy.stats.rankdata(matrix[rows, cols]) / max(rows.size, 1)
    shown[rows, cols] = shown[cols, rows] = 100.0 * values
    return shown


def _rdm_grid(rdms: Mapping[str, Any], order_by: str, max_rdms: int) -> str:
    items = list(rdms.items())[:max_rdms]
    n_columns = min(4, len(items))
    n_rows = -(-len(items) // n_columns)
    fig, axes = plt.subplots(n_rows, n_columns, figsize=(2.6 * n_columns + 0.6, 2.7 * n_rows), squeeze=False)
    for ax in axes.ravel()[len(items):]:
        ax.axis("off")
    image = None
    for ax, (name, rdm) in zip(axes.ravel(), items):
        shown = rdm.sorted_by(order_by) if order_by in rdm.descriptors else rdm
        image = ax.imshow(_percentiles(np.asarray(shown)), cmap="viridis", vmin=0, vmax=100, interpolation="nearest")
        ax.set_yticks([])
        ax.set_xticks([])
        if order_by in shown.descriptors:
            values = shown.descriptors[order_by]
            boundaries = np.flatnonzero(values[1:] != values[:-1]) + 0.5
            for b in boundaries:
                ax.axhline(b, color="white", lw=0.4)
                ax.axvline(b, color="white", lw=0.4)
            starts = np.concatenate([[0], np.ceil(boundaries).astype(int)])
            ends = np.concatenate([np.ceil(boundaries).astype(int), [len(values)]])
            ax.set_xticks((starts + ends - 1) / 2, [str(values[s]) for s in starts], fontsize=6)
        ax.set_title(f"{name}\n{rdm.metric}", fontsize=8)
    fig.subplots_adjust(wspace=0.15, hspace=0.35, right=0.88)
    colorbar_axes = fig.add_axes([0.9, 0.15, 0.015, 0.7])
    fig.colorbar(image, cax=colorbar_axes, label="percentile of dissimilarity")
    return figure_to_data_uri(fig)


# Maps with more rows than this are drawn at full size (labels legible) in a scrollable view.
FULL_SIZE_FROM = 20
_INCHES_PER_CELL = 0.16  # 11.5 pt per row: room for 7-pt labels


def _matrix_heatmap(similarity: Any, *, cmap: str = "magma", vmin: float = 0.0, vmax: float = 1.0,
                    label: str | None = None) -> str:
    """A layer x layer map with white lines between models, its values written in the cells when there are
    at most 12; maps larger than ``FULL_SIZE_FROM`` are drawn at a size that keeps their labels legible."""
    k = len(similarity.names)
    size = 0.3 * k + 2 if k <= FULL_SIZE_FROM else _INCHES_PER_CELL * k + 1.5
    size = max(4.0, size)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    values = np.asarray(similarity.values)
    image = ax.imshow(values, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
    ax.set_xticks(np.arange(k), similarity.names, rotation=90, fontsize=7)
    ax.set_yticks(np.arange(k), similarity.names, fontsize=7)
    if k <= 12:
        reversed_map = cmap.endswith("_r")
        for i in range(k):
            for j in range(k):
                shade = (values[i, j] - vmin) / (vmax - vmin)
                bright = (1 - shade if reversed_map else shade) > 0.6
                ax.text(j, i, f"{values[i, j]:.2f}", ha="center", va="center", fontsize=6,
                        color="black" if bright else "white")
    models = similarity.models
    for i in range(1, k):
        if models[i] != models[i - 1]:  # separate the blocks of different models
            ax.axhline(i - 0.5, color="white", lw=1.5)
            ax.axvline(i - 0.5, color="white", lw=1.5)
    fig.colorbar(image, ax=ax, fraction=0.046 if k <= FULL_SIZE_FROM else 0.025, pad=0.02,
                 label=label or similarity.measure)
    ax.set_title(f"{similarity.measure}, {similarity.n_stimuli} stimuli")
    return figure_to_data_uri(fig)


def _marker_area(depth):
    """Marker area (points²) of the MDS plot: markers grow with the layer's depth."""
    return 20 + 12 * depth


def _mds_figure(mds: Any, colors: Mapping[str, str]) -> Figure:
    """The layers in the MDS plane, a line per model through its layers, labels placed without overlaps."""
    frame = mds.to_frame()
    crowded = len(frame) > FULL_SIZE_FROM
    fig, ax = plt.subplots(figsize=(7.5, 6.0) if crowded else (5.5, 4.5))
    for model, group in frame.groupby("model", sort=False):
        group = group.sort_values("depth")
        color = colors.get(model, BASELINE_COLOR)
        ax.plot(group["dim_1"], group["dim_2"], "-", color=color, alpha=0.5)
        ax.scatter(group["dim_1"], group["dim_2"], color=color, s=_marker_area(group["depth"]),
                   label=model or "layers", zorder=3)
    ax.set_xlabel("MDS dimension 1")
    ax.set_ylabel("MDS dimension 2")
    ax.set_aspect("equal", adjustable="datalim")
    ax.margins(0.08)
    ax.set_title(f"Layers by 1 − {mds.measure}\nKruskal's stress-1 = {mds.stress:.3f}", fontsize=9)
    legend = ax.legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    radii = np.sqrt(_marker_area(frame["depth"]).to_numpy() / np.pi) + 1.0
    place_labels(ax, frame[["dim_1", "dim_2"]].to_numpy(), list(frame["layer"]),
                 colors=[colors.get(m, BASELINE_COLOR) for m in frame["model"]], marker_radius=radii, avoid=[legend])
    return fig


def _ranking_bars(ranking: Any, colors: Mapping[str, str]) -> str:
    frame = ranking.to_frame()
    fig, ax = plt.subplots(figsize=(max(5.0, 0.2 * len(frame) + 2), 3.5))
    positions = np.arange(len(frame))
    error = None
    if {"ci_low", "ci_high"} <= set(frame.columns):
        error = np.vstack([frame["score"] - frame["ci_low"], frame["ci_high"] - frame["score"]]).clip(min=0)
    ax.bar(positions, frame["score"], color=[colors.get(m, BASELINE_COLOR) for m in frame["model"]], yerr=error,
           capsize=2)
    ax.set_xticks(positions, frame["name"], rotation=60, ha="right", fontsize=7)
    ax.set_xlim(-0.7, len(frame) - 0.3)
    ceiling = getattr(ranking, "ceiling", None)
    if ceiling is not None:
        ax.axhspan(ceiling.lower, ceiling.upper, color="#bbbbbb", alpha=0.5, zorder=0,
                   label=f"noise ceiling ({ceiling.n_subjects} subjects)")
        ax.legend(fontsize=7, frameon=False, loc="upper right")
    ax.set_ylabel(f"{ranking.method} with reference")
    ax.set_title(f"Layers versus reference RDM “{ranking.reference}”", fontsize=9)
    ax.axhline(0, color="black", lw=0.5)
    return figure_to_data_uri(fig)


def _models_shown(*results: Any) -> list[str]:
    """Every model the results cover, in their order: the colour order when the caller gives none."""
    names = []
    for result in results:
        if result is None:
            continue
        models = getattr(result, "models", None)
        if models is None and hasattr(result, "to_frame"):
            models = result.to_frame()["model"]
        names += [str(m) for m in models]
    return list(dict.fromkeys(names))


def similarity_section(
    *,
    rdms: Mapping[str, Any] | None = None,
    cka: Any = None,
    rdm_similarity: Any = None,
    mds: Any = None,
    ranking: Any = None,
    order_by: str = "label",
    max_rdms: int = 12,
    title: str = "Representational similarity",
    intro: str = "",
    models: Sequence[str] | None = None,
) -> Section:
    """Build the similarity section from precomputed results (nothing is recomputed here).

    Parameters
    ----------
    rdms
        ``{name: analyses.RDM}``; shown as heatmaps with stimuli ordered by ``order_by``
        (when it is one of their descriptors), at most ``max_rdms`` of them.
    cka
        ``analyses.SimilarityMatrix`` of CKA across layers (and models).
    rdm_similarity
        ``analyses.SimilarityMatrix`` of RDM correlations across layers.
    mds
        ``analyses.MDSResult``: the layers placed by 1 - RDM correlation.
    ranking
        ``analyses.LayerRanking`` against a reference RDM.
    models
        Every model of the study, in its order: each model's colour in the MDS plot and the ranking
        bars (``reports.model_colors``), the same in every section given the same list. Default: the
        models of the results, in their order.

    Maps larger than 20 × 20 are drawn at full size (labels at 7 pt) in a scrollable view.
    """
    if all(v is None for v in (rdms, cka, rdm_similarity, mds, ranking)):
        raise ValueError("similarity_section needs at least one result (rdms, cka, rdm_similarity, mds or ranking)")
    colors = model_colors(list(models) if models is not None else _models_shown(cka, rdm_similarity, mds, ranking))
    items = []
    if rdms:
        first = next(iter(rdms.values()))
        items.append({
            "title": "Layer RDMs",
            "uri": _rdm_grid(rdms, order_by, max_rdms),
            "caption": f"Dissimilarity of every pair of {first.n_stimuli} stimuli"
            + (f", ordered by {order_by} (white lines: class boundaries)" if order_by in first.descriptors else "")
            + "; colours show each dissimilarity's percentile within its RDM (rank display, as in rsatoolbox).",
        })
    if cka is not None:
        items.append({
            "title": "CKA across layers",
            "uri": _matrix_heatmap(cka),
            "caption": f"{cka.measure} between every pair of layers; white lines separate models.",
            "full_size": len(cka.names) > FULL_SIZE_FROM,
        })
    if rdm_similarity is not None:
        items.append({
            "title": "RDM correlation across layers",
            "uri": _matrix_heatmap(rdm_similarity),
            "caption": f"{rdm_similarity.measure} (second-order similarity).",
            "full_size": len(rdm_similarity.names) > FULL_SIZE_FROM,
        })
    if mds is not None:
        items.append({
            "title": "Second-order RSA: MDS of the layer RDMs",
            "uri": figure_to_data_uri(_mds_figure(mds, colors)),
            "caption": "Metric MDS (classical-MDS start, fixed seed); lines follow each model's layers in order, "
            "markers grow with depth. Kruskal's stress-1 measures how far the plane's distances are from "
            "1 − similarity (0 = reproduced exactly; < 0.1 good, > 0.2 poor).",
        })
    if ranking is not None:
        shown = ranking.to_frame().sort_values("rank")
        columns = [c for c in ["rank", "model", "layer", "score", "ci_low", "ci_high"] if c in shown.columns]
        items.append({
            "title": "Layers versus the reference RDM",
            "uri": _ranking_bars(ranking, colors),
            "full_size": True,
            "table": table_html(shown[columns].head(10)),
            "caption": f"{ranking.method} between each layer's RDM and the reference"
            + ("; bars: bootstrap percentile intervals over stimuli." if "ci_low" in shown.columns else ".")
            + (f" Grey band: the reference's noise ceiling over its {ranking.ceiling.n_subjects} subjects (lower "
               f"{ranking.ceiling.lower:.2f}: each subject against the pooled others; upper "
               f"{ranking.ceiling.upper:.2f}: against all), the most a model can be expected to reach."
               if getattr(ranking, "ceiling", None) is not None else ""),
        })
    body = render_fragment("sections/similarity.html.j2", intro=intro, items=items)
    summary = "How the representational geometry changes across layers and models."
    return Section(title, body, summary=summary)
