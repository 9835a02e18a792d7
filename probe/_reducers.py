"""Reductions (what each batch of a layer is turned into) and the built-in streaming reducers.

A *reduction* maps a layer's raw output of shape (batch, ...) to a matrix of shape
(batch, n_units), on the model's device:

==============  =====================  ==============================================
mode            input                  result
==============  =====================  ==============================================
``flatten``     any (batch, ...)       every value; units = product of the shape
``spatial-mean``(batch, C, *spatial)   mean over the spatial axes; units = C
``spatial-max`` (batch, C, *spatial)   max over the spatial axes; units = C
``token-mean``  (batch, T, D)          mean over tokens; units = D
``cls``         (batch, T, D)          the first (class) token; units = D
``tokens``      (batch, T, D)          every token; units = T * D (token-major)
``auto``        4-D or more            ``spatial-mean``
                3-D                    ``token-mean`` (read as ViT tokens)
                2-D / 1-D              ``flatten``
==============  =====================  ==============================================

``"mean"`` and ``"max"`` are accepted as short names of ``spatial-mean`` and ``spatial-max``.
A 3-D output is read as (batch, tokens, dim); for a Conv1d map (batch, C, L) ask for
``spatial-mean`` explicitly. An optional Gaussian Johnson-Lindenstrauss random projection with a
fixed seed maps very wide layers to ``project`` units after the reduction.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch

from zoo._names import unknown_name_error
from zoo._reducer import Reducer

__all__ = ["REDUCTIONS", "Reduction", "Moments", "MomentsReducer"]


def _spatial_axes(x: torch.Tensor, mode: str) -> tuple[int, ...]:
    if x.dim() < 3:
        raise ValueError(
            f"reduction {mode!r} needs a map of shape (batch, C, H, W) or (batch, C, L), got shape "
            f"{tuple(x.shape)}; use reduce='flatten' or 'auto' for this layer"
        )
    return tuple(range(2, x.dim()))


def _tokens(x: torch.Tensor, mode: str) -> torch.Tensor:
    if x.dim() != 3:
        raise ValueError(
            f"reduction {mode!r} needs tokens of shape (batch, tokens, dim), got shape {tuple(x.shape)}; "
            "use reduce='auto' or 'flatten' for this layer"
        )
    return x


def _flatten(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], -1)


def _spatial_mean(x: torch.Tensor) -> torch.Tensor:
    return x.mean(dim=_spatial_axes(x, "spatial-mean"))


def _spatial_max(x: torch.Tensor) -> torch.Tensor:
    return x.amax(dim=_spatial_axes(x, "spatial-max"))


def _token_mean(x: torch.Tensor) -> torch.Tensor:
    return _tokens(x, "token-mean").mean(dim=1)


def _class_token(x: torch.Tensor) -> torch.Tensor:
    return _tokens(x, "cls")[:, 0]


def _every_token(x: torch.Tensor) -> torch.Tensor:
    return _tokens(x, "tokens").reshape(x.shape[0], -1)


def _auto_mode(ndim: int) -> str:
    return "spatial-mean" if ndim >= 4 else "token-mean" if ndim == 3 else "flatten"


#: Reduction mode -> function of a tensor of shape (batch, ...) returning (batch, n_units).
REDUCTIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "flatten": _flatten,
    "spatial-mean": _spatial_mean,
    "spatial-max": _spatial_max,
    "token-mean": _token_mean,
    "cls": _class_token,
    "tokens": _every_token,
}
_ALIASES = {"mean": "spatial-mean", "max": "spatial-max"}


def check_mode(mode: str) -> str:
    """Return the canonical name of a reduction mode, or raise ValueError naming the valid ones."""
    if not isinstance(mode, str):
        raise ValueError(f"a reduction mode must be a string, got {mode!r}; valid modes: {sorted(REDUCTIONS)}")
    mode = _ALIASES.get(mode, mode)
    if mode != "auto" and mode not in REDUCTIONS:
        raise unknown_name_error("reduction", mode, ["auto", *REDUCTIONS, *_ALIASES])
    return mode


def projection_matrix(n_in: int, n_out: int, seed: int, layer: str, device: torch.device) -> torch.Tensor:
    """Gaussian Johnson-Lindenstrauss matrix of shape (n_in, n_out), entries N(0, 1/n_out).

    Drawn on the CPU from a generator seeded by ``seed`` and the layer's name, so that the same
    seed gives the same projection on every device.
    """
    generator = torch.Generator().manual_seed((int(seed) * 1_000_003 + zlib.crc32(layer.encode())) % 2**63)
    matrix = torch.randn(n_in, n_out, generator=generator, dtype=torch.float32) / np.sqrt(n_out)
    return matrix.to(device)


@dataclass(frozen=True)
class Reduction:
    """How one layer's output is reduced to (batch, n_units).

    Parameters
    ----------
    mode
        One of ``REDUCTIONS`` or ``"auto"`` (resolved from the output's number of dimensions on
        the first batch, see the module docstring).
    project
        When set and the reduced layer has more units than this, project it to ``project`` units
        with a fixed-seed Gaussian random projection (Johnson-Lindenstrauss).
    seed
        Seed of the projection.
    """

    mode: str = "auto"
    project: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "mode", check_mode(self.mode))
        if self.project is not None and (not isinstance(self.project, (int, np.integer)) or self.project < 1):
            raise ValueError(f"project must be a positive number of units or None, got {self.project!r}")

    def resolve(self, raw_shape: tuple[int, ...]) -> "Reduction":
        """Return this reduction with ``auto`` replaced by the mode for a per-stimulus ``raw_shape``."""
        if self.mode != "auto":
            return self
        return Reduction(_auto_mode(len(raw_shape) + 1), self.project, self.seed)

    def n_reduced(self, raw_shape: tuple[int, ...]) -> int:
        """Number of units after the mode (before any projection) for a per-stimulus ``raw_shape``."""
        mode = self.resolve(raw_shape).mode
        return int(REDUCTIONS[mode](torch.empty((1, *raw_shape), device="meta")).shape[1])

    def n_units(self, raw_shape: tuple[int, ...]) -> int:
        """Number of stored units for a per-stimulus ``raw_shape``."""
        n = self.n_reduced(raw_shape)
        return self.project if self.project is not None and n > self.project else n

    def describe(self) -> dict[str, Any]:
        """JSON-able description, stored in manifests and shown in reports."""
        return {"mode": self.mode, "project": self.project, "seed": self.seed}

    @classmethod
    def from_description(cls, description: dict[str, Any]) -> "Reduction":
        return cls(description["mode"], description.get("project"), description.get("seed", 0))

    def label(self) -> str:
        """Short human-readable name, for example ``"flatten -> JL 512"``."""
        return self.mode + (f" -> JL {self.project}" if self.project is not None else "")

    def units_frame(self, raw_shape: tuple[int, ...]) -> pd.DataFrame:
        """Unit metadata: one row per stored unit.

        Columns: ``unit`` and, depending on the reduction, ``channel`` (the channel or feature
        index), ``token``, ``row``/``col`` (spatial position for flattened conv maps) or
        ``component`` (random projection); then ``reduction`` and ``shape`` (the layer's raw
        output per stimulus, e.g. "64x8x8"), also in ``frame.attrs``.
        """
        resolved = self.resolve(raw_shape)
        n_reduced = resolved.n_reduced(raw_shape)
        if resolved.project is not None and n_reduced > resolved.project:
            frame = pd.DataFrame({"unit": np.arange(resolved.project), "component": np.arange(resolved.project)})
        elif resolved.mode in ("flatten", "tokens"):
            frame = _flat_units(raw_shape)
        elif resolved.mode in ("spatial-mean", "spatial-max"):
            frame = pd.DataFrame({"unit": np.arange(raw_shape[0]), "channel": np.arange(raw_shape[0])})
        else:  # token-mean, cls: one unit per feature dimension
            frame = pd.DataFrame({"unit": np.arange(raw_shape[-1]), "channel": np.arange(raw_shape[-1])})
        frame["reduction"] = resolved.label()
        frame["shape"] = "x".join(map(str, raw_shape))
        frame.attrs.update(shape=tuple(raw_shape), reduction=resolved.label())
        return frame


def _flat_units(raw_shape: tuple[int, ...]) -> pd.DataFrame:
    n = int(np.prod(raw_shape)) if raw_shape else 1
    unit = np.arange(n)
    if len(raw_shape) <= 1:
        return pd.DataFrame({"unit": unit, "channel": unit})
    index = np.unravel_index(unit, raw_shape)
    names = {2: ("token", "channel"), 3: ("channel", "row", "col")}.get(
        len(raw_shape), ("channel", *(f"axis{i}" for i in range(1, len(raw_shape))))
    )
    return pd.DataFrame({"unit": unit, **{name: axis for name, axis in zip(names, index)}})


class ReductionOp:
    """A resolved reduction for one layer, ready to run on batches on the model's device."""

    def __init__(self, reduction: Reduction, layer: str, raw_shape: tuple[int, ...], device: torch.device):
        self.reduction = reduction.resolve(raw_shape)
        self.raw_shape = tuple(raw_shape)
        self._reduce = REDUCTIONS[self.reduction.mode]
        try:
            n_reduced = self.reduction.n_reduced(raw_shape)
        except ValueError as err:
            raise ValueError(f"layer {layer!r}: {err}") from None
        project = self.reduction.project
        self._matrix = (
            projection_matrix(n_reduced, project, self.reduction.seed, layer, device)
            if project is not None and n_reduced > project
            else None
        )
        self.n_units = self.reduction.n_units(raw_shape)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype in (torch.float16, torch.bfloat16) or not x.is_floating_point():
            x = x.float()  # reduce half-precision (autocast) outputs in float32
        reduced = self._reduce(x)
        if self._matrix is None:
            return reduced
        if self._matrix.dtype != reduced.dtype:
            self._matrix = self._matrix.to(reduced.dtype)
        return reduced @ self._matrix


