"""Mutual k-NN and CKNNA (Huh et al. 2024) against a plain transcription of their formulas, invariances,
the tie rule and the refused inputs."""

import dataclasses

import numpy as np
import pytest
import torch
from _measure_inputs import correlated_pair

from analyses._neighbour_alignment import (
    CKNNA_EPS,
    cknna,
    compare_cknna,
    compare_mutual_knn,
    mutual_knn,
    prepare_knn,
)


def _pair(n=120, units_x=16, units_y=11, seed=0):
    return correlated_pair(n=n, units_x=units_x, units_y=units_y, seed=seed, noise_x=0.7, noise_y=1.1)


# --- the formulas of the paper and its code, written out with loops and sets --------------------------------


def _cosines(X):
    n = len(X)
    norms = [np.sqrt(sum(v * v for v in row)) for row in X]
    return np.array([[np.dot(X[i], X[j]) / (norms[i] * norms[j]) for j in range(n)] for i in range(n)])


def _neighbour_lists(X, k):
    """Each stimulus's k others of largest cosine; equal cosines go to the lower index."""
    K = _cosines(X)
    return [[j for _, j in sorted((-K[i, j], j) for j in range(len(X)) if j != i)[:k]] for i in range(len(X))]


def _reference_mutual_knn(X, Y, k):
    nx, ny = _neighbour_lists(X, k), _neighbour_lists(Y, k)
    return np.mean([len(set(a) & set(b)) / k for a, b in zip(nx, ny)])


def _hsic_song(A, B):
    """Song et al. 2012, eq. 5, on matrices whose diagonal is zeroed first."""
    n = len(A)
    A, B = A - np.diag(np.diag(A)), B - np.diag(np.diag(B))
    one = np.ones(n)
    value = np.trace(A @ B) + (one @ A @ one) * (one @ B @ one) / ((n - 1) * (n - 2)) - 2 * one @ A @ B @ one / (n - 2)
    return value / (n * (n - 3))


def _reference_cknna(X, Y, k):
    n = len(X)

    def masked(K1, K2, lists1, lists2):
        mask = np.zeros((n, n))
        for i in range(n):
            for j in set(lists1[i]) & set(lists2[i]):
                mask[i, j] = 1.0
        return _hsic_song(mask * K1, mask * K2)

    K, L = _cosines(X), _cosines(Y)
    nx, ny = _neighbour_lists(X, k), _neighbour_lists(Y, k)
    return masked(K, L, nx, ny) / (np.sqrt(masked(K, K, nx, nx) * masked(L, L, ny, ny)) + CKNNA_EPS)


# --- agreement with the reference formulas -------------------------------------------------------------------


@pytest.mark.parametrize("n, k, seed", [(120, 10, 0), (40, 2, 1), (25, 24, 2), (90, 7, 3)])
def test_matches_the_reference_formulas(n, k, seed):
    X, Y = _pair(n=n, seed=seed)
    assert mutual_knn(X, Y, k) == pytest.approx(_reference_mutual_knn(X, Y, k), abs=1e-12)
    assert cknna(X, Y, k) == pytest.approx(_reference_cknna(X, Y, k), abs=1e-10)


def test_prepare_and_compare_give_the_public_values_and_the_neighbour_lists():
    X, Y = _pair(seed=4)
    a, b = prepare_knn(torch.as_tensor(X), 6), prepare_knn(torch.as_tensor(Y), 6)
    assert a.indices.tolist() == _neighbour_lists(X, 6)  # most similar first
    np.testing.assert_allclose(
        a.similarities.numpy(), np.sort(_cosines(X) - 2 * np.eye(len(X)), axis=1)[:, ::-1][:, :6]
    )
    assert compare_mutual_knn(a, b) == mutual_knn(X, Y, 6)
    assert compare_cknna(a, b) == cknna(X, Y, 6)
    with pytest.raises(ValueError, match="same k"):
        compare_mutual_knn(a, prepare_knn(torch.as_tensor(Y), 5))
    with pytest.raises(ValueError, match="same stimuli"):
        compare_cknna(a, prepare_knn(torch.as_tensor(Y[:-1]), 6))


def test_identical_and_unrelated_representations():
    X, _ = _pair(seed=5)
    assert mutual_knn(X, X, 10) == 1.0
    own = prepare_knn(torch.as_tensor(X), 10).own_hsic
    assert cknna(X, X, 10) == pytest.approx(own / (own + CKNNA_EPS), abs=1e-12)
    assert 0.99 < cknna(X, X, 10) < 1.0
    rng = np.random.default_rng(6)
    A, B = rng.standard_normal((300, 20)), rng.standard_normal((300, 20))
    assert mutual_knn(A, B, 10) == pytest.approx(10 / 299, abs=0.02)
    assert abs(cknna(A, B, 10)) < 0.1


# --- invariances and symmetry --------------------------------------------------------------------------------


