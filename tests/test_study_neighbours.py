"""The study's neighbours analysis: its table is analyses.nearest_stimuli on the recorded layers and pixels."""

import numpy as np
import pytest

import analyses
from probe.study import Study


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    folder = tmp_path_factory.mktemp("neighbours-study")
    spec = {"title": "neighbours", "data": {"dataset": "digits", "split": "test", "limit": 60},
            "models": [{"name": "cnn", "arch": "zoo:cnn", "layers": ["features.relu1", "relu_fc1"]}],
            "analyses": {"neighbours": {"n_queries": 3, "k": 4}}}
    return Study.from_dict(spec, folder=folder, out=folder / "out").run(progress=False)


def test_the_table_is_nearest_stimuli_on_each_layer(result):
    assert result.failed == {}
    table = result.tables["neighbours"]
    recording = result.recordings["cnn"]
    queries = table["query"].drop_duplicates().to_numpy()  # in the order shown (by class)
    assert len(queries) == 3 and set(table["layer"]) == {"pixels", "features.relu1", "relu_fc1"}
    for layer in ("features.relu1", "relu_fc1"):
        direct = analyses.nearest_stimuli(np.asarray(recording[layer]).reshape(60, -1), queries, k=4)
        got = table[table["layer"] == layer]
        assert got["neighbour"].tolist() == direct.neighbours.ravel().tolist()
        np.testing.assert_allclose(got["score"], direct.scores.ravel())
    # the queries are of different classes, and each gallery is an image in the report
    assert table.drop_duplicates("query")["query_label"].nunique() == 3
    assert result.report.read_text().count("Rows: layers, input to output") == 3


def test_an_unrecorded_layer_is_named(tmp_path):
    spec = {"title": "n", "data": {"dataset": "digits", "split": "test", "limit": 30},
            "models": [{"name": "cnn", "arch": "zoo:cnn", "layers": ["relu_fc1"]}],
            "analyses": {"neighbours": {"layers": ["cnn/features.relu9"]}}}
    failed = Study.from_dict(spec, folder=tmp_path, out=tmp_path / "out").run(progress=False).failed
    assert "cnn/features.relu9, which is not a recorded layer of 'cnn'; recorded: relu_fc1" in failed["neighbours"]
