"""Data files never execute code, and dataset options are checked before anything loads.

A CIFAR-10 folder is a set of pickles; a planted batch whose pickle calls ``os.system`` (or opens a
file) must be refused, naming the file and the global it asked for, without the call ever running.
Genuine batches, written as Python 3 writes them and as the official archive (Python 2, NumPy 1)
holds them, must load to exactly the arrays torchvision's own reader returns.
"""

from __future__ import annotations

import builtins
import os
import pickle
import struct

import numpy as np
import pytest
import torch

import zoo
from zoo._names import UnknownNameError

CLASS_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
TRAIN_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]


def _write_genuine_folder(root, rng, n_per_batch=3, protocol=pickle.DEFAULT_PROTOCOL, byte_keys=False):
    """A complete cifar-10-batches-py folder of small random batches; returns what was written per file."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    key = (lambda k: k.encode()) if byte_keys else (lambda k: k)
    written = {}
    for name in TRAIN_BATCHES + ["test_batch"]:
        data = rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, n_per_batch).tolist()
        with open(folder / name, "wb") as handle:
            batch = {key("batch_label"): key(f"{name} of 5"), key("labels"): labels, key("data"): data}
            pickle.dump(batch, handle, protocol)
        written[name] = data, labels
    with open(folder / "batches.meta", "wb") as handle:
        pickle.dump({key("label_names"): CLASS_NAMES, key("num_cases_per_batch"): n_per_batch}, handle, protocol)
    return written


# --- a batch as the official archive holds it: Python 2 strings, NumPy 1's pickle of a uint8 array ---
def _short_string(text: bytes) -> bytes:
    return b"U" + bytes([len(text)]) + text  # SHORT_BINSTRING: a Python 2 str


def _python2_batch(data: np.ndarray, labels: list[int], numpy_module: bytes = b"numpy.core.multiarray") -> bytes:
    """The pickle opcodes Python 2's cPickle (protocol 2) writes for {'data': array, 'labels': list}."""
    dtype = (
        b"cnumpy\ndtype\n" + _short_string(b"u1") + b"K\x00K\x01\x87R"
        + b"(K\x03" + _short_string(b"|") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
    )
    raw = data.tobytes()
    array = (
        b"c" + numpy_module + b"\n_reconstruct\n" + b"cnumpy\nndarray\n" + b"K\x00\x85" + _short_string(b"b") + b"\x87R"
        + b"(K\x01" + b"M" + struct.pack("<H", data.shape[0]) + b"M" + struct.pack("<H", data.shape[1]) + b"\x86"
        + dtype + b"\x89" + b"T" + struct.pack("<I", len(raw)) + raw + b"tb"
    )
    label_list = b"](" + b"".join(b"K" + bytes([label]) for label in labels) + b"e"
    return b"\x80\x02}(" + _short_string(b"data") + array + _short_string(b"labels") + label_list + b"u."


def _torchvision_reference(root, train):
    """torchvision's own reader (which unpickles freely): images (n, 3, 32, 32) and labels, for genuine files only."""
    from torchvision import datasets

    class Unchecked(datasets.CIFAR10):
        train_list = [[name, None] for name, _ in datasets.CIFAR10.train_list]
        test_list = [[name, None] for name, _ in datasets.CIFAR10.test_list]
        meta = {**datasets.CIFAR10.meta, "md5": None}

    base = Unchecked(str(root), train=train)
    images = torch.from_numpy(base.data).permute(0, 3, 1, 2).contiguous()
    return images, torch.as_tensor(base.targets), tuple(base.classes)


# --- malicious pickles ------------------------------------------------------------------------------
class _RunsShell:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class _OpensFile:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return builtins.open, (str(self.marker), "w")


# each payload, and the global its pickle names (pickle records where the function is defined)
PAYLOADS = {
    "os.system": (_RunsShell, f"{os.system.__module__}.system"),
    "builtins.open": (_OpensFile, f"{builtins.open.__module__}.open"),
}


@pytest.mark.parametrize("payload", sorted(PAYLOADS))
@pytest.mark.parametrize("hidden", [False, True], ids=["whole-file", "inside-labels"])
def test_malicious_batch_is_refused_naming_the_file_and_never_runs(tmp_path, payload, hidden):
    make, global_name = PAYLOADS[payload]
    _write_genuine_folder(tmp_path, np.random.default_rng(0))
    marker = tmp_path / "pwned"
    evil = make(marker)
    if hidden:  # a genuine-looking batch with the payload tucked into its labels
        evil = {"data": np.zeros((1, 3072), np.uint8), "labels": [evil]}
    target = tmp_path / "cifar-10-batches-py" / "data_batch_1"
    with open(target, "wb") as handle:
        pickle.dump(evil, handle)
    with pytest.raises(ValueError, match="not a genuine CIFAR-10 batch") as error:
        zoo.load_dataset("cifar10", "train", root=tmp_path)
    message = str(error.value)
    assert str(target) in message and global_name in message
    assert not marker.exists()
    # the test split does not read data_batch_1, so it still loads
    assert len(zoo.load_dataset("cifar10", "test", root=tmp_path)) == 3
    assert not marker.exists()


