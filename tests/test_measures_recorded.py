"""Every measure on recorded layers (a CNN's responses to digits), against the reference transcriptions the
measures' own tests use on random data: netrep's shape metrics, platonic-rep's neighbour measures, the
covariance route of CCA, scikit-learn's regression and rsatoolbox's whitened RDM comparison."""

import numpy as np
import pytest
import torch
from sklearn.linear_model import LinearRegression
from sklearn.metrics import r2_score
from test_cca import _reference_correlations
from test_neighbour_alignment import _reference_cknna, _reference_mutual_knn
from test_shape_metrics import _netrep

import probe
import zoo
from analyses import compare_representations


@pytest.fixture(scope="module")
def recorded():
    torch.manual_seed(0)
    model = zoo.create_model("cnn", input_shape=(1, 8, 8))
    test = zoo.load_dataset("digits", split="test")
    rec = probe.record(model, test, ["features.relu3", "relu_fc1", "fc2"], progress=False)
    return {layer: np.asarray(rec[layer], dtype=np.float64)[:300] for layer in rec.layers}


def test_shape_and_procrustes_equal_netrep_on_recorded_layers(recorded):
    X, Y = recorded["relu_fc1"], recorded["fc2"]
    unit = [(A - A.mean(0)) / np.linalg.norm(A - A.mean(0)) for A in (X, Y)]  # the registry's shape scales first
    assert compare_representations(X, Y, "shape") == pytest.approx(_netrep(*unit, 0.5), abs=1e-6)
    assert compare_representations(X, Y, "procrustes") == pytest.approx(_netrep(*unit, 1.0, "euclidean"), abs=1e-6)


def test_cca_family_equals_the_covariance_route_on_recorded_layers(recorded):
    X, Y = recorded["relu_fc1"], recorded["fc2"]
    X = X[:, np.ptp(X, axis=0) > 0]  # dead units span nothing; the covariance route cannot invert them
    rho = _reference_correlations(X, Y)
    assert compare_representations(X, Y, "cca") == pytest.approx(np.mean(rho**2), abs=1e-6)


def test_neighbour_measures_equal_platonic_reps_formulas_on_recorded_layers(recorded):
    X, Y = recorded["features.relu3"], recorded["relu_fc1"]
    assert compare_representations(X, Y, "mutual-knn") == pytest.approx(_reference_mutual_knn(X, Y, 10), abs=1e-6)
    assert compare_representations(X, Y, "cknna") == pytest.approx(_reference_cknna(X, Y, 10), abs=1e-6)


def test_regression_equals_scikit_learn_on_recorded_layers(recorded):
    X, Y = recorded["fc2"], recorded["relu_fc1"]
    prediction = LinearRegression().fit(X, Y).predict(X)
    expected = r2_score(Y, prediction, multioutput="variance_weighted")
    assert compare_representations(X, Y, "regression") == pytest.approx(expected, abs=1e-6)


def test_whitened_rsa_equals_rsatoolbox_on_recorded_layers(recorded):
    rsatoolbox = pytest.importorskip("rsatoolbox", reason="pip install rsatoolbox")
    X, Y = recorded["relu_fc1"][:60], recorded["fc2"][:60]
    rdms = [rsatoolbox.rdm.calc_rdm(rsatoolbox.data.Dataset(A), method="correlation") for A in (X, Y)]
    expected = rsatoolbox.rdm.compare(rdms[0], rdms[1], method="corr_cov")[0, 0]
    assert compare_representations(X, Y, "rsa-whitened") == pytest.approx(expected, abs=1e-6)
