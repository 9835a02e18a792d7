"""Run directories: config, training log, resumable checkpoints and final weights — never a pickle.

A run directory looks like this::

    run/
      manifest.json        every file below with its size and SHA-256 ("neuroprobe-run")
      config.json          how the model was built and trained
      log.csv              one row per epoch, rewritten atomically
      model.safetensors    final weights (written by ``save_final``)
      metrics.json         final metrics
      state/
        LATEST             name of the current checkpoint folder, written last
        epoch-000003/      one complete checkpoint
          model.safetensors (a plain state dict), state.json (epoch, history),
          optimizer / scheduler / extra .json + .safetensors (structure + tensors)

A checkpoint is written into a hidden temporary folder, renamed into place, and only then made
current by rewriting ``state/LATEST`` atomically; the previous checkpoint is deleted after that.
A process killed at any instant therefore leaves either the old complete checkpoint or the new
complete one.

The manifest lists every file the run wrote, so that loading can tell a damaged or edited file
from the one written (``RunDir.verify``), and ``--force`` deletes exactly those files and nothing
the user put beside them. A file is unlisted before it is rewritten and listed again once it is in
place, so a process killed at any instant never leaves a manifest that lists a complete file with
another checksum than its own; at worst a file is not listed yet.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import random
import shutil
import uuid
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import numpy as np
import safetensors
import safetensors.torch
import torch

from zoo._files import LOCK_FILE, CorruptFileError, file_entry, remove_listed_files, verify_files
from zoo._io import atomic_path, atomic_write_json, atomic_write_text

__all__ = [
    "RunDir",
    "refuse_file_as_run_folder",
    "save_tensor_file",
    "load_tensor_file",
    "pack_tensors",
    "unpack_tensors",
    "model_state_for_saving",
    "read_tensor_metadata",
]

MANIFEST_FILE = "manifest.json"
MANIFEST_FORMAT = "neuroprobe-run"
CONFIG_FILE = "config.json"
LOG_FILE = "log.csv"
MODEL_FILE = "model.safetensors"
METRICS_FILE = "metrics.json"
STATE_DIR = "state"
LATEST_FILE = "LATEST"

# The files of one checkpoint folder, all of which load_checkpoint reads.
_CHECKPOINT_FILES = (
    "state.json", MODEL_FILE, "optimizer.json", "optimizer.safetensors", "scheduler.json",
    "scheduler.safetensors", "extra.json", "extra.safetensors",
)
_CHECKPOINT_PREFIX = "epoch-"
_TEMP_PREFIX = ".tmp-"
_TENSOR_TAG = "__tensor__"
_TUPLE_TAG = "__tuple__"
_ITEMS_TAG = "__items__"
_FLOAT_TAG = "__float__"


# --------------------------------------------------------------------------- tensor files


def save_tensor_file(
    path: str | os.PathLike, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None
) -> None:
    """Write ``tensors`` to a safetensors file atomically.

    Tensors are copied to the CPU and made contiguous; tensors that share storage (tied weights)
    are stored once each, so the file loads back into a state dict with every key present.
    """
    with atomic_path(path, suffix=".safetensors") as tmp:
        safetensors.torch.save_file(_storable(tensors), str(tmp), metadata=metadata)


def load_tensor_file(path: str | os.PathLike, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Read a safetensors file; a truncated or corrupt file raises a ValueError that says how to recover.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file is not a readable safetensors file (truncated by a crash, or damaged).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {str(path)!r} does not exist")
    try:
        return safetensors.torch.load_file(str(path), device=str(device))
    except (safetensors.SafetensorError, ValueError, RuntimeError, OSError) as err:
        raise ValueError(
            f"{str(path)!r} is damaged (not a complete safetensors file: {err}); "
            "recover by re-running the training with zoo.train(..., resume=True) (it restarts from the last checkpoint "
            "in state/) or by retraining with zoo.train(..., force=True)"
        ) from err


def read_tensor_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The string metadata stored in a safetensors file's header ({} when none or unreadable)."""
    try:
        with safetensors.safe_open(str(path), framework="pt") as handle:
            return dict(handle.metadata() or {})
    except (safetensors.SafetensorError, ValueError, RuntimeError, OSError):
        return {}


