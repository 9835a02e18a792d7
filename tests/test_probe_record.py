"""probe.record against hand-written hooks, on awkward models, and its error messages."""

from collections import OrderedDict

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import probe


class SharedReLUNet(nn.Module):
    """Conv net whose ReLU module is called twice per forward pass."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.act = nn.ReLU()
        self.conv2 = nn.Conv2d(4, 6, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(24, 5)

    def forward(self, x):
        x = self.act(self.conv1(x))
        x = self.act(self.conv2(x))
        return self.fc(self.drop(self.pool(x).flatten(1)))


class PairOut(nn.Module):
    def forward(self, x):
        return (x * 2, x)


class DictOut(nn.Module):
    def forward(self, x):
        return {"shifted": x + 1, "same": x}


class TupleNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 4)
        self.pair = PairOut()
        self.dict = DictOut()

    def forward(self, x):
        first, _ = self.pair(self.fc(x))
        return self.dict(first)["shifted"]


@pytest.fixture
def net():
    torch.manual_seed(0)
    return SharedReLUNet().eval()


@pytest.fixture
def images():
    return torch.randn(23, 1, 8, 8, generator=torch.Generator().manual_seed(1))


def hand_hooks(model, x, names, reduce, batch_size):
    """Reference: plain forward hooks collecting each call's reduced output."""
    outputs = {}
    modules = dict(model.named_modules())

    def hook(name):
        def fn(module, args, output):
            outputs.setdefault(name, []).append(reduce(output))

        return fn

    handles = [modules[n].register_forward_hook(hook(n)) for n in names]
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            model(x[start : start + batch_size])
    for h in handles:
        h.remove()
    return outputs


def no_hooks_left(model):
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_spatial_mean_equals_hand_hooks_exactly(net, images):
    rec = probe.record(net, images, ["conv1", "conv2", "fc"], batch_size=10, device="cpu", progress=False)
    ref = hand_hooks(net, images, ["conv1", "conv2", "fc"], lambda o: o.mean(dim=(2, 3)) if o.dim() == 4 else o, 10)
    for name in ["conv1", "conv2", "fc"]:
        expected = torch.cat(ref[name]).numpy()
        assert rec[name].dtype == np.float32
        np.testing.assert_array_equal(rec[name], expected)
    assert rec.layers == ["conv1", "conv2", "fc"]
    assert rec.shapes["conv2"] == (6, 8, 8) and rec.n_stimuli == 23
    assert no_hooks_left(net)


def test_flatten_and_max_equal_hand_hooks(net, images):
    rec = probe.record(net, images, ["conv1", "conv2"], reduce={"conv1": "flatten", "conv2": "max"}, batch_size=7,
                       device="cpu", progress=False)
    flat = hand_hooks(net, images, ["conv1"], lambda o: o.reshape(len(o), -1), 7)
    peak = hand_hooks(net, images, ["conv2"], lambda o: o.amax(dim=(2, 3)), 7)
    np.testing.assert_array_equal(rec["conv1"], torch.cat(flat["conv1"]).numpy())
    np.testing.assert_array_equal(rec["conv2"], torch.cat(peak["conv2"]).numpy())
    assert rec.units("conv1")[["channel", "row", "col"]].iloc[65].tolist() == [1, 0, 1]


def test_module_called_twice_is_recorded_per_call(net, images):
    rec = probe.record(net, images, "act", reduce="flatten", batch_size=16, device="cpu", progress=False)
    assert rec.layers == ["act#1", "act#2"]
    ref = hand_hooks(net, images, ["act"], lambda o: o.reshape(len(o), -1), 16)["act"]
    np.testing.assert_array_equal(rec["act#1"], torch.cat(ref[0::2]).numpy())
    np.testing.assert_array_equal(rec["act#2"], torch.cat(ref[1::2]).numpy())
    assert rec.shapes["act#1"] == (4, 8, 8) and rec.shapes["act#2"] == (6, 8, 8)


def test_tuple_and_dict_outputs_record_the_first_tensor():
    torch.manual_seed(0)
    model = TupleNet()
    x = torch.randn(9, 6)
    rec = probe.record(model, x, ["pair", "dict"], device="cpu", progress=False)
    with torch.no_grad():
        hidden = model.fc(x)
    np.testing.assert_array_equal(rec["pair"], (hidden * 2).numpy())
    np.testing.assert_array_equal(rec["dict"], (hidden * 2 + 1).numpy())


