"""Reductions and the moments reducer, checked against NumPy computations."""

import numpy as np
import pytest
import torch

import probe
from probe._reducers import ReductionOp, projection_matrix


@pytest.fixture
def maps():
    return torch.randn(5, 3, 4, 6, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize(
    "mode, expected",
    [
        ("flatten", lambda a: a.reshape(len(a), -1)),
        ("spatial-mean", lambda a: a.mean(axis=(2, 3))),
        ("mean", lambda a: a.mean(axis=(2, 3))),
        ("spatial-max", lambda a: a.max(axis=(2, 3))),
        ("max", lambda a: a.max(axis=(2, 3))),
        ("auto", lambda a: a.mean(axis=(2, 3))),
    ],
)
def test_map_reductions_match_numpy(maps, mode, expected):
    op = ReductionOp(probe.Reduction(mode), "layer", tuple(maps.shape[1:]), torch.device("cpu"))
    np.testing.assert_allclose(op(maps).numpy(), expected(maps.numpy().astype(np.float64)), rtol=1e-5, atol=1e-6)
    assert op.n_units == expected(maps.numpy()).shape[1]


@pytest.mark.parametrize(
    "mode, expected",
    [
        ("token-mean", lambda a: a.mean(axis=1)),
        ("cls", lambda a: a[:, 0]),
        ("tokens", lambda a: a.reshape(len(a), -1)),
        ("auto", lambda a: a.mean(axis=1)),
    ],
)
def test_token_reductions_match_numpy(mode, expected):
    tokens = torch.randn(4, 7, 5)
    op = ReductionOp(probe.Reduction(mode), "block", (7, 5), torch.device("cpu"))
    np.testing.assert_allclose(op(tokens).numpy(), expected(tokens.numpy()), rtol=1e-5, atol=1e-6)


def test_auto_flattens_vectors_and_rejects_bad_shapes():
    assert probe.Reduction("auto").resolve((10,)).mode == "flatten"
    with pytest.raises(ValueError, match="flatten"):
        ReductionOp(probe.Reduction("spatial-mean"), "fc", (10,), torch.device("cpu"))(torch.randn(2, 10))
    with pytest.raises(ValueError, match="tokens"):
        ReductionOp(probe.Reduction("cls"), "conv", (3, 4, 4), torch.device("cpu"))(torch.randn(2, 3, 4, 4))


def test_unknown_reduction_suggests_nearest():
    with pytest.raises(ValueError, match="spatial-mean"):
        probe.Reduction("spatial_mean")
    with pytest.raises(ValueError, match="project"):
        probe.Reduction("flatten", project=0)


def test_projection_is_seeded_and_preserves_distances():
    x = torch.randn(20, 3000, generator=torch.Generator().manual_seed(1))
    op = ReductionOp(probe.Reduction("flatten", project=1024, seed=3), "wide", (3000,), torch.device("cpu"))
    again = ReductionOp(probe.Reduction("flatten", project=1024, seed=3), "wide", (3000,), torch.device("cpu"))
    other = projection_matrix(3000, 1024, seed=4, layer="wide", device=torch.device("cpu"))
    y = op(x)
    assert y.shape == (20, 1024) and op.n_units == 1024
    assert torch.equal(y, again(x))
    assert not torch.equal(op._matrix, other)
    ratio = torch.pdist(y) / torch.pdist(x)  # Johnson-Lindenstrauss: distances kept within ~10%
    assert 0.85 < ratio.min() and ratio.max() < 1.15
    # narrower layers than the projection are left alone
    assert ReductionOp(probe.Reduction("flatten", project=1024), "n", (10,), torch.device("cpu")).n_units == 10


def test_units_frame_locates_flattened_units():
    frame = probe.Reduction("flatten").units_frame((3, 4, 6))
    index = np.unravel_index(np.arange(72), (3, 4, 6))
    np.testing.assert_array_equal(frame[["channel", "row", "col"]].to_numpy().T, np.stack(index))
    assert frame.attrs["shape"] == (3, 4, 6) and frame.attrs["reduction"] == "flatten"
    assert set(frame["shape"]) == {"3x4x6"} and set(frame["reduction"]) == {"flatten"}
    tokens = probe.Reduction("tokens").units_frame((7, 5))
    assert tokens["token"].iloc[-1] == 6 and tokens["channel"].iloc[-1] == 4
    assert list(probe.Reduction("auto").units_frame((8, 3, 3))["channel"]) == list(range(8))
    assert "component" in probe.Reduction("flatten", project=4).units_frame((3, 4, 6))


def test_moments_reducer_matches_numpy_cov_with_large_offset():
    rng = np.random.default_rng(0)
    data = (1e4 + rng.standard_normal((103, 4, 2, 2)) * np.array([1.0, 0.01, 3.0, 1e-3])[None, :, None, None])
    reducer = probe.MomentsReducer(reduce="flatten")
    reducer.start("layer", len(data), torch.device("cpu"))
    tensor = torch.from_numpy(data)
    for start in range(0, len(data), 10):
        reducer.update(tensor[start : start + 10], torch.arange(start, min(start + 10, len(data))))
    moments = reducer.result()
    flat = data.reshape(len(data), -1)
    assert moments.n == len(data)
    np.testing.assert_allclose(moments.mean, flat.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(moments.covariance(), np.cov(flat, rowvar=False), rtol=1e-6, atol=1e-14)
    np.testing.assert_allclose(moments.covariance(ddof=0), np.cov(flat, rowvar=False, ddof=0), rtol=1e-6, atol=1e-14)
