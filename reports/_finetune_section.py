"""The fine-tuning section: a frozen encoder's linear probe against fine-tuning its last block or all of it."""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt
import numpy as np

from reports._render import figure_to_data_uri, render_fragment, table_html
from reports._report import Section

__all__ = ["finetune_section"]

# The adaptations in the order they train more of the encoder, with their line styles.
_STYLES = {"linear probe": ("#1b9e77", "o"), "last block": ("#d95f02", "s"), "full": ("#7570b3", "^")}
_PANELS_PER_ROW = 3


def _figure(comparison: Any) -> str:
    summary = comparison.summary()
    frame = comparison.to_frame()
    models = list(dict.fromkeys(summary["model"]))
    n_rows = int(np.ceil(len(models) / _PANELS_PER_ROW))
    n_cols = min(len(models), _PANELS_PER_ROW)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(3.0 * n_cols + 0.4, 2.5 * n_rows), squeeze=False,
                             sharey=True)
    for ax, model in zip(axes.flat, models):
        for adaptation, rows in summary[summary["model"] == model].groupby("adaptation", sort=False):
            colour, marker = _STYLES.get(adaptation, ("0.3", "o"))
            ax.errorbar(rows["labels_per_class"], rows["accuracy_mean"], yerr=rows["accuracy_std"].fillna(0.0),
                        color=colour, marker=marker, ms=4, capsize=2, label=adaptation)
            seeds = frame[(frame["model"] == model) & (frame["adaptation"] == adaptation)]
            ax.scatter(seeds["labels_per_class"], seeds["accuracy"], s=6, color=colour, alpha=0.3)
        ax.axhline(comparison.chance, color="grey", ls=":", lw=1)
        ax.set_xscale("log")
        ax.set_title(model, fontsize=9)
        ax.set_xlabel("labels per class", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in axes.flat[len(models):]:
        ax.axis("off")
    for ax in axes[:, 0]:
        ax.set_ylabel("test accuracy", fontsize=8)
    axes.flat[0].legend(fontsize=7, frameon=False, loc="lower right")
    fig.tight_layout()
    return figure_to_data_uri(fig)


def _cells(comparison: Any):
    summary = comparison.summary()
    cells = [f"{m:.3f} ± {s:.3f}" if np.isfinite(s) else f"{m:.3f}"
             for m, s in zip(summary["accuracy_mean"], summary["accuracy_std"])]
    table = summary.assign(accuracy=cells).pivot_table(index=["model", "adaptation"], columns="labels_per_class",
                                                       values="accuracy", aggfunc="first", sort=False)
    table.columns = [f"{budget} per class" for budget in table.columns]
    return table.reset_index()


def finetune_section(comparison: Any, *, title: str = "Fine-tuning against linear read-outs", notes: str = "") -> Section:
    """Build the section from a ``probe.study.FinetuneComparison``.

    Returns
    -------
    Section
        One panel per model: accuracy on the unseen classes against labels per class for the linear
        probe, the last block fine-tuned and everything fine-tuned (mean ± sd over seeds, single seeds as
        dots, chance dotted); the table of means ± sd, the gains over the probe and what each trained.
    """
    frame = comparison.to_frame()
    if frame.empty:
        raise ValueError("finetune_section needs a comparison with at least one row")
    pretrain = ", ".join(map(str, comparison.pretrain_classes))
    probe = ", ".join(map(str, comparison.probe_classes))
    intro = (f"Each encoder was pretrained on classes {pretrain} of {comparison.dataset}, then adapted to classes "
             f"{probe}, which it never saw, with a few labelled images per class: a linear probe on its frozen "
             "features, its last block fine-tuned with a new linear head, or all of it fine-tuned. Scores are on "
             f"the unseen classes' whole test split (chance {comparison.chance:.2f}).")
    n_classes = len(comparison.probe_classes)
    short = frame[frame["n_train"] < frame["labels_per_class"] * n_classes].drop_duplicates("labels_per_class")
    for budget, n_train in zip(short["labels_per_class"], short["n_train"]):
        intro += (f" The training split has fewer than {budget} images of some probe classes: that budget uses "
                  f"{n_train} images in all ({n_train / n_classes:.0f} per class on average).")
    trained = frame.drop_duplicates(["model", "adaptation"])[["model", "adaptation", "trained"]]
    gains = comparison.gains()
    items = [
        dict(title="Accuracy on unseen classes by labels per class", uri=_figure(comparison),
             caption="Mean ± sd over seeds (the labelled draw and the new head); dots: single seeds; dotted: chance.",
             table=table_html(_cells(comparison))),
        dict(title="Gain over the linear probe", caption="Mean accuracy of each fine-tuning minus the probe's.",
             table=table_html(gains, float_format="{:+.3f}")),
        dict(title="What each adaptation trained", table=table_html(trained)),
    ]
    body = render_fragment("sections/figures.html.j2", items=items, intro=intro + (f" {notes}" if notes else ""))
    best = comparison.summary().sort_values("accuracy_mean").iloc[-1]
    summary = f"best: {best['model']} {best['adaptation']} at {best['labels_per_class']} per class, {best['accuracy_mean']:.3f}"
    return Section(title, body, summary=summary)
