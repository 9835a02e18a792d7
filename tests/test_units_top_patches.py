"""analyses.top_patches (after a probe.TopK recording), class_selectivity and crop_boxes against independent computations."""

import numpy as np
import pytest
import torch
from _fakes import DetachedConv
from torch import nn
from torch.utils.data import TensorDataset

import probe
from analyses import TopPatches, class_selectivity, crop_boxes, top_patches
from probe.study import record_top_patches


def _net():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 5, 3), nn.ReLU(),
        nn.Flatten(), nn.Linear(5 * 4 * 4, 6),
    ).eval()  # fmt: skip


@pytest.fixture(scope="module")
def data():
    generator = torch.Generator().manual_seed(1)
    images = torch.rand(120, 1, 12, 12, generator=generator)
    labels = torch.arange(120) % 3
    return images, labels


@pytest.fixture(scope="module")
def conv_result(data):
    images, labels = data
    data = TensorDataset(images, labels)
    return record_top_patches(_net(), data, ["1", "4", "6"], k=4, bottom_k=2, batch_size=50, device="cpu", progress=False)


def test_maps_equal_brute_force_and_crops_are_the_fields(conv_result, data):
    images, _ = data
    result = conv_result["4"]
    with torch.no_grad():
        maps = _net()[:5](images).numpy()  # (n, 5, 4, 4)
    flat = maps.reshape(120, 5, -1)
    for unit in range(5):
        order = np.lexsort((np.arange(120), -flat[:, unit].max(axis=1)))[:4]
        np.testing.assert_array_equal(result.topk.top_stimulus[unit], order)
    assert result.field.size == (8, 8) and result.field.stride == (2, 2)
    frame = result.to_frame()
    expected_columns = {"unit", "rank", "stimulus", "y", "x", "value", "kind", "top", "left", "bottom", "right", "label"}
    assert expected_columns <= set(frame.columns)
    assert len(frame) == 5 * (4 + 2)
    display = images.numpy()  # a TensorDataset has no denormalize: display is min-max per image
    for row in frame.itertuples():
        patches = result.patches if row.kind == "top" else result.bottom_patches
        masks = result.masks if row.kind == "top" else result.bottom_masks
        patch, mask = patches[row.unit, row.rank], masks[row.unit, row.rank]
        assert maps[row.stimulus, row.unit, row.y, row.x] == pytest.approx(row.value)
        image = display[row.stimulus]
        image = (image - image.min()) / (image.max() - image.min())
        for dy in range(8):
            for dx in range(8):
                yy, xx = row.top + dy, row.left + dx
                inside = 0 <= yy < 12 and 0 <= xx < 12
                assert mask[dy, dx] == inside
                if inside:
                    assert patch[0, dy, dx] == pytest.approx(image[0, yy, xx], abs=1e-6)
    assert result.max_recheck_error < 1e-5
    assert result.labels.tolist() == (np.arange(120) % 3).tolist()


def test_units_layer_shows_whole_stimuli_and_selectivity(conv_result, data):
    images, labels = data
    result = conv_result["6"]
    assert result.field is None and result.patches.shape == (6, 4, 1, 12, 12) and result.masks.all()
    with torch.no_grad():
        outputs = _net()(images).numpy()
    expected = class_selectivity(outputs, labels.numpy())
    np.testing.assert_allclose(result.selectivity.index, expected.index, rtol=1e-5)
    assert result.histogram(0, bins=10)[0].sum() == 120


def test_class_selectivity_matches_morcos_formula():
    responses = np.array([[1.0, -2.0], [3.0, -1.0], [5.0, 0.0], [7.0, 4.0]])
    labels = np.array([0, 0, 1, 1])
    selectivity = class_selectivity(responses, labels, ["a", "b"])
    # unit 0: class means 2 and 6 -> (6 - 2) / (6 + 2)
    assert selectivity.index[0] == pytest.approx(0.5)
    # unit 1: class means -1.5 and 2, shifted by 1.5 -> 3.5 and 0 -> index 1
    assert selectivity.shifted.tolist() == [False, True] and selectivity.index[1] == pytest.approx(1.0)
    assert selectivity.to_frame()["preferred_name"].tolist() == ["b", "b"]
    flat = class_selectivity(np.ones((6, 2)), np.array([0, 1, 2, 0, 1, 2]))
    assert flat.index.tolist() == [0.0, 0.0]
    with pytest.raises(ValueError, match="2 labelled classes"):
        class_selectivity(np.ones((4, 2)), np.array([0, 0, -1, -1]))


def test_crop_boxes_pads_with_a_checkerboard():
    image = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4) / 16
    patches, masks = crop_boxes(image, np.array([[-1, 2, 2, 5]]))
    assert patches.shape == (1, 1, 3, 3)
    np.testing.assert_array_equal(masks[0], [[False] * 3, [True, True, False], [True, True, False]])
    np.testing.assert_allclose(patches[0, 0, 1:, :2], image[0, 0, :2, 2:])
    outside = patches[0, 0][~masks[0]]
    np.testing.assert_allclose(sorted(set(outside.tolist())), [0.42, 0.58], rtol=1e-6)


