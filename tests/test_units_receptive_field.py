"""analyses.receptive_field: exact where possible, measured otherwise, and truly the field."""

import pytest
import torch
import torch.nn.functional as F
from _fakes import DetachedConv
from torch import nn

from analyses import ReceptiveField, receptive_field


def _chain():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 5, padding=2),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 4, 3, stride=2, padding=1, dilation=2),
        nn.ReLU(),
        nn.AvgPool2d(3, stride=1, padding=1),
        nn.Conv2d(4, 3, 3),
    ).eval()


class _Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(1, 4, 3, padding=1)
        self.b = nn.Conv2d(4, 4, 3, stride=2, padding=1)
        self.skip = nn.Conv2d(4, 4, 1, stride=2)
        self.out = nn.Identity()

    def forward(self, x):
        h = F.relu(self.a(x))
        return self.out(F.relu(self.b(h)) + self.skip(h))


@pytest.mark.parametrize("layer", ["3", "6", "7"])
def test_exact_and_gradient_agree_on_a_chain(layer):
    net = _chain()
    exact = receptive_field(net, layer, (1, 36, 36), method="exact")
    measured = receptive_field(net, layer, (1, 36, 36), method="gradient", n_draws=4)
    assert exact.method == "exact" and measured.method == "gradient"
    assert (exact.size, exact.stride, exact.start, exact.map_shape) == (
        measured.size,
        measured.stride,
        measured.start,
        measured.map_shape,
    )


def test_exact_values_match_the_textbook_recursion():
    net = _chain()
    # conv5 p2: 5, start -2 | pool2: 6, jump 2 | conv3 s2 d2 p1: 6 + 2*2*2 = 14, start -2 - 2 = -4, jump 4
    field = receptive_field(net, "4", (1, 24, 24))
    assert (field.size, field.stride, field.start) == ((14, 14), (4, 4), (-4, -4))
    assert field.box(2, 1) == (-4 + 8, -4 + 4, -4 + 8 + 14, -4 + 4 + 14)
    assert field.boxes([2], [1]).tolist() == [list(field.box(2, 1))]
    # AlexNet conv1: 11x11, stride 4, padding 2
    alex = nn.Sequential(nn.Conv2d(3, 8, 11, stride=4, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2))
    assert receptive_field(alex, "2", (3, 67, 67)).size == (19, 19)  # 11 + 2 * 4
    assert list(receptive_field(alex, "2", (3, 67, 67)).to_frame()["stride"]) == [8, 8]


def test_conv1d_fields():
    net = nn.Sequential(nn.Conv1d(2, 3, 5, stride=2), nn.ReLU(), nn.Conv1d(3, 3, 3, dilation=2))
    exact = receptive_field(net, "2", (2, 40), method="exact")
    measured = receptive_field(net, "2", (2, 40), method="gradient")
    assert exact.size == measured.size == (1, 13) and exact.stride == measured.stride == (1, 2)


def _unit_value(model, layer, image, channel, y, x):
    captured = {}
    handle = dict(model.named_modules())[layer].register_forward_hook(lambda m, i, o: captured.update(o=o))
    with torch.no_grad():
        model(image[None])
    handle.remove()
    return captured["o"][0, channel, y, x].item()


@pytest.mark.parametrize("model_factory, layer", [(_chain, "7"), (_Residual, "out")])
def test_crop_is_the_true_receptive_field(model_factory, layer):
    model = model_factory().eval()
    field = receptive_field(model, layer, (1, 24, 24))
    assert field.method == "exact"  # a residual's merge is the union of its branches' fields
    generator = torch.Generator().manual_seed(3)
    image = torch.randn(1, 24, 24, generator=generator)
    if model_factory is _chain:  # this field (30 px) is wider than the image: the crop runs past the border
        assert field.box(0, 0)[0] < 0 and field.box(0, 0)[2] > 0
    for y, x in [(0, 0), (field.map_shape[0] // 2, field.map_shape[1] - 1)]:
        top, left, bottom, right = field.box(y, x)
        inside = torch.zeros(24, 24, dtype=torch.bool)
        inside[max(top, 0) : max(bottom, 0), max(left, 0) : max(right, 0)] = True
        reference = _unit_value(model, layer, image, 1, y, x)
        outside_changed = torch.where(inside, image, image + 5 * torch.randn(image.shape, generator=generator))
        assert _unit_value(model, layer, outside_changed, 1, y, x) == pytest.approx(reference, abs=1e-5)
        inside_changed = torch.where(inside, image + 5 * torch.randn(image.shape, generator=generator), image)
        assert _unit_value(model, layer, inside_changed, 1, y, x) != pytest.approx(reference, abs=1e-3)


def test_global_pooling_sees_the_whole_input():
    net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
    field = receptive_field(net, "2", (1, 8, 8))
    assert field.method == "exact"
    assert field.box(0, 0) == (0, 0, 8, 8)
    assert receptive_field(net, "2", (1, 8, 8), method="gradient").box(0, 0) == (0, 0, 8, 8)


def test_errors():
    net = _chain()
    with pytest.raises(KeyError, match="unknown layer '8'.*probe layers"):
        receptive_field(net, "8", (1, 24, 24))
    flat = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2 * 6 * 6, 3))
    with pytest.raises(ValueError, match="needs a map"):
        receptive_field(flat, "2", (1, 8, 8))

    with pytest.raises(ValueError, match="neither computed nor measured"):
        receptive_field(DetachedConv(), "conv", (1, 8, 8))
    with pytest.raises(ValueError, match="clipped by the image border"):  # 30 px field, 24 px image
        receptive_field(net, "7", (1, 24, 24), method="gradient")
    assert isinstance(receptive_field(_Residual(), "a", (1, 16, 16), method="exact"), ReceptiveField)
