"""Shape metrics, Procrustes distance and regression R^2 against independent computations and their invariances."""

import numpy as np
import pytest
import scipy.linalg
import torch
from _measure_inputs import correlated_pair
from sklearn.linear_model import LinearRegression, Ridge
from sklearn.metrics import r2_score

from analyses import canonical_correlations
from analyses._shape_metrics import (
    compare_procrustes,
    compare_regression,
    compare_shape,
    prepare_procrustes,
    prepare_regression,
    prepare_shape,
    procrustes_distance,
    regression_r2,
    shape_distance,
)


def _pair(n=200, units_x=12, units_y=9, seed=0):
    return correlated_pair(n=n, units_x=units_x, units_y=units_y, seed=seed, noise_x=0.8, noise_y=1.2)


def _rotation(units, rng):
    return np.linalg.qr(rng.standard_normal((units, units)))[0]


def _netrep(X, Y, alpha, score="angular"):
    """NumPy transcription of netrep's LinearMetric(alpha, center_columns=True, zero_pad=True).fit_score:
    zero-pad, whiten with eigenvalues clipped at 1e-7 and the variance kept, rotate by the SVD of Xw^T Yw,
    then score the aligned matrices."""
    X, Y = X - X.mean(0), Y - Y.mean(0)
    width = max(X.shape[1], Y.shape[1])
    X = np.pad(X, ((0, 0), (0, width - X.shape[1])))
    Y = np.pad(Y, ((0, 0), (0, width - Y.shape[1])))

    def whiten(A):
        if alpha > 1 - 1e-7:
            return A
        lam, V = np.linalg.eigh(A.T @ A)
        lam = np.maximum(lam, 1e-7)
        d = alpha + (1 - alpha) * lam**-0.5
        new_var = np.sum(alpha**2 * lam + 2 * alpha * (1 - alpha) * lam**0.5 + (1 - alpha) ** 2)
        d = d * np.sqrt(lam.sum() / new_var)
        return A @ (V * d) @ V.T

    Xw, Yw = whiten(X), whiten(Y)
    U, _, Vt = np.linalg.svd(Xw.T @ Yw)
    aligned_x, aligned_y = Xw @ U, Yw @ Vt.T
    if score == "euclidean":
        return np.linalg.norm(aligned_x - aligned_y)
    cosine = np.sum(aligned_x * aligned_y) / (np.linalg.norm(aligned_x) * np.linalg.norm(aligned_y))
    return np.arccos(np.clip(cosine, -1, 1))


@pytest.mark.parametrize("alpha", [1.0, 0.5, 0.0])
def test_shape_distance_matches_netrep_also_for_different_unit_counts(alpha):
    X, Y = _pair()
    assert shape_distance(X, Y, alpha) == pytest.approx(_netrep(X, Y, alpha), abs=1e-8)
    assert shape_distance(Y, X, alpha) == pytest.approx(shape_distance(X, Y, alpha), abs=1e-12)
    assert 0 < shape_distance(X, Y, alpha) < np.pi / 2


def test_procrustes_distance_is_the_residual_of_scipys_orthogonal_procrustes_on_unit_norm_inputs():
    X, Y = _pair(seed=1)
    unit = [(A - A.mean(0)) / np.linalg.norm(A - A.mean(0)) for A in (X, Y)]
    Xn, Yn = unit[0], np.pad(unit[1], ((0, 0), (0, 3)))  # zero-padded to X's 12 units
    R, _ = scipy.linalg.orthogonal_procrustes(Yn, Xn)
    expected = np.linalg.norm(Xn - Yn @ R)
    d = procrustes_distance(X, Y)
    assert d == pytest.approx(expected, abs=1e-8)
    assert d == pytest.approx(_netrep(unit[0], unit[1], 1.0, score="euclidean"), abs=1e-8)
    assert shape_distance(X, Y) == pytest.approx(np.arccos(1 - d**2 / 2), abs=1e-8)
    assert procrustes_distance(X * 5.0, Y) == pytest.approx(d, abs=1e-10)  # normalised, unlike netrep's score
    assert procrustes_distance(X, -X) == pytest.approx(0.0, abs=1e-6)  # a reflection is orthogonal