@dataclass
class Moments:
    """Running moments of a layer's reduced activations.

    Attributes
    ----------
    n
        Number of stimuli.
    mean
        Array of shape (n_units,).
    scatter
        Array of shape (n_units, n_units): sum of outer products of centred rows.
    """

    n: int
    mean: np.ndarray
    scatter: np.ndarray

    def covariance(self, ddof: int = 1) -> np.ndarray:
        """Covariance matrix of shape (n_units, n_units), as ``np.cov(x, rowvar=False, ddof=ddof)``."""
        if self.n - ddof <= 0:
            raise ValueError(f"covariance needs more than {ddof} stimuli, got {self.n}")
        return self.scatter / (self.n - ddof)


class MomentsReducer(Reducer):
    """Running mean and covariance of a layer, for PCA on datasets larger than memory.

    Each batch's mean and centred scatter matrix are computed in float64 on the model's device
    and merged into the running totals with Chan et al.'s pairwise update, which stays accurate
    when the mean is large compared with the spread.

    Parameters
    ----------
    reduce
        The reduction applied to each batch before the moments (see ``Reduction``).
    project
        Optional random projection size (see ``Reduction``), to keep the covariance small.

    Examples
    --------
    >>> rec = probe.record(model, data, "fc1", reducers={"moments": probe.MomentsReducer})
    >>> cov = rec.extras["moments"]["fc1"].covariance()
    """

    def __init__(self, reduce: str = "auto", project: int | None = None, seed: int = 0):
        self.reduction = Reduction(reduce, project, seed)
        self._op: ReductionOp | None = None
        self._n = 0
        self._mean: torch.Tensor | None = None
        self._scatter: torch.Tensor | None = None

    def update(self, activations: torch.Tensor, stimulus_index: torch.Tensor) -> None:
        if self._op is None:
            self._op = ReductionOp(self.reduction, self.layer, tuple(activations.shape[1:]), activations.device)
        x = self._op(activations).double()
        n_batch = x.shape[0]
        batch_mean = x.mean(dim=0)
        centred = x - batch_mean
        batch_scatter = centred.T @ centred
        if self._mean is None:
            self._n, self._mean, self._scatter = n_batch, batch_mean, batch_scatter
            return
        total = self._n + n_batch
        delta = batch_mean - self._mean
        self._mean = self._mean + delta * (n_batch / total)
        self._scatter = self._scatter + batch_scatter + torch.outer(delta, delta) * (self._n * n_batch / total)
        self._n = total

    def result(self) -> Moments:
        if self._mean is None:
            raise ValueError(f"MomentsReducer for layer {self.layer!r} saw no batch")
        return Moments(self._n, self._mean.cpu().numpy(), self._scatter.cpu().numpy())
