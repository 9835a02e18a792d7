"""Reference RDMs (for example from neural recordings): loading them and ranking layers against them."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analyses._compare import SUBSET_ADVICE, compare_bytes, compare_vectors, rdm_vectors, resolve_method
from analyses._memory import check_memory, stimuli
from analyses._rdm import RDM
from analyses._rsa_inference import bootstrap_rdm_comparison, inference_bytes
from analyses._similarity_maps import _rdm_entries, rdm_map_bytes

__all__ = ["load_rdm", "LayerRanking", "rank_layers"]


def _read_csv(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    try:
        return np.loadtxt(path, delimiter=",", dtype=np.float64, ndmin=1), None
    except ValueError:
        pass
    # a labelled matrix: stimulus names in the header row and the first column
    frame = pd.read_csv(path, index_col=0)
    try:
        values = frame.to_numpy(dtype=np.float64)
    except ValueError as error:
        raise ValueError(f"{path}: the RDM contains non-numeric entries ({error}); save numbers only") from None
    if values.shape[0] == 1 and values.shape[1] != 1:
        return values[0], None
    return values, frame.index.to_numpy()


def _check_npy_memory(path: Path) -> None:
    """Refuse a .npy RDM too large for memory, from its header alone (before reading its values)."""
    try:
        header = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError):
        return  # not a plain numeric array: np.load below says what is wrong
    # the array, and its float64 copy when stored in another type
    needed = header.nbytes + (header.size * 8 if header.dtype != np.float64 else 0)
    shape = header.shape
    del header
    check_memory(
        needed, f"analyses.load_rdm of {path} (an array of shape {shape})",
        "open it without loading: analyses.RDM(np.load(path, mmap_mode='r'), check=False), or, for a condensed "
        "vector, analyses.RDM.from_condensed(np.load(path, mmap_mode='r'), check=False)",
    )


def load_rdm(path: str | os.PathLike, *, metric: str = "reference", name: str | None = None) -> RDM:
    """Load an RDM from ``.npy`` or ``.csv``: a square matrix or a condensed upper triangle.

    Parameters
    ----------
    path
        A ``.npy`` file, or a ``.csv`` file of numbers (optionally with stimulus names as header
        row and first column, which become the "stimulus" descriptor). A 1-D array is read as
        the condensed upper triangle in scipy's ``squareform`` order.
    metric
        Stored on the result (what the dissimilarities mean).
    name
        Stored on the result; defaults to the file's stem.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        Unsupported suffix; not square / not symmetric / non-zero diagonal; a vector whose length
        is not n(n-1)/2; NaN or inf.
    MemoryLimitError
        A .npy file larger than the memory limit (``analyses.set_memory_limit``), refused from its
        header before its values are read.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no reference RDM at {path}; give the path of a .npy or .csv file")
    descriptors = None
    suffix = path.suffix.lower()
    if suffix == ".npy":
        _check_npy_memory(path)
        values = np.load(path, allow_pickle=False)
    elif suffix == ".csv":
        values, stimuli = _read_csv(path)
        if stimuli is not None:
            descriptors = {"stimulus": stimuli}
    else:
        raise ValueError(f"{path}: unsupported file type {suffix!r}; save the RDM as .npy or .csv")
    values = np.asarray(values, dtype=np.float64)
    name = name or path.stem
    try:
        if values.ndim == 1:
            return RDM.from_condensed(values, metric, descriptors, name)
        if values.ndim == 2 and values.shape[0] == values.shape[1]:
            return RDM(values, metric, descriptors, name)
        raise ValueError(f"shape {values.shape} is neither a square matrix nor a condensed vector")
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None


@dataclass
class LayerRanking:
    """How well each layer of each model matches a reference RDM.

    Attributes
    ----------
    frame
        One row per layer: name, model, layer, depth (index within its model), score,
        rank_in_model (1 = best of that model), rank (1 = best overall), and ci_low/ci_high
        when a bootstrap was requested.
    method
        The RDM comparison method of ``score``.
    reference
        The reference RDM's name.
    ceiling
        The reference's noise ceiling (``analyses.noise_ceiling``) when it was measured several times,
        else None.
    """

    frame: pd.DataFrame
    method: str
    reference: str
    ceiling: Any = None

    def to_frame(self) -> pd.DataFrame:
        return self.frame.copy()

    def best(self) -> pd.DataFrame:
        """The best-matching layer of every model."""
        return self.frame[self.frame["rank_in_model"] == 1].reset_index(drop=True)


def rank_layers(
    reference: Any,
    representations: Any,
    method: str = "spearman",
    *,
    metric: str = "correlation",
    n_bootstrap: int = 0,
    confidence: float = 0.95,
    seed: int = 0,
    progress: bool = True,
) -> LayerRanking:
    """Rank the layers of every model by how well their RDMs match a reference RDM.

    Parameters
    ----------
    reference
        The reference (``RDM``, square matrix, condensed vector, or a path to .npy/.csv).
    representations
        ``{name: RDM}``, or representations as in ``analyses.cka_matrix`` (their RDMs are
        computed with ``metric``); same stimuli, same order as the reference.
    method
        RDM comparison method (see ``analyses.compare_rdms``); "spearman" by default.
    n_bootstrap
        If > 0, add percentile bootstrap intervals over stimuli (``bootstrap_rdm_comparison``).

    Returns
    -------
    LayerRanking
    """
    method = resolve_method(method)
    if isinstance(reference, (str, os.PathLike)):
        reference = load_rdm(reference)
    reference_name = getattr(reference, "name", None) or "reference"
    n, k, needed = rdm_map_bytes(representations, metric)
    n_pairs = n * (n - 1) // 2
    needed += 8 * n_pairs + compare_bytes(1, k, n_pairs, method)  # the reference's condensed form, the scores
    if n_bootstrap > 0:
        needed += inference_bytes(n, k, method, bootstrap=True)
    check_memory(needed, f"analyses.rank_layers ({method}, {k} layers) on {stimuli(n)}", SUBSET_ADVICE)
    reference_vector, single = rdm_vectors(reference, "reference")
    if not single:
        raise ValueError("reference must be a single RDM")
    entries, _ = _rdm_entries(representations, metric, progress)
    vectors = np.stack([e.data.condensed() for e in entries]) if len({e.data.n_stimuli for e in entries}) == 1 else None
    if vectors is None or vectors.shape[1] != reference_vector.shape[1]:
        counts = {e.name: e.data.n_stimuli for e in entries}
        raise ValueError(f"the layer RDMs {counts} and the reference do not cover the same stimuli")
    scores = compare_vectors(reference_vector, vectors, method)[0]
    frame = pd.DataFrame(
        {"name": [e.name for e in entries], "model": [e.model for e in entries], "layer": [e.layer for e in entries]}
    )
    frame["depth"] = frame.groupby("model", sort=False).cumcount()
    frame["score"] = scores
    if n_bootstrap > 0:
        boot = bootstrap_rdm_comparison(
            reference_vector[0], {e.name: e.data for e in entries}, method,
            n_bootstrap=n_bootstrap, confidence=confidence, seed=seed, progress=progress,
        )
        frame["ci_low"], frame["ci_high"] = boot.ci_low, boot.ci_high
    frame["rank_in_model"] = frame.groupby("model", sort=False)["score"].rank(ascending=False, method="min").astype(int)
    frame["rank"] = frame["score"].rank(ascending=False, method="min").astype(int)
    frame["method"] = method
    return LayerRanking(frame, method, str(reference_name))
