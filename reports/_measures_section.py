"""Report section comparing similarity measures: the maps with a measure selector, where the measures
disagree, layer identification across seeds and each cross-model score against the seed-to-seed ceiling."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from reports._colors import BASELINE_COLOR, model_colors
from reports._render import figure_to_data_uri, render_fragment, table_html
from reports._report import Section
from reports._similarity_section import FULL_SIZE_FROM, _matrix_heatmap

__all__ = ["KORNBLITH_LAYER_IDENTIFICATION", "KORNBLITH_SYMMETRIZED", "measures_section"]

# Layer identification reported by Kornblith et al. 2019 (Table 2: ten 10-layer CNNs on CIFAR-10), for the measures
# scored as ours are: their RBF CKA at 0.2, 0.4 and 0.8 x the median distance (the registry's rbf-cka, at 0.5 x, is
# shown against 0.4 x), the mean squared CCA, SVCCA.
KORNBLITH_LAYER_IDENTIFICATION = {"linear-cka": 0.993, "rbf-cka": 0.991, "rbf-cka-0.2": 0.806, "rbf-cka-0.4": 0.991,
                                  "rbf-cka-0.8": 0.993, "cca": 0.106, "svcca": 0.151}
# Their PWCCA and regression, scored on both directions summed (S + S^T, our "both directions" column).
KORNBLITH_SYMMETRIZED = {"pwcca": 0.111, "regression": 0.454}


def _map_figure(matrix: Any, kind: str, low: float, high: float) -> str:
    """One measure's layer x layer map; bright means alike for similarities and distances alike."""
    values = np.asarray(matrix.values)
    vmin, vmax = (low, high) if np.isfinite([low, high]).all() else (values.min(), values.max())
    return _matrix_heatmap(matrix, cmap="magma" if kind == "similarity" else "magma_r", vmin=vmin, vmax=vmax,
                           label=f"{matrix.measure} ({kind})")


def _agreement_figure(disagreement: Any) -> str:
    frame = disagreement.agreement
    k = len(frame)
    fig, ax = plt.subplots(figsize=(0.45 * k + 3, 0.45 * k + 2.2))
    image = ax.imshow(frame.to_numpy(), cmap="RdBu_r", vmin=-1, vmax=1, interpolation="nearest")
    ax.set_xticks(np.arange(k), frame.columns, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(np.arange(k), frame.index, fontsize=7)
    for i in range(k):
        for j in range(k):
            ax.text(j, i, f"{frame.iat[i, j]:.2f}", ha="center", va="center", fontsize=6,
                    color="white" if abs(frame.iat[i, j]) > 0.6 else "black")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.02, label="Spearman between maps")
    ax.set_title("Do the measures rank the layer pairs alike?", fontsize=9)
    return figure_to_data_uri(fig)


def _identification_figure(identification: Any) -> str:
    frame = identification.accuracy
    fig, ax = plt.subplots(figsize=(6.5, 0.32 * len(frame) + 1.2))
    positions = np.arange(len(frame))[::-1]
    ax.barh(positions, 100 * frame["accuracy"], color="#2b5fab")
    for position, (_, row) in zip(positions, frame.iterrows()):
        ax.text(100 * row["accuracy"] + 1, position, f"{100 * row['accuracy']:.1f} %", va="center", fontsize=7)
        reference = KORNBLITH_LAYER_IDENTIFICATION.get(row["measure"])
        if reference is not None:
            ax.plot([100 * reference] * 2, [position - 0.4, position + 0.4], color="black", lw=1.5)
    ax.set_yticks(positions, frame["label"], fontsize=7)
    ax.set_xlim(0, 112)
    ax.set_xlabel("layers identified in another seed (%)")
    ax.set_title(f"{len(identification.seeds)} seeds, {len(identification.layers)} layers; black ticks: "
                 "Kornblith et al. 2019", fontsize=9)
    return figure_to_data_uri(fig)


def _identification_table(identification: Any) -> tuple[pd.DataFrame, bool]:
    """The accuracy table beside Kornblith et al.'s figures, with a "both directions" column (S + S^T) when some
    measure is asymmetric; and whether it has that column."""
    table = identification.accuracy.assign(
        accuracy=lambda f: (100 * f["accuracy"]).round(1),
        kornblith=lambda f: [100 * KORNBLITH_LAYER_IDENTIFICATION[m] if m in KORNBLITH_LAYER_IDENTIFICATION
                             else None for m in f["measure"]],
    )
    columns = {"label": "measure", "accuracy": "identified (%)", "kornblith": "Kornblith 2019 (%)"}
    asymmetric = set(identification.asymmetric)
    if asymmetric:
        both = identification.symmetrized().accuracy.set_index("measure")["accuracy"]
        table["both"] = [round(100 * both[m], 1) if m in asymmetric else None for m in table["measure"]]
        columns["both"] = "both directions, S + Sᵀ (%)"
    return table[["label", "accuracy", "correct", "total", *(["both"] if asymmetric else []), "kornblith"]].rename(
        columns=columns), bool(asymmetric)


def _ceiling_figure(ceiling: pd.DataFrame, scores: pd.DataFrame, measure_label: str, kind: str,
                    models: Sequence[str]) -> str:
    layers = list(dict.fromkeys(ceiling["layer"]))
    x = np.arange(len(layers))
    fig, ax = plt.subplots(figsize=(max(5.5, 0.55 * len(layers) + 2.5), 3.6))
    ax.fill_between(x, ceiling["min"], ceiling["max"], color="#c9d4e6", label="seed to seed (min to max)")
    ax.plot(x, ceiling["mean"], color="#2b5fab", lw=1.5, label="seed to seed (mean)")
    colors = model_colors(list(models))
    for model, group in scores.groupby("other", sort=False):
        placed = group.set_index("layer").reindex(layers)
        ax.plot(x, placed["value"], "o", color=colors.get(model, BASELINE_COLOR), label=f"best layer of {model}")
    ax.set_xticks(x, layers, rotation=45, ha="right", fontsize=7)
    ax.set_ylabel(measure_label)
    if kind == "distance":
        ax.invert_yaxis()
    ax.legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title(f"Each layer against the seed-to-seed band ({measure_label})", fontsize=9)
    return figure_to_data_uri(fig)


