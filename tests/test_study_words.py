"""A study with language models: trained from the study file, not recorded on the stimuli, and compared by the
words analysis (its tables equal the analyses' own results); the masked LM's ratio sweep as a study analysis."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import analyses
import zoo
from probe.study import Study

# A corpus where "king" and "queen", "man" and "woman" share their contexts, pairwise.
SENTENCES = [
    "the king rules the land and the queen rules the land",
    "the man walks to the town and the woman walks to the town",
    "a king is a man who rules and a queen is a woman who rules",
    "the red horse and the white horse run in the green field",
    "one two three four five six seven eight nine ten",
    "the water of the river is cold and the water of the sea is salt",
]
QUESTIONS = ": family\nman king woman queen\nking man queen woman\n: gram-toy\nman woman king queen\n"
CATEGORIES = {"royals": ["king", "queen"], "people": ["man", "woman"], "colours": ["red", "white", "green"]}


@pytest.fixture(scope="module")
def corpus_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("words-study")
    rng = np.random.default_rng(0)
    lines = [SENTENCES[i] for i in rng.integers(0, len(SENTENCES), 600)]
    (folder / "corpus.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (folder / "questions.txt").write_text(QUESTIONS, encoding="utf-8")
    return folder


def _spec(analyses_table):
    corpus = {"min_count": 2, "sequence_length": 8}
    return {
        "title": "words",
        "data": {"dataset": "digits", "split": "test", "limit": 40},
        "models": [
            {"name": "cnn", "arch": "zoo:cnn", "layers": ["features.relu1"]},
            {"name": "w2v", "run": "runs/w2v", "train": {"model": "word2vec", "dataset": "text:corpus.txt", "epochs": 2,
                                                        "dataset_options": corpus, "settings": {"dim": 16}}},
        ],
        "analyses": analyses_table,
    }


def test_words_analysis_compares_the_study_language_models(corpus_folder):
    categories = {name: list(words) for name, words in CATEGORIES.items()}
    result = Study.from_dict(_spec({"words": {"vectors": ["w2v"], "queries": ["king", "water", "absent"],
                                              "analogies": "questions.txt", "categories": categories}}),
                             folder=corpus_folder, out=corpus_folder / "out").run(progress=False)
    assert result.failed == {}
    assert "w2v" not in result.recordings and "cnn" in result.recordings  # the language model is not recorded
    table = zoo.load_word_vectors(corpus_folder / "runs" / "w2v")
    # the tables are the analyses' own results on the run's vectors
    neighbours = analyses.nearest_neighbours(table, ["king", "water"], k=8).to_frame()
    got = result.tables["words-neighbours"]
    assert list(got["neighbour"]) == list(neighbours["neighbour"]) and set(got["model"]) == {"w2v"}
    np.testing.assert_allclose(got["cosine"], neighbours["cosine"], rtol=1e-6)
    accuracy = analyses.analogy_accuracy(table, corpus_folder / "questions.txt").totals_frame()
    pd.testing.assert_frame_equal(result.tables["words-analogy-accuracy"].drop(columns="model"),
                                  accuracy.drop(columns="model").reset_index(drop=True), check_dtype=False)
    geometry = result.results["words"]["geometry"]
    assert geometry.words == [w for words in CATEGORIES.values() for w in words]
    html = result.report.read_text()
    assert "Words" in html and "Nearest words: w2v" in html
    # the findings read the same numbers
    findings = result.tables["findings"]
    words = findings[findings["topic"] == "Words"]
    all_questions = accuracy.set_index("questions").loc["all"]
    assert words["value"].iloc[0] == pytest.approx(all_questions["accuracy"])
    assert f"of the {int(all_questions['total'])} analogy questions" in words["text"].iloc[0]
    assert words["value"].iloc[1] == pytest.approx(geometry.within["w2v"] / geometry.between["w2v"])


def test_a_study_without_language_models_has_no_words_section(corpus_folder):
    spec = _spec({"words": {}})
    spec["models"] = spec["models"][:1]
    result = Study.from_dict(spec, folder=corpus_folder, out=corpus_folder / "out-none").run(progress=False)
    assert result.failed == {} and "words" not in result.results
    assert not any(name.startswith("words") for name in result.tables)


def test_words_refuses_a_model_without_word_vectors(corpus_folder):
    result = Study.from_dict(_spec({"words": {"vectors": ["cnn"]}}), folder=corpus_folder,
                             out=corpus_folder / "out-cnn").run(progress=False)
    assert "not a language model" in result.failed["words"]


def test_mlm_ratio_sweep_runs_as_a_study_analysis(corpus_folder):
    spec = _spec({"mlm_ratio": {"ratios": [0.15, 0.5], "epochs": 1, "dataset": "text:corpus.txt"}})
    spec["models"] = spec["models"][:1]
    result = Study.from_dict(spec, folder=corpus_folder, out=corpus_folder / "out-mlm").run(progress=False)
    frame = result.tables["mlm-ratio"]
    assert list(frame["mask_ratio"]) == [0.15, 0.5]
    assert frame[["masked_accuracy", "masked_accuracy_at_15", "unigram_accuracy_at_15"]].apply(
        lambda column: column.between(0, 1)).all().all()
    # every model is scored on the same 15 % masks, so they share one unigram baseline
    assert frame["unigram_accuracy_at_15"].nunique() == 1
    assert "Masked language models: mask ratio" in result.report.read_text()
    finding = result.tables["findings"].query("topic == 'Masked LM ratio'")
    assert finding["value"].iloc[0] == pytest.approx(frame["masked_accuracy_at_15"].max())
