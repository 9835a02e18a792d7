"""RDM comparison: against scipy and brute-force definitions, against rsatoolbox, degenerate cases."""

import itertools

import numpy as np
import pytest
import scipy.stats
from scipy.spatial.distance import pdist

from analyses import compare_rdms, rdm


@pytest.fixture
def two_rdms():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(15, 6))
    Y = X + rng.normal(scale=1.0, size=(15, 6))
    return pdist(X), np.round(pdist(Y), 1)  # rounding creates ties, where tau-a and tau-b differ


def _tau_a_brute_force(a, b):
    score = sum(np.sign(a[i] - a[j]) * np.sign(b[i] - b[j]) for i, j in itertools.combinations(range(a.size), 2))
    return score / (a.size * (a.size - 1) / 2)


def test_methods_match_independent_definitions(two_rdms):
    a, b = two_rdms
    n = a.size
    ra, rb = scipy.stats.rankdata(a), scipy.stats.rankdata(b)
    expected = {
        "pearson": scipy.stats.pearsonr(a, b).statistic,
        "spearman": scipy.stats.spearmanr(a, b).statistic,
        "tau-b": scipy.stats.kendalltau(a, b).statistic,
        "tau-a": _tau_a_brute_force(a, b),
        "cosine": a @ b / np.linalg.norm(a) / np.linalg.norm(b),
        "rho-a": 12 * np.sum((ra - ra.mean()) * (rb - rb.mean())) / (n**3 - n),
    }
    for method, value in expected.items():
        assert compare_rdms(a, b, method) == pytest.approx(value, abs=1e-12), method
    assert compare_rdms(a, b, "kendall") == pytest.approx(expected["tau-b"], abs=1e-12)
    assert compare_rdms(a, b, "tau-a") != pytest.approx(expected["tau-b"], abs=1e-4)  # ties matter


def test_several_rdms_give_a_matrix(two_rdms):
    a, b = two_rdms
    result = compare_rdms([a, b, a], np.stack([b, a]), "spearman")
    assert result.shape == (3, 2)
    assert result[0, 1] == pytest.approx(1.0) and result[1, 0] == pytest.approx(1.0)
    assert result[0, 0] == pytest.approx(compare_rdms(a, b, "spearman"))


def test_accepts_rdm_objects_and_square_matrices():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(10, 4))
    A, B = rdm(X, "euclidean"), rdm(X + rng.normal(size=X.shape), "euclidean")
    assert compare_rdms(A, np.asarray(B), "pearson") == pytest.approx(compare_rdms(A.condensed(), B.condensed(), "pearson"))


def test_equals_rsatoolbox(two_rdms):
    rsa = pytest.importorskip("rsatoolbox")
    a, b = two_rdms
    A, B = rsa.rdm.RDMs(a[None]), rsa.rdm.RDMs(b[None])
    for ours, theirs in [("pearson", "corr"), ("spearman", "spearman"), ("rho-a", "rho-a"), ("tau-a", "tau-a"),
                         ("tau-b", "tau-b"), ("cosine", "cosine")]:
        assert compare_rdms(a, b, ours) == pytest.approx(float(rsa.rdm.compare(A, B, method=theirs)[0, 0]), abs=1e-6), ours


def test_degenerate_comparisons(two_rdms):
    a, b = two_rdms
    constant = np.ones_like(a)
    for method in ["pearson", "spearman", "tau-b", "cosine"]:
        if method == "cosine":
            with pytest.raises(ValueError, match="constant"):
                compare_rdms(a, np.zeros_like(a), method)
            continue
        with pytest.raises(ValueError, match="tau-a"):
            compare_rdms(a, constant, method)
    assert compare_rdms(a, constant, "tau-a") == 0.0
    assert compare_rdms(a, constant, "rho-a") == pytest.approx(0.0)
    with pytest.raises(ValueError, match="different numbers of stimulus pairs"):
        compare_rdms(a, np.ones(10), "pearson")
    with pytest.raises(ValueError, match="did you mean"):
        compare_rdms(a, b, "spearmann")
    with pytest.raises(ValueError, match="NaN"):
        compare_rdms(np.where(np.arange(a.size) == 0, np.nan, a), b)
    with pytest.raises(ValueError, match="at least 3"):
        compare_rdms(np.ones(1), np.ones(1), "tau-a")


def test_ranks_equal_scipy_with_ties():
    from analyses._compare import _ranks

    rng = np.random.default_rng(8)
    vectors = np.round(rng.normal(size=(4, 500)), 1)
    vectors[2] = 1.0  # a fully tied row
    np.testing.assert_array_equal(_ranks(vectors), scipy.stats.rankdata(vectors, axis=1))
