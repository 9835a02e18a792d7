"""Report section for transfer: probe accuracy per layer and model, label efficiency, MAE mask ratio."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns

from reports._colors import BASELINE_COLOR, model_colors, model_of
from reports._render import figure_to_data_uri, line_plot_to_data_uri, render_fragment, table_html
from reports._report import Section

__all__ = ["transfer_section"]


def _layer_heatmap(layer_transfer: Any) -> str:
    frame = layer_transfer.to_frame()
    table = frame.pivot(index="depth", columns="model", values="accuracy")
    names = frame.pivot(index="depth", columns="model", values="layer")
    annotations = np.where(table.notna(), table.map(lambda v: f"{v:.2f}"), "")
    annotations = np.char.add(np.char.add(annotations.astype(str), "\n"), names.fillna("").astype(str).values)
    fig, ax = plt.subplots(figsize=(1.9 * table.shape[1] + 2.0, 0.55 * table.shape[0] + 1.5))
    sns.heatmap(table, ax=ax, vmin=0, vmax=1, cmap="viridis", annot=annotations, fmt="", annot_kws={"fontsize": 6},
                cbar_kws={"label": "probe accuracy"})
    ax.set_ylabel("layer (position in the model)")
    ax.set_xlabel("")
    return figure_to_data_uri(fig)


def _layer_curves(layer_transfer: Any, colors: Mapping[str, str]) -> str:
    frame = layer_transfer.to_frame()
    fig, ax = plt.subplots(figsize=(4.8, 3.4))
    for model, rows in frame.groupby("model", sort=False):
        color = colors.get(model, BASELINE_COLOR)
        ax.plot(rows["depth"], rows["accuracy"], marker="o", color=color, label=f"{model} (probe)")
        if rows["knn_accuracy"].notna().any():
            ax.plot(rows["depth"], rows["knn_accuracy"], marker="x", ls=":", color=color, label=f"{model} (kNN)")
    return line_plot_to_data_uri(fig, ax, "layer (position in the model)", "test accuracy", legend_fontsize=6)


def _feature_colors(feature_names: Sequence[str], colors: Mapping[str, str]) -> dict[str, str]:
    """Each feature set in its model's colour; baselines (no model's features) in black."""
    return {name: colors.get(model_of(name, list(colors)), BASELINE_COLOR) for name in feature_names}


def _efficiency_figure(label_efficiency: Any, colors: Mapping[str, str]) -> str:
    summary = label_efficiency.summary()
    feature_colors = _feature_colors(list(summary["features"].unique()), colors)
    fig, ax = plt.subplots(figsize=(4.8, 3.4))
    for name, rows in summary.groupby("features", sort=False):
        rows = rows.sort_values("labels_per_class")
        ax.errorbar(rows["labels_per_class"], rows["accuracy_mean"], yerr=rows["accuracy_sd"], marker="o",
                    capsize=2, label=name, color=feature_colors[name], ls="--" if "pixel" in name.lower() else "-")
    ax.set_xscale("log")
    return line_plot_to_data_uri(fig, ax, "labels per class (log)", "probe test accuracy (mean ± sd over seeds)")


def _models_shown(layer_transfer: Any, label_efficiency: Any) -> list[str]:
    """The colour order when the caller gives none: the probed models, then the label-efficiency feature
    sets that belong to none of them (named "<model> encoder", "<model> · <layer>"; "raw pixels" is a baseline)."""
    models = [] if layer_transfer is None else list(dict.fromkeys(layer_transfer.to_frame()["model"]))
    if label_efficiency is not None:
        for name in label_efficiency.summary()["features"].unique():
            if model_of(name, models) is None and "pixel" not in name.lower():
                models.append(name.split(" · ")[0].removesuffix(" encoder"))
    return list(dict.fromkeys(models))


def _mask_ratio_figure(mask_ratio: Any) -> str:
    """Mean ± sd over seeds per ratio, each seed's value a faint dot (a sweep of one seed: its values)."""
    frame = mask_ratio.to_frame()
    frame = frame if "seed" in frame else frame.assign(seed=0)
    fig, ax = plt.subplots(figsize=(4.6, 3.4))
    for column, marker, label in (("probe_accuracy", "o", "linear probe"), ("knn_accuracy", "s", "kNN")):
        stats = frame.groupby("mask_ratio")[column].agg(["mean", "std"]).fillna(0.0)
        line = ax.errorbar(stats.index, stats["mean"], yerr=stats["std"], marker=marker, capsize=2, label=label)
        if frame["seed"].nunique() > 1:
            ax.scatter(frame["mask_ratio"], frame[column], s=8, alpha=0.35, color=line[0].get_color())
    ax.axvline(0.75, color="grey", ls=":", lw=1)
    ax.text(0.75, ax.get_ylim()[0], " MAE paper: 75 %", fontsize=7, color="grey", va="bottom")
    n_seeds = frame["seed"].nunique()
    ylabel = f"test accuracy (mean ± sd, {n_seeds} seeds)" if n_seeds > 1 else "test accuracy"
    return line_plot_to_data_uri(fig, ax, "MAE mask ratio", ylabel)


