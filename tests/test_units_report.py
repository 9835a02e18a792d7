"""The Units report section, its PNG grids, the ``probe patches`` command and the demo step."""


import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch import nn
from torch.utils.data import TensorDataset

import zoo
from probe.study import record_top_patches
from probe.cli import main
from probe.study import DemoContext
from probe.study._units_step import UNIT_PANELS, units_step
from reports import Report, Section
from reports import save_unit_grids, units_section


@pytest.fixture(scope="module")
def results():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 6, 3), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 8 * 8, 4)).eval()
    images = torch.rand(80, 1, 10, 10, generator=torch.Generator().manual_seed(0))
    data = TensorDataset(images, torch.arange(80) % 4)
    return record_top_patches(net, data, ["1", "3"], k=5, bottom_k=2, device="cpu", progress=False)


def test_save_unit_grids_writes_the_grid_pngs(results, tmp_path):
    written = save_unit_grids(results["1"], tmp_path, units=[0, 2, 4], name="conv")
    assert sorted(written) == ["bottom", "top"] and written["top"].name == "conv_top.png"
    top = np.asarray(Image.open(written["top"]))
    grid = results["1"].grid([0, 2, 4], "top")
    scale = top.shape[0] // grid.shape[0]
    assert top.shape[:2] == (grid.shape[0] * scale, grid.shape[1] * scale)
    np.testing.assert_array_equal(top[::scale, ::scale], np.round(np.clip(grid, 0, 1) * 255).astype(np.uint8))
    assert not list(tmp_path.glob(".*.tmp"))  # atomic: no temporary file left behind


def test_units_section_renders_without_javascript(results, tmp_path):
    section = units_section({"net · conv": results["1"], "net · fc": results["3"]}, n_units=3, png_dir=tmp_path)
    assert isinstance(section, Section)
    html = Report("t").add(section).render()
    assert html.count("data:image/png;base64,") == 2 * 2 + 1  # top and bottom per card, one histogram figure
    assert "<script" not in html.lower() and "Receptive field 3×3" in html
    assert {p.name for p in tmp_path.glob("*.png")} >= {"net_conv_top.png", "net_fc_bottom.png"}
    with pytest.raises(ValueError, match="at least one"):
        units_section({})


def _untrained_run(folder):
    """A run folder as probe train writes it (config.json + model.safetensors), without the training."""
    torch.manual_seed(0)
    model = zoo.create_model("cnn", width=4, hidden=8)
    run = zoo.RunDir.create(folder)
    run.write_config({"model": {**model.config, "name": "cnn"}, "dataset": {"name": "digits", "options": {}}})
    run.save_final(model, metrics={})
    return run.path


def test_probe_patches_command(tmp_path, capsys):
    run_dir = _untrained_run(tmp_path / "run")
    out = tmp_path / "patches"
    status = main(["patches", str(run_dir), "--layer", "features.relu2", "--k", "4", "--bottom-k", "1",
                   "--n-units", "3", "--out", str(out), "--device", "cpu", "--no-progress"])  # fmt: skip
    assert status == 0
    frame = pd.read_csv(out / "patches.csv")
    assert len(frame) == 8 * (4 + 1) and set(frame["kind"]) == {"top", "bottom"}
    assert (out / "features.relu2_top.png").is_file() and (out / "features.relu2_bottom.png").is_file()
    capsys.readouterr()
    again = ["patches", str(run_dir), "--layer", "features.relu2", "--k", "4", "--n-units", "3", "--out", str(out),
             "--device", "cpu", "--no-progress"]  # fmt: skip
    (out / "notes.txt").write_text("mine")
    assert main(again) == 2 and "pass --force to overwrite" in capsys.readouterr().err
    assert len(pd.read_csv(out / "patches.csv")) == len(frame)  # untouched
    assert main([*again, "--force"]) == 0
    assert len(pd.read_csv(out / "patches.csv")) == 8 * 4 and (out / "notes.txt").read_text() == "mine"
    assert main(["patches", str(run_dir), "--layer", "features.relu", "--out", str(out), "--force"]) == 2
    assert "unknown layer 'features.relu'; did you mean" in capsys.readouterr().err
    assert main(["patches", str(tmp_path / "missing"), "--layer", "x", "--out", str(out)]) == 2


def test_units_step_quick(tmp_path):
    ctx = DemoContext(out=tmp_path, quick=True)
    torch.manual_seed(0)
    ctx.models["cnn"] = zoo.create_model("cnn", input_shape=[1, 8, 8], width=4, hidden=8).eval()
    ctx.models["ae-conv-patches"] = zoo.create_model("ae-conv", input_shape=[1, 16, 16], width=4, code_dim=8).eval()
    sections = units_step(ctx)
    assert len(sections) == 1 and sections[0].title == "Units"
    assert set(ctx.results["top_patches"]) == {title for title, *_ in UNIT_PANELS}
    assert len(list((tmp_path / "units").glob("*_top.png"))) == len(UNIT_PANELS)