def test_transformer_encoder_fast_path_is_disabled_and_restored():
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(d_model=8, nhead=2, dim_feedforward=16, dropout=0.0, batch_first=True)
    model = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False).eval()
    tokens = torch.randn(6, 5, 8)
    assert torch.backends.mha.get_fastpath_enabled()
    rec = probe.record(model, tokens, ["layers.0.linear1", "layers.1.self_attn", "layers.1"],
                       reduce={"layers.0.linear1": "tokens", "layers.1": "cls"}, batch_size=4, device="cpu", progress=False)
    assert torch.backends.mha.get_fastpath_enabled()  # restored
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        ref = hand_hooks(model, tokens, ["layers.0.linear1", "layers.1"], lambda o: o, 4)
        # (attn_output, weights): the first tensor is recorded, averaged over tokens
        attn = hand_hooks(model, tokens, ["layers.1.self_attn"], lambda o: o[0].mean(dim=1), 4)
    finally:
        torch.backends.mha.set_fastpath_enabled(True)
    np.testing.assert_array_equal(rec["layers.0.linear1"], torch.cat(ref["layers.0.linear1"]).reshape(6, -1).numpy())
    np.testing.assert_array_equal(rec["layers.1.self_attn"], torch.cat(attn["layers.1.self_attn"]).numpy())
    np.testing.assert_array_equal(rec["layers.1"], torch.cat(ref["layers.1"])[:, 0].numpy())
    with torch.no_grad():  # the fused fast path computes the same block outputs
        np.testing.assert_allclose(rec["layers.1"], model(tokens)[:, 0].numpy(), atol=1e-5)
    assert rec.units("layers.0.linear1")["token"].max() == 4


