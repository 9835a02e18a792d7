"""Report section "Words": neighbours, analogies, analogy accuracy and the geometry of word categories.

It draws the result objects of ``analyses``' word-vector tools (``Neighbours``, ``Analogy``,
``AnalogyAccuracy``, ``WordCategoryGeometry``), read by their attributes; nothing is recomputed here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import scipy.stats
from markupsafe import Markup

from reports._colors import BASELINE_COLOR, model_colors
from reports._labels import place_labels
from reports._render import figure_to_data_uri, render_fragment, table_html
from reports._report import Section

__all__ = ["CATEGORY_COLORS", "words_section"]

#: Category colours (matplotlib's Dark2, then Set1): apart from the model colours (tab10).
CATEGORY_COLORS = (
    "#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d", "#666666",
    "#e41a1c", "#377eb8", "#4daf4a", "#984ea3",
)


def _as_list(results: Any) -> list[Any]:
    if results is None:
        return []
    if isinstance(results, Mapping):
        return list(results.values())
    if isinstance(results, (list, tuple)):
        return list(results)
    return [results]


def _category_colors(categories: Sequence[str]) -> dict[str, str]:
    unique = list(dict.fromkeys(categories))
    return {c: CATEGORY_COLORS[i % len(CATEGORY_COLORS)] for i, c in enumerate(unique)}


# ------------------------------------------------------------------------------------------ tables
def _neighbour_table(neighbours: Any, max_queries: int, k: int) -> Markup:
    frame = neighbours.to_frame()
    frame = frame[frame["query"].isin(list(dict.fromkeys(neighbours.queries))[:max_queries]) & (frame["rank"] <= k)]
    frame = frame.assign(cell=[f"{w} ({c:.2f})" for w, c in zip(frame["neighbour"], frame["cosine"])])
    wide = frame.pivot_table(index="query", columns="rank", values="cell", aggfunc="first", sort=False)
    wide.columns = [str(c) for c in wide.columns]
    return table_html(wide.reset_index())


def _analogy_table(analogies: list[Any], n_answers: int) -> Markup:
    rows = [{
        "model": a.model,
        "method": a.method,
        "question": f"{a.a} : {a.b} :: {a.c} : ?",
        "answers": ", ".join(f"{w} ({s:.2f})" for w, s in zip(a.answers[:n_answers], a.scores[:n_answers])),
    } for a in analogies]
    return table_html(pd.DataFrame(rows))


def _accuracy_frame(result: Any) -> pd.DataFrame:
    """One result's sections, then its semantic, syntactic and overall totals: section, kind, correct,
    total, accuracy, skipped."""
    sections = result.to_frame()[["section", "kind", "correct", "total", "accuracy", "skipped"]]
    totals = result.totals_frame().rename(columns={"questions": "section"})
    totals["section"] = totals["section"].map({"semantic": "all semantic", "syntactic": "all syntactic",
                                               "all": "all questions"})
    totals["kind"] = "total"
    return pd.concat([sections, totals[sections.columns]], ignore_index=True)


def _accuracy_label(result: Any) -> str:
    return f"{result.model} ({result.method})"


def _accuracy_table(accuracies: list[Any]) -> Markup:
    """A row per section, a column per result: "accuracy (correct/answered)", then the skipped count."""
    wide = None
    for result in accuracies:
        frame = _accuracy_frame(result)
        label = _accuracy_label(result)
        part = pd.DataFrame({
            "section": frame["section"],
            "kind": frame["kind"],
            label: [f"{100 * a:.1f} % ({c}/{t})" for a, c, t in zip(frame["accuracy"], frame["correct"], frame["total"])],
            f"skipped, {label}": frame["skipped"],
        })
        wide = part if wide is None else wide.merge(part, on=["section", "kind"], how="outer", sort=False)
    order = {section: i for i, section in enumerate(dict.fromkeys(
        section for result in accuracies for section in _accuracy_frame(result)["section"]))}
    wide = wide.sort_values("section", key=lambda column: column.map(order), kind="stable")
    skipped = [c for c in wide.columns if c.startswith("skipped, ")]
    if all(wide[c].equals(wide[skipped[0]]) for c in skipped):  # the same questions skipped: one column
        wide = wide.drop(columns=skipped[1:]).rename(columns={skipped[0]: "skipped"})
    return table_html(wide)


# ----------------------------------------------------------------------------------------- figures
def _vocabulary_caps(accuracies: list[Any]) -> str:
    """The words each table answered among: "300,000", or per table when they differ."""
    caps = {result.model: f"{result.restrict_vocab:,}" for result in accuracies}
    if len(set(caps.values())) == 1:
        return next(iter(caps.values()))
    return " / ".join(f"{cap} ({model})" for model, cap in caps.items())


def _accuracy_bars(accuracies: list[Any], colors: Mapping[str, str]) -> str:
    """Horizontal bars: one group per section (and the totals), one bar per table."""
    frames = []
    for result in accuracies:
        part = _accuracy_frame(result)
        part["label"], part["model"] = _accuracy_label(result), result.model
        frames.append(part)
    frame = pd.concat(frames, ignore_index=True)
    sections = list(dict.fromkeys(frame["section"]))
    labels = list(dict.fromkeys(frame["label"]))
    height = 0.8 / len(labels)
    fig, ax = plt.subplots(figsize=(8.0, 0.2 * len(sections) * max(1.5, len(labels)) + 1.2))
    positions = np.arange(len(sections))
    drawn = set()
    for j, label in enumerate(labels):
        part = frame[frame["label"] == label].set_index("section").reindex(sections)
        model = part["model"].dropna().iloc[0]
        again = model in drawn  # a second method of the same table: same colour, hatched
        drawn.add(model)
        ax.barh(positions + (j - (len(labels) - 1) / 2) * height, 100 * part["accuracy"].fillna(0), height,
                color=colors.get(model, BASELINE_COLOR), alpha=0.55 if again else 1.0, hatch="//" if again else None,
                label=label)
    ax.set_yticks(positions, sections, fontsize=8)
    ax.invert_yaxis()
    totals_from = sections.index("all semantic") if "all semantic" in sections else len(sections)
    ax.axhline(totals_from - 0.5, color="black", lw=0.6)
    ax.set_xlim(0, 100)
    ax.set_xlabel("accuracy (%) of the questions answered")
    ax.grid(axis="x", color="#dddddd", lw=0.5)
    ax.set_axisbelow(True)
    ax.legend(fontsize=8, frameon=False, loc="lower right")
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.set_title("Analogy accuracy by section", fontsize=10)
    return figure_to_data_uri(fig)


def _grid(n_panels: int, width: float, height: float, max_columns: int = 3):
    n_columns = min(max_columns, n_panels)
    n_rows = -(-n_panels // n_columns)
    fig, axes = plt.subplots(n_rows, n_columns, figsize=(width * n_columns, height * n_rows), squeeze=False)
    for ax in axes.ravel()[n_panels:]:
        ax.axis("off")
    return fig, axes.ravel()[:n_panels]


def _plane_figure(geometry: Any, category_colors: Mapping[str, str]) -> str:
    """Each table's words on its first two principal components, coloured by category, labelled."""
    fig, axes = _grid(len(geometry.models), 5.6, 5.0, max_columns=2)
    categories = np.asarray(geometry.categories, dtype=object)
    colors = [category_colors[c] for c in categories]
    for ax, model in zip(axes, geometry.models):
        xy = np.asarray(geometry.coordinates[model])
        for category in category_colors:
            mine = categories == category
            ax.scatter(xy[mine, 0], xy[mine, 1], s=22, color=category_colors[category], label=category, zorder=3)
        variance = geometry.explained_variance[model]
        ax.set_xlabel(f"PC 1 ({100 * variance[0]:.0f} % of variance)", fontsize=8)
        ax.set_ylabel(f"PC 2 ({100 * variance[1]:.0f} %)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.set_title(model, fontsize=10)
        ax.margins(0.12)
    legend = axes[0].legend(fontsize=7, frameon=True, framealpha=0.9, loc="best")
    fig.tight_layout()
    for i, (ax, model) in enumerate(zip(axes, geometry.models)):
        place_labels(ax, np.asarray(geometry.coordinates[model]), list(geometry.words), colors=colors, fontsize=7,
                     avoid=[legend] if i == 0 else [])
    return figure_to_data_uri(fig)


def _percentiles(matrix: np.ndarray) -> np.ndarray:
    """Display transform: each off-diagonal dissimilarity as its percentile within the RDM."""
    n = matrix.shape[0]
    rows, cols = np.triu_indices(n, 1)
    shown = np.zeros_like(matrix, dtype=np.float64)
    shown[rows, cols] = shown[cols, rows] = 100.0 * scipy.stats.rankdata(matrix[rows, cols]) / max(rows.size, 1)
    return shown


def _rdm_figure(geometry: Any, category_colors: Mapping[str, str]) -> str:
    """Each table's RDM over the words, ordered by category, with category ticks and word labels."""
    n = len(geometry.words)
    side = max(4.2, 0.1 * n + 1.4)  # rows of 7 px at 96 dpi: word labels at 6 pt stay legible
    fig, axes = _grid(len(geometry.models), side + 0.4, side, max_columns=2)
    categories = np.asarray(geometry.categories, dtype=object)
    boundaries = np.flatnonzero(categories[1:] != categories[:-1]) + 0.5
    starts = np.concatenate([[0], np.ceil(boundaries).astype(int)])
    ends = np.concatenate([np.ceil(boundaries).astype(int), [n]])
    image = None
    for ax, model in zip(axes, geometry.models):
        image = ax.imshow(_percentiles(np.asarray(geometry.rdms[model])), cmap="viridis", vmin=0, vmax=100,
                          interpolation="nearest")
        for b in boundaries:
            ax.axhline(b, color="white", lw=0.8)
            ax.axvline(b, color="white", lw=0.8)
        ax.set_yticks(np.arange(n), geometry.words, fontsize=6)
        for tick, category in zip(ax.get_yticklabels(), categories):
            tick.set_color(category_colors[category])
        ax.set_xticks((starts + ends - 1) / 2, [categories[s] for s in starts], rotation=35, ha="right", fontsize=8)
        for tick, s in zip(ax.get_xticklabels(), starts):
            tick.set_color(category_colors[categories[s]])
        ax.set_title(f"{model}\nwithin / between = {geometry.ratio(model):.2f}", fontsize=9)
    fig.tight_layout(rect=(0, 0, 0.9, 1))
    colorbar_axes = fig.add_axes([0.92, 0.2, 0.015, 0.6])
    fig.colorbar(image, cax=colorbar_axes, label=f"percentile of {geometry.metric} distance")
    return figure_to_data_uri(fig)


def _similarity_figure(geometry: Any) -> str:
    """Model-by-model linear CKA and RDM comparison, as annotated heatmaps."""
    matrices = [m for m in (geometry.cka, geometry.rdm_similarity) if m is not None]
    k = len(geometry.models)
    size = max(3.2, 0.55 * k + 2.0)
    fig, axes = plt.subplots(1, len(matrices), figsize=((size + 0.8) * len(matrices), size), squeeze=False)
    for ax, similarity in zip(axes[0], matrices):
        values = np.asarray(similarity.values)
        image = ax.imshow(values, cmap="magma", vmin=min(0.0, float(values.min())), vmax=1, interpolation="nearest")
        ax.set_xticks(np.arange(k), geometry.models, rotation=35, ha="right", fontsize=8)
        ax.set_yticks(np.arange(k), geometry.models, fontsize=8)
        for i in range(k):
            for j in range(k):
                ax.text(j, i, f"{values[i, j]:.2f}", ha="center", va="center", fontsize=8,
                        color="black" if values[i, j] > 0.6 else "white")
        ax.set_title(similarity.measure, fontsize=9)
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    return figure_to_data_uri(fig)


def _geometry_table(geometry: Any) -> Markup:
    frame = geometry.to_frame()[["model", "n_words", "metric", "within", "between", "ratio", "p_value", "dropped"]]
    return table_html(frame)


# ------------------------------------------------------------------------------------------ section
def words_section(
    *,
    neighbours: Any = None,
    analogies: Sequence[Any] | None = None,
    accuracy: Any = None,
    geometry: Any = None,
    models: Sequence[str] | None = None,
    max_queries: int = 6,
    n_neighbours: int = 8,
    title: str = "Words",
    intro: str = "",
) -> Section:
    """Build the "Words" section from precomputed word-vector results (nothing is recomputed here).

    Parameters
    ----------
    neighbours
        ``analyses.Neighbours`` of one table, or several (a list, or ``{model: Neighbours}``): one
        table of nearest words per model (the first ``max_queries`` query words, ``n_neighbours``
        neighbours each, with their cosines).
    analogies
        ``analyses.Analogy`` results, shown as one table of questions and their best answers.
    accuracy
        ``analyses.AnalogyAccuracy`` of one table or several: a table per section and a bar chart.
    geometry
        ``analyses.WordCategoryGeometry``: the words on each table's first two principal
        components, each table's RDM ordered by category, and the table-by-table CKA and RDM
        comparison.
    models
        Every model of the study, in its order, for the bar colours (``reports.model_colors``).
        Default: the models of the results, in their order.
    title, intro
        The section's heading and an optional first paragraph (escaped).

    Returns
    -------
    Section
    """
    neighbour_results, accuracies, analogies = _as_list(neighbours), _as_list(accuracy), list(analogies or [])
    if not (neighbour_results or accuracies or analogies or geometry is not None):
        raise ValueError("words_section needs at least one result (neighbours, analogies, accuracy or geometry)")
    shown = [r.model for r in neighbour_results + accuracies + analogies]
    shown += list(geometry.models) if geometry is not None else []
    colors = model_colors(list(models) if models is not None else list(dict.fromkeys(shown)))
    items = []
    for result in neighbour_results:
        items.append({
            "title": f"Nearest words: {result.model}",
            "table": _neighbour_table(result, max_queries, n_neighbours),
            "caption": "Each query word's nearest words by cosine similarity (in brackets), the word itself left out.",
            "wide": True,
        })
    if analogies:
        items.append({
            "title": "Analogies",
            "table": _analogy_table(analogies, 3),
            "caption": "“a : b :: c : ?” read “a is to b as c is to ?”; the best answers near b − a + c (3CosAdd) or "
            "by 3CosMul (Levy & Goldberg 2014), the three query words excluded; scores in brackets.",
            "wide": True,
        })
    if accuracies:
        first = accuracies[0]
        items.append({
            "title": "Analogy accuracy by section",
            "uri": _accuracy_bars(accuracies, colors),
            "table": _accuracy_table(accuracies),
            "caption": f"Share of the questions of {first.path.rsplit('/', 1)[-1]} answered correctly (the "
            "answer is the best word other than the three query words); questions with a word outside a table's first "
            f"{_vocabulary_caps(accuracies)} words are skipped, as gensim's evaluate_word_analogies does. Sections named "
            "gram… are syntactic, the others semantic.",
            "wide": True,
        })
    if geometry is not None:
        category_colors = _category_colors(geometry.categories)
        dropped = sorted({w for words in geometry.dropped.values() for w in words})
        dropped_note = f" Left out because some table lacks them: {', '.join(dropped)}." if dropped else ""
        items.append({
            "title": "Word groups in two dimensions",
            "uri": _plane_figure(geometry, category_colors),
            "caption": f"The {len(geometry.words)} category words on each table's first two principal components "
            f"(PCA of the word vectors), coloured by category.{dropped_note}",
        })
        items.append({
            "title": "RDMs over word categories",
            "uri": _rdm_figure(geometry, category_colors),
            "table": _geometry_table(geometry),
            "caption": f"{geometry.metric.capitalize()} distance between every pair of words, ordered by category "
            "(white lines); colours show each distance's percentile within its RDM. within / between: mean "
            "distance of pairs in the same category over that of pairs across categories (below 1: categories "
            "cluster)"
            + (f"; p_value: the share of {geometry.n_permutations} shuffles of the category labels (and the "
               "observed labels) with a ratio as low." if geometry.n_permutations else "."),
        })
        if geometry.cka is not None:
            items.append({
                "title": "Tables compared",
                "uri": _similarity_figure(geometry),
                "caption": "Linear CKA between the tables' vectors of the shared words, and the "
                f"{geometry.rdm_similarity.measure} (second-order similarity).",
            })
    body = render_fragment("sections/words.html.j2", intro=intro, items=items)
    summary = "Word vectors: neighbours, analogies and the geometry of word categories."
    return Section(title, body, summary=summary)
