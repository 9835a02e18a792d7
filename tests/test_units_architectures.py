"""Receptive fields and top patches on real architectures, against autograd brute force and hand
computations: a module called twice (torchvision ResNet's shared ReLU), submodules in mixed
train/eval modes, channels-last maps, and ViT tokens before and after attention."""

import copy
import dataclasses
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

timm = pytest.importorskip("timm", reason="timm is not installed: pip install timm")
torchvision = pytest.importorskip("torchvision", reason="torchvision is not installed: pip install torchvision")

import probe
from analyses import receptive_field, top_patches
from probe.study import record_top_patches


def _support(output_of, input_shape, position, n_draws=16, seed=0):
    """Brute force: the input pixels with a non-zero gradient for one map position (channels summed
    with random weights), united over ``n_draws`` random float64 inputs. ``output_of(images)``
    returns channels-first maps (n, C, h, w)."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(n_draws, *input_shape, generator=generator, dtype=torch.float64, requires_grad=True)
    maps = output_of(images)
    weights = torch.randn(maps.shape[1], generator=generator, dtype=torch.float64)
    (gradient,) = torch.autograd.grad((maps[:, :, position[0], position[1]] @ weights).sum(), images)
    return (gradient != 0).any(dim=0).any(dim=0)  # (H, W)


def _box_mask(box, hw):
    top, left, bottom, right = box
    mask = torch.zeros(hw, dtype=torch.bool)
    mask[max(top, 0) : max(bottom, 0), max(left, 0) : max(right, 0)] = True
    return mask


def _hooked(module_of, transform=lambda out: out):
    """``output_of`` that runs the model and returns ``transform`` of a hooked module's output."""

    def output_of(model, images):
        captured = {}
        handle = module_of(model).register_forward_hook(lambda m, i, o: captured.setdefault("out", o))
        try:
            model(images)
        finally:
            handle.remove()
        return transform(captured["out"])

    return output_of


def _display(images):
    """What top_patches shows for a TensorDataset: each image min-max scaled to [0, 1]."""
    flat = images.flatten(1)
    low, high = flat.min(dim=1).values, flat.max(dim=1).values
    return ((images - low[:, None, None, None]) / (high - low)[:, None, None, None]).numpy()


# ----------------------------------------------------------------------------------------------
# a module that runs twice per forward pass: torchvision BasicBlock.relu


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None).eval()


# relu#1 runs on bn1's output, relu#2 ends the block (the block's output is its output); both are
# taken here without the `#k` machinery, by hooking bn1 and the block.
_RELU_CALLS = {
    "layer1.0.relu#1": _hooked(lambda m: m.layer1[0].bn1, F.relu),
    "layer1.0.relu#2": _hooked(lambda m: m.layer1[0]),
}


@pytest.mark.parametrize(
    "layer, method", [("layer1.0.relu#2", "auto"), ("layer1.0.relu#2", "gradient"), ("layer1.0.relu#1", "exact")]
)
def test_each_call_of_a_shared_relu_gets_its_own_field(resnet, layer, method):
    field = receptive_field(resnet, layer, (3, 64, 64), method=method)
    # by hand: conv 7/2 p3 -> 7 | maxpool 3/2 p1 -> 11, jump 4, start -5 | conv 3 p1 -> 19, start -9
    # (relu#1) | conv 3 p1 -> 27, start -13 (relu#2)
    expected = {"layer1.0.relu#1": (19, -9), "layer1.0.relu#2": (27, -13)}[layer]
    assert (field.size, field.stride, field.start, field.map_shape) == (
        (expected[0],) * 2,
        (4, 4),
        (expected[1],) * 2,
        (16, 16),
    )
    brute = copy.deepcopy(resnet).double().eval()
    for position in [(0, 0), (8, 8), (15, 5)]:
        support = _support(lambda images: _RELU_CALLS[layer](brute, images), (3, 64, 64), position)
        assert torch.equal(support, _box_mask(field.box(*position), (64, 64))), position


