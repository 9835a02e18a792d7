"""Layouts: channels-first and channels-last maps, tokens with prefix tokens, dict (text) batches,
outputs that do not lead with the batch; each recorded layer against plain forward hooks."""

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

import probe
from probe import TopK

PIP_TIMM = 'timm models need timm: pip install "neuroprobe[pretrained]"'
PIP_HF = 'Hugging Face models need transformers: pip install "neuroprobe[hf]"'


def hooked(model, data, names, reduce, batch_size, mask_key=None):
    """Reference: plain forward hooks, batch by batch, each output reduced by ``reduce(output, mask)``."""
    modules = dict(model.named_modules())
    kept = {name: [] for name in names}
    mask = [None]

    def first(output):
        if isinstance(output, torch.Tensor):
            return output
        values = output.values() if isinstance(output, dict) else output
        return next(first(v) for v in values if isinstance(v, (torch.Tensor, dict, tuple, list)))

    def hook(name):
        return lambda module, args, output: kept[name].append(reduce[name](first(output), mask[0]))

    handles = [modules[name].register_forward_hook(hook(name)) for name in names]
    try:
        with torch.no_grad():
            n = len(next(iter(data.values()))) if isinstance(data, dict) else len(data)
            for start in range(0, n, batch_size):
                if isinstance(data, dict):
                    batch = {key: value[start : start + batch_size] for key, value in data.items()}
                    mask[0] = batch.get(mask_key)
                    model(**batch)
                else:
                    model(data[start : start + batch_size])
    finally:
        for handle in handles:
            handle.remove()
    return {name: torch.cat(values).numpy() for name, values in kept.items()}


def cf_mean(output, mask=None):
    return output.mean(dim=tuple(range(2, output.dim())))


def cl_mean(output, mask=None):
    return output.mean(dim=tuple(range(1, output.dim() - 1)))


def token_mean(prefix=0):
    def reduce(output, mask=None):
        tokens = output[:, prefix:]
        if mask is None:
            return tokens.mean(dim=1)
        weights = mask[:, prefix:, None].float()
        return (tokens * weights).sum(dim=1) / weights.sum(dim=1)

    return reduce


def as_is(output, mask=None):
    return output.reshape(len(output), -1)


# ----------------------------------------------------------------------------------------------
# small models with known layouts


class ToChannelsLast(nn.Module):
    """A module of no known kind that permutes (batch, C, H, W) to (batch, H, W, C)."""

    def forward(self, x):
        return x.permute(0, 2, 3, 1)


