"""CKA: the reference demo's published values, independent formulas, streaming == full data, bad input."""

import numpy as np
import pytest
import torch

from analyses import StreamingCKA, cka, cka_matrix


@pytest.fixture
def reference_demo():
    np.random.seed(1337)
    X = np.random.randn(100, 10)
    Y = np.random.randn(100, 10) + X
    return X, Y


def test_reference_demo_values(reference_demo):
    X, Y = reference_demo
    assert cka(X, Y) == pytest.approx(0.55761, abs=5e-6)
    assert cka(X, Y, "rbf") == pytest.approx(0.65483, abs=5e-6)
    assert cka(X, Y, debiased=True) == pytest.approx(0.51346, abs=5e-6)
    assert cka(torch.tensor(X), torch.tensor(Y)) == pytest.approx(0.55761, abs=5e-6)


def _hsic_cka(K, L):
    n = K.shape[0]
    H = np.eye(n) - 1.0 / n
    Kc, Lc = H @ K @ H, H @ L @ H
    return np.sum(Kc * Lc) / np.sqrt(np.sum(Kc * Kc) * np.sum(Lc * Lc))


def test_matches_centering_matrix_formula_and_gram_path():
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(20, 50)), rng.normal(size=(20, 3))  # wide X takes the Gram path
    assert cka(X, Y) == pytest.approx(_hsic_cka(X @ X.T, Y @ Y.T), abs=1e-12)
    sigma = 2.0
    rbf = lambda Z: np.exp(-np.square(Z[:, None] - Z[None]).sum(-1) / (2 * sigma**2))  # noqa: E731
    assert cka(X, Y, "rbf", sigma=sigma) == pytest.approx(_hsic_cka(rbf(X), rbf(Y)), abs=1e-12)


def test_properties():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(40, 8))
    Q, _ = np.linalg.qr(rng.normal(size=(8, 8)))
    assert cka(X, X @ Q * 3.0 + 5.0) == pytest.approx(1.0)  # invariant to rotation, scale, shift
    assert cka(X, X[:, :4]) < 1.0
    assert cka(X, rng.normal(size=(40, 8)), debiased=True) == pytest.approx(0.0, abs=0.1)


def test_degenerate_inputs():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(10, 3))
    with pytest.raises(ValueError, match="same for every stimulus"):
        cka(X, np.ones((10, 4)))
    with pytest.raises(ValueError, match="median distance"):
        cka(X, np.ones((10, 4)), "rbf")
    with pytest.raises(ValueError, match="same stimuli"):
        cka(X, X[:9])
    with pytest.raises(ValueError, match="at least 3"):
        cka(X[:2], X[:2])
    with pytest.raises(ValueError, match="at least 4"):
        cka(X[:3], X[:3], debiased=True)
    with pytest.raises(ValueError, match="NaN or inf"):
        cka(np.where(X > 1, np.nan, X), X)
    with pytest.raises(ValueError, match="did you mean 'rbf'"):
        cka(X, X, "rbg")
    # a constant unit among varying ones is fine: it is removed by centring
    with_constant = np.hstack([X, np.full((10, 1), 3.0)])
    assert cka(with_constant, X) == pytest.approx(1.0)


def _feed(reducer, layers, batches):
    reducer.start(tuple(layers), sum(b[layers[0]].shape[0] for b in batches), torch.device("cpu"))
    start = 0
    for batch in batches:
        size = batch[layers[0]].shape[0]
        reducer.update(batch, torch.arange(start, start + size))
        start += size
    return reducer.result()


def test_streaming_exact_equals_full_data():
    rng = np.random.default_rng(3)
    base = rng.normal(size=(130, 6, 3, 3)) + 4.0  # an offset makes naive uncentred sums lose precision
    layers = {"conv": torch.tensor(base), "fc": torch.tensor(base.reshape(130, -1) @ rng.normal(size=(54, 7)))}
    batches = [{k: v[i : i + 32] for k, v in layers.items()} for i in range(0, 130, 32)]
    result = _feed(StreamingCKA(pool="mean"), ["conv", "fc"], batches)
    pooled = {"conv": base.mean(axis=(2, 3)), "fc": layers["fc"].numpy()}
    assert result.values[0, 1] == pytest.approx(cka(pooled["conv"], pooled["fc"]), abs=1e-10)
    np.testing.assert_allclose(result.values, cka_matrix(pooled, progress=False).values, atol=1e-10)
    flat = _feed(StreamingCKA(pool="flatten"), ["conv", "fc"], batches)
    assert flat.values[0, 1] == pytest.approx(cka(base.reshape(130, -1), pooled["fc"]), abs=1e-10)
    assert set(result.to_frame().columns) >= {"layer_a", "layer_b", "value"}


def test_streaming_minibatch_estimator_is_close_and_unbiased_per_batch():
    rng = np.random.default_rng(4)
    X = rng.normal(size=(400, 5))
    Y = X @ rng.normal(size=(5, 5)) + 0.5 * rng.normal(size=(400, 5))
    batches = [{"x": torch.tensor(X[i : i + 100]), "y": torch.tensor(Y[i : i + 100])} for i in range(0, 400, 100)]
    result = _feed(StreamingCKA(estimator="minibatch"), ["x", "y"], batches)
    assert result.values[0, 1] == pytest.approx(cka(X, Y, debiased=True), abs=0.05)
    single = _feed(StreamingCKA(estimator="minibatch"), ["x", "y"], [{"x": torch.tensor(X), "y": torch.tensor(Y)}])
    assert single.values[0, 1] == pytest.approx(cka(X, Y, debiased=True), abs=1e-10)  # one batch = debiased CKA


def test_streaming_errors():
    with pytest.raises(ValueError, match="did you mean 'mean'"):
        StreamingCKA(pool="maen")
    reducer = StreamingCKA(pool="flatten", memory_budget=100)
    with pytest.raises(ValueError, match="memory_budget"):
        _feed(reducer, ["a", "b"], [{"a": torch.zeros(5, 20), "b": torch.zeros(5, 20)}])
    with pytest.raises(ValueError, match="same for every stimulus"):
        _feed(StreamingCKA(), ["a", "b"], [{"a": torch.ones(5, 3), "b": torch.randn(5, 3, dtype=torch.float64)}])


@pytest.mark.gpu
def test_cka_on_gpu_matches_cpu(reference_demo):
    X, Y = reference_demo
    assert cka(torch.tensor(X, device="cuda"), torch.tensor(Y, device="cuda")) == pytest.approx(0.55761, abs=5e-6)
    assert cka(torch.tensor(X, device="cuda"), torch.tensor(Y, device="cuda"), "rbf") == pytest.approx(0.65483, abs=5e-6)


def test_streaming_cka_inside_probe_record():
    record = pytest.importorskip("probe").record
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(4 * 36, 5)
    )
    images = torch.randn(50, 1, 6, 6)
    layers = ["0", "1", "3"]
    rec = record(model, images, layers, reduce="auto", batch_size=16, device="cpu", progress=False,
                 reducers={"cka": StreamingCKA})
    streamed = rec.extras["cka"]
    np.testing.assert_allclose(streamed.values, cka_matrix(rec, progress=False).values, atol=1e-6)
    assert streamed.layers == layers
