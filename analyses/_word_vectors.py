"""Word-vector tools for any embedding table: neighbours, analogies, the Google analogy test, categories.

Every function takes a ``zoo.WordVectors`` (GloVe, a word2vec run, a masked LM's token embeddings)
and works on its unit-length rows, so similarities are cosines.

Analogies are read "a is to b as c is to ?": ``solve_analogy(wv, "man", "king", "woman")`` answers
"queen". The two objectives are those of Levy & Goldberg (2014), with x̂ the unit vector of x:

- **3CosAdd** (Mikolov et al. 2013): argmax over d of cos(d, b̂ − â + ĉ); the score reported is
  that cosine, as gensim's ``most_similar(positive=[b, c], negative=[a])`` reports it.
- **3CosMul**: argmax over d of cos'(d, b) cos'(d, c) / (cos'(d, a) + ε), with cosines shifted to
  [0, 1] by cos' = (1 + cos) / 2 and ε = 1e-6, as gensim's ``most_similar_cosmul``.

The query words a, b and c are never answers. ``analogy_accuracy`` counts as gensim's
``KeyedVectors.evaluate_word_analogies`` does: words are matched without regard to case (a word with
several case variants takes the vector of its first, most frequent one), questions with a word
outside the first ``restrict_vocab`` words are skipped (and counted as skipped), and the answer is the
best of the first ``restrict_vocab`` words whose case-folded form is none of the three query words.
It solves the questions in batches of matrix products instead of one at a time.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analyses._compare import resolve_method
from analyses._rdm import RDM, rdm
from analyses._similarity_maps import SimilarityMatrix, cka_matrix, rdm_similarity_matrix
from zoo._names import unknown_name_error
from zoo._word_vectors import WordVectors

__all__ = [
    "ANALOGY_METHODS",
    "WORD_CATEGORIES",
    "Analogy",
    "AnalogyAccuracy",
    "Neighbours",
    "WordCategoryGeometry",
    "analogy_accuracy",
    "find_analogy_questions",
    "nearest_neighbours",
    "read_analogy_questions",
    "solve_analogy",
    "word_category_geometry",
]

#: 3CosMul's ε (Levy & Goldberg 2014; gensim's value).
COSMUL_EPSILON = 1e-6
#: Score entries per batch of ``analogy_accuracy`` (128 MiB of float32 per score matrix).
_BATCH_ENTRIES = 2**25
_QUESTIONS_FILE = "questions-words.txt"


def _check_table(wv: Any) -> WordVectors:
    if not isinstance(wv, WordVectors):
        raise TypeError(
            f"expected a zoo.WordVectors, got {type(wv).__name__}; load one with zoo.load_word_vectors(...) "
            "or build it with zoo.WordVectors(words, vectors, name)"
        )
    return wv


def _candidate_count(wv: WordVectors, restrict_vocab: int | None) -> int:
    if restrict_vocab is None:
        return len(wv)
    if restrict_vocab < 1:
        raise ValueError(f"restrict_vocab must be a positive number of words or None, got {restrict_vocab}")
    return min(int(restrict_vocab), len(wv))


def _top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Columns of the ``k`` largest scores of each row, best first (array of shape (n_rows, k))."""
    k = min(k, scores.shape[1])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


# ------------------------------------------------------------------------------------- neighbours
@dataclass
class Neighbours:
    """The nearest words of some query words, by cosine.

    Attributes
    ----------
    model
        The table's name.
    queries
        The query words, in the order asked.
    neighbours
        Array of shape (n_queries, k) of words, nearest first.
    cosines
        Array of shape (n_queries, k).
    """

    model: str
    queries: list[str]
    neighbours: np.ndarray
    cosines: np.ndarray

    def of(self, word: str) -> list[str]:
        """The neighbours of one query word, nearest first."""
        if word not in self.queries:
            raise unknown_name_error("query word", word, self.queries)
        return list(self.neighbours[self.queries.index(word)])

    def to_frame(self) -> pd.DataFrame:
        """One row per (query, neighbour): model, query, rank (1 = nearest), neighbour, cosine."""
        n, k = self.neighbours.shape
        return pd.DataFrame({
            "model": self.model,
            "query": np.repeat(np.asarray(self.queries, dtype=object), k),
            "rank": np.tile(np.arange(1, k + 1), n),
            "neighbour": self.neighbours.ravel(),
            "cosine": self.cosines.ravel().astype(np.float64),
        })


