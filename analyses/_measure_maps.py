"""Every layer against every layer, for every measure, and where the measures disagree.

``measure_matrices`` prepares each layer once per measure (its centring, decomposition, Gram matrix or
neighbour sets; see ``analyses._measures``) and then fills the layer x layer map from the cheap pair
step, within and across models. Representations are given as for ``cka_matrix``: a dict
``{name: array}``, a ``Recording``, or ``{model: Recording or dict}``.

``measure_disagreement`` reads the maps side by side: how well the measures' maps rank the pairs of
layers alike (Spearman over the off-diagonal entries, distances negated so that larger always means
more alike), and which conclusions "layer A of model 1 is most like layer B of model 2" change with
the measure.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import scipy.stats
import torch
from tqdm.auto import tqdm

from analyses._cka import flatten_units
from analyses._measures import Measure, measure_options
from analyses._similarity_maps import Entry, SimilarityMatrix, collect_entries

__all__ = ["MeasureDisagreement", "MeasureMaps", "measure_disagreement", "measure_matrices"]


@dataclass
class MeasureMaps:
    """Layer x layer maps of several measures over the same entries.

    Attributes
    ----------
    maps
        Measure name -> ``SimilarityMatrix`` (its ``details`` hold ``kind``, ``low``, ``high``, ``symmetric``
        and ``seconds``, the time to prepare the layers and fill the map).
    skipped
        Measure name -> why it could not be computed on these representations (for example CCA with
        fewer stimuli than units); such a measure has no map rather than a map of NaN.
    measures
        Measure name -> its ``Measure`` (convention and label).
    dropped
        Entry name -> why it is left out of every map (``on_undefined="drop"``: a measure could not be
        computed on it, for example RSA on a layer whose stimulus patterns are constant).
    """

    maps: dict[str, SimilarityMatrix]
    skipped: dict[str, str]
    measures: dict[str, Measure]
    dropped: dict[str, str] = field(default_factory=dict)

    def __getitem__(self, measure: str) -> SimilarityMatrix:
        if measure not in self.maps:
            reason = self.skipped.get(measure)
            raise KeyError(f"no map for {measure!r}" + (f": {reason}" if reason else f"; maps: {', '.join(self.maps)}"))
        return self.maps[measure]

    def __iter__(self):
        return iter(self.maps)

    def __len__(self) -> int:
        return len(self.maps)

    @property
    def names(self) -> list[str]:
        """The entries' names, shared by every map."""
        return next(iter(self.maps.values())).names if self.maps else []

    def to_frame(self) -> pd.DataFrame:
        """One row per measure and ordered pair of entries (``SimilarityMatrix.to_frame`` columns, with
        ``measure`` the measure's name, ``label`` and ``kind``)."""
        frames = [
            matrix.to_frame().assign(measure=name, label=self.measures[name].label, kind=self.measures[name].kind)
            for name, matrix in self.maps.items()
        ]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def timings(self) -> pd.DataFrame:
        """Seconds each measure took (preparing every layer and filling its map)."""
        return pd.DataFrame(
            [{"measure": name, "seconds": m.details["seconds"]} for name, m in self.maps.items()],
            columns=["measure", "seconds"],
        )


def _tensors(entries: list[Entry], device: str | torch.device | None) -> list[torch.Tensor]:
    tensors = [flatten_units(entry.data, entry.name) for entry in entries]
    if device is not None:
        from zoo import resolve_device

        tensors = [t.to(resolve_device(device)) for t in tensors]
    counts = {t.shape[0] for t in tensors}
    if len(counts) != 1:
        detail = ", ".join(f"{e.name}: {t.shape[0]}" for e, t in zip(entries, tensors))
        raise ValueError(f"the representations cover different numbers of stimuli ({detail}); pass the same stimuli "
                         "in the same order")
    return tensors


def check_on_undefined(on_undefined: str, allowed: Sequence[str] = ("skip", "raise", "drop")) -> None:
    if on_undefined not in allowed:
        raise ValueError(f"on_undefined must be {', '.join(map(repr, allowed))}, got {on_undefined!r}")


def skip_or_raise(measure: Measure, error: ValueError, on_undefined: str, skipped: dict[str, str]) -> None:
    """A measure undefined on the data: re-raise (``on_undefined="raise"``), or note why it is skipped and warn."""
    if on_undefined == "raise":
        raise error
    skipped[measure.name] = str(error)
    warnings.warn(f"measure {measure.name!r} skipped: {error}", stacklevel=3)


def prepare_layers(measure: Measure, tensors: Sequence[torch.Tensor], names: Sequence[str]) -> list[Any]:
    """Each layer's summary for one measure; a layer that cannot be prepared raises naming it."""
    summaries = []
    for tensor, name in zip(tensors, names):
        try:
            summaries.append(measure.prepare(tensor))
        except ValueError as error:
            raise ValueError(f"{measure.name} on {name!r}: {error}") from None
    return summaries