@pytest.mark.parametrize("name", ["test_batch", "batches.meta"])
def test_malicious_test_batch_or_meta_is_refused(tmp_path, name):
    _write_genuine_folder(tmp_path, np.random.default_rng(1))
    marker = tmp_path / "pwned"
    target = tmp_path / "cifar-10-batches-py" / name
    with open(target, "wb") as handle:
        pickle.dump(_RunsShell(marker), handle)
    with pytest.raises(ValueError, match="not a genuine CIFAR-10 batch") as error:
        zoo.load_dataset("cifar10", "test", root=tmp_path)
    assert str(target) in str(error.value)
    assert not marker.exists()


def test_garbage_batch_is_a_clear_error_naming_the_file(tmp_path):
    _write_genuine_folder(tmp_path, np.random.default_rng(2))
    target = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    target.write_bytes(b"\x80\x04this is not a pickle")
    with pytest.raises(ValueError, match="data_batch_3"):
        zoo.load_dataset("cifar10", "train", root=tmp_path)
    with open(target, "wb") as handle:
        pickle.dump({"data": np.zeros((2, 100), np.uint8), "labels": [0, 1]}, handle)
    with pytest.raises(ValueError, match=r"data_batch_3.*shape \(2, 100\)"):
        zoo.load_dataset("cifar10", "train", root=tmp_path)


@pytest.mark.parametrize("protocol, byte_keys", [(pickle.DEFAULT_PROTOCOL, False), (3, False), (4, True)])
def test_genuine_batches_load_the_same_arrays_as_torchvision(tmp_path, protocol, byte_keys):
    written = _write_genuine_folder(tmp_path, np.random.default_rng(3), protocol=protocol, byte_keys=byte_keys)
    mean, std = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
    for split, names in (("train", TRAIN_BATCHES), ("test", ["test_batch"])):
        dataset = zoo.load_dataset("cifar10", split, root=tmp_path)
        expected = np.concatenate([written[name][0] for name in names]).reshape(-1, 3, 32, 32)
        labels = [label for name in names for label in written[name][1]]
        assert dataset.images.dtype == torch.uint8 and np.array_equal(dataset.images.numpy(), expected)
        assert dataset.labels.dtype == torch.int64 and dataset.labels.tolist() == labels
        assert dataset.info == zoo.DatasetInfo("cifar10", (3, 32, 32), mean, std, tuple(CLASS_NAMES))
        if not byte_keys:  # torchvision itself needs str keys
            images, targets, classes = _torchvision_reference(tmp_path, split == "train")
            assert torch.equal(dataset.images, images) and torch.equal(dataset.labels, targets)
            assert dataset.info.class_names == classes


@pytest.mark.parametrize("numpy_module", [b"numpy.core.multiarray", b"numpy._core.multiarray"])
def test_python2_numpy1_batches_as_in_the_official_archive_load(tmp_path, numpy_module):
    written = _write_genuine_folder(tmp_path, np.random.default_rng(4))
    folder = tmp_path / "cifar-10-batches-py"
    for name, (data, labels) in written.items():
        (folder / name).write_bytes(_python2_batch(data, labels, numpy_module))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # numpy.core is NumPy 2's alias of numpy._core
        train = zoo.load_dataset("cifar10", "train", root=tmp_path)
        images, targets, _ = _torchvision_reference(tmp_path, True)
    assert torch.equal(train.images, images) and torch.equal(train.labels, targets)
    assert np.array_equal(train.images[:3].numpy().reshape(3, -1), written["data_batch_1"][0])


# --- dataset options ----------------------------------------------------------------------------------
def test_unknown_dataset_option_names_the_valid_ones():
    with pytest.raises(UnknownNameError) as error:
        zoo.load_dataset("digits", bogus=1)
    assert isinstance(error.value, KeyError) and isinstance(error.value, ValueError)
    assert "unknown digits option 'bogus'" in str(error.value) and "'classes'" in str(error.value)
    with pytest.raises(UnknownNameError, match="did you mean 'patch_size'") as error:
        zoo.load_dataset("natural-patches", patch_sise=8)
    for option in ("n_patches", "grayscale", "remove_patch_mean", "seed", "classes"):
        assert repr(option) in str(error.value)


def test_unknown_option_is_refused_before_anything_loads(tmp_path):
    # without the check these would fail on the missing files or folder instead
    with pytest.raises(UnknownNameError, match="unknown cifar10 option 'image_size'"):
        zoo.load_dataset("cifar10", root=tmp_path, image_size=32)
    with pytest.raises(UnknownNameError, match="unknown mnist option 'bogus'"):
        zoo.load_dataset("mnist", root=tmp_path, bogus=True)
    with pytest.raises(UnknownNameError, match="unknown imagefolder option 'patch_size'.*'image_size'"):
        zoo.load_dataset(f"imagefolder:{tmp_path / 'nowhere'}", patch_size=4)


def test_known_options_still_work():
    dataset = zoo.load_dataset("natural-patches", "test", n_patches=5, patch_size=6, classes=None)
    assert len(dataset) == 5 and dataset.info.image_shape == (1, 6, 6)
    assert set(zoo.load_dataset("digits", "test", classes=[3]).labels.tolist()) == {3}


def test_cli_dataset_option_that_the_dataset_lacks_is_a_one_line_error(tmp_path, capsys):
    from probe.cli import main

    code = main(["train", "mlp", "--dataset", "digits", "--epochs", "1", "--device", "cpu", "--quiet",
                 "--out", str(tmp_path / "run"), "--dataset-option", "bogus=1"])
    err = capsys.readouterr().err
    assert code != 0 and "unknown digits option 'bogus'" in err and "Traceback" not in err
