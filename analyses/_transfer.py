"""Transfer: linear probes per layer and per model, and label-efficiency curves.

Inputs are features on a train and a test split. Each split is a *feature source*: an array of
shape (n_stimuli, n_units) (labels passed separately), a ``(recording, layer)`` pair, or a
recording with a single layer (anything with ``rec[layer]`` and ``rec.labels``, such as
``probe.Recording``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from analyses._linear_probe import ProbeResult, knn_accuracy, linear_probe
from zoo._names import unknown_name_error

__all__ = ["probe_layers", "LayerTransfer", "label_efficiency", "LabelEfficiency", "resolve_features", "sample_per_class"]


def _is_recording(source: Any) -> bool:
    return hasattr(source, "labels") and hasattr(source, "layers") and hasattr(source, "__getitem__")


def resolve_features(source: Any, labels: Any = None, layer: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Turn a feature source into (features, labels).

    Parameters
    ----------
    source
        Array of shape (n_stimuli, n_units); a ``(recording, layer)`` pair; or a recording
        (``rec[layer]``, ``rec.labels``, ``rec.layers``).
    labels
        Labels of shape (n_stimuli,); required for arrays, overrides a recording's labels.
    layer
        Layer to read from a recording (optional when the recording holds one layer).

    Returns
    -------
    tuple
        Features of shape (n_stimuli, n_units) and labels of shape (n_stimuli,).
    """
    if isinstance(source, tuple) and len(source) == 2 and _is_recording(source[0]):
        source, layer = source
    if _is_recording(source):
        layers = list(source.layers)
        if layer is None:
            if len(layers) != 1:
                raise ValueError(f"the recording holds layers {layers}; pass (recording, layer) to choose one")
            layer = layers[0]
        if layer not in layers:
            raise unknown_name_error("recorded layer", layer, layers, listing="`recording.layers`")
        features = np.asarray(source[layer])
        labels = np.asarray(source.labels) if labels is None else np.asarray(labels)
    else:
        features = source.detach().cpu().numpy() if hasattr(source, "detach") else np.asarray(source)
        if labels is None:
            raise ValueError("labels are required when features are given as an array; pass y_train / y_test")
        labels = np.asarray(labels)
    features = features.reshape(len(features), -1)
    if len(labels) != len(features):
        raise ValueError(f"{len(features)} stimuli but {len(labels)} labels; give one label per stimulus")
    if np.any(labels < 0):
        raise ValueError("some labels are -1 (unlabelled stimuli); a probe needs labelled train and test splits")
    return features, labels


@dataclass
class LayerTransfer:
    """Probe (and kNN) accuracy per layer, for one or several models.

    Attributes
    ----------
    results
        One ``ProbeResult`` per (model, layer), in the order the layers were given.
    knn
        kNN accuracy per (model, layer) (NaN-free; absent when ``knn_k`` was None).
    """

    results: list[ProbeResult]
    knn: dict[tuple[str, str], float]

    def to_frame(self) -> pd.DataFrame:
        """One row per (model, layer): model, layer, depth (0-based position), accuracy, knn_accuracy, C..."""
        rows = []
        depth: dict[str, int] = {}
        for result in self.results:
            row = result.to_frame().iloc[0].to_dict()
            row["depth"] = depth.get(result.model, 0)
            depth[result.model] = row["depth"] + 1
            key = (result.model, result.layer)
            row["knn_accuracy"] = self.knn.get(key, np.nan) if self.knn else np.nan
            rows.append(row)
        columns = ["model", "layer", "depth", "accuracy", "knn_accuracy", "C", "C_selection", "n_train", "n_test",
                   "n_units", "n_classes", "n_iter", "seconds"]
        return pd.DataFrame(rows)[columns]

    def pivot(self, value: str = "accuracy") -> pd.DataFrame:
        """Table depth x model of ``value`` (rows: layer position, since models name layers differently)."""
        return self.to_frame().pivot(index="depth", columns="model", values=value)


def probe_layers(
    models: Mapping[str, tuple[Any, Any]],
    layers: Mapping[str, Sequence[str]] | Sequence[str] | None = None,
    *,
    y_train: Any = None,
    y_test: Any = None,
    C: float | None = None,
    knn_k: int | None = 5,
    progress: bool = True,
    **probe_options: Any,
) -> LayerTransfer:
    """Linear-probe accuracy of every layer of every model.

    Parameters
    ----------
    models
        Model name -> (train source, test source), where a source is a recording (or a dict
        layer -> array of shape (n_stimuli, n_units)).
    layers
        Layers to probe: one list for every model, or a dict model -> list. Default: every layer
        of the train source, in its order.
    y_train, y_test
        Labels, required when the sources are dicts of arrays; otherwise the recordings' labels.
    C
        Fixed inverse penalty, or None to cross-validate it per layer.
    knn_k
        Neighbours of the kNN read-out (cosine); None to skip it.
    progress
        Show a progress bar over the (model, layer) pairs.
    **probe_options
        Passed to ``linear_probe`` (``standardize``, ``Cs``, ``cv``, ``device``...).

    Returns
    -------
    LayerTransfer
    """
    jobs = []
    for model, (train, test) in models.items():
        if isinstance(layers, Mapping):
            if model not in layers:
                raise KeyError(f"layers has no entry for model {model!r}; it has {sorted(layers)}")
            names = list(layers[model])
        elif layers is not None:
            names = list(layers)
        else:
            names = list(train.layers) if _is_recording(train) else list(train)
        jobs += [(model, layer, train, test) for layer in names]
    results, knn = [], {}
    for model, layer, train, test in tqdm(jobs, desc="probing layers", disable=not progress, leave=False):
        if _is_recording(train):
            X_train, labels_train = resolve_features(train, y_train, layer)
            X_test, labels_test = resolve_features(test, y_test, layer)
        else:
            X_train, labels_train = resolve_features(train[layer], y_train)
            X_test, labels_test = resolve_features(test[layer], y_test)
        results.append(linear_probe(X_train, labels_train, X_test, labels_test, C=C, layer=layer, model=model,
                                    **probe_options))
        if knn_k is not None:
            device = probe_options.get("device", "auto")
            knn[model, layer] = knn_accuracy(X_train, labels_train, X_test, labels_test, k=min(knn_k, len(X_train)),
                                             device=device)
    return LayerTransfer(results=results, knn=knn)


