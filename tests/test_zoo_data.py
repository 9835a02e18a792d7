"""Datasets: embedded digits and natural patches, and real on-disk formats written in miniature."""

import pickle
import struct

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits

import zoo


@pytest.fixture(scope="module")
def digits():
    return zoo.load_dataset("digits", "train"), zoo.load_dataset("digits", "test")


def test_digits_split_is_stratified_disjoint_and_complete(digits):
    train, test = digits
    assert (len(train), len(test)) == (1437, 360)
    raw = load_digits()
    pixels = lambda ds: np.round(ds.images.numpy() * 16).reshape(len(ds), -1)  # stored unnormalised in [0, 1]
    rows = np.concatenate([pixels(train), pixels(test)])
    labels = np.concatenate([train.labels.numpy(), test.labels.numpy()])
    # The two splits together are exactly load_digits (as a multiset of (image, label) rows).
    key = lambda x, y: sorted(map(tuple, np.column_stack([x, y]).astype(int)))
    assert key(rows, labels) == key(raw.data, raw.target)
    test_counts = np.bincount(test.labels.numpy(), minlength=10)
    expected = np.bincount(raw.target) * zoo._data.DIGITS_TEST_FRACTION
    assert np.all(np.abs(test_counts - expected) <= 1)


def test_digits_normalisation_and_info(digits):
    train, test = digits
    images = train.get_batch(torch.arange(len(train)))[0]
    assert abs(float(images.mean())) < 1e-4 and abs(float(images.std()) - 1) < 1e-3
    assert train.info == test.info
    assert train.info.image_shape == (1, 8, 8) and train.info.n_classes == 10
    image, label = test[3]
    assert image.dtype == torch.float32 and image.shape == (1, 8, 8) and isinstance(label, int)
    assert torch.allclose(test.info.normalize(test.info.denormalize(image)), image, atol=1e-6)


def test_natural_patches_are_deterministic_unlabelled_and_contrast_normalised():
    a = zoo.load_dataset("natural-patches", n_patches=300, patch_size=8, seed=3)
    b = zoo.load_dataset("natural-patches", n_patches=300, patch_size=8, seed=3)
    c = zoo.load_dataset("natural-patches", n_patches=300, patch_size=8, seed=4)
    assert torch.equal(a.images, b.images) and not torch.equal(a.images, c.images)
    assert a.info.image_shape == (1, 8, 8) and a.info.class_names is None and a.info.n_classes == 0
    assert set(a.labels.tolist()) == {-1}
    x = a.get_batch(torch.arange(300))[0]
    assert torch.allclose(x.mean(dim=(2, 3)), torch.zeros(300, 1), atol=1e-4)  # each patch's mean removed
    assert 0.7 < float(x.std()) < 1.3
    rgb = zoo.load_dataset("natural-patches", "test", n_patches=10, patch_size=12, grayscale=False)
    assert rgb[0][0].shape == (3, 12, 12)


def _write_idx(path, array, magic):
    dims = struct.pack(">" + "I" * array.ndim, *array.shape)
    path.write_bytes(struct.pack(">I", magic) + dims + array.astype(np.uint8).tobytes())