def model_state_for_saving(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict with every tensor detached (buffers included)."""
    return {name: tensor.detach() for name, tensor in model.state_dict().items()}


def _weights_metadata(model: torch.nn.Module) -> dict[str, str]:
    # The architecture travels with the weights, so that a mismatch can name where they came from.
    metadata = {"format": "pt"}
    config = getattr(model, "config", None)
    if isinstance(config, dict):
        metadata["config"] = json.dumps(config, sort_keys=True, default=str)
        if "name" in config:
            metadata["architecture"] = str(config["name"])
    return metadata


# --------------------------------------------------------------------------- nested state <-> JSON + tensors


def pack_tensors(obj: Any, prefix: str = "") -> tuple[Any, dict[str, torch.Tensor]]:
    """Split a nested structure into a JSON-able skeleton and a flat dict of its tensors.

    Dicts (with any JSON-scalar keys, e.g. the integer parameter ids of an optimizer state),
    lists, tuples, numbers, strings, None, NumPy arrays and tensors are supported; the skeleton
    keeps each tensor's place as ``{"__tensor__": key}``. ``unpack_tensors`` inverts it exactly.

    Raises
    ------
    TypeError
        If the structure holds an object that cannot be stored without pickling (a function, a
        custom class); the message names where it is.
    """
    tensors: dict[str, torch.Tensor] = {}

    def encode(value: Any, where: str) -> Any:
        if isinstance(value, torch.Tensor):
            key = where or "tensor"
            while key in tensors:  # {"a.b": x, "a": {"b": y}} would otherwise collide
                key += "'"
            tensors[key] = value
            return {_TENSOR_TAG: key}
        if isinstance(value, np.ndarray):
            return encode(torch.from_numpy(np.ascontiguousarray(value)), where)
        if isinstance(value, np.generic):
            return encode(value.item(), where)
        if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
            return value
        if isinstance(value, float):
            return value if math.isfinite(value) else {_FLOAT_TAG: repr(value)}
        if isinstance(value, (list, tuple)):
            items = [encode(item, f"{where}.{i}" if where else str(i)) for i, item in enumerate(value)]
            return {_TUPLE_TAG: items} if isinstance(value, tuple) else items
        if isinstance(value, dict):
            plain = all(isinstance(k, str) and not k.startswith("__") for k in value)
            pairs = []
            for k, v in value.items():
                if not isinstance(k, (str, int, float, bool)) and k is not None:
                    raise TypeError(f"cannot store the dict key {k!r} at {where or 'top level'!r} without pickling")
                pairs.append((k, encode(v, f"{where}.{k}" if where else str(k))))
            return dict(pairs) if plain else {_ITEMS_TAG: [list(pair) for pair in pairs]}
        raise TypeError(
            f"cannot store {type(value).__name__} at {where or 'top level'!r} in a checkpoint without pickling; "
            "keep only tensors, numbers, strings, lists and dicts in the state"
        )

    skeleton = encode(obj, prefix)
    return skeleton, tensors


def unpack_tensors(skeleton: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Rebuild the structure that ``pack_tensors`` split."""
    if isinstance(skeleton, list):
        return [unpack_tensors(item, tensors) for item in skeleton]
    if isinstance(skeleton, dict):
        if set(skeleton) == {_TENSOR_TAG}:
            return tensors[skeleton[_TENSOR_TAG]]
        if set(skeleton) == {_TUPLE_TAG}:
            return tuple(unpack_tensors(item, tensors) for item in skeleton[_TUPLE_TAG])
        if set(skeleton) == {_FLOAT_TAG}:
            return float(skeleton[_FLOAT_TAG])
        if set(skeleton) == {_ITEMS_TAG}:
            return {key: unpack_tensors(value, tensors) for key, value in skeleton[_ITEMS_TAG]}
        return {key: unpack_tensors(value, tensors) for key, value in skeleton.items()}
    return skeleton


def _save_packed(folder: Path, stem: str, obj: Any) -> None:
    skeleton, tensors = pack_tensors(obj)
    _write_durably(folder / f"{stem}.json", json.dumps(skeleton, indent=1).encode())
    _write_tensors_durably(folder / f"{stem}.safetensors", tensors)


def _load_packed(folder: Path, stem: str) -> Any:
    skeleton = json.loads((folder / f"{stem}.json").read_text())
    tensors = load_tensor_file(folder / f"{stem}.safetensors")
    return unpack_tensors(skeleton, tensors)


def _write_durably(path: Path, data: bytes) -> None:
    # Files inside a temporary checkpoint folder need no rename of their own: the folder is
    # renamed as a whole. They must be on disk before the folder becomes current, hence fsync.
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _write_tensors_durably(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    safetensors.torch.save_file(_storable(tensors), str(path), metadata=metadata)
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _storable(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CPU, contiguous, detached tensors, none sharing memory with another (safetensors' rules).

    Copies only where needed: tensors on another device, non-contiguous ones, and the second and
    later tensors of a shared storage (tied weights).
    """
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for name, tensor in tensors.items():
        cpu = tensor.detach().to("cpu").contiguous()
        pointer = cpu.untyped_storage().data_ptr()
        if pointer in seen and cpu.numel() > 0:
            cpu = cpu.clone()
            pointer = cpu.untyped_storage().data_ptr()
        seen.add(pointer)
        out[name] = cpu
    return out


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- random number generators


def _capture_rng() -> dict[str, Any]:
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": list(np.random.get_state()),
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), int(pos), int(has_gauss), float(cached)))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    cuda_states = state.get("cuda")
    if cuda_states is not None:
        if torch.cuda.is_available() and torch.cuda.device_count() == len(cuda_states):
            torch.cuda.set_rng_state_all(list(cuda_states))
        else:
            warnings.warn(
                "the checkpoint holds CUDA random states that cannot be restored on this machine; "
                "the resumed run will not be bit-identical to an uninterrupted one",
                stacklevel=3,
            )


# --------------------------------------------------------------------------- run directory


def refuse_file_as_run_folder(path: str | os.PathLike) -> None:
    """Raise FileExistsError when ``path`` exists and is a file, which cannot be a run folder."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise FileExistsError(
            f"{str(path)!r} exists and is a file, not a run folder; choose another output folder (out=...)"
        )


def _is_file_entry(entry: Any) -> bool:
    return (
        isinstance(entry, dict)
        and isinstance(entry.get("bytes"), int)
        and not isinstance(entry.get("bytes"), bool)
        and isinstance(entry.get("sha256"), str)
    )


class RunDir:
    """A training run's folder: manifest, config, log, checkpoints and final weights.

    Use ``RunDir.create`` to start (or resume) a run and ``RunDir.open`` to read a finished one.
    Every file it writes is listed in ``manifest.json`` with its size and SHA-256; ``verify``
    checks files against it.

    Attributes
    ----------
    path
        The run's folder.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._warned_unverifiable = False

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    # ----------------------------------------------------------------- creation

    @classmethod
    def create(cls, out: str | os.PathLike, resume: bool = False, force: bool = False) -> "RunDir":
        """Create the run folder, or reopen it to resume, or delete an old run's files with ``force``.

        Parameters
        ----------
        out
            The run's folder.
        resume
            Continue the run in ``out`` from its last checkpoint.
        force
            Delete the old run in ``out`` first: exactly the files its manifest lists, so that
            files a user put in the folder stay. A non-empty folder without a manifest is not a
            run the toolkit wrote and is refused. The writer lock file does not count as content.

        Raises
        ------
        FileExistsError
            If ``out`` is not empty and neither ``resume`` nor ``force`` is given, or if ``force``
            is given for a folder that holds no run manifest.
        FileNotFoundError
            If ``resume`` is given but ``out`` holds no checkpoint.
        ValueError
            If both ``resume`` and ``force`` are given, or the manifest lists paths outside ``out``
            (then nothing is deleted).
        """
        run = cls(out)
        path = run.path
        if resume and force:
            raise ValueError(
                "resume=True and force=True contradict each other: resume=True continues the run, force=True deletes "
                "it; choose one"
            )
        refuse_file_as_run_folder(path)
        if resume:
            if not run.has_checkpoint():
                where = "does not exist" if not path.exists() else "holds no checkpoint (no state/LATEST)"
                raise FileNotFoundError(
                    f"cannot resume: {str(path)!r} {where}; start a new run without resume=True"
                )
            return run
        if path.exists() and any(entry.name != LOCK_FILE for entry in path.iterdir()):
            if not force:
                raise FileExistsError(
                    f"output folder {str(path)!r} already exists and is not empty; "
                    "pass resume=True to continue its run or force=True to overwrite it (or choose another output "
                    "folder, out=...)"
                )
            run._delete_listed_files()
        path.mkdir(parents=True, exist_ok=True)
        run._write_manifest({})
        return run

    @classmethod
    def open(cls, path: str | os.PathLike) -> "RunDir":
        """Open an existing run folder for reading.

        Raises
        ------
        FileNotFoundError
            If the folder does not exist.
        """
        run = cls(path)
        if not run.path.is_dir():
            raise FileNotFoundError(
                f"run folder {str(run.path)!r} does not exist; train one with zoo.train (or `probe train`) "
                "or check the path"
            )
        return run

    def _delete_listed_files(self) -> None:
        # Only what the manifest lists, after remove_listed_files has checked that all of it lies
        # inside the folder; the manifest goes last, so an interrupted --force can be repeated.
        refusal = f"refusing to delete the run in {str(self.path)!r} (force=True)"
        try:
            files = self.read_manifest()
        except CorruptFileError as err:
            raise FileExistsError(
                f"{refusal}: {err}. Delete the run's files yourself, or choose another output folder (out=...)"
            ) from None
        if files is None:
            raise FileExistsError(
                f"{refusal}: it is not empty and is not a run folder written by the toolkit (it has no {MANIFEST_FILE} "
                "listing the files of a run; runs written before the toolkit kept one have none either). "
                "Choose another output folder (out=...), or empty the folder yourself"
            )
        own = {MANIFEST_FILE, LOCK_FILE}  # never delete the lock this process may hold
        remove_listed_files(self.path, [relative for relative in files if os.path.normpath(relative) not in own])
        self.manifest_path.unlink()

    # ----------------------------------------------------------------- manifest

    @property
    def manifest_path(self) -> Path:
        return self.path / MANIFEST_FILE

    def read_manifest(self) -> dict[str, dict] | None:
        """The files the manifest lists, ``{relative path: {"bytes": int, "sha256": str}}``; None without one.

        Raises
        ------
        CorruptFileError
            If ``manifest.json`` is not a readable "neuroprobe-run" manifest.
        """
        path = self.manifest_path
        if not path.is_file():
            return None
        try:
            manifest = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise CorruptFileError(f"{str(path)!r} is damaged ({err}); the run's files cannot be verified") from None
        files = manifest.get("files") if isinstance(manifest, dict) else None
        if (
            not isinstance(manifest, dict)
            or manifest.get("format") != MANIFEST_FORMAT
            or not isinstance(files, dict)
            or not all(_is_file_entry(entry) for entry in files.values())
        ):
            raise CorruptFileError(
                f"{str(path)!r} is not a {MANIFEST_FORMAT!r} manifest of files with their sizes and SHA-256 "
                "(it was edited or damaged); the run's files cannot be verified"
            )
        return files

    def verify(self, *relatives: str, hint: str = "") -> None:
        """Check files of the run against the sizes and SHA-256 that its manifest recorded.

        Parameters
        ----------
        *relatives
            Paths inside the run folder, e.g. ``"config.json"`` or ``"state/LATEST"``.
        hint
            How to recover, added to the message of the error.

        Warns
        -----
        UserWarning
            When the run has no manifest (it was written before the toolkit kept one), or a file
            exists but is not listed (its write was interrupted, or it was put there by hand):
            such files cannot be verified, and are read as they are.

        Raises
        ------
        CorruptFileError
            Naming the first listed file that is missing, or differs from what was written.
        """
        files = self.read_manifest()
        if files is None:
            if not self._warned_unverifiable:
                self._warned_unverifiable = True
                warnings.warn(
                    f"run folder {str(self.path)!r} has no {MANIFEST_FILE} (it was written before the toolkit kept "
                    "one): its files cannot be verified against damage", stacklevel=3,
                )
            return
        unlisted = [relative for relative in relatives if relative not in files and (self.path / relative).exists()]
        if unlisted:
            warnings.warn(
                f"{unlisted} in run folder {str(self.path)!r} are not listed in its {MANIFEST_FILE} (a write was "
                "interrupted, or they were put there by hand): they cannot be verified against damage", stacklevel=3,
            )
        try:
            verify_files(self.path, {r: files[r] for r in relatives if r in files}, what="run folder")
        except CorruptFileError as err:
            raise CorruptFileError(f"{err}; {hint}" if hint else str(err)) from None

    def _write_manifest(self, files: Mapping[str, dict]) -> None:
        atomic_write_json(self.manifest_path, {"format": MANIFEST_FORMAT, "version": 1, "files": dict(files)})

    def _update_manifest(
        self, add: Mapping[str, dict] | None = None, remove: Iterable[str] = (), remove_under: Iterable[str] = ()
    ) -> None:
        """List ``add`` (relative path -> entry); unlist ``remove`` and all files under the folders ``remove_under``."""
        files = self.read_manifest() or {}
        prefixes = tuple(folder.rstrip("/") + "/" for folder in remove_under)
        remove = set(remove)
        files = {r: e for r, e in files.items() if r not in remove and not (prefixes and r.startswith(prefixes))}
        files.update(add or {})
        self._write_manifest(files)

    def _entries(self, *relatives: str) -> dict[str, dict]:
        paths = {relative: self.path / relative for relative in relatives}
        return {relative: file_entry(path) for relative, path in paths.items() if path.is_file()}

    @contextmanager
    def _rewriting(self, *relatives: str) -> Iterator[None]:
        """Unlist files while the block rewrites them, then list what they hold (also after a failure).

        The block must replace each file atomically: then every listed entry matches its file,
        whenever the process dies.
        """
        files = self.read_manifest() or {}
        if any(relative in files for relative in relatives):
            self._update_manifest(remove=relatives)
        try:
            yield
        finally:
            self._update_manifest(self._entries(*relatives))

    # ----------------------------------------------------------------- config, log, final

    @property
    def config_path(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def log_path(self) -> Path:
        return self.path / LOG_FILE

    @property
    def model_path(self) -> Path:
        return self.path / MODEL_FILE

    @property
    def metrics_path(self) -> Path:
        return self.path / METRICS_FILE

    @property
    def state_path(self) -> Path:
        return self.path / STATE_DIR

    def write_config(self, config: dict) -> None:
        """Write ``config.json`` atomically.

        Raises
        ------
        TypeError
            If ``config`` holds something JSON cannot represent.
        """
        try:
            text = json.dumps(config, indent=2, sort_keys=True)
        except TypeError as err:
            raise TypeError(f"the run config must be JSON-able: {err}") from err
        with self._rewriting(CONFIG_FILE):
            atomic_write_text(self.config_path, text + "\n")

    def read_config(self, verify: bool = False) -> dict:
        """Read ``config.json``.

        Parameters
        ----------
        verify
            First check the file against the run's manifest (see ``verify``), as loading does.

        Raises
        ------
        FileNotFoundError
            If the run has no ``config.json``.
        CorruptFileError
            If ``verify`` and the file differs from the one written.
        ValueError
            If ``config.json`` is not valid JSON, or holds something else than a dict of settings.
        """
        if not self.config_path.is_file():
            raise FileNotFoundError(f"{str(self.config_path)!r} is missing; the folder is not a complete run")
        if verify:
            self.verify(CONFIG_FILE, hint="restore the file, or retrain with zoo.train(..., force=True)")
        try:
            config = json.loads(self.config_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(
                f"{str(self.config_path)!r} is damaged (invalid JSON: {err}); retrain with zoo.train(..., force=True)"
            ) from err
        if not isinstance(config, dict):
            raise ValueError(
                f"{str(self.config_path)!r} holds {_shown_json(config)} where a dict of settings belongs; "
                "it was edited or damaged: retrain with zoo.train(..., force=True)"
            )
        return config

    def training_dataset(self) -> tuple[str, dict[str, Any]]:
        """The (name, options) of the dataset the run was trained on, from ``config.json``.

        An image folder is named by the absolute path ``zoo.train`` recorded (``dataset.folder``),
        so that it loads whatever the working directory.

        Raises
        ------
        FileNotFoundError
            If the run has no ``config.json``.
        ValueError
            If ``config.json`` is damaged or names no dataset.
        """
        dataset = self.read_config().get("dataset")
        if isinstance(dataset, dict) and isinstance(dataset.get("name"), str):
            name, folder = dataset["name"], dataset.get("folder")
            if name.startswith("imagefolder:") and isinstance(folder, str):
                name = f"imagefolder:{folder}"  # the absolute folder: it loads from any working directory
            return name, dict(dataset.get("options") or {})
        if isinstance(dataset, str):
            return dataset, {}
        raise ValueError(f"{str(self.config_path)!r} does not name its dataset; name the dataset explicitly")

    def config_differences(self, config: dict, ignore: tuple[str, ...] = (), absent: Any = None
                           ) -> dict[str, tuple[Any, Any]]:
        """Settings whose values differ between ``config.json`` and ``config``.

        Nested dicts are compared key by key, so the result names the exact settings, e.g.
        ``{"training.lr": (0.002, 0.003)}`` as ``{dotted key: (stored, given)}``. Useful before
        resuming: a run resumed with other settings is not the run that was started.

        Parameters
        ----------
        ignore
            Dotted keys (or top-level keys) to leave out of the comparison.
        absent
            What stands for a setting that one side does not have (an error message may want it
            told apart from a JSON null).
        """
        stored = _flatten(json.loads(json.dumps(self.read_config())))
        given = _flatten(json.loads(json.dumps(config)))
        missing = object()
        differences = {}
        for key in sorted(set(stored) | set(given)):
            if key in ignore or key.split(".")[0] in ignore:
                continue
            old, new = stored.get(key, missing), given.get(key, missing)
            if old != new:
                differences[key] = (absent if old is missing else old, absent if new is missing else new)
        return differences

    def append_log(self, row: dict) -> None:
        """Append one row to ``log.csv`` (rewritten atomically; new columns are added as they appear)."""
        rows = self.read_log_rows()
        rows.append({key: _csv_value(value) for key, value in row.items()})
        self._write_log(rows)

    def read_log_rows(self) -> list[dict[str, str]]:
        """The rows of ``log.csv`` as dicts of strings ([] when there is no log yet)."""
        if not self.log_path.is_file():
            return []
        with open(self.log_path, newline="") as handle:
            return [dict(row) for row in csv.DictReader(handle)]

    def _write_log(self, rows: list[dict[str, Any]]) -> None:
        columns: list[str] = []
        for row in rows:
            columns.extend(key for key in row if key not in columns)
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        with self._rewriting(LOG_FILE):
            atomic_write_text(self.log_path, buffer.getvalue())

    def _truncate_log(self, last_epoch: int) -> None:
        # Rows logged after the checkpoint belong to epochs that the resumed run will redo.
        rows = self.read_log_rows()
        if not rows or "epoch" not in rows[0]:
            return
        kept = [row for row in rows if _as_number(row.get("epoch")) is None or _as_number(row["epoch"]) <= last_epoch]
        if len(kept) != len(rows):
            self._write_log(kept)

    def save_final(self, model: torch.nn.Module, metrics: dict) -> None:
        """Write the final weights (``model.safetensors``) and metrics (``metrics.json``) atomically."""
        metrics = json.loads(json.dumps(_plain(metrics)))
        with self._rewriting(MODEL_FILE, METRICS_FILE):
            save_tensor_file(self.model_path, model_state_for_saving(model), metadata=_weights_metadata(model))
            atomic_write_json(self.metrics_path, metrics)

    def discard_final(self) -> None:
        """Remove the final weights and metrics (a run being trained further is no longer finished).

        Each file leaves the manifest before it is deleted, so the manifest never lists a missing file.
        """
        for relative in (MODEL_FILE, METRICS_FILE):
            self._update_manifest(remove=[relative])
            (self.path / relative).unlink(missing_ok=True)

    def read_metrics(self) -> dict:
        """Read ``metrics.json`` ({} when the run has not finished)."""
        if not self.metrics_path.is_file():
            return {}
        return json.loads(self.metrics_path.read_text())

    # ----------------------------------------------------------------- checkpoints

    def _latest_name(self) -> str | None:
        pointer = self.state_path / LATEST_FILE
        if not pointer.is_file():
            return None
        name = pointer.read_text().strip()
        return name or None

    def checkpoint_path(self) -> Path | None:
        """The folder of the current checkpoint, or None when there is none."""
        name = self._latest_name()
        if name is None or not (self.state_path / name).is_dir():
            return None
        return self.state_path / name

    def checkpoint_epoch(self) -> int | None:
        """The number of epochs the current checkpoint completed (None without a checkpoint).

        Raises
        ------
        CorruptFileError
            If the checkpoint's ``state.json`` differs from the one written.
        ValueError
            If it is damaged.
        """
        folder = self.checkpoint_path()
        if folder is None:
            return None
        hint = "this checkpoint cannot be used: retrain with zoo.train(..., force=True)"
        self.verify(f"{STATE_DIR}/{folder.name}/state.json", hint=hint)
        try:
            return int(json.loads((folder / "state.json").read_text())["epoch"])
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ValueError(
                f"the checkpoint {str(folder)!r} is damaged ({type(err).__name__}: {err}); "
                "retrain with zoo.train(..., force=True)"
            ) from err

    def has_checkpoint(self) -> bool:
        """True when the run holds a complete checkpoint."""
        return self.checkpoint_path() is not None

    def save_checkpoint(
        self,
        *,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer | None,
        scheduler: Any | None,
        epoch: int,
        history: list[dict],
        extra: dict | None = None,
        rng: bool = True,
        check_finite: bool = True,
    ) -> Path:
        """Save a complete, resumable checkpoint atomically; returns its folder.

        Parameters
        ----------
        model, optimizer, scheduler
            What to save; their state dicts are split into tensors (safetensors) and structure
            (JSON). ``optimizer`` and ``scheduler`` may be None.
        epoch
            The number of epochs completed.
        history
            One dict per completed epoch (losses, metrics).
        extra
            Anything else the training loop needs to resume (tensors allowed, e.g. the state of a
            ``torch.Generator``).
        rng
            Also save the global torch / CUDA / NumPy / Python random states, so that a resumed run
            draws the same numbers as an uninterrupted one.
        check_finite
            Refuse to save weights that hold NaN or infinity, so the last good checkpoint survives
            a diverged run.

        Raises
        ------
        ValueError
            If ``check_finite`` and the model's parameters are not finite.
        """
        if check_finite:
            bad = [name for name, tensor in model.state_dict().items()
                   if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())]
            if bad:
                previous = self.checkpoint_path()
                kept = f"the last good checkpoint ({previous.name}) is kept" if previous else "no checkpoint was written"
                raise ValueError(
                    f"training diverged: after epoch {epoch} the weights {bad[:3]} hold NaN or infinity; {kept}. "
                    "Lower the learning rate (the lr setting) and retrain, or resume from the last good checkpoint "
                    "(zoo.train(..., resume=True))"
                )
        state_dir = self.state_path
        state_dir.mkdir(parents=True, exist_ok=True)
        current = self._latest_name()
        name = f"{_CHECKPOINT_PREFIX}{int(epoch):06d}"
        if name == current:  # saving the same epoch twice: keep the old one current until the new one is complete
            name = f"{name}-{uuid.uuid4().hex[:8]}"
        tmp = state_dir / f"{_TEMP_PREFIX}{uuid.uuid4().hex}"
        tmp.mkdir()
        try:
            save = {
                "optimizer": {"state": optimizer.state_dict() if optimizer is not None else None},
                "scheduler": {"state": scheduler.state_dict() if scheduler is not None else None},
                "extra": {"state": extra or {}, "rng": _capture_rng() if rng else None},
            }
            for stem, obj in save.items():
                _save_packed(tmp, stem, obj)
            # the weights are a plain state-dict file, loadable on their own (zoo.load(..., checkpoint=True))
            _write_tensors_durably(tmp / MODEL_FILE, model_state_for_saving(model), _weights_metadata(model))
            info = {"epoch": int(epoch), "history": _plain(history), "format": 1}
            _write_durably(tmp / "state.json", json.dumps(info, indent=1).encode())
            _fsync_dir(tmp)
            entries = {f"{STATE_DIR}/{name}/{file.name}": file_entry(file) for file in sorted(tmp.iterdir())}
            target = state_dir / name
            if target.exists():  # left over by a run killed before it pointed LATEST at it
                self._update_manifest(remove_under=[f"{STATE_DIR}/{name}"])
                shutil.rmtree(target)
            os.replace(tmp, target)
            _fsync_dir(state_dir)
            # List the new checkpoint once it is in place, and unlist LATEST while it is rewritten.
            self._update_manifest(entries, remove=[f"{STATE_DIR}/{LATEST_FILE}"])
            atomic_write_text(state_dir / LATEST_FILE, name + "\n")
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        self._remove_stale_checkpoints(keep=name)
        return state_dir / name

    def _remove_stale_checkpoints(self, keep: str) -> None:
        # Older checkpoints, and leftovers of saves killed mid-way (temporary folders and pointer
        # files). They leave the manifest first (in the same write that lists the new LATEST), so
        # that it never lists a file that is gone.
        stale = [
            entry
            for entry in self.state_path.iterdir()
            if (entry.is_dir() and entry.name != keep and entry.name.startswith((_CHECKPOINT_PREFIX, _TEMP_PREFIX)))
            or (entry.is_file() and entry.name.startswith(f".{LATEST_FILE}."))
        ]
        self._update_manifest(
            self._entries(f"{STATE_DIR}/{LATEST_FILE}"),
            remove_under=[f"{STATE_DIR}/{entry.name}" for entry in stale if entry.is_dir()],
        )
        for entry in stale:
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)

    def load_checkpoint(
        self,
        *,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer | None,
        scheduler: Any | None,
        restore_rng: bool = True,
    ) -> dict:
        """Load the current checkpoint into ``model``, ``optimizer`` and ``scheduler``.

        Tensors are read to the CPU and copied onto the model's (and optimizer's) device, after
        ``state/LATEST`` and every file of the checkpoint are checked against the run's manifest.
        Rows of ``log.csv`` logged after the checkpoint's epoch are dropped, since the resumed run
        redoes those epochs.

        Returns
        -------
        dict
            ``{"epoch": int, "history": list[dict], "extra": dict}``.

        Raises
        ------
        FileNotFoundError
            If the run has no checkpoint.
        CorruptFileError
            If a checkpoint file differs from the one written (a ValueError).
        ValueError
            If a checkpoint file is damaged, or the weights do not fit ``model``.
        """
        hint = "this checkpoint cannot be used: retrain with zoo.train(..., force=True)"
        self.verify(f"{STATE_DIR}/{LATEST_FILE}", hint=hint)  # it names the checkpoint: trust it once verified
        folder = self.checkpoint_path()
        if folder is None:
            raise FileNotFoundError(
                f"{str(self.path)!r} holds no checkpoint (no {STATE_DIR}/{LATEST_FILE}); "
                "start the run without resume=True"
            )
        self.verify(*(f"{STATE_DIR}/{folder.name}/{name}" for name in _CHECKPOINT_FILES), hint=hint)
        try:
            info = json.loads((folder / "state.json").read_text())
            model_state = load_tensor_file(folder / MODEL_FILE)
            optimizer_state = _load_packed(folder, "optimizer")["state"]
            scheduler_state = _load_packed(folder, "scheduler")["state"]
            extra = _load_packed(folder, "extra")
        except (FileNotFoundError, json.JSONDecodeError, KeyError) as err:
            raise ValueError(
                f"the checkpoint {str(folder)!r} is damaged ({type(err).__name__}: {err}); "
                "retrain with zoo.train(..., force=True)"
            ) from err
        from zoo._load import load_weights  # the loader owns the mismatch diagnostics

        load_weights(model, model_state, source_name=str(folder / "model.safetensors"))
        if optimizer is not None:
            if optimizer_state is None:
                raise ValueError(f"the checkpoint {str(folder)!r} holds no optimizer state, but an optimizer was given")
            optimizer.load_state_dict(optimizer_state)
        if scheduler is not None:
            if scheduler_state is None:
                raise ValueError(f"the checkpoint {str(folder)!r} holds no scheduler state, but a scheduler was given")
            scheduler.load_state_dict(scheduler_state)
        if restore_rng and extra.get("rng") is not None:
            _restore_rng(extra["rng"])
        self._truncate_log(int(info["epoch"]))
        return {"epoch": int(info["epoch"]), "history": info["history"], "extra": extra["state"]}


# --------------------------------------------------------------------------- helpers


def _plain(obj: Any) -> Any:
    """Turn NumPy / torch scalars inside nested dicts and lists into Python numbers for JSON."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, torch.Tensor) and obj.numel() == 1:
        return obj.item()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return obj


def _flatten(config: dict, prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def _shown_json(value: Any) -> str:
    if value is None:
        return "JSON null"
    kinds = {list: "a JSON array", str: "a JSON string", bool: "a JSON boolean", int: "a number", float: "a number"}
    return kinds.get(type(value), type(value).__name__)


def _csv_value(value: Any) -> Any:
    value = _plain(value)
    return repr(value) if isinstance(value, float) else value


def _as_number(text: Any) -> float | None:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None
