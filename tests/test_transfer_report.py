"""The transfer report section and the transfer analysis."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import TensorDataset

import probe
import zoo
from analyses import label_efficiency, probe_layers
from probe import Recording
from probe.study import StudyContext
from probe.study._transfer_step import PIXELS, transfer_analysis
from reports import Report
from reports._transfer_section import transfer_section


class _Sweep:
    def to_frame(self):
        return pd.DataFrame({"mask_ratio": [0.25, 0.5, 0.75, 0.9], "probe_accuracy": [0.5, 0.6, 0.7, 0.65],
                             "knn_accuracy": [0.4, 0.5, 0.6, 0.55]})


@pytest.fixture(scope="module")
def one_thread():
    """Tiny probes: on a busy machine, two threads fighting over 32 x 64 matrices make them ten times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def results(one_thread):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 120)
    layers = {"a": rng.standard_normal((120, 4)), "b": rng.standard_normal((120, 4)) + np.eye(3, 4)[labels] * 2}
    train = Recording({k: v[:80] for k, v in layers.items()}, labels=labels[:80])
    test = Recording({k: v[80:] for k, v in layers.items()}, labels=labels[80:])
    transfer = probe_layers({"m1": (train, test), "m<2>": (train, test)}, C=1.0, progress=False, device="cpu")
    efficiency = label_efficiency({"raw pixels": ((train, "a"), (test, "a")), "enc": ((train, "b"), (test, "b"))},
                                  labels_per_class=(1, 5, None), seeds=(0, 1), C=1.0, progress=False, device="cpu")
    return transfer, efficiency


def test_transfer_section_renders_every_part(results):
    transfer, efficiency = results
    section = transfer_section(transfer, efficiency, _Sweep(), notes="trained <quickly>")
    html = Report("r").add(section).render()
    assert html.count("data:image/png;base64,") == 4
    assert "m&lt;2&gt;" in html and "trained &lt;quickly&gt;" in html
    assert "<script" not in html.lower()
    assert section.summary.startswith("best layer")
    only_curve = transfer_section(label_efficiency=efficiency)
    assert only_curve.body.count("data:image/png;base64,") == 1
    with pytest.raises(ValueError, match="at least one"):
        transfer_section()


def _study(tmp_path, groups):
    """cnns recorded on their group's stimuli: {words: [(name, channels)]}, each group 40 stimuli of 4 classes
    (the class is in the pixels' brightness)."""
    torch.manual_seed(0)
    ctx = StudyContext(out=tmp_path, progress=False)
    for words, models in groups.items():
        channels = models[0][1]
        labels = torch.arange(40) % 4
        stimuli = TensorDataset(torch.rand(40, channels, 8, 8) + labels[:, None, None, None] * 0.5, labels)
        for name, _ in models:
            model = zoo.create_model("cnn", input_shape=[channels, 8, 8], width=4, hidden=8).eval()
            ctx.models[name], ctx.stimuli[name], ctx.data_of[name] = model, stimuli, words
            ctx.recordings[name] = probe.record(model, stimuli, ["relu_fc1", "fc2"], device="cpu", progress=False)
    return ctx


OPTIONS = dict(labels_per_class=[5], test_fraction=0.25, max_iter=50)


def _in_order(column):
    return list(dict.fromkeys(column))


def test_transfer_analysis_models_and_features(tmp_path: Path, one_thread):
    ctx = _study(tmp_path, {"digits (test)": [("a", 1), ("b", 1)]})
    (section,) = transfer_analysis(ctx, **OPTIONS)
    assert section.title == "Transfer: linear probes on frozen features"
    assert "Probes trained on 32 stimuli and scored on 8" in str(section.body)  # 3 in 4 of each class's 10
    layers = ctx.tables["transfer-layers"]
    assert _in_order(layers["model"]) == [PIXELS, "a", "b"] and len(layers) == 1 + 2 * 2
    assert (layers["stimuli"] == "digits (test)").all()
    curves = ctx.tables["transfer-label-efficiency"]
    assert _in_order(curves["features"]) == [PIXELS, "a · fc2", "b · fc2"]  # each model's last layer

    # models= limits the layer probes; a named feature picks the curve's layer, and its model joins the curves
    transfer_analysis(ctx, models=["b"], features=["a/relu_fc1"], **OPTIONS)
    layers = ctx.tables["transfer-layers"]
    assert _in_order(layers["model"]) == [PIXELS, "b"] and list(layers["layer"]) == ["pixels", "relu_fc1", "fc2"]
    assert _in_order(ctx.tables["transfer-label-efficiency"]["features"]) == [PIXELS, "a · relu_fc1"]
    with pytest.raises(KeyError, match="'a/conv9' is not a recorded layer of 'a'"):
        transfer_analysis(ctx, features=["a/conv9"], **OPTIONS)


def test_transfer_analysis_one_section_per_group(tmp_path: Path, one_thread):
    ctx = _study(tmp_path, {"digits (test)": [("grey", 1)], "photos (test)": [("rgb", 3), ("rgb2", 3)]})
    sections = transfer_analysis(ctx, models=["grey", "rgb"], **OPTIONS)
    assert [s.title for s in sections] == ["Transfer: linear probes on frozen features · digits (test)",
                                           "Transfer: linear probes on frozen features · photos (test)"]
    by_stimuli = ctx.results["transfer_by_stimuli"]
    assert list(by_stimuli) == ["digits (test)", "photos (test)"] and ctx.results["transfer"] is by_stimuli["digits (test)"]
    layers = ctx.tables["transfer-layers"]
    assert {w: _in_order(layers[layers["stimuli"] == w]["model"]) for w in by_stimuli} == {
        "digits (test)": [PIXELS, "grey"], "photos (test)": [PIXELS, "rgb"]}
    # each group's raw pixels are its own stimuli's: 1 x 8 x 8 and 3 x 8 x 8 values
    pixel_rows = layers[layers["model"] == PIXELS].set_index("stimuli")
    assert pixel_rows.loc["digits (test)", "n_units"] == 64 and pixel_rows.loc["photos (test)", "n_units"] == 192
    curves = ctx.tables["transfer-label-efficiency"]
    assert {w: _in_order(curves[curves["stimuli"] == w]["features"]) for w in by_stimuli} == {
        "digits (test)": [PIXELS, "grey · fc2"], "photos (test)": [PIXELS, "rgb · fc2"]}
    assert (curves[curves["features"] == PIXELS]["accuracy"] > 0.9).all()  # the class is in the brightness