def test_labels_from_dataset_and_loader_match_tensor_input(net, images):
    labels = torch.arange(23) % 5
    from_dataset = probe.record(net, TensorDataset(images, labels), "fc", batch_size=8, device="cpu", progress=False)
    loader = DataLoader(TensorDataset(images, labels), batch_size=6)
    from_loader = probe.record(net, loader, "fc", device="cpu", progress=False)
    from_tensor = probe.record(net, images, "fc", device="cpu", progress=False)
    np.testing.assert_array_equal(from_dataset.labels, labels.numpy())
    np.testing.assert_array_equal(from_loader.labels, labels.numpy())
    np.testing.assert_array_equal(from_tensor.labels, np.full(23, -1))
    np.testing.assert_allclose(from_dataset["fc"], from_tensor["fc"], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(from_loader["fc"], from_tensor["fc"], rtol=1e-6, atol=1e-6)
    assert from_dataset.stimuli["label"].tolist() == labels.tolist()


class StimuliOnly(torch.utils.data.Dataset):
    def __init__(self, images):
        self.images = images

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        return self.images[index]


def test_dataset_of_bare_stimuli(net, images):
    rec = probe.record(net, StimuliOnly(images), "fc", batch_size=5, device="cpu", progress=False)
    with torch.no_grad():
        np.testing.assert_allclose(rec["fc"], net(images).numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(rec.labels, -1)


def test_mode_and_requires_grad_restored(net, images):
    net.train()
    net.fc.weight.requires_grad_(False)
    before = net.conv1.weight.clone()
    rec = probe.record(net, images, "fc", device="cpu", progress=False)
    assert net.training and all(m.training for m in net.modules())
    assert not net.fc.weight.requires_grad and net.conv1.weight.requires_grad
    assert torch.equal(before, net.conv1.weight)
    net.eval()
    with torch.no_grad():  # dropout was off during the pass: eval-mode outputs
        np.testing.assert_allclose(rec["fc"], net(images).numpy(), rtol=1e-6, atol=1e-6)


def test_hooks_removed_when_forward_raises(net):
    with pytest.raises(ValueError) as info:
        probe.record(net, torch.randn(4, 3, 8, 8), ["conv2", "fc"], device="cpu", progress=False)
    message = str(info.value)
    assert "'conv1'" in message and "(4, 3, 8, 8)" in message and "input_shape" in message
    assert no_hooks_left(net)
    assert torch.backends.mha.get_fastpath_enabled()


def test_bad_shape_names_the_failing_inner_layer():
    model = nn.Sequential(OrderedDict(flat=nn.Flatten(), fc=nn.Linear(24, 3)))
    with pytest.raises(ValueError, match=r"layer 'fc' \(Linear\) with input shape \(5, 54\)"):
        probe.record(model, torch.randn(5, 6, 9), "flat", device="cpu", progress=False)
    assert no_hooks_left(model)


def test_unknown_layer_lists_nearest(net, images):
    with pytest.raises(KeyError, match=r"conv1.*probe layers"):
        probe.record(net, images, "conv_1", device="cpu", progress=False)
    with pytest.raises(KeyError, match="fc"):
        probe.record(net, images, "fc", reduce={"fcc": "flatten"}, device="cpu", progress=False)


def test_empty_and_wrong_data_are_refused(net):
    with pytest.raises(ValueError, match="no stimuli"):
        probe.record(net, torch.empty(0, 1, 8, 8), "fc", device="cpu", progress=False)
    with pytest.raises(ValueError, match="no stimuli"):
        probe.record(net, TensorDataset(torch.empty(0, 1, 8, 8)), "fc", device="cpu", progress=False)
    with pytest.raises(ValueError, match="Dataset"):
        probe.record(net, object(), "fc", device="cpu", progress=False)
    with pytest.raises(ValueError, match="dtype"):
        probe.record(net, torch.randn(2, 1, 8, 8), "fc", dtype="float64", device="cpu", progress=False)


def test_unused_layer_is_refused(net, images):
    net.unused = nn.Linear(3, 3)
    with pytest.raises(ValueError, match="not called"):
        probe.record(net, images, ["fc", "unused"], device="cpu", progress=False)


class IndexSpy(probe.Reducer):
    def __init__(self):
        self.shapes, self.indices = [], []

    def update(self, activations, stimulus_index):
        self.shapes.append(tuple(activations.shape))
        self.indices.append(stimulus_index.clone())

    def result(self):
        return {"shapes": np.array(self.shapes), "index": torch.cat(self.indices).numpy()}


class LayerSums(probe.MultiLayerReducer):
    def __init__(self):
        self.sums = {}

    def update(self, activations, stimulus_index):
        for name, value in activations.items():
            self.sums[name] = self.sums.get(name, 0.0) + float(value.double().sum())

    def result(self):
        return self.sums


def test_custom_reducers_get_raw_maps_and_indices(net, images):
    rec = probe.record(net, images, ["conv2", "act"], reducers={"spy": IndexSpy, "sums": LayerSums},
                       batch_size=10, device="cpu", progress=False)
    spy = rec.extras["spy"]["conv2"]
    assert spy["shapes"].tolist() == [[10, 6, 8, 8], [10, 6, 8, 8], [3, 6, 8, 8]]
    np.testing.assert_array_equal(spy["index"], np.arange(23))
    assert set(rec.extras["spy"]) == {"conv2", "act#1", "act#2"}
    ref = hand_hooks(net, images, ["conv2"], lambda o: o, 10)["conv2"]
    assert rec.extras["sums"]["conv2"] == pytest.approx(float(torch.cat(ref).double().sum()), rel=1e-9)
    with pytest.raises(ValueError, match="factory"):
        probe.record(net, images, "fc", reducers={"bad": 3}, device="cpu", progress=False)


def test_float16_projection_and_globs(net, images):
    rec = probe.record(net, images, "conv*", reduce="flatten", dtype="float16", project={"conv2": 32}, seed=1,
                       device="cpu", progress=False)
    again = probe.record(net, images, "conv*", reduce="flatten", dtype="float16", project={"conv2": 32}, seed=1,
                         device="cpu", progress=False)
    assert rec.layers == ["conv1", "conv2"]
    assert rec["conv1"].dtype == np.float16 and rec["conv2"].shape == (23, 32)
    np.testing.assert_array_equal(rec["conv2"], again["conv2"])
    full = probe.record(net, images, "conv1", reduce="flatten", device="cpu", progress=False)
    np.testing.assert_allclose(rec["conv1"], full["conv1"], rtol=1e-3, atol=1e-3)
    assert rec.reductions["conv2"].label() == "flatten -> JL 32"


def test_reduction_that_does_not_fit_names_the_layer(net, images):
    with pytest.raises(ValueError, match=r"layer 'fc'.*flatten"):
        probe.record(net, images, ["conv1", "fc"], reduce={"fc": "spatial-max"}, device="cpu", progress=False)


def test_predicate_selection(net, images):
    rec = probe.record(net, images, lambda name, module: isinstance(module, nn.Conv2d), device="cpu", progress=False)
    assert rec.layers == ["conv1", "conv2"]


@pytest.mark.gpu
def test_cuda_recording_matches_cpu(net, images, tmp_path):
    labels = torch.arange(23) % 4
    cpu = probe.record(net, images, ["conv2", "fc"], reduce={"conv2": "flatten"}, device="cpu", progress=False)
    gpu = probe.record(net, TensorDataset(images, labels), ["conv2", "fc"], reduce={"conv2": "flatten"},
                       device="cuda", batch_size=8, progress=False)
    disk = probe.record(net, images, ["conv2", "fc"], reduce={"conv2": "flatten"}, device="cuda", batch_size=8,
                        out=tmp_path / "rec", dtype="float16", progress=False)
    assert next(net.parameters()).device.type == "cpu"
    np.testing.assert_array_equal(gpu.labels, labels.numpy())
    for layer in ["conv2", "fc"]:
        np.testing.assert_allclose(gpu[layer], cpu[layer], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(disk[layer], cpu[layer], rtol=1e-2, atol=1e-2)


def test_autocast_pass_stays_close_to_float32(net, images):
    full = probe.record(net, images, ["conv2", "fc"], device="cpu", progress=False)
    mixed = probe.record(net, images, ["conv2", "fc"], device="cpu", amp=True, progress=False)
    assert mixed["conv2"].dtype == np.float32
    np.testing.assert_allclose(mixed["conv2"], full["conv2"], atol=0.05)
    np.testing.assert_allclose(mixed["fc"], full["fc"], atol=0.05)


def test_torchvision_vit_tokens():
    from torchvision.models import VisionTransformer

    torch.manual_seed(0)
    vit = VisionTransformer(image_size=16, patch_size=8, num_layers=2, num_heads=2, hidden_dim=8, mlp_dim=16).eval()
    x = torch.randn(5, 3, 16, 16)
    blocks = ["encoder.layers.encoder_layer_0", "encoder.layers.encoder_layer_1.self_attention"]
    rec = probe.record(vit, x, blocks, reduce={blocks[0]: "cls"}, batch_size=2, device="cpu", progress=False)
    fast = hand_hooks(vit, x, [blocks[0]], lambda o: o[:, 0], 2)[blocks[0]]
    torch.backends.mha.set_fastpath_enabled(False)  # the recording runs attention without the fused kernel
    try:
        cls = hand_hooks(vit, x, [blocks[0]], lambda o: o[:, 0], 2)[blocks[0]]
        attn = hand_hooks(vit, x, [blocks[1]], lambda o: o[0][:, 1:].mean(dim=1), 2)[blocks[1]]
    finally:
        torch.backends.mha.set_fastpath_enabled(True)
    np.testing.assert_array_equal(rec[blocks[0]], torch.cat(cls).numpy())
    np.testing.assert_allclose(rec[blocks[0]], torch.cat(fast).numpy(), atol=1e-5)
    # auto: mean over the 4 patch tokens; the class token (found from torchvision's ViT) is left out
    np.testing.assert_array_equal(rec[blocks[1]], torch.cat(attn).numpy())
    assert rec.shapes[blocks[0]] == (5, 8) and rec.reductions[blocks[1]].mode == "token-mean"
    assert rec.reductions[blocks[1]].layout == "tokens+1"


class InplaceNet(nn.Module):
    """conv -> bn -> ReLU(inplace=True): the bn output is overwritten later in the forward pass."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(3 * 8 * 8, 2)

    def forward(self, x):
        return self.fc(self.relu(self.bn(self.conv(x))).flatten(1))


class Snapshot(probe.MultiLayerReducer):
    def __init__(self):
        self.batches = []

    def update(self, activations, stimulus_index):
        self.batches.append(activations["bn"].reshape(len(stimulus_index), -1).clone())

    def result(self):
        return torch.cat(self.batches).numpy()


def test_values_are_taken_before_later_in_place_operations(images):
    torch.manual_seed(0)
    model = InplaceNet().eval()
    with torch.no_grad():
        model.bn.running_mean.fill_(0.3)  # so that many bn outputs are negative
    rec = probe.record(model, images, ["bn", "conv"], reduce={"bn": "flatten"}, reducers={"snap": Snapshot},
                       batch_size=10, device="cpu", progress=False)
    expected = torch.cat(hand_hooks(model, images, ["bn"], lambda o: o.reshape(len(o), -1).clone(), 10)["bn"])
    assert (expected < 0).any()
    np.testing.assert_array_equal(rec["bn"], expected.numpy())
    np.testing.assert_array_equal(rec.extras["snap"], expected.numpy())


def test_a_subset_is_described_by_the_dataset_it_comes_from():
    import zoo
    from torch.utils.data import Subset

    model = zoo.create_model("mlp", input_shape=[1, 8, 8], n_classes=10)
    digits = zoo.load_dataset("digits", split="test")
    rec = probe.record(model, Subset(digits, range(12)), model.recordable_layers()[:1], progress=False)
    assert rec.dataset["name"] == "digits" and rec.dataset["n_stimuli"] == 12