def test_top_patches_on_the_second_call_end_to_end(resnet):
    images = torch.randn(16, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    data = TensorDataset(images, torch.arange(16) % 2)
    result = record_top_patches(resnet, data, "layer1.0.relu#2", k=2, bottom_k=1, device="cpu", progress=False)
    assert result.layer == "layer1.0.relu#2" and result.field.size == (27, 27)
    with torch.no_grad():
        maps = _RELU_CALLS["layer1.0.relu#2"](resnet, images).numpy()  # (16, 64, 16, 16)
    flat = maps.reshape(16, 64, -1)
    for unit in range(0, 64, 7):  # the ranking, against the block's output
        order = np.lexsort((np.arange(16), -flat[:, unit].max(axis=1)))[:2]
        np.testing.assert_array_equal(result.topk.top_stimulus[unit], order)
    display = _display(images)
    frame = result.to_frame()
    for row in frame.iloc[::11].itertuples():
        assert maps[row.stimulus, row.unit, row.y, row.x] == pytest.approx(row.value, abs=1e-5)
        top, left = 4 * row.y - 13, 4 * row.x - 13  # the field by hand, as above
        assert (row.top, row.left, row.bottom, row.right) == (top, left, top + 27, left + 27)
        patches = result.patches if row.kind == "top" else result.bottom_patches
        patch = patches[row.unit, row.rank]
        inside = display[row.stimulus][:, max(top, 0) : top + 27, max(left, 0) : left + 27]
        np.testing.assert_allclose(
            patch[:, max(-top, 0) :, max(-left, 0) :][:, : inside.shape[1], : inside.shape[2]], inside, atol=1e-6
        )
    assert result.max_recheck_error < 1e-4

    with pytest.raises(ValueError, match="'layer1.0.relu#1', 'layer1.0.relu#2'"):  # the plain name is ambiguous
        receptive_field(resnet, "layer1.0.relu", (3, 64, 64))
    with pytest.raises(ValueError, match="'layer1.0.relu#1', 'layer1.0.relu#2'"):
        record_top_patches(resnet, images[:4], "layer1.0.relu", k=1, device="cpu", progress=False)
    with pytest.raises(ValueError, match="ran 2 time"):
        receptive_field(resnet, "layer1.0.relu#3", (3, 64, 64))
    # the analysis of a recording of both calls
    recording = probe.record(
        resnet, data, ["layer1.0.relu"], reducers={"topk": lambda: probe.TopK(2)}, device="cpu", progress=False
    )
    both = top_patches(resnet, data, recording.extras["topk"])
    assert {name: r.field.size for name, r in both.items()} == {
        "layer1.0.relu#1": (19, 19),
        "layer1.0.relu#2": (27, 27),
    }


# ----------------------------------------------------------------------------------------------
# train/eval modes


def _mixed_modes(root_training: bool) -> nn.Sequential:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5), nn.Conv2d(4, 3, 3),
        nn.Sequential(nn.BatchNorm2d(3), nn.ReLU()),
    )  # fmt: skip
    net.train(root_training)
    for name in ("1", "3", "5.0"):  # against the root's mode
        net.get_submodule(name).train(not root_training)
    return net


