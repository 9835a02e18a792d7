"""LinearAutoencoder and compare_subspaces against PCA and the closed-form optima."""

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from analyses import LinearAutoencoder, SubspaceComparison, axis_alignment_error, compare_subspaces, subspace_distance


def _anisotropic(n=300, d=12, seed=0):
    """Gaussian data with well-separated variances 10, 8, 6.4, ... along random axes."""
    rng = np.random.default_rng(seed)
    axes = np.linalg.qr(rng.standard_normal((d, d)))[0]
    variances = 10.0 * 0.8 ** np.arange(d)
    return rng.standard_normal((n, d)) * np.sqrt(variances) @ axes.T + 3.0


@pytest.fixture(scope="module")
def digits():
    return load_digits().data


def test_unregularised_spans_pca_subspace_but_not_its_axes(digits):
    pca = PCA(5).fit(digits)
    ae = LinearAutoencoder(5, max_iter=400, device="cpu").fit(digits)
    assert subspace_distance(ae.components_.T, pca.components_.T) < 1e-6
    assert axis_alignment_error(ae.components_, pca.components_) > 0.05
    # Same subspace, so the same reconstruction error as PCA.
    pca_error = np.mean((pca.inverse_transform(pca.transform(digits)) - digits) ** 2)
    assert ae.reconstruction_error(digits) == pytest.approx(pca_error, rel=1e-6)
    np.testing.assert_allclose(ae.mean_, digits.mean(axis=0))


def test_uniform_l2_matches_kunin_closed_form():
    X = _anisotropic()
    k, l2 = 4, 1.0
    pca = PCA(k).fit(X)
    ae = LinearAutoencoder(k, l2=l2, device="cpu").fit(X)
    left, singular_values, _ = np.linalg.svd(ae.decoder_weight_, full_matrices=False)
    assert axis_alignment_error(left.T, pca.components_) < 1e-6
    population_variances = pca.explained_variance_ * (len(X) - 1) / len(X)
    np.testing.assert_allclose(singular_values, np.sqrt(1 - l2 / population_variances), rtol=1e-5)
    np.testing.assert_allclose(ae.encoder_weight_, ae.decoder_weight_.T, atol=1e-5)  # tied at the optimum


def test_non_uniform_l2_aligns_columns_in_order():
    X = _anisotropic()
    pca = PCA(3).fit(X)
    ae = LinearAutoencoder(3, l2=np.array([0.5, 1.0, 1.5]), device="cpu").fit(X)
    cosines = np.abs(np.sum(ae.components_ / np.linalg.norm(ae.components_, axis=1, keepdims=True)
                            * pca.components_, axis=1))
    np.testing.assert_allclose(cosines, 1.0, atol=1e-5)  # column i is principal direction i
    assert LinearAutoencoder(3, l2="non-uniform").fit(X).l2_.tolist() == pytest.approx(
        list(0.5 * X.var(axis=0).mean() * np.arange(1, 4) / 3))


def test_transform_roundtrip_pipeline_and_determinism():
    X = _anisotropic(n=120, d=6)
    ae = LinearAutoencoder(6, device="cpu").fit(X)
    np.testing.assert_allclose(ae.inverse_transform(ae.transform(X)), X, atol=1e-5)  # full rank: lossless
    codes = LinearAutoencoder(2, random_state=3).fit_transform(X)
    again = LinearAutoencoder(2, random_state=3).fit(X).transform(X)
    np.testing.assert_array_equal(codes, again)
    assert codes.shape == (120, 2)
    labels = (X[:, 0] > X[:, 0].mean()).astype(int)
    pipe = make_pipeline(clone(LinearAutoencoder(3, l2=0.1)), LogisticRegression()).fit(X, labels)
    assert pipe.score(X, labels) > 0.6
    assert len(ae.loss_curve_) > 1 and ae.loss_curve_[-1] <= ae.loss_curve_[0]
    assert ae.n_iter_ > 0


def test_autoencoder_bad_input():
    X = _anisotropic(n=20, d=5)
    with pytest.raises(ValueError, match="n_components"):
        LinearAutoencoder(6).fit(X)
    with pytest.raises(ValueError, match="n_components"):
        LinearAutoencoder(5).fit(X[:4])
    with pytest.raises(ValueError, match="NaN"):
        LinearAutoencoder(2).fit(np.where(np.eye(20, 5) > 0, np.nan, X))
    with pytest.raises(ValueError, match="non-uniform"):
        LinearAutoencoder(2, l2="nonuniform").fit(X)
    with pytest.raises(ValueError, match="shape"):
        LinearAutoencoder(2, l2=[1.0, 2.0, 3.0]).fit(X)
    with pytest.raises(ValueError, match="shape"):
        LinearAutoencoder(2).fit(X).transform(X[:, :3])


def test_compare_subspaces_reports_the_three_claims():
    X = _anisotropic(n=200, d=10)
    result = compare_subspaces(X, ks=(2, 4), source="synthetic", device="cpu", progress=False)
    assert isinstance(result, SubspaceComparison)
    frame = result.to_frame().set_index(["k", "method"])
    assert set(frame.index.get_level_values("method")) == {"pca", "linear-ae", "linear-ae-l2", "linear-ae-nonuniform"}
    assert (frame["subspace_distance"] < 1e-6).all()
    assert frame.loc[(4, "linear-ae"), "column_alignment_error"] > 1e-2
    assert frame.loc[(4, "linear-ae-l2"), "singular_vector_alignment_error"] < 1e-5
    assert frame.loc[(4, "linear-ae-nonuniform"), "column_alignment_error"] < 1e-4
    # PCA's error is the discarded variance; the unregularised AE reaches it.
    pca = PCA(4).fit(X)
    expected = np.mean((pca.inverse_transform(pca.transform(X)) - X) ** 2)
    assert frame.loc[(4, "pca"), "reconstruction_mse"] == pytest.approx(expected, rel=1e-9)
    assert frame.loc[(4, "linear-ae"), "reconstruction_mse"] == pytest.approx(expected, rel=1e-6)
    assert len(result.angles[4, "linear-ae"]) == 4
    assert set(result.angles_frame().columns) == {"k", "method", "index", "angle_deg"}
    np.testing.assert_allclose(result.explained_variance_ratio, pca.explained_variance_ratio_ * 1.0, rtol=1e-9)


def test_compare_subspaces_bad_input():
    X = _anisotropic(n=30, d=6)
    with pytest.raises(ValueError, match="min\\(n_stimuli, n_units\\) = 6"):
        compare_subspaces(X, ks=(2, 7), progress=False)
    with pytest.raises(KeyError, match="linear-ae-l2"):
        compare_subspaces(X, ks=(2,), methods=("linear-ae-L2",), progress=False)
