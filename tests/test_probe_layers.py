"""Layer selection, `probe layers` / `probe record`, the Layers report section and the layers analysis."""

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

import probe
import zoo
from probe.cli import main
from probe.study import StudyContext
from probe.study._layers_step import layers_analysis


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 5, 3))
        self.head = nn.Linear(5 * 6 * 6, 3)
        self.config = {"name": "tiny", "input_shape": [1, 8, 8]}

    def forward(self, x):
        return self.head(self.features(x).flatten(1))

    def recordable_layers(self):
        return ["features.1", "head"]


def test_resolve_layers_by_name_list_glob_and_predicate():
    net = Net()
    assert probe.resolve_layers(net, "head") == ["head"]
    assert probe.resolve_layers(net, ["head", "features.0", "head"]) == ["head", "features.0"]
    assert probe.resolve_layers(net, "features.*") == ["features.0", "features.1", "features.2"]
    assert probe.resolve_layers(net, lambda n, m: isinstance(m, nn.Conv2d)) == ["features.0", "features.2"]
    with pytest.raises(KeyError, match=r"'features.1'.*probe layers"):
        probe.resolve_layers(net, "features.l")
    with pytest.raises(KeyError, match="probe layers"):
        probe.resolve_layers(net, "decoder*")
    with pytest.raises(ValueError, match="no layers"):
        probe.resolve_layers(net, [])
    with pytest.raises(ValueError, match="predicate"):
        probe.resolve_layers(net, lambda n, m: False)


def test_describe_layers_shapes_and_parameters():
    net = Net().train()
    table = probe.describe_layers(net, torch.zeros(2, 1, 8, 8), ["features", "features.2", "head"])
    assert table["output_shape"].tolist() == ["5x6x6", "5x6x6", "3"]
    assert table["n_params"].tolist() == [
        sum(p.numel() for p in net.features.parameters()), 4 * 5 * 9 + 5, 180 * 3 + 3]
    assert net.training and all(not m._forward_hooks for m in net.modules())
    default = probe.describe_layers(net, torch.zeros(2, 1, 8, 8))
    assert default["layer"].tolist() == ["features.1", "head"]


@pytest.fixture
def fake_zoo(monkeypatch, tmp_path):
    """zoo.create_model / zoo.load / zoo.load_dataset stand-ins, so the commands are tested on their own."""
    torch.manual_seed(0)
    net = Net().eval()
    data = TensorDataset(torch.randn(30, 1, 8, 8), torch.arange(30) % 3)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    monkeypatch.setattr(zoo, "create_model", lambda name, **kw: net if name == "tiny" else (_ for _ in ()).throw(KeyError(name)))
    monkeypatch.setattr(zoo, "load", lambda path, device="cpu": net)
    monkeypatch.setattr(zoo, "load_dataset", lambda name, split="train", **kw: data)
    return net, data, run_dir


def test_probe_layers_command(fake_zoo, capsys):
    assert main(["layers", "tiny"]) == 0
    printed = capsys.readouterr().out
    assert "features.1" in printed and "4x8x8" in printed and "head" in printed
    assert main(["layers", "tiny", "--all"]) == 0
    assert "features.2" in capsys.readouterr().out
    assert main(["layers", "./no/such/run"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_probe_record_command(fake_zoo, tmp_path, capsys):
    net, data, run_dir = fake_zoo
    out = tmp_path / "rec"
    assert main(["record", str(run_dir), "--out", str(out), "--reduce", "features.1=flatten", "--batch-size", "8",
                 "--no-progress", "--device", "cpu"]) == 0
    rec = probe.Recording.load(out)
    assert rec.layers == ["features.1", "head"] and rec["features.1"].shape == (30, 256)
    direct = probe.record(net, data, ["features.1", "head"], reduce={"features.1": "flatten"}, device="cpu",
                          progress=False)
    np.testing.assert_array_equal(rec["features.1"], direct["features.1"])
    assert "recorded 30 stimuli" in capsys.readouterr().out
    assert main(["record", str(run_dir), "--out", str(out), "--layers", "head", "--no-progress"]) == 2
    assert "overwrite" in capsys.readouterr().err


def test_layers_section_renders_statistics():
    from reports._layers_section import layers_section

    activations = np.maximum(np.random.default_rng(0).standard_normal((50, 4)), 0).astype(np.float32)
    activations[:, 3] = 0
    rec = probe.Recording({"relu<1>": activations, "fc": np.ones((50, 2), np.float32)}, shapes={"relu<1>": (4,)})
    (section,) = layers_section({"model & co": rec})
    html = str(section.body)
    assert "relu&lt;1&gt;" in html and "model &amp; co" in html and "<script" not in html
    assert html.count("data:image/png;base64,") == 2  # one histogram per layer
    assert f"{100 * np.mean(activations == 0):.1f}%" in html  # fraction of zeros from Recording.to_frame
    assert f"{activations.max():.3g}" in html
    assert "2 recorded layers" in section.summary
    with pytest.raises(ValueError, match="at least one"):
        layers_section({})


def test_layers_analysis_tables_every_recorded_layer_of_every_model(tmp_path):
    torch.manual_seed(0)
    ctx = StudyContext(out=tmp_path, progress=False)
    with pytest.raises(KeyError, match="needs recordings"):
        layers_analysis(ctx)
    data = TensorDataset(torch.randn(40, 1, 8, 8), torch.arange(40) % 4)
    small = nn.Sequential(nn.Flatten(), nn.Linear(64, 3), nn.ReLU())
    ctx.recordings = {
        "net": probe.record(Net().eval(), data, ["features.1", "features.2", "head"], device="cpu", progress=False),
        "small": probe.record(small, data, ["2"], device="cpu", progress=False),
    }
    (section,) = layers_analysis(ctx)
    table = ctx.tables["layers"]
    assert list(zip(table["model"], table["layer"])) == [("net", "features.1"), ("net", "features.2"),
                                                        ("net", "head"), ("small", "2")]
    assert table.columns[0] == "model"
    for name, recording in ctx.recordings.items():
        rows = table[table["model"] == name].drop(columns="model").reset_index(drop=True)
        pd.testing.assert_frame_equal(rows, recording.to_frame()[list(rows.columns)])
    # independently: units and the fraction of zeros of a layer
    head = table.set_index(["model", "layer"]).loc[("small", "2")]
    assert head["n_units"] == 3
    assert head["fraction_zero"] == pytest.approx(np.mean(ctx.recordings["small"]["2"] == 0))
    assert "small" in str(section.body) and "4 recorded layers" in section.summary


def test_histogram_image_bars_follow_numpy_histogram():
    from reports._layers_section import histogram_image

    values = np.random.default_rng(1).standard_normal(1000)
    image = histogram_image(values, bins=10, height=20, bar_width=2)
    counts = np.histogram(values, bins=10)[0]
    assert image.shape == (20, 20, 3)
    drawn = (image[:, ::2, 0] < 1).sum(axis=0)  # coloured pixels per bar
    np.testing.assert_array_equal(drawn, np.ceil(counts / counts.max() * 20).astype(int))
    assert histogram_image(np.array([np.nan])).max() == 1.0  # nothing to draw: a blank image
