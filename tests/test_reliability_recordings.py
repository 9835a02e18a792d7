"""On-disk recordings against a hostile user: deleting, corruption, non-finite values, identity, two writers."""

import json
import warnings

import numpy as np
import pytest
import torch
from _fakes import LockHolder
from torch import nn
from torch.utils.data import TensorDataset

import probe
import zoo
from zoo._files import LOCK_FILE, CorruptFileError, FolderLockedError


class SmallNet(nn.Module):
    """Conv net for (1, H, W) stimuli that can be told to fail at a given call (a killed process)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3, padding=1)
        self.fc = nn.Linear(3, 4)
        self.fail_at = None
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        if self.fail_at is not None and self.calls == self.fail_at:
            raise KeyboardInterrupt
        return self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3)))


@pytest.fixture
def net():
    torch.manual_seed(0)
    return SmallNet().eval()


@pytest.fixture
def images():
    return torch.randn(20, 1, 8, 8, generator=torch.Generator().manual_seed(3))


def record(net, data, out=None, **options):
    return probe.record(net, data, ["conv", "fc"], device="cpu", out=out, batch_size=4, progress=False, **options)


def tree(folder):
    """{relative path: bytes} of every file below ``folder``."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# -- deleting ----------------------------------------------------------------------------------
def test_overwrite_never_deletes_a_folder_that_holds_no_recording(net, images, tmp_path):
    mine = tmp_path / "mine"
    (mine / "chapters").mkdir(parents=True)
    (mine / "thesis.tex").write_text("years of work")
    (mine / "chapters" / "one.tex").write_text("more")
    before = tree(mine)
    with pytest.raises(FileExistsError, match="holds no recording"):
        record(net, images, out=mine, overwrite=True)
    assert tree(mine) == before
    rec = record(net, images)
    with pytest.raises(FileExistsError, match="holds no recording"):
        rec.save(mine, overwrite=True)
    assert tree(mine) == before
    assert not list(tmp_path.glob(".mine*"))  # no temporary folder left


def test_a_stale_lock_file_does_not_make_a_folder_non_empty(net, images, tmp_path):
    (tmp_path / "rec").mkdir()
    (tmp_path / "rec" / LOCK_FILE).write_text("process 1 on elsewhere")
    record(net, images, out=tmp_path / "rec")
    (tmp_path / "saved").mkdir()
    (tmp_path / "saved" / LOCK_FILE).write_text("process 1 on elsewhere")
    record(net, images).save(tmp_path / "saved", overwrite=True)
    assert probe.Recording.load(tmp_path / "saved").layers == ["conv", "fc"]


def test_overwrite_deletes_only_listed_files(net, images, tmp_path):
    out = tmp_path / "rec"
    record(net, images, out=out)
    (out / "notes.txt").write_text("mine")
    (out / "extras").mkdir()
    (out / "extras" / "plot.png").write_bytes(b"png")
    record(net, images[:12], out=out, overwrite=True)
    assert (out / "notes.txt").read_text() == "mine" and (out / "extras" / "plot.png").read_bytes() == b"png"
    assert probe.Recording.load(out).n_stimuli == 12
    # A save renames a new folder into place, so it refuses rather than leave those files behind.
    with pytest.raises(FileExistsError, match="notes.txt"):
        record(net, images).save(out, overwrite=True)
    assert probe.Recording.load(out).n_stimuli == 12


def test_save_overwrite_replaces_a_recording(net, images, tmp_path):
    record(net, images[:8]).save(tmp_path / "saved")
    full = record(net, images)
    full.save(tmp_path / "saved", overwrite=True)
    loaded = probe.Recording.load(tmp_path / "saved")
    np.testing.assert_array_equal(loaded["fc"], full["fc"])
    assert not (tmp_path / "saved" / LOCK_FILE).exists()


@pytest.mark.parametrize("how", ["record", "save"])
def test_a_manifest_listing_outside_files_makes_overwrite_delete_nothing(net, images, tmp_path, how):
    out = tmp_path / "rec"
    record(net, images, out=out)
    (tmp_path / "thesis.tex").write_text("years of work")
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["layers"]["fc"]["file"] = "../thesis.tex"
    (out / "manifest.json").write_text(json.dumps(manifest))
    before = tree(out)
    with pytest.raises(ValueError, match="outside"):
        if how == "record":
            record(net, images, out=out, overwrite=True)
        else:
            record(net, images).save(out, overwrite=True)
    assert (tmp_path / "thesis.tex").read_text() == "years of work"
    assert tree(out) == before


# -- integrity ---------------------------------------------------------------------------------
def test_a_flipped_bit_in_a_layer_file_is_refused_on_load(net, images, tmp_path):
    out = tmp_path / "rec"
    written = np.array(record(net, images, out=out)["fc"])
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(manifest["files"]) == {"labels.npy", manifest["layers"]["conv"]["file"], manifest["layers"]["fc"]["file"]}
    layer_file = out / manifest["layers"]["fc"]["file"]
    data = bytearray(layer_file.read_bytes())
    data[-3] ^= 0x10  # one bit of the last value
    layer_file.write_bytes(bytes(data))
    with pytest.raises(CorruptFileError, match=manifest["layers"]["fc"]["file"]):
        probe.Recording.load(out)
    unchecked = probe.Recording.load(out, verify=False)
    assert unchecked["fc"][-1, -1] != written[-1, -1]
    np.testing.assert_array_equal(unchecked["fc"][:-1], written[:-1])


