"""analyses.receptive_field's exact method on graphs that branch and merge (residual additions,
concatenation, squeeze-excite gates), against the gradient measurement and against brute force."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from analyses import receptive_field

torchvision = pytest.importorskip("torchvision", reason="torchvision is not installed: pip install torchvision")


def _triple(field):
    return field.size, field.stride, field.start, field.map_shape


def _exact_equals_measured(model, layer, input_shape, layout="auto"):
    exact = receptive_field(model, layer, input_shape, method="exact", layout=layout)
    measured = receptive_field(model, layer, input_shape, method="gradient", layout=layout)
    assert exact.method == "exact" and measured.method == "gradient"
    assert _triple(exact) == _triple(measured), layer
    return exact


@pytest.fixture(scope="module")
def resnet18():
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None).eval()


# ----------------------------------------------------------------------------------------------
# real architectures: exact == measured


@pytest.mark.parametrize("layer", ["layer1", "layer1.0", "layer2", "layer2.1.conv1"])
def test_resnet18_exact_equals_measured(resnet18, layer):
    field = _exact_equals_measured(resnet18, layer, (3, 96, 96))
    # by hand: stem 7/2 p3 + maxpool 3/2 p1 -> 11 px, jump 4, start -5; each 3x3 conv adds 2 jumps
    by_hand = {"layer1.0": (27, 4, -13), "layer1": (43, 4, -21), "layer2.1.conv1": (83, 8, -41), "layer2": (99, 8, -49)}
    size, stride, start = by_hand[layer]
    assert (field.size, field.stride, field.start) == ((size,) * 2, (stride,) * 2, (start,) * 2)


def test_mobilenet_v2_exact_equals_measured():
    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v2(weights=None).eval()
    for layer in ("features.3", "features.6"):  # features.3 and .6 end with a residual addition
        _exact_equals_measured(model, layer, (3, 64, 64))


def test_densenet121_concatenation_exact_equals_measured():
    torch.manual_seed(0)
    model = torchvision.models.densenet121(weights=None).eval()
    field = _exact_equals_measured(model, "features.denseblock1", (3, 64, 64))
    assert (field.size, field.stride, field.start) == ((59, 59), (4, 4), (-29, -29))


def test_squeeze_excite_sees_the_whole_input():
    """EfficientNet-B0 gates every map by a sigmoid of its global average (squeeze-excite): from the
    first such block on, every unit sees the whole input, which the gradients show too."""
    torch.manual_seed(0)
    model = torchvision.models.efficientnet_b0(weights=None).eval()
    before = _exact_equals_measured(model, "features.1.0.block.0", (3, 64, 64))  # before the first gate
    assert (before.size, before.stride, before.start) == ((7, 7), (2, 2), (-3, -3))
    for layer in ("features.1", "features.2"):
        field = _exact_equals_measured(model, layer, (3, 64, 64))
        assert field.whole_input and field.size == (64, 64) and field.box(3, 5) == (0, 0, 64, 64)


def test_timm_efficientnet_functional_batch_norm_and_mean_gate():
    timm = pytest.importorskip("timm", reason="timm is not installed: pip install timm")
    torch.manual_seed(0)
    model = timm.create_model("efficientnet_b0", pretrained=False).eval()  # F.batch_norm, x.mean((2, 3), keepdim=True)
    assert _exact_equals_measured(model, "bn1", (3, 64, 64)).size == (3, 3)
    assert _exact_equals_measured(model, "blocks.1", (3, 64, 64)).whole_input


def test_exact_on_resnet18_layer4_at_224_px(resnet18):
    """The exact walk applies to a whole ResNet at full resolution (no measuring, so it is quick)."""
    field = receptive_field(resnet18, "layer4", (3, 224, 224), method="exact")
    assert (field.size, field.stride, field.start, field.map_shape) == ((435, 435), (32, 32), (-217, -217), (7, 7))
    assert receptive_field(resnet18, "layer4", (3, 224, 224)).method == "exact"  # auto
    assert receptive_field(resnet18, "avgpool", (3, 224, 224), method="exact").box(0, 0) == (0, 0, 224, 224)


# ----------------------------------------------------------------------------------------------
# small graphs: functional operations, splits, gates, and the truth by brute force


class _Branchy(nn.Module):
    """Functional conv and pools, chunk, concatenation, a channel slice, a constant added, padding,
    a residual of a 1x1 and a 3x3 path, and a squeeze-excite gate at the end."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(4, 1, 3, 3) * 0.5)
        self.c = nn.Conv2d(2, 2, 3, padding=1)
        self.offset = nn.Parameter(torch.randn(1, 3, 8, 8))
        self.valid = nn.Conv2d(3, 3, 3)
        self.skip = nn.Conv2d(3, 3, 1, stride=2)
        self.deep = nn.Conv2d(3, 3, 3, stride=2, padding=1, dilation=1)
        self.mid = nn.Identity()
        self.merged = nn.Identity()
        self.reduce = nn.Conv2d(3, 3, 1)
        self.gated = nn.Identity()

    def forward(self, x):
        h = F.relu(F.conv2d(x, self.w, None, 1, 1))  # 3 px, start -1
        p = F.max_pool2d(h, 2)  # 4 px, jump 2
        a, b = p.chunk(2, dim=1)
        a = F.avg_pool2d(a, 3, 1, 1, False)  # (ceil_mode positional)
        m = torch.cat([a, F.silu(self.c(b))], 1)[:, :3] + self.offset
        m = self.mid(self.valid(F.pad(m, (2, 0, 0, 2))))  # asymmetric padding, then a valid conv
        m = self.merged(F.relu(self.deep(m)) + self.skip(m))
        gate = torch.sigmoid(self.reduce(m.mean((2, 3), keepdim=True)))
        return self.gated(m * gate)


