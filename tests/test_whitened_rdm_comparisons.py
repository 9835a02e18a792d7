"""Whitened RDM comparisons (corr_cov, cosine_cov): against rsatoolbox, against an explicit V, invariances, degenerate RDMs."""

from functools import lru_cache

import numpy as np
import pytest
from scipy.spatial.distance import squareform

from analyses._compare import compare_rdms, compare_vectors
from analyses._memory import MemoryLimitError, set_memory_limit

RSATOOLBOX = "the reference is rsatoolbox: pip install rsatoolbox"


def _random_rdms(k, n, seed):
    return np.random.default_rng(seed).random((k, n * (n - 1) // 2))


@lru_cache
def _dense_v(n):
    """V = 2 I + B B^T built entry by entry: 4 on the diagonal, 1 for pairs sharing a stimulus, else 0."""
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    V = np.zeros((len(pairs), len(pairs)))
    for p, first in enumerate(pairs):
        for q, second in enumerate(pairs):
            V[p, q] = 4.0 if p == q else float(len(set(first) & set(second)))
    return V


def _brute_force(a, b, method):
    """The whitened cosine by solving with the explicit V, after plain-mean centring for corr_cov."""
    if method == "corr_cov":
        a, b = a - a.mean(), b - b.mean()
    V = _dense_v(squareform(a, checks=False).shape[0])
    inner = lambda x, y: x @ np.linalg.solve(V, y)
    return inner(a, b) / np.sqrt(inner(a, a) * inner(b, b))


@pytest.mark.parametrize("n", [6, 20, 60])
def test_equals_rsatoolbox_for_several_candidates(n):
    rsa = pytest.importorskip("rsatoolbox", reason=RSATOOLBOX)
    A, B = _random_rdms(3, n, seed=n), _random_rdms(4, n, seed=n + 1) + 2.0
    for method in ["corr_cov", "cosine_cov"]:
        ours = compare_rdms(A, B, method)
        theirs = rsa.rdm.compare(rsa.rdm.RDMs(A), rsa.rdm.RDMs(B), method=method)
        assert ours.shape == (3, 4)
        np.testing.assert_allclose(ours, theirs, atol=1e-8, rtol=0, err_msg=method)


def test_rsatoolbox_builds_the_same_v_for_the_default_sigma_k():
    pytest.importorskip("rsatoolbox", reason=RSATOOLBOX)
    try:
        from rsatoolbox.rdm.compare import _get_v
    except ImportError:
        pytest.skip("this rsatoolbox version has no rsatoolbox.rdm.compare._get_v")
    for n in [4, 9]:
        np.testing.assert_array_equal(_get_v(n, None).toarray(), _dense_v(n))


@pytest.mark.parametrize("method", ["corr_cov", "cosine_cov"])
def test_equals_solving_with_the_explicit_covariance(method):
    a, b = _random_rdms(2, 12, seed=3)
    assert compare_rdms(a, b, method) == pytest.approx(_brute_force(a, b, method), abs=1e-10)
    square = squareform(a)
    assert compare_rdms(square, squareform(b), method) == pytest.approx(compare_rdms(a, b, method), abs=1e-12)


def test_whitening_changes_the_answer():
    # the whitened and plain comparisons are different measures, not the same numbers by another route
    a, b = _random_rdms(2, 12, seed=4)
    assert compare_rdms(a, b, "corr_cov") != pytest.approx(compare_rdms(a, b, "pearson"), abs=1e-3)
    assert compare_rdms(a, b, "cosine_cov") != pytest.approx(compare_rdms(a, b, "cosine"), abs=1e-3)


def test_corr_cov_ignores_scale_and_shift_cosine_cov_only_scale():
    a, b = _random_rdms(2, 10, seed=5)
    for method in ["corr_cov", "cosine_cov"]:
        assert compare_rdms(7.5 * a, b, method) == pytest.approx(compare_rdms(a, b, method), abs=1e-12)
    assert compare_rdms(7.5 * a + 3.0, b - 1.0, "corr_cov") == pytest.approx(compare_rdms(a, b, "corr_cov"), abs=1e-12)
    assert compare_rdms(a + 3.0, b, "cosine_cov") != pytest.approx(compare_rdms(a, b, "cosine_cov"), abs=1e-3)
    assert compare_rdms(a, 2.0 * a, "cosine_cov") == pytest.approx(1.0, abs=1e-12)
    assert compare_rdms(a, -a + 5.0, "corr_cov") == pytest.approx(-1.0, abs=1e-12)


def test_same_stimulus_permutation_leaves_both_unchanged():
    a, b = _random_rdms(2, 9, seed=6)
    order = np.random.default_rng(7).permutation(9)
    permute = lambda v: squareform(squareform(v)[np.ix_(order, order)])
    for method in ["corr_cov", "cosine_cov"]:
        assert compare_rdms(permute(a), permute(b), method) == pytest.approx(compare_rdms(a, b, method), abs=1e-12)


def test_constant_and_zero_rdms():
    a = _random_rdms(1, 8, seed=8)[0]
    constant = np.full_like(a, 0.3)
    # cosine_cov is defined for a constant RDM: V^-1 1 is not 0
    assert compare_rdms(a, constant, "cosine_cov") == pytest.approx(_brute_force(a, constant, "cosine_cov"), abs=1e-10)
    with pytest.raises(ValueError, match="constant.*tau-a"):
        compare_rdms(a, constant, "corr_cov")
    with pytest.raises(ValueError, match="first argument is constant"):
        compare_rdms(constant, a, "corr_cov")
    with pytest.raises(ValueError, match="all zeros"):
        compare_rdms(a, np.zeros_like(a), "cosine_cov")


def test_constant_rdm_matches_rsatoolbox_for_cosine_cov():
    rsa = pytest.importorskip("rsatoolbox", reason=RSATOOLBOX)
    a = _random_rdms(1, 8, seed=9)
    constant = np.ones_like(a)
    theirs = rsa.rdm.compare(rsa.rdm.RDMs(a), rsa.rdm.RDMs(constant), method="cosine_cov")[0, 0]
    assert compare_rdms(a, constant, "cosine_cov") == pytest.approx(theirs, abs=1e-8)


def test_refuses_vectors_that_are_not_whole_rdms():
    # e.g. a subset of pairs: the whitening needs every pair of n stimuli
    rng = np.random.default_rng(10)
    with pytest.raises(ValueError, match="needs whole condensed RDMs"):
        compare_vectors(rng.random((1, 7)), rng.random((1, 7)), "corr_cov")


def test_memory_guard_counts_the_centred_copies():
    a, b = _random_rdms(2, 300, seed=11)  # 44,850 pairs: centred copies about 1.4 MB
    with set_memory_limit("1 MB"), pytest.raises(MemoryLimitError, match="corr_cov"):
        compare_rdms(a, b, "corr_cov")
    with set_memory_limit("2 MB"):
        assert -1.0 <= compare_rdms(a, b, "cosine_cov") <= 1.0


def test_the_bootstrap_refuses_the_whitened_methods_which_need_whole_rdms():
    from analyses import bootstrap_rdm_comparison

    rng = np.random.default_rng(0)
    A, B = rng.random(45), rng.random(45)
    for method in ("corr_cov", "cosine_cov"):
        with pytest.raises(ValueError, match="whole RDMs.*permutation_test_rdms"):
            bootstrap_rdm_comparison(A, B, method, n_bootstrap=5, progress=False)
