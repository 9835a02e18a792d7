"""RDMs: against scipy/NumPy, against rsatoolbox after its conventions, chunked == direct, bad input."""

import numpy as np
import pytest
import torch
from scipy.spatial.distance import pdist, squareform

import analyses
from analyses import RDM, rdm, rdm_chunked


@pytest.fixture
def patterns():
    rng = np.random.default_rng(0)
    return rng.normal(size=(30, 12)) + rng.normal(size=(1, 12))


@pytest.mark.parametrize("metric", ["euclidean", "sqeuclidean", "correlation", "cosine"])
def test_rdm_matches_scipy_pdist(patterns, metric):
    result = rdm(patterns, metric)
    expected = squareform(pdist(patterns, metric))
    np.testing.assert_allclose(np.asarray(result), expected, atol=1e-10)
    matrix = np.asarray(result)
    assert np.array_equal(matrix, matrix.T) and np.all(np.diag(matrix) == 0)
    np.testing.assert_allclose(result.condensed(), pdist(patterns, metric), atol=1e-10)


def test_rdm_accepts_torch_and_keeps_descriptors(patterns):
    labels = np.arange(30) % 3
    result = rdm(torch.tensor(patterns, dtype=torch.float32), "euclidean", {"label": labels}, name="layer")
    np.testing.assert_allclose(np.asarray(result), squareform(pdist(patterns.astype(np.float32).astype(np.float64))), atol=1e-6)
    frame = result.to_frame()
    assert len(frame) == 30 * 29 // 2
    assert {"stimulus_i", "stimulus_j", "dissimilarity", "label_i", "label_j"} <= set(frame.columns)
    ordered = result.sorted_by("label")
    assert np.all(np.diff(ordered.descriptors["label"]) >= 0)
    assert ordered.matrix[0, 1] == result.matrix[0, 3]  # stimuli 0 and 3 both have label 0


def test_mahalanobis_matches_scipy(patterns):
    rng = np.random.default_rng(1)
    A = rng.normal(size=(12, 12))
    covariance = A @ A.T + 12 * np.eye(12)
    precision = np.linalg.inv(covariance)
    expected = squareform(pdist(patterns, "mahalanobis", VI=precision)) ** 2
    np.testing.assert_allclose(np.asarray(rdm(patterns, "mahalanobis", noise_precision=precision)), expected, atol=1e-9)
    np.testing.assert_allclose(np.asarray(rdm(patterns, "mahalanobis", noise_covariance=covariance)), expected, atol=1e-9)


def _crossnobis_brute_force(runs_data, precision):
    n_runs, n, _ = runs_data.shape
    result = np.zeros((n, n))
    for k in range(n_runs):
        train = np.delete(runs_data, k, axis=0).mean(axis=0)
        test = runs_data[k]
        for i in range(n):
            for j in range(n):
                if i != j:
                    result[i, j] += (train[i] - train[j]) @ precision @ (test[i] - test[j]) / n_runs
    return (result + result.T) / 2


def test_crossnobis_matches_brute_force_and_is_unbiased():
    rng = np.random.default_rng(2)
    true = rng.normal(size=(6, 20))
    runs_data = true[None] + rng.normal(scale=1.0, size=(4, 6, 20))
    precision = np.eye(20) * 0.5
    result = rdm(runs_data, "crossnobis", noise_precision=precision)
    np.testing.assert_allclose(np.asarray(result), _crossnobis_brute_force(runs_data, precision), atol=1e-10)
    # pure noise: crossnobis is centred on zero (negative values allowed), euclidean is not
    noise = rng.normal(size=(8, 10, 200))
    assert abs(rdm(noise, "crossnobis").condensed().mean()) < 0.15 * rdm(noise.mean(0), "sqeuclidean").condensed().mean()


def test_crossnobis_with_run_vector_matches_3d_input():
    rng = np.random.default_rng(3)
    runs_data = rng.normal(size=(3, 5, 7))
    flat = runs_data.reshape(15, 7)
    runs = np.repeat(np.arange(3), 5)
    conditions = np.tile(np.arange(5), 3)
    shuffle = rng.permutation(15)
    by_conditions = rdm(flat[shuffle], "crossnobis", runs=runs[shuffle], conditions=conditions[shuffle])
    np.testing.assert_allclose(np.asarray(by_conditions), np.asarray(rdm(runs_data, "crossnobis")), atol=1e-12)
    np.testing.assert_allclose(np.asarray(rdm(flat, "crossnobis", runs=runs)), np.asarray(by_conditions), atol=1e-12)
    whitened = rdm(runs_data, "crossnobis", noise_covariance="residuals")
    assert whitened.matrix.shape == (5, 5) and np.all(np.diag(whitened.matrix) == 0)


@pytest.mark.parametrize("metric", ["euclidean", "sqeuclidean", "correlation", "cosine", "mahalanobis"])
@pytest.mark.parametrize("condensed", [False, True])
def test_chunked_equals_direct(tmp_path, patterns, metric, condensed):
    options = {"noise_precision": np.eye(12) * 2.0} if metric == "mahalanobis" else {}
    direct = np.asarray(rdm(patterns, metric, **options))
    in_memory = rdm_chunked(patterns, metric, memory_budget=4 * 8 * 30 * 4, condensed=condensed, progress=False, **options)
    np.testing.assert_allclose(np.asarray(in_memory), direct, atol=1e-12)
    path = tmp_path / "rdm.npy"
    on_disk = rdm_chunked(patterns, metric, path=path, memory_budget=5000, condensed=condensed, progress=False, **options)
    np.testing.assert_allclose(np.asarray(on_disk), direct, atol=1e-12)
    stored = np.load(path)
    np.testing.assert_allclose(stored, squareform(direct, checks=False) if condensed else direct, atol=1e-12)
    assert not [p for p in tmp_path.iterdir() if p.name != "rdm.npy"]  # no temporary file left