class Windows(nn.Module):
    """Folds 2 x 2 windows into the batch: (batch, H, W, C) -> (batch * 4, H * W / 4, C)."""

    def forward(self, x):
        b, h, w, c = x.shape
        x = x.reshape(b, 2, h // 2, 2, w // 2, c).permute(0, 1, 3, 2, 4, 5)
        return x.reshape(b * 4, (h // 2) * (w // 2), c)


class Block(nn.Module):
    """A Swin-like block on channels-last maps: norm, windowed mixing, back to the map."""

    def __init__(self, c):
        super().__init__()
        self.norm = nn.LayerNorm(c)
        self.windows = Windows()
        self.mix = nn.Linear(c, c)

    def forward(self, x):
        b, h, w, c = x.shape
        y = self.mix(self.windows(self.norm(x)))  # (b * 4, hw / 4, c)
        y = y.reshape(b, 2, 2, h // 2, w // 2, c).permute(0, 1, 3, 2, 4, 5).reshape(b, h, w, c)
        return x + y


class HybridNet(nn.Module):
    """conv (channels-first) -> permute (no known kind) -> LayerNorm, Swin-like block, Linear
    (channels-last) -> Conv1d over a flattened map (channels-first, (batch, C, L)) -> head."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.act = nn.ReLU()
        self.to_last = ToChannelsLast()
        self.norm = nn.LayerNorm(6)
        self.block = Block(6)
        self.proj = nn.Linear(6, 5)
        self.conv1d = nn.Conv1d(5, 4, 3)
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        x = self.norm(self.to_last(self.act(self.conv(x))))
        x = self.proj(self.block(x))  # (b, 8, 10, 5)
        x = self.conv1d(x.flatten(1, 2).transpose(1, 2))  # (b, 4, 78)
        return self.head(x.mean(dim=2))


@pytest.fixture
def hybrid():
    torch.manual_seed(0)
    return HybridNet().eval()


@pytest.fixture
def pictures():
    return torch.randn(7, 3, 8, 10, generator=torch.Generator().manual_seed(1))


def test_layouts_are_found_and_each_reduced_over_its_own_axes(hybrid, pictures):
    layers = ["conv", "act", "norm", "block", "proj", "conv1d", "head"]
    rec = probe.record(hybrid, pictures, layers, batch_size=3, device="cpu", progress=False)
    expected = {"conv": cf_mean, "act": cf_mean, "norm": cl_mean, "block": cl_mean, "proj": cl_mean,
                "conv1d": cf_mean, "head": as_is}
    reference = hooked(hybrid, pictures, layers, expected, 3)
    for name in layers:
        np.testing.assert_array_equal(rec[name], reference[name], err_msg=name)
    assert {name: rec.reductions[name].layout for name in layers} == {
        "conv": "channels-first", "act": "channels-first", "norm": "channels-last", "block": "channels-last",
        "proj": "channels-last", "conv1d": "channels-first", "head": "vector"}
    assert rec["proj"].shape == (7, 5) and rec["conv1d"].shape == (7, 4)  # units are the channels
    assert list(rec.units("norm")["channel"]) == list(range(6))
    flat = probe.record(hybrid, pictures, "norm", reduce="flatten", device="cpu", progress=False)
    assert flat.units("norm")[["row", "col", "channel"]].iloc[7].tolist() == [0, 1, 1]  # (H, W, C) order


def test_a_stated_layout_wins_over_what_is_found(hybrid, pictures):
    rec = probe.record(hybrid, pictures, ["conv", "to_last"], layout={"conv": "channels-last", "to_*": "nhwc"},
                       batch_size=4, device="cpu", progress=False)
    reference = hooked(hybrid, pictures, ["conv", "to_last"], {"conv": cl_mean, "to_last": cl_mean}, 4)
    np.testing.assert_array_equal(rec["conv"], reference["conv"])  # the user's word, even against a Conv2d
    np.testing.assert_array_equal(rec["to_last"], reference["to_last"])
    assert rec.reductions["to_last"].layout == "channels-last" and rec["to_last"].shape == (7, 6)
    also = probe.record(hybrid, pictures, "to_last", reduce=probe.Reduction("max", layout="channels-last"),
                        device="cpu", progress=False)
    expected = hooked(hybrid, pictures, ["to_last"], {"to_last": lambda o, m: o.amax(dim=(1, 2))}, 256)
    np.testing.assert_array_equal(also["to_last"], expected["to_last"])
    with pytest.raises(ValueError, match=r"layer 'head'.*layout='tokens'.*3 dimensions"):
        probe.record(hybrid, pictures, "head", layout="tokens", device="cpu", progress=False)
    with pytest.raises(ValueError, match="channels-last"):
        probe.record(hybrid, pictures, "conv", layout="channel-last", device="cpu", progress=False)


def test_an_ambiguous_4d_output_is_refused_naming_layer_shape_and_choices(hybrid, pictures, tmp_path):
    out = tmp_path / "rec"
    with pytest.raises(ValueError) as info:
        probe.record(hybrid, pictures, ["conv", "to_last"], batch_size=4, out=out, device="cpu", progress=False)
    message = str(info.value)
    for part in ("'to_last'", "(4, 8, 10, 6)", "layout=", "channels-first", "channels-last", "tokens", "flatten"):
        assert part in message, part
    assert not out.exists() or not any(out.iterdir())
    flat = probe.record(hybrid, pictures, "to_last", reduce="flatten", device="cpu", progress=False)  # needs no layout
    np.testing.assert_array_equal(flat["to_last"], hooked(hybrid, pictures, ["to_last"], {"to_last": as_is}, 256)["to_last"])
    with pytest.raises(ValueError, match="cannot tell the layout of layer 'to_last'"):  # nor may TopK guess
        probe.record(hybrid, pictures, "to_last", reduce="flatten", reducers={"top": lambda: TopK(2)}, device="cpu",
                     progress=False)


def test_describe_layers_shows_the_layout_each_layer_will_be_read_in(hybrid, pictures):
    table = probe.describe_layers(hybrid, pictures[:2], ["conv", "to_last", "norm", "block.windows", "block.mix",
                                                         "block", "conv1d", "head"])
    assert table["layout"].tolist() == ["channels-first", "ambiguous", "channels-last", "not per stimulus",
                                        "not per stimulus", "channels-last", "channels-first", "vector"]
    stated = probe.describe_layers(hybrid, pictures[:2], ["to_last", "head"], layout={"to_last": "channels-last"})
    assert stated["layout"].tolist() == ["channels-last", "vector"]
    assert list(table.columns) == ["layer", "type", "output_shape", "layout", "n_params"]


def test_outputs_that_do_not_lead_with_the_batch_are_refused_before_anything_is_written(hybrid, pictures, tmp_path):
    out = tmp_path / "rec"
    with pytest.raises(ValueError) as info:
        probe.record(hybrid, pictures, ["conv", "block.mix"], batch_size=3, out=out, device="cpu", progress=False)
    message = str(info.value)
    for part in ("'block.mix'", "(12, 20, 6)", "batch of 3 stimuli", "enclosing block 'block'", "reshape="):
        assert part in message, part
    assert not out.exists() or not any(out.iterdir())
    with pytest.raises(ValueError, match=r"'block.windows'.*\(12, 20, 6\).*batch of 3"):  # in memory: the same
        probe.record(hybrid, pictures, "block.windows", batch_size=3, device="cpu", progress=False)

    def unfold(output, batch_size):  # the user's reshape: (batch * 4, 20, C) -> (batch, 80, C)
        return output.reshape(batch_size, -1, output.shape[-1])

    rec = probe.record(hybrid, pictures, "block.mix", reshape={"block.mix": unfold}, batch_size=3, out=out,
                       device="cpu", progress=False)
    reference = hooked(hybrid, pictures, ["block.mix"],
                       {"block.mix": lambda o, m: o.reshape(-1, 80, 6).mean(dim=1)}, 3)
    np.testing.assert_array_equal(rec["block.mix"], reference["block.mix"])
    assert rec.shapes["block.mix"] == (80, 6) and rec.reductions["block.mix"].layout == "tokens"


def test_topk_on_a_channels_last_layer_equals_topk_on_the_permuted_map():
    maps = torch.randn(30, 4, 5, 6, generator=torch.Generator().manual_seed(0)).round(decimals=1)
    results = []
    for reducer, data in ((TopK(4, bottom_k=2), maps), (TopK(4, bottom_k=2, layout="channels-last"), maps.permute(0, 2, 3, 1))):
        reducer.start("layer", 30, torch.device("cpu"))
        for chunk in torch.arange(30).split(7):
            reducer.update(data[chunk], chunk)
        results.append(reducer.result())
    first, last = results
    assert first.source_layout == "channels-first" and last.source_layout == "channels-last"
    assert last.layout == "maps" and last.map_shape == (5, 6)
    for field in dataclasses.fields(first):
        if field.name != "source_layout":
            np.testing.assert_array_equal(getattr(last, field.name), getattr(first, field.name), err_msg=field.name)


def test_topk_through_record_reads_a_found_channels_last_layer(hybrid, pictures):
    rec = probe.record(hybrid, pictures, ["norm", "conv1d"], reducers={"top": lambda: TopK(3)}, device="cpu",
                       progress=False)
    norm, conv1d = rec.extras["top"]["norm"], rec.extras["top"]["conv1d"]
    assert (norm.source_layout, norm.layout, norm.map_shape, norm.n_units) == ("channels-last", "maps", (8, 10), 6)
    assert (conv1d.source_layout, conv1d.layout, conv1d.map_shape, conv1d.n_units) == ("channels-first", "maps", (1, 78), 4)
    with torch.no_grad():
        maps = hybrid.norm(hybrid.to_last(hybrid.act(hybrid.conv(pictures))))  # (n, H, W, C)
    y, x = norm.coordinates("top")
    np.testing.assert_array_equal(maps[norm.top_stimulus, y, x, np.arange(6)[:, None]].numpy(), norm.top_values)


# ----------------------------------------------------------------------------------------------
# text: dict batches and a Hugging Face encoder


@pytest.fixture(scope="module")
def bert():
    transformers = pytest.importorskip("transformers", reason=PIP_HF)
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=32, max_position_embeddings=16)
    return transformers.BertModel(config).eval()


@pytest.fixture
def sentences():
    generator = torch.Generator().manual_seed(3)
    ids = torch.randint(1, 40, (7, 9), generator=generator)
    mask = torch.ones_like(ids)
    for row, length in enumerate([9, 3, 6, 2, 9, 5, 8]):
        mask[row, length:] = 0
    return {"input_ids": ids * mask, "attention_mask": mask, "labels": torch.arange(7) % 3}


class Sentences(Dataset):
    def __init__(self, tensors):
        self.tensors = tensors

    def __len__(self):
        return len(self.tensors["input_ids"])

    def __getitem__(self, i):
        return {"input_ids": self.tensors["input_ids"][i], "attention_mask": self.tensors["attention_mask"][i],
                "label": int(self.tensors["labels"][i])}


def test_a_hugging_face_encoder_records_masked_token_means_exactly(bert, sentences):
    inputs = {key: sentences[key] for key in ("input_ids", "attention_mask")}
    with torch.no_grad():
        hidden = bert(**inputs).last_hidden_state
    weights = sentences["attention_mask"][..., None].float()
    by_hand = ((hidden * weights).sum(dim=1) / weights.sum(dim=1)).numpy()
    assert not np.allclose(by_hand, hidden.mean(dim=1).numpy(), atol=1e-3)  # padding matters here

    layers = ["", "embeddings", "encoder.layer.0", "pooler"]
    for data in (sentences, Sentences(sentences), DataLoader(Sentences(sentences), batch_size=3)):
        rec = probe.record(bert, data, layers, batch_size=3, device="cpu", progress=False)
        np.testing.assert_allclose(rec[""], by_hand, rtol=1e-6, atol=1e-6)  # a ModelOutput: last_hidden_state
        np.testing.assert_array_equal(rec.labels, sentences["labels"].numpy())
        assert rec.reductions[""].layout == "tokens" and rec.reductions["pooler"].layout == "vector"
    reference = hooked(bert, inputs, layers, {"": token_mean(), "embeddings": token_mean(),
                                              "encoder.layer.0": token_mean(), "pooler": as_is}, 3, "attention_mask")
    for name in layers:
        np.testing.assert_allclose(rec[name], reference[name], rtol=1e-6, atol=1e-6, err_msg=name)
    with pytest.raises(ValueError, match=r"'embeddings.position_embeddings'.*\(1, 9, 16\).*batch of 3.*'embeddings'"):
        probe.record(bert, sentences, "embeddings.position_embeddings", batch_size=3, device="cpu", progress=False)
    table = probe.describe_layers(bert, {key: value[:2] for key, value in inputs.items()}, ["encoder", "pooler"])
    assert table["layout"].tolist() == ["tokens", "vector"]


def test_dict_batches_of_image_tensors_pass_as_keywords(pictures):
    class Keyword(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)

        def forward(self, pixel_values):
            return self.conv(pixel_values)

    model = Keyword().eval()
    rec = probe.record(model, {"pixel_values": pictures, "label": torch.arange(7)}, "conv", batch_size=2,
                       device="cpu", progress=False)
    np.testing.assert_array_equal(rec["conv"], hooked(model, pictures, ["conv"], {"conv": cf_mean}, 2)["conv"])
    np.testing.assert_array_equal(rec.labels, np.arange(7))


# ----------------------------------------------------------------------------------------------
# third-party architectures (benchmarks/architecture_sweep.py runs the full sweep)

CF, CL = "channels-first", "channels-last"
NOT_BATCH = "its first dimension is not the batch"
AMBIGUOUS = "cannot tell the layout"
SWEEP = {
    "mobilenetv3_small_050": ({}, 32, {"blocks.0": CF, "blocks.2.1": CF, "conv_head": CF, "classifier": "vector"}),
    "convnext_atto": ({"conv_mlp": False}, 32, {"stages.1": CF, "stages.2.blocks.0.norm": CL,
                                                "stages.2.blocks.0.mlp": CL, "stages.2.blocks.0": CF}),
    "vit_tiny_patch16_224": ({"img_size": 32, "reg_tokens": 4}, 32, {"patch_embed": "tokens", "blocks.0": "tokens+5",
                                                                   "blocks.3.attn": "tokens+5", "norm": "tokens+5"}),
    "deit_tiny_distilled_patch16_224": ({"img_size": 32}, 32, {"blocks.0": "tokens+2", "norm": "tokens+2"}),
    "swin_tiny_patch4_window7_224": ({"img_size": 64, "window_size": 4}, 64, {
        "patch_embed": CL, "layers.0": CL, "layers.1.blocks.0.mlp": "tokens", "norm": CL,
        "layers.1.blocks.0.attn": NOT_BATCH}),
    "mobilevit_xxs": ({"img_size": 64}, 64, {"stages.1": CF, "stages.2.1": CF, "stages.2.1.transformer": NOT_BATCH}),
    "coat_lite_tiny": ({"img_size": 64}, 64, {"patch_embed1": "tokens", "serial_blocks1.0": "tokens+1",
                                              "norm4": "tokens+1", "crpe2": AMBIGUOUS}),
    "levit_128s": ({"img_size": 64}, 64, {"stem": CF, "stages.0": "tokens", "stages.2": "tokens"}),
}


def _layout_reduction(layout):
    if layout == CF:
        return cf_mean
    if layout == CL:
        return cl_mean
    if layout.startswith("tokens"):
        return token_mean(int(layout.split("+")[1]) if "+" in layout else 0)
    return as_is


@pytest.mark.parametrize("name", list(SWEEP))
def test_timm_architectures_equal_forward_hooks_or_are_refused(name):
    timm = pytest.importorskip("timm", reason=PIP_TIMM)
    options, size, expected = SWEEP[name]
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, num_classes=10, **options).eval()
    images = torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(0))
    recorded = {layer: layout for layer, layout in expected.items() if layout not in (NOT_BATCH, AMBIGUOUS)}
    rec = probe.record(model, images, list(recorded), batch_size=2, device="cpu", progress=False)
    assert {layer: rec.reductions[layer].layout for layer in recorded} == recorded
    reference = hooked(model, images, list(recorded), {k: _layout_reduction(v) for k, v in recorded.items()}, 2)
    for layer in recorded:
        np.testing.assert_allclose(rec[layer], reference[layer], rtol=1e-6, atol=1e-6, err_msg=layer)
    for layer, why in expected.items():
        if why in (NOT_BATCH, AMBIGUOUS):
            with pytest.raises(ValueError, match=why) as info:
                probe.record(model, images, layer, batch_size=2, device="cpu", progress=False)
            assert repr(layer) in str(info.value)
