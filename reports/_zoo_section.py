"""The Zoo section: per trained model, its architecture, training curve, final metrics and reconstructions."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from reports._render import figure_to_data_uri, image_grid, image_to_data_uri, render_fragment, table_html
from reports._report import Section

__all__ = ["ModelSummary", "Reconstructions", "zoo_section"]

# The evaluation curve drawn beside the training loss: the first of these a log has.
_HEADLINE_METRICS = ("test_accuracy", "knn_accuracy", "recon_ratio", "recon_mse")


@dataclass
class Reconstructions:
    """Inputs beside a model's reconstructions, in display space.

    Attributes
    ----------
    inputs, outputs
        Arrays of shape (n, H, W) or (n, H, W, C), values in [0, 1].
    masks
        For masked autoencoders: array of shape (n, H, W), 1 where the input was hidden; else None.
    """

    inputs: np.ndarray
    outputs: np.ndarray
    masks: np.ndarray | None = None


@dataclass
class ModelSummary:
    """What the Zoo section shows of one trained model (computed beforehand, never here).

    Attributes
    ----------
    name
        Run name (shown escaped).
    family
        The zoo family: supervised, autoencoder, mae or contrastive.
    dataset
        Name of the training dataset.
    architecture
        A printable architecture summary, e.g. ``str(model)``.
    n_parameters
        Number of trainable parameters.
    history
        The per-epoch training log.
    metrics
        Final evaluation metrics, name -> value.
    train_seconds
        Wall time of the training.
    reconstructions
        Inputs and reconstructions for autoencoders and MAE.
    """

    name: str
    family: str
    dataset: str
    architecture: str
    n_parameters: int
    history: pd.DataFrame
    metrics: dict[str, Any] = field(default_factory=dict)
    train_seconds: float | None = None
    reconstructions: Reconstructions | None = None


def _curve_uri(history: pd.DataFrame, title: str) -> str | None:
    """Training loss and the headline evaluation metric against the epoch; None without a log or with a
    single epoch (one point is not a curve; the metrics table gives its values)."""
    if "epoch" not in history or "train_loss" not in history or history["epoch"].nunique() < 2:
        return None
    panels = ["train_loss"] + [m for m in _HEADLINE_METRICS if m in history and history[m].notna().any()][:1]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.4 * len(panels), 2.5), squeeze=False)
    for ax, column in zip(axes[0], panels):
        logged = history[["epoch", column]].dropna()
        ax.plot(logged["epoch"], logged[column], marker="o", color=sns.color_palette()[0])
        ax.set_title(column.replace("_", " "), fontsize=10)
        ax.set_xlabel("epoch")
    fig.suptitle(title, fontsize=10)
    fig.subplots_adjust(wspace=0.3, top=0.8)
    return figure_to_data_uri(fig)


def _reconstruction_uri(recon: Reconstructions) -> str:
    rows = [recon.inputs]
    if recon.masks is not None:
        masked = np.array(recon.inputs, dtype=np.float64, copy=True)
        hidden = recon.masks.astype(bool)
        masked[hidden] = 0.5  # hidden patches shown as mid-grey
        rows.append(masked)
    rows.append(recon.outputs)
    n = len(recon.inputs)
    stacked = np.concatenate([np.clip(np.asarray(r, dtype=np.float64), 0, 1) for r in rows])
    grid = image_grid(stacked, n_columns=n, padding=1)
    height = stacked.shape[1]
    return image_to_data_uri(grid, scale=max(1, 48 // height))


def _metrics_table(summary: ModelSummary):
    rows = [{"metric": k, "value": v} for k, v in summary.metrics.items() if isinstance(v, (int, float, np.number))]
    if summary.train_seconds is not None:
        rows.append({"metric": "training time (s)", "value": summary.train_seconds})
    return table_html(pd.DataFrame(rows)) if rows else None


def zoo_section(summaries: list[ModelSummary]) -> list[Section]:
    """Build the Zoo section from trained models' summaries.

    Parameters
    ----------
    summaries
        One ``ModelSummary`` per trained model, in display order.

    Returns
    -------
    list of Section
        A single section with one card per model.
    """
    overview = pd.DataFrame(
        [
            {
                "model": s.name,
                "family": s.family,
                "dataset": s.dataset,
                "parameters": s.n_parameters,
                "epochs": len(s.history),
                "train s": s.train_seconds,
                **{k: v for k, v in s.metrics.items() if isinstance(v, (int, float, np.number))},
            }
            for s in summaries
        ]
    )
    cards = []
    for s in summaries:
        recon_caption = None
        if s.reconstructions is not None:
            recon_caption = "Top: inputs. " + (
                "Middle: the masked input the encoder saw (grey = hidden). " if s.reconstructions.masks is not None else ""
            ) + "Bottom: reconstructions."
        cards.append(
            {
                "summary": s,
                "curve": _curve_uri(s.history, f"{s.name}: training"),
                "metrics": _metrics_table(s),
                "recon": _reconstruction_uri(s.reconstructions) if s.reconstructions is not None else None,
                "recon_caption": recon_caption,
            }
        )
    body = render_fragment("sections/zoo.html.j2", overview=table_html(overview), cards=cards)
    return [Section("Zoo", body, summary=f"{len(summaries)} models trained; per model its architecture, "
                    "training curve, final metrics and, for autoencoders, reconstructions.")]
