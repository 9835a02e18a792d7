"""The study's word analyses: word vectors compared (``words``) and the masked LM's ratio sweep (``mlm_ratio``).

Language models (word2vec, the masked LM) are not recorded on the study's stimuli: what they represent
is a table of word vectors (``model.word_vectors()``), which these steps read directly. GloVe joins them
by name (``"glove-6b-50d"``).
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any, Sequence

import pandas as pd

import zoo
from analyses import (
    WORD_CATEGORIES,
    analogy_accuracy,
    find_analogy_questions,
    nearest_neighbours,
    solve_analogy,
    word_category_geometry,
)
from probe.study._context import StudyContext
from probe.study._language_experiments import masked_lm_ratio_sweep
from probe.study._spec import GLOVE
from probe.study._study import is_language_model
from reports import Section, masked_lm_section, words_section

__all__ = ["words_analysis", "mlm_ratio_analysis", "ANALOGY_EXAMPLES", "word_tables"]

#: Analogies shown per table, "a is to b as c is to ?" (those whose words a table knows).
ANALOGY_EXAMPLES = (
    ("man", "king", "woman"), ("france", "paris", "italy"), ("man", "he", "woman"), ("good", "better", "bad"),
    ("sheep", "sheep", "goats"), ("father", "son", "mother"), ("egypt", "pharaoh", "babylon"),
)


def word_tables(ctx: StudyContext, vectors: Sequence[str] | str = "auto") -> dict[str, zoo.WordVectors]:
    """The word-vector tables a words analysis compares, by name: the study's language models (named after
    their study entries) and GloVe (``"glove-6b-50d"``); ``"auto"``: every language model of the study,
    and GloVe when its package is installed and the study has a language model."""
    language = [name for name, model in ctx.models.items() if is_language_model(model)]
    if vectors == "auto":
        names = language + ([GLOVE] if language and zoo.glove_installed() else [])
    else:
        names = list(vectors)
        for name in names:
            if name != GLOVE and name not in language:
                raise ValueError(f"words.vectors names {name!r}, which is not a language model (it has no word "
                                 f"vectors); the study's language models: {', '.join(language) or 'none'}")
    tables = {}
    for name in names:
        table = zoo.load_word_vectors(name if name == GLOVE else ctx.models[name])
        tables[name] = dataclasses.replace(table, name=name)
    return tables


def _analogy_examples(table: zoo.WordVectors, method: str) -> list[Any]:
    return [solve_analogy(table, a, b, c, k=3, method=method) for a, b, c in ANALOGY_EXAMPLES
            if a != b and all(word in table for word in (a, b, c))]


def _accuracies(tables: dict[str, zoo.WordVectors], analogies: str, method: str, restrict_vocab: int) -> tuple[list[Any], str]:
    """Each table's accuracy on the analogy set, and a note when the set could not be found."""
    if analogies == "none":
        return [], ""
    try:
        path = find_analogy_questions() if analogies == "auto" else analogies
    except FileNotFoundError as err:
        return [], f" The analogy test set was not found: {err}"
    return [analogy_accuracy(table, path, method, restrict_vocab=restrict_vocab) for table in tables.values()], ""


def words_analysis(ctx: StudyContext, *, vectors: Sequence[str] | str = "auto",
                   queries: Sequence[str] = ("king", "water", "red", "horse", "three"), analogies: str = "auto",
                   method: str = "3cosadd", restrict_vocab: int = 300_000,
                   categories: dict[str, list[str]] | str = "builtin") -> list[Section]:
    """Nearest neighbours, analogies (examples, and the accuracy on Google's set by section) and the geometry
    of word categories (RDMs, CKA between tables, category clustering) of every word-vector table.

    Tables ``words-neighbours``, ``words-analogies``, ``words-analogy-accuracy`` and ``words-geometry``.
    A study without language models (and no ``vectors`` named) gets no section.
    """
    tables = word_tables(ctx, vectors)
    if not tables:
        return []
    neighbours = {}
    for name, table in tables.items():
        known = [word for word in queries if word in table]
        if known:
            neighbours[name] = nearest_neighbours(table, known, k=8, restrict_vocab=restrict_vocab)
    examples = [example for table in tables.values() for example in _analogy_examples(table, method)]
    accuracies, note = _accuracies(tables, analogies, method, restrict_vocab)
    try:
        geometry = word_category_geometry(tables, WORD_CATEGORIES if categories == "builtin" else categories,
                                          seed=ctx.seed)
    except ValueError as err:  # too few category words shared by every table: the rest still stands
        geometry, note = None, note + f" Word categories left out: {err}"
    ctx.results["words"] = {"tables": list(tables), "neighbours": neighbours, "analogies": examples,
                            "accuracy": {a.model: a for a in accuracies}, "geometry": geometry}
    if neighbours:
        ctx.add_table("words-neighbours", pd.concat([n.to_frame() for n in neighbours.values()]))
    if examples:
        ctx.add_table("words-analogies", pd.concat([e.to_frame() for e in examples]))
    if accuracies:
        ctx.add_table("words-analogy-accuracy", pd.concat([a.totals_frame() for a in accuracies]))
    if geometry is not None:
        ctx.add_table("words-geometry", geometry.to_frame())
    intro = (f"Word vectors of {', '.join(tables)}, compared on the same words. Analogies are solved by {method} "
             f"among the {restrict_vocab:,} most frequent words of each table, the query words excluded." + note)
    return [words_section(neighbours=neighbours or None, analogies=examples, accuracy=accuracies or None,
                          geometry=geometry, models=list(ctx.models) + [GLOVE], intro=intro)]


def mlm_ratio_analysis(ctx: StudyContext, *, ratios: Sequence[float] = (0.05, 0.15, 0.3, 0.5), epochs: int = 2,
                       dataset: str = "pydoc-topics") -> list[Section]:
    """Train one masked language model per mask ratio on ``dataset`` (runs in ``ctx.out / "mlm-ratio"``;
    finished ones are reused) and score each on masked tokens (``probe.study.masked_lm_ratio_sweep``).

    The table ``mlm-ratio`` holds one row per ratio.
    """
    if ctx.progress:
        print(f"study: training {len(ratios)} masked language models on {dataset}", file=sys.stderr, flush=True)
    sweep = masked_lm_ratio_sweep(tuple(ratios), dataset=dataset, epochs=epochs, out=ctx.out / "mlm-ratio",
                                  seed=ctx.seed, device=ctx.device, progress=ctx.progress)
    ctx.results["mlm_ratio"] = sweep
    ctx.add_table("mlm-ratio", sweep.to_frame())
    notes = (f"One masked language model per mask ratio, {epochs} epochs each on {dataset}. A short training favours "
             "higher ratios (more masked words, more to learn from per step); BERT chose 15 %, and later work "
             "(Wettig et al. 2023) found higher ratios, up to 40 %, as good or better for large models trained long.")
    return [masked_lm_section(sweep, notes=notes)]