def nearest_neighbours(
    wv: WordVectors, word_or_words: str | Sequence[str], k: int = 10, *, restrict_vocab: int | None = None
) -> Neighbours:
    """The ``k`` words nearest to each query word by cosine, the word itself left out.

    Parameters
    ----------
    wv
        The table.
    word_or_words
        One word or several.
    k
        Neighbours per word.
    restrict_vocab
        Search only the first (most frequent) words; None searches all. As gensim's
        ``most_similar(word, topn=k, restrict_vocab=...)``.

    Returns
    -------
    Neighbours

    Raises
    ------
    KeyError
        A query word the table lacks (the message names the closest words).
    """
    wv = _check_table(wv)
    queries = [word_or_words] if isinstance(word_or_words, str) else list(word_or_words)
    if not queries:
        raise ValueError("no query words given")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    rows = wv.indices(queries)
    n_candidates = _candidate_count(wv, restrict_vocab)
    unit = wv.unit()
    scores = unit[rows] @ unit[:n_candidates].T
    own = rows < n_candidates
    scores[np.flatnonzero(own), rows[own]] = -np.inf
    best = _top_k(scores, min(k, n_candidates - 1))
    words = np.asarray(wv.words, dtype=object)
    return Neighbours(wv.name, queries, words[best], np.take_along_axis(scores, best, axis=1))


# -------------------------------------------------------------------------------------- analogies
def _scores_buffers(method: str, n_rows: int, n_candidates: int) -> list[np.ndarray]:
    return [np.empty((n_rows, n_candidates), dtype=np.float32) for _ in range(_METHOD_BUFFERS[method])]


def _three_cos_add(candidates, a, b, c, buffers) -> np.ndarray:
    query = b + c - a
    norms = np.linalg.norm(query, axis=1, keepdims=True)
    query = (query / np.where(norms > 0, norms, 1.0)).astype(np.float32)
    return np.matmul(query, candidates.T, out=buffers[0])


def _three_cos_mul(candidates, a, b, c, buffers) -> np.ndarray:
    def shifted(u: np.ndarray, out: np.ndarray) -> np.ndarray:
        np.matmul(u, candidates.T, out=out)
        out += 1.0
        out *= 0.5
        return out

    scores = shifted(b, buffers[0])
    scores *= shifted(c, buffers[1])
    denominator = shifted(a, buffers[1])
    denominator += COSMUL_EPSILON
    scores /= denominator
    return scores


#: Analogy objectives: name -> scores(candidates (n, d), a, b, c (each (q, d), unit rows), buffers) -> (q, n),
#: written into the first of ``buffers`` (float32 arrays of shape (q, n), see ``_scores_buffers``).
ANALOGY_METHODS: dict[str, Callable[..., np.ndarray]] = {"3cosadd": _three_cos_add, "3cosmul": _three_cos_mul}
#: Score matrices each method holds at its peak (for the batch size).
_METHOD_BUFFERS = {"3cosadd": 1, "3cosmul": 2}


def _check_method(method: str) -> str:
    key = str(method).lower()
    if key not in ANALOGY_METHODS:
        raise unknown_name_error("analogy method", method, sorted(ANALOGY_METHODS))
    return key


