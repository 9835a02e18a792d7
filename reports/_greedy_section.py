"""The greedy-pretraining section: test accuracy by labels per class for greedy and end-to-end MLPs, and each
greedy layer's reconstruction."""

from __future__ import annotations

from typing import Any

import numpy as np

from reports._render import figure_to_data_uri, render_fragment, table_html
from reports._report import Section

__all__ = ["greedy_section"]


def _accuracy_figure(result: Any) -> str:
    """Test accuracy vs labels per class (log x): a line of mean ± sd per method, the seeds as faint dots."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.0, 3.2))
    summary = result.summary()
    methods = list(summary.groupby("method", sort=False))
    for i, (colour, (method, rows)) in enumerate(zip(("C0", "C1"), methods)):
        dodge = 1.04 ** (i - (len(methods) - 1) / 2)  # the methods side by side at each budget (log x)
        rows = rows.sort_values("labels_per_class")
        ax.errorbar(rows["labels_per_class"] * dodge, rows["accuracy_mean"], yerr=rows["accuracy_sd"], color=colour,
                    marker="o", markersize=4, capsize=3, label=method)
        runs = result.frame[result.frame["method"] == method]
        ax.scatter(runs["labels_per_class"] * dodge, runs["accuracy"], color=colour, alpha=0.4, s=12, linewidths=0)
    ax.set_xscale("log")
    ax.set_xlabel("labels per class")
    ax.set_ylabel("test accuracy")
    ax.legend(fontsize=8, frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    return figure_to_data_uri(fig)


def _reconstruction_figure(result: Any) -> str:
    """Each greedy layer's reconstruction error ratio: one dot per seed, and the mean."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.0, 3.0))
    layers = result.reconstruction
    jitter = np.linspace(-0.08, 0.08, max(layers["seed"].nunique(), 1))
    offsets = dict(zip(sorted(layers["seed"].unique()), jitter))
    ax.scatter(layers["layer"] + layers["seed"].map(offsets), layers["ratio"], color="C0", alpha=0.4, s=14,
               linewidths=0, label="one seed")
    means = layers.groupby("layer")["ratio"].mean()
    ax.plot(means.index, means.values, color="C0", marker="_", markersize=16, markeredgewidth=2, label="mean")
    ax.axhline(1.0, color="0.5", linestyle="--", linewidth=1, label="mean code")
    widths = layers.drop_duplicates("layer").set_index("layer")["width"]
    ax.set_xticks(list(widths.index), [f"{layer}\n({width} units)" for layer, width in widths.items()])
    ax.set_xlabel("greedy layer")
    ax.set_ylabel("reconstruction error ratio")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=7, frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    return figure_to_data_uri(fig)


def greedy_section(result: Any, *, title: str = "Greedy layer-wise pretraining") -> Section:
    """Build the section from a ``probe.study.GreedyLayerwiseResult``.

    Returns
    -------
    Section
        Test accuracy by labels per class for both methods, each greedy layer's reconstruction error
        ratio, and the tables of ``result.summary()`` and ``result.difference()``.
    """
    widths = "-".join(str(w) for w in result.widths)
    n_seeds = result.frame["seed"].nunique()
    items = [
        {"title": "Test accuracy by labels per class", "uri": _accuracy_figure(result),
         "caption": f"Mean ± sd over {n_seeds} seed{'s' if n_seeds != 1 else ''} (faint dots: each seed). "
                    "The rightmost points use every training label."},
        {"title": "Reconstruction of each greedy layer", "uri": _reconstruction_figure(result),
         "caption": "Each layer's autoencoder error on the codes it was trained on, over the error of predicting every "
                    "code by its mean (dashed: 1; below it the layer keeps something of its input)."},
        {"title": "Accuracy by method and budget", "table": table_html(result.summary())},
        {"title": "Greedy minus end to end, paired by seed", "table": table_html(result.difference())},
    ]
    intro = (f"An MLP with hidden layers {widths} on {result.dataset}: its layers pretrained greedily, each as an "
             f"autoencoder of the codes below, on {result.n_pretrain} unlabelled training images, then fine-tuned end "
             "to end on the labelled images; against the same MLP trained end to end from random weights on the same "
             "labels, with the same optimiser, steps and minibatch order.")
    body = render_fragment("sections/figures.html.j2", intro=intro, items=items)
    difference = result.difference()
    summary = "; ".join(f"{row.budget} labels/class: {row.difference_mean:+.3f} ± {row.difference_sd:.3f}"
                        for row in difference.itertuples())
    return Section(title, body, summary="greedy minus end to end: " + summary)
