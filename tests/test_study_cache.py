"""The recording cache behind ``probe analyze`` (probe/study/_cache.py): reuse, resume, adopt, verify."""

import json
import os
import shutil
import subprocess
import sys
import threading

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

import probe
from probe.study._cache import INDEX, CachedRecording, RecordingCache
from zoo._files import CorruptFileError

N, BATCH = 40, 8
DATA_KEY = "random-40/v1"


class Net(nn.Sequential):
    """Conv, ReLU, Conv, Flatten, Linear that counts the stimuli it sees and can fail after some batches."""

    def __init__(self):
        super().__init__(
            nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3, padding=1), nn.Flatten(), nn.Linear(6 * 8 * 8, 5)
        )
        self.batches = 0
        self.rows = 0
        self.fail_after = None  # batches after which forward raises, as a killed run would stop

    def forward(self, x):
        if self.fail_after is not None and self.batches >= self.fail_after:
            raise RuntimeError("simulated kill")
        self.batches += 1
        self.rows += len(x)
        return super().forward(x)

    def reset(self):
        self.batches = self.rows = 0


@pytest.fixture
def model():
    torch.manual_seed(0)
    return Net().eval()


@pytest.fixture
def data():
    generator = torch.Generator().manual_seed(1)
    return TensorDataset(torch.randn(N, 1, 8, 8, generator=generator), torch.arange(N) % 5)


@pytest.fixture
def cache(tmp_path):
    return RecordingCache(tmp_path / "cache")


def get(cache, model, data, layers, **options):
    options = {"data_key": DATA_KEY, "batch_size": BATCH, "device": "cpu", "progress": False, **options}
    return cache.get(model, data, layers, **options)


def fresh(model, data, layers, **options):
    """An uninterrupted in-memory recording, for comparison."""
    recording = probe.record(model, data, layers, batch_size=BATCH, device="cpu", progress=False, **options)
    model.reset()
    return recording


def assert_same(recording, expected):
    assert recording.layers == expected.layers
    for layer in expected.layers:
        np.testing.assert_array_equal(np.asarray(recording[layer]), np.asarray(expected[layer]))
    np.testing.assert_array_equal(recording.labels, expected.labels)


def first_layer_file(folder):
    return min((folder / "layers").glob("*.npy"))


def edit_in_place(path, mtime_shift_ns):
    """Change a file's last 4 bytes, keeping its size; its mtime ends ``mtime_shift_ns`` after the old one."""
    stat = path.stat()
    with open(path, "r+b") as handle:
        handle.seek(-4, os.SEEK_END)
        handle.write(b"\xff\xff\xff\x7f")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + mtime_shift_ns))


def test_first_get_records_every_layer_and_the_second_reads_them_from_the_cache(cache, model, data):
    first = get(cache, model, data, ["0", "2", "4"])
    assert isinstance(first, CachedRecording)
    assert first.recorded == ["0", "2", "4"] and first.cached == []
    assert model.rows == N  # one pass for every layer
    assert len(first.folders) == 1 and first.folders[0].parent == cache.folder
    assert first.folders[0].name.startswith("rec-") and len(first.folders[0].name) == 4 + 16
    np.testing.assert_array_equal(first.recording.labels, np.arange(N) % 5)

    model.reset()
    second = get(cache, model, data, ["0", "2", "4"])
    assert second.recorded == [] and second.cached == ["0", "2", "4"]
    assert model.rows == 0  # no forward pass at all
    assert second.folders == first.folders
    assert_same(second.recording, first.recording)
    assert second.recording.reductions["0"].mode == "spatial-mean"
    assert second.recording.shapes["0"] == (4, 8, 8)


def test_added_layer_is_the_only_one_recorded_and_every_value_matches_a_fresh_recording(cache, model, data):
    get(cache, model, data, ["0", "2"])
    model.reset()
    got = get(cache, model, data, ["0", "2", "4"])
    assert got.recorded == ["4"] and got.cached == ["0", "2"]
    assert model.rows == N and model.batches == N // BATCH  # one pass, for the new layer
    assert len(got.folders) == 2
    assert_same(got.recording, fresh(model, data, ["0", "2", "4"]))

    reordered = get(cache, model, data, ["4", "0"])  # any subset, in any order, from the cache
    assert reordered.recorded == [] and reordered.recording.layers == ["4", "0"]
    assert model.rows == 0


