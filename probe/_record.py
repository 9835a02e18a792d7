"""``probe.record``: one streaming pass that records named layers through reducers."""

from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
import weakref
from contextlib import contextmanager, nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, SequentialSampler, Subset
from tqdm.auto import tqdm

from probe import _distributed_record as distributed
from probe._hooks import capture_outputs, first_tensor
from probe._layers import LayerSelection, per_layer, resolve_layers
from probe._layouts import Layout, ModuleCall, layer_layouts, not_per_stimulus_error, tracing
from probe._recording import Recording
from probe._reducers import Reduction, ReductionOp
from probe._shards import batch_shards
from probe._store import MANIFEST, DiskSink, MemorySink, ShardSink
from zoo._device import resolve_device
from zoo._distributed import world
from zoo._names import unknown_name_error
from zoo._reducer import MultiLayerReducer, Reducer

__all__ = ["record", "STORED_DTYPES", "NONFINITE", "model_fingerprint"]

#: Stored dtype name -> (NumPy dtype, torch dtype).
STORED_DTYPES = {"float32": (np.float32, torch.float32), "float16": (np.float16, torch.float16)}
#: What ``record`` does with stimuli that hold NaN or inf values.
NONFINITE = ("raise", "skip")
_SHOWN = 5  # indices named in a message
#: Keys of a dict batch that hold labels (taken out, never passed to the model), and the padding mask.
LABEL_KEYS = ("labels", "label")
MASK_KEY = "attention_mask"
_AMP_DTYPES = {"cuda": torch.float16, "cpu": torch.bfloat16}


# -- describing what is recorded ---------------------------------------------------------------
def model_fingerprint(model: nn.Module, weights: bool = True) -> dict[str, Any]:
    """JSON-able description of a model: its name, class, config, a SHA-256 of its module tree and one of
    its weights (names, shapes, dtypes and values)."""
    config = getattr(model, "config", None)
    try:
        config = json.loads(json.dumps(config)) if config is not None else None
    except TypeError:
        config = None
    description = {
        "name": (config or {}).get("name") if isinstance(config, dict) else None,
        "class": f"{type(model).__module__}.{type(model).__qualname__}",
        "config": config,
    }
    description["name"] = description["name"] or type(model).__name__
    # the module tree: two models with the same weights but other layers (a ReLU for a Tanh) differ
    description["architecture_sha256"] = hashlib.sha256(repr(model).encode()).hexdigest()
    if weights:
        description["weights_sha256"] = _weights_digest(model)
    return description


# model -> (state key, digest). The key holds each tensor's storage address and version counter,
# which in-place updates (optimizer steps, load_state_dict) bump, so an unchanged model is not
# hashed again when it is recorded several times.
_DIGESTS: "weakref.WeakKeyDictionary[nn.Module, tuple[tuple, str]]" = weakref.WeakKeyDictionary()


def _weights_digest(model: nn.Module) -> str:
    state = sorted(model.state_dict(keep_vars=True).items())
    key = tuple((name, tensor.data_ptr(), tensor._version, tuple(tensor.shape), tensor.dtype) for name, tensor in state)
    cached = _DIGESTS.get(model)
    if cached is not None and cached[0] == key:
        return cached[1]
    digest = hashlib.sha256()
    for name, tensor in state:
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    _DIGESTS[model] = (key, digest.hexdigest())
    return digest.hexdigest()


def _tensor_fingerprint(tensor: torch.Tensor) -> str:
    flat = tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()
    return hashlib.sha256(flat.tobytes()).hexdigest()


