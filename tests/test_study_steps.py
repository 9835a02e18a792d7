"""Pieces of the study pipeline: default layers, the cached top-k pass, the generic analyses' edge cases."""

import numpy as np
import pytest
import torch
from torch import nn

import probe
from probe.study import StudyContext, default_layers
from probe.study._top_patches import record_topk
from probe.study._topk_cache import cached_topk
from probe.study._transfer_step import transfer_analysis


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Dropout(0.1), nn.Conv2d(4, 5, 3), nn.Flatten(),
                         nn.Linear(5 * 4 * 4, 3)).eval()


def test_default_layers_open_block_containers_and_skip_pass_through_modules():
    import torchvision

    resnet = torchvision.models.resnet18(weights=None)
    layers = default_layers(resnet)
    assert layers == ["conv1", "bn1", "relu", "maxpool", "layer1.0", "layer1.1", "layer2.0", "layer2.1",
                      "layer3.0", "layer3.1", "layer4.0", "layer4.1", "avgpool", "fc"]
    assert default_layers(nn.Sequential(nn.Sequential(nn.Linear(2, 2), nn.Identity()), nn.Dropout())) == ["0.0"]


def test_cached_topk_records_once_and_equals_a_fresh_pass(tmp_path):
    model = _net()
    data = torch.utils.data.TensorDataset(torch.randn(30, 1, 8, 8), torch.arange(30) % 3)
    options = dict(model_key="m", data_key="d", k=3, device="cpu", progress=False)
    first, labels, cached = cached_topk(tmp_path, model, data, ["0", "3"], **options)
    assert cached == []
    second, labels2, cached2 = cached_topk(tmp_path, model, data, ["0", "3"], **options)
    assert sorted(cached2) == ["0", "3"]
    fresh, fresh_labels = record_topk(model, data, ["0", "3"], k=3, device="cpu", progress=False)
    for layer in ("0", "3"):
        for field in ("top_values", "top_stimulus", "top_position", "pooled"):
            np.testing.assert_array_equal(getattr(second[layer], field), getattr(fresh[layer], field))
        assert second[layer].map_shape == fresh[layer].map_shape
    np.testing.assert_array_equal(labels2, fresh_labels)
    # another model key is another entry
    _, _, cached3 = cached_topk(tmp_path, model, data, ["0"], **{**options, "model_key": "other"})
    assert cached3 == []


def test_transfer_analysis_refuses_unlabelled_stimuli_and_drops_budgets_it_cannot_meet(tmp_path):
    model = _net()
    x = torch.randn(40, 1, 8, 8)
    ctx = StudyContext(out=tmp_path, progress=False)
    ctx.models["net"] = model
    ctx.stimuli["net"] = torch.utils.data.TensorDataset(x, torch.arange(40) % 2)
    ctx.recordings["net"] = probe.record(model, ctx.stimuli["net"], ["3", "5"], device="cpu", progress=False)
    ctx.labels = ctx.recordings["net"].labels
    (section,) = transfer_analysis(ctx, labels_per_class=[1, 5, 100], test_fraction=0.5)
    frame = ctx.tables["transfer-label-efficiency"]
    assert sorted(frame["labels_per_class"].unique()) == [1, 5]
    assert "100 labels per class" in str(section.body)
    recording = ctx.recordings["net"]  # the labels of each group of stimuli are its recordings'
    ctx.recordings["net"] = probe.Recording({layer: recording[layer] for layer in recording.layers},
                                            labels=np.full(40, -1), shapes=recording.shapes)
    with pytest.raises(ValueError, match="labelled"):
        transfer_analysis(ctx)


def test_selected_units_keep_their_layer_indices_through_the_crops():
    from analyses import top_patches

    model = _net()
    data = torch.utils.data.TensorDataset(torch.randn(20, 1, 8, 8), torch.arange(20) % 2)
    topk, labels = record_topk(model, data, ["3"], k=2, device="cpu", progress=False)
    full = topk["3"]
    part = full.select([4, 1])
    np.testing.assert_array_equal(part.top_values, full.top_values[[4, 1]])
    np.testing.assert_array_equal(part.pooled, full.pooled[:, [4, 1]])
    assert part.n_units == 2
    patches = top_patches(model, data, part, labels=labels)
    assert patches.max_recheck_error < 1e-5  # the re-run reads each row's own channel
    np.testing.assert_array_equal(patches.unit_names([0, 1]), [4, 1])
    frame = patches.to_frame()
    assert sorted(frame["unit"].unique()) == [1, 4]
    np.testing.assert_array_equal(frame[frame["unit"] == 4]["value"], full.top_values[4])


def test_units_chosen_before_cropping_are_the_ones_a_full_result_would_show():
    from analyses import select_units, top_patches, unit_selectivity

    model = _net()
    data = torch.utils.data.TensorDataset(torch.randn(30, 1, 8, 8), torch.arange(30) % 3)
    topk, labels = record_topk(model, data, ["3"], k=2, device="cpu", progress=False)
    full = top_patches(model, data, topk["3"], labels=labels)
    for units in ("selective", "strongest"):
        early = select_units(topk["3"], unit_selectivity(topk["3"], labels), units, 3)
        np.testing.assert_array_equal(early, full.select_units(units, 3))


def test_dataset_labels_reads_labels_targets_or_items():
    from probe.study._context import dataset_labels

    class Targets(torch.utils.data.Dataset):
        targets = [2, 0, 1]

        def __len__(self):
            return 3

        def __getitem__(self, i):
            raise AssertionError("targets are read without loading items")

    items = torch.utils.data.TensorDataset(torch.zeros(3, 2), torch.tensor([1, 1, 0]))
    np.testing.assert_array_equal(dataset_labels(Targets()), [2, 0, 1])
    np.testing.assert_array_equal(dataset_labels(items), [1, 1, 0])
    unlabelled = [torch.zeros(2)] * 2
    np.testing.assert_array_equal(dataset_labels(unlabelled), [-1, -1])
