"""Where recorded activations go: preallocated arrays in memory, or an on-disk store.

On-disk layout (a folder)::

    manifest.json          what was recorded (model, dataset, layers, reductions, n_stimuli),
                           how far the pass got (n_done) and whether it finished (complete);
                           once complete, the size and SHA-256 of every file below (files), the
                           stimuli skipped for NaN or inf values (skipped) and, for float16
                           storage, how many values became inf per layer (float16_overflow)
    labels.npy             int64 array of shape (n_stimuli,), -1 where unknown
    layers/NNN_<name>.npy  one array of shape (n_stimuli, n_units) per layer
    extras/<reducer>/NNN_<layer>.npz   results of custom reducers that are arrays
    progress/rank-NNN.json while a distributed recording runs: how far each rank got (see
                           ``probe._shards``); deleted when it completes
    .writer.lock           held by the process writing the folder (see ``zoo._files.writer_lock``)

Layer files are plain ``.npy`` files: they are created at full size up front and filled with
positioned writes (``os.pwrite``), so writing keeps the process's memory bounded whatever the
number of stimuli, and they are read lazily with ``np.load(mmap_mode="r")``. The manifest is
rewritten atomically at every flush with the number of stimuli safely on disk; ``complete`` is set
last, after the final flush, so a killed recording is recognised as incomplete.

Replacing a recording (``overwrite``) deletes exactly the files its manifest lists, and nothing at
all when one of them lies outside the folder; a folder that holds anything but a recording is
never written into.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
import re
import warnings
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np

from probe._shards import progress_file, read_progress, shard_entries, write_progress
from zoo._files import (
    LOCK_FILE,
    CorruptFileError,
    file_entry,
    inside,
    remove_listed_files,
    verify_files,
    writer_lock,
)
from zoo._io import atomic_write_json

__all__ = [
    "MANIFEST",
    "DiskSink",
    "MemorySink",
    "ShardSink",
    "layer_file_name",
    "load_extras",
    "read_manifest",
    "recording_files",
    "replaceable_files",
    "save_extras",
    "verify_recording",
]

MANIFEST = "manifest.json"
FORMAT = "probe-recording"
VERSION = 2  # 2: checksums of every file, skipped stimuli, float16 overflow counts


def layer_file_name(position: int, layer: str) -> str:
    """A safe, unique file name for a layer: its position and its name with odd characters replaced."""
    return f"{position:03d}_{re.sub(r'[^A-Za-z0-9_.-]+', '_', layer) or 'root'}"


def read_manifest(path: str | os.PathLike) -> dict[str, Any]:
    """Read a recording folder's manifest.

    Raises
    ------
    FileNotFoundError
        When ``path`` holds no recording.
    """
    manifest_path = Path(path) / MANIFEST
    if not manifest_path.is_file():
        raise FileNotFoundError(
            f"{path} is not a recording folder (no {MANIFEST}); record one with probe.record(..., out=PATH) "
            "or `probe record`"
        )
    try:
        manifest = json.loads(manifest_path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{manifest_path} is damaged (not JSON: {err}); record again into another folder") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise ValueError(f"{manifest_path} is not a probe recording manifest (format {found!r})")
    return manifest


def recording_files(manifest: dict[str, Any]) -> list[str]:
    """Every file a recording manifest lists, as paths relative to the folder, the manifest last.

    These are the files that replacing the recording deletes: labels, layer files, extras and
    whatever the checksums (``files``) name.
    """

    def entries(value: Any) -> list[Any]:  # a damaged manifest may hold anything
        return list(value.values()) if isinstance(value, dict) else []

    listed = [manifest.get("labels", "labels.npy")]
    listed += [entry.get("file") for entry in entries(manifest.get("layers")) if isinstance(entry, dict)]
    listed += [relative for files in entries(manifest.get("extras")) for relative in entries(files)]
    listed += list(manifest.get("files") or {})
    listed += list(manifest.get("progress") or [])
    return [*dict.fromkeys(relative for relative in listed if isinstance(relative, str)), MANIFEST]


def replaceable_files(path: str | os.PathLike) -> list[str]:
    """The files to delete so that a new recording can be written at ``path``.

    Nothing for a missing or empty folder (the writer's lock file does not count); the files its
    manifest lists for a recording (see ``recording_files``).

    Raises
    ------
    FileExistsError
        When ``path`` is a file or a non-empty folder that holds no recording: those are never
        deleted, whatever ``overwrite`` says.
    ValueError
        When the manifest lists a path outside the folder (it was edited or damaged).
    """
    path = Path(path)
    if not path.exists():
        return []
    if not path.is_dir():
        raise FileExistsError(f"out path {path} is a file; choose a folder path for the recording")
    if (path / MANIFEST).is_file():
        listed = recording_files(read_manifest(path))
        outside = [relative for relative in listed if not inside(path, relative)]
        if outside:
            raise ValueError(
                f"refusing to replace the recording at {path}: its manifest lists paths outside it ({outside[:3]}); "
                "it was edited or damaged. Delete the folder yourself if it is yours"
            )
        return listed
    content = sorted(entry.name for entry in path.iterdir() if entry.name != LOCK_FILE)
    if content:
        raise FileExistsError(
            f"out path {path} is a non-empty folder that holds no recording ({', '.join(content[:3])}"
            f"{', ...' if len(content) > 3 else ''}); overwrite replaces only a recording, never other files: "
            "choose another (new or empty) path"
        )
    return []


def verify_recording(path: str | os.PathLike, manifest: dict[str, Any]) -> None:
    """Check a complete recording's files against the sizes and SHA-256 its manifest recorded.

    A recording written before checksums (format version 1) is not checked; a warning says so.

    Raises
    ------
    zoo._files.CorruptFileError
        Naming the first file that is missing, changed or damaged, or one the checksums leave out.
    """
    files = manifest.get("files")
    if files is None:
        warnings.warn(
            f"the recording at {path} was written without checksums (format version {manifest.get('version')}), "
            "so its files cannot be verified; save it again (Recording.load(path).save(new_path)) to add them",
            stacklevel=3,
        )
        return
    unchecked = [relative for relative in recording_files(manifest)[:-1] if relative not in files]
    if unchecked:
        raise CorruptFileError(
            f"the manifest of recording {str(path)!r} names files without checksums ({unchecked[:3]}); "
            "it was edited or damaged"
        )
    verify_files(path, files, what="recording")


def _refuse_unlisted(path: Path) -> None:
    """Refuse to write over a file a new recording would create but its folder already holds unlisted."""
    if path.exists() or path.is_symlink():
        raise FileExistsError(
            f"{path} already exists but no recording manifest lists it, so it is not replaced; move it away "
            "or record into another folder"
        )


class NpyRowWriter:
    """Fills the rows of a preallocated ``.npy`` file with positioned writes (no memory map)."""

    def __init__(self, path: Path, shape: tuple[int, ...], dtype: np.dtype, create: bool = True):
        self.path, self.shape, self.dtype = Path(path), tuple(shape), np.dtype(dtype)
        if create:
            _refuse_unlisted(self.path)
            array = np.lib.format.open_memmap(self.path, mode="w+", dtype=self.dtype, shape=self.shape)
            del array  # header written and file sized (sparse); rows are filled below
        with open(self.path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            read_header = {(1, 0): np.lib.format.read_array_header_1_0}.get(version, np.lib.format.read_array_header_2_0)
            shape_on_disk, _, dtype_on_disk = read_header(handle)
            self._offset = handle.tell()
        if tuple(shape_on_disk) != self.shape or np.dtype(dtype_on_disk) != self.dtype:
            raise ValueError(
                f"{self.path} holds an array of shape {shape_on_disk} and dtype {dtype_on_disk}, expected "
                f"{self.shape} {self.dtype}; the recording folder is damaged: record again with overwrite=True"
            )
        self._row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize
        self._fd = os.open(self.path, os.O_RDWR)

    def write(self, start: int, rows: np.ndarray) -> None:
        """Write ``rows`` (shape (k, *shape[1:])) at row ``start``."""
        view = memoryview(np.ascontiguousarray(rows, dtype=self.dtype)).cast("B")
        position = self._offset + start * self._row_bytes
        while view:
            written = os.pwrite(self._fd, view, position)
            view, position = view[written:], position + written

    def sync(self) -> None:
        os.fsync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _existing_writers(path: Path, manifest: dict[str, Any]) -> tuple[NpyRowWriter, dict[str, NpyRowWriter]]:
    """Writers of the labels and of every layer file that a recording's manifest lists (already created)."""
    n_stimuli, dtype = int(manifest["n_stimuli"]), np.dtype(manifest["dtype"])
    labels = NpyRowWriter(path / manifest["labels"], (n_stimuli,), np.int64, create=False)
    writers = {}
    for name in manifest["layer_order"]:
        info = manifest["layers"][name]
        writers[name] = NpyRowWriter(path / info["file"], (n_stimuli, info["n_units"]), dtype, create=False)
    return labels, writers


class MemorySink:
    """Keeps reduced activations in preallocated NumPy arrays."""

    def __init__(self, n_stimuli: int, dtype: np.dtype):
        self.n_stimuli, self.dtype = n_stimuli, np.dtype(dtype)
        self.arrays: dict[str, np.ndarray] = {}
        self.labels = np.full(n_stimuli, -1, dtype=np.int64)
        self.n_done = 0
        self.skipped: list[int] = []
        self.float16_overflow: dict[str, dict[str, float]] = {}

    def open_layers(self, layers: dict[str, dict[str, Any]]) -> None:
        """Allocate one array per layer; ``layers[name]["n_units"]`` gives its width."""
        for name, info in layers.items():
            self.arrays[name] = np.empty((self.n_stimuli, info["n_units"]), dtype=self.dtype)

    def write(self, layer: str, start: int, rows: np.ndarray) -> None:
        self.arrays[layer][start : start + len(rows)] = rows

    def write_labels(self, start: int, labels: np.ndarray) -> None:
        self.labels[start : start + len(labels)] = labels

    def flush(self, n_done: int) -> None:
        self.n_done = n_done

    def finish(self, extras: dict[str, Any]) -> None:
        self.n_done = self.n_stimuli

    def close(self) -> None:
        pass


class DiskSink:
    """Streams reduced activations to a recording folder (see the module docstring).

    The sink holds the folder's writer lock from its creation to ``close``, so a second writer of
    the same folder fails at once (``zoo._files.FolderLockedError``, naming this process).

    Parameters
    ----------
    path
        The recording folder.
    identity
        What the recording is (model, dataset, layers, reductions, n_stimuli, dtype); compared
        with an existing manifest at ``path``.
    resume
        Continue an incomplete recording with the same identity from its last flushed stimulus.
    overwrite
        Replace the recording ``path`` holds: delete the files its manifest lists (and nothing,
        when one lies outside the folder). A folder holding anything else is never written into.
    shards
        For rank 0 of a distributed recording: every rank's stimuli (``probe._shards``). The
        manifest lists them; progress goes to rank 0's progress file instead of the manifest's
        ``n_done``, and ``n_done`` is the global index rank 0's shard is recorded up to. A
        recording is resumed only with the shards it was started with.

    Attributes
    ----------
    skipped
        Indices of the stimuli skipped for NaN or inf values (their rows are NaN).
    float16_overflow
        Layer -> ``{"count": values that became inf in float16, "largest": their largest magnitude}``.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        identity: dict[str, Any],
        resume: bool = False,
        overwrite: bool = False,
        shards: list[range] | None = None,
    ):
        self.path = Path(path)
        self.shards = shards
        self.identity = identity
        self.n_stimuli = int(identity["n_stimuli"])
        self.dtype = np.dtype(identity["dtype"])
        self.writers: dict[str, NpyRowWriter] = {}
        self.n_done = 0
        self.complete_existing = False
        self.started_here = False  # a new recording (not one adopted to resume or load)
        self.manifest: dict[str, Any] = {}
        self.skipped: list[int] = []
        self.float16_overflow: dict[str, dict[str, float]] = {}
        if self.path.exists() and not self.path.is_dir():
            raise FileExistsError(f"out path {self.path} is a file; choose a folder path for the recording")
        self._lock = ExitStack()
        try:
            self._lock.enter_context(writer_lock(self.path, what="recording"))
            self._prepare(resume, overwrite)
        except BaseException:
            self.close()
            raise

    # -- opening -------------------------------------------------------------------------------
    def _prepare(self, resume: bool, overwrite: bool) -> None:
        if (self.path / MANIFEST).is_file() and not overwrite:
            self._adopt(read_manifest(self.path), resume)
            return
        remove_listed_files(self.path, replaceable_files(self.path))
        self.manifest = {
            "format": FORMAT,
            "version": VERSION,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "identity": self.identity,
            "n_stimuli": self.n_stimuli,
            "dtype": self.dtype.name,
            "complete": False,
            "n_done": 0,
            "layers": {},
            "layer_order": [],
            "labels": "labels.npy",
            "extras": {},
            "skipped": [],
            "float16_overflow": {},
        }
        if self.shards is not None:
            self.manifest["shards"] = shard_entries(self.shards)
            self.manifest["progress"] = [progress_file(rank) for rank in range(len(self.shards))]
        # The manifest comes first, so that a killed start leaves a recording, not a folder of unknown files.
        atomic_write_json(self.path / MANIFEST, self.manifest)
        self.started_here = True
        (self.path / "layers").mkdir(exist_ok=True)
        self._labels = NpyRowWriter(self.path / "labels.npy", (self.n_stimuli,), np.int64)
        self._labels.write(0, np.full(self.n_stimuli, -1, dtype=np.int64))

    def _adopt(self, old: dict[str, Any], resume: bool) -> None:
        differences = describe_differences(old.get("identity", {}), self.identity)
        if differences:
            raise FileExistsError(
                f"out path {self.path} holds a different recording ({'; '.join(differences)}); "
                "choose another out path or pass overwrite=True to replace it"
            )
        if old["complete"]:
            if not resume:
                raise FileExistsError(
                    f"out path {self.path} already holds this complete recording; load it with "
                    "probe.Recording.load(path), or pass overwrite=True to record again"
                )
            self.manifest, self.n_done, self.complete_existing = old, self.n_stimuli, True
            return
        if not resume:
            raise FileExistsError(
                f"out path {self.path} holds an incomplete recording ({flushed_stimuli(self.path, old)} of "
                f"{old['n_stimuli']} stimuli flushed); pass resume=True to continue it or overwrite=True to start again"
            )
        self._check_shards(old)
        self.manifest, self.n_done = old, int(old["n_done"])
        self.skipped = [int(index) for index in old.get("skipped", [])]
        self.float16_overflow = dict(old.get("float16_overflow", {}))
        if self.shards is not None:
            progress = read_progress(self.path, 0, self.shards[0])
            self.n_done, self.skipped = progress["n_done"], progress["skipped"]
            self.float16_overflow = progress["float16_overflow"]
        self._labels, self.writers = _existing_writers(self.path, old)

    def _check_shards(self, old: dict[str, Any]) -> None:
        """Refuse to resume with other shards (process count or batch size) than the recording was started with."""
        stored = old.get("shards")
        wanted = None if self.shards is None else shard_entries(self.shards)
        if stored == wanted:
            return
        def how(shards: Any) -> str:
            if not shards:
                return "one process"
            return f"{len(shards)} processes with batches of {shards[0]['stop'] - shards[0]['start']} stimuli or fewer"
        raise FileExistsError(
            f"the incomplete recording at {self.path} was started by {how(stored)}, and this run is {how(wanted)}; "
            "resume it as it was started (the same torchrun --nproc-per-node and batch_size) or pass overwrite=True"
        )

    # -- writing -------------------------------------------------------------------------------
    @property
    def layers(self) -> dict[str, dict[str, Any]]:
        """Layer entries of the manifest (empty until the first batch has run)."""
        return self.manifest["layers"]

    def open_layers(self, layers: dict[str, dict[str, Any]]) -> None:
        """Create one file per layer; ``layers[name]`` holds n_units, shape and reduction."""
        for position, (name, info) in enumerate(layers.items()):
            entry = dict(info, file=f"layers/{layer_file_name(position, name)}.npy")
            self.manifest["layers"][name] = entry  # listed before it exists, so that overwrite deletes it
        self.manifest["layer_order"] = list(layers)
        atomic_write_json(self.path / MANIFEST, self.manifest)
        for name, entry in self.manifest["layers"].items():
            self.writers[name] = NpyRowWriter(self.path / entry["file"], (self.n_stimuli, entry["n_units"]), self.dtype)

    def write(self, layer: str, start: int, rows: np.ndarray) -> None:
        self.writers[layer].write(start, rows)

    def write_labels(self, start: int, labels: np.ndarray) -> None:
        self._labels.write(start, labels)

    def flush(self, n_done: int, write_manifest: bool = True) -> None:
        """Make the stimuli up to ``n_done`` durable, then say so in the manifest (or, for rank 0 of a
        distributed recording, in its progress file)."""
        for writer in [*self.writers.values(), self._labels]:
            writer.sync()
        self.n_done = int(n_done)
        if self.shards is not None:
            if write_manifest:
                write_progress(self.path, 0, self.n_done, self.skipped, self.float16_overflow)
            return
        self.manifest["n_done"] = self.n_done
        self.manifest["skipped"] = list(self.skipped)
        self.manifest["float16_overflow"] = self.float16_overflow
        if write_manifest:
            atomic_write_json(self.path / MANIFEST, self.manifest)

    def finish(self, extras: dict[str, Any]) -> None:
        """Final flush, extras and checksums, then the completion marker (the manifest, written atomically, last).

        For a distributed recording, call it on rank 0 once every rank has flushed its shard, with
        ``skipped``, ``float16_overflow`` and ``extras`` gathered from all of them.
        """
        self.flush(self.n_stimuli, write_manifest=False)
        if self.shards is not None:  # every rank is done: their progress files go before completion
            remove_listed_files(self.path, self.manifest.pop("progress", []))
        self.manifest["n_done"] = self.n_stimuli
        self.manifest["skipped"] = sorted(self.skipped)
        self.manifest["float16_overflow"] = self.float16_overflow
        self.manifest["extras"] = save_extras(self.path, extras, self.manifest["layer_order"])
        for relative in (f for files in self.manifest["extras"].values() for f in files.values()):
            with open(self.path / relative, "rb") as handle:
                os.fsync(handle.fileno())
        self.manifest.pop("files", None)
        self.manifest["files"] = {relative: file_entry(self.path / relative) for relative in recording_files(self.manifest)[:-1]}
        self.manifest["complete"] = True
        atomic_write_json(self.path / MANIFEST, self.manifest)

    def discard_if_empty(self) -> bool:
        """Delete the new recording this sink started when none of its stimuli reached the disk.

        Exactly the files its manifest lists go (and ``layers/`` when left empty), so that a pass
        that failed before its first flush leaves nothing that asks the next one for ``resume`` or
        ``overwrite``. A recording adopted to resume, or one with flushed stimuli (which ``resume``
        continues), stays. Call it before ``close``, while the writer lock is held.

        Returns
        -------
        bool
            Whether the recording was deleted.
        """
        if not self.started_here:
            return False
        try:
            on_disk = read_manifest(self.path)
        except (FileNotFoundError, ValueError):
            return False
        if on_disk.get("complete") or flushed_stimuli(self.path, on_disk):
            return False
        for writer in self.writers.values():
            writer.close()
        if hasattr(self, "_labels"):
            self._labels.close()
        remove_listed_files(self.path, recording_files(self.manifest))
        layers = self.path / "layers"
        if layers.is_dir() and not any(layers.iterdir()):
            layers.rmdir()
        return True

    def close(self) -> None:
        """Close the files and release the folder's writer lock."""
        for writer in self.writers.values():
            writer.close()
        if hasattr(self, "_labels"):
            self._labels.close()
        self._lock.close()


class ShardSink:
    """A rank's writer (rank 1 and up) into the recording folder that rank 0 created and holds locked.

    It writes its shard's rows and labels at their global indices into the existing files, and its
    progress file at every flush; the manifest is rank 0's alone.

    Parameters
    ----------
    path
        The recording folder (its manifest lists the layers once rank 0 has opened them).
    rank
        This process's rank (1 or more).
    shard
        The stimuli this rank records.
    """

    complete_existing = False

    def __init__(self, path: str | Path, rank: int, shard: range):
        self.path, self.rank, self.shard = Path(path), rank, shard
        if not (self.path / MANIFEST).is_file():
            raise FileNotFoundError(
                f"rank {rank} finds no recording at {self.path}, which rank 0 has created: the folder must be on a file "
                "system that every process sees (a shared disk when the processes run on several machines)"
            )
        self.manifest = read_manifest(self.path)
        progress = read_progress(self.path, rank, shard)
        self.n_done = progress["n_done"]
        self.skipped: list[int] = progress["skipped"]
        self.float16_overflow: dict[str, dict[str, float]] = progress["float16_overflow"]
        self._labels, self.writers = _existing_writers(self.path, self.manifest)

    @property
    def layers(self) -> dict[str, dict[str, Any]]:
        """The layer entries of rank 0's manifest."""
        return self.manifest["layers"]

    def write(self, layer: str, start: int, rows: np.ndarray) -> None:
        self.writers[layer].write(start, rows)

    def write_labels(self, start: int, labels: np.ndarray) -> None:
        self._labels.write(start, labels)

    def flush(self, n_done: int) -> None:
        """Make this rank's rows up to ``n_done`` durable, then say so in its progress file."""
        for writer in [*self.writers.values(), self._labels]:
            writer.sync()
        self.n_done = int(n_done)
        write_progress(self.path, self.rank, self.n_done, self.skipped, self.float16_overflow)

    def discard_if_empty(self) -> bool:
        """Never deletes anything: the folder is rank 0's."""
        return False

    def close(self) -> None:
        for writer in [*self.writers.values(), self._labels]:
            writer.close()


def flushed_stimuli(path: str | os.PathLike, manifest: dict[str, Any]) -> int:
    """How many stimuli an incomplete recording holds safely on disk (summed over the ranks of a distributed one)."""
    shards = manifest.get("shards")
    if not shards:
        return int(manifest.get("n_done") or 0)
    total = 0
    for rank, entry in enumerate(shards):
        shard = range(int(entry["start"]), int(entry["stop"]))
        total += read_progress(path, rank, shard)["n_done"] - shard.start
    return total


def describe_differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Human-readable list of the identity fields (dotted paths) that differ between two recordings."""
    if isinstance(old, dict) and isinstance(new, dict):
        differences = []
        for key in sorted(set(old) | set(new), key=str):
            differences += describe_differences(old.get(key), new.get(key), f"{prefix}{key}.")
        return differences
    if old == new:
        return []
    return [f"{prefix.rstrip('.')}: {_short(old)} there vs {_short(new)} now"]


def _short(value: Any, limit: int = 80) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _as_arrays(value: Any) -> dict[str, np.ndarray] | None:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if isinstance(value, np.ndarray) or np.isscalar(value):
        return {"value": np.asarray(value)}
    if isinstance(value, dict) and all(isinstance(v, np.ndarray) or np.isscalar(v) for v in value.values()):
        return {str(k): np.asarray(v) for k, v in value.items()}
    return None


def save_extras(path: Path, extras: dict[str, Any], layer_order: list[str]) -> dict[str, Any]:
    """Save custom reducers' results that are arrays, dicts of arrays or dataclasses of arrays.

    Returns the manifest entry ``{reducer: {layer or "*": file}}``. Other results are skipped
    with a warning (they stay available on the in-memory ``Recording`` returned by ``record``).
    """
    entry: dict[str, Any] = {}
    for reducer, result in extras.items():
        per_layer = result if isinstance(result, dict) and set(result) <= set(layer_order) and result else {"*": result}
        for position, (layer, value) in enumerate(per_layer.items()):
            arrays = _as_arrays(value)
            if arrays is None:
                warnings.warn(
                    f"result of reducer {reducer!r} for {layer!r} ({type(value).__name__}) is not arrays; "
                    "it is not saved to disk",
                    stacklevel=3,
                )
                continue
            relative = f"extras/{layer_file_name(0, reducer)[4:]}/{layer_file_name(position, layer)}.npz"
            (path / relative).parent.mkdir(parents=True, exist_ok=True)
            _refuse_unlisted(path / relative)
            with open(path / relative, "wb") as handle:
                np.savez(handle, **arrays)
            entry.setdefault(reducer, {})[layer] = relative
    return entry


def load_extras(path: Path, entry: dict[str, Any]) -> dict[str, Any]:
    """Load what ``save_extras`` wrote: dicts of arrays (a single array for plain-array results)."""
    extras: dict[str, Any] = {}
    for reducer, files in entry.items():
        loaded = {}
        for layer, relative in files.items():
            with np.load(path / relative, allow_pickle=False) as data:
                arrays = {key: data[key] for key in data.files}
            loaded[layer] = arrays["value"] if set(arrays) == {"value"} else arrays
        extras[reducer] = loaded.get("*") if set(loaded) == {"*"} else loaded
    return extras