def test_invariant_to_rotation_scaling_and_permutation_of_units_and_to_scaling_each_stimulus():
    X, Y = _pair(seed=7)
    rng = np.random.default_rng(8)
    rotated = X @ np.linalg.qr(rng.standard_normal((16, 16)))[0] * 5.0
    permuted = Y[:, rng.permutation(11)] * rng.uniform(0.5, 3.0, size=(len(Y), 1))
    for measure in (mutual_knn, cknna):
        assert measure(rotated, permuted, 8) == pytest.approx(measure(X, Y, 8), abs=1e-10)
    # no centring: a shared offset moves the cosines
    assert cknna(X + 3.0, Y, 8) != pytest.approx(cknna(X, Y, 8), abs=1e-3)


def test_mutual_knn_is_symmetric_and_cknna_is_only_as_symmetric_as_the_reference():
    X, Y = _pair(seed=9)
    assert mutual_knn(X, Y, 9) == mutual_knn(Y, X, 9)
    # the masks are not symmetric matrices, so the 1'AB1 term of the HSIC depends on the order
    assert cknna(Y, X, 9) == pytest.approx(_reference_cknna(Y, X, 9), abs=1e-10)
    assert cknna(Y, X, 9) == pytest.approx(cknna(X, Y, 9), abs=0.01)
    assert cknna(Y, X, 9) != pytest.approx(cknna(X, Y, 9), abs=1e-5)


# --- ties, degenerate and refused inputs ---------------------------------------------------------------------


def test_duplicated_stimuli_tie_and_the_lower_index_wins():
    X, Y = _pair(n=60, seed=10)
    for copy, original in [(7, 30), (12, 30), (45, 30), (50, 3), (59, 3)]:
        X[copy] = X[original]
        Y[copy] = Y[original]
    summary = prepare_knn(torch.as_tensor(X), 5)
    assert summary.indices.tolist() == _neighbour_lists(X, 5)
    assert summary.indices[30, :3].tolist() == [7, 12, 45]  # the copies first, in index order
    assert summary.indices[7, :3].tolist() == [12, 30, 45]
    # k cuts through the tied copies: the lower indices are kept
    narrow = prepare_knn(torch.as_tensor(X), 2)
    assert narrow.indices[7].tolist() == [12, 30] and narrow.indices[45].tolist() == [7, 12]
    assert narrow.indices[59].tolist() == [3, 50]
    assert mutual_knn(X, Y, 5) == pytest.approx(_reference_mutual_knn(X, Y, 5), abs=1e-12)
    assert cknna(X, Y, 5) == pytest.approx(_reference_cknna(X, Y, 5), abs=1e-10)


def test_float16_input_is_read_as_float64():
    X, Y = _pair(n=80, seed=11)
    X16, Y16 = X.astype(np.float16), torch.as_tensor(Y, dtype=torch.float16)
    X64, Y64 = X16.astype(np.float64), Y16.double().numpy()
    assert mutual_knn(X16, Y16, 6) == mutual_knn(X64, Y64, 6)
    assert cknna(X16, Y16, 6) == pytest.approx(_reference_cknna(X64, Y64, 6), abs=1e-10)


def test_higher_rank_features_are_flattened_per_stimulus():
    X, Y = _pair(n=50, units_x=12, seed=12)
    assert cknna(X.reshape(50, 3, 4), Y, 5) == cknna(X, Y, 5)


@pytest.mark.parametrize("measure", [mutual_knn, cknna])
def test_refuses_undefined_neighbourhoods(measure):
    X, Y = _pair(n=30, seed=13)
    zero = X.copy()
    zero[4] = 0.0
    with pytest.raises(ValueError, match="all zero.*index 4"):
        measure(zero, Y, 3)
    with pytest.raises(ValueError, match="Y .*all zero"):
        measure(X, zero, 3)
    with pytest.raises(ValueError, match="same direction"):
        measure(np.ones((30, 5)), Y, 3)
    with pytest.raises(ValueError, match="same direction"):
        measure(X, np.arange(1, 31)[:, None] * np.ones((1, 5)), 3)  # positive multiples of one row
    for k in (0, 30, 31, 2.0, True):
        with pytest.raises(ValueError, match="k must be an integer from 1 to n_stimuli - 1 = 29"):
            measure(X, Y, k)
    with pytest.raises(ValueError, match="same stimuli"):
        measure(X, Y[:-1], 3)
    bad = X.copy()
    bad[2, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        measure(bad, Y, 3)


def test_cknna_refuses_k_1_too_few_stimuli_and_a_non_positive_normaliser():
    X, Y = _pair(n=30, seed=14)
    assert 0.0 <= mutual_knn(X, Y, 1) <= 1.0
    with pytest.raises(ValueError, match="k >= 2"):
        cknna(X, Y, 1)
    with pytest.raises(ValueError, match="at least 4 stimuli"):
        cknna(X[:3], Y[:3], 2)
    a, b = prepare_knn(torch.as_tensor(X), 4), prepare_knn(torch.as_tensor(Y), 4)
    with pytest.raises(ValueError, match="Y's cosines on its own neighbours .* not positive"):
        compare_cknna(a, dataclasses.replace(b, own_hsic=-1e-4))
