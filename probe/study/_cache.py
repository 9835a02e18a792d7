"""The recording cache behind ``probe analyze``: each (model, stimuli, layer, reduction) recorded once.

A study runs several models over one set of stimuli. Running it again, or running a study that adds
a model or a layer, reads what earlier runs recorded and records only what is new, in one pass per
model; a killed run leaves an incomplete recording that the next run resumes.

Layout of a cache folder::

    index.json               {"version", "layers": {layer key: {"folder", "layer"}},
                              "verified": {folder: {file: [bytes, mtime_ns]}}}; rewritten atomically
                              under the folder's writer lock, after re-reading it, so that two
                              processes never lose each other's entries
    rec-<16 hex>/            a probe recording folder (``probe._store``) holding the layers one pass
                             recorded; its name is a hash of those layers' keys, so that a killed
                             run, run again, finds the same folder and resumes it
    rec-<16 hex>.keys.json   the layer keys that folder was started for, written before it: a lost
                             or damaged index is rebuilt from these without recording again
    .writer.lock             held while index.json is rewritten

The key of a cached layer is a SHA-256 of ``CACHE_VERSION``, the model key (a hash of the model's
architecture and weights, or one the caller gives), the data key (given by the caller: it names the
dataset, split, subset, options and preprocessing), the layer's name, its reduction and layout
(after resolving per-layer dicts and globs, aliases made canonical) and the stored dtype.

Verification of cache hits (``verify=``)
-----------------------------------------
A complete recording's manifest holds the size and SHA-256 of each of its files. Hashing every
cached file on every run reads the whole cache each time, which for a large cache costs more than
the analyses. So by default (``verify="changed"``):

- every read checks each file's size against the manifest (one ``stat`` per file), so a truncated
  or extended file is always refused;
- the SHA-256 of every file of a folder is checked the first time the cache reads that folder and
  again whenever a file's size or modification time (nanoseconds) differs from the ones the index
  kept when its checksums last matched (a recording this cache wrote counts as checked: the engine
  computed its checksums from the files on disk). An edit that keeps a file's size still moves its
  modification time, so it is caught.

What this default misses is damage that changes neither size nor modification time (bit rot on
the disk, an edit followed by resetting the time); ``verify="full"`` checks every SHA-256 on every
read. A folder that fails either check is refused, never silently used nor silently deleted: the
error names it and says that deleting it is safe (the next run records its layers again).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
import warnings
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from torch import nn

from probe._layers import LayerSelection, per_layer, resolve_layers
from probe._layouts import Layout
from probe._record import STORED_DTYPES, model_fingerprint, record
from probe._recording import Recording
from probe._reducers import Reduction
from probe._store import MANIFEST, read_manifest, verify_recording
from zoo._files import CorruptFileError, FolderLockedError, writer_lock
from zoo._io import atomic_write_json

__all__ = ["CACHE_VERSION", "VERIFY_MODES", "CachedRecording", "RecordingCache"]

#: Part of every layer key: bump it when what a cached layer holds changes meaning.
CACHE_VERSION = 1
#: ``RecordingCache(verify=...)``: see the module docstring.
VERIFY_MODES = ("changed", "full")
INDEX = "index.json"
_KEYS_SUFFIX = ".keys.json"
_FOLDER_PREFIX = "rec-"
_LOCK_TIMEOUT_S = 60.0  # how long an index update waits for another process's
_LOCK_POLL_S = 0.02


@dataclass
class CachedRecording:
    """What ``RecordingCache.get`` returns.

    Attributes
    ----------
    recording
        The requested layers, in the requested order, with the stimuli's labels (on-disk layers are
        read-only memory maps). A module called k times per forward pass gives the arrays
        ``name#1`` ... ``name#k``, as ``probe.record`` names them.
    recorded
        Layers recorded by this call.
    cached
        Layers read from the cache (recorded by an earlier call, or adopted from a complete folder
        a killed run left out of the index).
    folders
        The on-disk recording folders the layers were read from.
    sources
        Layer -> the folder it was read from.
    keys
        Layer -> its cache key.
    """

    recording: Recording
    recorded: list[str]
    cached: list[str]
    folders: list[Path]
    sources: dict[str, Path] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)

    def from_cache(self, layer: str) -> bool:
        """True when ``layer`` was read from the cache rather than recorded by this call."""
        if layer not in self.sources:
            raise KeyError(f"layer {layer!r} is not in this recording; its layers: {list(self.sources)}")
        return layer in self.cached

    def to_frame(self) -> pd.DataFrame:
        """One row per requested layer: ``layer``, ``arrays``, ``source`` (``"cache"`` or
        ``"recorded"``) and ``folder`` (the cache folder's name)."""
        rows = [
            {
                "layer": layer,
                "arrays": ", ".join(_arrays_of(self.recording.layers, layer)),
                "source": "cache" if layer in self.cached else "recorded",
                "folder": folder.name,
            }
            for layer, folder in self.sources.items()
        ]
        return pd.DataFrame(rows, columns=["layer", "arrays", "source", "folder"])

    def describe(self) -> str:
        """One sentence for a report: which layers came from the cache and which were recorded."""
        parts = []
        if self.cached:
            parts.append(f"{len(self.cached)} read from the cache ({', '.join(self.cached)})")
        if self.recorded:
            parts.append(f"{len(self.recorded)} recorded now ({', '.join(self.recorded)})")
        n = len(self.sources)
        return f"{n} layer{'s' if n != 1 else ''} over {self.recording.n_stimuli} stimuli: " + "; ".join(parts)


class RecordingCache:
    """Recordings of layers kept on disk, keyed by model, data, layer, reduction, layout and dtype.

    Parameters
    ----------
    folder
        The cache folder, e.g. ``<study out>/cache``; created on first use.
    verify
        ``"changed"`` (default): sizes on every read, SHA-256 when a folder is first read and when
        a file's size or modification time changed since; ``"full"``: SHA-256 on every read. See
        the module docstring for why.

    Examples
    --------
    >>> cache = RecordingCache(out / "cache")
    >>> got = cache.get(model, dataset, ["conv1", "fc"], data_key="digits/test/v1")
    >>> got.recording["conv1"].shape, got.recorded, got.cached
    """

    def __init__(self, folder: str | os.PathLike, verify: str = "changed"):
        if verify not in VERIFY_MODES:
            raise ValueError(f"verify must be one of {VERIFY_MODES}, got {verify!r}")
        self.folder = Path(folder)
        self.verify = verify

    def __repr__(self) -> str:
        return f"RecordingCache({str(self.folder)!r}, verify={self.verify!r})"

    # -- keys ----------------------------------------------------------------------------------
    def model_key(self, model: nn.Module) -> str:
        """SHA-256 (hex) of a model's architecture and weights, the same in every process.

        It hashes ``probe._record.model_fingerprint`` (class, config, SHA-256 of the weights), the
        module tree as ``repr(model)`` shows it, and every tensor's name, shape and dtype (the
        weights' digest alone does not tell a (4, 6) weight from a (6, 4) one, nor ReLU from Tanh).
        Pass ``model_key=`` to ``get`` for models whose ``repr`` is not stable.
        """
        description = {
            "fingerprint": model_fingerprint(model),
            "architecture": repr(model),
            "tensors": [[name, list(t.shape), str(t.dtype)] for name, t in model.state_dict().items()],
        }
        return _sha256(description)

    def layer_key(
        self, model_key: str, data_key: str, layer: str, reduce: Any = "auto", layout: Any = None, dtype: str = "float32"
    ) -> str:
        """The cache key of one layer (64 hex digits); ``reduce`` and ``layout`` are this layer's own."""
        return _sha256(
            {
                "cache_version": CACHE_VERSION,
                "model": model_key,
                "data": data_key,
                "layer": layer,
                "reduce": _reduce_description(reduce),
                "layout": None if layout is None else Layout.parse(layout).name,
                "dtype": dtype,
            }
        )

    def folder_for(self, keys: list[str]) -> Path:
        """The recording folder a pass recording the layers of ``keys`` writes (order-free)."""
        digest = hashlib.sha256("\n".join(sorted(set(keys))).encode()).hexdigest()
        return self.folder / f"{_FOLDER_PREFIX}{digest[:16]}"

    # -- the one call --------------------------------------------------------------------------
    def get(
        self,
        model: nn.Module,
        stimuli: Any,
        layers: LayerSelection,
        *,
        data_key: str,
        model_key: str | None = None,
        reduce: Any = "auto",
        layout: Any = None,
        dtype: str = "float32",
        batch_size: int = 64,
        device: Any = "auto",
        progress: bool = True,
        flush_every: float = 10.0,
    ) -> CachedRecording:
        """The recording of ``layers`` of ``model`` over ``stimuli``: cached layers read, the others
        recorded in one pass (and cached).

        Parameters
        ----------
        model, stimuli, layers
            As ``probe.record`` takes them (layers resolved by ``probe.resolve_layers``).
        data_key
            An opaque string that names the stimuli: dataset, split, subset, options and
            preprocessing. Change it whenever the stimuli change; the cache does not hash them
            (it checks only their number).
        model_key
            Default ``self.model_key(model)``.
        reduce, layout, dtype
            As ``probe.record`` takes them; per-layer dicts and globs are resolved before keying,
            so ``reduce={"fc*": "flatten"}`` and ``reduce="flatten"`` give ``fc1`` the same key.
        batch_size, device, progress, flush_every
            Passed to ``probe.record`` (they do not change what is recorded, so not the keys);
            ``flush_every`` is how many seconds of a killed pass are lost.

        Returns
        -------
        CachedRecording

        Raises
        ------
        zoo._files.CorruptFileError
            A cached folder's file does not match its manifest (size, or SHA-256 when checked); the
            message names the folder, which is safe to delete.
        FileExistsError
            The folder a pass must write holds another recording (resume refused); named, and safe
            to delete.
        ValueError
            The folders read hold other stimuli (number, labels or skipped stimuli) than each other
            or than ``stimuli``: the data key does not tell these stimuli apart.
        """
        if dtype not in STORED_DTYPES:
            raise ValueError(f"dtype must be one of {list(STORED_DTYPES)}, got {dtype!r}")
        names = resolve_layers(model, layers)
        model_key = self.model_key(model) if model_key is None else model_key
        reduces = per_layer(reduce, names, "reduce", "auto")
        layouts = per_layer(layout, names, "layout", None)
        keys = {name: self.layer_key(model_key, data_key, name, reduces[name], layouts[name], dtype) for name in names}

        index = self._read_index()
        found = self._find(keys, index)
        n_stimuli = _count(stimuli)
        opened, verified = {}, {}
        for folder in dict.fromkeys(found.values()):  # every cached folder checked before anything is recorded
            opened[folder], stamp = self._open(folder, index)
            _check_count(opened[folder], n_stimuli, data_key, self.folder / folder)
            if stamp is not None:
                verified[folder] = stamp
        missing = [name for name in names if name not in found]
        recorded: list[str] = []
        if missing:
            missing = _in_model_order(model, missing)
            folder = self.folder_for([keys[name] for name in missing])
            adopted = _is_complete(folder)
            self._write_keys(folder, {keys[name]: name for name in missing})
            opened[folder.name] = self._record(
                model, stimuli, folder, missing, reduces, layouts, dtype, batch_size, device, progress, flush_every
            )
            # checksummed from the files on disk by the engine (or verified when adopted): a checked stamp
            verified[folder.name] = _check_sizes(folder, read_manifest(folder))
            found.update(dict.fromkeys(missing, folder.name))
            recorded = [] if adopted else [name for name in names if name in missing]
        recording = _combine(names, found, opened, self.folder)  # refused folders are not indexed
        entries = {keys[name]: {"folder": found[name], "layer": name} for name in names}
        if verified or any(index["layers"].get(key) != entry for key, entry in entries.items()):
            self._update_index(entries, verified)
        return CachedRecording(
            recording=recording,
            recorded=recorded,
            cached=[name for name in names if name not in recorded],
            folders=[self.folder / name for name in dict.fromkeys(found[n] for n in names)],
            sources={name: self.folder / found[name] for name in names},
            keys=keys,
        )

    def incomplete_folders(self) -> list[Path]:
        """Recording folders of passes that did not finish (killed runs). The next ``get`` of the same
        layers resumes one; one whose layers were since recorded in another pass stays behind. They
        are cache folders: deleting one loses only what it had recorded, but not while a run is
        recording into this cache (its folder is incomplete too)."""
        folders = (path for path in self.folder.glob(f"{_FOLDER_PREFIX}*") if path.is_dir())
        return sorted(path for path in folders if (path / MANIFEST).is_file() and not _is_complete(path))

    # -- finding and opening cached layers -----------------------------------------------------
    def _find(self, keys: dict[str, str], index: dict[str, Any]) -> dict[str, str]:
        """Layer -> folder name for the layers held by a complete folder: from the index, else from
        the key files that folders are started with (an index a killed run did not update, or lost)."""
        orders: dict[str, list[str]] = {}  # folder -> its arrays ([] when not a complete recording)

        def holds(folder: str, layer: str) -> bool:
            if folder not in orders:
                orders[folder] = _complete_arrays(self.folder, folder)
            return bool(_arrays_of(orders[folder], layer))

        found: dict[str, str] = {}
        for name, key in keys.items():
            entry = index["layers"].get(key)
            if entry and entry.get("layer") == name and holds(entry["folder"], name):
                found[name] = entry["folder"]
        if len(found) < len(keys):
            started = self._read_keys_files()
            for name, key in keys.items():
                folder = next((f for f in started.get(key, []) if holds(f, name)), None)
                if name not in found and folder is not None:
                    found[name] = folder
        return found

    def _open(self, folder: str, index: dict[str, Any]) -> tuple[Recording, dict[str, list[int]] | None]:
        """Load a cached folder after checking it (see the module docstring); refuse a damaged one.

        Returns the recording and, when its checksums were checked now, its files' stamp to keep.
        """
        path = self.folder / folder
        try:
            manifest = read_manifest(path)
            stamp = _check_sizes(path, manifest)
            checked = self.verify == "full" or index["verified"].get(folder) != stamp
            if checked:
                verify_recording(path, manifest)
            return Recording.load(path, verify=False), (stamp if checked else None)
        except (CorruptFileError, ValueError, KeyError, OSError) as err:
            raise CorruptFileError(
                f"cache folder {str(path)!r} is damaged: {err}. It is a cache folder, so deleting it is safe: "
                "the next run records its layers again"
            ) from err

    # -- recording what is missing -------------------------------------------------------------
    def _record(
        self,
        model: nn.Module,
        stimuli: Any,
        folder: Path,
        missing: list[str],
        reduces: dict[str, Any],
        layouts: dict[str, Any],
        dtype: str,
        batch_size: int,
        device: Any,
        progress: bool,
        flush_every: float,
    ) -> Recording:
        """Record ``missing`` in one pass into ``folder``: a new recording, the resumption of a killed
        one, or (a complete one) adopted after ``probe.record`` checked it is the same recording."""
        existed = (folder / MANIFEST).is_file()
        stated = {name: layouts[name] for name in missing if layouts[name] is not None}
        try:
            recording = record(
                model,
                stimuli,
                missing,
                reduce={name: reduces[name] for name in missing},
                layout=stated or None,
                dtype=dtype,
                batch_size=batch_size,
                device=device,
                out=folder,
                resume=True,
                progress=progress,
                flush_every=flush_every,
            )
        except FileExistsError as err:
            raise FileExistsError(_refused(folder, err)) from err
        except ValueError as err:  # the engine's refusals of what the folder holds name it
            if not existed or str(folder) not in str(err):
                raise
            raise ValueError(_refused(folder, err)) from err
        except FolderLockedError as err:
            raise FolderLockedError(
                f"{err} (another process is recording the same layers into the cache folder {str(folder)!r}; "
                "run again once it has finished, and this run will read them from the cache)"
            ) from err
        return recording

    def _write_keys(self, folder: Path, keys: dict[str, str]) -> None:
        """Write the key file of a folder before recording into it (once)."""
        path = folder.with_name(folder.name + _KEYS_SUFFIX)
        content = {"cache_version": CACHE_VERSION, "folder": folder.name, "layers": keys}
        if _read_json(path) != content:
            atomic_write_json(path, content)

    def _read_keys_files(self) -> dict[str, list[str]]:
        """Layer key -> the folders started for it (a killed pass's, a later one's), from the key files."""
        started: dict[str, list[str]] = {}
        for path in sorted(self.folder.glob(f"{_FOLDER_PREFIX}*{_KEYS_SUFFIX}")):
            content = _read_json(path)
            if not isinstance(content, dict) or content.get("cache_version") != CACHE_VERSION:
                continue
            folder = path.name[: -len(_KEYS_SUFFIX)]
            for key in content.get("layers") or {}:
                started.setdefault(key, []).append(folder)
        return started

    # -- the index -----------------------------------------------------------------------------
    def _read_index(self) -> dict[str, Any]:
        """The index (empty when missing; a damaged one is ignored with a warning and rebuilt)."""
        path = self.folder / INDEX
        empty = {"version": CACHE_VERSION, "layers": {}, "verified": {}}
        if not path.is_file():
            return empty
        content = _read_json(path)
        if (
            not isinstance(content, dict)
            or not isinstance(content.get("layers"), dict)
            or not isinstance(content.get("verified", {}), dict)
        ):
            warnings.warn(f"the recording cache index {path} is damaged; it is rebuilt from the cache folders", stacklevel=3)
            return empty
        if content.get("version") != CACHE_VERSION:
            return empty  # another cache version: its keys differ anyway
        layers = {key: entry for key, entry in content["layers"].items() if isinstance(entry, dict) and "folder" in entry}
        return {"version": CACHE_VERSION, "layers": layers, "verified": dict(content.get("verified", {}))}

    def _update_index(self, entries: dict[str, dict[str, str]], verified: dict[str, dict[str, list[int]]]) -> None:
        """Add ``entries`` and verification stamps to the index: re-read under the lock, merged,
        written atomically, so that concurrent writers keep each other's entries."""
        with self._index_lock():
            index = self._read_index()
            index["layers"].update(entries)
            index["verified"].update(verified)
            atomic_write_json(self.folder / INDEX, index)

    @contextmanager
    def _index_lock(self) -> Iterator[None]:
        """The cache folder's writer lock, waited for (index updates are short)."""
        deadline = time.monotonic() + _LOCK_TIMEOUT_S
        with ExitStack() as stack:
            while True:
                try:
                    stack.enter_context(writer_lock(self.folder, what="recording cache"))
                    break
                except FolderLockedError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(_LOCK_POLL_S)
            yield


# -- helpers ------------------------------------------------------------------------------------
def _sha256(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def _reduce_description(value: Any) -> dict[str, Any]:
    """A reduction's canonical description (aliases such as ``"mean"`` made canonical)."""
    return (value if isinstance(value, Reduction) else Reduction(value)).describe()


def _arrays_of(arrays: list[str], layer: str) -> list[str]:
    """The arrays ``probe.record`` made of ``layer``: itself, or ``layer#1``... when called several times."""
    if layer in arrays:
        return [layer]
    pattern = re.compile(re.escape(layer) + r"#\d+")
    return [name for name in arrays if pattern.fullmatch(name)]


def _in_model_order(model: nn.Module, names: list[str]) -> list[str]:
    """``names`` in ``named_modules()`` order: one set of layers is always recorded in one order,
    so that a killed pass is resumed whatever order the next call asks them in."""
    order = {name: position for position, (name, _) in enumerate(model.named_modules())}
    return sorted(names, key=lambda name: (order.get(name, len(order)), name))


def _complete_arrays(root: Path, folder: Any) -> list[str]:
    """The arrays of the complete recording ``root / folder``; [] when it is none (missing, incomplete, damaged)."""
    if not _is_safe_name(folder):
        return []
    try:
        manifest = read_manifest(root / folder)
        return list(manifest["layer_order"]) if manifest.get("complete") else []
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return []


def _is_safe_name(folder: Any) -> bool:
    return isinstance(folder, str) and folder.startswith(_FOLDER_PREFIX) and "/" not in folder and ".." not in folder


def _is_complete(path: Path) -> bool:
    try:
        return bool(read_manifest(path).get("complete"))
    except (FileNotFoundError, ValueError):
        return False


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return None


def _check_sizes(path: Path, manifest: dict[str, Any]) -> dict[str, list[int]]:
    """Check every file's size against the manifest; return each file's [bytes, mtime_ns]."""
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise CorruptFileError(f"the manifest of {str(path)!r} has no file checksums, so its files cannot be checked")
    stamp = {}
    for relative, entry in sorted(files.items()):
        try:
            stat = (path / relative).stat()
        except FileNotFoundError:
            raise CorruptFileError(f"{str(path / relative)!r} is missing, but the manifest lists it") from None
        if stat.st_size != entry.get("bytes"):
            raise CorruptFileError(
                f"{str(path / relative)!r} has {stat.st_size} bytes, but {entry.get('bytes')} were written "
                "(truncated or changed)"
            )
        stamp[relative] = [stat.st_size, stat.st_mtime_ns]
    return stamp


def _refused(folder: Path, err: Exception) -> str:
    return (
        f"the cache folder {str(folder)!r} cannot be resumed or reused: {err}. It is a cache folder, so deleting it "
        "is safe: the next run records its layers again"
    )


def _combine(names: list[str], found: dict[str, str], opened: Mapping[str, Recording], root: Path) -> Recording:
    """One recording of ``names`` from the folders that hold them, after checking that every folder
    holds the same stimuli (their number, labels and skipped stimuli)."""
    used = list(dict.fromkeys(found[name] for name in names))
    first = opened[used[0]]
    for folder in used[1:]:
        other = opened[folder]
        problem = (
            f"{first.n_stimuli} vs {other.n_stimuli} stimuli"
            if other.n_stimuli != first.n_stimuli
            else "other labels"
            if not np.array_equal(other.labels, first.labels)
            else "other skipped stimuli"
            if not np.array_equal(other.skipped, first.skipped)
            else None
        )
        if problem:
            raise ValueError(
                f"the cache folders {str(root / used[0])!r} and {str(root / folder)!r} hold different stimuli ({problem}) under one "
                "data key: the data key must change whenever the stimuli do. Both are cache folders, so deleting "
                "them is safe"
            )
    activations, shapes, reductions = {}, {}, {}
    for name in names:
        recording = opened[found[name]]
        for array in _arrays_of(recording.layers, name):
            activations[array] = recording[array]
            shapes[array] = recording.shapes[array]
            reductions[array] = recording.reductions[array]
    return Recording(
        activations,
        labels=first.labels,
        shapes=shapes,
        reductions=reductions,
        model=first.model,
        dataset=first.dataset,
        skipped=first.skipped,
    )


def _count(stimuli: Any) -> int | None:
    """How many stimuli ``stimuli`` holds, when it says cheaply (not for a DataLoader: its length is batches)."""
    if isinstance(stimuli, Mapping):
        return len(next(iter(stimuli.values()))) if stimuli else None
    if hasattr(stimuli, "shape") and getattr(stimuli, "ndim", 0) >= 1:
        return int(stimuli.shape[0])
    if hasattr(stimuli, "__len__") and not hasattr(stimuli, "batch_sampler"):
        return len(stimuli)
    return None


def _check_count(recording: Recording, n_stimuli: int | None, data_key: str, folder: Path) -> None:
    """Refuse a cached recording of another number of stimuli than the stimuli given hold."""
    if n_stimuli is not None and n_stimuli != recording.n_stimuli:
        raise ValueError(
            f"the cache folder {str(folder)!r} holds {recording.n_stimuli} stimuli under data key {data_key!r}, but the "
            f"stimuli given hold {n_stimuli}: the data key must change whenever the stimuli do"
        )
