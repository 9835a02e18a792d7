"""Text corpora that load offline, as datasets of token sequences (``zoo.load_dataset("bible-kjv")``).

Sources
-------
``"bible-kjv"``
    The King James Bible (public domain) of Debian's ``bible-kjv``, dumped with its ``bible`` command; the
    chapter headings ("Genesis 1") and verse numbers are dropped, so that only the verses' words count
    (about 0.79 M words). ``apt-get install bible-kjv``.
``"wordnet-glosses"``
    The glosses (definitions and their quoted examples) of every synset of Debian's ``wordnet-base``: the
    text after the ``|`` of each line of its ``data.noun``, ``data.verb``, ``data.adj`` and ``data.adv``
    (117,659 glosses, about 1.5 M words). ``apt-get install wordnet-base``.
``"pydoc-topics"``
    Python's own documentation topics (``pydoc_data.topics.topics``, what ``help("if")`` shows), which ship
    with CPython, so that one corpus exists on every machine (about 65 k words).
``"text:PATH"``
    A UTF-8 text file, or a folder of ``*.txt`` files (searched recursively, read in sorted path order).

The words are ``zoo._text.tokenize``'s. Each corpus is read and tokenised once per process; a text file
that changes (path, size or modification time) is read again.

The split
---------
The word stream is cut into consecutive sequences of ``sequence_length`` words (a last, shorter remainder
is dropped), and the sequences into consecutive blocks of ``SPLIT_BLOCK_SEQUENCES`` (fewer on a small
corpus, so that the test split has ``MIN_TEST_BLOCKS`` blocks where it can). Evenly spaced blocks form the
test split: block ``i`` is a test block when ``floor((i + 1) * f) > floor(i * f)`` with ``f`` the
``test_fraction``, so that with ``f = 1 / k`` every k-th block is a test block (blocks k-1, 2k-1, ...). The
split is thus a fixed function of the corpus and the options (no seed), about ``f`` of the sequences are
test, and both splits sample the whole corpus (every book of the Bible, every part of speech of WordNet).
The vocabulary is built from the train split alone and shared by both; a test word it lacks is ``<unk>``.
"""

from __future__ import annotations

import functools
import itertools
import os
import re
import shutil
import subprocess
import sys
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from zoo._names import unknown_name_error
from zoo._text import TokenDataset, Vocabulary, tokenize

__all__ = [
    "BIBLE_APT",
    "MIN_TEST_BLOCKS",
    "SPLIT_BLOCK_SEQUENCES",
    "TEXT_CORPORA",
    "TEXT_PREFIX",
    "WORDNET_APT",
    "corpus_split",
    "corpus_status",
    "corpus_text",
    "corpus_tokens",
    "load_corpus",
]

TEXT_CORPORA = ("bible-kjv", "pydoc-topics", "wordnet-glosses")
TEXT_PREFIX = "text:"
#: Sequences per block of the train/test split (256 words at the default sequence length).
SPLIT_BLOCK_SEQUENCES = 8
#: Blocks shrink (down to one sequence) until the test split has at least this many, where the corpus allows.
MIN_TEST_BLOCKS = 10
BIBLE_APT = "apt-get install bible-kjv"
WORDNET_APT = "apt-get install wordnet-base"

# The whole KJV, as the bible command takes a range; -l0 turns off its line wrapping.
_BIBLE_COMMAND = ("-l0", "Genesis1:1-Revelation22:21")
_BIBLE_TIMEOUT_S = 120
_VERSE = re.compile(r"^[ \t]+\d+[ \t]+(.*)$", re.MULTILINE)
# Where Debian's wordnet-base puts its database (when dpkg cannot say).
_DEBIAN_WORDNET = Path("/usr/share/wordnet")
_WORDNET_FILES = ("data.noun", "data.verb", "data.adj", "data.adv")
# Tokenised corpora and split vocabularies kept per process (a few: a corpus holds up to ~1.5 M words).
_CACHE_SIZE = 4
_TOKENS: OrderedDict = OrderedDict()
_SPLITS: OrderedDict = OrderedDict()


@dataclass(frozen=True)
class _Source:
    """A located corpus: ``fingerprint`` changes when its text may have; ``read()`` returns the text."""

    fingerprint: tuple
    read: Callable[[], str]


def _file_fingerprint(path: Path) -> tuple:
    stat = path.stat()
    return (str(path), stat.st_mtime_ns, stat.st_size)


# --- bible-kjv --------------------------------------------------------------------------------------


