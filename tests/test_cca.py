"""CCA family: canonical correlations, R^2_CCA, SVCCA, PWCCA against independent computations and invariances."""

import numpy as np
import pytest
import scipy.linalg
from _measure_inputs import correlated_pair
from sklearn.cross_decomposition import CCA

from analyses import canonical_correlations, cca_similarity, pwcca, svcca


def _pair(n=400, units_x=12, units_y=9, seed=0):
    return correlated_pair(n=n, units_x=units_x, units_y=units_y, seed=seed, noise_x=0.8, noise_y=1.2)


def _reference_correlations(X, Y):
    """The classical route: eigenvalues of Sxx^-1 Sxy Syy^-1 Syx are the squared canonical correlations."""
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    Sxx, Syy, Sxy = Xc.T @ Xc, Yc.T @ Yc, Xc.T @ Yc
    values = scipy.linalg.eigvals(np.linalg.solve(Sxx, Sxy) @ np.linalg.solve(Syy, Sxy.T)).real
    return np.sqrt(np.clip(np.sort(values)[::-1][: min(X.shape[1], Y.shape[1])], 0, 1))


def test_canonical_correlations_match_the_covariance_route_and_scikit_learn():
    X, Y = _pair()
    rho = canonical_correlations(X, Y)
    np.testing.assert_allclose(rho, _reference_correlations(X, Y), atol=1e-8)
    scores_x, scores_y = CCA(n_components=3, scale=False, max_iter=5000, tol=1e-12).fit_transform(X, Y)
    sklearn_rho = [np.corrcoef(scores_x[:, i], scores_y[:, i])[0, 1] for i in range(3)]
    np.testing.assert_allclose(rho[:3], sklearn_rho, atol=1e-4)
    assert cca_similarity(X, Y) == pytest.approx(np.mean(rho**2))


def test_invariant_to_invertible_maps_permutations_and_scale_and_one_for_a_linear_copy():
    X, Y = _pair(seed=1)
    rng = np.random.default_rng(2)
    mixed = X @ rng.standard_normal((12, 12)) * 7.0 + 3.0  # invertible map, scale and offset
    rotated = X @ np.linalg.qr(rng.standard_normal((12, 12)))[0] * 7.0 + 3.0  # rotation, isotropic scale, offset
    permuted = Y[:, rng.permutation(9)]
    assert cca_similarity(mixed, permuted) == pytest.approx(cca_similarity(X, Y), abs=1e-9)
    # SVCCA's first step reads the variance of each direction: invariant to rotations, isotropic scaling and
    # permutations, not to every invertible map
    assert svcca(rotated, permuted) == pytest.approx(svcca(X, Y), abs=1e-9)
    # PWCCA's weights sum |<h_i, x_j>| over X's units: invariant to permuting and scaling X's units together,
    # and to any invertible map of Y, not to rotating X
    scaled_x = X[:, rng.permutation(12)] * 7.0 + 3.0
    assert pwcca(scaled_x, Y @ rng.standard_normal((9, 9))) == pytest.approx(pwcca(X, Y), abs=1e-9)
    assert pwcca(rotated, Y) != pytest.approx(pwcca(X, Y), abs=1e-4)
    assert cca_similarity(X, X @ rng.standard_normal((12, 12))) == pytest.approx(1.0, abs=1e-9)


def test_svcca_keeps_the_directions_of_99_percent_variance_then_averages_the_correlations():
    X, Y = _pair(units_x=20, units_y=15, seed=3)

    def reduced(A, variance=0.99):
        U, S, _ = np.linalg.svd(A - A.mean(0), full_matrices=False)
        keep = np.searchsorted(np.cumsum(S**2) / np.sum(S**2), variance) + 1
        return U[:, :keep] * S[:keep]

    expected = _reference_correlations(reduced(X), reduced(Y)).mean()
    assert svcca(X, Y) == pytest.approx(expected, abs=1e-8)
    assert svcca(X, Y, variance=1.0) == pytest.approx(canonical_correlations(X, Y).mean(), abs=1e-9)


def test_pwcca_weights_each_correlation_by_how_much_of_x_its_variate_accounts_for():
    X, Y = _pair(seed=4)
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    # NumPy transcription of Morcos et al. 2018: canonical directions of X by whitening, variates h_i = Xc a_i.
    Lx, Ly = np.linalg.cholesky(Xc.T @ Xc), np.linalg.cholesky(Yc.T @ Yc)
    M = np.linalg.solve(Lx, Xc.T @ Yc) @ np.linalg.inv(Ly).T
    u, rho, _ = np.linalg.svd(M, full_matrices=False)
    variates = Xc @ np.linalg.solve(Lx.T, u)  # unit norm: a^T Sxx a = 1
    weights = np.abs(variates.T @ Xc).sum(1)
    assert pwcca(X, Y) == pytest.approx(np.sum(weights * rho) / weights.sum(), abs=1e-8)
    assert 0 <= pwcca(X, Y) <= 1 and pwcca(X, Y) != pytest.approx(pwcca(Y, X), abs=1e-6)  # not symmetric


def test_conventions_for_degenerate_input():
    X, Y = _pair(n=60, seed=5)
    with_constant = np.column_stack([X, np.full(60, 2.5)])
    assert cca_similarity(with_constant, Y) == pytest.approx(cca_similarity(X, Y), abs=1e-9)  # constant unit: no direction
    assert cca_similarity(X.astype(np.float16), Y) == pytest.approx(cca_similarity(X.astype(np.float16).astype(float), Y))
    with pytest.raises(ValueError, match="too few stimuli for CCA"):
        cca_similarity(X[:15], Y[:15])  # 12 + 9 directions, 14 allowed
    assert np.isfinite(svcca(X[:15], Y[:15], variance=0.5))  # reduced first: allowed
    with pytest.raises(ValueError, match="same for every stimulus"):
        cca_similarity(np.ones((60, 3)), Y)
    with pytest.raises(ValueError, match="same stimuli"):
        cca_similarity(X, Y[:50])
    bad = X.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError):
        pwcca(bad, Y)
    with pytest.raises(ValueError, match="variance"):
        svcca(X, Y, variance=0)