@pytest.mark.parametrize("root_training", [True, False])
def test_every_module_keeps_its_own_mode(root_training):
    net = _mixed_modes(root_training)
    images = torch.rand(20, 1, 12, 12, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        net[1].running_mean.copy_(torch.rand(4))  # BatchNorm statistics away from their initial values
    recording = probe.record(  # on a copy: the engine's own handling of modes is not under test here
        copy.deepcopy(net).eval(),
        images,
        ["4", "5"],
        reducers={"topk": lambda: probe.TopK(2)},
        device="cpu",
        progress=False,
    )
    modes = {name: module.training for name, module in net.named_modules()}
    assert len(set(modes.values())) == 2
    statistics = {name: buffer.clone() for name, buffer in net.named_buffers()}
    for method in ("exact", "gradient"):
        receptive_field(net, "4", (1, 12, 12), method=method)
        assert {name: module.training for name, module in net.named_modules()} == modes, method
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the re-check ran in eval mode, like the recording
        top_patches(net, images, recording.extras["topk"])
    assert {name: module.training for name, module in net.named_modules()} == modes
    for name, buffer in net.named_buffers():  # the passes ran in eval mode: no statistic moved
        assert torch.equal(buffer, statistics[name]), name


# ----------------------------------------------------------------------------------------------
# channels-last maps


class _Twin(nn.Module):
    """Conv, pool, conv, then a LayerNorm over channels, which needs them last: ``norm`` emits
    (batch, h, w, C); ``out`` is the same map permuted back to (batch, C, h, w)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 6, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(6, 5, 3, stride=2)
        self.norm = nn.LayerNorm(5)
        self.out = nn.Identity()

    def forward(self, x):
        h = self.conv2(self.pool(F.relu(self.conv(x))))
        return self.out(self.norm(h.permute(0, 2, 3, 1)).permute(0, 3, 1, 2))


def test_channels_last_maps_get_the_field_of_their_channels_first_twin():
    torch.manual_seed(0)
    net = _Twin().eval()
    last = receptive_field(net, "norm", (1, 30, 38))  # auto: a LayerNorm over the last axis of a 4-d map
    first = receptive_field(net, "out", (1, 30, 38), layout="channels_first")
    assert last.layout == "channels_last" and first.layout == "channels_first"
    # by hand: conv 3 p1 -> 3, start -1 | pool 2 -> 4, jump 2 | conv 3/2 -> 8, jump 4; map 15x19 -> 7x9
    for field in (last, first):
        assert (field.size, field.stride, field.start, field.map_shape) == ((8, 8), (4, 4), (-1, -1), (7, 9))
    brute = copy.deepcopy(net).double()
    channels_last = _hooked(lambda m: m.norm, lambda out: out.permute(0, 3, 1, 2))
    for position in [(0, 0), (3, 8), (6, 2)]:
        support = _support(lambda images: channels_last(brute, images), (1, 30, 38), position)
        assert torch.equal(support, _box_mask(last.box(*position), (30, 38))), position

    images = torch.randn(24, 1, 30, 38, generator=torch.Generator().manual_seed(2))
    recording = probe.record(
        net, images, ["out"], reducers={"topk": lambda: probe.TopK(3, bottom_k=1)}, device="cpu", progress=False
    )
    as_first = recording.extras["topk"]["out"]
    # the same entries, as the engine reports a channels-last layer: (y, x) on the H, W grid
    if "source_layout" in {f.name for f in dataclasses.fields(as_first)}:
        as_last = dataclasses.replace(as_first, layer="norm", source_layout="channels-last")
    else:
        as_last = dataclasses.replace(as_first, layer="norm")
        as_last.source_layout = "channels_last"
    crops_first, crops_last = top_patches(net, images, as_first), top_patches(net, images, as_last)
    np.testing.assert_array_equal(crops_last.boxes, crops_first.boxes)
    np.testing.assert_array_equal(crops_last.bottom_boxes, crops_first.bottom_boxes)
    np.testing.assert_array_equal(crops_last.patches, crops_first.patches)
    y, x = as_first.coordinates("top")
    np.testing.assert_array_equal(crops_last.boxes[..., :2], np.stack([4 * y - 1, 4 * x - 1], axis=-1))
    assert crops_last.max_recheck_error < 1e-5  # the re-run reads (n, H, W, C) on the right axes

    engine = probe.record(net, images, ["norm"], reducers={"topk": lambda: probe.TopK(3)}, device="cpu", progress=False)
    engine = engine.extras["topk"]["norm"]
    if getattr(engine, "source_layout", ""):  # an engine that tells layouts: the same entries, the same crops
        np.testing.assert_array_equal(top_patches(net, images, engine).boxes, crops_first.boxes)


class _FixedSize(nn.Module):
    """Takes 16 x 16 inputs only, so the axes of ``move``'s output cannot be told by growing the input."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.move = _ChannelsLast()

    def forward(self, x):
        if tuple(x.shape[-2:]) != (16, 16):
            raise ValueError("this model takes 16 x 16 inputs only")
        return self.move(self.conv(x))


class _ChannelsLast(nn.Module):
    """A module of no known kind that emits (batch, H, W, C)."""

    def forward(self, h):
        return 2 * h.permute(0, 2, 3, 1)


def test_an_ambiguous_4d_output_is_refused_not_guessed():
    net = _FixedSize().eval()
    with pytest.raises(ValueError, match=r"'move'.*\(1, 14, 14, 4\).*'channels_first'.*'channels_last'.*'tokens'"):
        receptive_field(net, "move", (1, 16, 16))
    field = receptive_field(net, "move", (1, 16, 16), layout="channels_last")
    assert (field.size, field.stride, field.start, field.map_shape) == ((3, 3), (1, 1), (0, 0), (14, 14))
    with pytest.raises(ValueError, match="no 'tokens' layout"):
        receptive_field(net, "move", (1, 16, 16), layout="tokens")


# ----------------------------------------------------------------------------------------------
# ViT tokens


@pytest.fixture(scope="module")
def vit():
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8).eval()


