"""Reductions (what each batch of a layer is turned into) and the built-in streaming reducers.

A *reduction* maps a layer's raw output of shape (batch, ...) to a matrix of shape
(batch, n_units), on the model's device, reading the output in its layout (``probe._layouts``):

==============  ==========================================  ===========================================
mode            input (layout)                              result
==============  ==========================================  ===========================================
``flatten``     any (batch, ...)                            every value; units = product of the shape
``spatial-mean``maps: (batch, C, H, W) channels-first,      mean over the positions; units = C
                (batch, H, W, C) channels-last
``spatial-max`` maps                                        max over the positions; units = C
``token-mean``  tokens (batch, T, D)                        mean over the tokens after the prefix tokens
                                                            (class, registers), skipping padding where
                                                            the batch has an ``attention_mask``; units = D
``cls``         tokens                                      the first (class) token; units = D
``tokens``      tokens                                      every token; units = T * D (token-major)
``auto``        maps                                        ``spatial-mean``
                tokens                                      ``token-mean``
                vector (batch, D)                           ``flatten``
==============  ==========================================  ===========================================

``"mean"`` and ``"max"`` are accepted as short names of ``spatial-mean`` and ``spatial-max``.
``probe.record`` finds each layer's layout (or takes it from ``layout=``). Used on its own, a
``Reduction`` without a layout reads outputs by their rank: 4-d and more as channels-first maps,
3-d as tokens (or, when ``spatial-mean``/``spatial-max`` is asked, as a (batch, C, L) map), 2-d as
vectors. An optional Gaussian Johnson-Lindenstrauss random projection with a fixed seed maps very
wide layers to ``project`` units after the reduction.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch

from probe._layouts import RANK_DEFAULT, Layout, ambiguous_layout_error
from zoo._names import unknown_name_error
from zoo._reducer import Reducer

__all__ = ["REDUCTIONS", "Reduction", "Moments", "MomentsReducer"]

_MAP_MODES = ("spatial-mean", "spatial-max")
_TOKEN_MODES = ("token-mean", "cls", "tokens")


def rank_layout(ndim: int, mode: str = "auto") -> Layout:
    """The layout an output of ``ndim`` dimensions (batch first) has when nothing else is known."""
    if ndim >= 4 or (ndim == 3 and mode in _MAP_MODES):
        return Layout("channels-first", 0, RANK_DEFAULT)
    return Layout("tokens", 0, RANK_DEFAULT) if ndim == 3 else Layout("vector", 0, RANK_DEFAULT)


def _layout_for(x: torch.Tensor, layout: Layout | None, mode: str) -> Layout:
    return layout if layout is not None else rank_layout(x.dim(), mode)


def _map(x: torch.Tensor, layout: Layout | None, mode: str) -> Layout:
    layout = _layout_for(x, layout, mode)
    if not layout.is_map or x.dim() < 3:
        raise ValueError(
            f"reduction {mode!r} needs a map of shape (batch, C, H, W), (batch, H, W, C) or (batch, C, L), got shape "
            f"{tuple(x.shape)} ({layout.name}); use reduce='flatten' or 'auto' for this layer"
        )
    return layout


def _tokens(x: torch.Tensor, layout: Layout | None, mode: str) -> Layout:
    layout = _layout_for(x, layout, mode)
    if layout.kind != "tokens" or x.dim() != 3:
        raise ValueError(
            f"reduction {mode!r} needs tokens of shape (batch, tokens, dim), got shape {tuple(x.shape)} "
            f"({layout.name}); use reduce='auto' or 'flatten' for this layer"
        )
    return layout


def _flatten(x: torch.Tensor, layout: Layout | None = None, mask: torch.Tensor | None = None) -> torch.Tensor:
    return x.reshape(x.shape[0], -1)


def _spatial_mean(x: torch.Tensor, layout: Layout | None = None, mask: torch.Tensor | None = None) -> torch.Tensor:
    return x.mean(dim=_map(x, layout, "spatial-mean").spatial_axes(x.dim()))


def _spatial_max(x: torch.Tensor, layout: Layout | None = None, mask: torch.Tensor | None = None) -> torch.Tensor:
    return x.amax(dim=_map(x, layout, "spatial-max").spatial_axes(x.dim()))


def _token_mean(x: torch.Tensor, layout: Layout | None = None, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over the tokens after the prefix; with ``mask`` (batch, T), over the tokens it marks."""
    prefix = _tokens(x, layout, "token-mean").prefix_tokens
    x = x[:, prefix:]
    if mask is None:
        return x.mean(dim=1)
    weights = mask[:, prefix:].to(x.dtype).unsqueeze(2)
    return (x * weights).sum(dim=1) / weights.sum(dim=1)


def _class_token(x: torch.Tensor, layout: Layout | None = None, mask: torch.Tensor | None = None) -> torch.Tensor:
    _tokens(x, layout, "cls")
    return x[:, 0]