def test_changed_weights_record_again(cache, model, data):
    key = cache.model_key(model)
    get(cache, model, data, ["0", "4"])
    with torch.no_grad():
        model[0].weight.add_(0.5)
    assert cache.model_key(model) != key
    model.reset()
    got = get(cache, model, data, ["0", "4"])
    assert got.recorded == ["0", "4"] and model.rows == N
    assert_same(got.recording, fresh(model, data, ["0", "4"]))


def test_model_key_tells_architectures_apart_and_is_the_same_in_another_process(cache):
    torch.manual_seed(0)
    relu = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
    tanh = nn.Sequential(nn.Linear(4, 4), nn.Tanh())
    tanh.load_state_dict(relu.state_dict())  # the same weights: only the architecture differs
    assert cache.model_key(relu) != cache.model_key(tanh)
    code = (
        "import torch; from torch import nn; from probe.study._cache import RecordingCache; torch.manual_seed(0); "
        "print(RecordingCache('unused').model_key(nn.Sequential(nn.Linear(4, 4), nn.ReLU())))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "123"}
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert other.stdout.strip() == cache.model_key(relu)


def test_other_data_key_records_again(cache, model, data):
    get(cache, model, data, ["0"])
    model.reset()
    got = get(cache, model, data, ["0"], data_key="random-40/v2")
    assert got.recorded == ["0"] and model.rows == N
    assert got.folders != get(cache, model, data, ["0"]).folders


def test_other_reduce_is_another_key_and_per_layer_dicts_and_aliases_are_resolved(cache, model, data):
    auto = get(cache, model, data, ["0", "4"])
    flat = get(cache, model, data, ["0", "4"], reduce="flatten")
    assert flat.recorded == ["0", "4"]  # keyed by the reduce asked for, not by the mode "auto" resolves to
    assert flat.keys["0"] != auto.keys["0"]
    assert flat.recording["0"].shape == (N, 4 * 8 * 8) and auto.recording["0"].shape == (N, 4)
    model.reset()
    for reduce in ({"0": "flatten"}, {"?": "flatten"}):
        again = get(cache, model, data, ["0"], reduce=reduce)
        assert again.recorded == [] and again.keys["0"] == flat.keys["0"]
    alias = get(cache, model, data, ["0"], reduce="mean")  # the alias of spatial-mean
    assert alias.keys["0"] == get(cache, model, data, ["0"], reduce="spatial-mean").keys["0"]
    assert model.rows == N  # "mean" recorded once; "spatial-mean" read it from the cache
    assert get(cache, model, data, ["0"], layout="channels-first").keys["0"] != auto.keys["0"]
    assert get(cache, model, data, ["0"], dtype="float16").keys["0"] != auto.keys["0"]


def test_a_killed_run_is_resumed_from_its_incomplete_folder(cache, model, data):
    model.fail_after = 3
    with pytest.raises(ValueError, match="simulated kill"):  # the engine names the failing layer
        get(cache, model, data, ["4", "0"], flush_every=0.0)
    (folder,) = [path for path in cache.folder.glob("rec-*") if path.is_dir()]
    manifest = json.loads((folder / "manifest.json").read_text())
    assert not manifest["complete"] and manifest["n_done"] == 3 * BATCH
    assert not (cache.folder / INDEX).exists()

    model.fail_after = None
    model.reset()
    got = get(cache, model, data, ["0", "4"])  # asked in another order: the same folder
    assert got.recorded == ["0", "4"] and got.folders == [folder]
    assert model.rows == N - 3 * BATCH  # only the stimuli the killed run had not flushed
    assert_same(got.recording, fresh(model, data, ["0", "4"]))
    model.reset()
    assert get(cache, model, data, ["0", "4"]).recorded == [] and model.rows == 0


def test_a_complete_folder_missing_from_the_index_is_adopted_without_recording(cache, model, data):
    first = get(cache, model, data, ["0", "2"])
    second = get(cache, model, data, ["0", "2", "4"])
    (cache.folder / INDEX).unlink()  # killed between the recordings' end and the index write
    model.reset()
    got = get(cache, model, data, ["0", "2", "4"])  # found through the folders' key files
    assert got.recorded == [] and got.cached == ["0", "2", "4"] and model.rows == 0
    assert set(got.folders) == set(first.folders) | set(second.folders)
    assert_same(got.recording, second.recording)
    assert len(json.loads((cache.folder / INDEX).read_text())["layers"]) == 3  # the index is rebuilt


def test_a_complete_folder_without_index_nor_key_file_is_adopted_after_the_engine_checks_it(cache, model, data):
    first = get(cache, model, data, ["0", "4"])
    (cache.folder / INDEX).unlink()
    for path in cache.folder.glob("*.keys.json"):
        path.unlink()
    model.reset()
    got = get(cache, model, data, ["0", "4"])  # the same layers: the same folder name, complete
    assert got.recorded == [] and got.cached == ["0", "4"] and model.rows == 0
    assert got.folders == first.folders
    assert_same(got.recording, first.recording)


def test_a_folder_holding_another_recording_is_refused_and_kept(cache, model, data):
    key = cache.layer_key(cache.model_key(model), DATA_KEY, "0")
    folder = cache.folder_for([key])
    torch.manual_seed(5)
    probe.record(Net(), data, ["0"], batch_size=BATCH, device="cpu", progress=False, out=folder)  # other weights
    with pytest.raises(FileExistsError) as error:
        get(cache, model, data, ["0"])
    assert str(folder) in str(error.value) and "deleting it is safe" in str(error.value)
    assert (folder / "manifest.json").is_file()  # never deleted silently
    shutil.rmtree(folder)
    assert get(cache, model, data, ["0"]).recorded == ["0"]


def test_a_truncated_cached_file_is_refused_naming_its_folder_and_recorded_again_once_deleted(cache, model, data):
    first = get(cache, model, data, ["0", "4"])
    (folder,) = first.folders
    layer_file = first_layer_file(folder)
    with open(layer_file, "r+b") as handle:
        handle.truncate(layer_file.stat().st_size - 8)
    model.reset()
    with pytest.raises(CorruptFileError) as error:
        get(cache, model, data, ["4", "0"])
    assert str(folder) in str(error.value) and layer_file.name in str(error.value)
    assert "deleting it is safe" in str(error.value)
    assert model.rows == 0 and layer_file.exists()  # refused before recording anything; nothing deleted
    shutil.rmtree(folder)
    got = get(cache, model, data, ["0", "4"])
    assert got.recorded == ["0", "4"]
    assert_same(got.recording, fresh(model, data, ["0", "4"]))  # (first's memory maps read the damaged file)


def test_a_same_size_edit_is_caught_by_its_checksum_once_its_modification_time_moved(cache, model, data):
    (folder,) = get(cache, model, data, ["0"]).folders
    edit_in_place(first_layer_file(folder), mtime_shift_ns=10**9)  # a later write moves the mtime
    with pytest.raises(CorruptFileError, match="SHA-256"):
        get(cache, model, data, ["0"])


def test_verify_full_catches_an_edit_that_kept_size_and_modification_time(cache, model, data):
    (folder,) = get(cache, model, data, ["0"]).folders
    edit_in_place(first_layer_file(folder), mtime_shift_ns=0)  # the documented blind spot of "changed"
    assert get(cache, model, data, ["0"]).cached == ["0"]
    with pytest.raises(CorruptFileError, match="SHA-256"):
        get(RecordingCache(cache.folder, verify="full"), model, data, ["0"])


def test_first_read_of_a_folder_checks_checksums_and_keeps_a_stamp(cache, model, data):
    (folder,) = get(cache, model, data, ["0"]).folders
    index = json.loads((cache.folder / INDEX).read_text())
    assert set(index["verified"][folder.name]) >= {"labels.npy"}
    index["verified"] = {}  # as if another tool had written the folder: its checksums are checked on first read
    (cache.folder / INDEX).write_text(json.dumps(index))
    edit_in_place(first_layer_file(folder), mtime_shift_ns=0)
    with pytest.raises(CorruptFileError, match="SHA-256"):
        get(cache, model, data, ["0"])


def test_two_caches_on_one_folder_keep_each_others_entries(cache, model, data):
    other = RecordingCache(cache.folder)
    assert get(cache, model, data, ["0"]).recorded == ["0"]
    assert get(other, model, data, ["4"]).recorded == ["4"]
    layers = {entry["layer"] for entry in json.loads((cache.folder / INDEX).read_text())["layers"].values()}
    assert layers == {"0", "4"}
    model.reset()
    assert get(cache, model, data, ["0", "4"]).recorded == [] and model.rows == 0


def test_concurrent_index_updates_lose_no_entry(tmp_path):
    caches = [RecordingCache(tmp_path / "cache"), RecordingCache(tmp_path / "cache")]

    def add(cache, who):
        for i in range(25):
            cache._update_index({f"{who}-{i}": {"folder": f"rec-{who}", "layer": str(i)}}, {})

    threads = [threading.Thread(target=add, args=(cache, who)) for who, cache in enumerate(caches)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(json.loads((tmp_path / "cache" / INDEX).read_text())["layers"]) == 50
    assert not list((tmp_path / "cache").glob(".index.json.*"))  # no temporary file left behind


def test_folders_with_other_labels_under_one_data_key_are_refused_naming_them(cache, model, data):
    first = get(cache, model, data, ["0"])
    relabelled = TensorDataset(data.tensors[0], (data.tensors[1] + 1) % 5)
    with pytest.raises(ValueError, match="other labels") as error:
        get(cache, model, relabelled, ["0", "4"])
    assert str(first.folders[0]) in str(error.value) and "data key must change" in str(error.value)


def test_stimuli_of_another_number_under_one_data_key_are_refused(cache, model, data):
    get(cache, model, data, ["0"])
    with pytest.raises(ValueError, match="data key must change"):
        get(cache, model, data.tensors[0][:20], ["0"])


def test_a_module_called_twice_is_cached_under_its_name_with_its_numbered_arrays(cache, data):
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 1, 3, padding=1)
            self.act = nn.ReLU()

        def forward(self, x):
            return self.act(self.conv(self.act(x)))

    torch.manual_seed(0)
    model = Twice()
    first = get(cache, model, data, ["act", "conv"], layout={"act": "channels-first"})
    assert first.recording.layers == ["act#1", "act#2", "conv"]
    second = get(cache, model, data, ["act"], layout="channels-first")
    assert second.cached == ["act"] and second.recording.layers == ["act#1", "act#2"]


def test_to_frame_and_describe_say_which_layers_came_from_the_cache(cache, model, data):
    get(cache, model, data, ["0"])
    got = get(cache, model, data, ["0", "4"])
    frame = got.to_frame()
    assert frame[["layer", "source"]].values.tolist() == [["0", "cache"], ["4", "recorded"]]
    assert frame["folder"].tolist() == [path.name for path in got.folders]
    assert got.from_cache("0") and not got.from_cache("4")
    assert got.describe() == f"2 layers over {N} stimuli: 1 read from the cache (0); 1 recorded now (4)"
    assert got.sources["4"] == got.folders[1]


def test_incomplete_folders_lists_what_a_killed_run_left_behind(cache, model, data):
    model.fail_after = 1
    with pytest.raises(ValueError, match="simulated kill"):
        get(cache, model, data, ["0"], flush_every=0.0)
    (left,) = cache.incomplete_folders()
    model.fail_after = None
    got = get(cache, model, data, ["0", "4"])  # other layers: another folder; the killed one stays behind
    assert left not in got.folders and cache.incomplete_folders() == [left]
