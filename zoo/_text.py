"""Text as the zoo's models see it: a tokeniser, a vocabulary and datasets of token sequences.

The tokeniser is deliberately simple and documented, so that every corpus, every model and the
word-vector tools agree on what a "word" is: the text is lower-cased, and a word is a maximal run of
letters (ASCII or not), optionally joined by inner apostrophes or hyphens (``don't``, ``well-known``),
or a run of digits. Everything else (punctuation, whitespace) separates words and is dropped.

A ``Vocabulary`` keeps the words seen at least ``min_count`` times, most frequent first, after three
special tokens: ``<pad>`` (id 0), ``<unk>`` (id 1, every other word) and ``<mask>`` (id 2, what a
masked language model sees in place of a hidden word). Word2vec's subsampling of frequent words is
``subsample_keep_probability``: a word of corpus frequency ``f`` is kept with probability
``min(1, sqrt(t / f) + t / f)`` (the formula of the word2vec C code).

A ``TokenDataset`` holds a corpus cut into fixed-length sequences of token ids; ``dataset[i]`` is
``(ids, -1)`` with ``ids`` a long tensor of shape (sequence_length,), so that the zoo's training
loop and ``iterate_batches`` treat it like any other dataset.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = [
    "PAD",
    "UNK",
    "MASK",
    "SPECIAL_TOKENS",
    "tokenize",
    "Vocabulary",
    "subsample_keep_probability",
    "TextInfo",
    "TokenDataset",
]

PAD, UNK, MASK = "<pad>", "<unk>", "<mask>"
SPECIAL_TOKENS = (PAD, UNK, MASK)

_WORD = re.compile(r"[^\W\d_]+(?:['’-][^\W\d_]+)*|\d+")


def tokenize(text: str) -> list[str]:
    """The words of ``text``, lower-cased, in order (see the module docstring for what a word is).

    Examples
    --------
    >>> tokenize("In the beginning God created the heaven, and the earth's 2 lights.")
    ['in', 'the', 'beginning', 'god', 'created', 'the', 'heaven', 'and', 'the', "earth's", '2', 'lights']
    """
    return [word.replace("’", "'") for word in _WORD.findall(text.lower())]


@dataclass(frozen=True)
class Vocabulary:
    """Words and their corpus counts; a word's id is its position in ``words``.

    Attributes
    ----------
    words
        ``SPECIAL_TOKENS`` first, then the kept words by decreasing count (ties: alphabetical).
    counts
        How often each word occurs in the corpus it was built from (0 for ``<pad>`` and ``<mask>``;
        ``<unk>`` counts the occurrences of the words left out).
    """

    words: tuple[str, ...]
    counts: tuple[int, ...]

    def __post_init__(self) -> None:
        if tuple(self.words[: len(SPECIAL_TOKENS)]) != SPECIAL_TOKENS:
            raise ValueError(f"a vocabulary starts with the special tokens {SPECIAL_TOKENS}, got {self.words[:3]}")
        if len(self.words) != len(self.counts):
            raise ValueError(f"{len(self.words)} words but {len(self.counts)} counts")
        if len(set(self.words)) != len(self.words):
            raise ValueError("a vocabulary lists each word once")
        object.__setattr__(self, "_ids", {word: i for i, word in enumerate(self.words)})

    @classmethod
    def build(cls, tokens: Iterable[str], min_count: int = 5, max_size: int | None = None) -> "Vocabulary":
        """The vocabulary of a stream of words.

        Parameters
        ----------
        tokens
            Words, e.g. ``tokenize(text)``.
        min_count
            Keep words seen at least this often (word2vec's default is 5).
        max_size
            Keep at most this many words (the most frequent), besides the special tokens.
        """
        if min_count < 1:
            raise ValueError(f"min_count must be at least 1, got {min_count}")
        counter = Counter(tokens)
        for special in SPECIAL_TOKENS:
            counter.pop(special, None)
        kept = sorted((w for w, c in counter.items() if c >= min_count), key=lambda w: (-counter[w], w))
        if max_size is not None:
            kept = kept[:max_size]
        unknown = sum(counter.values()) - sum(counter[w] for w in kept)
        return cls(SPECIAL_TOKENS + tuple(kept), (0, unknown, 0) + tuple(counter[w] for w in kept))

    def __len__(self) -> int:
        return len(self.words)

    def __contains__(self, word: str) -> bool:
        return word in self._ids

    def id(self, word: str) -> int:
        """The id of ``word`` (the id of ``<unk>`` for a word not kept)."""
        return self._ids.get(word, 1)

    def encode(self, words: Sequence[str]) -> np.ndarray:
        """Ids of ``words`` as an int64 array (``<unk>`` for words not kept)."""
        ids = self._ids
        return np.fromiter((ids.get(w, 1) for w in words), dtype=np.int64, count=len(words))

    def decode(self, ids: Iterable[int]) -> list[str]:
        """The words of ``ids``."""
        return [self.words[int(i)] for i in ids]


def subsample_keep_probability(counts: Sequence[int] | np.ndarray, threshold: float = 1e-3) -> np.ndarray:
    """Word2vec's probability of keeping each occurrence of a word, from the words' corpus counts.

    ``min(1, sqrt(t / f) + t / f)`` with ``f`` the word's share of all counted words and ``t`` the
    ``threshold``; words never counted (the special tokens) get 1. ``threshold=0`` keeps everything.
    """
    counts = np.asarray(counts, dtype=np.float64)
    if threshold < 0:
        raise ValueError(f"the subsampling threshold must be >= 0, got {threshold}")
    keep = np.ones_like(counts)
    if threshold == 0 or counts.sum() == 0:
        return keep
    seen = counts > 0
    ratio = threshold / (counts[seen] / counts.sum())
    keep[seen] = np.minimum(1.0, np.sqrt(ratio) + ratio)
    return keep


@dataclass(frozen=True)
class TextInfo:
    """What a text dataset says about itself (the counterpart of ``DatasetInfo``).

    Attributes
    ----------
    name
        The name it was loaded by, e.g. ``"bible-kjv"`` or ``"text:notes/"``.
    vocabulary
        Its words and counts (built from the training split).
    sequence_length
        Tokens per item.
    """

    name: str
    vocabulary: Vocabulary
    sequence_length: int
    class_names: None = None

    @property
    def n_classes(self) -> int:
        """0: text corpora are unlabelled."""
        return 0

    @property
    def input_shape(self) -> tuple[int]:
        """(sequence_length,): the shape of one item."""
        return (self.sequence_length,)


class TokenDataset(Dataset):
    """A corpus cut into sequences of token ids.

    Parameters
    ----------
    ids
        Long tensor of shape (n, sequence_length).
    info
        The dataset's description.
    """

    def __init__(self, ids: torch.Tensor, info: TextInfo):
        if ids.dim() != 2 or ids.shape[1] != info.sequence_length:
            raise ValueError(f"ids must have shape (n, {info.sequence_length}), got {tuple(ids.shape)}")
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= len(info.vocabulary)):
            raise ValueError(f"token ids must lie in 0..{len(info.vocabulary) - 1}")
        self.ids = ids.long()
        self.info = info

    def __len__(self) -> int:
        return self.ids.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.ids[index], -1

    def get_batch(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Sequences of shape (len(indices), sequence_length) and labels -1 of shape (len(indices),)."""
        indices = indices.to(self.ids.device)
        return self.ids[indices], torch.full((len(indices),), -1, dtype=torch.long, device=self.ids.device)

    def to(self, device: str | torch.device) -> "TokenDataset":
        """The same dataset with its ids on ``device``."""
        return TokenDataset(self.ids.to(device), self.info)

    @property
    def nbytes(self) -> int:
        """Memory held by the ids."""
        return self.ids.element_size() * self.ids.nelement()

    @classmethod
    def from_tokens(cls, name: str, tokens: Sequence[str], vocabulary: Vocabulary, sequence_length: int) -> "TokenDataset":
        """Cut a stream of words into consecutive sequences (a last, shorter remainder is dropped)."""
        if sequence_length < 2:
            raise ValueError(f"sequence_length must be at least 2, got {sequence_length}")
        ids = vocabulary.encode(tokens)
        n = len(ids) // sequence_length
        if n == 0:
            raise ValueError(f"{name!r} has {len(ids)} words, fewer than one sequence of {sequence_length}")
        table = torch.from_numpy(ids[: n * sequence_length].reshape(n, sequence_length).copy())
        return cls(table, TextInfo(name, vocabulary, sequence_length))
