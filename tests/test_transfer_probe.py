"""linear_probe and knn_accuracy against scikit-learn."""

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import precision_recall_fscore_support
from sklearn.neighbors import KNeighborsClassifier
from sklearn.preprocessing import StandardScaler

from analyses import ProbeResult, knn_accuracy, linear_probe


@pytest.fixture(scope="module")
def digits_split():
    X, y = load_digits(return_X_y=True)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(y))
    train, test = order[:600], order[600:1000]
    return X[train], y[train], X[test], y[test]


@pytest.mark.parametrize("C", [0.01, 0.3])
def test_probe_matches_sklearn_objective_and_accuracy(digits_split, C):
    X_train, y_train, X_test, y_test = digits_split
    scaler = StandardScaler().fit(X_train)
    reference = LogisticRegression(C=C, max_iter=5000, tol=1e-10).fit(scaler.transform(X_train), y_train)
    result = linear_probe(X_train, y_train, X_test, y_test, C=C, standardize=True, device="cpu")
    assert isinstance(result, ProbeResult)
    assert abs(result.accuracy - reference.score(scaler.transform(X_test), y_test)) <= 0.005
    np.testing.assert_allclose(result.coef, reference.coef_, atol=2e-4 * np.abs(reference.coef_).max())
    assert result.C == C and result.C_selection == "fixed"
    # Per-class scores agree with scikit-learn's metrics on our predictions' accuracy.
    assert result.per_class["support"].sum() == len(y_test)
    recall_weighted = np.sum(result.per_class["recall"] * result.per_class["support"]) / len(y_test)
    assert recall_weighted == pytest.approx(result.accuracy)


def test_probe_binary_and_more_units_than_stimuli(digits_split):
    X_train, y_train, X_test, y_test = digits_split
    keep, keep_test = y_train < 2, y_test < 2
    reference = LogisticRegression(C=0.01, max_iter=5000, tol=1e-10).fit(X_train[keep], y_train[keep])
    result = linear_probe(X_train[keep], y_train[keep], X_test[keep_test], y_test[keep_test], C=0.01,
                          standardize=False, device="cpu")
    np.testing.assert_allclose(result.coef, reference.coef_, atol=1e-4)
    np.testing.assert_allclose(result.intercept, reference.intercept_, atol=1e-3)
    few = slice(0, 40)  # 40 stimuli, 64 units
    reference = LogisticRegression(C=0.1, max_iter=5000, tol=1e-10).fit(X_train[few], y_train[few])
    result = linear_probe(X_train[few], y_train[few], X_test, y_test, C=0.1, standardize=False, device="cpu")
    np.testing.assert_allclose(result.coef, reference.coef_, atol=1e-4)
    assert result.accuracy == pytest.approx(reference.score(X_test, y_test), abs=0.005)


def test_probe_cross_validates_C_on_training_split_only(digits_split):
    X_train, y_train, X_test, y_test = digits_split
    X_train, y_train = X_train[:300], y_train[:300]
    Cs = (0.001, 0.03, 1.0)
    result = linear_probe(X_train, y_train, X_test, y_test, Cs=Cs, cv=3, tol=1e-5, device="cpu")
    assert result.C_selection == "cv" and result.C in Cs
    assert set(result.cv_scores) == set(Cs)
    assert result.C == max(result.cv_scores, key=result.cv_scores.get)
    # Changing the test split cannot change the chosen C.
    other = linear_probe(X_train, y_train, X_test[:50], y_test[:50], Cs=Cs, cv=3, tol=1e-5, device="cpu")
    assert other.C == result.C
    one_per_class = np.array([np.flatnonzero(y_train == c)[0] for c in range(10)])
    fallback = linear_probe(X_train[one_per_class], y_train[one_per_class], X_test, y_test, device="cpu")
    assert fallback.C_selection == "fallback" and fallback.C == 1.0
    frame = result.to_frame()
    assert frame.loc[0, "accuracy"] == result.accuracy and len(frame) == 1


def test_probe_accepts_torch_tensors(digits_split):
    X_train, y_train, X_test, y_test = digits_split
    from_numpy = linear_probe(X_train, y_train, X_test, y_test, C=0.1, device="cpu")
    from_torch = linear_probe(torch.as_tensor(X_train, dtype=torch.float32), torch.as_tensor(y_train),
                              torch.as_tensor(X_test, dtype=torch.float32), y_test, C=0.1, device="cpu")
    assert from_torch.accuracy == pytest.approx(from_numpy.accuracy, abs=0.005)


def test_probe_bad_input(digits_split):
    X_train, y_train, X_test, y_test = digits_split
    with pytest.raises(ValueError, match="single class"):
        linear_probe(X_train, np.zeros_like(y_train), X_test, y_test, C=1.0)
    with pytest.raises(ValueError, match="NaN"):
        bad = X_train.copy()
        bad[3, 5] = np.nan
        linear_probe(bad, y_train, X_test, y_test, C=1.0)
    with pytest.raises(ValueError, match="same layer"):
        linear_probe(X_train, y_train, X_test[:, :10], y_test, C=1.0)
    with pytest.raises(ValueError, match="one label per stimulus"):
        linear_probe(X_train, y_train[:-1], X_test, y_test, C=1.0)
    with pytest.raises(ValueError, match="positive"):
        linear_probe(X_train, y_train, X_test, y_test, C=-1.0)
    with pytest.raises(ValueError, match="lacks"):
        linear_probe(X_train[y_train < 5], y_train[y_train < 5], X_test, y_test, C=1.0)


@pytest.mark.parametrize("metric, sklearn_metric", [("euclidean", "euclidean"), ("cosine", "cosine")])
def test_knn_matches_sklearn(digits_split, metric, sklearn_metric):
    X_train, y_train, X_test, y_test = digits_split
    X_train = X_train + np.random.default_rng(0).normal(scale=1e-3, size=X_train.shape)  # no distance ties
    reference = KNeighborsClassifier(5, metric=sklearn_metric, algorithm="brute").fit(X_train, y_train)
    ours = knn_accuracy(X_train, y_train, X_test, y_test, k=5, metric=metric, batch_size=64, device="cpu")
    assert ours == pytest.approx(reference.score(X_test, y_test))
    with pytest.raises(ValueError, match="metric"):
        knn_accuracy(X_train, y_train, X_test, y_test, metric="manhattan")
    with pytest.raises(ValueError, match="between 1"):
        knn_accuracy(X_train, y_train, X_test, y_test, k=0)


@pytest.mark.gpu
def test_probe_on_gpu_matches_cpu(digits_split):
    X_train, y_train, X_test, y_test = digits_split
    cpu = linear_probe(X_train, y_train, X_test, y_test, C=0.1, device="cpu")
    gpu = linear_probe(X_train, y_train, X_test, y_test, C=0.1, device="cuda")
    assert gpu.accuracy == pytest.approx(cpu.accuracy, abs=0.005)
    assert knn_accuracy(X_train, y_train, X_test, y_test, device="cuda") == pytest.approx(
        knn_accuracy(X_train, y_train, X_test, y_test, device="cpu"), abs=0.005)
