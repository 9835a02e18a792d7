"""The masked language models' section: masked-token accuracy against the unigram baseline, per mask ratio."""

from __future__ import annotations

from typing import Any

import pandas as pd

from reports._render import figure_to_data_uri, render_fragment, table_html
from reports._report import Section

__all__ = ["masked_lm_section"]


def _ratio_figure(frame: pd.DataFrame) -> str:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.6, 3.4))
    ratios = frame["mask_ratio"] * 100
    ax.plot(ratios, frame["masked_accuracy_at_15"] * 100, "o-", label="masked accuracy at 15 % masking")
    ax.plot(ratios, frame["masked_accuracy"] * 100, "s--", label="masked accuracy at its own ratio")
    ax.plot(ratios, frame["unigram_accuracy_at_15"] * 100, ":", color="grey", label="unigram baseline (15 %)")
    ax.set_xlabel("mask ratio in training (%)")
    ax.set_ylabel("accuracy on masked tokens (%)")
    ax.legend(fontsize=8, frameon=False)
    ax.grid(alpha=0.3)
    return figure_to_data_uri(fig)


def masked_lm_section(sweep: Any, *, title: str = "Masked language models: mask ratio", notes: str = "") -> Section:
    """Build the section of a masked-LM mask-ratio sweep (``probe.study.masked_lm_ratio_sweep``).

    Parameters
    ----------
    sweep
        A result whose ``to_frame()`` has one row per ratio with ``mask_ratio``, ``masked_accuracy``
        (at the model's own ratio), ``masked_accuracy_at_15`` and ``unigram_accuracy_at_15`` (every
        model on the same 15 % masks, and always guessing the most frequent word on them).
    title, notes
        The heading and a first paragraph.

    Returns
    -------
    Section
        A line chart of the accuracies against the ratio and the table.
    """
    frame = sweep.to_frame()
    needed = {"mask_ratio", "masked_accuracy", "masked_accuracy_at_15", "unigram_accuracy_at_15"}
    if frame.empty or not needed <= set(frame.columns):
        raise ValueError(f"masked_lm_section needs one row per ratio with columns {sorted(needed)}")
    shown = frame.drop(columns=[c for c in ("run_dir",) if c in frame]).round(4)
    best = frame.loc[frame["masked_accuracy_at_15"].idxmax()]
    caption = ("Every model is also scored on the same 15 % masks (BERT's ratio), so the ratios compare on one test; "
               "the baseline always guesses the corpus's most frequent word.")
    body = render_fragment("sections/figures.html.j2", intro=notes, items=[
        {"title": "Accuracy on masked tokens", "uri": _ratio_figure(frame), "caption": caption},
        {"title": "Per ratio", "table": table_html(shown)},
    ])
    ratio_to_baseline = best["masked_accuracy_at_15"] / max(best["unigram_accuracy_at_15"], 1e-12)
    summary = (f"best at 15 % masking: ratio {best['mask_ratio']:g}, {best['masked_accuracy_at_15']:.1%} "
               f"({ratio_to_baseline:.1f}x the unigram baseline)")
    return Section(title, body, summary=summary)