def fill_block(measure: Measure, rows: Sequence[Any], cols: Sequence[Any], same: bool = False,
               row_names: Sequence[str] = (), col_names: Sequence[str] = ()) -> np.ndarray:
    """The measure between every prepared row and every prepared column (``same``: rows and cols are one
    list, so a symmetric measure fills half and mirrors it)."""
    values = np.empty((len(rows), len(cols)))
    for i, a in enumerate(rows):
        for j, b in enumerate(cols):
            if same and measure.symmetric and j < i:
                values[i, j] = values[j, i]
                continue
            try:
                values[i, j] = measure.compare(a, b)
            except ValueError as error:
                pair = f"{row_names[i]!r} vs {col_names[j]!r}: " if row_names else ""
                raise ValueError(f"{measure.name} {pair}{error}") from None
    if not np.isfinite(values).all():
        raise ValueError(f"{measure.name} gave a non-finite value; please report this with the data's shapes")
    return values


def measure_matrices(
    representations: Any,
    measures: Sequence[str] | str | None = None,
    *,
    device: str | torch.device | None = None,
    on_undefined: str = "skip",
    progress: bool = True,
) -> MeasureMaps:
    """Every layer against every layer (of one or several models) for each measure.

    Parameters
    ----------
    representations
        A dict ``{name: array (n_stimuli, n_units)}``, a ``Recording``, or ``{model: Recording or dict}``
        (entries named "model/layer"); the same stimuli throughout.
    measures
        Names from ``analyses.list_measures()``; None: every one.
    device
        Where to compute; None keeps each array's device (NumPy: CPU).
    on_undefined
        ``"skip"``: a measure that is undefined on some layer or pair (CCA with too few stimuli, a constant
        RDM) gets no map, its reason goes to ``skipped`` and a warning says so; ``"raise"``: the error
        is raised; ``"drop"``: a layer that some measure cannot be computed on is left out of every map
        (``dropped`` says why), so that all maps cover the same layers; a measure undefined on a pair of
        the remaining layers is still skipped. ``"drop"`` keeps every measure's summaries in memory at
        once, the others one measure's.
    progress
        Show a progress bar over measures.

    Returns
    -------
    MeasureMaps
        Row i, column j of each map is the measure between entry i (as X) and entry j (as Y).
    """
    check_on_undefined(on_undefined)
    chosen = measure_options(measures)
    entries = collect_entries(representations)
    tensors = _tensors(entries, device)
    names = [e.name for e in entries]
    dropped = {}
    shared = _SharedSummaries(chosen)
    if on_undefined == "drop":
        dropped = shared.prepare_all(tensors, names)
        keep = [i for i, name in enumerate(names) if name not in dropped]
        if len(keep) < 1:
            raise ValueError("no layer is left: every one is undefined for some measure: "
                             + "; ".join(f"{k}: {v}" for k, v in dropped.items()))
        entries, tensors, names = [entries[i] for i in keep], [tensors[i] for i in keep], [names[i] for i in keep]
        shared.keep_layers(keep)
    maps, skipped = {}, {}
    for measure in tqdm(chosen, desc="similarity measures", disable=not progress, leave=False):
        started = time.perf_counter()
        try:
            summaries = shared.get(measure, tensors, names)
            values = fill_block(measure, summaries, summaries, same=True, row_names=names, col_names=names)
        except ValueError as error:
            skip_or_raise(measure, error, on_undefined, skipped)
            continue
        maps[measure.name] = SimilarityMatrix(
            values, names, [e.model for e in entries], [e.layer for e in entries], measure.label, tensors[0].shape[0],
            {"kind": measure.kind, "low": measure.low, "high": measure.high, "symmetric": measure.symmetric,
             "seconds": time.perf_counter() - started, "name": measure.name},
        )
    return MeasureMaps(maps, skipped, {m.name: m for m in chosen}, dropped)


class _SharedSummaries:
    """Each layer's summaries, prepared once per ``prepare`` (CCA and PWCCA share one, as do mutual kNN and
    CKNNA) and kept until the last measure that uses them has read them."""

    def __init__(self, measures: list[Measure]) -> None:
        self._measures = measures
        self._uses: dict[Any, int] = {}
        for measure in measures:
            self._uses[measure.prepare] = self._uses.get(measure.prepare, 0) + 1
        self._kept: dict[Any, list[Any]] = {}

    def get(self, measure: Measure, tensors: list[torch.Tensor], names: list[str]) -> list[Any]:
        key = measure.prepare
        summaries = self._kept.get(key)
        if summaries is None:
            summaries = prepare_layers(measure, tensors, names)
        self._uses[key] -= 1
        if self._uses[key] > 0:
            self._kept[key] = summaries
        else:
            self._kept.pop(key, None)
        return summaries

    def prepare_all(self, tensors: list[torch.Tensor], names: list[str]) -> dict[str, str]:
        """Prepare every layer for every measure now (all kept), and return the layers some measure cannot
        prepare, with why."""
        dropped = {}
        for measure in self._measures:
            if measure.prepare in self._kept:
                continue
            summaries = []
            for tensor, name in zip(tensors, names):
                try:
                    summaries.append(measure.prepare(tensor))
                except ValueError as error:
                    dropped.setdefault(name, f"{measure.name}: {error}")
                    summaries.append(None)
            self._kept[measure.prepare] = summaries
        return dropped

    def keep_layers(self, keep: list[int]) -> None:
        """Forget the summaries of every layer but those at ``keep``."""
        self._kept = {key: [summaries[i] for i in keep] for key, summaries in self._kept.items()}


