"""The reducer contract: what a recording keeps of each batch, computed where the batch lives.

A recording is one pass over the data. For every batch, each reducer is handed the raw output of
its layer (or of all recorded layers) on the model's device, and keeps only what its analysis
needs: pooled activations, a running top-k, running moments, Gram-matrix sums. Adding a reducer
is one small subclass of ``Reducer`` (one layer at a time) or ``MultiLayerReducer`` (all recorded
layers of a batch at once, for cross-layer statistics such as streaming CKA).

The contract lives here, below both the recording engine (``probe``, which drives reducers) and
the measures (``analyses``, whose streaming CKA is one), so that neither imports the other for it.
Users reach it as ``probe.Reducer`` and ``probe.MultiLayerReducer``.
"""

from __future__ import annotations

import abc
from typing import Any, Mapping

import torch

__all__ = ["Reducer", "MultiLayerReducer", "first_tensor"]


class Reducer(abc.ABC):
    """Consumes one layer's output batch by batch.

    The recording engine calls ``start`` once before the pass, ``update`` once per batch and
    ``result`` once after the last batch. A fresh instance is made per layer (reducers are passed
    to ``probe.record`` as factories), so an instance may keep per-layer state freely.
    """

    layer: str = ""
    n_stimuli: int = 0
    device: torch.device = torch.device("cpu")

    def start(self, layer: str, n_stimuli: int, device: torch.device) -> None:
        """Called once before the first batch; the default stores its arguments."""
        self.layer, self.n_stimuli, self.device = layer, n_stimuli, device

    @abc.abstractmethod
    def update(self, activations: torch.Tensor, stimulus_index: torch.Tensor) -> None:
        """Consume one batch.

        Parameters
        ----------
        activations
            The layer's output for the batch, detached, on the model's device: shape (batch, ...)
            such as (batch, C, H, W) for conv maps or (batch, tokens, dim) for ViT blocks.
        stimulus_index
            int64 tensor of shape (batch,) on the same device: each row's index in the dataset.
        """

    @abc.abstractmethod
    def result(self) -> Any:
        """Return what the pass kept (NumPy arrays or small result objects, on the CPU)."""

    def merge(self, other: "Reducer") -> None:
        """Fold in ``other``: the same reducer of the same layer, fed the other stimuli of a distributed run.

        Under ``torch.distributed`` each process feeds its own reducers with its shard of the stimuli;
        at the end ``probe.record`` gathers every rank's reducers and folds them, in rank order, into
        rank 0's with this method, on every rank, before ``result`` is called. Afterwards this
        reducer must hold what one reducer fed every stimulus would hold (up to floating-point
        summation order). ``other`` arrives on this reducer's device. A reducer without ``merge``
        cannot be used in a distributed recording: ``probe.record`` refuses it before the pass.
        """
        raise NotImplementedError(
            f"{type(self).__name__} has no merge(other), so it cannot combine the shards of a distributed recording; "
            "define merge (see probe.Reducer.merge) or record in one process"
        )


class MultiLayerReducer(abc.ABC):
    """Consumes the outputs of all recorded layers of each batch together.

    Same life cycle as ``Reducer``, but one instance serves the whole recording and ``update``
    receives a dict ``{layer name: activations}``.
    """

    layers: tuple[str, ...] = ()
    n_stimuli: int = 0
    device: torch.device = torch.device("cpu")

    def start(self, layers: tuple[str, ...], n_stimuli: int, device: torch.device) -> None:
        """Called once before the first batch; the default stores its arguments."""
        self.layers, self.n_stimuli, self.device = tuple(layers), n_stimuli, device

    @abc.abstractmethod
    def update(self, activations: dict[str, torch.Tensor], stimulus_index: torch.Tensor) -> None:
        """Consume one batch: raw outputs per layer (as in ``Reducer.update``)."""

    @abc.abstractmethod
    def result(self) -> Any:
        """Return what the pass kept."""

    def merge(self, other: "MultiLayerReducer") -> None:
        """Fold in another rank's reducer of a distributed run (see ``Reducer.merge``)."""
        raise NotImplementedError(
            f"{type(self).__name__} has no merge(other), so it cannot combine the shards of a distributed recording; "
            "define merge (see probe.Reducer.merge) or record in one process"
        )


def first_tensor(output: Any) -> torch.Tensor | None:
    """The first tensor in a (possibly nested) module output, or None if it holds none: what a layer's
    reducers receive (``probe.record``) and what its receptive field is measured on (``analyses``).

    Dicts (and Hugging Face ``ModelOutput`` objects, which are ordered dicts) give their first
    tensor value in insertion order: ``last_hidden_state`` for a transformers encoder.
    """
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, Mapping):
        output = list(output.values())
    if isinstance(output, (tuple, list)):
        for item in output:
            found = first_tensor(item)
            if found is not None:
                return found
    return None
