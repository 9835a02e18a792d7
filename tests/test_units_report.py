"""The Units report section, its PNG grids, the ``probe patches`` command and the units analysis."""


import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch import nn
from torch.utils.data import TensorDataset

import zoo
from probe.study import record_top_patches
import probe
from probe.cli import main
from probe.study import StudyContext
from probe.study._units_step import units_analysis
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
    # the ReLU layer's smallest responses tie at zero: its bottom grid is left out (and the card says so)
    relu_bottom = results["1"].topk.bottom_values
    assert np.all(relu_bottom == 0)
    assert html.count("data:image/png;base64,") == 2 + 1 + 1  # two top grids, the linear layer's bottom, histograms
    assert "Least-activating stimuli not shown" in html
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


def _two_groups(tmp_path, n=12):
    """A grey and an RGB cnn, each recorded on its own n stimuli (4 classes)."""
    torch.manual_seed(0)
    ctx = StudyContext(out=tmp_path, progress=False)
    for name, channels, words in [("grey", 1, "digits (test)"), ("rgb", 3, "photos (test)")]:
        model = zoo.create_model("cnn", input_shape=[channels, 8, 8], width=4, hidden=8).eval()
        stimuli = TensorDataset(torch.rand(n, channels, 8, 8), torch.arange(n) % 4)
        ctx.models[name], ctx.stimuli[name], ctx.data_of[name] = model, stimuli, words
        ctx.recordings[name] = probe.record(model, stimuli, ["features.relu1", "features.relu3", "relu_fc1"],
                                            device="cpu", progress=False)
    return ctx


def _maps(model, stimuli, layer):
    """A plain forward pass's output of ``layer``: array of shape (n_stimuli, C, H, W)."""
    outputs = []
    handle = dict(model.named_modules())[layer].register_forward_hook(lambda m, i, o: outputs.append(o))
    try:
        with torch.no_grad():
            model(stimuli.tensors[0])
    finally:
        handle.remove()
    return outputs[0].numpy()


def _top(table, model, layer):
    rows = table[(table["model"] == model) & (table["layer"] == layer) & (table["kind"] == "top")]
    return {unit: group.sort_values("rank") for unit, group in rows.groupby("unit")}


def test_units_analysis_one_section_per_group_of_stimuli(tmp_path):
    ctx = _two_groups(tmp_path)
    sections = units_analysis(ctx, k=3, n_units=2)
    assert [s.title for s in sections] == ["Units · digits (test)", "Units · photos (test)"]
    assert "Stimuli: digits (test)." in str(sections[0].body) and "Stimuli: photos (test)." in str(sections[1].body)
    # "auto": map layers only (relu_fc1 is flat)
    assert list(ctx.results["units"]) == ["grey · features.relu1", "grey · features.relu3", "rgb · features.relu1",
                                          "rgb · features.relu3"]
    assert len(list((tmp_path / "units").glob("grey_*_top.png"))) == 2
    assert len(list((tmp_path / "units-2").glob("rgb_*_top.png"))) == 2
    table = ctx.tables["units"]
    assert list(table.columns[:2]) == ["model", "layer"] and set(table["model"]) == {"grey", "rgb"}
    assert (table.groupby(["model", "layer"])["unit"].nunique() == 2).all()  # n_units shown per layer
    # stretch "auto": for the one-channel stimuli only; True / False for both
    stretched = "contrast is stretched"
    assert stretched in str(sections[0].body) and stretched not in str(sections[1].body)
    one_layer = dict(k=3, n_units=1, layers=["features.relu1"])
    assert all(stretched in str(s.body) for s in units_analysis(ctx, stretch=True, **one_layer))
    assert not any(stretched in str(s.body) for s in units_analysis(ctx, stretch=False, **one_layer))
    # one group: no words in the title
    del ctx.recordings["rgb"]
    (section,) = units_analysis(ctx, k=3, n_units=2)
    assert section.title == "Units"
    # a flat layer named: its units' crops are the whole stimuli
    units_analysis(ctx, k=3, n_units=2, layers=["grey/relu_fc1", "rgb/features.relu1"])
    assert list(ctx.results["units"]) == ["grey · relu_fc1"]
    assert (ctx.tables["units"][["top", "left", "bottom", "right"]].to_numpy() == [0, 0, 8, 8]).all()
    with pytest.raises(ValueError, match="none of the units analysis's layers"):
        units_analysis(ctx, layers=["features.relu9"])


