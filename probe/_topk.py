"""A streaming top-k reducer: the stimuli (and positions) that drive each unit most and least.

The running buffers live on the model's device and hold O(units x k) entries; each batch is merged
with them by one ``torch.topk`` over the concatenated candidates, with no host synchronisation.

Ranking key
-----------
Every candidate is encoded as one int64 key: the high 32 bits are the float32 value mapped to an
order-preserving integer, the low 32 bits are ``2**32 - 1 - id``, where ``id`` is the candidate's
global identifier (the stimulus index, or ``stimulus * n_positions + position`` when positions
compete). Keys are therefore unique, ``torch.topk`` over them is exact, and ties in value are broken
deterministically: **the lower stimulus index (then the lower position, in row-major order) wins**,
whatever the batch order, batch size or device. Values are ranked in float32.
"""

from __future__ import annotations

import dataclasses

from dataclasses import dataclass, field
from typing import Literal, Sequence

import numpy as np
import pandas as pd
import torch

from probe._layouts import Layout, ambiguous_layout_error
from zoo._names import unknown_name_error
from zoo._reducer import Reducer

__all__ = ["TopK", "TopKResult"]

_LOW_MASK = 0xFFFFFFFF
_LAYOUTS = ("auto", "maps", "channels-first", "channels-last", "tokens", "units", "vector")
_POOLS = ("max", "mean")
_RANK_LAYOUT = {2: "vector", 3: "tokens", 4: "channels-first"}  # auto, when probe.record did not say
_RESULT_LAYOUT = {"channels-first": "maps", "channels-last": "maps", "tokens": "tokens", "vector": "units"}
_NOT_GIVEN = object()


def _encode(values: torch.Tensor, ids: torch.Tensor, largest: bool) -> torch.Tensor:
    """Unique int64 ranking keys: larger key = better candidate (see the module docstring)."""
    values = values.float()
    values = (values if largest else -values) + 0.0  # + 0.0 turns -0.0 into +0.0
    bits = values.view(torch.int32)
    ordered = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits).to(torch.int64)
    return (ordered << 32) + (_LOW_MASK - ids)


