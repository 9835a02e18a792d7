"""Noise ceiling: against rsatoolbox and a plain transcription, the bounds' order where it is a theorem, bad input."""

import warnings

import numpy as np
import pytest
import scipy.stats
from scipy.spatial.distance import squareform

from analyses._noise_ceiling import NoiseCeiling, noise_ceiling

RSATOOLBOX = "the reference is rsatoolbox: pip install rsatoolbox"
OURS_TO_RSATOOLBOX = {
    "pearson": "corr",
    "spearman": "spearman",
    "cosine": "cosine",
    "corr_cov": "corr_cov",
    "cosine_cov": "cosine_cov",
    "rho-a": "rho-a",
    "tau-a": "tau-a",
    "tau-b": "tau-b",
}


def _subjects(k=5, n=10, seed=0, noise=0.6, decimals=None):
    rng = np.random.default_rng(seed)
    shared = rng.random(n * (n - 1) // 2)
    # subjects on different scales, so that the pooling rule (z-score, RMS, ranks) matters
    subjects = (shared + noise * rng.random((k, shared.size))) * rng.uniform(0.5, 3.0, (k, 1))
    return subjects if decimals is None else np.round(subjects, decimals)


@pytest.mark.parametrize("method", list(OURS_TO_RSATOOLBOX))
def test_equals_rsatoolbox(method):
    rsa = pytest.importorskip("rsatoolbox", reason=RSATOOLBOX)
    from rsatoolbox.inference import boot_noise_ceiling

    subjects = _subjects(decimals=1)  # ties, where the rank methods differ
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # rsatoolbox warns that its tau ceilings pool averaged ranks
        lower, upper = boot_noise_ceiling(rsa.rdm.RDMs(subjects), method=OURS_TO_RSATOOLBOX[method])
    result = noise_ceiling(subjects, method)
    assert result.lower == pytest.approx(lower, abs=1e-8)
    assert result.upper == pytest.approx(upper, abs=1e-8)


def test_pearson_and_spearman_equal_a_plain_transcription():
    subjects = _subjects(k=4, seed=1)
    k = len(subjects)
    z = [(s - s.mean()) / s.std() for s in subjects]
    ranks = [scipy.stats.rankdata(s) for s in subjects]
    for method, pooled_from, correlate in [
        ("pearson", z, lambda x, y: np.corrcoef(x, y)[0, 1]),
        ("spearman", ranks, lambda x, y: scipy.stats.spearmanr(x, y).statistic),
    ]:
        everyone = sum(pooled_from) / k
        upper = [correlate(subjects[i], everyone) for i in range(k)]
        lower = [
            correlate(subjects[i], np.mean([pooled_from[j] for j in range(k) if j != i], axis=0)) for i in range(k)
        ]
        result = noise_ceiling(list(subjects), method)
        np.testing.assert_allclose(result.upper_per_subject, upper, atol=1e-12)
        np.testing.assert_allclose(result.lower_per_subject, lower, atol=1e-12)
        assert result.lower == pytest.approx(np.mean(lower)) and result.upper == pytest.approx(np.mean(upper))


@pytest.mark.parametrize("method", ["pearson", "cosine", "corr_cov", "cosine_cov", "tau-a"])
def test_each_subject_is_below_its_upper_value_where_that_is_a_theorem(method):
    for seed in range(5):
        subjects = _subjects(k=2 + seed, n=7, seed=seed, noise=2.0, decimals=1)
        result = noise_ceiling(subjects, method)
        assert (result.lower_per_subject <= result.upper_per_subject + 1e-12).all(), (method, seed)


def test_two_identical_subjects_reach_one():
    subject = _subjects(k=1, seed=2)[0]
    for method in ["pearson", "spearman", "corr_cov", "cosine_cov", "tau-b"]:
        result = noise_ceiling([subject, 3.0 * subject], method)
        assert result.lower == pytest.approx(1.0, abs=1e-12) and result.upper == pytest.approx(1.0, abs=1e-12)


def test_accepts_square_stacks_and_gives_a_frame():
    subjects = _subjects(k=3, n=8, seed=3)
    squares = np.stack([squareform(s) for s in subjects])
    result = noise_ceiling(squares, "corr")
    assert isinstance(result, NoiseCeiling) and result.method == "pearson"
    assert result.n_subjects == 3 and result.n_stimuli == 8
    assert result.upper == pytest.approx(noise_ceiling(subjects, "pearson").upper, abs=1e-12)
    frame = result.to_frame()
    assert list(frame.columns) == ["subject", "lower", "upper", "method", "n_subjects", "n_stimuli"]
    assert len(frame) == 3 and frame["lower"].mean() == pytest.approx(result.lower)


def test_refuses_bad_input():
    subjects = _subjects(k=3, n=6, seed=4)
    for too_few in [subjects[0], subjects[:1], [subjects[0]], squareform(subjects[0])]:
        with pytest.raises(ValueError, match="at least twice"):
            noise_ceiling(too_few)
    with pytest.raises(ValueError, match="different numbers of stimulus pairs"):
        noise_ceiling([subjects[0], _subjects(k=1, n=7)[0]])
    with pytest.raises(ValueError, match="subject 1's RDM is constant"):
        noise_ceiling([subjects[0], np.ones(15), subjects[2]], "pearson")
    with pytest.raises(ValueError, match="subject 0's RDM is all zeros"):
        noise_ceiling([np.zeros(15), subjects[1]], "cosine_cov")
    with pytest.raises(ValueError, match="Unknown|unknown"):
        noise_ceiling(subjects, "euclid")
