"""The colorization section: per model, a few stimuli as grey input, prediction and truth, with their colour error."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from reports._render import figure_to_data_uri, render_fragment, table_html
from reports._report import Section

__all__ = ["colorization_section"]

_ROWS = ("grey input", "prediction", "truth")


def _figure(examples: Any) -> str:
    """Three rows (grey input, prediction, truth) by one column per image shown."""
    import matplotlib.pyplot as plt

    n = len(examples.indices)
    fig, axes = plt.subplots(3, n, figsize=(min(1.2 * n + 1.0, 9.0), 3.9), squeeze=False)
    for column in range(n):
        for row, (images, cmap) in enumerate([(examples.grey, "gray"), (examples.predicted, None),
                                              (examples.truth, None)]):
            ax = axes[row, column]
            ax.imshow(images[column], cmap=cmap, vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[1, column].set_title(f"{examples.ab_error[column]:.1f}\nvs grey {examples.grey_ab_error[column]:.1f}",
                                  fontsize=6.5, pad=2)
        axes[0, column].set_title(f"#{int(examples.indices[column])}", fontsize=7, pad=2)
    for row, label in enumerate(_ROWS):
        axes[row, 0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
    fig.subplots_adjust(wspace=0.08, hspace=0.45)
    return figure_to_data_uri(fig)


def colorization_section(examples: Sequence[Any], *, title: str = "Colorization") -> Section:
    """Build the section from ``ColorizationExamples`` (``probe.study._colorization_step``), one card per model.

    Returns
    -------
    Section
        Per model: a figure of its grey inputs, predictions and truths (each prediction titled with its ab
        error against grey's), and a table of the errors of the images shown.
    """
    if not examples:
        raise ValueError("colorization_section needs at least one ColorizationExamples")
    items = []
    for example in examples:
        metrics = example.metrics
        items.append({
            "title": example.model, "uri": _figure(example), "table": table_html(example.to_frame(), "{:.2f}"),
            "caption": "Rows: the grey input (the lightness the network sees), its colorization, the true image. "
                       "Above each prediction: its mean ab error per pixel (Lab units) vs that of predicting grey. "
                       f"Over all {example.n_stimuli} stimuli: ab error {metrics['ab_error']:.2f} vs grey "
                       f"{metrics['grey_ab_error']:.2f} (ratio {metrics['ab_error_ratio']:.3f}; below 1 is better than "
                       f"grey), most likely colour bin right for {metrics['bin_accuracy']:.1%} of pixels."})
    intro = ("A colorization network sees only an image's lightness and predicts its colour (a and b of CIE Lab). "
             "Predicting grey everywhere is the baseline a useful model must beat; the usual failure is a desaturated, "
             "brownish guess that beats it by little.")
    body = render_fragment("sections/figures.html.j2", intro=intro, items=items)
    summary = "; ".join(f"{e.model}: ab error {e.metrics['ab_error']:.1f} vs grey {e.metrics['grey_ab_error']:.1f}"
                        for e in examples)
    return Section(title, body, summary=summary)
