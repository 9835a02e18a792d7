"""``Recording``: what a pass kept for each layer, with stimulus and unit metadata."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import pandas as pd

from probe._reducers import Reduction
from probe._store import DiskSink, flushed_stimuli, load_extras, read_manifest, replaceable_files, verify_recording
from zoo._files import LOCK_FILE, remove_listed_files, writer_lock
from zoo._names import unknown_name_error

__all__ = ["Recording"]

_CHUNK_BYTES = 64 * 2**20  # summaries and copies of on-disk layers read this much at a time


class Recording:
    """Activations of named layers over a set of stimuli.

    Parameters
    ----------
    activations
        Layer name -> array of shape (n_stimuli, n_units) (NumPy arrays or memory maps).
    labels
        int array of shape (n_stimuli,), -1 where unknown; default all unknown.
    shapes
        Layer name -> the layer's raw output shape per stimulus, for example (C, H, W) or
        (tokens, dim); default (n_units,).
    reductions
        Layer name -> ``Reduction`` (or its description dict); default ``flatten``.
    extras
        Results of custom reducers: ``extras[reducer name][layer]`` (or one object for a
        ``MultiLayerReducer``).
    model, dataset
        JSON-able descriptions of what was recorded (as written in the manifest).
    path
        The recording folder when the arrays live on disk.
    skipped
        Indices of the stimuli that held NaN or inf values and were not passed through the model
        (``probe.record(..., nonfinite="skip")``); their rows are NaN in every layer.

    Examples
    --------
    >>> rec = probe.record(model, dataset, ["conv1", "fc1"])
    >>> rec["conv1"].shape        # (n_stimuli, n_channels)
    >>> rec.units("conv1")        # one row per unit: channel, reduction
    >>> rec.to_frame()            # per-layer summary
    """

    def __init__(
        self,
        activations: Mapping[str, np.ndarray],
        labels: np.ndarray | None = None,
        shapes: Mapping[str, tuple[int, ...]] | None = None,
        reductions: Mapping[str, Reduction | dict] | None = None,
        extras: dict[str, Any] | None = None,
        model: dict[str, Any] | None = None,
        dataset: dict[str, Any] | None = None,
        path: str | os.PathLike | None = None,
        skipped: np.ndarray | list[int] | None = None,
    ):
        if not activations:
            raise ValueError("a Recording needs at least one layer")
        self._activations = dict(activations)
        sizes = {name: (a.shape[0] if a.ndim == 2 else None) for name, a in self._activations.items()}
        bad = {name: a.shape for name, a in self._activations.items() if a.ndim != 2}
        if bad:
            raise ValueError(f"layer arrays must have shape (n_stimuli, n_units); got {bad}")
        if len(set(sizes.values())) != 1:
            raise ValueError(f"every layer must have one row per stimulus; rows per layer: {sizes}")
        self.n_stimuli = next(iter(sizes.values()))
        self.labels = (
            np.full(self.n_stimuli, -1, dtype=np.int64) if labels is None else np.asarray(labels, dtype=np.int64)
        )
        if self.labels.shape != (self.n_stimuli,):
            raise ValueError(f"labels must have shape ({self.n_stimuli},) (one per stimulus), got {self.labels.shape}")
        shapes = dict(shapes or {})
        reductions = dict(reductions or {})
        self.shapes = {name: tuple(shapes.get(name, (a.shape[1],))) for name, a in self._activations.items()}
        self.reductions = {
            name: r if isinstance(r, Reduction) else Reduction.from_description(r)
            for name, r in ((n, reductions.get(n, Reduction("flatten"))) for n in self._activations)
        }
        self.extras = dict(extras or {})
        self.model = dict(model or {})
        self.dataset = dict(dataset or {})
        self.path = Path(path) if path is not None else None
        self.skipped = np.asarray([] if skipped is None else skipped, dtype=np.int64)
        if self.skipped.ndim != 1 or ((self.skipped < 0) | (self.skipped >= self.n_stimuli)).any():
            raise ValueError(f"skipped must list stimulus indices in 0..{self.n_stimuli - 1}, got {self.skipped}")

    # -- access --------------------------------------------------------------------------------
    @property
    def layers(self) -> list[str]:
        """Recorded layer names, in recording order."""
        return list(self._activations)

    def __getitem__(self, layer: str) -> np.ndarray:
        """Array of shape (n_stimuli, n_units) (a read-only memory map for on-disk recordings)."""
        try:
            return self._activations[layer]
        except KeyError:
            raise unknown_name_error("recorded layer", layer, self.layers, listing="`recording.layers`") from None

    def __contains__(self, layer: object) -> bool:
        return layer in self._activations

    def __iter__(self) -> Iterator[str]:
        return iter(self._activations)

    def __len__(self) -> int:
        return len(self._activations)

    def __repr__(self) -> str:
        where = f", path={str(self.path)!r}" if self.path else ""
        return f"Recording(n_stimuli={self.n_stimuli}, layers={self.layers}{where})"

    @property
    def stimuli(self) -> pd.DataFrame:
        """Stimulus metadata: ``index`` (position in the pass) and ``label`` (-1 when unknown)."""
        return pd.DataFrame({"index": np.arange(self.n_stimuli), "label": self.labels})

    def units(self, layer: str) -> pd.DataFrame:
        """Unit metadata of a layer: one row per unit (see ``Reduction.units_frame``)."""
        self[layer]
        return self.reductions[layer].units_frame(self.shapes[layer])

    # -- summaries -----------------------------------------------------------------------------
    def _unit_stats(self, layer: str) -> dict[str, Any]:
        array = self[layer]
        n_units = array.shape[1]
        skipped = np.zeros(self.n_stimuli, dtype=bool)
        skipped[self.skipped] = True  # their rows are NaN: leave them out
        n = self.n_stimuli - int(skipped.sum())
        if n == 0:
            return {"mean": np.nan, "std": np.nan, "fraction_zero": np.nan, "dead_units": 0}
        rows = max(1, _CHUNK_BYTES // max(1, n_units * 8))
        total = np.zeros(n_units)
        total_sq = np.zeros(n_units)
        zeros = 0
        low = np.full(n_units, np.inf)
        high = np.full(n_units, -np.inf)
        for start in range(0, self.n_stimuli, rows):
            chunk = np.asarray(array[start : start + rows], dtype=np.float64)[~skipped[start : start + rows]]
            if not len(chunk):
                continue
            total += chunk.sum(axis=0)
            total_sq += np.square(chunk).sum(axis=0)
            zeros += int(np.count_nonzero(chunk == 0))
            low = np.minimum(low, chunk.min(axis=0))
            high = np.maximum(high, chunk.max(axis=0))
        mean = total.sum() / (n * n_units)
        variance = max(total_sq.sum() / (n * n_units) - mean**2, 0.0)
        return {
            "mean": mean,
            "std": float(np.sqrt(variance)),
            "fraction_zero": zeros / (n * n_units),
            "dead_units": int(np.count_nonzero(low == high)),
        }

    def to_frame(self) -> pd.DataFrame:
        """Per-layer summary, one row per layer.

        Columns: ``layer``, ``n_units``, ``shape`` (raw output per stimulus, e.g. "64x8x8"),
        ``reduction``, ``mean`` and ``std`` (over all stimuli and units), ``fraction_zero``
        (fraction of exactly-zero values) and ``dead_units`` (units constant over every stimulus,
        for example never-active ReLUs). Skipped stimuli (``skipped``) are left out. On-disk
        layers are read in chunks.
        """
        rows = []
        for layer in self.layers:
            rows.append(
                {
                    "layer": layer,
                    "n_units": self[layer].shape[1],
                    "shape": "x".join(map(str, self.shapes[layer])),
                    "reduction": self.reductions[layer].label(),
                    **self._unit_stats(layer),
                }
            )
        return pd.DataFrame(rows)

    # -- persistence ---------------------------------------------------------------------------
    def save(self, path: str | os.PathLike, overwrite: bool = False) -> Path:
        """Write the recording to a folder (the on-disk store format) and return its path.

        The folder is written beside ``path`` under a temporary name and renamed into place, so a
        killed save leaves no half-written recording at ``path``. ``overwrite`` replaces a
        recording: it deletes exactly the files the old manifest lists (nothing at all when one of
        them lies outside the folder); it never deletes a folder that holds anything else.

        Raises
        ------
        FileExistsError
            When ``path`` exists and ``overwrite`` is False, or when ``path`` is a file, a non-empty
            folder that holds no recording, or a recording folder that also holds other files.
        ValueError
            When the manifest at ``path`` lists files outside it (nothing is deleted).
        zoo._files.FolderLockedError
            When another process is writing a recording at ``path``.
        """
        path = Path(path)
        if self.path is not None and path.resolve() == self.path.resolve():
            return path
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path} exists; choose another path or pass overwrite=True")
        _check_replaceable(path)  # before writing anything
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
        dtype = np.result_type(*(self[layer].dtype for layer in self.layers))
        identity = {
            "model": self.model,
            "dataset": self.dataset,
            "layers": self.layers,
            "reductions": {layer: self.reductions[layer].describe() for layer in self.layers},
            "n_stimuli": self.n_stimuli,
            "dtype": dtype.name,
        }
        try:
            shutil.rmtree(tmp)
            sink = DiskSink(tmp, identity)
            sink.skipped = self.skipped.tolist()
            try:
                sink.open_layers(
                    {
                        layer: {
                            "n_units": self[layer].shape[1],
                            "shape": list(self.shapes[layer]),
                            "reduction": self.reductions[layer].describe(),
                        }
                        for layer in self.layers
                    }
                )
                for layer in self.layers:
                    array = self[layer]
                    rows = max(1, _CHUNK_BYTES // max(1, array.shape[1] * array.itemsize))
                    for start in range(0, self.n_stimuli, rows):
                        sink.write(layer, start, np.asarray(array[start : start + rows]))
                sink.write_labels(0, self.labels)
                sink.finish(self.extras)
            finally:
                sink.close()
            if path.exists():
                with writer_lock(path, what="recording"):
                    remove_listed_files(path, _check_replaceable(path))
            os.replace(tmp, path)  # onto the now empty folder
        finally:
            if tmp.exists():
                shutil.rmtree(tmp)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, mmap: bool = True, verify: bool = True) -> "Recording":
        """Open a recording folder; with ``mmap`` (default) layers are read lazily from disk.

        Parameters
        ----------
        path
            The recording folder.
        mmap
            Read the layers lazily (read-only memory maps) rather than into memory.
        verify
            Check every file against the size and SHA-256 recorded when the recording was
            completed, so that a damaged or edited file is refused rather than read. This reads
            every byte once; pass False to skip it for very large recordings you trust. Recordings
            written without checksums (before format version 2) load with a warning.

        Raises
        ------
        FileNotFoundError
            When ``path`` holds no recording.
        ValueError
            When the recording is incomplete (its pass was interrupted).
        zoo._files.CorruptFileError
            (a ValueError) When ``verify`` finds a file missing, changed or damaged; names the file.
        """
        path = Path(path)
        manifest = read_manifest(path)
        if not manifest.get("complete"):
            raise ValueError(
                f"the recording at {path} is incomplete ({flushed_stimuli(path, manifest)} of {manifest['n_stimuli']} "
                "stimuli flushed; the pass was interrupted). Continue it with probe.record(..., out=path, "
                "resume=True) or record again with overwrite=True"
            )
        if verify:
            verify_recording(path, manifest)
        mode = "r" if mmap else None
        order = manifest["layer_order"]
        activations = {layer: np.load(path / manifest["layers"][layer]["file"], mmap_mode=mode) for layer in order}
        identity = manifest.get("identity", {})
        return cls(
            activations,
            labels=np.load(path / manifest["labels"]),
            shapes={layer: tuple(manifest["layers"][layer]["shape"]) for layer in order},
            reductions={layer: manifest["layers"][layer]["reduction"] for layer in order},
            extras=load_extras(path, manifest.get("extras", {})),
            model=identity.get("model"),
            dataset=identity.get("dataset"),
            path=path,
            skipped=manifest.get("skipped"),
        )


def _check_replaceable(path: Path) -> list[str]:
    """The files to delete for a save to replace ``path`` (see ``replaceable_files``).

    The new recording is renamed into place, so a recording folder that also holds files its
    manifest does not list is refused rather than emptied.
    """
    listed = replaceable_files(path)
    if not listed:
        return listed
    own = {LOCK_FILE}
    for relative in listed:  # the files and the folders they lie in
        parts = Path(relative).parts
        own.update(Path(*parts[: i + 1]).as_posix() for i in range(len(parts)))
    others = sorted(entry.relative_to(path).as_posix() for entry in path.rglob("*"))
    others = [relative for relative in others if relative not in own]
    if others:
        raise FileExistsError(
            f"{path} holds a recording and other files its manifest does not list ({', '.join(others[:3])}"
            f"{', ...' if len(others) > 3 else ''}); overwrite replaces only a recording's own files: move those "
            "away or save to another path"
        )
    return listed
