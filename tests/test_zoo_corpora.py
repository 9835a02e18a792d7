"""Text corpora as zoo datasets: the sources, the vocabulary, the deterministic block split, the errors."""

import re
import shutil
from collections import Counter

import numpy as np
import pytest
import torch

import zoo
from zoo import _corpora
from zoo._corpora import corpus_split, corpus_text, corpus_tokens
from zoo._text import TextInfo, TokenDataset, tokenize

BIBLE_SKIP = "apt-get install -y bible-kjv"
WORDNET_SKIP = "apt-get install -y wordnet-base"
COLOURS = ["red", "green", "blue", "cyan", "magenta", "yellow", "black"]


def _expected_test(n_sequences: int, k: int, block: int) -> np.ndarray:
    """The documented rule for test_fraction = 1/k, written as a loop: every k-th block of ``block`` sequences."""
    return np.array([(i // block + 1) % k == 0 for i in range(n_sequences)])


def _expected_vocabulary(words: list[str], min_count: int, max_vocab=None) -> tuple[list[str], list[int]]:
    counts = Counter(words)
    kept = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))[:max_vocab]
    unknown = len(words) - sum(counts[w] for w in kept)
    return ["<pad>", "<unk>", "<mask>", *kept], [0, unknown, 0, *(counts[w] for w in kept)]


@pytest.fixture(scope="module")
def pydoc_words():
    from pydoc_data.topics import topics

    return tokenize("\n".join(topics[key] for key in sorted(topics)))


@pytest.fixture(scope="module")
def bible():
    if shutil.which("bible") is None:
        pytest.skip(BIBLE_SKIP)
    return corpus_tokens("bible-kjv"), zoo.load_dataset("bible-kjv"), zoo.load_dataset("bible-kjv", "test")


# --- the split ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("n, k, block", [(1000, 20, 5), (100_000, 20, 8), (31, 20, 1), (4000, 10, 8)])
def test_split_sends_every_kth_block_to_test(n, k, block):
    assert np.array_equal(corpus_split(n, 1 / k), _expected_test(n, k, block))


def test_split_fraction_and_coverage_for_any_fraction():
    for fraction in (0.05, 0.1, 0.3, 0.37):
        mask = corpus_split(5000, fraction)
        assert abs(mask.sum() - fraction * 5000) <= 8  # within one block
        test = np.flatnonzero(mask)
        assert test[0] < 500 and test[-1] >= 4500  # both splits sample the whole corpus
    assert not corpus_split(5000, 0).any()


def test_pydoc_vocabulary_and_ids_match_a_brute_force_split(pydoc_words):
    length, min_count = 16, 3
    train = zoo.load_dataset("pydoc-topics", sequence_length=length, min_count=min_count, test_fraction=0.1)
    test = zoo.load_dataset("pydoc-topics", "test", sequence_length=length, min_count=min_count, test_fraction=0.1)
    n = len(pydoc_words) // length
    in_test = _expected_test(n, 10, 8)
    sequences = [pydoc_words[i * length : (i + 1) * length] for i in range(n)]
    train_words = [w for i, s in enumerate(sequences) if not in_test[i] for w in s]
    test_words = [w for i, s in enumerate(sequences) if in_test[i] for w in s]

    words, counts = _expected_vocabulary(train_words, min_count)
    vocabulary = train.info.vocabulary
    assert list(vocabulary.words) == words and list(vocabulary.counts) == counts
    assert test.info == train.info == TextInfo("pydoc-topics", vocabulary, length)
    ids = {w: i for i, w in enumerate(words)}
    assert train.ids.tolist() == np.reshape([ids.get(w, 1) for w in train_words], (-1, length)).tolist()
    assert test.ids.tolist() == np.reshape([ids.get(w, 1) for w in test_words], (-1, length)).tolist()
    assert len(train) + len(test) == n and len(test) == in_test.sum()
    assert {"lambda", "return", "class"} <= set(words)

    capped = zoo.load_dataset("pydoc-topics", sequence_length=length, min_count=min_count, test_fraction=0.1,
                              max_vocab=50)
    assert list(capped.info.vocabulary.words) == _expected_vocabulary(train_words, min_count, 50)[0]


def test_split_is_the_same_after_the_cache_is_emptied():
    first = zoo.load_dataset("pydoc-topics", "test", sequence_length=8)
    first.ids.zero_()  # a caller's copy; the cached table is not touched
    second = zoo.load_dataset("pydoc-topics", "test", sequence_length=8)
    assert second.ids.any()
    _corpora._TOKENS.clear()
    _corpora._SPLITS.clear()
    third = zoo.load_dataset("pydoc-topics", "test", sequence_length=8)
    assert torch.equal(second.ids, third.ids) and second.info == third.info


def test_pydoc_topics_is_always_listed_and_here():
    names = zoo.list_datasets()
    assert {"bible-kjv", "wordnet-glosses", "pydoc-topics", "text:PATH"} <= set(names)
    status = {s.name: s for s in zoo.dataset_status()}
    assert status["pydoc-topics"].available and status["text:PATH"].available
    item, label = zoo.load_dataset("pydoc-topics")[0]
    assert item.dtype == torch.long and item.shape == (32,) and label == -1


# --- text:PATH ----------------------------------------------------------------------------------------


def test_text_file_corpus(tmp_path):
    path = tmp_path / "colours.txt"
    # 36 colours, then a last sequence of words seen nowhere else: it is the test split (block 10 of 10).
    path.write_text(" ".join(COLOURS[i % 7].upper() + "," for i in range(36)) + " zebra yak xenon walrus.")
    train = zoo.load_dataset(f"text:{path}", sequence_length=4, min_count=1, test_fraction=0.1)
    test = zoo.load_dataset(f"text:{path}", "test", sequence_length=4, min_count=1, test_fraction=0.1)
    words, counts = _expected_vocabulary([COLOURS[i % 7] for i in range(36)], 1)
    assert list(train.info.vocabulary.words) == words and list(train.info.vocabulary.counts) == counts
    assert train.info.name == f"text:{path}" and train.info.input_shape == (4,)
    assert train.ids.shape == (9, 4) and train.info.vocabulary.decode(train.ids[0]) == ["red", "green", "blue", "cyan"]
    assert test.ids.tolist() == [[1, 1, 1, 1]]  # unseen in train: <unk>
    with pytest.raises(ValueError, match="leaves no test sequence"):
        zoo.load_dataset(f"text:{path}", "test", sequence_length=4)  # 5 % of 10 sequences is none


def test_text_folder_is_read_recursively_in_sorted_path_order(tmp_path):
    folder = tmp_path / "corpus"
    (folder / "a").mkdir(parents=True)
    (folder / "b.txt").write_text("one two")
    (folder / "a" / "z.txt").write_text("three four")
    (folder / "notes.md").write_text("five")  # not a .txt file
    assert corpus_tokens(f"text:{folder}") == ("three", "four", "one", "two")
    dataset = zoo.load_dataset("text:corpus", root=tmp_path, sequence_length=2, min_count=1, test_fraction=0)
    assert dataset.info.name == "text:corpus"
    assert dataset.info.vocabulary.decode(dataset.ids.flatten()) == ["three", "four", "one", "two"]


def test_text_is_read_once_and_again_when_the_file_changes(tmp_path, monkeypatch):
    reads = []
    read = _corpora._read_text_files
    monkeypatch.setattr(_corpora, "_read_text_files", lambda *args: reads.append(args) or read(*args))
    path = tmp_path / "notes.txt"
    path.write_text("alpha beta " * 20)
    zoo.load_dataset(f"text:{path}", sequence_length=4, min_count=1)
    zoo.load_dataset(f"text:{path}", "test", sequence_length=4, min_count=1, test_fraction=0.1)
    assert len(reads) == 1
    path.write_text("gamma delta epsilon " * 20)
    dataset = zoo.load_dataset(f"text:{path}", sequence_length=4, min_count=1)
    assert len(reads) == 2 and "gamma" in dataset.info.vocabulary and "alpha" not in dataset.info.vocabulary


def test_text_errors_name_the_file_and_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.txt does not exist"):
        zoo.load_dataset(f"text:{tmp_path / 'missing.txt'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no .txt file"):
        zoo.load_dataset(f"text:{tmp_path / 'empty'}")
    latin = tmp_path / "latin.txt"
    latin.write_bytes("café crème".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin\.txt is not UTF-8.*iconv"):
        zoo.load_dataset(f"text:{latin}")
    (tmp_path / "dots.txt").write_text("... !!! ---")
    with pytest.raises(ValueError, match="no words"):
        zoo.load_dataset(f"text:{tmp_path / 'dots.txt'}")
    (tmp_path / "short.txt").write_text("too short")
    with pytest.raises(ValueError, match="fewer than one sequence of 32"):
        zoo.load_dataset(f"text:{tmp_path / 'short.txt'}")
    with pytest.raises(ValueError, match="text:PATH"):
        zoo.load_dataset("text:")


def test_options_are_checked_like_every_datasets():
    with pytest.raises(KeyError, match="did you mean 'sequence_length'"):
        zoo.load_dataset("pydoc-topics", sequence_lenght=16)
    with pytest.raises(KeyError, match="unknown text option 'seed'"):
        zoo.load_dataset("text:anything.txt", seed=0)
    with pytest.raises(ValueError, match="is unlabelled"):
        zoo.load_dataset("pydoc-topics", classes=[0])
    for bad in ({"test_fraction": 1.0}, {"sequence_length": 1}, {"min_count": 0}, {"max_vocab": 0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            zoo.load_dataset("pydoc-topics", **bad)
    with pytest.raises(ValueError, match="split must be"):
        zoo.load_dataset("pydoc-topics", "validation")


# --- Debian's corpora ---------------------------------------------------------------------------------


def test_bible_is_the_verses_only(bible):
    tokens = bible[0]
    assert 770_000 < len(tokens) < 810_000
    assert not any(word.isdigit() for word in tokens)  # no verse numbers (the KJV text has no digits)
    counts = Counter(tokens)
    assert counts["genesis"] == 0  # the chapter headings ("Genesis 1") are dropped; the verses never say it
    text = corpus_text("bible-kjv")
    assert text.startswith("In the beginning God created the heaven and the earth.\n")
    assert text.endswith("The grace of our Lord Jesus Christ be with you all. Amen.")


def test_bible_dataset(bible):
    tokens, train, test = bible
    assert isinstance(train, TokenDataset) and train.info.name == "bible-kjv" and train.info.sequence_length == 32
    assert {"king", "queen", "man", "woman"} <= set(train.info.vocabulary.words)
    assert len(train) + len(test) == len(tokens) // 32
    assert abs(len(test) / (len(train) + len(test)) - 0.05) < 0.002
    assert test.info is train.info


def test_wordnet_glosses_are_the_text_after_the_bar():
    if not _corpora.corpus_status("wordnet-glosses")[0]:
        pytest.skip(WORDNET_SKIP)
    folder = _corpora._wordnet_folder()
    synsets = sum(1 for part in ("noun", "verb", "adj", "adv")
                  for line in (folder / f"data.{part}").read_text(encoding="utf-8", errors="replace").splitlines()
                  if re.match(r"\d{8} ", line))
    text = corpus_text("wordnet-glosses")
    glosses = text.splitlines()
    assert len(glosses) == synsets
    assert 'without musical accompaniment; "they performed a cappella"' in glosses
    assert "licensee" not in text.lower()  # the license header is left out
    assert re.search(r"\b\d{8}\b", text) is None  # no synset offsets


def test_missing_debian_corpora_give_the_apt_line(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no bible command
    monkeypatch.setattr(_corpora, "_wordnet_folder", lambda: tmp_path)
    with pytest.raises(FileNotFoundError, match="apt-get install bible-kjv"):
        zoo.load_dataset("bible-kjv")
    with pytest.raises(FileNotFoundError, match=r"data\.noun.*apt-get install wordnet-base"):
        zoo.load_dataset("wordnet-glosses")
    status = {s.name: s for s in zoo.dataset_status()}
    assert not status["bible-kjv"].available and status["bible-kjv"].install == "apt-get install bible-kjv"
    assert not status["wordnet-glosses"].available and "wordnet-base" in status["wordnet-glosses"].install
