"""Several seeds of one architecture: the layer identification check and the seed-to-seed ceiling.

Networks that differ only in their random seed set the standard for any similarity measure:

- **Layer identification** (Kornblith et al. 2019, Table 2): for every ordered pair of different seeds
  (A, B) and every layer of A, is the layer of B that the measure finds most alike the same layer?
  A measure that cannot pick out the corresponding layer among seeds of one network says little when
  it compares different networks. A layer counts as identified only when the same layer is strictly
  closer than every other layer of B (a tie is a miss). Kornblith et al. report 99.3 % (linear CKA),
  99.1 % (RBF CKA) and 15.1 % (SVCCA) for ten 10-layer CNNs on CIFAR-10.
- **The seed-to-seed ceiling**: the measure between the same layer of different seeds, over all pairs
  of seeds (mean, sd, min, max). It says how alike "the same layer" can be, the band against which a
  cross-model score is read.

Each seed's layers are prepared once per measure (``analyses._measures``), so memory holds one summary
per layer and seed for the measure being computed (for linear CKA on layers wider than the stimulus
count: one (n_stimuli, n_stimuli) Gram matrix each).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from analyses._measure_maps import (
    MeasureMaps,
    _tensors,
    check_on_undefined,
    fill_block,
    prepare_layers,
    skip_or_raise,
)
from analyses._measures import Measure, get_measure, measure_options
from analyses._similarity_maps import Entry, collect_entries

__all__ = ["LayerIdentification", "SeedCeiling", "layer_identification", "seed_ceiling"]


@dataclass
class SeedCeiling:
    """How alike the same layer is across seeds, per measure and layer.

    Attributes
    ----------
    frame
        One row per (measure, layer): ``measure``, ``kind``, ``layer``, ``mean``, ``sd``, ``min``, ``max``,
        ``n_pairs`` (ordered pairs of seeds for asymmetric measures, unordered otherwise).
    """

    frame: pd.DataFrame

    def to_frame(self) -> pd.DataFrame:
        return self.frame.copy()

    def band(self, layer: str, measure: str) -> tuple[float, float, float]:
        """(min, mean, max) of the same-layer values of ``layer`` across seeds for ``measure``."""
        rows = self.frame[(self.frame["layer"] == layer) & (self.frame["measure"] == measure)]
        if rows.empty:
            raise KeyError(f"no ceiling for layer {layer!r} and measure {measure!r}; layers: "
                           f"{', '.join(dict.fromkeys(self.frame['layer']))}")
        row = rows.iloc[0]
        return float(row["min"]), float(row["mean"]), float(row["max"])


@dataclass
class LayerIdentification:
    """The layer identification check over several seeds, for each measure.

    Attributes
    ----------
    accuracy
        One row per measure, best first: ``measure``, ``label``, ``kind``, ``accuracy`` (share of the
        (ordered seed pair, layer) cases whose best match is the same layer), ``correct``, ``total``.
    per_layer
        One row per (measure, layer): ``accuracy`` over the ordered seed pairs.
    confusions
        One row per (measure, layer, picked) miss: ``count``.
    ceiling
        The seed-to-seed ceiling of every measure (``SeedCeiling``).
    skipped
        Measure -> why it is undefined on these recordings.
    seeds, layers
        The seeds' names and the layers compared, in order.
    seconds
        Measure -> time to prepare every layer of every seed and fill the cross-seed blocks.
    values
        Measure -> {(seed a, seed b): the measure between every layer of a (rows) and every layer of b
        (columns)}, for every ordered pair of seeds.
    measures
        Measure name -> the ``Measure`` it was scored with.
    """

    accuracy: pd.DataFrame
    per_layer: pd.DataFrame
    confusions: pd.DataFrame
    ceiling: SeedCeiling
    skipped: dict[str, str]
    seeds: list[str]
    layers: list[str]
    seconds: dict[str, float] = field(default_factory=dict)
    values: dict[str, dict[tuple[str, str], np.ndarray]] = field(default_factory=dict, repr=False)
    measures: dict[str, Measure] = field(default_factory=dict, repr=False)

    def to_frame(self) -> pd.DataFrame:
        """The accuracy table (one row per measure, best first)."""
        return self.accuracy.copy()

    @property
    def asymmetric(self) -> list[str]:
        """The measures scored whose value depends on which seed is the row (``symmetrized`` sums both ways)."""
        return [name for name, measure in self.measures.items() if not measure.symmetric]

    def symmetrized(self) -> LayerIdentification:
        """The check with every asymmetric measure scored on S + S^T, as Kornblith et al. 2019 score PWCCA and
        linear regression in their Table 2.

        Layer i of seed a and layer j of seed b are then compared by s(a_i, b_j) + s(b_j, a_i), so that the
        answer no longer depends on which seed is the row. Symmetric measures are kept as they are; the others
        keep their names, gain " (S + S^T)" in their labels, and their ranges and ceilings double.

        Returns
        -------
        LayerIdentification
            Re-scored from ``values``; nothing is computed again.
        """
        measures, values = {}, {}
        for name, measure in self.measures.items():
            if measure.symmetric:
                measures[name], values[name] = measure, self.values[name]
                continue
            measures[name] = replace(measure, label=f"{measure.label} (S + S^T)", low=2 * measure.low,
                                     high=2 * measure.high, symmetric=True)
            values[name] = {(a, b): block + self.values[name][b, a].T for (a, b), block in self.values[name].items()}
        return _identification(measures, values, self.seeds, self.layers, dict(self.skipped), dict(self.seconds))


def _seed_layers(seeds: Mapping[str, Any]) -> tuple[list[str], list[str], dict[str, list[Entry]]]:
    if not isinstance(seeds, Mapping) or len(seeds) < 2:
        raise ValueError("layer identification needs a dict {seed name: Recording or {layer: array}} with at least "
                         "two seeds of the same architecture")
    by_seed = {str(name): collect_entries(source) for name, source in seeds.items()}
    names = list(by_seed)
    layers = [e.layer for e in by_seed[names[0]]]
    for name in names[1:]:
        theirs = [e.layer for e in by_seed[name]]
        if theirs != layers:
            raise ValueError(f"seed {name!r} has layers {theirs}, seed {names[0]!r} has {layers}; record the same "
                             "layers of every seed, in the same order")
    if len(layers) < 2:
        raise ValueError(f"layer identification needs at least two layers per seed; got {layers}")
    return names, layers, by_seed


def _prepare_seed(measure: Measure, entries: list[Entry], seed: str, device: Any) -> list[Any]:
    """One seed's layers prepared for a measure, each converted to float64 only while it is prepared (so memory
    holds the summaries, not float64 copies of every recording)."""
    return [prepare_layers(measure, _tensors([entry], device), [f"{seed}/{entry.layer}"])[0] for entry in entries]


def _blocks(measure: Measure, prepared: dict[str, list[Any]], layers: list[str]) -> dict[tuple[str, str], np.ndarray]:
    """The measure between every layer of seed a (rows) and every layer of seed b, for each ordered pair."""
    blocks: dict[tuple[str, str], np.ndarray] = {}
    for a, b in itertools.permutations(prepared, 2):
        if measure.symmetric and (b, a) in blocks:
            blocks[a, b] = blocks[b, a].T
            continue
        names_a, names_b = [f"{a}/{layer}" for layer in layers], [f"{b}/{layer}" for layer in layers]
        blocks[a, b] = fill_block(measure, prepared[a], prepared[b], row_names=names_a, col_names=names_b)
    return blocks


def _scores(measure: Measure, blocks: dict[tuple[str, str], np.ndarray], layers: list[str]):
    k = len(layers)
    hits = np.zeros(k)
    confusions: dict[tuple[str, str], int] = {}
    same: list[list[float]] = [[] for _ in range(k)]
    for (a, b), block in blocks.items():
        closeness = measure.closeness(block)
        for i in range(k):
            others = np.delete(closeness[i], i)
            if closeness[i, i] > others.max():
                hits[i] += 1
                continue
            picked = layers[int(np.argmax(closeness[i]))] if others.max() > closeness[i, i] else "(tie)"
            confusions[layers[i], picked] = confusions.get((layers[i], picked), 0) + 1
        if measure.symmetric and a > b:
            continue  # the unordered pair's same-layer values are already in
        for i in range(k):
            same[i].append(float(block[i, i]))
    return hits, confusions, same


def layer_identification(
    seeds: Mapping[str, Any],
    measures: Sequence[str] | str | None = None,
    *,
    device: str | torch.device | None = None,
    on_undefined: str = "skip",
    progress: bool = True,
) -> LayerIdentification:
    """For N seeds of one architecture: per measure, the share of layers whose best match in another seed
    is the same layer, and the seed-to-seed ceiling of every layer.

    Parameters
    ----------
    seeds
        ``{seed name: Recording or {layer: array (n_stimuli, n_units)}}``: at least two seeds, the same
        layers in the same order, recorded on the same stimuli.
    measures
        Names from ``analyses.list_measures()``; None: every one.
    device
        Where to compute; None keeps the arrays' device.
    on_undefined
        ``"skip"`` (a measure undefined on some layer goes to ``skipped`` with its reason, with a warning)
        or ``"raise"``.
    progress
        Show a progress bar over measures.

    Returns
    -------
    LayerIdentification
    """
    check_on_undefined(on_undefined, ("skip", "raise"))
    seed_names, layers, by_seed = _seed_layers(seeds)
    counts = {name: len(entries[0].data) for name, entries in by_seed.items()}
    if len(set(counts.values())) != 1:
        raise ValueError(f"the seeds were recorded on different numbers of stimuli {counts}; use the same stimuli")
    chosen, blocks, skipped, seconds = measure_options(measures), {}, {}, {}
    for measure in tqdm(chosen, desc="layer identification", disable=not progress, leave=False):
        started = time.perf_counter()
        try:
            prepared = {name: _prepare_seed(measure, by_seed[name], name, device) for name in seed_names}
            blocks[measure.name] = _blocks(measure, prepared, layers)
        except ValueError as error:
            skip_or_raise(measure, error, on_undefined, skipped)
            continue
        del prepared
        seconds[measure.name] = time.perf_counter() - started
    return _identification({m.name: m for m in chosen if m.name in blocks}, blocks, seed_names, layers, skipped,
                           seconds)


def layer_identification_from_maps(maps: MeasureMaps, seeds: Sequence[str], layers: Sequence[str]
                                   ) -> LayerIdentification:
    """``layer_identification`` read off maps that already hold the seeds' layers (``measure_matrices`` over
    several models, among them the seeds): the same numbers, without preparing any layer again.

    Parameters
    ----------
    maps
        All-pairs maps whose entries include ``"seed/layer"`` for every seed and layer.
    seeds
        The models that are seeds of one architecture (at least two).
    layers
        The layers compared, present in every seed.

    Returns
    -------
    LayerIdentification
        Its ``seconds`` are those of the maps it was read from.
    """
    seeds, layers = list(seeds), list(layers)
    if len(seeds) < 2 or len(layers) < 2:
        raise ValueError(f"layer identification needs at least two seeds and two layers; got seeds {seeds}, "
                         f"layers {layers}")
    position = {name: i for i, name in enumerate(maps.names)}
    missing = [f"{s}/{layer}" for s in seeds for layer in layers if f"{s}/{layer}" not in position]
    if missing:
        raise ValueError(f"the maps have no entries {missing}; build them over the seeds' layers")
    rows = {s: [position[f"{s}/{layer}"] for layer in layers] for s in seeds}
    blocks = {name: {(a, b): matrix.values[np.ix_(rows[a], rows[b])] for a, b in itertools.permutations(seeds, 2)}
              for name, matrix in maps.maps.items()}
    seconds = {name: matrix.details["seconds"] for name, matrix in maps.maps.items()}
    return _identification({name: maps.measures[name] for name in blocks}, blocks, seeds, layers, dict(maps.skipped),
                           seconds)


def _identification(measures: dict[str, Measure], blocks: dict[str, dict[tuple[str, str], np.ndarray]],
                    seed_names: list[str], layers: list[str], skipped: dict[str, str], seconds: dict[str, float]
                    ) -> LayerIdentification:
    """Score the cross-seed blocks of every measure: accuracy, per layer, confusions and the ceiling."""
    rows, layer_rows, confusion_rows, ceiling_rows = [], [], [], []
    n_cases = len(seed_names) * (len(seed_names) - 1)
    for name, measure in measures.items():
        hits, confusions, same = _scores(measure, blocks[name], layers)
        rows.append({"measure": name, "label": measure.label, "kind": measure.kind,
                     "accuracy": hits.sum() / (n_cases * len(layers)), "correct": int(hits.sum()),
                     "total": n_cases * len(layers)})
        layer_rows += [{"measure": name, "layer": layer, "accuracy": hits[i] / n_cases}
                       for i, layer in enumerate(layers)]
        confusion_rows += [{"measure": name, "layer": layer, "picked": picked, "count": count}
                           for (layer, picked), count in confusions.items()]
        ceiling_rows += [{"measure": name, "kind": measure.kind, "layer": layer, "mean": np.mean(values),
                          "sd": np.std(values, ddof=1) if len(values) > 1 else 0.0, "min": np.min(values),
                          "max": np.max(values), "n_pairs": len(values)}
                         for layer, values in zip(layers, same)]
    accuracy = pd.DataFrame(rows, columns=["measure", "label", "kind", "accuracy", "correct", "total"])
    accuracy = accuracy.sort_values("accuracy", ascending=False, kind="stable").reset_index(drop=True)
    return LayerIdentification(
        accuracy,
        pd.DataFrame(layer_rows, columns=["measure", "layer", "accuracy"]),
        pd.DataFrame(confusion_rows, columns=["measure", "layer", "picked", "count"]),
        SeedCeiling(pd.DataFrame(ceiling_rows, columns=["measure", "kind", "layer", "mean", "sd", "min", "max",
                                                        "n_pairs"])),
        skipped, list(seed_names), list(layers), seconds, blocks, measures,
    )


def seed_ceiling(seeds: Mapping[str, Any], measure: str = "linear-cka", *, device: str | torch.device | None = None,
                 progress: bool = True) -> SeedCeiling:
    """The seed-to-seed ceiling of one measure: per layer, how alike the same layer is across seeds.

    Parameters
    ----------
    seeds
        As for ``layer_identification``.
    measure
        A name from ``analyses.list_measures()``; an undefined measure raises ``ValueError``.
    device, progress
        As for ``layer_identification``.
    """
    spec = get_measure(measure)
    return layer_identification(seeds, [spec.name], device=device, on_undefined="raise", progress=progress).ceiling