def test_rdm_object_round_trip(patterns):
    result = rdm(patterns, "correlation")
    again = RDM.from_condensed(result.condensed(), "correlation")
    np.testing.assert_array_equal(np.asarray(again), np.asarray(result))
    assert "correlation" in repr(result)
    with pytest.raises(ValueError, match="not an upper triangle"):
        RDM.from_condensed(np.ones(5))
    with pytest.raises(ValueError, match="symmetric"):
        RDM(np.array([[0, 1, 2], [0, 0, 1], [2, 1, 0.0]]))
    with pytest.raises(ValueError, match="diagonal"):
        RDM(np.ones((3, 3)))
    with pytest.raises(ValueError, match="one entry per stimulus"):
        RDM(np.zeros((3, 3)), descriptors={"label": [1, 2]})



@pytest.fixture
def rsa():
    return pytest.importorskip("rsatoolbox")


def test_equals_rsatoolbox_after_its_conventions(rsa, patterns):
    data = rsa.data.Dataset(patterns)
    n_units = patterns.shape[1]
    ours = {
        "euclidean": rdm(patterns, "sqeuclidean", per_unit=True).condensed(),
        "correlation": rdm(patterns, "correlation").condensed(),
    }
    for method, expected in ours.items():
        theirs = rsa.rdm.calc_rdm(data, method=method).get_vectors()[0]
        np.testing.assert_allclose(expected, theirs, atol=1e-6, rtol=0)
    precision = np.linalg.inv(np.cov(patterns.T) + np.eye(n_units))
    theirs = rsa.rdm.calc_rdm(data, method="mahalanobis", noise=precision).get_vectors()[0]
    np.testing.assert_allclose(rdm(patterns, "mahalanobis", noise_precision=precision, per_unit=True).condensed(), theirs, atol=1e-6)


def test_crossnobis_equals_rsatoolbox(rsa):
    rng = np.random.default_rng(4)
    runs_data = rng.normal(size=(3, 6, 9))
    flat = runs_data.reshape(18, 9)
    data = rsa.data.Dataset(
        flat, obs_descriptors={"stim": np.tile(np.arange(6), 3), "run": np.repeat(np.arange(3), 6)}
    )
    precision = np.eye(9) * 0.7
    theirs = rsa.rdm.calc_rdm(data, method="crossnobis", descriptor="stim", cv_descriptor="run", noise=precision)
    ours = rdm(runs_data, "crossnobis", noise_precision=precision, per_unit=True).condensed()
    np.testing.assert_allclose(ours, theirs.get_vectors()[0], atol=1e-6)


def test_degenerate_inputs_raise_clear_errors(patterns):
    with pytest.raises(ValueError, match="did you mean 'correlation'"):
        rdm(patterns, "corelation")
    constant_stimulus = patterns.copy()
    constant_stimulus[4] = 2.5
    with pytest.raises(ValueError, match=r"constant across units .*stimuli \[4\]"):
        rdm(constant_stimulus, "correlation")
    zero = patterns.copy()
    zero[2] = 0
    with pytest.raises(ValueError, match="all zero"):
        rdm(zero, "cosine")
    # a constant unit is harmless: it adds nothing to any distance
    constant_unit = patterns.copy()
    constant_unit[:, 0] = 7.0
    np.testing.assert_allclose(np.asarray(rdm(constant_unit, "euclidean")), squareform(pdist(constant_unit)), atol=1e-10)
    with pytest.raises(ValueError, match="at least 3"):
        rdm(patterns[:2])
    bad = patterns.copy()
    bad[3, 3] = np.nan
    with pytest.raises(ValueError, match="NaN or inf"):
        rdm(bad)
    bad[3, 3] = np.inf
    with pytest.raises(ValueError, match="NaN or inf"):
        rdm_chunked(bad, progress=False)
    with pytest.raises(ValueError, match="noise_precision"):
        rdm(patterns, "mahalanobis")
    with pytest.raises(ValueError, match="positive definite"):
        rdm(patterns, "mahalanobis", noise_precision=-np.eye(12))
    with pytest.raises(ValueError, match="repeated measurements"):
        rdm(patterns, "crossnobis")
    with pytest.raises(ValueError, match="per_unit"):
        rdm(patterns, "correlation", per_unit=True)


def test_public_names_exported():
    for name in ["RDM", "rdm", "rdm_chunked", "compare_rdms", "cka", "StreamingCKA", "cka_matrix", "rank_layers"]:
        assert name in analyses.__all__


@pytest.mark.gpu
def test_rdm_on_gpu_matches_cpu(patterns):
    on_gpu = torch.tensor(patterns, device="cuda")
    for metric in ["euclidean", "correlation", "cosine"]:
        np.testing.assert_allclose(np.asarray(rdm(on_gpu, metric)), np.asarray(rdm(patterns, metric)), atol=1e-10)
    np.testing.assert_allclose(
        np.asarray(rdm_chunked(on_gpu, "correlation", memory_budget=5000, progress=False)),
        np.asarray(rdm(patterns, "correlation")),
        atol=1e-10,
    )
