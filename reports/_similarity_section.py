"""Report section for representational similarity: RDMs, CKA maps, RDM-MDS, reference ranking."""

from __future__ import annotations

from typing import Any, Mapping

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import scipy.stats
import seaborn as sns

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


def _matrix_heatmap(similarity: Any) -> str:
    k = len(similarity.names)
    size = min(14.0, max(4.0, 0.3 * k + 2))
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(similarity.values, cmap="magma", vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks(np.arange(k), similarity.names, rotation=90, fontsize=7 if k <= 30 else 5)
    ax.set_yticks(np.arange(k), similarity.names, fontsize=7 if k <= 30 else 5)
    if k <= 12:
        for i in range(k):
            for j in range(k):
                value = similarity.values[i, j]
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=6,
                        color="black" if value > 0.6 else "white")
    models = similarity.models
    for i in range(1, k):
        if models[i] != models[i - 1]:  # separate the blocks of different models
            ax.axhline(i - 0.5, color="white", lw=1.5)
            ax.axvline(i - 0.5, color="white", lw=1.5)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.02, label=similarity.measure)
    ax.set_title(f"{similarity.measure}, {similarity.n_stimuli} stimuli")
    return figure_to_data_uri(fig)


def _mds_plot(mds: Any) -> str:
    frame = mds.to_frame()
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    palette = sns.color_palette("tab10", n_colors=max(1, frame["model"].nunique()))
    for color, (model, group) in zip(palette, frame.groupby("model", sort=False)):
        group = group.sort_values("depth")
        ax.plot(group["dim_1"], group["dim_2"], "-", color=color, alpha=0.5)
        ax.scatter(group["dim_1"], group["dim_2"], color=color, s=20 + 12 * group["depth"], label=model or "layers", zorder=3)
        for _, row in group.iterrows():
            ax.annotate(row["layer"], (row["dim_1"], row["dim_2"]), fontsize=6, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("MDS dimension 1")
    ax.set_ylabel("MDS dimension 2")
    ax.set_aspect("equal", adjustable="datalim")
    ax.set_title(f"Layers by 1 − {mds.measure} (stress {mds.stress:.3f})", fontsize=9)
    ax.legend(fontsize=7, frameon=False)
    return figure_to_data_uri(fig)


def _ranking_bars(ranking: Any) -> str:
    frame = ranking.to_frame()
    fig, ax = plt.subplots(figsize=(max(5.0, 0.35 * len(frame) + 2), 3.5))
    positions = np.arange(len(frame))
    palette = dict(zip(frame["model"].unique(), sns.color_palette("tab10", n_colors=frame["model"].nunique())))
    colors = [palette[m] for m in frame["model"]]
    error = None
    if {"ci_low", "ci_high"} <= set(frame.columns):
        error = np.vstack([frame["score"] - frame["ci_low"], frame["ci_high"] - frame["score"]]).clip(min=0)
    ax.bar(positions, frame["score"], color=colors, yerr=error, capsize=2)
    ax.set_xticks(positions, frame["name"], rotation=60, ha="right", fontsize=7)
    ax.set_ylabel(f"{ranking.method} with reference")
    ax.set_title(f"Layers versus reference RDM “{ranking.reference}”", fontsize=9)
    ax.axhline(0, color="black", lw=0.5)
    return figure_to_data_uri(fig)


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
    """
    if all(v is None for v in (rdms, cka, rdm_similarity, mds, ranking)):
        raise ValueError("similarity_section needs at least one result (rdms, cka, rdm_similarity, mds or ranking)")
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
        })
    if rdm_similarity is not None:
        items.append({
            "title": "RDM correlation across layers",
            "uri": _matrix_heatmap(rdm_similarity),
            "caption": f"{rdm_similarity.measure} (second-order similarity).",
        })
    if mds is not None:
        items.append({
            "title": "Second-order RSA: MDS of the layer RDMs",
            "uri": _mds_plot(mds),
            "caption": "Metric MDS (classical-MDS start, fixed seed); lines follow each model's layers in order, "
            "markers grow with depth.",
        })
    if ranking is not None:
        shown = ranking.to_frame().sort_values("rank")
        columns = [c for c in ["rank", "model", "layer", "score", "ci_low", "ci_high"] if c in shown.columns]
        items.append({
            "title": "Layers versus the reference RDM",
            "uri": _ranking_bars(ranking),
            "table": table_html(shown[columns].head(10)),
            "caption": f"{ranking.method} between each layer's RDM and the reference"
            + ("; bars: bootstrap percentile intervals over stimuli." if "ci_low" in shown.columns else "."),
        })
    body = render_fragment("sections/similarity.html.j2", intro=intro, items=items)
    summary = "How the representational geometry changes across layers and models."
    return Section(title, body, summary=summary)
