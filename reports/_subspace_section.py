"""Report section for subspaces: PCA vs linear autoencoders (reconstruction, angles, axes)."""

from __future__ import annotations

from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
from matplotlib.ticker import MaxNLocator

from reports._render import figure_to_data_uri, line_plot_to_data_uri, render_fragment, table_html
from reports._report import Section

__all__ = ["subspace_section"]

_METHOD_LABELS = {
    "pca": "PCA",
    "linear-ae": "linear AE",
    "linear-ae-l2": "linear AE, uniform L2",
    "linear-ae-nonuniform": "linear AE, non-uniform L2",
}


def _label(method: str) -> str:
    return _METHOD_LABELS.get(method, method)


def _set_k_axis(ax: Any, ks: Sequence[int]) -> None:
    """Ticks at the ks used, and room on either side, also when there is a single k."""
    ks = sorted({int(k) for k in ks})
    margin = max(0.5, 0.06 * (ks[-1] - ks[0]))
    ax.set_xlim(ks[0] - margin, ks[-1] + margin)
    if len(ks) <= 12:
        ax.set_xticks(ks)
    else:  # too many to label each: integer ticks
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _reconstruction_figure(frame) -> str:
    fig, ax = plt.subplots(figsize=(4.6, 3.4))
    for method, rows in frame.groupby("method", sort=False):
        ax.plot(rows["k"], rows["unexplained_variance"], marker="o", label=_label(method),
                linestyle="--" if method == "pca" else "-", lw=2.5 if method == "pca" else 1.2)
    _set_k_axis(ax, frame["k"])
    ax.set_ylim(0, 1.12 * max(frame["unexplained_variance"].max(), 1e-12))
    return line_plot_to_data_uri(fig, ax, "code size k", "unexplained variance")


def _angles_figure(comparison: Any, k: int) -> str:
    fig, ax = plt.subplots(figsize=(4.6, 3.4))
    floor = 1e-12
    for (angle_k, method), angles in comparison.angles.items():
        if angle_k == k:
            ax.plot(np.arange(1, len(angles) + 1), np.maximum(np.degrees(angles), floor), marker="o",
                    label=_label(method))
    ax.set_yscale("log")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return line_plot_to_data_uri(fig, ax, "principal angle index", f"angle to PCA's subspace (degrees, floor {floor:g})")


def _alignment_figure(frame) -> str:
    autoencoders = frame[frame["method"] != "pca"]
    fig, axes = plt.subplots(1, 2, figsize=(8.4, 3.4), sharey=True)
    floor = 1e-12
    for ax, column, title in zip(axes, ["column_alignment_error", "singular_vector_alignment_error"],
                                 ["decoder columns", "decoder's left singular vectors"]):
        for method, rows in autoencoders.groupby("method", sort=False):
            ax.plot(rows["k"], np.maximum(rows[column], floor), marker="o", label=_label(method))
        ax.set_yscale("log")
        ax.set_xlabel("code size k")
        _set_k_axis(ax, frame["k"])
        ax.set_title(title, fontsize=9)
    axes[0].set_ylabel("alignment error with PCA's axes")
    axes[1].legend(fontsize=7)
    sns.despine(fig)
    return figure_to_data_uri(fig)


def _summary_line(comparison: Any) -> str:
    k = max(comparison.ks)
    metrics = comparison.metrics
    rows = metrics[(metrics["k"] == k) & (metrics["method"] == "linear-ae")]
    source = comparison.source or "data"
    if rows.empty:
        return f"{source}: PCA at k={k}"
    return f"{source}: linear AE subspace distance to PCA at k={k} = {rows['subspace_distance'].iloc[0]:.1e}"


def subspace_section(comparisons: Any | Sequence[Any], title: str = "Subspaces: PCA vs linear autoencoders") -> Section:
    """Build the section from one or several ``analyses.SubspaceComparison`` results.

    For each comparison (raw pixels, a recorded layer...): reconstruction error vs k, the
    principal angles to PCA's subspace at the largest k, the axis-alignment errors vs k, and the
    table of every measure at the largest k.
    """
    if not isinstance(comparisons, (list, tuple)):
        comparisons = [comparisons]
    if not comparisons:
        raise ValueError("subspace_section needs at least one SubspaceComparison")
    blocks = []
    for comparison in comparisons:
        frame = comparison.to_frame()
        k = max(comparison.ks)
        table = frame[frame["k"] == k].drop(columns=["source", "n_stimuli", "n_units"])
        table = table.assign(method=table["method"].map(_label))
        table.columns = [name.replace("_", " ") for name in table.columns]  # headers wrap between words
        blocks.append(dict(
            source=comparison.source or "data", n_stimuli=comparison.n_stimuli, n_units=comparison.n_units, k=k,
            reconstruction=_reconstruction_figure(frame), angles=_angles_figure(comparison, k),
            alignment=_alignment_figure(frame), table=table_html(table, float_format="{:.3g}"),
        ))
    body = render_fragment("sections/subspaces.html.j2", blocks=blocks)
    summary = "; ".join(_summary_line(c) for c in comparisons)
    return Section(title, body, summary=summary)
