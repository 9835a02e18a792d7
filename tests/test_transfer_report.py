"""The transfer report section and demo step."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analyses import label_efficiency, probe_layers
from probe import Recording
from reports import Report
from reports._transfer_section import transfer_section


class _Sweep:
    def to_frame(self):
        return pd.DataFrame({"mask_ratio": [0.25, 0.5, 0.75, 0.9], "probe_accuracy": [0.5, 0.6, 0.7, 0.65],
                             "knn_accuracy": [0.4, 0.5, 0.6, 0.55]})


@pytest.fixture(scope="module")
def results():
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


def test_transfer_demo_step_quick(tmp_path: Path):
    import torch

    import zoo
    from probe.study import DemoContext
    from probe.study._transfer_step import transfer_step

    torch.manual_seed(0)
    ctx = DemoContext(out=tmp_path, quick=True)
    ctx.models["cnn"] = zoo.create_model("cnn", input_shape=[1, 8, 8], n_classes=10).eval()
    sections = transfer_step(ctx)
    assert len(sections) == 1
    results = ctx.results["transfer"]
    assert set(results["label_efficiency"].to_frame()["features"]) == {"raw pixels"}
    assert list(results["layers"].to_frame()["model"].unique()) == ["cnn"]
    assert results["mask_ratio"] is None  # quick mode skips the sweep