def _stimulus_fingerprint(dataset: Any, index: int) -> str | None:
    """SHA-256 of one stimulus's float32 bytes, or None when the dataset does not give a tensor-like item."""
    try:
        item = dataset[index]
        x = item[0] if isinstance(item, (tuple, list)) else item
        if isinstance(x, Mapping):  # a text item: every input tensor, in key order
            parts = [torch.as_tensor(x[key]) for key in sorted(x) if key not in LABEL_KEYS]
        else:
            parts = [torch.as_tensor(x)]
        digest = hashlib.sha256()
        for part in parts:
            digest.update(part.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    except (LookupError, TypeError, ValueError, RuntimeError):  # a dataset keyed otherwise, items that are no arrays
        return None
    return digest.hexdigest()


def _dataset_options(dataset: Any) -> tuple[Any, dict[str, Any] | None]:
    """The seed and the options that a dataset or its ``info`` exposes (``seed``, ``options``), JSON-able."""
    seed, options = None, {}
    for source in (getattr(dataset, "info", None), dataset):
        found = getattr(source, "options", None)
        if isinstance(found, Mapping):
            options.update(found)
        found = getattr(source, "seed", None)
        if isinstance(found, (int, float, str)):
            seed = found
    seed = options.pop("seed", seed)
    options = json.loads(json.dumps(options, sort_keys=True, default=str))
    return json.loads(json.dumps(seed, default=str)), options or None


# -- data --------------------------------------------------------------------------------------
class _Source:
    """Batches of (stimuli, labels or None) from a tensor, a dict of tensors, a Dataset or a DataLoader.

    Stimuli are a tensor, or a dict of tensors (``input_ids``, ``attention_mask``...) that the model
    takes as keyword arguments.
    """

    def __init__(self, data: Any, batch_size: int, num_workers: int, pin_memory: bool):
        self.data, self.batch_size, self.num_workers, self.pin_memory = data, batch_size, num_workers, pin_memory
        if isinstance(data, torch.Tensor):
            if data.dim() < 1:
                raise ValueError("a tensor of stimuli needs a batch axis: shape (n_stimuli, ...)")
            self.n_stimuli = data.shape[0]
        elif isinstance(data, Mapping):
            self.n_stimuli = _tensor_dict_length(data)
        elif isinstance(data, DataLoader):
            self.n_stimuli = _loader_length(data)
        elif isinstance(data, Dataset) or (hasattr(data, "__getitem__") and hasattr(data, "__len__")):
            self.n_stimuli = len(data)
        else:
            raise ValueError(
                f"data must be a torch Dataset, a DataLoader, a tensor of stimuli or a dict of tensors, got "
                f"{type(data).__name__}"
            )
        if self.n_stimuli == 0:
            raise ValueError("the data holds no stimuli (length 0); pass a non-empty dataset, loader or tensor")

    def describe(self, fingerprint: bool) -> dict[str, Any]:
        if isinstance(self.data, torch.Tensor):
            description = {"type": "tensor", "shape": list(self.data.shape), "dtype": str(self.data.dtype)}
            if fingerprint:
                description["sha256"] = _tensor_fingerprint(self.data)
            return description
        if isinstance(self.data, Mapping):
            tensors = {str(key): torch.as_tensor(value) for key, value in self.data.items()}
            description = {
                "type": "tensors",
                "shapes": {key: list(value.shape) for key, value in tensors.items()},
                "dtypes": {key: str(value.dtype) for key, value in tensors.items()},
            }
            if fingerprint:
                description["sha256"] = {key: _tensor_fingerprint(value) for key, value in sorted(tensors.items())}
            return description
        dataset = self.data.dataset if isinstance(self.data, DataLoader) else self.data
        kind, subset = type(dataset).__name__, None
        while isinstance(dataset, Subset):  # describe the dataset the stimuli come from
            subset = len(dataset) if subset is None else subset
            dataset = dataset.dataset
        info = getattr(dataset, "info", None)
        seed, options = _dataset_options(dataset)
        description = {
            "type": kind,
            "name": getattr(info, "name", None),
            "split": getattr(dataset, "split", None) if isinstance(getattr(dataset, "split", None), str) else None,
            "seed": seed,
            "options": options,
            "n_stimuli": self.n_stimuli,
        }
        if subset is not None:
            description["subset_of"] = type(dataset).__name__
        if fingerprint:  # other stimuli of the same class, name and length (another seed) differ here
            items = self.data.dataset if isinstance(self.data, DataLoader) else self.data
            try:
                last = len(items) - 1
            except TypeError:
                last = None
            description["first_sha256"] = _stimulus_fingerprint(items, 0)
            description["last_sha256"] = None if last is None else _stimulus_fingerprint(items, last)
        return description

    @property
    def batch_rows(self) -> int:
        """The stimuli in each batch (the DataLoader's own batch size for a loader)."""
        if isinstance(self.data, DataLoader):
            if self.data.batch_size is None:
                raise ValueError(
                    "a distributed recording splits the data into whole batches, but this DataLoader has a "
                    "batch_sampler and no batch_size; pass its Dataset and batch_size= instead"
                )
            return self.data.batch_size
        return self.batch_size

    def batches(self, start: int, stop: int | None = None) -> Iterator[tuple[Any, Any]]:
        """Yield (x, y) batches of the stimuli ``start`` to ``stop`` (default: the last); y is None without labels."""
        stop = self.n_stimuli if stop is None else stop
        if isinstance(self.data, torch.Tensor):
            for first in range(start, stop, self.batch_size):
                yield self.data[first : min(first + self.batch_size, stop)], None
            return
        if isinstance(self.data, Mapping):
            for first in range(start, stop, self.batch_size):
                last = min(first + self.batch_size, stop)
                yield _split_batch({key: value[first:last] for key, value in self.data.items()})
            return
        if isinstance(self.data, DataLoader):
            loader, position = _loader_from(self.data, start, stop), start
            if loader is None:  # a sampler of its own: walk it from the start, skipping what is not asked for
                loader, position = self.data, 0
        else:
            dataset = Subset(self.data, range(start, stop)) if (start or stop < self.n_stimuli) else self.data
            loader = DataLoader(
                dataset, batch_size=self.batch_size, shuffle=False, num_workers=self.num_workers, pin_memory=self.pin_memory
            )
            position = start
        for batch in loader:
            if position >= stop:
                return
            x, y = _split_batch(batch)
            size = batch_length(x)
            if position + size <= start:  # resuming a DataLoader (or another rank's shard): skip it
                position += size
                continue
            if position < start:
                offset = start - position
                x, y = _rows(x, slice(offset, None)), (y[offset:] if y is not None else None)
                position = start
            if position + batch_length(x) > stop:
                keep = stop - position
                x, y = _rows(x, slice(0, keep)), (y[:keep] if y is not None else None)
            position += batch_length(x)
            yield x, y


def _loader_from(loader: DataLoader, start: int, stop: int) -> DataLoader | None:
    """The same loader (batch size, collate function, workers) over stimuli ``start`` to ``stop`` only, so that a
    resumed pass or a rank's shard loads just its own stimuli; None when the loader samples in its own order."""
    if not isinstance(loader.sampler, SequentialSampler) or loader.batch_size is None:
        return None
    if start == 0 and stop == len(loader.dataset):
        return loader
    return DataLoader(
        Subset(loader.dataset, range(start, stop)), batch_size=loader.batch_size, shuffle=False,
        collate_fn=loader.collate_fn, num_workers=loader.num_workers, pin_memory=loader.pin_memory,
        drop_last=loader.drop_last, worker_init_fn=loader.worker_init_fn,
    )


def _loader_length(loader: DataLoader) -> int:
    try:
        if loader.batch_size is not None and not loader.drop_last:
            return len(loader.sampler)
        return sum(len(indices) for indices in loader.batch_sampler)
    except TypeError:
        raise ValueError(
            "the DataLoader has no length (an IterableDataset?); recording needs the number of stimuli up "
            "front: wrap the data in a map-style Dataset"
        ) from None


def _split_batch(batch: Any) -> tuple[Any, Any]:
    """(stimuli, labels or None) of a batch: a tensor, a dict of tensors (labels under ``labels`` or
    ``label``), or a (stimuli, labels, ...) tuple."""
    if isinstance(batch, torch.Tensor):
        return batch, None
    if isinstance(batch, Mapping):
        inputs = {key: value for key, value in batch.items() if key not in LABEL_KEYS}
        if first_tensor(inputs) is None:
            raise ValueError(f"a dict batch needs at least one tensor besides its labels, got keys {list(batch)}")
        return inputs, next((batch[key] for key in LABEL_KEYS if key in batch), None)
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], (torch.Tensor, Mapping)):
        x = batch[0]
        if isinstance(x, Mapping):
            x = {key: value for key, value in x.items() if key not in LABEL_KEYS}
        return x, (batch[1] if len(batch) > 1 else None)
    raise ValueError(
        f"each batch must be a tensor of stimuli, a dict of tensors or a (stimuli, labels, ...) tuple, got "
        f"{type(batch).__name__}; make the dataset return x, (x, y) or a dict such as "
        "{'input_ids': ..., 'attention_mask': ..., 'labels': ...}"
    )