def _every_token(x: torch.Tensor, layout: Layout | None = None, mask: torch.Tensor | None = None) -> torch.Tensor:
    _tokens(x, layout, "tokens")
    return x.reshape(x.shape[0], -1)


def _auto_mode(layout: Layout) -> str:
    return {"tokens": "token-mean", "vector": "flatten"}.get(layout.kind, "spatial-mean")


#: Reduction mode -> function ``f(x, layout=None, mask=None)`` of a tensor of shape (batch, ...)
#: returning (batch, n_units); without a layout the output is read by its rank.
REDUCTIONS: dict[str, Callable[..., torch.Tensor]] = {
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
        One of ``REDUCTIONS`` or ``"auto"`` (resolved from the output's layout on the first batch,
        see the module docstring).
    project
        When set and the reduced layer has more units than this, project it to ``project`` units
        with a fixed-seed Gaussian random projection (Johnson-Lindenstrauss).
    seed
        Seed of the projection.
    layout
        The output's layout (``"channels-first"``, ``"channels-last"``, ``"tokens"``,
        ``"tokens+1"``, ``"vector"``), or None: found by ``probe.record``, else read by rank.
    """

    mode: str = "auto"
    project: int | None = None
    seed: int = 0
    layout: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "mode", check_mode(self.mode))
        if self.project is not None and (not isinstance(self.project, (int, np.integer)) or self.project < 1):
            raise ValueError(f"project must be a positive number of units or None, got {self.project!r}")
        if self.layout is not None:
            object.__setattr__(self, "layout", Layout.parse(self.layout).name)

    def resolve(self, raw_shape: tuple[int, ...], layout: Layout | str | None = None) -> "Reduction":
        """This reduction for a per-stimulus ``raw_shape``: ``auto`` replaced by the mode its layout
        implies, and the layout filled in.

        The layout is this reduction's own, else ``layout``, else the one the rank implies (the
        rank is not used for ``flatten``, which needs no layout).
        """
        if isinstance(layout, Layout) and layout.how == RANK_DEFAULT:
            layout = None  # a 3-d output nothing says more of: read by rank, as the mode asks
        chosen = self.layout if self.layout is not None else layout
        chosen = Layout.parse(chosen, "given") if chosen is not None else None
        if chosen is None and self.mode == "flatten":
            return self
        chosen = chosen or rank_layout(len(raw_shape) + 1, self.mode)
        mode = _auto_mode(chosen) if self.mode == "auto" else self.mode
        return Reduction(mode, self.project, self.seed, chosen.name)

    def _layout(self, raw_shape: tuple[int, ...]) -> Layout:
        return Layout.parse(self.layout) if self.layout is not None else rank_layout(len(raw_shape) + 1, self.mode)

    def n_reduced(self, raw_shape: tuple[int, ...]) -> int:
        """Number of units after the mode (before any projection) for a per-stimulus ``raw_shape``."""
        resolved = self.resolve(raw_shape)
        layout = resolved._layout(raw_shape)
        return int(REDUCTIONS[resolved.mode](torch.empty((1, *raw_shape), device="meta"), layout).shape[1])

    def n_units(self, raw_shape: tuple[int, ...]) -> int:
        """Number of stored units for a per-stimulus ``raw_shape``."""
        n = self.n_reduced(raw_shape)
        return self.project if self.project is not None and n > self.project else n

    def describe(self) -> dict[str, Any]:
        """JSON-able description, stored in manifests and shown in reports (``layout`` when known)."""
        description = {"mode": self.mode, "project": self.project, "seed": self.seed}
        if self.layout is not None:
            description["layout"] = self.layout
        return description

    @classmethod
    def from_description(cls, description: dict[str, Any]) -> "Reduction":
        return cls(description["mode"], description.get("project"), description.get("seed", 0), description.get("layout"))

    def label(self) -> str:
        """Short human-readable name, for example ``"flatten -> JL 512"``."""
        return self.mode + (f" -> JL {self.project}" if self.project is not None else "")

    def units_frame(self, raw_shape: tuple[int, ...]) -> pd.DataFrame:
        """Unit metadata: one row per stored unit.

        Columns: ``unit`` and, depending on the reduction, ``channel`` (the channel or feature
        index), ``token``, ``row``/``col`` (spatial position for flattened maps) or
        ``component`` (random projection); then ``reduction`` and ``shape`` (the layer's raw
        output per stimulus, e.g. "64x8x8"), also in ``frame.attrs`` with ``layout``.
        """
        resolved = self.resolve(raw_shape)
        n_reduced = resolved.n_reduced(raw_shape)
        layout = resolved.layout
        if resolved.project is not None and n_reduced > resolved.project:
            frame = pd.DataFrame({"unit": np.arange(resolved.project), "component": np.arange(resolved.project)})
        elif resolved.mode in ("flatten", "tokens"):
            frame = _flat_units(raw_shape, layout)
        elif resolved.mode in _MAP_MODES:
            channels = resolved._layout(raw_shape).map_shape(raw_shape)[1]
            frame = pd.DataFrame({"unit": np.arange(channels), "channel": np.arange(channels)})
        else:  # token-mean, cls: one unit per feature dimension
            frame = pd.DataFrame({"unit": np.arange(raw_shape[-1]), "channel": np.arange(raw_shape[-1])})
        frame["reduction"] = resolved.label()
        frame["shape"] = "x".join(map(str, raw_shape))
        frame.attrs.update(shape=tuple(raw_shape), reduction=resolved.label(), layout=layout)
        return frame


def _flat_units(raw_shape: tuple[int, ...], layout: str | None = None) -> pd.DataFrame:
    n = int(np.prod(raw_shape)) if raw_shape else 1
    unit = np.arange(n)
    if len(raw_shape) <= 1:
        return pd.DataFrame({"unit": unit, "channel": unit})
    index = np.unravel_index(unit, raw_shape)
    if layout == "channels-last":
        names = {2: ("col", "channel"), 3: ("row", "col", "channel")}.get(
            len(raw_shape), (*(f"axis{i}" for i in range(len(raw_shape) - 1)), "channel")
        )
    else:
        names = {2: ("token", "channel"), 3: ("channel", "row", "col")}.get(
            len(raw_shape), ("channel", *(f"axis{i}" for i in range(1, len(raw_shape))))
        )
        if layout == "channels-first" and len(raw_shape) == 2:
            names = ("channel", "col")
    return pd.DataFrame({"unit": unit, **{name: axis for name, axis in zip(names, index)}})


class ReductionOp:
    """A resolved reduction for one layer, ready to run on batches on the model's device.

    ``layout`` is the layer's layout (found by ``probe.record``); without one (and without one in
    ``reduction``) the output is read by its rank.
    """

    def __init__(
        self,
        reduction: Reduction,
        layer: str,
        raw_shape: tuple[int, ...],
        device: torch.device,
        layout: Layout | str | None = None,
    ):
        self.reduction = reduction.resolve(raw_shape, layout)
        self.raw_shape = tuple(raw_shape)
        self.layout = self.reduction._layout(raw_shape) if self.reduction.layout is not None else None
        self._reduce = REDUCTIONS[self.reduction.mode]
        self.masked = self.reduction.mode == "token-mean"
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

    def __call__(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Reduce a batch; ``mask`` (batch, T) marks the real (non-padding) tokens for ``token-mean``."""
        if x.dtype in (torch.float16, torch.bfloat16) or not x.is_floating_point():
            x = x.float()  # reduce half-precision (autocast) outputs in float32
        if mask is not None and not (self.masked and x.dim() == 3 and mask.shape == x.shape[:2]):
            mask = None
        reduced = self._reduce(x, self.layout, mask)
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
        self._layout: Layout | None = None
        self._unknown_layout = False  # probe.record could not tell the layer's layout
        self._op: ReductionOp | None = None
        self._n = 0
        self._mean: torch.Tensor | None = None
        self._scatter: torch.Tensor | None = None

    def adopt_layout(self, layout: Layout | None) -> None:
        """Called by ``probe.record`` with the layer's layout before the pass (None: it cannot be told)."""
        self._layout, self._unknown_layout = layout, layout is None

    def update(self, activations: torch.Tensor, stimulus_index: torch.Tensor) -> None:
        if self._op is None:
            needs_layout = self.reduction.mode != "flatten" and self.reduction.layout is None
            if self._unknown_layout and needs_layout and activations.dim() >= 4:
                raise ambiguous_layout_error(self.layer, tuple(activations.shape), "MomentsReducer input")
            self._op = ReductionOp(
                self.reduction, self.layer, tuple(activations.shape[1:]), activations.device, self._layout
            )
        x = self._op(activations).double()
        batch_mean = x.mean(dim=0)
        centred = x - batch_mean
        self._fold(x.shape[0], batch_mean, centred.T @ centred)

    def _fold(self, n: int, mean: torch.Tensor, scatter: torch.Tensor) -> None:
        """Add the moments of ``n`` more stimuli (Chan et al.'s pairwise update)."""
        if self._mean is None:
            self._n, self._mean, self._scatter = n, mean, scatter
            return
        total = self._n + n
        delta = mean - self._mean
        self._mean = self._mean + delta * (n / total)
        self._scatter = self._scatter + scatter + torch.outer(delta, delta) * (self._n * n / total)
        self._n = total

    def merge(self, other: "MomentsReducer") -> None:
        """Fold in another rank's moments of the same layer (the same pairwise update as between batches)."""
        if other._mean is not None:
            self._fold(other._n, other._mean.to(self.device), other._scatter.to(self.device))
        if self._op is None:
            self._op = other._op

    def result(self) -> Moments:
        if self._mean is None:
            raise ValueError(f"MomentsReducer for layer {self.layer!r} saw no batch")
        return Moments(self._n, self._mean.cpu().numpy(), self._scatter.cpu().numpy())