@dataclass
class Analogy:
    """The answers to "a is to b as c is to ?", best first.

    Attributes
    ----------
    a, b, c
        The question's words.
    method
        "3cosadd" or "3cosmul".
    answers
        The ``k`` best words, best first.
    scores
        Array of shape (k,): each answer's score (3CosAdd: a cosine; 3CosMul: the ratio).
    model
        The table's name.
    """

    a: str
    b: str
    c: str
    method: str
    answers: list[str]
    scores: np.ndarray
    model: str = ""

    @property
    def best(self) -> str:
        return self.answers[0]

    def to_frame(self) -> pd.DataFrame:
        """One row per answer: model, method, a, b, c, rank (1 = best), answer, score."""
        return pd.DataFrame({
            "model": self.model, "method": self.method, "a": self.a, "b": self.b, "c": self.c,
            "rank": np.arange(1, len(self.answers) + 1), "answer": self.answers,
            "score": np.asarray(self.scores, dtype=np.float64),
        })


def solve_analogy(
    wv: WordVectors,
    a: str,
    b: str,
    c: str,
    k: int = 5,
    method: str = "3cosadd",
    *,
    restrict_vocab: int | None = None,
) -> Analogy:
    """Answer "a is to b as c is to ?": ``solve_analogy(glove, "man", "king", "woman")`` gives "queen".

    The argument order follows the sentence: the answer d is to c what b is to a, found near
    b − a + c. This is gensim's ``most_similar(positive=[b, c], negative=[a])`` (3CosAdd) or
    ``most_similar_cosmul(positive=[b, c], negative=[a])`` (3CosMul); the module docstring defines both.

    Parameters
    ----------
    wv
        The table.
    a, b, c
        The question's words; none of them is ever an answer.
    k
        How many answers to return.
    method
        "3cosadd" or "3cosmul".
    restrict_vocab
        Answer only with the first (most frequent) words; None allows all.

    Returns
    -------
    Analogy

    Raises
    ------
    KeyError
        A word the table lacks (the message names it and the closest known words).
    """
    wv = _check_table(wv)
    method = _check_method(method)
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    rows = wv.indices([a, b, c])
    n_candidates = _candidate_count(wv, restrict_vocab)
    unit = wv.unit()
    vectors = [unit[row][None, :] for row in rows]
    scores = ANALOGY_METHODS[method](unit[:n_candidates], *vectors, _scores_buffers(method, 1, n_candidates))
    scores[0, rows[rows < n_candidates]] = -np.inf
    best = _top_k(scores, min(k, n_candidates - len(set(rows[rows < n_candidates].tolist()))))[0]
    return Analogy(a, b, c, method, [wv.words[i] for i in best], scores[0, best].astype(np.float64), wv.name)


# ------------------------------------------------------------------------------ the analogy test set
def find_analogy_questions() -> Path:
    """Google's analogy questions (``questions-words.txt``, Mikolov et al. 2013), found offline.

    They ship in gensim's test data; gensim is located without being imported.

    Raises
    ------
    FileNotFoundError
        Where it looked, and the fix: ``pip install gensim`` or pass ``path=`` to ``analogy_accuracy``.
    """
    spec = importlib.util.find_spec("gensim")
    looked = []
    if spec is not None and spec.origin:
        candidate = Path(spec.origin).parent / "test" / "test_data" / _QUESTIONS_FILE
        if candidate.is_file():
            return candidate
        looked.append(str(candidate))
    where = f" (looked in {looked[0]})" if looked else " (gensim is not installed)"
    raise FileNotFoundError(
        f"Google's analogy questions {_QUESTIONS_FILE!r} were not found{where}; install the package that ships "
        f"them (pip install gensim) or pass path= to a {_QUESTIONS_FILE} of your own"
    )