def _tensor_dict_length(data: Mapping) -> int:
    """Number of stimuli of a dict of tensors (all with that many rows)."""
    lengths = {}
    for key, value in data.items():
        if not isinstance(value, torch.Tensor) or value.dim() < 1:
            raise ValueError(f"a dict of stimuli must hold tensors with a batch axis; {key!r} is {type(value).__name__}")
        lengths[key] = value.shape[0]
    if not lengths or len(set(lengths.values())) != 1:
        raise ValueError(f"the tensors of a dict of stimuli must have one row per stimulus each; rows per key: {lengths}")
    return next(iter(lengths.values()))


def batch_length(x: Any) -> int:
    """Number of stimuli in a batch (a tensor, or a dict of tensors)."""
    if isinstance(x, Mapping):
        return int(first_tensor(x).shape[0])
    return len(x)


def _rows(x: Any, rows: Any) -> Any:
    """Some rows (a slice or a boolean mask) of a batch, a tensor or each tensor of a dict."""
    if isinstance(x, Mapping):
        return {key: value[rows] if isinstance(value, torch.Tensor) else value for key, value in x.items()}
    return x[rows]


def _to_device(x: Any, device: torch.device) -> Any:
    if isinstance(x, Mapping):
        return {key: value.to(device, non_blocking=True) if isinstance(value, torch.Tensor) else value for key, value in x.items()}
    return x.to(device, non_blocking=True)


def _attention_mask(x: Any) -> torch.Tensor | None:
    """The padding mask of a dict batch, shape (batch, T), or None."""
    mask = x.get(MASK_KEY) if isinstance(x, Mapping) else None
    return mask if isinstance(mask, torch.Tensor) and mask.dim() == 2 else None


def _labels_of(y: Any, size: int) -> np.ndarray:
    if y is not None:
        try:
            y = torch.as_tensor(y) if not isinstance(y, torch.Tensor) else y
        except (TypeError, ValueError, RuntimeError):  # labels that are no numbers (strings)
            return np.full(size, -1, dtype=np.int64)
        if y.shape == (size,) and not (y.is_floating_point() or y.is_complex()):
            return y.cpu().numpy().astype(np.int64)
    return np.full(size, -1, dtype=np.int64)


# -- reductions per layer ----------------------------------------------------------------------
def _reductions(
    reduce: Any, project: Any, seed: int, names: list[str], stated: dict[str, Layout | None]
) -> dict[str, Reduction]:
    """One reduction per layer, holding the layout stated for it (by ``layout=`` or the Reduction itself)."""
    modes = per_layer(reduce, names, "reduce", "auto")
    sizes = per_layer(project, names, "project", None)
    reductions = {
        name: modes[name] if isinstance(modes[name], Reduction) else Reduction(modes[name], sizes[name], seed)
        for name in names
    }
    for name in names:
        if stated[name] is not None:
            reductions[name] = replace(reductions[name], layout=stated[name].name)
        elif reductions[name].layout is not None:
            stated[name] = Layout.parse(reductions[name].layout)
    return reductions


def _stated_layouts(layout: Any, names: list[str]) -> dict[str, Layout | None]:
    chosen = per_layer(layout, names, "layout", None)
    return {name: None if value is None else Layout.parse(value) for name, value in chosen.items()}


def _reshapes(reshape: Any, names: list[str]) -> dict[str, Callable[[torch.Tensor, int], torch.Tensor]]:
    if reshape is None:
        return {}
    if not isinstance(reshape, Mapping):
        raise ValueError("reshape must be a dict {layer or glob: fn} with fn(output, batch_size) -> (batch_size, ...)")
    chosen = {name: fn for name, fn in per_layer(reshape, names, "reshape", None).items() if fn is not None}
    for name, fn in chosen.items():
        if not callable(fn):
            raise ValueError(f"reshape[{name!r}] must be a function fn(output, batch_size), got {type(fn).__name__}")
    return chosen


# -- model state -------------------------------------------------------------------------------
def _same_device(a: torch.device, b: torch.device) -> bool:
    return a.type == b.type and (a.index is None or b.index is None or a.index == b.index)


@contextmanager
def _prepared(model: nn.Module, device: torch.device) -> Iterator[None]:
    """Eval mode on ``device`` for the block; modes, ``requires_grad`` and device restored after."""
    training = {module: module.training for module in model.modules()}
    requires_grad = {param: param.requires_grad for param in model.parameters()}
    tensors = [*model.parameters(), *model.buffers()]
    original = tensors[0].device if tensors else None
    moved = original is not None and not _same_device(original, device)
    try:
        if moved:
            model.to(device)
        model.eval()
        yield
    finally:
        if moved:
            model.to(original)
        for module, was_training in training.items():
            module.training = was_training
        for param, flag in requires_grad.items():
            param.requires_grad_(flag)