def _bible_source() -> _Source:
    executable = shutil.which("bible")
    if executable is None:
        raise FileNotFoundError(
            f"bible-kjv needs the 'bible' command of Debian's bible-kjv (the public-domain King James Bible), "
            f"which is not on PATH: {BIBLE_APT}"
        )
    return _Source(("bible-kjv", *_file_fingerprint(Path(executable))), lambda: _read_bible(executable))


def _read_bible(executable: str) -> str:
    command = [executable, *_BIBLE_COMMAND]
    try:
        done = subprocess.run(command, capture_output=True, text=True, encoding="utf-8", errors="replace",
                              timeout=_BIBLE_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"bible-kjv: {' '.join(command)!r} did not finish in {_BIBLE_TIMEOUT_S} s") from None
    verses = _VERSE.findall(done.stdout)
    if done.returncode != 0 or not verses:
        raise RuntimeError(
            f"bible-kjv: {' '.join(command)!r} exited with {done.returncode} and printed no verses "
            f"({done.stderr.strip()[:300] or 'no message'}); reinstall it: {BIBLE_APT} --reinstall"
        )
    return "\n".join(verses)


# --- wordnet-glosses --------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _wordnet_folder() -> Path:
    """The folder of wordnet-base's ``data.*`` files, as ``dpkg -L wordnet-base`` lists it."""
    if shutil.which("dpkg"):
        try:
            listing = subprocess.run(["dpkg", "-L", "wordnet-base"], capture_output=True, text=True, timeout=30,
                                     check=False).stdout
        except (OSError, subprocess.SubprocessError):
            listing = ""
        for line in listing.splitlines():
            if line.strip().endswith(f"/{_WORDNET_FILES[0]}"):
                return Path(line.strip()).parent
    return _DEBIAN_WORDNET


def _wordnet_source() -> _Source:
    folder = _wordnet_folder()
    files = [folder / name for name in _WORDNET_FILES]
    missing = [path.name for path in files if not path.is_file()]
    if missing:
        raise FileNotFoundError(
            f"wordnet-glosses: missing {', '.join(missing)} in {folder} (the database of Debian's wordnet-base, "
            f"WordNet 3.0): {WORDNET_APT}"
        )
    return _Source(("wordnet-glosses", *(_file_fingerprint(path) for path in files)), lambda: _read_glosses(files))


def _read_glosses(files: list[Path]) -> str:
    glosses = []
    for path in files:
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            # The license header's lines start with two spaces; a synset line's gloss follows " | ".
            if not line.startswith("  ") and " | " in line:
                glosses.append(line.split(" | ", 1)[1].strip())
    return "\n".join(glosses)


# --- pydoc-topics -------------------------------------------------------------------------------------


def _pydoc_source() -> _Source:
    try:
        from pydoc_data.topics import topics
    except ImportError:  # some distributions split it off (Debian: libpython3-stdlib ships it)
        raise FileNotFoundError(
            "pydoc-topics needs Python's pydoc_data module, which this Python lacks; use a full CPython "
            "(on Debian: apt-get install libpython3-stdlib)"
        ) from None
    return _Source(("pydoc-topics", sys.version), lambda: "\n".join(topics[key] for key in sorted(topics)))


# --- text:PATH ----------------------------------------------------------------------------------------


def _text_files(path: str, root) -> list[Path]:
    if not path:
        raise ValueError("text: names no file; write text:PATH, with PATH a UTF-8 text file or a folder of .txt files")
    location = Path(path).expanduser()
    if root is not None and not location.is_absolute():
        location = Path(root) / location
    if location.is_file():
        return [location]
    if location.is_dir():
        files = sorted(p for p in location.rglob("*.txt") if p.is_file())
        if not files:
            raise FileNotFoundError(f"text:{path}: the folder {location} holds no .txt file; put UTF-8 .txt files "
                                    "in it (sub-folders count), or give text:FILE")
        return files
    raise FileNotFoundError(f"text:{path}: {location} does not exist; give text:PATH with PATH a UTF-8 text file "
                            "or a folder of .txt files")


def _text_source(path: str, root) -> _Source:
    files = _text_files(path, root)
    return _Source((TEXT_PREFIX, *(_file_fingerprint(file) for file in files)), lambda: _read_text_files(path, files))


def _read_text_files(path: str, files: list[Path]) -> str:
    texts = []
    for file in files:
        try:
            texts.append(file.read_text(encoding="utf-8"))
        except UnicodeDecodeError as error:
            raise ValueError(
                f"text:{path}: {file} is not UTF-8 text (byte {error.start}: {error.reason}); convert it, e.g. "
                f"iconv -f latin1 -t utf-8 {file.name} > {file.stem}.utf8.txt, or move it out of the corpus"
            ) from None
    return "\n".join(texts)