def measures_section(
    maps: Any,
    *,
    disagreement: Any = None,
    identification: Any = None,
    ceiling_scores: pd.DataFrame | None = None,
    ceiling_measure: str = "linear-cka",
    title: str = "Similarity measures",
    intro: str = "",
    models: Sequence[str] | None = None,
    max_flagged: int = 12,
) -> Section:
    """Build the measures section from precomputed results (nothing is recomputed here).

    Parameters
    ----------
    maps
        ``analyses.MeasureMaps``: one map per measure, shown one at a time with a selector (pure CSS).
    disagreement
        ``analyses.MeasureDisagreement`` of the same maps: the measures' agreement and the conclusions
        that change with the measure.
    identification
        ``analyses.LayerIdentification`` over several seeds of one architecture: accuracy per measure,
        ranked, against Kornblith et al. 2019's figures.
    ceiling_scores
        Rows ``layer`` (of the seeds' architecture), ``other`` (another model), ``value`` (the measure
        between that layer of a seed and its best match in the other model), drawn against the seed-to-seed
        band of ``ceiling_measure`` from ``identification``.
    models
        Every model of the study, in its order (colours as in the other sections).
    max_flagged
        Rows of the table of changing conclusions shown.
    """
    if not len(maps):
        raise ValueError("measures_section needs at least one map; every measure was skipped: "
                         + "; ".join(f"{k}: {v}" for k, v in maps.skipped.items()))
    panels = []
    for name, matrix in maps.maps.items():
        spec = maps.measures[name]
        panels.append({
            "name": name, "label": spec.label,
            "uri": _map_figure(matrix, spec.kind, spec.low, spec.high),
            "full_size": len(matrix.names) > FULL_SIZE_FROM,
            "caption": f"{spec.label}: a {spec.kind} in [{spec.low:.3g}, {spec.high:.3g}]"
            + ("" if spec.symmetric else "; not symmetric: row = X, column = Y")
            + f" ({spec.reference}). Brighter: more alike. {matrix.details['seconds']:.2f} s.",
        })
    items = []
    if disagreement is not None:
        flagged = disagreement.flagged
        held_by_most = int((disagreement.conclusions["agreement"] >= 0.75).sum())
        shown = flagged.head(max_flagged).rename(columns=disagreement.labels).round({"agreement": 2})
        items.append({
            "title": "Where the measures disagree",
            "uri": _agreement_figure(disagreement),
            "caption": "Spearman correlation between the measures' maps over the off-diagonal entries (distances "
            f"negated). {len(flagged)} of {len(disagreement.conclusions)} conclusions “layer A of one model is most "
            f"like layer B of another” change with the measure; {held_by_most} hold for at least three quarters of "
            "the measures. Listed: the most contested"
            + (f" {max_flagged}" if len(flagged) > max_flagged else "")
            + " (agreement: the share of measures that pick the majority layer).",
            "table": table_html(shown.drop(columns=["changes"])) if len(shown) else None,
        })
    if identification is not None and len(identification.accuracy):
        table, both_ways = _identification_table(identification)
        skipped = "".join(f" {name} was not computed: {reason}." for name, reason in identification.skipped.items())
        items.append({
            "title": "Layer identification across seeds",
            "uri": _identification_figure(identification),
            "caption": "For every ordered pair of seeds and every layer: is the other seed's most alike layer the "
            "same layer (strictly)? Measures ranked by it. Kornblith et al. 2019 scored ten 10-layer CNNs on "
            "CIFAR-10; their RBF CKA is at 0.4 × the median distance, ours at 0.5 ×."
            + (" An asymmetric measure compares a layer of one seed (X) with the other's layers (Y); its “both "
               "directions” column scores X→Y and Y→X summed (S + Sᵀ), as Kornblith et al. score their PWCCA "
               f"({100 * KORNBLITH_SYMMETRIZED['pwcca']:.1f} %) and linear regression "
               f"({100 * KORNBLITH_SYMMETRIZED['regression']:.1f} %)." if both_ways else "") + skipped,
            "table": table_html(table),
        })
        if ceiling_scores is not None and len(ceiling_scores):
            ceiling = identification.ceiling.frame
            ceiling = ceiling[ceiling["measure"] == ceiling_measure]
            if len(ceiling):
                spec = maps.measures.get(ceiling_measure)
                label = spec.label if spec is not None else ceiling_measure
                kind = spec.kind if spec is not None else "similarity"
                items.append({
                    "title": "Cross-model scores against the seed-to-seed ceiling",
                    "uri": _ceiling_figure(ceiling, ceiling_scores, label, kind, models or list(ceiling_scores["other"])),
                    "caption": "The band: how alike the same layer is across seeds of one architecture, the most a "
                    "different model can be expected to reach. Dots: each other model's most alike layer.",
                })
    group = "measures-" + "".join(c if c.isalnum() else "-" for c in title.lower())
    body = render_fragment("sections/measures.html.j2", intro=intro, panels=panels, items=items,
                           skipped=maps.skipped, group=group)
    return Section(title, body, summary="Many similarity measures side by side, and where they disagree.")