def _decode(keys: torch.Tensor, largest: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Invert ``_encode``: (float32 values, int64 ids)."""
    ids = _LOW_MASK - (keys & _LOW_MASK)
    ordered = (keys >> 32).to(torch.int32)
    values = torch.where(ordered < 0, ordered ^ 0x7FFFFFFF, ordered).view(torch.float32)
    return (values if largest else -values + 0.0), ids  # + 0.0: no -0.0 for zeros


@dataclass
class TopKResult:
    """What a ``TopK`` reducer kept of one layer.

    Attributes
    ----------
    layer
        The layer's module name.
    layout
        How the entries are indexed: ``"maps"`` (units are channels, positions (y, x) on an H x W
        map, whatever the layer's layout), ``"tokens"`` (positions are tokens) or ``"units"``.
    map_shape
        Spatial shape of one unit's map: (H, W) for maps ((1, L) for 1-d maps), (T,) for tokens,
        () for units.
    n_stimuli
        Number of stimuli seen.
    distinct_stimuli
        True when each stimulus appears at most once per unit (at its best position); False when
        all (stimulus, position) pairs competed.
    pool
        How ``pooled`` summarises a unit's map per stimulus: ``"max"`` or ``"mean"`` over space.
    top_values, top_stimulus, top_position
        Arrays of shape (n_units, k): the k largest values per unit, best first, the stimulus index
        and the flat position (row-major index into ``map_shape``; 0 for units).
    bottom_values, bottom_stimulus, bottom_position
        Arrays of shape (n_units, bottom_k): the smallest values (most suppressive), lowest first.
    pooled
        Array of shape (n_stimuli, n_units) with each stimulus's pooled response, or None.
    source_layout
        The layout of the layer's raw output: ``"channels-first"`` (batch, C, H, W),
        ``"channels-last"`` (batch, H, W, C: positions are still (y, x) on the H x W map),
        ``"tokens"``, ``"tokens+N"`` (N prefix tokens come first among the positions) or
        ``"vector"``; "" when unknown.
    unit_ids
        The layer's index of each row's unit when the result covers some units only (``select``);
        None: row i is unit i.
    """

    layer: str
    layout: str
    map_shape: tuple[int, ...]
    n_stimuli: int
    distinct_stimuli: bool
    pool: str
    top_values: np.ndarray
    top_stimulus: np.ndarray
    top_position: np.ndarray
    bottom_values: np.ndarray
    bottom_stimulus: np.ndarray
    bottom_position: np.ndarray
    pooled: np.ndarray | None = field(default=None, repr=False)
    source_layout: str = ""
    unit_ids: np.ndarray | None = None

    @property
    def n_units(self) -> int:
        """Number of units (channels, token dimensions or neurons)."""
        return int(max(self.top_values.shape[0], self.bottom_values.shape[0]))

    def select(self, units: Sequence[int] | np.ndarray) -> "TopKResult":
        """The result for these units only, in this order (row i is unit ``units[i]``)."""
        units = np.asarray(units, dtype=np.int64)
        picked = {name: getattr(self, name)[units] for name in
                  ("top_values", "top_stimulus", "top_position", "bottom_values", "bottom_stimulus", "bottom_position")}
        pooled = None if self.pooled is None else self.pooled[:, units]
        unit_ids = units if self.unit_ids is None else np.asarray(self.unit_ids)[units]
        return dataclasses.replace(self, **picked, pooled=pooled, unit_ids=unit_ids)

    def coordinates(self, which: Literal["top", "bottom"] = "top") -> tuple[np.ndarray, np.ndarray]:
        """Map coordinates (y, x) of the kept entries, arrays of shape (n_units, k).

        For tokens, y is the token index and x is 0; for units both are 0.
        """
        position = {"top": self.top_position, "bottom": self.bottom_position}[which]
        if self.layout == "maps":
            return np.divmod(position, self.map_shape[-1])
        return position.copy(), np.zeros_like(position)

    def to_frame(self) -> pd.DataFrame:
        """One row per kept entry: layer, unit, kind (top/bottom), rank, stimulus, position, y, x, value."""
        frames = []
        for kind in ("top", "bottom"):
            values = getattr(self, f"{kind}_values")
            if values.size == 0:
                continue
            n_units, k = values.shape
            y, x = self.coordinates(kind)
            frames.append(
                pd.DataFrame(
                    {
                        "layer": self.layer,
                        "unit": np.repeat(self.unit_ids if self.unit_ids is not None else np.arange(n_units), k),
                        "kind": kind,
                        "rank": np.tile(np.arange(k), n_units),
                        "stimulus": getattr(self, f"{kind}_stimulus").ravel(),
                        "position": getattr(self, f"{kind}_position").ravel(),
                        "y": y.ravel(),
                        "x": x.ravel(),
                        "value": values.ravel(),
                    }
                )
            )
        return pd.concat(frames, ignore_index=True)


class _RunningTopK:
    """Device-side running buffer of the best keys (and a payload) per unit."""

    def __init__(self, k: int, largest: bool) -> None:
        self.k, self.largest = k, largest
        self.keys: torch.Tensor | None = None  # (units, <=k) int64, best first
        self.payload: torch.Tensor | None = None  # (units, <=k) int64 (position when ids are stimuli)

    def merge(self, values: torch.Tensor, ids: torch.Tensor, payload: torch.Tensor | None) -> None:
        """values: (units, n) float; ids: (n,) or (units, n) int64; payload: like values or None."""
        keys = _encode(values, ids, self.largest)
        if self.keys is not None:
            keys = torch.cat([self.keys, keys], dim=1)
            if payload is not None:
                payload = torch.cat([self.payload, payload], dim=1)
        self.keys, index = torch.topk(keys, min(self.k, keys.shape[1]), dim=1, largest=True, sorted=True)
        self.payload = None if payload is None else torch.gather(payload, 1, index)

    def merge_maps(self, extreme: torch.Tensor, stimulus_index: torch.Tensor, maps: torch.Tensor) -> None:
        """Merge per-stimulus extremes (batch, units); find the position only for the winners.

        The position of a stimulus's extreme is its first occurrence in row-major order. Finding
        it for the k winners alone (a gather of k maps per unit) is far cheaper than an argmax
        over the whole batch.
        """
        n_kept = 0 if self.keys is None else self.keys.shape[1]
        keys = _encode(extreme.T, stimulus_index, self.largest)
        if self.keys is not None:
            keys = torch.cat([self.keys, keys], dim=1)
        self.keys, index = torch.topk(keys, min(self.k, keys.shape[1]), dim=1, largest=True, sorted=True)
        from_batch = index >= n_kept
        rows = (index - n_kept).clamp_(min=0)  # (units, k) row of the batch, valid where from_batch
        units = torch.arange(maps.shape[1], device=maps.device)[:, None]
        if maps.is_contiguous():  # index_select of whole rows is the fast path
            flat_rows = (rows * maps.shape[1] + units).reshape(-1)
            winners = maps.reshape(-1, maps.shape[2]).index_select(0, flat_rows).view(*rows.shape, -1)
        else:
            winners = maps[rows, units]  # (units, k, positions)
        # argmax/argmin return the first occurrence on ties (documented by torch)
        position = winners.argmax(dim=2) if self.largest else winners.argmin(dim=2)
        if self.payload is not None:
            position = torch.where(from_batch, position, torch.gather(self.payload, 1, index.clamp(max=n_kept - 1)))
        self.payload = position

    def absorb(self, other: "_RunningTopK") -> None:
        """Keep the best of both buffers. Keys are unique (value, id) codes, so the result does not
        depend on which stimuli each buffer saw first: it is the buffer of one stream of them all."""
        if other.keys is None:
            return
        if self.keys is None:
            self.keys, self.payload = other.keys, other.payload
            return
        keys = torch.cat([self.keys, other.keys.to(self.keys.device)], dim=1)
        payload = None if self.payload is None else torch.cat([self.payload, other.payload.to(self.payload.device)], dim=1)
        self.keys, index = torch.topk(keys, min(self.k, keys.shape[1]), dim=1, largest=True, sorted=True)
        self.payload = None if payload is None else torch.gather(payload, 1, index)

    def arrays(self, n_units: int, n_positions: int, distinct: bool) -> tuple[np.ndarray, ...]:
        """(values, stimulus, position) as NumPy arrays of shape (n_units, k)."""
        if self.k == 0 or self.keys is None:
            empty = np.zeros((n_units, 0))
            return empty.astype(np.float32), empty.astype(np.int64), empty.astype(np.int64)
        values, ids = _decode(self.keys, self.largest)
        if distinct:
            stimulus, position = ids, self.payload
        else:
            stimulus, position = torch.div(ids, n_positions, rounding_mode="floor"), ids % n_positions
        return values.cpu().numpy(), stimulus.cpu().numpy(), position.cpu().numpy()


class TopK(Reducer):
    """Running top-k (and bottom-k) per unit, with where it happened.

    For maps of shape (batch, C, H, W) (or (batch, C, L), or channels-last (batch, H, W, C)) the units
    are channels and each entry is a (stimulus, y, x); for ViT tokens (batch, T, D) the units are the
    D dimensions and each entry is a (stimulus, token); for vectors (batch, D) each entry is a
    stimulus. Ties are broken towards the lower stimulus index, then the lower position (see the
    module docstring).

    Parameters
    ----------
    k
        Number of largest entries kept per unit.
    largest
        If False, the ``k`` entries kept are the smallest instead (stored as ``bottom_*``).
    bottom_k
        Number of smallest (most suppressive) entries kept in addition; with ``largest=False``
        the larger of ``k`` and ``bottom_k`` is kept.
    distinct_stimuli
        If True (default), a stimulus enters a unit's list at most once, at its best position
        (the first maximum in row-major order; for bottom entries, its minimum): the classic
        "top-k images" of Zeiler & Fergus. If False, all (stimulus, position) pairs compete, so
        neighbouring positions of one image may fill the list.
    pool
        ``"max"`` or ``"mean"`` over space (positions or tokens): the per-stimulus response kept
        in ``pooled`` for histograms and class selectivity.
    keep_pooled
        Keep the pooled response of every stimulus, an array of shape (n_stimuli, n_units) on the
        device (4 bytes per stimulus and unit). Set False to keep only O(units x k) memory.
    layout
        ``"auto"`` takes the layer's layout from ``probe.record`` (which finds it, or refuses a 4-d
        output whose layout it cannot tell); used on its own, it reads 2-d outputs as units, 3-d as
        tokens (batch, T, D) and 4-d as channels-first maps. Or state it: ``"maps"``/
        ``"channels-first"`` ((batch, C, H, W), Conv1d's (batch, C, L)), ``"channels-last"``
        ((batch, H, W, C): the result equals that of the permuted channels-first map), ``"tokens"``,
        ``"units"``/``"vector"``.

    Examples
    --------
    >>> rec = probe.record(model, data, "conv1", reducers={"topk": lambda: TopK(9)})  # doctest: +SKIP
    >>> rec.extras["topk"]["conv1"].to_frame()  # doctest: +SKIP
    """

    def __init__(
        self,
        k: int = 9,
        largest: bool = True,
        bottom_k: int = 0,
        *,
        distinct_stimuli: bool = True,
        pool: Literal["max", "mean"] = "max",
        keep_pooled: bool = True,
        layout: Literal["auto", "maps", "channels-first", "channels-last", "tokens", "units", "vector"] = "auto",
    ) -> None:
        if int(k) != k or k < 0 or int(bottom_k) != bottom_k or bottom_k < 0:
            raise ValueError(f"k and bottom_k must be non-negative integers, got k={k!r}, bottom_k={bottom_k!r}")
        if pool not in _POOLS:
            raise unknown_name_error("top-k pooling", pool, _POOLS)
        if layout not in _LAYOUTS:
            Layout.parse(layout)  # "tokens+1", aliases; refuses unknown names
        self.top_k = int(k) if largest else 0
        self.bottom_k = int(bottom_k) if largest else max(int(k), int(bottom_k))
        if self.top_k + self.bottom_k == 0:
            raise ValueError("nothing to keep: pass k >= 1 (or bottom_k >= 1)")
        self.distinct_stimuli = distinct_stimuli
        self.pool = pool
        self.keep_pooled = keep_pooled
        self.layout = layout
        self._adopted: object = _NOT_GIVEN
        self._reset()

    def adopt_layout(self, layout: Layout | None) -> None:
        """Called by ``probe.record`` with the layer's layout before the pass (None: it cannot be told).

        Used when ``layout="auto"``.
        """
        self._adopted = layout

    def _reset(self) -> None:
        self._top = _RunningTopK(self.top_k, largest=True)
        self._bottom = _RunningTopK(self.bottom_k, largest=False)
        self._pooled: torch.Tensor | None = None
        self._nan_seen: torch.Tensor | None = None
        self._layout: str | None = None
        self._source: Layout | None = None
        self._map_shape: tuple[int, ...] = ()
        self._n_units = 0
        self._n_seen = 0

    def start(self, layer: str, n_stimuli: int, device: torch.device) -> None:
        super().start(layer, n_stimuli, device)
        if self.distinct_stimuli and max(self.top_k, self.bottom_k) > n_stimuli:
            raise ValueError(
                f"k={max(self.top_k, self.bottom_k)} is larger than the dataset ({n_stimuli} stimuli); "
                f"pass k <= {n_stimuli}"
            )
        self._reset()

    def _source_layout(self, activations: torch.Tensor) -> Layout | None:
        """The layout of the raw output: stated, adopted from ``probe.record``, or by rank."""
        if self.layout != "auto":
            return Layout.parse(self.layout)
        if isinstance(self._adopted, Layout):
            return self._adopted
        if self._adopted is None and activations.ndim >= 4:
            raise ambiguous_layout_error(self.layer, tuple(activations.shape), "TopK input")
        kind = _RANK_LAYOUT.get(activations.ndim)
        return Layout(kind, 0, "rank") if kind else None

    def _as_units_by_positions(self, activations: torch.Tensor) -> torch.Tensor:
        """Reshape a batch to (batch, n_units, n_positions), checking its structure once."""
        if self._layout is None:
            source = self._source_layout(activations)
            layout = _RESULT_LAYOUT[source.kind] if source is not None else None
            expected = {"units": (2,), "tokens": (3,), "maps": (3, 4)}.get(layout, ())
            if activations.ndim not in expected:
                raise ValueError(
                    f"layer {self.layer!r} has output of shape {tuple(activations.shape)}: TopK needs units "
                    "(batch, D), tokens (batch, T, D) or maps (batch, C, H, W) / (batch, H, W, C) / (batch, C, L); "
                    "record a layer with spatial or unit structure, or pass layout= explicitly"
                )
            self._layout, self._source = layout, source
            spatial, channels = source.map_shape(tuple(activations.shape[1:])) if layout == "maps" else ((), 0)
            self._map_shape = {
                "units": (),
                "tokens": (activations.shape[1],),
                "maps": ((1,) + tuple(spatial))[-2:],  # 1-d maps read as one row
            }[layout]
            self._n_units = activations.shape[-1] if layout in ("units", "tokens") else channels
            if self.keep_pooled:
                self._pooled = torch.zeros(self.n_stimuli, self._n_units, dtype=torch.float32, device=activations.device)
            self._nan_seen = torch.zeros((), dtype=torch.bool, device=activations.device)
            n_ids = self.n_stimuli * (1 if self.distinct_stimuli else int(np.prod(self._map_shape or (1,))))
            if n_ids > _LOW_MASK:
                raise ValueError(
                    f"{n_ids} (stimulus, position) candidates exceed 2**32 - 1; pass distinct_stimuli=True"
                )
        if self._layout == "units":
            return activations.unsqueeze(2)
        if self._layout == "tokens":
            return activations.transpose(1, 2)
        return self._source.channels_first(activations).flatten(2)

    def update(self, activations: torch.Tensor, stimulus_index: torch.Tensor) -> None:
        maps = self._as_units_by_positions(activations.detach())  # (B, units, P)
        batch, _, n_positions = maps.shape
        self._n_seen += batch
        stimulus_index = stimulus_index.to(device=maps.device, dtype=torch.int64)

        # amax/amin propagate NaN, so checking the reduced values finds a NaN anywhere in a map
        best = maps.amax(dim=2)
        worst = maps.amin(dim=2) if self.bottom_k else None
        self._nan_seen |= torch.isnan(best).any()
        if self.distinct_stimuli:
            if self.top_k:
                self._top.merge_maps(best, stimulus_index, maps)
            if self.bottom_k:
                self._bottom.merge_maps(worst, stimulus_index, maps)
        else:
            ids = (stimulus_index[:, None] * n_positions + torch.arange(n_positions, device=maps.device)).reshape(-1)
            values = maps.transpose(0, 1).reshape(maps.shape[1], -1)  # (units, B * P), row-major ids
            if self.top_k:
                self._top.merge(values, ids, None)
            if self.bottom_k:
                self._bottom.merge(values, ids, None)
        if self.keep_pooled:
            pooled = best if self.pool == "max" else maps.float().mean(dim=2)
            self._pooled.index_copy_(0, stimulus_index, pooled.float())

    def merge(self, other: "TopK") -> None:
        """Fold in another rank's top-k of the same layer: the same entries, in the same order and with the
        same ties, as one reducer fed every stimulus; pooled responses are added (each rank fills its rows)."""
        if other._layout is None:
            return
        if self._layout is None:
            self._layout, self._source, self._map_shape, self._n_units = other._layout, other._source, other._map_shape, other._n_units
            self._pooled = None if other._pooled is None else torch.zeros_like(other._pooled)
            self._nan_seen = torch.zeros((), dtype=torch.bool, device=other._nan_seen.device)
        self._top.absorb(other._top)
        self._bottom.absorb(other._bottom)
        self._n_seen += other._n_seen
        self._nan_seen = self._nan_seen | other._nan_seen.to(self._nan_seen.device)
        if self._pooled is not None:
            self._pooled += other._pooled.to(self._pooled.device)

    def result(self) -> TopKResult:
        if self._layout is None:
            raise ValueError(f"TopK on layer {self.layer!r} received no batch; the dataset is empty")
        if bool(self._nan_seen):
            raise ValueError(f"layer {self.layer!r} produced NaN activations; check the model and its input")
        n_candidates = self._n_seen * (1 if self.distinct_stimuli else int(np.prod(self._map_shape or (1,))))
        if max(self.top_k, self.bottom_k) > n_candidates:
            raise ValueError(
                f"k={max(self.top_k, self.bottom_k)} is larger than the {n_candidates} candidates seen on "
                f"layer {self.layer!r}; pass a smaller k"
            )
        n_positions = int(np.prod(self._map_shape or (1,)))
        top = self._top.arrays(self._n_units, n_positions, self.distinct_stimuli)
        bottom = self._bottom.arrays(self._n_units, n_positions, self.distinct_stimuli)
        return TopKResult(
            layer=self.layer,
            layout=self._layout,
            map_shape=self._map_shape,
            n_stimuli=self._n_seen,
            distinct_stimuli=self.distinct_stimuli,
            pool=self.pool,
            top_values=top[0],
            top_stimulus=top[1],
            top_position=top[2],
            bottom_values=bottom[0],
            bottom_stimulus=bottom[1],
            bottom_position=bottom[2],
            pooled=None if self._pooled is None else self._pooled.cpu().numpy(),
            source_layout=self._source.name if self._source is not None else "",
        )
