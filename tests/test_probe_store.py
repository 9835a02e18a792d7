"""On-disk recordings: lazy reading, manifest, interrupted passes, resume, conflicts; Recording API."""

import json

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

import probe


class FailingNet(nn.Module):
    """Small conv net that can be told to fail at a given batch (not part of its weights)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3, padding=1)
        self.fc = nn.Linear(3 * 8 * 8, 4)
        self.fail_at = None
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        if self.fail_at is not None and self.calls == self.fail_at:
            raise KeyboardInterrupt  # a killed process
        return self.fc(torch.relu(self.conv(x)).flatten(1))


@pytest.fixture
def net():
    torch.manual_seed(0)
    return FailingNet().eval()


@pytest.fixture
def data():
    generator = torch.Generator().manual_seed(2)
    return TensorDataset(torch.randn(50, 1, 8, 8, generator=generator), torch.arange(50) % 3)


def test_disk_recording_equals_memory_and_reads_lazily(net, data, tmp_path):
    memory = probe.record(net, data, ["conv", "fc"], reduce={"conv": "flatten"}, batch_size=16, device="cpu",
                          progress=False)
    disk = probe.record(net, data, ["conv", "fc"], reduce={"conv": "flatten"}, batch_size=16, device="cpu",
                        out=tmp_path / "rec", progress=False)
    assert isinstance(disk["conv"], np.memmap)
    for layer in ["conv", "fc"]:
        np.testing.assert_array_equal(disk[layer], memory[layer])
    np.testing.assert_array_equal(disk.labels, np.arange(50) % 3)
    manifest = json.loads((tmp_path / "rec" / "manifest.json").read_text())
    assert manifest["complete"] and manifest["n_done"] == 50 and manifest["n_stimuli"] == 50
    assert manifest["identity"]["model"]["weights_sha256"] == probe._record.model_fingerprint(net)["weights_sha256"]
    assert manifest["identity"]["layers"] == ["conv", "fc"]
    assert manifest["layers"]["conv"]["shape"] == [3, 8, 8] and manifest["layers"]["conv"]["n_units"] == 192
    assert manifest["identity"]["dataset"]["type"] == "TensorDataset"
    loaded = probe.Recording.load(tmp_path / "rec")
    np.testing.assert_array_equal(loaded["fc"], memory["fc"])
    assert loaded.shapes == memory.shapes and loaded.units("conv").equals(memory.units("conv"))


def test_interrupted_recording_is_refused_then_resumed(net, data, tmp_path):
    out = tmp_path / "rec"
    net.fail_at = 3
    with pytest.raises(KeyboardInterrupt):
        probe.record(net, data, ["conv", "fc"], batch_size=10, device="cpu", out=out, flush_every=0, progress=False)
    manifest = json.loads((out / "manifest.json").read_text())
    assert not manifest["complete"] and manifest["n_done"] == 20
    with pytest.raises(ValueError, match="incomplete.*resume=True"):
        probe.Recording.load(out)
    with pytest.raises(FileExistsError, match="incomplete.*resume=True"):
        probe.record(net, data, ["conv", "fc"], batch_size=10, device="cpu", out=out, progress=False)
    net.fail_at, net.calls = None, 0
    resumed = probe.record(net, data, ["conv", "fc"], batch_size=10, device="cpu", out=out, resume=True,
                           progress=False)
    assert net.calls == 3  # only the 30 stimuli that were not flushed
    full = probe.record(net, data, ["conv", "fc"], batch_size=10, device="cpu", progress=False)
    for layer in ["conv", "fc"]:
        np.testing.assert_array_equal(resumed[layer], full[layer])
    np.testing.assert_array_equal(resumed.labels, full.labels)
    again = probe.record(net, data, ["conv", "fc"], batch_size=10, device="cpu", out=out, resume=True, progress=False)
    np.testing.assert_array_equal(again["fc"], full["fc"])  # complete: loaded, not recorded again
    assert net.calls == 3 + 5


def test_out_path_with_another_recording(net, data, tmp_path):
    out = tmp_path / "rec"
    probe.record(net, data, "fc", device="cpu", out=out, progress=False)
    with pytest.raises(FileExistsError, match="layers.*overwrite=True"):
        probe.record(net, data, "conv", device="cpu", out=out, progress=False)
    with torch.no_grad():
        net.fc.bias += 1
    with pytest.raises(FileExistsError, match="model.*another out path"):
        probe.record(net, data, "fc", device="cpu", out=out, progress=False)
    probe.record(net, data, "conv", device="cpu", out=out, overwrite=True, progress=False)
    with pytest.raises(FileExistsError, match="already holds"):
        probe.record(net, data, "conv", device="cpu", out=out, progress=False)
    rec = probe.Recording.load(out)
    assert rec.layers == ["conv"]
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="holds no recording"):
        probe.record(net, data, "fc", device="cpu", out=tmp_path / "other", progress=False)
    with pytest.raises(FileNotFoundError, match="not a recording"):
        probe.Recording.load(tmp_path / "other")


def test_resume_refuses_custom_reducers(net, data, tmp_path):
    net.fail_at = 2
    with pytest.raises(KeyboardInterrupt):
        probe.record(net, data, "fc", batch_size=10, device="cpu", out=tmp_path / "r", flush_every=0, progress=False)
    net.fail_at = None
    with pytest.raises(ValueError, match="custom reducers"):
        probe.record(net, data, "fc", batch_size=10, device="cpu", out=tmp_path / "r", resume=True,
                     reducers={"m": probe.MomentsReducer}, progress=False)


def test_save_load_roundtrip_with_extras(net, data, tmp_path):
    rec = probe.record(net, data, ["conv", "fc"], device="cpu", reducers={"moments": probe.MomentsReducer},
                       progress=False)
    path = rec.save(tmp_path / "saved")
    with pytest.raises(FileExistsError, match="overwrite"):
        rec.save(tmp_path / "saved")
    loaded = probe.Recording.load(path)
    assert loaded.layers == rec.layers and isinstance(loaded["conv"], np.memmap)
    np.testing.assert_array_equal(loaded["conv"], rec["conv"])
    np.testing.assert_array_equal(loaded.labels, rec.labels)
    np.testing.assert_allclose(loaded.extras["moments"]["fc"]["scatter"], rec.extras["moments"]["fc"].scatter)
    in_ram = probe.Recording.load(path, mmap=False)
    assert not isinstance(in_ram["conv"], np.memmap)
    assert not list(tmp_path.glob(".saved*"))  # no temporary folder left


def test_to_frame_and_metadata_match_numpy():
    relu = np.maximum(np.random.default_rng(0).standard_normal((40, 6)), 0)
    relu[:, 2] = 0.0  # a dead unit
    rec = probe.Recording({"a": relu.astype(np.float32), "b": np.ones((40, 3), np.float32)},
                          labels=np.arange(40) % 2, shapes={"a": (6,)})
    frame = rec.to_frame().set_index("layer")
    assert frame.loc["a", "mean"] == pytest.approx(relu.mean(), rel=1e-6)
    assert frame.loc["a", "std"] == pytest.approx(relu.std(), rel=1e-5)
    assert frame.loc["a", "fraction_zero"] == pytest.approx(np.mean(relu == 0))
    assert frame.loc["a", "dead_units"] == 1 and frame.loc["b", "dead_units"] == 3
    assert rec.stimuli["index"].tolist() == list(range(40))
    with pytest.raises(KeyError, match="'a'"):
        rec["aa"]
    with pytest.raises(ValueError, match="one row per stimulus"):
        probe.Recording({"a": np.zeros((3, 2)), "b": np.zeros((4, 2))})
    with pytest.raises(ValueError, match="labels"):
        probe.Recording({"a": np.zeros((3, 2))}, labels=[1, 2])


def test_weights_digest_follows_in_place_updates(net):
    from probe._record import model_fingerprint

    first = model_fingerprint(net)["weights_sha256"]
    assert model_fingerprint(net)["weights_sha256"] == first  # cached
    with torch.no_grad():
        net.conv.weight[0, 0, 0, 0] += 1.0
    changed = model_fingerprint(net)["weights_sha256"]
    assert changed != first
    twin = FailingNet()
    twin.load_state_dict(net.state_dict())
    assert model_fingerprint(twin)["weights_sha256"] == changed


def test_fingerprint_tells_apart_models_with_the_same_weights_and_other_layers():
    from probe._record import model_fingerprint

    torch.manual_seed(0)
    with_relu = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU())
    with_tanh = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh())
    with_tanh.load_state_dict(with_relu.state_dict())
    assert model_fingerprint(with_relu)["weights_sha256"] == model_fingerprint(with_tanh)["weights_sha256"]
    assert model_fingerprint(with_relu) != model_fingerprint(with_tanh)