# --- reading, tokenising and splitting ----------------------------------------------------------------


def _locate(name: str, root=None) -> _Source:
    if name.startswith(TEXT_PREFIX):
        return _text_source(name[len(TEXT_PREFIX):], root)
    sources = {"bible-kjv": _bible_source, "wordnet-glosses": _wordnet_source, "pydoc-topics": _pydoc_source}
    if name not in sources:
        raise unknown_name_error("text corpus", name, [*TEXT_CORPORA, "text:PATH"], listing="zoo.list_datasets()")
    return sources[name]()


def corpus_text(name: str, root: str | os.PathLike | None = None) -> str:
    """The raw text of a corpus, as it is tokenised (read anew on every call).

    Parameters
    ----------
    name
        ``"bible-kjv"``, ``"wordnet-glosses"``, ``"pydoc-topics"`` or ``"text:PATH"`` (see the module docstring).
    root
        Folder a relative ``text:PATH`` is taken from (default: the working directory).

    Raises
    ------
    FileNotFoundError
        The corpus is not installed (the message gives the apt line) or the text file or folder is missing.
    ValueError
        A text file is not UTF-8 (named).
    """
    return _locate(name, root).read()


def _remember(cache: OrderedDict, key, compute: Callable):
    """``cache[key]``, computed on first use; only the ``_CACHE_SIZE`` most recently used entries are kept."""
    if key in cache:
        cache.move_to_end(key)
        return cache[key]
    value = compute()
    cache[key] = value
    while len(cache) > _CACHE_SIZE:
        cache.popitem(last=False)
    return value


def _tokens(source: _Source, name: str) -> tuple[str, ...]:
    def read() -> tuple[str, ...]:
        # Interned, each distinct word is stored once however often it occurs.
        tokens = tuple(map(sys.intern, tokenize(source.read())))
        if not tokens:
            raise ValueError(f"{name}: the corpus has no words (see zoo._text.tokenize); give a text with words")
        return tokens

    return _remember(_TOKENS, source.fingerprint, read)


def corpus_tokens(name: str, root: str | os.PathLike | None = None) -> tuple[str, ...]:
    """The words of a corpus (``tokenize(corpus_text(name))``), read and tokenised once per process.

    A ``text:PATH`` corpus is read again when a file's size or modification time changes. Parameters and
    errors as ``corpus_text``, and ValueError when the corpus has no words.
    """
    return _tokens(_locate(name, root), name)