@pytest.mark.parametrize("name, folder", [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")])
def test_mnist_idx_files_load_back(tmp_path, name, folder):
    rng = np.random.default_rng(0)
    raw = tmp_path / folder / "raw"
    raw.mkdir(parents=True)
    data = {}
    for prefix, n in (("train", 5), ("t10k", 3)):
        images, labels = rng.integers(0, 256, (n, 28, 28)), rng.integers(0, 10, n)
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", images, 2051)
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels, 2049)
        data[prefix] = images, labels
    for split, prefix in (("train", "train"), ("test", "t10k")):
        dataset = zoo.load_dataset(name, split, root=tmp_path)
        images, labels = data[prefix]
        assert len(dataset) == len(labels) and dataset.info.image_shape == (1, 28, 28)
        for i in range(len(labels)):
            image, label = dataset[i]
            pixels = np.round(dataset.info.denormalize(image).numpy()[0] * 255)
            assert np.array_equal(pixels, images[i]) and label == labels[i]


def test_cifar10_pickled_batches_load_back(tmp_path):
    rng = np.random.default_rng(1)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    written = {}
    for batch in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data, labels = rng.integers(0, 256, (2, 3072), dtype=np.uint8), rng.integers(0, 10, 2).tolist()
        with open(folder / batch, "wb") as handle:
            pickle.dump({"data": data, "labels": labels}, handle)
        written[batch] = data, labels
    with open(folder / "batches.meta", "wb") as handle:
        pickle.dump({"label_names": names}, handle)
    train = zoo.load_dataset("cifar10", "train", root=tmp_path)
    test = zoo.load_dataset("cifar10", "test", root=tmp_path)
    assert len(train) == 10 and len(test) == 2 and train.info.class_names == tuple(names)
    image, label = train[2]  # the first image of data_batch_2
    data, labels = written["data_batch_2"]
    assert np.array_equal(np.round(train.info.denormalize(image).numpy() * 255).reshape(-1), data[0])
    assert label == labels[0]
    assert test[1][1] == written["test_batch"][1][1]


def test_image_folder_loads_pngs(tmp_path):
    rng = np.random.default_rng(2)
    written = {}
    for split in ("train", "test"):
        for cls in ("cat", "dog"):
            (tmp_path / split / cls).mkdir(parents=True)
            pixels = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / split / cls / "a.png")
            written[split, cls] = pixels
    dataset = zoo.load_dataset(f"imagefolder:{tmp_path}", "test", image_size=4)
    assert dataset.info.class_names == ("cat", "dog") and dataset.info.image_shape == (3, 4, 4)
    image, label = dataset[1]
    assert label == 1
    assert np.array_equal(np.round(dataset.info.denormalize(image).numpy() * 255).transpose(1, 2, 0), written["test", "dog"])
    batches = list(zoo.iterate_batches(dataset, 2))
    assert batches[0][0].shape == (2, 3, 4, 4) and batches[0][1].tolist() == [0, 1]


def test_missing_files_are_named_with_their_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte") as err:
        zoo.load_dataset("mnist", root=tmp_path)
    assert str(tmp_path / "MNIST" / "raw") in str(err.value)
    with pytest.raises(FileNotFoundError, match="batches.meta"):
        zoo.load_dataset("cifar10", root=tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        zoo.load_dataset(f"imagefolder:{tmp_path / 'nowhere'}")


def test_unknown_dataset_lists_nearest_names():
    with pytest.raises(KeyError, match="did you mean 'digits'"):
        zoo.load_dataset("digitz")
    with pytest.raises(ValueError, match="split"):
        zoo.load_dataset("digits", "validation")


def test_iterate_batches_covers_the_data_and_is_reproducible(digits):
    train, _ = digits
    order = lambda seed: torch.cat([labels for _, labels in zoo.iterate_batches(train, 100, True, torch.Generator().manual_seed(seed))])
    assert torch.equal(order(1), order(1)) and not torch.equal(order(1), order(2))
    assert torch.equal(torch.sort(order(1)).values, torch.sort(train.labels).values)
    assert sum(len(y) for _, y in zoo.iterate_batches(train, 100, drop_last=True)) == 1400


def test_data_root_and_dataset_list(monkeypatch, tmp_path):
    monkeypatch.setenv("NEUROPROBE_DATA", str(tmp_path))
    assert zoo.default_data_root() == tmp_path
    assert {"digits", "natural-patches", "mnist", "fashion-mnist", "cifar10"} <= set(zoo.list_datasets())


def test_class_labels_reads_labels_and_names_once_each():
    info = zoo.load_dataset("digits", split="test").info
    assert zoo.class_labels(info, ["3", 1, "3"]) == [1, 3] and zoo.class_labels(info, 7) == [7]
    with pytest.raises(ValueError, match="has no class 'cat'; valid labels: 0..9"):
        zoo.class_labels(info, ["cat"])
