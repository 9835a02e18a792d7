"""Maps across layers and models, inference on RDM comparisons, reference RDMs."""

import numpy as np
import pandas as pd
import pytest
from scipy.spatial.distance import pdist, squareform

from analyses import (
    RDM,
    bootstrap_rdm_comparison,
    cka,
    cka_matrix,
    compare_rdms,
    layer_rdms,
    load_rdm,
    permutation_test_rdms,
    rank_layers,
    rdm,
    rdm_mds,
    rdm_similarity_matrix,
)
from _fakes import FakeRecording


def _layers(seed, n=60, widths=(5, 40, 90, 8)):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, widths[0]))
    arrays = {}
    for depth, width in enumerate(widths):
        x = np.tanh(x @ rng.normal(size=(x.shape[1], width)) / np.sqrt(x.shape[1]))
        arrays[f"layer{depth}"] = x
    return arrays


@pytest.fixture
def recordings():
    labels = np.arange(60) % 4
    return {"a": FakeRecording(_layers(0), labels), "b": FakeRecording(_layers(1), labels)}


@pytest.mark.parametrize("kernel,debiased", [("linear", False), ("linear", True), ("rbf", False)])
def test_cka_matrix_matches_pairwise_cka(recordings, kernel, debiased):
    result = cka_matrix(recordings, kernel, debiased=debiased, progress=False)
    assert result.names[:2] == ["a/layer0", "a/layer1"] and result.models[-1] == "b"
    flat = {f"{m}/{layer}": rec[layer] for m, rec in recordings.items() for layer in rec.layers}
    expected = np.array([[cka(flat[i], flat[j], kernel, debiased=debiased) for j in flat] for i in flat])
    np.testing.assert_allclose(result.values, expected, atol=1e-10)
    frame = result.to_frame()
    assert len(frame) == 64 and frame["measure"].iloc[0].endswith(f"{kernel} CKA")
    assert result.block("a", "b").shape == (4, 4)
    with pytest.raises(ValueError, match="did you mean 'a'"):
        result.block("aa", "b")


def test_rdm_similarity_matrix_and_mds(recordings):
    result = rdm_similarity_matrix(recordings, "spearman", progress=False)
    flat = {f"{m}/{layer}": rec[layer] for m, rec in recordings.items() for layer in rec.layers}
    vectors = [pdist(x, "correlation") for x in flat.values()]
    expected = np.array([[compare_rdms(u, v, "spearman") for v in vectors] for u in vectors])
    np.testing.assert_allclose(result.values, expected, atol=1e-10)
    rdms = layer_rdms(recordings, progress=False)
    assert rdms["a/layer0"].descriptors["label"][5] == 1  # the recording's labels travel along
    mds = rdm_mds(result, seed=0)
    again = rdm_mds(rdms, method="spearman", seed=0)
    np.testing.assert_allclose(mds.coordinates, again.coordinates, atol=1e-9)  # same seed, same result
    frame = mds.to_frame()
    assert list(frame["depth"]) == [0, 1, 2, 3, 0, 1, 2, 3]
    # the embedding reflects the distances: MDS distances correlate with 1 - similarity
    embedded = pdist(mds.coordinates)
    assert np.corrcoef(embedded, squareform(1 - result.values, checks=False))[0, 1] > 0.8


def _stress_1(coordinates, dissimilarities):
    """Kruskal's stress-1, written out with numpy alone."""
    n = len(coordinates)
    misfit = scale = 0.0
    for i in range(n):
        for j in range(i + 1, n):
            distance = np.sqrt(np.sum((coordinates[i] - coordinates[j]) ** 2))
            misfit += (distance - dissimilarities[i, j]) ** 2
            scale += distance**2
    return np.sqrt(misfit / scale)


def _similarity(values, measure="test"):
    from analyses import SimilarityMatrix

    names = [f"m/layer{i}" for i in range(len(values))]
    return SimilarityMatrix(values, names, ["m"] * len(values), [n.split("/")[1] for n in names], measure, 10)


def test_mds_stress_is_kruskal_stress_1(recordings):
    similarity = rdm_similarity_matrix(recordings, progress=False)
    mds = rdm_mds(similarity, seed=0)
    dissimilarities = np.clip(1 - similarity.values, 0, None)
    assert mds.stress == pytest.approx(_stress_1(mds.coordinates, dissimilarities), rel=1e-9)
    assert 0 <= mds.stress < 1
    assert mds.to_frame()["stress"].iloc[0] == mds.stress


def test_mds_stress_is_zero_for_euclidean_distances_in_the_plane():
    rng = np.random.default_rng(3)
    points = rng.random((9, 2))
    distances = squareform(pdist(points))
    mds = rdm_mds(_similarity(1 - distances / distances.max()), seed=0)
    assert mds.stress <= 1e-6
    # the plane is recovered up to rotation, reflection and translation: distances match
    np.testing.assert_allclose(pdist(mds.coordinates), pdist(points) / distances.max(), atol=1e-5)