def transfer_section(
    layer_transfer: Any = None,
    label_efficiency: Any = None,
    mask_ratio: Any = None,
    *,
    title: str = "Transfer: linear probes on frozen features",
    notes: str = "",
    models: Sequence[str] | None = None,
) -> Section:
    """Build the section from transfer results; each part is optional but one is required.

    Parameters
    ----------
    layer_transfer
        ``analyses.LayerTransfer``: a layers x models heatmap and per-model accuracy curves.
    label_efficiency
        ``analyses.LabelEfficiency``: accuracy vs labels per class, mean ± sd over seeds.
    mask_ratio
        Anything whose ``to_frame()`` has columns mask_ratio, probe_accuracy, knn_accuracy and
        optionally seed (``probe.study.MaskRatioSweep``; its ``summary()`` is the table shown).
    title
        Section title.
    notes
        One paragraph of plain text shown under the introduction (e.g. what was trained).
    models
        Every model of the study, in its order: each model's colour in the curves
        (``reports.model_colors``), the same in every section given the same list. A label-efficiency
        feature set takes the colour of the model that starts its name ("simclr encoder": simclr).
        Default: the models of the results, in their order.
    """
    if layer_transfer is None and label_efficiency is None and mask_ratio is None:
        raise ValueError("transfer_section needs at least one of layer_transfer, label_efficiency, mask_ratio")
    colors = model_colors(list(models) if models is not None else _models_shown(layer_transfer, label_efficiency))
    items = []
    summary_parts = []
    if layer_transfer is not None:
        frame = layer_transfer.to_frame()
        items.append(dict(title="Probe accuracy per layer and model", uri=_layer_heatmap(layer_transfer),
                          caption="Multinomial logistic regression on each layer's frozen features; rows are layer "
                                  "positions, cells show accuracy and the layer's name."))
        items.append(dict(title="Accuracy vs depth", uri=_layer_curves(layer_transfer, colors),
                          caption="Linear probe (solid) and cosine kNN (dotted) per layer.",
                          table=table_html(frame[["model", "layer", "accuracy", "knn_accuracy", "C", "n_units"]],
                                           float_format="{:.3g}")))
        best = frame.loc[frame["accuracy"].idxmax()]
        summary_parts.append(f"best layer {best['model']}:{best['layer']} at {best['accuracy']:.3f}")
    if label_efficiency is not None:
        summary = label_efficiency.summary()
        items.append(dict(title="Label efficiency", uri=_efficiency_figure(label_efficiency, colors),
                          caption="Probe trained on n labelled stimuli per class (seeded draws), scored on the "
                                  "whole test split.",
                          table=table_html(summary, float_format="{:.3g}")))
    if mask_ratio is not None:
        table = mask_ratio.summary() if hasattr(mask_ratio, "summary") else mask_ratio.to_frame()
        items.append(dict(title="MAE mask ratio", uri=_mask_ratio_figure(mask_ratio),
                          caption="Encoders pretrained with each mask ratio, then probed on frozen features; "
                                  "bars: standard deviation over seeds, dots: single seeds.",
                          table=table_html(table, float_format="{:.3g}")))
    body = render_fragment("sections/transfer.html.j2", items=items, notes=notes)
    return Section(title, body, summary="; ".join(summary_parts))