def test_a_damaged_extras_file_is_refused(net, images, tmp_path):
    out = tmp_path / "rec"
    record(net, images, out=out, reducers={"moments": probe.MomentsReducer})
    extras_file = out / json.loads((out / "manifest.json").read_text())["extras"]["moments"]["fc"]
    extras_file.write_bytes(extras_file.read_bytes()[:-1])
    with pytest.raises(CorruptFileError, match="moments"):
        probe.Recording.load(out)


def test_a_recording_without_checksums_loads_with_a_warning(net, images, tmp_path):
    out = tmp_path / "rec"
    rec = record(net, images, out=out)
    manifest = json.loads((out / "manifest.json").read_text())
    del manifest["files"]
    manifest["version"] = 1
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.warns(UserWarning, match="cannot be verified"):
        old = probe.Recording.load(out)
    np.testing.assert_array_equal(old["fc"], rec["fc"])


# -- non-finite stimuli ------------------------------------------------------------------------
def test_a_nan_stimulus_is_refused_naming_its_index(net, images, tmp_path):
    images[13, 0, 2, 5] = float("nan")
    images[14, 0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match=r"2 of the stimuli 12\.\.15 hold NaN or inf values \(indices 13, 14\).*nonfinite='skip'"):
        record(net, images)
    with pytest.raises(ValueError, match=r"indices 13, 14"):
        record(net, TensorDataset(images, torch.arange(20)), out=tmp_path / "rec")


@pytest.mark.parametrize("on_disk", [False, True])
def test_skipped_stimuli_are_nan_rows_and_listed(net, images, tmp_path, on_disk):
    bad = [1, 2, 3, 0, 9]  # the whole first batch of 4, and one in the third
    images[bad] = float("nan")
    images[9, 0, :, :] = 1.0
    images[9, 0, 4, 4] = -float("inf")
    out = tmp_path / "rec" if on_disk else None
    with pytest.warns(UserWarning, match="5 stimuli held NaN or inf values and were skipped"):
        rec = record(net, TensorDataset(images, torch.arange(20) % 3), out=out, nonfinite="skip",
                     reducers={"moments": probe.MomentsReducer})
    assert rec.skipped.tolist() == [0, 1, 2, 3, 9]
    kept = [i for i in range(20) if i not in bad]
    with torch.no_grad():
        conv = torch.relu(net.conv(images[kept])).mean(dim=(2, 3))
        plain = {"conv": net.conv(images[kept]).mean(dim=(2, 3)).numpy(), "fc": net.fc(conv).numpy()}
    for layer in ["conv", "fc"]:
        assert np.isnan(rec[layer][bad]).all()
        np.testing.assert_allclose(rec[layer][kept], plain[layer], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(rec.labels, np.arange(20) % 3)
    summary = rec.to_frame().set_index("layer")  # over the stimuli that went through the model
    assert summary.loc["fc", "mean"] == pytest.approx(plain["fc"].mean(), rel=1e-5)
    assert summary.loc["fc", "std"] == pytest.approx(plain["fc"].std(), rel=1e-4)
    moments = rec.extras["moments"]["fc"]  # the reducers never saw the skipped stimuli
    assert moments.n == 15
    np.testing.assert_allclose(moments.mean, plain["fc"].mean(axis=0), rtol=1e-5, atol=1e-6)
    if on_disk:
        assert json.loads((tmp_path / "rec" / "manifest.json").read_text())["skipped"] == [0, 1, 2, 3, 9]
        assert probe.Recording.load(tmp_path / "rec").skipped.tolist() == [0, 1, 2, 3, 9]


def test_a_refused_pass_resumes_with_skip(net, images, tmp_path):
    images[8:] = float("nan")  # after the refusal, nothing left to pass through the model
    out = tmp_path / "rec"
    with pytest.raises(ValueError, match="indices 8, 9, 10, 11"):
        record(net, images, out=out, flush_every=0)
    assert json.loads((out / "manifest.json").read_text())["n_done"] == 8
    with pytest.warns(UserWarning, match="12 stimuli"):
        rec = record(net, images, out=out, resume=True, nonfinite="skip")
    assert rec.skipped.tolist() == list(range(8, 20)) and np.isnan(rec["fc"][8:]).all()
    np.testing.assert_array_equal(rec["fc"][:8], record(net, images[:8])["fc"])


def test_only_nonfinite_stimuli_is_refused(net, images):
    with pytest.raises(ValueError, match="every stimulus"):
        record(net, torch.full_like(images, float("nan")), nonfinite="skip")
    with pytest.raises(KeyError, match="nonfinite"):
        record(net, images, nonfinite="ignore")


# -- float16 storage ---------------------------------------------------------------------------
def test_float16_overflow_is_counted_and_warned_once(tmp_path):
    model = nn.Sequential(nn.Linear(2, 2))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 10.0]]))
        model[0].bias.zero_()
    # 1e5 and -7e4 overflow; 65,510 rounds to 65,504; 3.5e38 * 10 is inf already in float32 (not counted).
    data = torch.tensor([[1e5, 1.0], [-7e4, 2.0], [65_510.0, 3.0], [1.0, 3.5e37], [2.0, 3.0], [3.0, 4.0]])
    with torch.no_grad():
        plain = model(data).numpy()
    with np.errstate(over="ignore"):
        expected = int((np.isinf(plain.astype(np.float16)) & np.isfinite(plain)).sum())
    assert expected == 2
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rec = probe.record(model, data, "0", dtype="float16", out=tmp_path / "rec", batch_size=2, device="cpu",
                           flush_every=0, progress=False)
    messages = [str(w.message) for w in caught if "float16" in str(w.message)]
    assert len(messages) == 1
    assert "turned 2 values" in messages[0] and "largest magnitude 100000" in messages[0]
    assert "dtype='float32'" in messages[0]
    manifest = json.loads((tmp_path / "rec" / "manifest.json").read_text())
    assert manifest["float16_overflow"] == {"0": {"count": 2, "largest": 100000.0}}
    assert np.isinf(rec["0"]).sum() == 3
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        probe.record(model, data[2:3], "0", dtype="float16", device="cpu", progress=False)  # 65,510: no warning