def test_vit_patch_tokens_see_their_patch_and_attention_sees_everything(vit):
    embed = receptive_field(vit, "patch_embed", (3, 32, 32))  # auto: timm's PatchEmbed emits tokens
    assert embed.layout == "tokens" and embed.prefix_tokens == 0 and embed.map_shape == (4, 4)
    assert (embed.size, embed.stride, embed.start) == ((8, 8), (8, 8), (0, 0))
    block = receptive_field(vit, "blocks.0", (3, 32, 32), layout="tokens")
    assert block.prefix_tokens == 1 and block.whole_input and block.box(3, 1) == (0, 0, 32, 32)
    with pytest.raises(ValueError, match="layout="):  # a block's output: the layout is not guessed
        receptive_field(vit, "blocks.0", (3, 32, 32))

    brute = copy.deepcopy(vit).double()
    embed_grid = _hooked(lambda m: m.patch_embed, lambda out: out.transpose(1, 2).reshape(-1, 192, 4, 4))
    block_grid = _hooked(lambda m: m.blocks[0], lambda out: out[:, 1:].transpose(1, 2).reshape(-1, 192, 4, 4))
    for token in (0, 6, 15):
        row, column = divmod(token, 4)
        patch = _box_mask((8 * row, 8 * column, 8 * row + 8, 8 * column + 8), (32, 32))
        assert torch.equal(_support(lambda images: embed_grid(brute, images), (3, 32, 32), (row, column), 4), patch)
        assert _box_mask(embed.box(row, column), (32, 32)).equal(patch)
        everything = _support(lambda images: block_grid(brute, images), (3, 32, 32), (row, column), 4)
        assert everything.all()

    # a 2 x 2 patch grid: the edges alone cannot tell the stride, the patch size does
    coarse = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32).eval()
    field = receptive_field(coarse, "patch_embed", (3, 32, 32))
    assert (field.size, field.stride, field.start, field.map_shape) == ((16, 16), (16, 16), (0, 0), (2, 2))


def test_vit_top_patches_crop_patches_before_attention_and_whole_images_after(vit):
    images = torch.randn(20, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    results = record_top_patches(
        vit, TensorDataset(images, torch.arange(20) % 2), ["patch_embed", "blocks.0"], k=2, device="cpu", progress=False
    )
    embed, block = results["patch_embed"], results["blocks.0"]
    assert embed.patches.shape == (192, 2, 3, 8, 8) and "patch" in embed.field_note
    for row in embed.to_frame().itertuples():
        grid_row, grid_column = divmod(row.y, 4)
        assert (row.top, row.left, row.bottom, row.right) == (
            8 * grid_row,
            8 * grid_column,
            8 * grid_row + 8,
            8 * grid_column + 8,
        )
    display = _display(images)
    stimulus = embed.topk.top_stimulus[5, 0]
    grid_row, grid_column = divmod(int(embed.topk.top_position[5, 0]), 4)
    np.testing.assert_allclose(
        embed.patches[5, 0],
        display[stimulus][:, 8 * grid_row : 8 * grid_row + 8, 8 * grid_column : 8 * grid_column + 8],
        atol=1e-6,
    )

    # after attention a token's field is the whole image, not its patch: whole stimuli, said so
    assert block.field.whole_input and "whole stimulus" in block.field_note
    assert block.patches.shape == (192, 2, 3, 32, 32) and block.masks.all()
    assert (block.boxes == [0, 0, 32, 32]).all() and (block.bottom_boxes.size == 0)
    np.testing.assert_allclose(block.patches[7, 1], display[block.topk.top_stimulus[7, 1]], atol=1e-6)
    assert max(embed.max_recheck_error, block.max_recheck_error) < 1e-4
