"""probe.TopK: equal to brute force (argsort of the full activation tensor), deterministic, bounded."""

import numpy as np
import pytest
import torch
from torch import nn

import probe
from probe import TopK, TopKResult
from probe._topk import _decode, _encode


def _run(reducer, activations, order=None, batch_size=13):
    n = activations.shape[0]
    reducer.start("layer", n, torch.device("cpu"))
    order = torch.arange(n) if order is None else order
    for chunk in order.split(batch_size):
        reducer.update(activations[chunk], chunk)
    return reducer.result()


def _brute_distinct(maps, k, largest=True):
    """Per unit: stimuli ranked by their max (min) over positions, ties -> lower stimulus first."""
    n, units = maps.shape[:2]
    flat = maps.reshape(n, units, -1)
    extreme = flat.max(axis=2) if largest else flat.min(axis=2)
    stimuli, positions, values = [], [], []
    for u in range(units):
        order = np.lexsort((np.arange(n), -extreme[:, u] if largest else extreme[:, u]))[:k]
        stimuli.append(order)
        positions.append(flat[order, u].argmax(axis=1) if largest else flat[order, u].argmin(axis=1))
        values.append(extreme[order, u])
    return np.array(stimuli), np.array(positions), np.array(values)


@pytest.fixture
def tied_maps():
    # values rounded to one decimal: many exact ties, inside maps and across stimuli
    return torch.randn(60, 5, 4, 6, generator=torch.Generator().manual_seed(0)).round(decimals=1)


def test_maps_distinct_equal_brute_force_with_ties_and_shuffled_batches(tied_maps):
    order = torch.randperm(60, generator=torch.Generator().manual_seed(1))
    result = _run(TopK(7, bottom_k=4), tied_maps, order)
    maps = tied_maps.numpy()
    for which, k, largest in (("top", 7, True), ("bottom", 4, False)):
        stimuli, positions, values = _brute_distinct(maps, k, largest)
        np.testing.assert_array_equal(getattr(result, f"{which}_stimulus"), stimuli)
        np.testing.assert_array_equal(getattr(result, f"{which}_position"), positions)
        np.testing.assert_array_equal(getattr(result, f"{which}_values"), values)
    y, x = result.coordinates("top")
    np.testing.assert_array_equal(maps[result.top_stimulus, np.arange(5)[:, None], y, x], result.top_values)


def test_maps_all_positions_equal_brute_force(tied_maps):
    result = _run(TopK(9, bottom_k=2, distinct_stimuli=False), tied_maps, batch_size=7)
    flat = tied_maps.numpy().transpose(1, 0, 2, 3).reshape(5, -1)  # (units, stimulus * 24 + position)
    for u in range(5):
        expected = np.lexsort((np.arange(flat.shape[1]), -flat[u]))[:9]
        np.testing.assert_array_equal(result.top_stimulus[u] * 24 + result.top_position[u], expected)
        expected_low = np.lexsort((np.arange(flat.shape[1]), flat[u]))[:2]
        np.testing.assert_array_equal(result.bottom_stimulus[u] * 24 + result.bottom_position[u], expected_low)


def test_tokens_and_units_layouts(tied_maps):
    tokens = tied_maps.flatten(2).transpose(1, 2)  # (n, T=24, D=5): units are the last axis
    result = _run(TopK(5), tokens, torch.randperm(60, generator=torch.Generator().manual_seed(2)))
    stimuli, positions, _ = _brute_distinct(tied_maps.numpy(), 5)
    assert result.layout == "tokens" and result.map_shape == (24,)
    np.testing.assert_array_equal(result.top_stimulus, stimuli)
    np.testing.assert_array_equal(result.top_position, positions)

    vectors = tied_maps[:, :, 0, 0]
    result = _run(TopK(6, largest=False), vectors)
    assert result.layout == "units" and result.top_values.shape == (5, 0)
    for u in range(5):
        expected = np.lexsort((np.arange(60), vectors[:, u].numpy()))[:6]
        np.testing.assert_array_equal(result.bottom_stimulus[u], expected)


def test_result_does_not_depend_on_batching(tied_maps):
    a = _run(TopK(8, bottom_k=3), tied_maps, batch_size=60)
    b = _run(TopK(8, bottom_k=3), tied_maps, torch.randperm(60), batch_size=1)
    pd_a, pd_b = a.to_frame(), b.to_frame()
    assert pd_a.equals(pd_b)