@dataclass
class MeasureDisagreement:
    """How the measures' maps agree, and the conclusions that change with the measure.

    Attributes
    ----------
    agreement
        Square DataFrame (measures x measures): Spearman correlation between two measures' maps over the
        off-diagonal entries, each oriented so that larger means more alike.
    conclusions
        One row per (model, layer, other model): ``model``, ``layer``, ``other``, one column per measure
        with the other model's layer that measure finds most alike, ``choices`` (how many different
        layers the measures pick), ``majority`` (the layer most measures pick; the first in sort order on a
        tie), ``agreement`` (the share of measures that pick it) and ``changes`` (True when the measures do
        not all agree). Within a single model, ``other`` is the same model and each
        layer's best match among the other layers is read.
    measures
        The measures compared, in column order.
    """

    agreement: pd.DataFrame
    conclusions: pd.DataFrame
    measures: list[str]
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def flagged(self) -> pd.DataFrame:
        """The conclusions that change with the measure, the most contested (lowest agreement) first."""
        flagged = self.conclusions[self.conclusions["changes"]]
        return flagged.sort_values("agreement", kind="stable")

    def to_frame(self) -> pd.DataFrame:
        """The agreement matrix as tidy rows: ``measure_a``, ``measure_b``, ``spearman``."""
        frame = self.agreement.stack().reset_index()
        frame.columns = ["measure_a", "measure_b", "spearman"]
        return frame


def _best_matches(maps: MeasureMaps, name: str) -> pd.DataFrame:
    matrix = maps.maps[name]
    closeness = maps.measures[name].closeness(matrix.values)
    models, layers = np.asarray(matrix.models, dtype=object), np.asarray(matrix.layers, dtype=object)
    model_names = list(dict.fromkeys(matrix.models))
    rows = []
    for model in model_names:
        mine = np.flatnonzero(models == model)
        others = [m for m in model_names if m != model] or [model]
        for other in others:
            theirs = np.flatnonzero(models == other)
            for i in mine:
                candidates = theirs[theirs != i]
                if len(candidates) == 0:
                    continue
                best = candidates[int(np.argmax(closeness[i, candidates]))]
                rows.append({"model": model, "layer": layers[i], "other": other, name: layers[best]})
    return pd.DataFrame(rows)


def measure_disagreement(maps: MeasureMaps) -> MeasureDisagreement:
    """Rank-correlate the measures' maps with each other and flag the conclusions that change with the measure.

    Parameters
    ----------
    maps
        ``measure_matrices``' result with at least two maps and two entries.

    Returns
    -------
    MeasureDisagreement
    """
    names = list(maps.maps)
    if len(names) < 2:
        raise ValueError(f"comparing measures needs at least two maps; got {names or 'none'}"
                         + (f" (skipped: {', '.join(maps.skipped)})" if maps.skipped else ""))
    k = len(maps.names)
    if k < 3:
        raise ValueError(f"comparing measures needs at least three entries in the maps; got {k}")
    off_diagonal = ~np.eye(k, dtype=bool)
    vectors = np.stack([maps.measures[n].closeness(maps.maps[n].values)[off_diagonal] for n in names])
    for name, vector in zip(names, vectors):
        if np.ptp(vector) == 0:
            raise ValueError(f"the map of {name!r} is constant off its diagonal, so its rank correlation with other "
                             "measures is undefined")
    agreement = np.eye(len(names))
    for a in range(len(names)):
        for b in range(a + 1, len(names)):
            agreement[a, b] = agreement[b, a] = scipy.stats.spearmanr(vectors[a], vectors[b]).statistic
    conclusions = None
    for name in names:
        best = _best_matches(maps, name)
        conclusions = best if conclusions is None else conclusions.merge(best, on=["model", "layer", "other"])
    picks = conclusions[names].astype(str)
    conclusions["choices"] = picks.nunique(axis=1)
    conclusions["majority"] = picks.mode(axis=1)[0]
    conclusions["agreement"] = picks.eq(conclusions["majority"], axis=0).mean(axis=1)
    conclusions["changes"] = conclusions["choices"] > 1
    return MeasureDisagreement(
        pd.DataFrame(agreement, index=names, columns=names), conclusions, names,
        {n: maps.measures[n].label for n in names},
    )