@dataclass
class LabelEfficiency:
    """Probe accuracy vs the number of labels per class, over seeds, for several feature sets.

    Attributes
    ----------
    frame
        One row per (features, budget, seed): features, budget (``"1"``, ``"5"``... or
        ``"all"``), labels_per_class (mean labels per class used), seed, n_train, accuracy,
        knn_accuracy, C.
    """

    frame: pd.DataFrame

    def to_frame(self) -> pd.DataFrame:
        """The per-seed table (a copy)."""
        return self.frame.copy()

    def summary(self) -> pd.DataFrame:
        """Mean and standard deviation over seeds per (features, budget)."""
        grouped = self.frame.groupby(["features", "budget"], sort=False)
        summary = grouped.agg(
            labels_per_class=("labels_per_class", "mean"),
            accuracy_mean=("accuracy", "mean"),
            accuracy_sd=("accuracy", "std"),
            knn_accuracy_mean=("knn_accuracy", "mean"),
            knn_accuracy_sd=("knn_accuracy", "std"),
            n_seeds=("seed", "nunique"),
        )
        return summary.reset_index().fillna({"accuracy_sd": 0.0, "knn_accuracy_sd": 0.0})


def sample_per_class(labels: Any, per_class: int, seed: int) -> np.ndarray:
    """Sorted row indices of ``per_class`` stimuli of every class, drawn without replacement:
    ``np.random.default_rng(seed)``, then each class in increasing label order; a class with fewer
    stimuli gives all of them. The draw of ``label_efficiency`` (and of the study's experiments)."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    chosen = []
    for label in np.unique(labels):
        rows = np.flatnonzero(labels == label)
        chosen.append(rng.choice(rows, size=min(per_class, len(rows)), replace=False))
    return np.sort(np.concatenate(chosen))


def label_efficiency(
    feature_sets: Mapping[str, tuple[Any, Any]],
    labels_per_class: Sequence[int | None] = (1, 5, 10, 50, None),
    seeds: Sequence[int] = (0, 1, 2),
    *,
    y_train: Any = None,
    y_test: Any = None,
    C: float | None = None,
    knn_k: int | None = 5,
    progress: bool = True,
    **probe_options: Any,
) -> LabelEfficiency:
    """How probe accuracy grows with the number of labelled training stimuli per class.

    For every feature set, budget and seed, draw ``n`` training stimuli per class (without
    replacement, seeded; ``None`` = all), fit ``linear_probe`` on them and score it on the whole
    test split. Include raw pixels as one feature set to get the baseline.

    Parameters
    ----------
    feature_sets
        Name -> (train source, test source); sources as in ``resolve_features`` (arrays, a
        ``(recording, layer)`` pair, or a single-layer recording).
    labels_per_class
        Budgets; None means every training stimulus.
    seeds
        Seeds of the draws (``None`` budgets are drawn once, being deterministic).
    y_train, y_test
        Labels when sources are arrays.
    C
        Fixed inverse penalty, or None to cross-validate (falls back to C=1 below 2 labels per
        class).
    knn_k
        Neighbours of the kNN read-out (capped at the labels per class); None to skip.
    progress
        Show a progress bar.
    **probe_options
        Passed to ``linear_probe``.

    Returns
    -------
    LabelEfficiency
    """
    budgets = list(labels_per_class)
    if not budgets or any(b is not None and (int(b) != b or b < 1) for b in budgets):
        raise ValueError(f"labels_per_class must hold positive integers or None (all); got {budgets}")
    if not seeds:
        raise ValueError("seeds must hold at least one seed")
    resolved = {}
    for name, (train, test) in feature_sets.items():
        X_train, labels_train = resolve_features(train, y_train)
        X_test, labels_test = resolve_features(test, y_test)
        resolved[name] = (X_train, labels_train, X_test, labels_test)
    jobs = [(name, budget, seed) for name in resolved for budget in budgets
            for seed in (seeds if budget is not None else seeds[:1])]
    rows = []
    for name, budget, seed in tqdm(jobs, desc="label efficiency", disable=not progress, leave=False):
        X_train, labels_train, X_test, labels_test = resolved[name]
        if budget is None:
            rows_used = np.arange(len(labels_train))
        else:
            rows_used = sample_per_class(labels_train, int(budget), seed)
        result = linear_probe(X_train[rows_used], labels_train[rows_used], X_test, labels_test, C=C,
                              random_state=seed, model=name, **probe_options)
        n_classes = len(np.unique(labels_train[rows_used]))
        knn = np.nan
        if knn_k is not None:
            k = max(1, min(knn_k, len(rows_used) // n_classes))
            knn = knn_accuracy(X_train[rows_used], labels_train[rows_used], X_test, labels_test, k=k,
                               device=probe_options.get("device", "auto"))
        rows.append(dict(features=name, budget="all" if budget is None else str(budget),
                         labels_per_class=len(rows_used) / n_classes, seed=seed, n_train=len(rows_used),
                         accuracy=result.accuracy, knn_accuracy=knn, C=result.C))
    return LabelEfficiency(frame=pd.DataFrame(rows))