def corpus_split(n_sequences: int, test_fraction: float = 0.05) -> np.ndarray:
    """Which of a corpus's consecutive sequences are test sequences (see "The split" in the module docstring).

    Parameters
    ----------
    n_sequences
        How many sequences the corpus is cut into.
    test_fraction
        The share of sequences to hold out, in [0, 1).

    Returns
    -------
    np.ndarray
        Bool array of shape (n_sequences,), True for a test sequence.
    """
    fraction = Fraction(test_fraction).limit_denominator(1_000_000)
    block = int(np.clip(int(n_sequences * fraction) // MIN_TEST_BLOCKS, 1, SPLIT_BLOCK_SEQUENCES))
    index = np.arange(-(-n_sequences // block), dtype=np.int64)
    # Integer arithmetic: floor((i + 1) f) > floor(i f), with f = numerator / denominator exactly.
    numerator, denominator = fraction.numerator, fraction.denominator
    test_blocks = ((index + 1) * numerator) // denominator > (index * numerator) // denominator
    return np.repeat(test_blocks, block)[:n_sequences]


def _check_options(sequence_length, min_count, max_vocab, test_fraction) -> None:
    if isinstance(sequence_length, bool) or not isinstance(sequence_length, (int, np.integer)) or sequence_length < 2:
        raise ValueError(f"sequence_length must be an int of at least 2 words, got {sequence_length!r}")
    if isinstance(min_count, bool) or not isinstance(min_count, (int, np.integer)) or min_count < 1:
        raise ValueError(f"min_count must be an int of at least 1, got {min_count!r}")
    if max_vocab is not None and (isinstance(max_vocab, bool) or not isinstance(max_vocab, (int, np.integer))
                                  or max_vocab < 1):
        raise ValueError(f"max_vocab must be None (no cap) or a positive int, got {max_vocab!r}")
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, (int, float)) or not 0 <= test_fraction < 1:
        raise ValueError(f"test_fraction must be a number in [0, 1), got {test_fraction!r}")


def _split_corpus(tokens: tuple[str, ...], name: str, sequence_length: int, min_count: int, max_vocab: int | None,
                  test_fraction: float) -> tuple[TokenDataset, TokenDataset | None]:
    n_sequences = len(tokens) // sequence_length
    if n_sequences == 0:
        raise ValueError(f"{name}: the corpus has {len(tokens)} words, fewer than one sequence of {sequence_length}; "
                         "lower sequence_length or give a longer text")
    in_test = corpus_split(n_sequences, test_fraction)
    starts = np.arange(n_sequences) * sequence_length

    def words(which: np.ndarray) -> list[str]:
        return list(itertools.chain.from_iterable(tokens[start : start + sequence_length] for start in starts[which]))

    train_words = words(~in_test)
    vocabulary = Vocabulary.build(train_words, min_count=min_count, max_size=max_vocab)
    train = TokenDataset.from_tokens(name, train_words, vocabulary, sequence_length)
    if not in_test.any():
        return train, None
    test = TokenDataset.from_tokens(name, words(in_test), vocabulary, sequence_length)
    return train, TokenDataset(test.ids, train.info)


def load_corpus(
    name: str,
    split: str = "train",
    root: str | os.PathLike | None = None,
    download: bool = False,
    sequence_length: int = 32,
    min_count: int = 5,
    max_vocab: int | None = None,
    test_fraction: float = 0.05,
) -> TokenDataset:
    """A text corpus as a dataset of token sequences (what ``zoo.load_dataset`` returns for a corpus name).

    Parameters
    ----------
    name
        ``"bible-kjv"``, ``"wordnet-glosses"``, ``"pydoc-topics"`` or ``"text:PATH"`` (see the module docstring).
    split
        ``"train"`` or ``"test"``: evenly spaced blocks of consecutive sequences (see "The split").
    root
        Folder a relative ``text:PATH`` is taken from (default: the working directory).
    download
        Ignored: every corpus is read offline.
    sequence_length
        Words per sequence.
    min_count
        The vocabulary keeps the train split's words seen at least this often; others are ``<unk>``.
    max_vocab
        Keep at most this many words (the most frequent), besides the special tokens; None: no cap.
    test_fraction
        Share of the sequences held out as the test split, in [0, 1).

    Returns
    -------
    TokenDataset
        ``ids`` of shape (n_sequences, sequence_length); ``info`` is ``TextInfo(name, vocabulary,
        sequence_length)`` with the train split's vocabulary, the same object for both splits.

    Raises
    ------
    FileNotFoundError
        The corpus is not installed (the apt line) or the text file or folder is missing.
    ValueError
        A bad split or option, a text file that is not UTF-8, a corpus too short for one sequence, or a
        test split asked for that ``test_fraction`` leaves empty.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    _check_options(sequence_length, min_count, max_vocab, test_fraction)
    source = _locate(name, root)
    tokens = _tokens(source, name)
    key = (source.fingerprint, name, int(sequence_length), int(min_count), max_vocab, float(test_fraction))
    train, test = _remember(_SPLITS, key, lambda: _split_corpus(tokens, name, int(sequence_length), int(min_count),
                                                                 max_vocab, float(test_fraction)))
    chosen = train if split == "train" else test
    if chosen is None:
        raise ValueError(
            f"{name}: test_fraction={test_fraction} leaves no test sequence of the corpus's {len(train)} sequences "
            f"of {sequence_length} words; raise test_fraction or lower sequence_length"
        )
    # A fresh table: the cached one stays as it was, whatever the caller does to its copy.
    return TokenDataset(chosen.ids.clone(), chosen.info)


# --- status ------------------------------------------------------------------------------------------


def corpus_status(name: str) -> tuple[bool, str, str]:
    """``(available, source, install)`` of a corpus name of ``TEXT_CORPORA`` or ``"text:PATH"``; reads no text."""
    if name == "bible-kjv":
        executable = shutil.which("bible")
        source = f"Debian's bible-kjv, the King James Bible ({executable or 'the bible command'})"
        return executable is not None, source, "" if executable else BIBLE_APT
    if name == "wordnet-glosses":
        folder = _wordnet_folder()
        found = all((folder / file).is_file() for file in _WORDNET_FILES)
        return found, f"glosses of Debian's wordnet-base ({folder}/data.*)", "" if found else WORDNET_APT
    if name == "pydoc-topics":
        import importlib.util

        found = importlib.util.find_spec("pydoc_data") is not None
        return found, "Python's documentation topics (pydoc_data.topics)", "" if found else "a full CPython"
    if name == "text:PATH":
        return True, "a UTF-8 text file or a folder of .txt files you give", ""
    raise unknown_name_error("text corpus", name, [*TEXT_CORPORA, "text:PATH"], listing="zoo.list_datasets()")
