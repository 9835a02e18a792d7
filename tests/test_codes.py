"""The codes analysis: k-means codes against brute-force agreement measures, codebook use against NumPy and the
VQ-VAE's own perplexity, the section, and the study step."""

from itertools import combinations
from math import comb

import numpy as np
import pytest
import torch

from analyses._code_agreement import code_purity, codebook_usage, kmeans_codes
from probe.study import Study
from probe.study._codes_step import codes_analysis, codes_findings
from probe.study._context import StudyContext
from probe.study._spec import StudySpecError
from reports._codes_section import codes_section
from zoo.models.vq import code_perplexity


def _brute_force_ari(a, b):
    """Adjusted Rand index from the pair counts of a loop over every pair of stimuli."""
    n = len(a)
    both = sum(1 for i, j in combinations(range(n), 2) if a[i] == a[j] and b[i] == b[j])
    same_a = sum(1 for i, j in combinations(range(n), 2) if a[i] == a[j])
    same_b = sum(1 for i, j in combinations(range(n), 2) if b[i] == b[j])
    expected = same_a * same_b / comb(n, 2)
    return (both - expected) / ((same_a + same_b) / 2 - expected)


def _nmi(a, b):
    """Mutual information over the arithmetic mean of the two entropies, from the joint frequencies."""
    a_values, b_values = sorted(set(a)), sorted(set(b))
    joint = np.array([[np.mean((a == x) & (b == y)) for y in b_values] for x in a_values])
    pa, pb = joint.sum(1), joint.sum(0)
    nonzero = joint > 0
    mi = (joint[nonzero] * np.log(joint[nonzero] / np.outer(pa, pb)[nonzero])).sum()
    entropy = lambda p: -(p * np.log(p)).sum()
    return mi / ((entropy(pa) + entropy(pb)) / 2)


def _brute_force_purity(codes, labels):
    """Count, stimulus by stimulus, whether its class is the majority class of its code (the smallest on a tie)."""
    hits = 0
    for i in range(len(codes)):
        members = [labels[j] for j in range(len(codes)) if codes[j] == codes[i]]
        majority = min(set(members), key=lambda c: (-members.count(c), c))
        hits += labels[i] == majority
    return hits / len(codes)


def _data(seed=0, n=90, d=5):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    return rng.normal(size=(n, d)) + 1.5 * np.eye(3, d)[labels], labels


def test_kmeans_codes_match_brute_force_sums_and_agreement_measures():
    X, labels = _data()
    result = kmeans_codes(X, labels, k=4, seed=1, layer="L", model="m")
    codes = result.codes
    for code in range(4):
        np.testing.assert_allclose(result.centroids[code], X[codes == code].mean(0))
    inertia = sum(((X[i] - result.centroids[codes[i]]) ** 2).sum() for i in range(len(X)))
    total = sum(((x - X.mean(0)) ** 2).sum() for x in X)
    assert result.inertia == pytest.approx(inertia) and result.inertia_ratio == pytest.approx(inertia / total)
    assert 0 < result.inertia_ratio < 1
    assert result.adjusted_rand == pytest.approx(_brute_force_ari(codes, labels))
    assert result.normalized_mutual_info == pytest.approx(_nmi(codes, labels))
    assert result.purity == pytest.approx(_brute_force_purity(codes, labels))
    assert result.code_sizes.tolist() == [int((codes == c).sum()) for c in range(4)]
    for code in range(4):  # majority: the most common class of each code
        assert np.bincount(labels[codes == code], minlength=3)[result.majority[code]] == \
            np.bincount(labels[codes == code], minlength=3).max()
    row = result.to_frame()
    assert len(row) == 1 and row.loc[0, "model"] == "m" and row.loc[0, "layer"] == "L" and row.loc[0, "n_units"] == 5


def test_separated_clusters_give_perfect_agreement_and_unlabelled_stimuli_are_left_out():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], 20)
    X = 0.01 * rng.normal(size=(60, 2)) + 10 * np.array([[0, 0], [1, 0], [0, 1]])[labels]
    result = kmeans_codes(X, labels, k=3)
    assert result.adjusted_rand == pytest.approx(1) and result.purity == 1 and result.normalized_mutual_info == pytest.approx(1)
    assert result.inertia_ratio < 1e-4
    partly = labels.copy()
    partly[:5] = -1
    some = kmeans_codes(X, partly, k=3)
    assert some.n_labelled == 55 and some.purity == 1
    unlabelled = kmeans_codes(X, None, k=3)
    assert np.isnan(unlabelled.adjusted_rand) and np.isnan(unlabelled.purity) and (unlabelled.majority == -1).all()
    with pytest.raises(ValueError, match="one per stimulus"):
        kmeans_codes(X, labels[:10], k=3)


def test_purity_gives_a_tied_code_one_majority_class():
    codes, labels = [0, 0, 1, 1], [0, 1, 1, 1]  # code 0 is split evenly: only one of its two stimuli counts
    assert code_purity(np.array(codes), np.array(labels)) == _brute_force_purity(codes, labels) == 0.75


def test_codebook_usage_counts_codes_and_its_perplexity_matches_numpy_and_the_vq_vae():
    rng = np.random.default_rng(0)
    indices = torch.as_tensor(rng.choice([0, 1, 2, 5], size=(7, 3, 3), p=[0.4, 0.3, 0.2, 0.1]))
    usage = codebook_usage(indices, 8, model="vq")
    counts = np.array([(indices == c).sum().item() for c in range(8)])
    p = counts[counts > 0] / counts.sum()
    assert usage.counts.tolist() == counts.tolist() and usage.dead_codes.tolist() == [3, 4, 6, 7]
    assert usage.perplexity == pytest.approx(np.exp(-(p * np.log(p)).sum()))
    share, perplexity = code_perplexity(indices, 8)
    assert usage.usage == pytest.approx(float(share)) == 0.5
    assert usage.perplexity == pytest.approx(float(perplexity), rel=1e-5)
    assert codebook_usage(np.full(10, 3), 4).perplexity == pytest.approx(1.0)
    assert codebook_usage(np.arange(12) % 4, 4).perplexity == pytest.approx(4.0)
    assert usage.to_frame().loc[0, "dead_codes"] == 4
    with pytest.raises(ValueError, match="0..7"):
        codebook_usage(np.array([0, 8]), 8)