def test_invariances_at_each_end_and_the_scale_dependence_in_between():
    X, Y = _pair(seed=2)
    rng = np.random.default_rng(3)
    moved = 7.0 * X[:, rng.permutation(12)] @ _rotation(12, rng) + 3.0  # permutation, rotation, scale, offset
    mixed = X @ rng.standard_normal((12, 12)) + 3.0  # invertible linear map
    for alpha in (1.0, 0.5, 0.0):
        if alpha != 0.5:  # the blend of alpha I and C^(-1/2) is not scale-free
            assert shape_distance(moved, Y, alpha) == pytest.approx(shape_distance(X, Y, alpha), abs=1e-9)
    assert shape_distance(X, X @ _rotation(12, rng) + 1.0, 0.5) == pytest.approx(0.0, abs=1e-6)
    assert shape_distance(7.0 * X, Y, 0.5) != pytest.approx(shape_distance(X, Y, 0.5), abs=1e-4)
    assert procrustes_distance(moved, Y) == pytest.approx(procrustes_distance(X, Y), abs=1e-9)
    assert shape_distance(mixed, Y, 0.0) == pytest.approx(shape_distance(X, Y, 0.0), abs=1e-9)
    assert shape_distance(moved, X) == pytest.approx(0.0, abs=1e-6)
    assert procrustes_distance(moved, X) == pytest.approx(0.0, abs=1e-6)
    assert shape_distance(mixed, X, 0.0) == pytest.approx(0.0, abs=1e-6)
    assert shape_distance(mixed, X, 1.0) > 0.05  # an invertible map is not a rotation


def test_fully_whitened_end_ties_to_canonical_correlations():
    X, Y = _pair(units_x=10, units_y=10, seed=4)
    assert np.cos(shape_distance(X, Y, 0.0)) == pytest.approx(canonical_correlations(X, Y).mean(), abs=1e-9)
    X, Y = _pair(seed=5)  # 12 and 9 units: netrep's zero padding divides the sum by sqrt(12 * 9)
    rho = canonical_correlations(X, Y)
    assert np.cos(shape_distance(X, Y, 0.0)) == pytest.approx(rho.sum() / np.sqrt(12 * 9), abs=1e-9)


@pytest.mark.parametrize("alpha", [1.0, 0.5, 0.0])
def test_triangle_inequality_on_random_triples(alpha):
    rng = np.random.default_rng(6)
    shared = rng.standard_normal((120, 3))
    layers = [shared @ rng.standard_normal((3, u)) + s * rng.standard_normal((120, u))
              for u, s in [(8, 0.3), (5, 1.0), (10, 2.0), (6, 0.5), (7, 0.1)]]
    summaries = [prepare_shape(torch.from_numpy(A), alpha) for A in layers]
    D = np.array([[compare_shape(a, b) for b in summaries] for a in summaries])
    matrices = [D]
    if alpha == 1.0:
        procrustes = [prepare_procrustes(torch.from_numpy(A)) for A in layers]
        matrices.append(np.array([[compare_procrustes(a, b) for b in procrustes] for a in procrustes]))
    for M in matrices:
        np.testing.assert_allclose(M, M.T, atol=1e-12)
        np.testing.assert_allclose(np.diag(M), 0, atol=1e-6)
        # M[i, k] <= M[i, j] + M[j, k] for every i, j, k
        assert (M[:, None, :] <= M[:, :, None] + M[None, :, :] + 1e-9).all()
        assert M.max() > 0.1
    assert D[0, 1] == pytest.approx(shape_distance(layers[0], layers[1], alpha), abs=1e-12)


def test_layers_wider_than_the_stimulus_count_are_summarised_in_stimulus_space():
    rng = np.random.default_rng(7)
    X, Y = rng.standard_normal((30, 50)), rng.standard_normal((30, 80))
    Y[:, :50] += 2 * X
    a, b = prepare_shape(torch.from_numpy(X)), prepare_procrustes(torch.from_numpy(Y))
    assert a.factor.shape == (30, 30) and b.factor.shape == (30, 30)  # stimulus space, not 50 or 80 units
    Yc = Y - Y.mean(0)
    np.testing.assert_allclose(b.factor @ b.factor.T, Yc @ Yc.T, atol=1e-10)
    assert compare_shape(a, b) == pytest.approx(_netrep(X, Y, 1.0), abs=1e-8)
    with pytest.raises(ValueError, match="too few stimuli to whiten"):
        shape_distance(X, Y, alpha=0.0)
    with pytest.raises(ValueError, match="same alpha"):
        compare_shape(a, prepare_shape(torch.from_numpy(Y), 0.5))


