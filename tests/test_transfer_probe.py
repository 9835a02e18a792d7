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
    result = linear_probe(X_train, y_train, X_test, y_test, C=C, standardize=True, tol=1e-8, device="cpu")
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
                          standardize=False, tol=1e-8, device="cpu")
    np.testing.assert_allclose(result.coef, reference.coef_, atol=1e-4)
    np.testing.assert_allclose(result.intercept, reference.intercept_, atol=1e-3)
    few = slice(0, 40)  # 40 stimuli, 64 units
    reference = LogisticRegression(C=0.1, max_iter=5000, tol=1e-10).fit(X_train[few], y_train[few])
    result = linear_probe(X_train[few], y_train[few], X_test, y_test, C=0.1, standardize=False, tol=1e-8,
                          device="cpu")
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


def _reference_cv_correct(X, y, Cs, n_splits):
    """Held-out correct counts per C from scikit-learn's LogisticRegression on the probe's folds."""
    from sklearn.model_selection import StratifiedKFold

    X = StandardScaler().fit_transform(X)  # the probe standardises with the whole training split
    correct = np.zeros(len(Cs))
    for fit_rows, held_rows in StratifiedKFold(n_splits, shuffle=True, random_state=0).split(X, y):
        for i, C in enumerate(Cs):
            model = LogisticRegression(C=C, max_iter=5000, tol=1e-10).fit(X[fit_rows], y[fit_rows])
            correct[i] += np.sum(model.predict(X[held_rows]) == y[held_rows])
    return correct / len(y)