def read_analogy_questions(path: str | os.PathLike) -> pd.DataFrame:
    """Read analogy questions in the ``questions-words.txt`` format.

    Lines ``: SECTION`` start a section; every other line holds four words "a b c expected" ("a is
    to b as c is to expected"). Words are lower-cased; blank lines and lines without exactly four
    words are skipped (as gensim does).

    Returns
    -------
    pandas.DataFrame
        One row per question: section, a, b, c, expected (sections in file order).

    Raises
    ------
    ValueError
        A question before the first section line.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no analogy questions at {path}; pass the path of a {_QUESTIONS_FILE}-style file")
    rows, section = [], None
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if line.startswith(":"):
                section = line[1:].strip()
                continue
            words = line.lower().split()
            if len(words) != 4:
                continue
            if section is None:
                raise ValueError(f"{path}, line {number}: a question before any ': section' line; start with one")
            rows.append((section, *words))
    return pd.DataFrame(rows, columns=["section", "a", "b", "c", "expected"])


def _section_kind(section: str) -> str:
    return "syntactic" if section.startswith("gram") else "semantic"


@dataclass
class AnalogyAccuracy:
    """Accuracy on an analogy test set, per section and overall.

    Attributes
    ----------
    model, method, restrict_vocab, path
        What was tested, how, against which words and which file.
    questions
        One row per question: section, a, b, c, expected, predicted ("" when skipped), correct,
        skipped.
    """

    model: str
    method: str
    restrict_vocab: int
    path: str
    questions: pd.DataFrame = field(repr=False)

    def to_frame(self) -> pd.DataFrame:
        """One row per section, in file order: model, method, section, kind ("semantic" or
        "syntactic": sections named "gram…"), correct, total (questions answered), accuracy
        (correct / total; 0 when none answered, as gensim), skipped (questions with a word outside
        the vocabulary cap)."""
        grouped = self.questions.groupby("section", sort=False)
        frame = pd.DataFrame({
            "correct": grouped["correct"].sum(),
            "total": grouped["skipped"].apply(lambda s: int((~s).sum())),
            "skipped": grouped["skipped"].sum(),
        }).reset_index()
        frame.insert(1, "kind", frame["section"].map(_section_kind))
        frame["accuracy"] = np.where(frame["total"] > 0, frame["correct"] / frame["total"].clip(lower=1), 0.0)
        frame.insert(0, "method", self.method)
        frame.insert(0, "model", self.model)
        return frame[["model", "method", "section", "kind", "correct", "total", "accuracy", "skipped"]].astype(
            {"correct": int, "total": int, "skipped": int}
        )

    def totals_frame(self) -> pd.DataFrame:
        """Three rows, semantic, syntactic and all: correct, total, accuracy, skipped."""
        sections = self.to_frame()
        rows = []
        for label, part in (("semantic", sections[sections["kind"] == "semantic"]),
                            ("syntactic", sections[sections["kind"] == "syntactic"]), ("all", sections)):
            correct, total = int(part["correct"].sum()), int(part["total"].sum())
            rows.append({"model": self.model, "method": self.method, "questions": label, "correct": correct,
                         "total": total, "accuracy": correct / total if total else 0.0,
                         "skipped": int(part["skipped"].sum())})
        return pd.DataFrame(rows)

    def _accuracy(self, label: str) -> float:
        return float(self.totals_frame().set_index("questions").loc[label, "accuracy"])

    @property
    def accuracy(self) -> float:
        """Correct / answered over every section (gensim's "Total accuracy")."""
        return self._accuracy("all")

    @property
    def semantic_accuracy(self) -> float:
        return self._accuracy("semantic")

    @property
    def syntactic_accuracy(self) -> float:
        return self._accuracy("syntactic")


def _case_groups(words: Sequence[str]) -> tuple[dict[str, int], np.ndarray, dict[int, np.ndarray]]:
    """Case-insensitive keys (as gensim: upper case) of the candidate words.

    Returns the first row of every key, each row's key id (array of shape (n_words,)) and, for keys
    spelled several ways, all their rows.
    """
    first: dict[str, int] = {}
    key_ids = np.empty(len(words), dtype=np.int64)
    for row, word in enumerate(words):
        key_ids[row] = first.setdefault(word.upper(), row)
    counts = np.bincount(key_ids, minlength=len(words))
    shared = {int(key): np.flatnonzero(key_ids == key) for key in np.flatnonzero(counts > 1)}
    return first, key_ids, shared


def _excluded(rows_abc: np.ndarray, shared: dict[int, np.ndarray]) -> np.ndarray:
    """Per question, the candidate rows never to answer: every case variant of its three words."""
    if not shared or not np.isin(rows_abc, list(shared)).any():
        return rows_abc
    excluded = [np.concatenate([shared.get(int(key), [key]) for key in keys]) for keys in rows_abc]
    width = max(len(e) for e in excluded)
    return np.stack([np.pad(e, (0, width - len(e)), mode="edge") for e in excluded])


def analogy_accuracy(
    wv: WordVectors,
    path: str | os.PathLike | None = None,
    method: str = "3cosadd",
    *,
    restrict_vocab: int = 300_000,
    batch_size: int | None = None,
) -> AnalogyAccuracy:
    """Accuracy on an analogy test set, counted as gensim's ``evaluate_word_analogies`` counts.

    Parameters
    ----------
    wv
        The table, most frequent words first.
    path
        A ``questions-words.txt``-style file; None: Google's set (``find_analogy_questions()``).
    method
        "3cosadd" (gensim's evaluation) or "3cosmul".
    restrict_vocab
        Only the first ``restrict_vocab`` words are used: as question words (questions with another
        word are skipped) and as answers.
    batch_size
        Questions per matrix product; None sizes batches to about 128 MiB of scores.

    Returns
    -------
    AnalogyAccuracy

    Notes
    -----
    Conventions (module docstring): case-insensitive matching, the first of several case variants,
    the three query words (in any case) never answers, skipped questions reported apart.
    """
    wv = _check_table(wv)
    method = _check_method(method)
    path = Path(path) if path is not None else find_analogy_questions()
    questions = read_analogy_questions(path)
    n_candidates = _candidate_count(wv, restrict_vocab)
    first, key_ids, shared = _case_groups(wv.words[:n_candidates])
    keyed = questions[["a", "b", "c", "expected"]].map(lambda w: first.get(w.upper(), -1)).to_numpy(np.int64)
    skipped = (keyed < 0).any(axis=1)
    answerable = np.flatnonzero(~skipped)
    predicted = np.full(len(questions), -1, dtype=np.int64)
    if batch_size is None:
        batch_size = max(1, _BATCH_ENTRIES // (n_candidates * _METHOD_BUFFERS[method]))
    elif batch_size < 1:
        raise ValueError(f"batch_size must be at least 1 question, got {batch_size}")
    unit = wv.unit()
    candidates = unit[:n_candidates]
    buffers = _scores_buffers(method, min(batch_size, max(answerable.size, 1)), n_candidates)
    for start in range(0, answerable.size, batch_size):
        batch = answerable[start : start + batch_size]
        rows_abc = keyed[batch, :3]
        views = [buffer[: batch.size] for buffer in buffers]
        scores = ANALOGY_METHODS[method](candidates, *(unit[rows_abc[:, j]] for j in range(3)), views)
        np.put_along_axis(scores, _excluded(rows_abc, shared), -np.inf, axis=1)
        predicted[batch] = scores.argmax(axis=1)
    words = np.asarray(wv.words[:n_candidates], dtype=object)
    table = questions.copy()
    table["predicted"] = np.where(predicted >= 0, words[np.maximum(predicted, 0)], "")
    table["correct"] = (predicted >= 0) & (key_ids[np.maximum(predicted, 0)] == keyed[:, 3])
    table["skipped"] = skipped
    return AnalogyAccuracy(wv.name, method, n_candidates, str(path), table)


# ------------------------------------------------------------------------------------ word categories
#: Small word groups for the geometry of word vectors. Most words also occur in the King James
#: Bible, so that a model trained on it knows them; countries and capitals are ancient and modern
#: names that GloVe knows too.
WORD_CATEGORIES: dict[str, tuple[str, ...]] = {
    "countries": ("egypt", "israel", "syria", "ethiopia", "lebanon", "cyprus", "persia", "assyria", "greece", "italy"),
    "capitals": ("jerusalem", "damascus", "babylon", "nineveh", "samaria", "rome", "athens", "cairo", "paris", "london"),
    "animals": ("lion", "sheep", "goat", "horse", "camel", "dove", "eagle", "serpent", "ox", "wolf"),
    "colours": ("red", "white", "black", "blue", "purple", "green", "scarlet", "crimson", "yellow"),
    "numbers": ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"),
}


@dataclass
class WordCategoryGeometry:
    """How several word-vector tables arrange the same categorised words.

    Attributes
    ----------
    models
        The tables' names, in the order given.
    words, categories
        The words every table knows, grouped by category, and each word's category.
    dropped
        Per table, the category words it lacks (dropped from every table).
    metric
        The RDM metric.
    rdms
        Per table, the ``analyses.RDM`` over ``words`` (descriptors "word" and "category").
    cka
        Linear CKA between every pair of tables (``SimilarityMatrix``; its names are the tables).
    rdm_similarity
        The comparison of every pair of RDMs (``SimilarityMatrix``).
    within, between
        Per table, the mean dissimilarity of word pairs within a category and across categories.
    p_values
        Per table, the permutation p-value of within / between (shuffled category labels).
    coordinates, explained_variance
        Per table, the words on their first two principal components (array of shape
        (n_words, 2)) and the variance fraction of each component (array of shape (2,)).
    """

    models: list[str]
    words: list[str]
    categories: list[str]
    dropped: dict[str, list[str]]
    metric: str
    rdms: dict[str, RDM]
    cka: SimilarityMatrix | None
    rdm_similarity: SimilarityMatrix | None
    within: dict[str, float]
    between: dict[str, float]
    p_values: dict[str, float]
    coordinates: dict[str, np.ndarray]
    explained_variance: dict[str, np.ndarray]
    n_permutations: int = 0

    def ratio(self, model: str) -> float:
        """Mean within-category over mean between-category dissimilarity (< 1: categories cluster)."""
        return self.within[model] / self.between[model]

    def to_frame(self) -> pd.DataFrame:
        """One row per table: model, n_words, within, between, ratio, p_value, the words it lacked."""
        return pd.DataFrame([
            {"model": m, "n_words": len(self.words), "metric": self.metric, "within": self.within[m],
             "between": self.between[m], "ratio": self.ratio(m), "p_value": self.p_values[m],
             "n_dropped": len(self.dropped[m]), "dropped": " ".join(self.dropped[m])}
            for m in self.models
        ])

    def similarity_frame(self) -> pd.DataFrame:
        """One row per ordered pair of tables: model_a, model_b, linear CKA, RDM comparison."""
        rows = []
        for i, a in enumerate(self.models):
            for j, b in enumerate(self.models):
                rows.append({"model_a": a, "model_b": b,
                             "cka": self.cka.values[i, j] if self.cka is not None else np.nan,
                             "rdm_similarity": self.rdm_similarity.values[i, j]
                             if self.rdm_similarity is not None else np.nan})
        return pd.DataFrame(rows)

    def coordinates_frame(self) -> pd.DataFrame:
        """One row per (table, word): model, word, category, pc_1, pc_2."""
        return pd.concat([
            pd.DataFrame({"model": m, "word": self.words, "category": self.categories,
                          "pc_1": self.coordinates[m][:, 0], "pc_2": self.coordinates[m][:, 1]})
            for m in self.models
        ], ignore_index=True)


def _category_words(categories: Mapping[str, Iterable[str]]) -> tuple[list[str], list[str]]:
    words, labels, owner = [], [], {}
    for category, members in categories.items():
        for word in members:
            if word in owner:
                raise ValueError(f"the word {word!r} is in two categories, {owner[word]!r} and {category!r}; keep it in one")
            owner[word] = category
            words.append(word)
            labels.append(str(category))
    return words, labels


def _within_between(matrix: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    rows, cols = np.triu_indices(len(labels), 1)
    same = labels[rows] == labels[cols]
    values = matrix[rows, cols]
    return float(values[same].mean()), float(values[~same].mean())


def _principal_plane(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    centred = X - X.mean(axis=0)
    u, s, vt = np.linalg.svd(centred, full_matrices=False)
    signs = np.sign(vt[:2][np.arange(2), np.abs(vt[:2]).argmax(axis=1)])  # deterministic orientation
    coordinates = u[:, :2] * s[:2] * signs
    variance = s**2
    return coordinates, variance[:2] / variance.sum()


def word_category_geometry(
    vectors_by_model: Mapping[str, WordVectors],
    categories: Mapping[str, Iterable[str]] = WORD_CATEGORIES,
    metric: str = "correlation",
    *,
    comparison: str = "spearman",
    n_permutations: int = 1000,
    seed: int = 0,
) -> WordCategoryGeometry:
    """RDMs, CKA and category clustering of several word-vector tables on the same categorised words.

    Parameters
    ----------
    vectors_by_model
        ``{name: WordVectors}``; one table is enough (then no comparison between tables).
    categories
        ``{category: words}``; default ``WORD_CATEGORIES``. Only words every table knows are kept.
    metric
        RDM metric (``analyses.rdm``).
    comparison
        How RDMs are compared (``analyses.compare_rdms``): "spearman" by default.
    n_permutations
        Category-label shuffles for the p-value of within / between (0: none, p-values NaN).
    seed
        Seed of the shuffles.

    Returns
    -------
    WordCategoryGeometry

    Raises
    ------
    ValueError
        Fewer than 3 shared words, or fewer than 2 categories left among them.
    """
    if not vectors_by_model:
        raise ValueError("no word-vector tables given; pass {name: zoo.WordVectors}")
    tables = {str(name): _check_table(wv) for name, wv in vectors_by_model.items()}
    comparison = resolve_method(comparison)
    all_words, all_labels = _category_words(categories)
    dropped = {name: [w for w in all_words if w not in wv] for name, wv in tables.items()}
    lacking = set().union(*map(set, dropped.values()))
    kept = [(w, c) for w, c in zip(all_words, all_labels) if w not in lacking]
    words, labels = [w for w, _ in kept], np.asarray([c for _, c in kept], dtype=object)
    if len(words) < 3 or len(set(labels)) < 2:
        raise ValueError(
            f"only {len(words)} word(s) in {len(set(labels))} categor(ies) are known to every table "
            f"(lacking: { {n: d[:10] for n, d in dropped.items() if d} }); choose categories the tables share"
        )
    arrays = {name: np.asarray(wv.subset(words).vectors, dtype=np.float64) for name, wv in tables.items()}
    descriptors = {"word": np.asarray(words, dtype=object), "category": labels}
    rdms = {name: rdm(X, metric, descriptors, name=name) for name, X in arrays.items()}
    rng = np.random.default_rng(seed)
    shuffles = [rng.permutation(labels) for _ in range(n_permutations)]
    within, between, p_values, coordinates, explained = {}, {}, {}, {}, {}
    for name, result in rdms.items():
        matrix = np.asarray(result)
        within[name], between[name] = _within_between(matrix, labels)
        observed = within[name] / between[name]
        null = [np.divide(*_within_between(matrix, shuffled)) for shuffled in shuffles]
        p_values[name] = (1 + sum(r <= observed for r in null)) / (1 + n_permutations) if shuffles else np.nan
        coordinates[name], explained[name] = _principal_plane(arrays[name])
    several = len(tables) > 1
    return WordCategoryGeometry(
        models=list(tables),
        words=words,
        categories=list(labels),
        dropped=dropped,
        metric=metric,
        rdms=rdms,
        cka=cka_matrix(arrays, progress=False) if several else None,
        rdm_similarity=rdm_similarity_matrix(rdms, comparison, progress=False) if several else None,
        within=within,
        between=between,
        p_values=p_values,
        coordinates=coordinates,
        explained_variance=explained,
        n_permutations=n_permutations,
    )