# -- moving reduced batches to the host ------------------------------------------------------
class _HostTransfer:
    """Moves each batch's reduced layers to the host and hands them to the sink.

    On the CPU a reduced layer is written to the sink as soon as its hook has computed it (one
    copy, and in-place operations later in the forward pass, such as ``ReLU(inplace=True)``,
    cannot change it). On CUDA the reduced layers of a batch are concatenated into one device
    tensor and copied with one non-blocking transfer into pinned memory; that copy is written to
    the sink at the next batch (double buffering), so the GPU never waits for the host.
    """

    def __init__(self, sink: MemorySink | DiskSink, device: torch.device):
        self.sink = sink
        self.cuda = device.type == "cuda"
        self._items: list[tuple[str, torch.Tensor]] = []
        self._buffers: list[torch.Tensor | None] = [None, None]
        self._turn = 0
        self._pending: tuple | None = None

    def put(self, name: str, start: int, reduced: torch.Tensor, source: torch.Tensor) -> None:
        """Take one layer's reduced batch (``source`` is the raw output it was computed from)."""
        if not self.cuda:
            self.sink.write(name, start, reduced.numpy())
            return
        if reduced.untyped_storage().data_ptr() == source.untyped_storage().data_ptr():
            reduced = reduced.clone()  # a view (flatten, cls) of a map the forward pass may change in place
        self._items.append((name, reduced))

    def end_batch(self, start: int, labels: np.ndarray) -> None:
        """Send the batch on its way (CUDA: one non-blocking copy) and write its labels."""
        if not self.cuda:
            self.sink.write_labels(start, labels)
            return
        items, self._items = self._items, []
        flat = torch.cat([tensor for _, tensor in items], dim=1) if len(items) > 1 else items[0][1]
        size, width = flat.shape
        self.drain()
        buffer = self._buffers[self._turn]
        if buffer is None or buffer.shape[0] < size or buffer.shape[1] != width or buffer.dtype != flat.dtype:
            buffer = self._buffers[self._turn] = torch.empty((size, width), dtype=flat.dtype, pin_memory=True)
        target = buffer[:size]
        target.copy_(flat, non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        self._pending = (target, event, start, [(name, tensor.shape[1]) for name, tensor in items], labels)
        self._turn ^= 1

    def drain(self) -> None:
        """Write the batch whose copy is in flight (waits for that copy only)."""
        if self._pending is None:
            return
        target, event, start, widths, labels = self._pending
        self._pending = None
        event.synchronize()
        rows, column = target.numpy(), 0
        for name, width in widths:
            self.sink.write(name, start, rows[:, column : column + width])
            column += width
        self.sink.write_labels(start, labels)


# -- the pass ----------------------------------------------------------------------------------
class _PendingSink:
    """Stands in for a new on-disk recording until the first batch has run, so that nothing is
    written before every layer is known to be recordable (its layout found, its rows stimuli).

    Keeps the labels and skipped stimuli of batches that held only NaN or inf, and hands them to
    the ``DiskSink`` that ``open`` creates.
    """

    def __init__(self, open_sink: Callable[[], DiskSink]):
        self._open_sink = open_sink
        self.n_done = 0
        self.layers: dict[str, dict[str, Any]] = {}
        self.skipped: list[int] = []
        self.float16_overflow: dict[str, dict[str, float]] = {}
        self._labels: list[tuple[int, np.ndarray]] = []

    def write_labels(self, start: int, labels: np.ndarray) -> None:
        self._labels.append((start, np.array(labels)))

    def open(self) -> DiskSink | ShardSink:
        sink = self._open_sink()
        if isinstance(sink, DiskSink) and (sink.complete_existing or sink.n_done):  # another process wrote there meanwhile
            sink.close()
            raise FileExistsError(f"a recording appeared at {sink.path} while this one started; record again")
        sink.skipped = list(self.skipped)
        for start, labels in self._labels:
            sink.write_labels(start, labels)
        return sink

    def close(self) -> None:
        pass


class _Pass:
    """State of one recording pass: reductions, reducers and the per-batch dispatch."""

    def __init__(
        self,
        names: list[str],
        reductions: dict[str, Reduction],
        factories: dict[str, Callable[[], Reducer | MultiLayerReducer]],
        sink: MemorySink | DiskSink,
        n_stimuli: int,
        device: torch.device,
        stored: torch.dtype,
        stated: dict[str, Layout | None] | None = None,
        reshapes: dict[str, Callable[[torch.Tensor, int], torch.Tensor]] | None = None,
        rank: int | None = None,
    ):
        self.names, self.reductions, self.factories = names, reductions, factories
        self.rank = rank  # this process's rank in a distributed recording; None in one process
        self.stated = dict(stated or dict.fromkeys(names))
        self.reshapes = dict(reshapes or {})
        self.layer_layouts: dict[str, Layout | None] = {}
        self.n_forward = 0  # stimuli of the batch that went through the model
        self.mask: torch.Tensor | None = None  # the batch's attention mask (dict batches)
        self.sink, self.n_stimuli, self.device, self.stored = sink, n_stimuli, device, stored
        self.transfer = _HostTransfer(sink, device)
        self.start = 0
        self.size = 0
        self.keep: torch.Tensor | None = None  # stimuli of the batch passed through the model; None: all
        self.pending_nan: list[tuple[int, int]] = []  # (start, size) of batches skipped before the layers were known
        self._overflow: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._overflow_before = dict(sink.float16_overflow)  # counted before a resume
        self.started = False
        self.first_calls: dict[str, int] = {}
        self.expanded: dict[tuple[str, int], str] = {}
        self.ops: dict[str, ReductionOp] = {}
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.per_layer: dict[str, dict[str, Reducer]] = {}
        self.multi: dict[str, MultiLayerReducer] = {}
        self._buffer: list[tuple[str, int, torch.Tensor]] = []
        self.multi_batch: dict[str, torch.Tensor] = {}
        self.index = torch.empty(0, dtype=torch.int64)

    def on_output(self, base: str, call: int, output: torch.Tensor) -> None:
        if base in self.reshapes:
            output = self.reshapes[base](output, self.n_forward)
            if not isinstance(output, torch.Tensor):
                raise TypeError(f"reshape[{base!r}] returned {type(output).__name__}, not a tensor")
        if not self.started:  # names and reducers are known after the first pass; keep a copy till then
            self._buffer.append((base, call, output.clone()))
            return
        if output.dim() == 0 or output.shape[0] != self.n_forward:
            raise not_per_stimulus_error(base if call == 1 else f"{base}#{call}", tuple(output.shape), self.n_forward, None)
        name = self.expanded.get((base, call))
        if name is None:
            raise ValueError(
                f"layer {base!r} was called more times in this batch ({call}) than in the first batch "
                f"({self.first_calls[base]}); recording needs the same calls in every forward pass"
            )
        self._consume(name, output)

    def _consume(self, name: str, output: torch.Tensor) -> None:
        if output.shape[1:] != self.shapes[name]:
            raise ValueError(
                f"layer {name!r} produced shape {tuple(output.shape[1:])} per stimulus, but {self.shapes[name]} "
                "on the first batch; all stimuli must give the same layer shapes"
            )
        self.transfer.put(name, self.start, self._stored_rows(name, self.ops[name](output, self.mask)), output)
        for reducers in self.per_layer.values():
            reducers[name].update(output, self.index)
        if self.multi:  # fed after the pass: a copy, since later in-place operations may change the output
            self.multi_batch[name] = output.clone()

    def _stored_rows(self, name: str, reduced: torch.Tensor) -> torch.Tensor:
        """The batch's rows as stored: NaN for skipped stimuli, in the stored dtype (counting float16 overflow)."""
        if self.keep is not None:
            rows = reduced.new_full((self.size, reduced.shape[1]), float("nan"))
            rows[self.keep] = reduced
            reduced = rows
        if reduced.dtype == self.stored:
            return reduced
        stored = reduced.to(self.stored)
        if self.stored == torch.float16:
            # Finite values that became inf; NaN and inf the model itself produced are not counted.
            overflow = torch.isinf(stored) & torch.isfinite(reduced)
            largest = torch.where(overflow, reduced.abs(), 0).amax().float()
            count, so_far = self._overflow.get(name, (0, largest))
            self._overflow[name] = (count + overflow.sum(), torch.maximum(so_far, largest))
        return stored

    def float16_overflow(self) -> dict[str, dict[str, Any]]:
        """Per layer, values that float16 storage turned into inf so far: ``{"count", "largest"}`` (magnitude).

        Empty for float32 storage. Reading the counts waits for the device.
        """
        if self.stored != torch.float16:
            return {}
        counts = {}
        for name in dict.fromkeys([*self._overflow_before, *self.ops]):
            before = self._overflow_before.get(name, {})
            count, largest = before.get("count", 0), before.get("largest")
            new, new_largest = self._overflow.get(name, (0, None))
            if int(new):
                count, largest = count + int(new), max(largest or 0.0, float(new_largest))
            counts[name] = {"count": count, "largest": largest}
        return counts

    def skip_batch(self, labels: np.ndarray) -> None:
        """Store a batch none of whose stimuli went through the model: its labels and NaN rows."""
        self.sink.write_labels(self.start, labels)
        self.pending_nan.append((self.start, self.size))
        self._write_pending_nan()

    def _write_pending_nan(self) -> None:
        """Write the NaN rows of skipped batches once the layers' widths are known."""
        if self.started:
            widths = {name: op.n_units for name, op in self.ops.items()}
        elif isinstance(self.sink, DiskSink) and self.sink.layers:  # resuming: the manifest knows them
            widths = {name: entry["n_units"] for name, entry in self.sink.layers.items()}
        else:
            return
        for start, size in self.pending_nan:
            for name, width in widths.items():
                self.sink.write(name, start, torch.full((size, width), float("nan"), dtype=self.stored).numpy())
        self.pending_nan = []

    def _layouts(self, trace: list[ModuleCall] | None, outputs: dict[tuple[str, int], torch.Tensor]) -> dict:
        """Each recorded call's layout, from the traced first pass; raises for layers that cannot be recorded."""
        if trace is None:
            raise RuntimeError("the first forward pass of a recording must be traced")
        for call in trace:  # a reshaped layer is recorded as the reshape gives it
            if call.name in self.reshapes and (call.name, call.call) in outputs:
                call.output_shape = tuple(outputs[call.name, call.call].shape)
        need = {name: self.reductions[name].mode != "flatten" for name in self.names}
        return layer_layouts(trace, self.names, self.stated, self.n_forward, need, dict.fromkeys(self.reshapes, True))

    def _start(self, calls: dict[str, int], trace: list[ModuleCall] | None) -> None:
        missing = [name for name in self.names if calls[name] == 0]
        if missing:
            raise ValueError(
                f"layers {missing} were not called during the forward pass (defined but unused by forward); "
                "remove them from layers"
            )
        self.first_calls = dict(calls)
        outputs = {(base, call): output for base, call, output in self._buffer}
        layouts = self._layouts(trace, outputs)  # before anything is written
        for base in self.names:  # the requested order, each call in call order
            for call in range(1, calls[base] + 1):
                name = base if calls[base] == 1 else f"{base}#{call}"
                self.expanded[(base, call)] = name
                self.shapes[name] = tuple(outputs[base, call].shape[1:])
                self.layer_layouts[name] = layouts.get((base, call))
                self.ops[name] = ReductionOp(self.reductions[base], name, self.shapes[name], self.device, self.layer_layouts[name])
        layers = {
            name: {
                "n_units": self.ops[name].n_units,
                "shape": list(self.shapes[name]),
                "reduction": self.ops[name].reduction.describe(),
            }
            for name in self.ops
        }
        if self.rank is None or isinstance(self.sink, (DiskSink, ShardSink)):  # one process, or resuming: files are there
            self._open_layers(layers)
        else:  # a new recording: rank 0 creates the files; the others open them once every rank checked its layers
            if self.rank == 0:
                self._open_layers(layers)
            distributed.check_layers(json.loads(json.dumps(layers)))
            if self.rank != 0:
                self._open_layers(layers)
        self._start_reducers()
        self.started = True
        self._write_pending_nan()
        buffered, self._buffer = self._buffer, []
        for base, call, output in buffered:
            self._consume(self.expanded[(base, call)], output)

    def _open_layers(self, layers: dict[str, dict[str, Any]]) -> None:
        """Open the sink for these layers: create their files, or check them against the recording resumed."""
        if isinstance(self.sink, _PendingSink):
            self.sink = self.transfer.sink = self.sink.open()
        if isinstance(self.sink, (DiskSink, ShardSink)) and self.sink.layers:  # resuming, or another rank created them
            on_disk = {name: {key: entry[key] for key in ("n_units", "shape", "reduction")} for name, entry in self.sink.layers.items()}
            if json.loads(json.dumps(layers)) != on_disk:
                raise ValueError(
                    f"the model now gives other layers or shapes than the recording being resumed at {self.sink.path}; "
                    "record again with overwrite=True"
                )
        else:
            self.sink.open_layers(layers)

    def _start_reducers(self) -> None:
        layer_names = tuple(self.ops)
        for reducer_name, factory in self.factories.items():
            first = factory()
            if isinstance(first, MultiLayerReducer):
                first.start(layer_names, self.n_stimuli, self.device)
                self.multi[reducer_name] = first
            elif isinstance(first, Reducer):
                reducers = {name: (first if i == 0 else factory()) for i, name in enumerate(layer_names)}
                for name, reducer in reducers.items():
                    adopt = getattr(reducer, "adopt_layout", None)
                    if callable(adopt):  # TopK, MomentsReducer: read the output in the layout found
                        adopt(self.layer_layouts[name])
                    reducer.start(name, self.n_stimuli, self.device)
                self.per_layer[reducer_name] = reducers
            else:
                raise ValueError(
                    f"reducers[{reducer_name!r}] made a {type(first).__name__}; a reducer factory must return a "
                    "probe.Reducer or probe.MultiLayerReducer"
                )

    def end_batch(self, calls: dict[str, int], trace: list[ModuleCall] | None = None) -> None:
        if not self.started:
            self._start(calls, trace)
        elif calls != self.first_calls:
            changed = {n: (self.first_calls[n], c) for n, c in calls.items() if c != self.first_calls[n]}
            raise ValueError(
                f"layers were called a different number of times than in the first batch (first, now): {changed}; "
                "recording needs the same calls in every forward pass"
            )
        if self.multi:
            for reducer in self.multi.values():
                reducer.update(self.multi_batch, self.index)
            self.multi_batch = {}

    def results(self) -> dict[str, Any]:
        extras: dict[str, Any] = {name: {layer: r.result() for layer, r in rs.items()} for name, rs in self.per_layer.items()}
        extras.update({name: reducer.result() for name, reducer in self.multi.items()})
        return extras


def record(
    model: nn.Module,
    data: Any,
    layers: LayerSelection,
    *,
    reduce: str | Reduction | Mapping[str, str | Reduction] = "auto",
    batch_size: int = 256,
    device: str | torch.device | None = "auto",
    out: str | os.PathLike | None = None,
    reducers: Mapping[str, Callable[[], Reducer | MultiLayerReducer]] | None = None,
    dtype: str = "float32",
    project: int | Mapping[str, int] | None = None,
    seed: int = 0,
    resume: bool = False,
    overwrite: bool = False,
    nonfinite: str = "raise",
    amp: bool = False,
    num_workers: int = 0,
    flush_every: float = 10.0,
    progress: bool = True,
    layout: str | Mapping[str, str] | None = None,
    reshape: Mapping[str, Callable[[torch.Tensor, int], torch.Tensor]] | None = None,
) -> Recording:
    """Record named layers of a model over a dataset in one streaming pass.

    Parameters
    ----------
    model
        Any ``nn.Module``. It runs in eval mode under ``torch.no_grad``; its train/eval modes,
        ``requires_grad`` flags and device are restored afterwards.
    data
        A Dataset whose items are ``(x, y)`` or ``x``, a DataLoader (iterated as is, so keep it
        unshuffled for stable stimulus indices), or a tensor of shape (n_stimuli, ...). For text
        models, stimuli may be dicts of tensors (``input_ids``, ``attention_mask``...), passed to
        the model as keyword arguments: a dict of tensors with one row per stimulus (a tokenizer's
        output), a Dataset whose items are such dicts, or a DataLoader yielding them; labels under
        ``"labels"`` or ``"label"`` are taken as labels and not passed to the model.
    layers
        Module name, list of names, glob (``"layer*"``, matched over ``named_modules()``) or a
        predicate ``(name, module) -> bool``.
    reduce
        A reduction mode for every layer or a dict ``{name or glob: mode}`` (others ``"auto"``):
        ``"auto"`` (the layout's: spatial mean for maps, mean over the tokens after any class or
        register tokens, flatten for vectors), ``"flatten"``, ``"spatial-mean"``/``"mean"``,
        ``"spatial-max"``/``"max"``, ``"token-mean"``, ``"cls"``, ``"tokens"``; see
        ``probe._reducers``. With dict stimuli holding an ``attention_mask``, ``token-mean``
        averages only the tokens the mask marks (padding is skipped).
    batch_size
        Stimuli per forward pass (for Dataset and tensor data).
    device
        ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"``...; reductions run there too.
    out
        A folder for an on-disk recording, read back lazily; None keeps everything in memory.
    reducers
        Extra streaming reducers, ``{name: factory}``; each factory returns a ``probe.Reducer``
        (one per layer, fed the raw layer output, e.g. (batch, C, H, W)) or a
        ``probe.MultiLayerReducer``. Results land in ``recording.extras[name]``.
    dtype
        Stored dtype, ``"float32"`` or ``"float16"`` (reductions are computed in float32). With
        float16, values beyond its range (magnitude above 65,504) become inf: a warning gives their
        number and largest magnitude, and an on-disk manifest keeps the count per layer
        (``float16_overflow``).
    project
        Random-projection width for very wide layers (one int or ``{name or glob: int}``):
        layers with more reduced units are projected with a Gaussian JL matrix seeded by ``seed``.
    seed
        Seed of the random projections.
    resume, overwrite
        For ``out``: continue an interrupted recording of the same model, data and layers from its
        last flushed stimulus, or replace the recording that is there. Resuming compares the
        model's weights, the dataset (its name, seed and options when it exposes them, and a
        fingerprint of its first and last stimulus) and the options; a difference is refused and
        named. Overwriting deletes exactly the files the old recording's manifest lists; a
        non-empty folder that holds no recording is refused.
    nonfinite
        What to do with stimuli holding NaN or inf values (checked on ``device``, batch by batch):
        ``"raise"`` refuses the batch, naming the stimuli's indices; ``"skip"`` leaves them out of
        the forward pass and of every reducer, stores NaN in their rows of every layer, lists their
        indices in ``recording.skipped`` (and the manifest) and warns how many there were.
    amp
        Run the forward pass under autocast (float16 on CUDA, bfloat16 on CPU).
    num_workers
        DataLoader workers for Dataset input.
    flush_every
        Seconds between flushes of an on-disk recording (how much a killed pass loses).
    progress
        Show a tqdm progress bar.
    layout
        The layout of the layers' outputs, one name for every layer or ``{name or glob: name}``
        (others found): ``"channels-first"`` (batch, C, H, W) / (batch, C, L), ``"channels-last"``
        (batch, H, W, C), ``"tokens"`` (batch, T, D), ``"tokens+N"`` (N class/register tokens
        first), ``"vector"``. Unstated layouts are found from the modules and shapes on the first
        batch, before anything is written (rules in ``probe._layouts``); a 4-d output whose
        layout cannot be told is refused (unless recorded with ``reduce="flatten"``), naming the
        layer, its shape and these values. ``probe.describe_layers`` shows the layouts found;
        ``recording.reductions[layer].layout`` keeps the one used. Reducers with an
        ``adopt_layout(layout)`` method (``probe.TopK``, ``probe.MomentsReducer``) are told it.
    reshape
        ``{name or glob: fn}``: ``fn(output, batch_size)`` turns a layer's output into a tensor of
        shape (batch_size, ...) before anything else sees it, for layers whose output does not lead
        with the batch (windowed attention's (batch * windows, N, C)). Such layers are otherwise
        refused before anything is written.

    Returns
    -------
    Recording
        ``rec[layer]`` is an array of shape (n_stimuli, n_units) (a memory map when ``out`` is set).

    Notes
    -----
    ``out`` is written under an exclusive writer lock (``zoo._files.writer_lock``): a second
    process recording into the same folder fails at once, naming this one; the lock of a killed
    process is released by the operating system, so its recording can be resumed. Once complete,
    the manifest holds the size and SHA-256 of every file, which ``Recording.load`` verifies.
    A pass that fails (or is interrupted) before its first flush removes exactly the files it wrote
    and the folders it created, so the corrected call needs neither ``resume`` nor ``overwrite``;
    stimuli already flushed stay, for ``resume``.

    A module called several times in one forward pass is recorded once per call, as
    ``name#1``, ``name#2``... For tuple, list or dict outputs (Hugging Face ``ModelOutput``) the
    first tensor is recorded (``last_hidden_state`` of a transformers encoder).
    ``nn.TransformerEncoderLayer``'s fused fast path, which skips submodule hooks, is disabled
    during the pass.

    **Under torch.distributed** (a process group initialised, as ``torchrun`` and ``zoo.init_distributed``
    do), every process calls ``record`` with the same model and data, and records only its share: whole
    batches of ``batch_size`` (the batches one process would make), split contiguously over the ranks, so
    that no stimulus is dropped or repeated (``probe._shards.batch_shards``; fewer batches than processes
    are refused). Rows are stored at their global indices in the one store; rank 0 alone holds the lock and
    writes the manifest, after every rank has synced its rows; each rank keeps its progress in
    ``progress/rank-NNN.json``, so ``resume=True`` continues each where it stopped (with the same number
    of processes and batch size). Reducers are folded across ranks with their ``merge`` method (refused
    before the pass when they have none). Every rank returns the whole recording. The result equals a
    one-process recording: stored arrays bit for bit (the same batches go through the same model), top-k
    lists exactly, moments and streaming-CKA sums to floating-point merge order (1e-10 in float64). The
    processes' weights and stimuli are compared first: a rank that holds another model is refused.
    ``out`` must be on a file system that every process sees (a shared disk across machines).

    The first batch's forward pass is followed module call by module call (hooks on every module,
    for that batch only): it gives each layer's layout and checks that each layer's output leads
    with the batch. A new on-disk recording's folder is created only after that check, so a
    refused layer leaves nothing behind.

    Raises
    ------
    KeyError
        Unknown layer name (the message lists the nearest names).
    ValueError
        Empty data, a stimulus shape the model cannot take (the message names the failing layer and
        its input shape), bad options, a layer whose output does not lead with the batch, a 4-d
        output whose layout cannot be told. The last two are found before anything is written.
    FileExistsError
        ``out`` holds a different recording (or an incomplete one without ``resume``), or is a
        non-empty folder that holds no recording.
    zoo._files.FolderLockedError
        Another process is writing ``out``.
    """
    if dtype not in STORED_DTYPES:
        raise unknown_name_error("stored dtype", dtype, STORED_DTYPES)
    if nonfinite not in NONFINITE:
        raise unknown_name_error("nonfinite policy", nonfinite, NONFINITE)
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    factories = dict(reducers or {})
    for name, factory in factories.items():
        if not callable(factory):
            raise ValueError(f"reducers[{name!r}] must be a factory (a class or function) returning a reducer")
    device = resolve_device(device)
    names = resolve_layers(model, layers)
    stated = _stated_layouts(layout, names)
    reshapes = _reshapes(reshape, names)
    reductions = _reductions(reduce, project, seed, names, stated)
    source = _Source(data, batch_size, num_workers, pin_memory=device.type == "cuda")
    current = world()
    shards = batch_shards(source.n_stimuli, source.batch_rows, current.size) if current.distributed else None
    shard = shards[current.rank] if shards else range(source.n_stimuli)
    if current.distributed:
        for name, factory in factories.items():
            distributed.check_mergeable(factory(), name)
    model_description = model_fingerprint(model, weights=out is not None)
    dataset_description = source.describe(fingerprint=out is not None)
    if current.distributed:  # every rank must hold the same weights and stimuli (the digest of weights is cached)
        distributed.check_same_everywhere(model_fingerprint(model, weights=True), source.describe(fingerprint=True))
    np_dtype, torch_dtype = STORED_DTYPES[dtype]
    autocast = torch.autocast(device.type, dtype=_AMP_DTYPES.get(device.type, torch.bfloat16)) if amp else nullcontext()

    identity = {  # what an on-disk recording is: compared with the one found at ``out``
        "model": model_description,
        "dataset": dataset_description,
        "layers": names,
        "reductions": {name: reductions[name].describe() for name in names},
        "n_stimuli": source.n_stimuli,
        "dtype": dtype,
    }
    if out is None:
        sink: MemorySink | DiskSink | ShardSink | _PendingSink = MemorySink(source.n_stimuli, np_dtype)
    elif current.distributed:
        sink = distributed.open_sink(
            out, identity, resume=resume, overwrite=overwrite, shards=shards, current=current,
            with_reducers=bool(factories), pending=_PendingSink,
        )
        if sink is None:  # this complete recording is there already
            return Recording.load(out)
    else:
        if overwrite or not (Path(out) / MANIFEST).is_file():
            # a new recording: its folder is written once the first batch has shown every layer can be recorded
            sink = _PendingSink(lambda: DiskSink(out, identity, resume=resume, overwrite=overwrite))
        else:  # resume, or refuse, what is there
            sink = DiskSink(out, identity, resume=resume, overwrite=overwrite)
            if sink.complete_existing:
                sink.close()
                return Recording.load(out)
            if sink.n_done and factories:
                sink.close()
                raise ValueError(
                    "resume cannot continue custom reducers (their state was not saved); record again with "
                    "overwrite=True, or resume without reducers="
                )

    rank = current.rank if current.distributed else None
    run = _Pass(names, reductions, factories, sink, source.n_stimuli, device, torch_dtype, stated, reshapes, rank)
    start = sink.n_done if isinstance(sink, (DiskSink, ShardSink)) else shard.start
    created = None if out is None or not current.is_main else _first_missing(Path(out))
    bar = tqdm(
        total=len(shard), initial=start - shard.start, unit="stimuli",
        desc="record" if rank is None else f"record (rank 0 of {current.size})", disable=not (progress and current.is_main),
    )
    discarded = False
    try:
        with _prepared(model, device), torch.no_grad(), capture_outputs(model, names, run.on_output) as capture:
            last_flush = time.monotonic()
            for x, y in source.batches(start, shard.stop):
                size = batch_length(x)
                labels = _labels_of(y, size)
                x = _to_device(x, device)
                index = torch.arange(start, start + size, device=device)
                bad = _nonfinite_stimuli(x)
                if bad is not None:
                    if nonfinite == "raise":
                        raise _nonfinite_error(index[bad].tolist(), start, size)
                    run.sink.skipped += index[bad].tolist()
                    x, index = _rows(x, ~bad), index[~bad]
                run.start, run.size, run.index, run.keep = start, size, index, (None if bad is None else ~bad)
                run.n_forward, run.mask = len(index), _attention_mask(x)
                if len(index):
                    # the first pass is followed module by module: the layouts and the rows are checked on it
                    with autocast, (nullcontext() if run.started else tracing(model)) as tracer:
                        capture.forward(x)
                    run.end_batch(capture.calls, None if tracer is None else tracer.calls)
                    run.transfer.end_batch(start, labels)
                else:
                    run.skip_batch(labels)
                start += size
                bar.update(size)
                if out is not None and run.started and time.monotonic() - last_flush > flush_every:
                    run.transfer.drain()
                    run.sink.float16_overflow = run.float16_overflow()
                    run.sink.flush(start)
                    last_flush = time.monotonic()
            if run.pending_nan:
                raise ValueError(
                    "every stimulus held NaN or inf values, so none went through the model and nothing was recorded"
                )
            run.transfer.drain()
            if rank is not None:
                distributed.merge_reducers(run.per_layer, run.multi, device)
            extras = run.results()
        sink = run.sink
        sink.float16_overflow = run.float16_overflow()
        if rank is None:
            sink.finish(extras)
        else:
            distributed.finish(sink, shard, extras)
    except BaseException:
        # A pass that failed before its first flush leaves nothing in the way of the corrected rerun.
        discarded = isinstance(run.sink, DiskSink) and run.sink.discard_if_empty()
        raise
    finally:
        bar.close()
        run.sink.close()
        if discarded and created is not None:
            _remove_empty_folders(Path(out), created)

    if current.is_main:
        _warn_about(sink.skipped, sink.float16_overflow)
    if out is not None:
        recording = Recording.load(out, verify=False)  # just written and checksummed
        recording.extras = extras
        return recording
    return Recording(
        sink.arrays,
        labels=sink.labels,
        shapes=run.shapes,
        reductions={name: op.reduction for name, op in run.ops.items()},
        extras=extras,
        model=model_description,
        dataset=dataset_description,
        skipped=sink.skipped,
    )


def _first_missing(path: Path) -> Path | None:
    """The outermost folder of ``path`` (``path`` itself included) that does not exist yet (None when it does)."""
    missing = None
    for folder in (path, *path.parents):
        if folder.exists():
            break
        missing = folder
    return missing


def _remove_empty_folders(path: Path, top: Path) -> None:
    """Remove ``path`` and its parents up to ``top`` (the folders a failed recording created), while empty."""
    for folder in (path, *path.parents):
        if not folder.is_dir() or any(folder.iterdir()):
            return
        folder.rmdir()
        if folder == top:
            return


def _nonfinite_stimuli(x: Any) -> torch.Tensor | None:
    """Mask of shape (batch,) of the stimuli holding NaN or inf, or None when every one is finite.

    Computed where the batch is (one pass over it; on CUDA reading the answer waits for the device).
    For a dict batch, its floating-point tensors are checked.
    """
    if isinstance(x, Mapping):
        masks = [_nonfinite_stimuli(value) for value in x.values() if isinstance(value, torch.Tensor) and value.dim() >= 1]
        masks = [mask for mask in masks if mask is not None]
        if not masks:
            return None
        found = masks[0]
        for mask in masks[1:]:
            found = found | mask
        return found
    if not (x.is_floating_point() or x.is_complex()):
        return None
    finite = torch.isfinite(x)
    finite = finite.flatten(1).all(dim=1) if x.dim() > 1 else finite
    return None if bool(finite.all()) else ~finite


def _shown(indices: list[int]) -> str:
    return ", ".join(map(str, indices[:_SHOWN])) + (", ..." if len(indices) > _SHOWN else "")


def _nonfinite_error(indices: list[int], start: int, size: int) -> ValueError:
    return ValueError(
        f"{len(indices)} of the stimuli {start}..{start + size - 1} hold NaN or inf values (indices {_shown(indices)}); "
        "recorded, their rows would be NaN or inf. Fix or drop those stimuli, or pass nonfinite='skip' to record the "
        "others and store NaN rows for these (listed in recording.skipped)"
    )


def _warn_about(skipped: list[int], overflow: dict[str, dict[str, Any]]) -> None:
    """Warn once at the end of a pass about skipped stimuli and float16 overflow."""
    if skipped:
        warnings.warn(
            f"{len(skipped)} stimuli held NaN or inf values and were skipped (indices {_shown(skipped)}): their rows "
            "are NaN in every layer; recording.skipped lists them",
            stacklevel=3,
        )
    overflowed = {name: entry for name, entry in overflow.items() if entry["count"]}
    if overflowed:
        total = sum(entry["count"] for entry in overflowed.values())
        largest = max(entry["largest"] for entry in overflowed.values())
        per_layer = ", ".join(f"{name}: {entry['count']}" for name, entry in overflowed.items())
        warnings.warn(
            f"float16 storage turned {total} values beyond its range (magnitude above 65,504) into inf ({per_layer}; "
            f"largest magnitude {largest:.6g}); record with dtype='float32' to keep them",
            stacklevel=3,
        )