def test_select_units_and_grid(conv_result):
    result = conv_result["4"]
    assert isinstance(result, TopPatches)
    selective = result.select_units("selective", 3)
    np.testing.assert_array_equal(selective, np.argsort(-result.selectivity.index, kind="stable")[:3])
    random_a, random_b = result.select_units("random", 3, seed=5), result.select_units("random", 3, seed=5)
    np.testing.assert_array_equal(random_a, random_b)
    assert result.select_units([4, 0]).tolist() == [4, 0]
    grid = result.grid([0, 1], "top", padding=1)
    assert grid.shape == (2 * 9 - 1, 4 * 9 - 1)
    np.testing.assert_allclose(grid[:8, :8], result.patches[0, 0, 0])
    assert result.grid([0], "bottom", stretch=True).max() <= 1.0
    with pytest.raises(ValueError, match="unit indices"):
        result.select_units([9])


def test_tokens_crop_their_patch():
    class TinyViT(nn.Module):
        patch_size = 4

        def __init__(self):
            super().__init__()
            self.embed = nn.Conv2d(1, 6, 4, stride=4)
            self.blocks = nn.Identity()

        def forward(self, x):
            tokens = self.embed(x).flatten(2).transpose(1, 2)  # (n, 9, 6)
            cls = tokens.mean(dim=1, keepdim=True)
            return self.blocks(torch.cat([cls, tokens], dim=1))

    images = torch.rand(30, 1, 12, 12, generator=torch.Generator().manual_seed(2))
    result = record_top_patches(TinyViT().eval(), images, "blocks", k=3, device="cpu", progress=False)
    assert result.topk.layout == "tokens" and result.patches.shape == (6, 3, 1, 4, 4)
    frame = result.to_frame()
    for row in frame.itertuples():
        if row.y == 0:  # the class token: the whole image
            assert (row.top, row.left, row.bottom, row.right) == (0, 0, 12, 12)
        else:
            grid_row, grid_column = divmod(row.y - 1, 3)
            assert (row.top, row.left) == (4 * grid_row, 4 * grid_column)


def test_bad_input_errors(data):
    images, labels = data
    with pytest.raises(ValueError, match="larger than the dataset"):
        record_top_patches(_net(), images[:5], "1", k=9, progress=False)
    with pytest.raises(KeyError, match="unknown layer 'conv1'.*probe layers"):
        record_top_patches(_net(), images, "conv1", progress=False)

    class Volume(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv3d(1, 2, 1)

        def forward(self, x):
            return self.conv(x[:, :, None])

    with pytest.raises(ValueError, match="spatial or unit structure"):
        record_top_patches(Volume(), images[:20], "conv", k=2, progress=False)

    with pytest.raises(ValueError, match="neither computed nor measured"):
        record_top_patches(DetachedConv(), images[:20], "conv", k=2, progress=False)


def test_conv1d_maps_crop_one_row():
    net = nn.Sequential(nn.Conv1d(2, 3, 5, stride=2), nn.ReLU())
    signals = torch.randn(40, 2, 30, generator=torch.Generator().manual_seed(3))
    result = record_top_patches(net, signals, "1", k=3, layout="maps", progress=False)
    found = record_top_patches(net, signals, "1", k=3, progress=False)  # the engine reads a Conv1d's (batch, C, L) as a map
    np.testing.assert_array_equal(found.boxes, result.boxes)
    assert result.patches.shape == (3, 3, 2, 1, 5) and result.field.stride == (1, 2)
    row = result.to_frame().iloc[0]
    with torch.no_grad():
        assert net(signals[row.stimulus : row.stimulus + 1])[0, row.unit, row.x].item() == pytest.approx(row.value)
    assert (row.left, row.right) == (2 * row.x, 2 * row.x + 5)


def test_analysis_of_a_topk_recording_equals_the_one_call_form(conv_result, data):
    images, labels = data
    dataset = TensorDataset(images, labels)
    recording = probe.record(
        _net(), dataset, ["4"], reducers={"topk": lambda: probe.TopK(4, bottom_k=2)}, device="cpu", progress=False
    )
    by_layer = top_patches(_net(), dataset, recording.extras["topk"], labels=recording.labels, batch_size=50)
    single = top_patches(_net(), dataset, recording.extras["topk"]["4"], labels=recording.labels)
    for result in (by_layer["4"], single):
        np.testing.assert_array_equal(result.patches, conv_result["4"].patches)
        np.testing.assert_array_equal(result.bottom_boxes, conv_result["4"].bottom_boxes)
        np.testing.assert_allclose(result.selectivity.index, conv_result["4"].selectivity.index)
    unlabelled = top_patches(_net(), dataset, recording.extras["topk"]["4"])
    assert unlabelled.selectivity is None and (unlabelled.labels == -1).all()
    with pytest.raises(ValueError, match="recorded over 120 stimuli"):
        top_patches(_net(), images[:60], recording.extras["topk"])
    with pytest.raises(ValueError, match="no TopK result"):
        top_patches(_net(), dataset, {})
