"""The input plane as each layer maps it: the 2-D views, checked against scikit-learn's PCA and the layers."""

import numpy as np
import pytest
from sklearn.decomposition import PCA

from analyses import function_views
from probe.study._function_experiments import function_views_experiment, two_d_dataset
from reports import function_views_section


def test_views_are_the_units_or_the_first_two_principal_components():
    rng = np.random.default_rng(0)
    points, grid = rng.normal(size=(50, 5)), rng.normal(size=(12, 5))
    labels = np.arange(50) % 2
    views = function_views({"a": grid[:, :2], "b": grid, "c": grid[:, :1]},
                           {"a": points[:, :2], "b": points, "c": points[:, :1]}, (3, 4), labels)
    np.testing.assert_array_equal(views.points["a"], points[:, :2])  # width 2: the units themselves
    np.testing.assert_array_equal(views.grid["a"], grid[:, :2].reshape(3, 4, 2))
    pca = PCA(2).fit(points)
    # principal axes have a sign of their own: compare up to it
    for ours, reference in ((views.points["b"], pca.transform(points)), (views.grid["b"].reshape(-1, 2), pca.transform(grid))):
        np.testing.assert_allclose(np.abs(ours), np.abs(reference), atol=1e-9)
    assert views.explained_variance["b"] == pytest.approx(pca.explained_variance_ratio_.sum())
    np.testing.assert_array_equal(views.points["c"][:, 1], 0)  # width 1: the unit against zero
    assert views.to_frame()["view"].tolist() == ["units", "PCA", "units"]


def test_mismatched_inputs_are_refused():
    with pytest.raises(ValueError, match="same layers"):
        function_views({"a": np.zeros((4, 2))}, {"b": np.zeros((3, 2))}, (2, 2), np.zeros(3))
    with pytest.raises(ValueError, match="do not match"):
        function_views({"a": np.zeros((4, 2))}, {"a": np.zeros((3, 3))}, (2, 2), np.zeros(3))


def test_the_experiment_separates_the_classes_and_its_last_layer_view_is_the_network():
    experiment = function_views_experiment("moons", (6, 2), n=200, epochs=200, grid_lines=5)
    assert experiment.accuracy > 0.95
    views = experiment.views
    assert views.layers == ["input", "tanh1", "tanh2", "readout"]
    X, y = two_d_dataset("moons", 200)
    np.testing.assert_allclose(views.points["input"], X, atol=1e-6)
    # the read-out's two logits separate the classes: the larger one is the label for almost every point
    assert np.mean(views.points["readout"].argmax(1) == y) > 0.95
    assert views.grid["tanh1"].shape == (5, 5, 2) and np.all(np.abs(views.points["tanh2"]) <= 1)  # tanh range
    section = function_views_section(experiment)
    assert "Two ways to visualize a function" in section.title and "data:image/png" in section.body


def test_same_seed_same_views_and_spiral_is_two_interleaved_arms():
    a = function_views_experiment("spiral", (4, 2), n=100, epochs=20, grid_lines=3, seed=1)
    b = function_views_experiment("spiral", (4, 2), n=100, epochs=20, grid_lines=3, seed=1)
    np.testing.assert_array_equal(a.views.points["tanh2"], b.views.points["tanh2"])
    X, y = two_d_dataset("spiral", 100)
    assert set(y) == {0, 1} and np.allclose(X.mean(0), 0, atol=1e-6)
    with pytest.raises(KeyError, match="unknown 2-D dataset 'moon'"):
        two_d_dataset("moon")