def test_maps_reject_mismatched_stimuli():
    with pytest.raises(ValueError, match="same stimuli"):
        cka_matrix({"x": np.random.rand(10, 3), "y": np.random.rand(9, 3)}, progress=False)
    with pytest.raises(ValueError, match="same for every stimulus"):
        cka_matrix({"x": np.random.rand(10, 3), "y": np.ones((10, 3))}, progress=False)
    with pytest.raises(ValueError, match="different numbers of stimuli"):
        rdm_similarity_matrix({"x": rdm(np.random.rand(10, 3)), "y": rdm(np.random.rand(9, 3))}, progress=False)


def test_bootstrap_ci_covers_the_estimate_and_drops_duplicate_pairs():
    rng = np.random.default_rng(5)
    X = rng.normal(size=(40, 10))
    A = rdm(X, "euclidean")
    B = rdm(X + rng.normal(scale=0.7, size=X.shape), "euclidean")
    unrelated = rdm(rng.normal(size=(40, 10)), "euclidean")
    result = bootstrap_rdm_comparison(A, {"related": B, "unrelated": unrelated}, "pearson", n_bootstrap=200, progress=False)
    frame = result.to_frame()
    assert list(frame["name"]) == ["related", "unrelated"]
    assert np.all(result.ci_low <= result.estimate) and np.all(result.estimate <= result.ci_high)
    assert result.ci_low[0] > result.ci_high[1]  # the related RDM is clearly better
    again = bootstrap_rdm_comparison(A, [B, unrelated], "pearson", n_bootstrap=200, progress=False)
    np.testing.assert_array_equal(again.samples, result.samples)  # same seed, same result
    # with duplicated pairs kept, zeros would inflate the correlation of two RDMs; check a sample by hand
    rng2 = np.random.default_rng(0)
    index = rng2.integers(0, 40, 40)
    rows, cols = np.triu_indices(40, 1)
    keep = index[rows] != index[cols]
    i, j = index[rows][keep], index[cols][keep]
    expected = np.corrcoef(A.matrix[i, j], B.matrix[i, j])[0, 1]
    assert result.samples[0, 0] == pytest.approx(expected, abs=1e-12)


def test_permutation_test():
    rng = np.random.default_rng(6)
    X = rng.normal(size=(25, 6))
    A = rdm(X)
    related = permutation_test_rdms(A, rdm(X + 0.5 * rng.normal(size=X.shape)), n_permutations=199, progress=False)
    assert related.p_value == pytest.approx(1 / 200)  # +1 correction: never 0
    unrelated = permutation_test_rdms(A, rdm(rng.normal(size=(25, 6))), n_permutations=199, progress=False)
    assert unrelated.p_value > 0.05
    null, observed = unrelated.null_distribution, unrelated.observed
    assert unrelated.p_value == pytest.approx((1 + np.sum(null >= observed)) / 200)
    assert {"observed", "p_value"} <= set(unrelated.to_frame().columns)


def test_load_rdm_formats_and_errors(tmp_path):
    matrix = squareform(pdist(np.random.default_rng(7).normal(size=(6, 3))))
    np.save(tmp_path / "square.npy", matrix)
    np.save(tmp_path / "condensed.npy", squareform(matrix))
    np.savetxt(tmp_path / "plain.csv", matrix, delimiter=",")
    names = [f"s{i}" for i in range(6)]
    pd.DataFrame(matrix, index=names, columns=names).to_csv(tmp_path / "labelled.csv")
    for name in ["square.npy", "condensed.npy", "plain.csv", "labelled.csv"]:
        loaded = load_rdm(tmp_path / name)
        np.testing.assert_allclose(np.asarray(loaded), matrix, atol=1e-12)
    assert list(load_rdm(tmp_path / "labelled.csv").descriptors["stimulus"]) == names
    with pytest.raises(FileNotFoundError, match="no reference RDM"):
        load_rdm(tmp_path / "missing.npy")
    asymmetric = matrix.copy()
    asymmetric[0, 1] += 1
    np.save(tmp_path / "bad.npy", asymmetric)
    with pytest.raises(ValueError, match="bad.npy.*symmetric"):
        load_rdm(tmp_path / "bad.npy")
    np.save(tmp_path / "diag.npy", matrix + np.eye(6))
    with pytest.raises(ValueError, match="diagonal"):
        load_rdm(tmp_path / "diag.npy")
    np.save(tmp_path / "short.npy", np.ones(7))
    with pytest.raises(ValueError, match="upper triangle"):
        load_rdm(tmp_path / "short.npy")
    (tmp_path / "x.txt").write_text("1")
    with pytest.raises(ValueError, match=".npy or .csv"):
        load_rdm(tmp_path / "x.txt")


def test_rank_layers_finds_the_matching_layer(recordings, tmp_path):
    target = recordings["b"]["layer2"]
    np.save(tmp_path / "neural.npy", np.asarray(rdm(target + 0.01, "correlation")))
    ranking = rank_layers(tmp_path / "neural.npy", recordings, "spearman", n_bootstrap=20, progress=False)
    frame = ranking.to_frame()
    top = frame.sort_values("rank").iloc[0]
    assert (top["model"], top["layer"], top["score"]) == ("b", "layer2", pytest.approx(1.0))
    assert set(ranking.best()["model"]) == {"a", "b"}
    assert {"ci_low", "ci_high", "rank_in_model", "depth"} <= set(frame.columns)
    with pytest.raises(ValueError, match="same stimuli"):
        rank_layers(RDM(np.zeros((3, 3))), recordings, progress=False)