@pytest.mark.parametrize("layer", ["mid", "merged", "gated"])
def test_functional_operations_exact_equals_measured(layer):
    torch.manual_seed(0)
    field = _exact_equals_measured(_Branchy().eval(), layer, (1, 16, 16), layout="maps")  # (fixed-size offset)
    assert field.whole_input == (layer == "gated")


def _unit(model, layer, image, y, x):
    captured = {}
    handle = dict(model.named_modules())[layer].register_forward_hook(lambda m, i, o: captured.update(o=o))
    with torch.no_grad():
        model(image[None])
    handle.remove()
    return captured["o"][0, :, y, x]


@pytest.mark.parametrize("layer", ["mid", "merged"])
def test_the_exact_field_is_the_true_field(layer):
    """Changing pixels outside the box leaves the unit as it is; changing those inside moves it."""
    torch.manual_seed(0)
    model = _Branchy().eval()
    field = receptive_field(model, layer, (1, 16, 16), method="exact", layout="maps")
    generator = torch.Generator().manual_seed(1)
    image = torch.randn(1, 16, 16, generator=generator)
    h, w = field.map_shape
    for y, x in [(0, 0), (h // 2, w - 1), (h - 1, 1)]:
        top, left, bottom, right = field.box(y, x)
        inside = torch.zeros(16, 16, dtype=torch.bool)
        inside[max(top, 0) : max(bottom, 0), max(left, 0) : max(right, 0)] = True
        reference = _unit(model, layer, image, y, x)
        noise = 5 * torch.randn(image.shape, generator=generator)
        assert torch.allclose(
            _unit(model, layer, torch.where(inside, image, image + noise), y, x), reference, atol=1e-5
        )
        rows, cols = inside.any(1).nonzero().flatten(), inside.any(0).nonzero().flatten()
        # the box's first and last rows and columns (inside the image) matter
        for r in (rows[0], rows[-1]):
            moved = image.clone()
            moved[:, r, cols] += 10 * torch.randn(len(cols), generator=generator)
            assert not torch.allclose(_unit(model, layer, moved, y, x), reference, atol=1e-4), (y, x, int(r))
        for c in (cols[0], cols[-1]):
            moved = image.clone()
            moved[:, rows, c] += 10 * torch.randn(len(rows), generator=generator)
            assert not torch.allclose(_unit(model, layer, moved, y, x), reference, atol=1e-4), (y, x, int(c))


class _Residual1d(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv1d(2, 3, 5, stride=2)
        self.b = nn.Conv1d(3, 3, 5, padding=2)
        self.out = nn.Identity()

    def forward(self, x):
        h = torch.tanh(self.a(x))
        return self.out(h + self.b(h))


def test_conv1d_residual():
    torch.manual_seed(0)
    field = _exact_equals_measured(_Residual1d().eval(), "out", (2, 41))
    assert (field.size, field.stride, field.start) == ((1, 13), (1, 2), (0, -4))


# ----------------------------------------------------------------------------------------------
# where the exact walk must refuse (and "auto" measures)


class _MixedStrides(nn.Module):
    """A stride-2 map (max-pooled input) plus a stride-1 map (a valid 9x9 conv) of the same shape."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 9)
        self.out = nn.Identity()

    def forward(self, x):
        return self.out(F.max_pool2d(x, 2) + self.conv(x))


def test_maps_of_different_strides_are_measured():
    model = _MixedStrides().eval()
    with pytest.raises(ValueError, match="different strides"):
        receptive_field(model, "out", (1, 16, 16), method="exact", layout="maps")
    field = receptive_field(model, "out", (1, 16, 16), layout="maps")  # (the shapes agree at 16 px only)
    assert field.method == "gradient" and (field.size, field.stride, field.start) == ((9, 9), (1, 1), (0, 0))


class _InPlace(nn.Module):
    """``h.add_(far(x))`` writes a 7x7 field into h; with ``rebind`` the later conv reads the result
    of add_, else it reads h, whose graph edges do not show the 7x7 path."""

    def __init__(self, rebind: bool):
        super().__init__()
        self.rebind = rebind
        self.a = nn.Conv2d(1, 2, 3, padding=1)
        self.far = nn.Conv2d(1, 2, 7, padding=3)
        self.b = nn.Conv2d(2, 2, 1)

    def forward(self, x):
        h = self.a(x)
        if self.rebind:
            h = h.add_(self.far(x))
        else:
            h.add_(self.far(x))
        return self.b(h)


def test_in_place_writes():
    torch.manual_seed(0)
    hidden = _InPlace(rebind=False).eval()
    with pytest.raises(ValueError, match="in-place operation"):  # never a 3x3 field where the unit sees 7x7
        receptive_field(hidden, "b", (1, 16, 16), method="exact")
    measured = receptive_field(hidden, "b", (1, 16, 16))
    assert measured.method == "gradient" and measured.size == (7, 7)
    shown = receptive_field(_InPlace(rebind=True).eval(), "b", (1, 16, 16), method="exact")
    assert (shown.size, shown.start) == ((7, 7), (-3, -3))


class _PartialGate(nn.Module):
    """A squeeze-excite gate pooled over a 1x1 stride-2 map, which never sees the last row and
    column of an even-sized input: no unit after the gate sees "the whole input"."""

    def __init__(self):
        super().__init__()
        self.sample = nn.Conv2d(1, 2, 1, stride=2)
        self.conv = nn.Conv2d(1, 2, 3, stride=2, padding=1)
        self.out = nn.Identity()

    def forward(self, x):
        gate = torch.sigmoid(F.adaptive_avg_pool2d(self.sample(x), 1))
        return self.out(self.conv(x) * gate)


def test_a_gate_that_misses_part_of_the_input_is_refused():
    with pytest.raises(ValueError, match="leave part of the input out"):
        receptive_field(_PartialGate().eval(), "out", (1, 10, 10), method="exact")
    assert receptive_field(_PartialGate().eval(), "out", (1, 11, 11), method="exact").whole_input


class _SpatialCat(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1)
        self.out = nn.Identity()

    def forward(self, x):
        return self.out(torch.cat([self.conv(x), x], dim=3))


def test_concatenation_along_space_is_refused():
    with pytest.raises(ValueError, match="another axis than their channels"):
        receptive_field(_SpatialCat().eval(), "out", (1, 8, 8), method="exact")


# ----------------------------------------------------------------------------------------------
# the shape pass


class _PlainTensor(nn.Module):
    """A tensor kept as a plain attribute (neither parameter nor buffer) and a forward hook."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)
        self.scale = torch.full((1, 2, 1, 1), 2.0)
        self.out = nn.Identity()

    def forward(self, x):
        return self.out(self.conv(x) * self.scale + F.avg_pool2d(x, 3, 1))


def test_models_the_meta_copy_cannot_run_and_user_hooks():
    model = _PlainTensor().eval()
    seen = []
    model.out.register_forward_hook(lambda module, args, output: seen.append(output.device.type))
    field = receptive_field(model, "out", (1, 10, 10), method="exact")
    assert (field.size, field.stride, field.start, field.map_shape) == ((3, 3), (1, 1), (0, 0), (8, 8))
    assert "meta" not in seen  # the user's hooks never see the shape pass's data-free tensors
    residual = torchvision.models.resnet18(weights=None).eval()
    residual.layer1.register_forward_hook(lambda module, args, output: seen.append(output.device.type))
    receptive_field(residual, "layer1", (3, 64, 64), method="exact")
    assert "meta" not in seen


def test_tensorflow_same_padding_is_exact_and_equals_measured():
    timm = pytest.importorskip("timm", reason="timm is not installed: pip install timm")
    torch.manual_seed(0)
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()  # Conv2dSame: size-dependent pad
    for layer in ("conv_stem", "blocks.1"):
        exact = receptive_field(model, layer, (3, 96, 96), method="exact")
        measured = receptive_field(model, layer, (3, 96, 96), method="gradient")
        assert (exact.size, exact.stride, exact.start) == (measured.size, measured.stride, measured.start)
    assert receptive_field(model, "blocks.1", (3, 96, 96)).start == (-6, -6)  # TF puts the odd pad pixel last


def test_a_field_that_holds_the_whole_input_at_every_position_is_the_whole_input():
    net = nn.Sequential(nn.Conv2d(1, 2, 9, padding=4), nn.Conv2d(2, 2, 9, padding=4), nn.Conv2d(2, 2, 9, padding=4))
    exact = receptive_field(net.eval(), "2", (1, 12, 12), method="exact")
    measured = receptive_field(net, "2", (1, 12, 12), method="gradient")
    assert exact.whole_input and measured.whole_input
    assert exact.box(5, 5) == measured.box(5, 5) == (0, 0, 12, 12)


def test_top_patches_refuses_crops_beyond_the_memory_limit():
    import analyses
    import probe

    net = nn.Sequential(nn.Conv2d(3, 8, 5), nn.ReLU()).eval()
    data = torch.randn(12, 3, 32, 32)
    rec = probe.record(net, data, ["1"], reducers={"topk": lambda: probe.TopK(4)}, device="cpu", progress=False)
    with analyses.set_memory_limit("10KB"), pytest.raises(MemoryError, match="select"):
        analyses.top_patches(net, data, rec.extras["topk"]["1"])
    assert analyses.top_patches(net, data, rec.extras["topk"]["1"]).patches.shape == (8, 4, 3, 5, 5)