def test_a_pass_killed_while_finishing_resumes_with_its_counts(tmp_path):
    model = nn.Sequential(nn.Linear(1, 1))
    with torch.no_grad():
        model[0].weight.fill_(1.0)
        model[0].bias.zero_()
    out = tmp_path / "rec"
    with pytest.warns(UserWarning, match="turned 1 values"):
        probe.record(model, torch.tensor([[1e5], [1.0]]), "0", dtype="float16", out=out, device="cpu", progress=False)
    manifest = json.loads((out / "manifest.json").read_text())
    del manifest["files"]
    manifest["complete"] = False  # every stimulus flushed, the completion marker not written
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.warns(UserWarning, match="turned 1 values"):
        probe.record(model, torch.tensor([[1e5], [1.0]]), "0", dtype="float16", out=out, device="cpu", resume=True,
                     progress=False)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] and manifest["float16_overflow"] == {"0": {"count": 1, "largest": 100000.0}}
    assert probe.Recording.load(out)["0"][1, 0] == 1.0


# -- identity ----------------------------------------------------------------------------------
def test_resuming_with_other_natural_patches_is_refused(tmp_path):
    torch.manual_seed(0)
    net = SmallNet().eval()
    out = tmp_path / "rec"
    first = zoo.load_dataset("natural-patches", split="test", n_patches=64, seed=0)
    other = zoo.load_dataset("natural-patches", split="test", n_patches=64, seed=1)
    net.fail_at = 3
    with pytest.raises(KeyboardInterrupt):
        probe.record(net, first, "fc", batch_size=16, device="cpu", out=out, flush_every=0, progress=False)
    net.fail_at = None
    with pytest.raises(FileExistsError, match=r"dataset\.first_sha256.*dataset\.last_sha256"):
        probe.record(net, other, "fc", batch_size=16, device="cpu", out=out, resume=True, progress=False)
    resumed = probe.record(net, first, "fc", batch_size=16, device="cpu", out=out, resume=True, progress=False)
    full = probe.record(net, first, "fc", batch_size=16, device="cpu", progress=False)
    np.testing.assert_array_equal(resumed["fc"], full["fc"])


# -- two writers -------------------------------------------------------------------------------
def test_a_second_writer_fails_with_the_holders_pid(net, images, tmp_path):
    out = tmp_path / "rec"
    with LockHolder(out, what="recording") as holder:
        before = tree(out)
        with pytest.raises(FolderLockedError, match=f"process {holder.pid} on"):
            record(net, images, out=out)
        with pytest.raises(FolderLockedError, match=f"process {holder.pid} on"):
            record(net, images, out=out, overwrite=True)
        with pytest.raises(FolderLockedError, match=f"process {holder.pid} on"):
            record(net, images).save(out, overwrite=True)
        assert tree(out) == before
    record(net, images, out=out)
    assert not (out / LOCK_FILE).exists()


def test_a_killed_recording_resumes(net, images, tmp_path):
    out = tmp_path / "rec"
    net.fail_at = 3
    with pytest.raises(KeyboardInterrupt):
        record(net, images, out=out, flush_every=0)
    net.fail_at = None
    with LockHolder(out, what="recording") as holder:
        holder.kill()  # a writer killed while holding the lock
    assert (out / LOCK_FILE).exists()
    resumed = record(net, images, out=out, resume=True)
    np.testing.assert_array_equal(resumed["fc"], record(net, images)["fc"])