def test_regression_r2_matches_scikit_learn_and_is_not_symmetric():
    X, Y = _pair(seed=8)
    fit = LinearRegression().fit(X, Y).predict(X)
    expected = r2_score(Y, fit, multioutput="variance_weighted")
    assert regression_r2(X, Y) == pytest.approx(expected, abs=1e-8)
    reverse = r2_score(X, LinearRegression().fit(Y, X).predict(Y), multioutput="variance_weighted")
    assert regression_r2(Y, X) == pytest.approx(reverse, abs=1e-8)
    assert abs(regression_r2(X, Y) - regression_r2(Y, X)) > 1e-3
    ridge = r2_score(Y, Ridge(alpha=300.0).fit(X, Y).predict(X), multioutput="variance_weighted")
    assert regression_r2(X, Y, ridge=300.0) == pytest.approx(ridge, abs=1e-8)
    assert regression_r2(X, Y, ridge=300.0) < regression_r2(X, Y)
    rng = np.random.default_rng(9)
    # R^2 depends only on X's column space and on Y's centred variance
    assert regression_r2(X @ rng.standard_normal((12, 12)) + 4.0, 3.0 * Y - 1.0) == pytest.approx(expected, abs=1e-9)
    summaries = [prepare_regression(torch.from_numpy(A)) for A in (X, Y)]
    assert compare_regression(*summaries) == pytest.approx(expected, abs=1e-12)


def test_regression_conventions_for_degenerate_input():
    rng = np.random.default_rng(10)
    X, Y = rng.standard_normal((30, 40)), rng.standard_normal((30, 5))
    with pytest.raises(ValueError, match="fits any Y perfectly"):
        regression_r2(X, Y)
    with pytest.raises(ValueError, match="fits any Y perfectly"):
        regression_r2(X[:, :29], Y)  # 29 directions of 29
    assert regression_r2(X[:, :28], Y) < 1.0
    wide = r2_score(Y, Ridge(alpha=10.0).fit(X, Y).predict(X), multioutput="variance_weighted")
    assert regression_r2(X, Y, ridge=10.0) == pytest.approx(wide, abs=1e-8)
    assert regression_r2(np.full((30, 3), 0.1), Y) == 0.0  # a constant X explains nothing (0.1: mean not exact)
    with pytest.raises(ValueError, match="same for every stimulus"):
        regression_r2(Y, np.full((30, 3), 0.1))
    with pytest.raises(ValueError, match="ridge"):
        regression_r2(Y, X, ridge=-1.0)
    with pytest.raises(ValueError, match="same ridge"):
        compare_regression(prepare_regression(torch.from_numpy(Y)), prepare_regression(torch.from_numpy(X), 1.0))


def test_shape_conventions_for_degenerate_input():
    X, Y = _pair(n=60, seed=11)
    with_constant = np.column_stack([X, np.full(60, 2.5)])
    duplicated = np.column_stack([X, X[:, :1]])
    for alpha in (1.0, 0.5, 0.0):  # a constant unit adds no direction at any alpha
        assert shape_distance(with_constant, Y, alpha) == pytest.approx(shape_distance(X, Y, alpha), abs=1e-9)
    assert shape_distance(duplicated, Y, 0.0) == pytest.approx(shape_distance(X, Y, 0.0), abs=1e-9)
    assert shape_distance(duplicated, Y, 1.0) != pytest.approx(shape_distance(X, Y, 1.0), abs=1e-4)
    assert shape_distance(with_constant, Y, 0.0) == pytest.approx(_netrep(with_constant, Y, 0.0), abs=1e-7)
    half = X.astype(np.float16)
    assert procrustes_distance(half, Y) == pytest.approx(procrustes_distance(half.astype(float), Y), abs=1e-12)
    assert shape_distance(torch.tensor(X, dtype=torch.float32), Y) == pytest.approx(shape_distance(X, Y), abs=1e-6)
    with pytest.raises(ValueError, match="too few stimuli to whiten"):
        shape_distance(X[:20], Y[:20], alpha=0.5)  # 12 + 9 directions, 19 allowed
    assert np.isfinite(shape_distance(X[:20], Y[:20], alpha=1.0))
    with pytest.raises(ValueError, match="same for every stimulus"):
        procrustes_distance(np.full((60, 3), 0.1), Y)
    with pytest.raises(ValueError, match="same stimuli"):
        shape_distance(X, Y[:50])
    with pytest.raises(ValueError, match="at least 3"):
        procrustes_distance(X[:2], Y[:2])
    with pytest.raises(ValueError, match="alpha"):
        shape_distance(X, Y, alpha=1.5)
    with pytest.raises(ValueError, match="prepare_procrustes"):
        compare_procrustes(prepare_shape(torch.from_numpy(X), 0.0), prepare_shape(torch.from_numpy(Y), 0.0))
    bad = X.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError):
        shape_distance(bad, Y)