@pytest.mark.parametrize("n_classes", [2, 10])
def test_batched_cross_validation_matches_sklearn_per_fold(digits_split, n_classes):
    X_train, y_train, X_test, y_test = digits_split
    keep = np.concatenate([np.flatnonzero(y_train == c)[: 60 // n_classes] for c in range(n_classes)])
    X, y = X_train[keep][:, ::2], y_train[keep]  # 60 x 32: the batched path
    Cs = (0.01, 0.1, 1.0, 10.0)
    test = y_test < n_classes
    result = linear_probe(X, y, X_test[test][:, ::2], y_test[test], Cs=Cs, cv=3, tol=1e-7, device="cpu")
    expected = _reference_cv_correct(X, y, Cs, n_splits=3)
    np.testing.assert_allclose([result.cv_scores[C] for C in Cs], expected, atol=1.0 / len(y) + 1e-12)


def test_batched_and_per_fold_cross_validation_agree(digits_split, monkeypatch):
    import analyses._linear_probe as module

    X_train, y_train, X_test, y_test = digits_split
    X, y = X_train[:120][:, ::2], y_train[:120]
    Cs = (0.001, 0.1, 10.0)
    batched = linear_probe(X, y, X_test[:, ::2], y_test, Cs=Cs, cv=3, tol=1e-7, device="cpu")
    monkeypatch.setattr(module, "_BATCHED_CV_SIZE", 0)
    per_fold = linear_probe(X, y, X_test[:, ::2], y_test, Cs=Cs, cv=3, tol=1e-7, device="cpu")
    np.testing.assert_allclose([batched.cv_scores[C] for C in Cs], [per_fold.cv_scores[C] for C in Cs],
                               atol=1.0 / len(y) + 1e-12)
    assert batched.C == per_fold.C


def test_probe_default_tolerance_in_float32_reaches_sklearns_default_fit(digits_split):
    X_train, y_train, X_test, y_test = digits_split
    scaler = StandardScaler().fit(X_train)
    reference = LogisticRegression(C=1.0).fit(scaler.transform(X_train), y_train)  # tol=1e-4 as ours
    result = linear_probe(X_train, y_train, X_test, y_test, C=1.0, device="cpu")
    assert result.accuracy == pytest.approx(reference.score(scaler.transform(X_test), y_test), abs=0.005)
    predictions_agree = np.mean(reference.predict(scaler.transform(X_test))
                                == (scaler.transform(X_test) @ result.coef.T + result.intercept).argmax(1))
    assert predictions_agree >= 0.99


def test_probe_on_separable_data_with_weak_penalty_matches_sklearn():
    # Large C on separable clusters drives probabilities below float32's normal range.
    rng = np.random.default_rng(1)
    y = np.repeat(np.arange(3), 20)
    X = rng.normal(size=(60, 5)) + 12.0 * np.eye(3, 5)[y]
    reference = LogisticRegression(C=1e3, max_iter=5000, tol=1e-10).fit(X, y)
    result = linear_probe(X, y, X, y, C=1e3, standardize=False, tol=1e-8, device="cpu")
    assert result.accuracy == 1.0
    np.testing.assert_allclose(result.coef, reference.coef_, atol=0.05 * np.abs(reference.coef_).max())


def test_probe_on_features_that_lie_in_a_hyperplane_matches_sklearn():
    # Mean-pooled LayerNorm outputs sum to a constant: the covariance is singular, and with many
    # stimuli and a weak penalty the ridge falls below float32 rounding (Cholesky fails there).
    rng = np.random.default_rng(3)
    n, d = 6000, 24
    labels = rng.integers(0, 3, n)
    X = rng.standard_normal((n, d)) + labels[:, None] * rng.standard_normal(d)
    X -= X.mean(axis=1, keepdims=True)  # every row sums to 0
    X_test, y_test = X[:1000], labels[:1000]
    for C in (1e4, 1e6):
        result = linear_probe(X[1000:], labels[1000:], X_test, y_test, C=C, device="cpu")
        reference = LogisticRegression(C=C, max_iter=5000, tol=1e-8).fit(X[1000:], labels[1000:])
        assert np.isfinite(result.coef).all()
        assert abs(result.accuracy - reference.score(X_test, y_test)) <= 0.005


def test_whitening_a_covariance_that_rounding_made_indefinite_falls_back_to_eigenvectors():
    from analyses._linear_probe import _Preconditioned

    rng = np.random.default_rng(0)
    vectors = np.linalg.qr(rng.standard_normal((6, 6)))[0]
    covariance = torch.tensor(vectors @ np.diag([-1e-9, 0.5, 1, 2, 3, 4]) @ vectors.T)
    basis, coordinates = _Preconditioned._whitening(covariance, 1e-12)  # Cholesky fails: not positive definite
    np.testing.assert_allclose((basis.T @ coordinates).numpy(), np.eye(6), atol=1e-9)  # W = q basis.T is invertible
    seen = torch.tensor(vectors[:, 1:])  # along the data's directions the basis whitens covariance + ridge
    np.testing.assert_allclose((seen.T @ basis) @ (basis.T @ seen) * torch.tensor([0.5, 1, 2, 3, 4]).double(),
                               np.eye(5), atol=1e-6)


def test_scipy_and_torch_solvers_reach_the_same_minimiser(digits_split, monkeypatch):
    import analyses._linear_probe as probe_module

    X_train, y_train, X_test, y_test = digits_split
    scipy_fit = linear_probe(X_train, y_train, X_test, y_test, C=0.3, tol=1e-8, device="cpu")
    monkeypatch.setattr(probe_module, "_SCIPY_SIZE", 0)  # every problem to torch's L-BFGS
    torch_fit = linear_probe(X_train, y_train, X_test, y_test, C=0.3, tol=1e-8, device="cpu")
    np.testing.assert_allclose(scipy_fit.coef, torch_fit.coef, atol=1e-4 * np.abs(torch_fit.coef).max())
    assert scipy_fit.accuracy == torch_fit.accuracy


def test_small_cpu_problems_run_on_one_thread_and_the_thread_count_comes_back(digits_split, monkeypatch):
    import analyses._linear_probe as probe_module

    seen = []
    solve = probe_module._lbfgs_scipy
    monkeypatch.setattr(probe_module, "_lbfgs_scipy", lambda *a, **k: (seen.append(torch.get_num_threads()), solve(*a, **k))[1])
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        X_train, y_train, X_test, y_test = digits_split
        linear_probe(X_train, y_train, X_test, y_test, C=None, device="cpu")
        assert seen and set(seen) == {1} and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
