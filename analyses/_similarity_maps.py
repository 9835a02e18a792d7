"""Maps across layers and models: all-pairs CKA, all-pairs RDM correlation, MDS of the RDMs.

Representations are given as one of

- a dict ``{name: array of shape (n_stimuli, n_units)}``,
- a ``Recording`` (anything with ``.layers`` and ``rec[layer]``),
- a dict ``{model name: Recording or dict of arrays}``; entries are then named "model/layer".

Every entry must cover the same stimuli in the same order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from analyses._cka import (
    CKA_KERNELS,
    RBF_GRAM_COPIES,
    STREAMING_ADVICE,
    _rbf_gram,
    centre_gram,
    check_pair,
    debiased_inner,
    flatten_units,
    gram_copies,
)
from analyses._compare import SUBSET_ADVICE, compare_bytes, compare_vectors, resolve_method
from analyses._memory import check_memory, square_bytes, stimuli
from analyses._rdm import RDM, gram, rdm, rdm_bytes
from zoo._names import unknown_name_error

__all__ = [
    "SimilarityMatrix",
    "MDSResult",
    "cka_matrix",
    "layer_rdms",
    "rdm_similarity_matrix",
    "rdm_mds",
]


@dataclass
class Entry:
    """One representation in a map: its display name, model, layer and data (or RDM)."""

    name: str
    model: str
    layer: str
    data: Any


def _is_recording(value: Any) -> bool:
    return hasattr(value, "layers") and hasattr(value, "__getitem__") and not isinstance(value, Mapping)


def _model_entries(model: str, source: Any) -> list[Entry]:
    if _is_recording(source):
        layers = list(source.layers)
        return [Entry(f"{model}/{layer}" if model else layer, model, layer, source[layer]) for layer in layers]
    return [
        Entry(f"{model}/{layer}" if model else str(layer), model, str(layer), value) for layer, value in source.items()
    ]


def collect_entries(representations: Any) -> list[Entry]:
    """Flatten the accepted input forms (module docstring) into a list of entries."""
    if _is_recording(representations):
        entries = _model_entries("", representations)
    elif isinstance(representations, Mapping):
        nested = [isinstance(v, Mapping) or _is_recording(v) for v in representations.values()]
        if any(nested) and not all(nested):
            raise ValueError("mix of arrays and recordings: pass either {name: array} or {model: Recording or dict}")
        if all(nested) and nested:
            entries = [e for model, source in representations.items() for e in _model_entries(str(model), source)]
        else:
            entries = _model_entries("", representations)
    else:
        raise ValueError(
            f"representations of type {type(representations).__name__} not understood; pass a dict "
            "{name: array (n_stimuli, n_units)}, a Recording, or {model: Recording}"
        )
    if len(entries) < 1:
        raise ValueError("no representations given")
    return entries


@dataclass
class SimilarityMatrix:
    """An all-pairs similarity matrix over layers (of one or several models).

    Attributes
    ----------
    values
        Array of shape (n_entries, n_entries).
    names, models, layers
        Per entry: display name ("model/layer" or "layer"), model name ("" if one source), layer.
    measure
        What the values are, for example "linear CKA" or "pearson of correlation RDMs".
    n_stimuli
        Number of stimuli the representations covered.
    """

    values: np.ndarray
    names: list[str]
    models: list[str]
    layers: list[str]
    measure: str
    n_stimuli: int
    details: dict[str, Any] = field(default_factory=dict)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        return self.values.astype(dtype) if dtype is not None else self.values

    def to_frame(self) -> pd.DataFrame:
        """One row per ordered pair of entries: name/model/layer of both, value, measure."""
        k = len(self.names)
        a, b = np.meshgrid(np.arange(k), np.arange(k), indexing="ij")
        a, b = a.ravel(), b.ravel()
        pick = lambda seq, idx: np.asarray(seq, dtype=object)[idx]  # noqa: E731
        return pd.DataFrame(
            {
                "name_a": pick(self.names, a),
                "model_a": pick(self.models, a),
                "layer_a": pick(self.layers, a),
                "name_b": pick(self.names, b),
                "model_b": pick(self.models, b),
                "layer_b": pick(self.layers, b),
                "value": self.values[a, b],
                "measure": self.measure,
                "n_stimuli": self.n_stimuli,
            }
        )

    def to_matrix_frame(self) -> pd.DataFrame:
        """The matrix as a square DataFrame indexed by entry name."""
        return pd.DataFrame(self.values, index=self.names, columns=self.names)

    def block(self, model_a: str, model_b: str) -> pd.DataFrame:
        """The sub-matrix between the layers of two models (rows: model_a's layers)."""
        models = sorted(set(self.models))
        for model in (model_a, model_b):
            if model not in models:
                raise unknown_name_error("model", model, models)
        rows = [i for i, m in enumerate(self.models) if m == model_a]
        cols = [j for j, m in enumerate(self.models) if m == model_b]
        return pd.DataFrame(
            self.values[np.ix_(rows, cols)], index=[self.layers[i] for i in rows], columns=[self.layers[j] for j in cols]
        )


def _check_same_stimuli(tensors: list[torch.Tensor], entries: list[Entry], debiased: bool) -> int:
    n = tensors[0].shape[0]
    for tensor, entry in zip(tensors, entries):
        try:
            check_pair(tensors[0], tensor, debiased)
        except ValueError as error:
            raise ValueError(f"{entries[0].name!r} vs {entry.name!r}: {error}") from None
    return n


def cka_matrix(
    representations: Any,
    kernel: str = "linear",
    *,
    sigma: float | None = None,
    median_fraction: float = 0.5,
    debiased: bool = False,
    dtype: torch.dtype = torch.float64,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> SimilarityMatrix:
    """CKA between every pair of layers (of one or several models), same conventions as ``cka``.

    Parameters
    ----------
    representations
        See the module docstring; arrays of shape (n_stimuli, n_units), same stimuli throughout.
    kernel, sigma, median_fraction, debiased, dtype
        As in ``analyses.cka``.
    device
        Where to compute; None keeps each array's own device (NumPy: CPU).
    progress
        Show a progress bar over pairs.

    Returns
    -------
    SimilarityMatrix
        Symmetric, ones on the diagonal.

    Notes
    -----
    Linear CKA never forms more than one n x n Gram matrix per layer: a layer narrower than the
    stimulus count stays in feature space and pairs use ||Xa^T Xb||_F^2; a wider one is
    replaced by its Gram matrix. Each layer is centred and summarised once, not once per pair.
    """
    if kernel not in CKA_KERNELS:
        raise unknown_name_error("CKA kernel", kernel, CKA_KERNELS)
    entries = collect_entries(representations)
    tensors = [flatten_units(e.data, e.name, dtype) for e in entries]
    if device is not None:
        from zoo import resolve_device

        tensors = [t.to(resolve_device(device)) for t in tensors]
    n = _check_same_stimuli(tensors, entries, debiased)
    k = len(entries)
    _check_cka_matrix_memory(tensors, kernel, n)
    summaries = [_summarise(t, kernel, sigma, median_fraction, debiased, e.name) for t, e in zip(tensors, entries)]
    inner = np.zeros((k, k))
    pairs = [(a, b) for a in range(k) for b in range(a, k)]
    for a, b in tqdm(pairs, desc=f"{kernel} CKA pairs", disable=not progress, leave=False):
        value = _inner(summaries[a], summaries[b])
        if debiased and kernel == "linear":
            sa, sb = summaries[a], summaries[b]
            value = debiased_inner(value, sa["rows"], sb["rows"], sa["total"], sb["total"], n)
        inner[a, b] = inner[b, a] = float(value)
    norms = np.sqrt(np.clip(np.diag(inner), 0, None))
    degenerate = [entries[i].name for i in np.flatnonzero(norms == 0)]
    if degenerate:
        raise ValueError(
            f"layer(s) {degenerate} are the same for every stimulus (centred Gram matrix zero), so CKA with them is "
            "undefined; drop them from the map"
        )
    values = inner / np.outer(norms, norms)
    np.fill_diagonal(values, 1.0)
    measure = f"{'debiased ' if debiased else ''}{kernel} CKA"
    return SimilarityMatrix(
        values,
        [e.name for e in entries],
        [e.model for e in entries],
        [e.layer for e in entries],
        measure,
        n,
        {"kernel": kernel, "debiased": debiased, "median_fraction": median_fraction, "sigma": sigma},
    )


def _check_cka_matrix_memory(tensors: list[torch.Tensor], kernel: str, n: int) -> None:
    """Refuse before the first Gram matrix when the layers' (n, n) Gram matrices would not fit."""
    itemsize = tensors[0].element_size()
    if kernel == "rbf":
        # every layer's centred kernel is kept; the last one is built next to the others
        copies = len(tensors) - 1 + RBF_GRAM_COPIES
        advice = (
            "use kernel='linear' and analyses.StreamingCKA, which streams linear CKA in memory independent of "
            "the stimulus count, or a subset of the stimuli"
        )
    else:
        # layers wider than the stimulus count are kept as Gram matrices; products add one more
        n_grams = sum(t.shape[1] > n for t in tensors)
        if n_grams == 0:
            return
        copies = n_grams + max(gram_copies(tensors[0]) - 1, 1 if n_grams > 1 else 0)
        advice = STREAMING_ADVICE
    check_memory(
        square_bytes(n, copies, itemsize),
        f"analyses.cka_matrix ({kernel} kernel, {len(tensors)} layers) on {stimuli(n)}",
        advice,
    )


def _summarise(X, kernel, sigma, median_fraction, debiased, name) -> dict[str, Any]:
    if kernel == "rbf":
        return {"gram": centre_gram(_rbf_gram(X, sigma, median_fraction, name), debiased)}
    Xc = X - X.mean(dim=0)
    rows = (Xc * Xc).sum(dim=1)
    summary = {"rows": rows, "total": rows.sum()}
    if Xc.shape[1] > Xc.shape[0]:
        summary["gram"] = gram(Xc)
    else:
        summary["features"] = Xc
    return summary


def _inner(sa: dict[str, Any], sb: dict[str, Any]) -> torch.Tensor:
    """<Kc_a, Kc_b> (Frobenius) from whichever form each layer is kept in."""
    if "gram" in sa and "gram" in sb:
        return (sa["gram"] * sb["gram"].to(sa["gram"].device)).sum()
    if "gram" in sb:
        sa, sb = sb, sa
    if "gram" in sa:
        Xb = sb["features"].to(sa["gram"].device)
        return ((sa["gram"] @ Xb) * Xb).sum()
    Xa, Xb = sa["features"], sb["features"].to(sa["features"].device)
    if Xa is Xb:
        return torch.linalg.matrix_norm(gram(Xa.T)) ** 2
    return torch.linalg.matrix_norm(Xa.T @ Xb) ** 2


def layer_rdms(
    representations: Any,
    metric: str = "correlation",
    descriptors: Mapping[str, Any] | None = None,
    *,
    progress: bool = True,
    **rdm_options: Any,
) -> dict[str, RDM]:
    """The RDM of every layer, by entry name ("model/layer" or "layer").

    Parameters
    ----------
    representations
        See the module docstring. A Recording's ``labels`` become the "label" descriptor unless
        ``descriptors`` is given.
    metric, descriptors, **rdm_options
        Passed to ``analyses.rdm``.
    """
    entries = collect_entries(representations)
    n, needed = layer_rdms_bytes(entries, metric, rdm_options)
    check_memory(
        needed,
        f"analyses.layer_rdms (metric={metric!r}, {len(entries)} layers) on {stimuli(n)}",
        "use fewer stimuli" if metric == "crossnobis" else
        "compute the layers' RDMs one at a time with analyses.rdm_chunked(X, metric, path=..., condensed=True), "
        "which writes each to disk, or use fewer stimuli",
    )
    if descriptors is None:
        descriptors = _recording_labels(representations)
    result = {}
    for entry in tqdm(entries, desc="layer RDMs", disable=not progress, leave=False):
        data = entry.data
        if isinstance(data, torch.Tensor) or np.ndim(data) != 2:
            data = flatten_units(data, entry.name)
        result[entry.name] = rdm(data, metric, descriptors, name=entry.name, **rdm_options)
    return result


def _stimulus_count(data: Any) -> int:
    """Stimuli of one entry (an RDM or an array of shape (n_stimuli, ...)), read from its shape."""
    if isinstance(data, RDM):
        return data.n_stimuli
    shape = np.shape(data)
    return int(shape[0]) if shape else 0


def layer_rdms_bytes(entries: list[Entry], metric: str, rdm_options: Mapping[str, Any]) -> tuple[int, int]:
    """(n_stimuli, estimated peak bytes) of ``layer_rdms``: every layer's float64 RDM, and one more being computed.

    The bytes are 0 when the stimulus count is not read from the shapes (crossnobis with
    ``runs=``, whose ``rdm`` call checks its own memory).
    """
    data = entries[0].data
    if metric == "crossnobis":
        if rdm_options.get("runs") is not None or np.ndim(data) != 3:
            return 0, 0
        n = int(np.shape(data)[1])
    else:
        n = _stimulus_count(data)
    dtype = rdm_options.get("dtype", torch.float64)
    on_cpu = not (isinstance(data, torch.Tensor) and data.device.type != "cpu")
    working = rdm_bytes(
        n, metric, torch.empty((), dtype=dtype).element_size(), per_unit=bool(rdm_options.get("per_unit")),
        cpu_float64=on_cpu and dtype == torch.float64, on_cpu=on_cpu,
    )
    return n, square_bytes(n, len(entries) - 1) + working


def _recording_labels(representations: Any) -> dict[str, np.ndarray] | None:
    if _is_recording(representations):
        sources = [representations]
    else:
        sources = list(representations.values()) if isinstance(representations, Mapping) else []
    for source in sources:
        labels = getattr(source, "labels", None)
        if labels is not None:
            return {"label": np.asarray(labels)}
    return None


def _are_rdms(rdms_or_representations: Any) -> bool:
    return (
        isinstance(rdms_or_representations, Mapping)
        and bool(rdms_or_representations)
        and all(isinstance(v, RDM) for v in rdms_or_representations.values())
    )


def rdm_map_bytes(rdms_or_representations: Any, metric: str) -> tuple[int, int, int]:
    """(n_stimuli, n_rdms, bytes) of having every layer's RDM and stacking their condensed forms.

    The bytes count the RDMs when they are computed here (``layer_rdms``), the condensed vectors
    and their stack; a caller adds what it does with them.
    """
    if _are_rdms(rdms_or_representations):
        rdms = list(rdms_or_representations.values())
        n, k, computing = max(r.n_stimuli for r in rdms), len(rdms), 0
    else:
        entries = collect_entries(rdms_or_representations)
        k = len(entries)
        n, computing = layer_rdms_bytes(entries, metric, {})
    n_pairs = n * (n - 1) // 2
    return n, k, computing + 2 * 8 * k * n_pairs


def _rdm_entries(rdms_or_representations: Any, metric: str, progress: bool) -> tuple[list[Entry], str]:
    if _are_rdms(rdms_or_representations):
        rdms = dict(rdms_or_representations)
    else:
        rdms = layer_rdms(rdms_or_representations, metric, progress=progress)
    entries = []
    for name, value in rdms.items():
        model, _, layer = name.rpartition("/")
        entries.append(Entry(name, model, layer, value))
    metrics = sorted({e.data.metric for e in entries})
    return entries, "/".join(metrics)


def rdm_similarity_matrix(
    rdms_or_representations: Any,
    method: str = "pearson",
    *,
    metric: str = "correlation",
    progress: bool = True,
) -> SimilarityMatrix:
    """Second-order similarity: the comparison of every pair of layer RDMs.

    Parameters
    ----------
    rdms_or_representations
        A dict ``{name: RDM}`` (names "model/layer" or "layer"), or representations as in the
        module docstring, whose RDMs are computed with ``metric``.
    method
        RDM comparison method (see ``analyses.compare_rdms``).
    metric
        RDM metric when representations are given.

    Returns
    -------
    SimilarityMatrix
    """
    method = resolve_method(method)
    n, k, needed = rdm_map_bytes(rdms_or_representations, metric)
    check_memory(
        needed + compare_bytes(k, k, n * (n - 1) // 2, method),
        f"analyses.rdm_similarity_matrix ({method}, {k} RDMs) on {stimuli(n)}",
        SUBSET_ADVICE,
    )
    entries, metrics = _rdm_entries(rdms_or_representations, metric, progress)
    vectors = np.stack([e.data.condensed() for e in entries]) if len({e.data.n_stimuli for e in entries}) == 1 else None
    if vectors is None:
        counts = {e.name: e.data.n_stimuli for e in entries}
        raise ValueError(f"the RDMs cover different numbers of stimuli {counts}; compute them on the same stimuli")
    values = compare_vectors(vectors, vectors, method)
    values = (values + values.T) / 2
    np.fill_diagonal(values, 1.0)
    return SimilarityMatrix(
        values,
        [e.name for e in entries],
        [e.model for e in entries],
        [e.layer for e in entries],
        f"{method} of {metrics} RDMs",
        entries[0].data.n_stimuli,
        {"method": method, "rdm_metric": metrics},
    )


@dataclass
class MDSResult:
    """Layers placed in a plane so that distances follow 1 - similarity (second-order RSA).

    Attributes
    ----------
    coordinates
        Array of shape (n_entries, n_components).
    names, models, layers
        As in the ``SimilarityMatrix`` it came from; within a model, entries are in layer order.
    stress
        Kruskal's stress-1 of the embedding (0 = distances reproduced exactly; < 0.1 good, > 0.2 poor):
        sqrt(sum (d_ij - dhat_ij)^2 / sum d_ij^2) over pairs i < j, with d the distances in the
        embedding and dhat the dissimilarities it was fitted to (1 - similarity; metric MDS).
    measure
        The similarity the distances came from.
    """

    coordinates: np.ndarray
    names: list[str]
    models: list[str]
    layers: list[str]
    stress: float
    measure: str

    def to_frame(self) -> pd.DataFrame:
        """One row per entry: name, model, layer, depth (index within its model), dim_1, dim_2, ..."""
        frame = pd.DataFrame({"name": self.names, "model": self.models, "layer": self.layers})
        frame["depth"] = frame.groupby("model", sort=False).cumcount()
        for d in range(self.coordinates.shape[1]):
            frame[f"dim_{d + 1}"] = self.coordinates[:, d]
        frame["stress"] = self.stress
        frame["measure"] = self.measure
        return frame


def kruskal_stress(coordinates: np.ndarray, dissimilarities: np.ndarray) -> float:
    """Kruskal's stress-1 of an embedding: 0 when its distances reproduce the dissimilarities exactly.

    Parameters
    ----------
    coordinates
        Array of shape (n_points, n_components).
    dissimilarities
        Symmetric array of shape (n_points, n_points), the dissimilarities the embedding was fitted to
        (in metric MDS they are also the disparities).

    Returns
    -------
    float
        sqrt(sum (d_ij - dhat_ij)^2 / sum d_ij^2) over pairs i < j, d the embedding's Euclidean
        distances and dhat the dissimilarities; < 0.1 is good, > 0.2 poor. 0 when every distance and
        dissimilarity is 0, inf when only the distances are.
    """
    from scipy.spatial.distance import pdist

    distances = pdist(np.asarray(coordinates, dtype=np.float64))
    rows, cols = np.triu_indices(len(coordinates), 1)
    targets = np.asarray(dissimilarities, dtype=np.float64)[rows, cols]
    misfit, scale = float(np.sum((distances - targets) ** 2)), float(np.sum(distances**2))
    if scale == 0.0:
        return 0.0 if misfit == 0.0 else float("inf")
    return float(np.sqrt(misfit / scale))


def rdm_mds(
    similarity: SimilarityMatrix | Any,
    *,
    method: str = "pearson",
    n_components: int = 2,
    seed: int = 0,
) -> MDSResult:
    """Metric MDS of layers with distance 1 - similarity (RDM correlation or CKA).

    Parameters
    ----------
    similarity
        A ``SimilarityMatrix`` (from ``rdm_similarity_matrix`` or ``cka_matrix``), or what
        ``rdm_similarity_matrix`` accepts (then compared with ``method``).
    n_components
        Dimensions of the embedding.
    seed
        Random state of sklearn's SMACOF (initialised from classical MDS, so the result is
        deterministic).

    Returns
    -------
    MDSResult
        With ``stress``, Kruskal's stress-1 of the embedding (see ``kruskal_stress``).
    """
    from sklearn.manifold import MDS

    if not isinstance(similarity, SimilarityMatrix):
        similarity = rdm_similarity_matrix(similarity, method, progress=False)
    k = len(similarity.names)
    if k < 2:
        raise ValueError("MDS needs at least 2 layers")
    distances = np.clip(1.0 - similarity.values, 0.0, None)
    distances = (distances + distances.T) / 2
    np.fill_diagonal(distances, 0.0)
    mds = MDS(
        n_components=n_components,
        metric="precomputed",
        metric_mds=True,
        init="classical_mds",
        random_state=seed,
        normalized_stress="auto",
    )
    coordinates = mds.fit_transform(distances)
    return MDSResult(
        coordinates, list(similarity.names), list(similarity.models), list(similarity.layers),
        kruskal_stress(coordinates, distances), similarity.measure,
    )