def test_the_section_shows_centroids_agreement_and_codebooks():
    X, labels = _data()
    pixels = kmeans_codes(X, labels, k=3, layer="pixels")
    layers = [kmeans_codes(X[:, :3], labels, k=3, layer="a", model="m"),
              kmeans_codes(X[:, 2:], labels, k=3, layer="b", model="m")]
    book = codebook_usage(np.array([0, 0, 1, 3]), 6, model="vq")
    section = codes_section([*layers, pixels], pixel_images=np.zeros((3, 8, 8)), class_names=["zero", "one", "two"],
                            codebooks=[book])
    for text in ("The pixels&#39; k-means centroids", "Do the codes match the classes?", "Codebook use · vq",
                 "adjusted_rand"):
        assert text in section.body
    assert section.body.count("data:image/png") == 3 and "ARI" in section.summary
    unlabelled = codes_section([kmeans_codes(X, None, k=3, layer="a", model="m")])
    assert "variance the k-means centroids leave unexplained" in unlabelled.body
    assert unlabelled.body.count("data:image/png") == 1
    with pytest.raises(ValueError, match="one per code"):
        codes_section([pixels], pixel_images=np.zeros((2, 8, 8)))


SPEC = {"title": "codes", "data": {"dataset": "digits", "split": "test", "limit": 60},
        "models": [{"name": "cnn", "arch": "zoo:cnn", "layers": ["features.relu1", "relu_fc1"]},
                   {"name": "vq", "run": "runs/vq", "train": {"model": "vq-vae", "dataset": "digits", "epochs": 1,
                                                           "settings": {"width": 8, "n_codes": 16}}}],
        "analyses": {"codes": {}}}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    folder = tmp_path_factory.mktemp("codes-study")
    return folder, Study.from_dict(SPEC, folder=folder, out=folder / "out").run(progress=False)


def test_the_study_clusters_the_pixels_and_every_layer_and_counts_the_codebook(study):
    _, result = study
    assert result.failed == {}
    codes = result.tables["codes"]
    assert codes["layer"].iloc[0] == "pixels" and codes["model"].iloc[0] == ""
    assert list(codes[codes["model"] == "cnn"]["layer"]) == ["features.relu1", "relu_fc1"]
    assert set(codes["model"]) == {"", "cnn", "vq"} and (codes["k"] == 10).all() and (codes["n_stimuli"] == 60).all()
    # a row recomputed from the recording
    recording = result.recordings["cnn"]
    again = kmeans_codes(np.asarray(recording["relu_fc1"]).reshape(60, -1), recording.labels, k=10)
    row = codes[codes["layer"] == "relu_fc1"].iloc[0]
    assert row["adjusted_rand"] == pytest.approx(again.adjusted_rand) and row["purity"] == pytest.approx(again.purity)
    book = result.tables["codebook"]
    assert list(book["model"]) == ["vq"] and book.loc[0, "n_codes"] == 16
    assert book.loc[0, "n_positions"] == 60 * 2 * 2  # one code per position of the 2x2 grid of an 8x8 digit
    counts = result.results["codes"]["codebooks"]["vq"].counts
    assert book.loc[0, "used_codes"] == (counts > 0).sum() and 1 <= book.loc[0, "perplexity"] <= (counts > 0).sum()
    assert "Codebook use · vq" in result.report.read_text()


def test_the_findings_name_the_best_layer_and_the_codebook(study, tmp_path):
    _, result = study
    ctx = StudyContext(out=tmp_path, results=result.results)
    findings = codes_findings(ctx)
    codes = result.tables["codes"]
    layers = codes[codes["model"] != ""]
    best = layers.loc[layers["adjusted_rand"].idxmax()]
    assert [f.analysis for f in findings] == ["codes", "codes"]
    assert findings[0].model == best["model"] and findings[0].value == pytest.approx(best["adjusted_rand"])
    assert f"{best['model']} · {best['layer']}" in findings[0].text
    assert f"pixels' codes: {codes.iloc[0]['adjusted_rand']:.2f}" in findings[0].text
    assert findings[1].model == "vq" and "of its 16 codes" in findings[1].text
    assert codes_findings(StudyContext(out=tmp_path)) == []


def test_unknown_models_and_layers_fail_with_clear_messages(study, tmp_path):
    folder, result = study
    with pytest.raises(StudySpecError, match="unknown model 'resnet'"):
        Study.from_dict({**SPEC, "analyses": {"codes": {"models": ["resnet"]}}}, folder=folder, out=tmp_path / "o")
    spec = {**SPEC, "models": SPEC["models"][:1], "analyses": {"codes": {"layers": ["cnn/nope"], "pixels": False}}}
    failed = Study.from_dict(spec, folder=folder, out=tmp_path / "o2").run(progress=False).failed
    assert "codes.layers names 'cnn/nope'" in failed["codes"] and "relu_fc1" in failed["codes"]
    ctx = StudyContext(out=tmp_path, recordings=result.recordings)
    with pytest.raises(ValueError, match="codes.models names 'resnet', which is not a recorded model"):
        codes_analysis(ctx, models=["resnet"])