def test_pooled_responses(tied_maps):
    order = torch.randperm(60)
    maximum = _run(TopK(3, pool="max"), tied_maps, order)
    mean = _run(TopK(3, pool="mean"), tied_maps, order)
    np.testing.assert_allclose(maximum.pooled, tied_maps.amax(dim=(2, 3)).numpy())
    np.testing.assert_allclose(mean.pooled, tied_maps.mean(dim=(2, 3)).numpy(), rtol=1e-6)
    assert _run(TopK(3, keep_pooled=False), tied_maps).pooled is None


def test_key_encoding_round_trip_and_order():
    values = torch.tensor([-np.inf, -3.5, -1e-30, -0.0, 0.0, 1e-30, 2.0, np.inf])
    ids = torch.arange(values.numel(), dtype=torch.int64) * 1000
    for largest in (True, False):
        decoded, decoded_ids = _decode(_encode(values, ids, largest), largest)
        np.testing.assert_array_equal(decoded.numpy(), values.numpy())
        np.testing.assert_array_equal(decoded_ids.numpy(), ids.numpy())
    keys = _encode(values, torch.zeros_like(ids), True)
    assert torch.all(keys[1:] >= keys[:-1])  # order preserved (-0.0 and 0.0 tie)


def test_with_probe_record_equals_full_tensor_argsort():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 6, 3)).eval()
    images = torch.randn(90, 1, 10, 10)
    rec = probe.record(net, images, ["1", "3"], reducers={"topk": lambda: TopK(5, bottom_k=2)}, batch_size=32, progress=False)
    with torch.no_grad():
        full = {"1": net[:2](images).numpy(), "3": net(images).numpy()}
    for layer, maps in full.items():
        result = rec.extras["topk"][layer]
        assert isinstance(result, TopKResult)
        stimuli, positions, values = _brute_distinct(maps, 5)
        np.testing.assert_array_equal(result.top_stimulus, stimuli)
        np.testing.assert_array_equal(result.top_position, positions)
        np.testing.assert_allclose(result.top_values, values)
        stimuli, _, _ = _brute_distinct(maps, 2, largest=False)
        np.testing.assert_array_equal(result.bottom_stimulus, stimuli)


def test_bad_input_errors():
    with pytest.raises(ValueError, match="larger than the dataset"):
        TopK(20).start("layer", 10, torch.device("cpu"))
    with pytest.raises(ValueError, match="spatial or unit structure"):
        _run(TopK(2), torch.zeros(10, 2, 3, 4, 5))
    with pytest.raises(ValueError, match="spatial or unit structure"):
        _run(TopK(2), torch.zeros(10))
    nan_maps = torch.zeros(10, 2, 3, 3)
    nan_maps[4, 1, 2, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        _run(TopK(2), nan_maps)
    with pytest.raises(ValueError, match="nothing to keep"):
        TopK(0)
    with pytest.raises(ValueError, match="pool"):
        TopK(3, pool="median")
    with pytest.raises(ValueError, match="candidates"):
        _run(TopK(50, distinct_stimuli=False), torch.zeros(10, 2, 2, 2))


@pytest.mark.gpu
def test_cuda_equals_cpu(tied_maps):
    order = torch.randperm(60, generator=torch.Generator().manual_seed(4))
    cpu = _run(TopK(6, bottom_k=3), tied_maps, order)
    reducer = TopK(6, bottom_k=3)
    reducer.start("layer", 60, torch.device("cuda"))
    for chunk in order.split(13):
        reducer.update(tied_maps[chunk].cuda(), chunk.cuda())
    assert reducer.result().to_frame().equals(cpu.to_frame())


@pytest.mark.gpu
def test_top_patches_on_cuda_matches_cpu():
    from analyses import top_patches

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, stride=2)).eval()
    images = torch.rand(64, 1, 12, 12)
    cpu = top_patches(net, images, "2", k=4, device="cpu", progress=False)
    gpu = top_patches(net, images, "2", k=4, device="cuda", progress=False)
    np.testing.assert_array_equal(cpu.topk.top_stimulus, gpu.topk.top_stimulus)
    np.testing.assert_allclose(cpu.patches, gpu.patches)
