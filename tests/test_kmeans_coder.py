"""KMeansCoder: against scikit-learn's KMeans from the same initial centroids, and the properties of Lloyd's steps."""

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment
from sklearn.cluster import KMeans
from sklearn.datasets import load_digits, make_blobs

from analyses._kmeans import KMeansCoder


def _digits_pixels():
    return load_digits().data[:400].astype(np.float64)


def _blobs():
    return make_blobs(n_samples=300, centers=5, n_features=6, cluster_std=1.5, random_state=0)[0]


def _same_partition(a, b):
    """Whether two labelings agree up to a permutation of the labels."""
    table = np.zeros((a.max() + 1, b.max() + 1), dtype=int)
    np.add.at(table, (a, b), 1)
    rows, cols = linear_sum_assignment(-table)
    return table[rows, cols].sum() == len(a)


@pytest.mark.parametrize("data", [_digits_pixels, _blobs], ids=["digits", "blobs"])
@pytest.mark.parametrize("k", [3, 10])
def test_matches_scikit_learn_from_the_same_initial_centroids(data, k):
    X = data()
    init = X[np.random.default_rng(1).choice(len(X), k, replace=False)]
    ours = KMeansCoder(k, init=init, tol=0.0).fit(X)
    theirs = KMeans(k, init=init, n_init=1, tol=0.0, algorithm="lloyd").fit(X)
    assert ours.inertia_ == pytest.approx(theirs.inertia_, rel=0.01)
    assert _same_partition(ours.labels_, theirs.labels_)
    assert ours.inertia_ == pytest.approx(((X - ours.cluster_centers_[ours.labels_]) ** 2).sum(), rel=1e-10)


def test_the_objective_never_increases_at_any_step():
    X = _digits_pixels()
    for seed in range(3):
        coder = KMeansCoder(12, seed=seed, init="random", tol=0.0).fit(X)
        history = np.array(coder.objective_history_)
        assert len(history) == 2 * coder.n_iter_ + 1 and coder.n_iter_ > 2
        assert np.all(np.diff(history) <= 1e-9 * history[0])
        assert history[-1] == pytest.approx(coder.inertia_)


def test_kmeans_plus_plus_is_seeded_and_as_good_as_scikit_learn():
    X = _blobs()
    a, b = KMeansCoder(5, seed=3).fit(X), KMeansCoder(5, seed=3).fit(X)
    assert np.array_equal(a.cluster_centers_, b.cluster_centers_)
    reference = KMeans(5, n_init=10, random_state=0).fit(X).inertia_
    assert KMeansCoder(5, seed=0, n_init=10).fit(X).inertia_ <= reference * 1.01


def test_encoder_decoder_transform_and_score_agree_with_brute_force():
    X = _blobs()
    coder = KMeansCoder(5, seed=0).fit(X)
    brute = np.sqrt(((X[:, None, :] - coder.cluster_centers_[None]) ** 2).sum(-1))
    assert np.allclose(coder.transform(X), brute)
    assert np.array_equal(coder.predict(X), brute.argmin(1))
    assert np.array_equal(coder.predict(X), coder.labels_)
    decoded = coder.inverse_transform(coder.predict(X))
    assert decoded.shape == X.shape and np.allclose(decoded, coder.cluster_centers_[brute.argmin(1)])
    assert coder.score(X) == pytest.approx(-coder.inertia_)
    assert coder.score(X[:10]) == pytest.approx(-(brute[:10].min(1) ** 2).sum())


def test_empty_clusters_are_reseeded_from_the_farthest_inputs():
    X = np.array([[0.0], [0.1], [0.2], [10.0], [10.1], [30.0]])
    init = np.array([[0.0], [10.0], [1000.0]])  # the third centroid wins no input
    coder = KMeansCoder(3, init=init).fit(X)
    assert coder.n_reseeded_ >= 1
    assert sorted(np.round(coder.cluster_centers_[:, 0], 6)) == [0.1, 10.05, 30.0]
    assert len(np.unique(coder.labels_)) == 3


def test_bad_inputs_are_refused_with_a_fix():
    X = _blobs()
    with pytest.raises(ValueError, match="2-D"):
        KMeansCoder(3).fit(X[:, 0])
    bad = X.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        KMeansCoder(3).fit(bad)
    with pytest.raises(ValueError, match="lower k"):
        KMeansCoder(400).fit(X)
    with pytest.raises(ValueError, match=r"shape \(3, 6\)"):
        KMeansCoder(3, init=X[:2]).fit(X)
    with pytest.raises(KeyError, match="k-means"):
        KMeansCoder(3, init="kmeans++").fit(X)
    coder = KMeansCoder(3).fit(X)
    with pytest.raises(ValueError, match="fitted on 6"):
        coder.predict(X[:, :4])
    with pytest.raises(ValueError, match="0..2"):
        coder.inverse_transform(np.array([0, 3]))