def test_units_analysis_distinct_stimuli_auto_at_four_k(tmp_path):
    ctx = _two_groups(tmp_path, n=12)
    del ctx.recordings["rgb"]
    model, stimuli = ctx.models["grey"], ctx.stimuli["grey"]
    maps = _maps(model, stimuli, "features.relu1")  # (12, 4, 8, 8)
    flat = maps.reshape(*maps.shape[:2], -1)

    units_analysis(ctx, k=3, n_units=4, layers=["features.relu1"])  # 12 >= 4 * 3 stimuli: distinct
    for unit, rows in _top(ctx.tables["units"], "grey", "features.relu1").items():
        best = flat[:, unit].max(axis=1)  # each stimulus's strongest response anywhere
        expected = np.argsort(-best, kind="stable")[:3]
        np.testing.assert_array_equal(rows["stimulus"], expected)
        np.testing.assert_allclose(rows["value"], best[expected], rtol=1e-5)

    units_analysis(ctx, k=4, n_units=4, layers=["features.relu1"])  # 12 < 4 * 4: the strongest (stimulus, position)s
    repeated = False
    for unit, rows in _top(ctx.tables["units"], "grey", "features.relu1").items():
        values = flat[:, unit].ravel()
        order = np.argsort(-values, kind="stable")[:4]
        np.testing.assert_allclose(rows["value"], values[order], rtol=1e-5)
        np.testing.assert_array_equal(rows["stimulus"], order // flat.shape[2])
        repeated |= rows["stimulus"].nunique() < 4
    assert repeated  # a stimulus may hold several of a unit's top entries

    units_analysis(ctx, k=4, n_units=4, layers=["features.relu1"], distinct_stimuli=True)
    assert all(rows["stimulus"].nunique() == 4 for rows in _top(ctx.tables["units"], "grey", "features.relu1").values())


def test_tied_bottom_responses_are_not_drawn_and_the_card_says_why():
    import dataclasses

    from reports import units_section

    torch.manual_seed(0)
    model = zoo.create_model("cnn", input_shape=[1, 8, 8], width=4, hidden=8).eval()
    stimuli = torch.utils.data.TensorDataset(torch.randn(40, 1, 8, 8), torch.arange(40) % 4)
    relu = record_top_patches(model, stimuli, "features.relu1", k=3, bottom_k=2, progress=False)
    bottom = relu.topk.bottom_values

    def with_bottom(values):
        return dataclasses.replace(relu, topk=dataclasses.replace(relu.topk, bottom_values=values))

    tied, varied = with_bottom(np.zeros_like(bottom)), with_bottom(np.sort(np.random.default_rng(0).random(bottom.shape)))
    body = str(units_section({"tied": tied, "varied": varied}, n_units=2).body)
    assert body.count("bottom patches of") == 1  # only the card whose bottom responses differ draws them
    assert "Least-activating stimuli not shown" in body


def test_grids_wider_than_a_card_are_shrunk_in_the_page_only():
    from reports._units_section import _MAX_SHOWN_WIDTH, _fit

    grid = np.random.default_rng(0).random((300, 3 * _MAX_SHOWN_WIDTH, 3))
    shown = _fit(grid)
    assert shown.shape == (100, _MAX_SHOWN_WIDTH, 3)
    # area averaging: each shown pixel is the mean of a 3x3 block (up to 8-bit rounding)
    np.testing.assert_allclose(shown[0, 0], grid[:3, :3].mean(axis=(0, 1)), atol=2 / 255)
    small = grid[:10, :20]
    assert _fit(small) is small
