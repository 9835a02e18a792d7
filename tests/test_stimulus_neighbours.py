"""Nearest stimuli in a layer's space, checked against scikit-learn's NearestNeighbors."""

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.neighbors import NearestNeighbors

from analyses import StimulusNeighbours, nearest_stimuli, pick_queries


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_neighbours_match_scikit_learn(metric):
    X, y = load_digits(return_X_y=True)
    X = X[:300]
    queries = [0, 7, 42, 299]
    result = nearest_stimuli(X, queries, k=5, metric=metric, labels=y[:300], model="m", layer="pixels")
    reference = NearestNeighbors(n_neighbors=6, metric=metric).fit(X)
    distances, indices = reference.kneighbors(X[queries])
    # scikit-learn lists the query itself first (distance 0); ours leaves it out
    expected = np.array([[j for j in row if j != q][:5] for row, q in zip(indices, queries)])
    np.testing.assert_array_equal(result.neighbours, expected)
    kept = np.array([[d for j, d in zip(row, dist) if j != q][:5] for row, dist, q in zip(indices, distances, queries)])
    np.testing.assert_allclose(result.scores, 1 - kept if metric == "cosine" else -kept, atol=1e-9)


def test_label_agreement_and_frame():
    X = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    labels = np.array([0, 0, 1, 1])
    result = nearest_stimuli(X, [0, 2], k=1, labels=labels)
    assert isinstance(result, StimulusNeighbours)
    assert result.neighbours.tolist() == [[1], [3]] and result.label_agreement() == 1.0
    frame = result.to_frame()
    assert list(frame.columns) == ["model", "layer", "metric", "query", "rank", "neighbour", "score", "query_label",
                                   "neighbour_label"]
    assert frame["neighbour"].tolist() == [1, 3] and np.isnan(nearest_stimuli(X, [0], k=1).label_agreement())


def test_ties_break_by_the_smaller_index_and_zero_responses_have_cosine_zero():
    X = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 0.0]])
    result = nearest_stimuli(X, [2, 3], k=2)
    assert result.neighbours.tolist()[0] == [0, 1]
    np.testing.assert_allclose(result.scores[1], [0.0, 0.0])


def test_bad_inputs_are_refused():
    X = np.random.default_rng(0).normal(size=(10, 3))
    with pytest.raises(ValueError, match="k must be between 1 and n_stimuli - 1"):
        nearest_stimuli(X, [0], k=10)
    with pytest.raises(ValueError, match="queries must be stimulus indices"):
        nearest_stimuli(X, [10])
    with pytest.raises(ValueError, match="NaN"):
        nearest_stimuli(np.full((3, 2), np.nan), [0], k=1)
    with pytest.raises(KeyError, match="cosin"):
        nearest_stimuli(X, [0], metric="cosin")


def test_queries_take_one_class_in_turn():
    labels = np.repeat(np.arange(4), 5)
    queries = pick_queries(labels, len(labels), 6, seed=1)
    assert sorted(np.bincount(labels[queries], minlength=4).tolist()) == [1, 1, 2, 2]
    assert np.array_equal(queries, pick_queries(labels, len(labels), 6, seed=1))  # seeded
    assert len(pick_queries(None, 20, 3)) == 3
