"""The demo's similarity step: RDMs, CKA and RDM maps across the zoo's layers, second-order MDS.

It uses the recordings of the digits test stimuli made by the recording step
(``ctx.recordings``); without them it records the digits-trained models itself. Stimuli are
subsampled (class-balanced, fixed seed) to keep the step fast. As a stand-in for a neural
reference RDM it uses the category RDM (0 within a digit class, 1 between classes), so the layer
ranking shows where class structure emerges.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

import probe
from analyses import RDM, cka_matrix, rank_layers, rdm, rdm_mds, rdm_similarity_matrix
from probe.study._context import StudyContext
from reports import Section, similarity_section

__all__ = ["similarity_analysis", "similarity_step"]

N_STIMULI = {True: 120, False: 250}  # by ctx.quick
N_BOOTSTRAP = {True: 0, False: 20}
MAX_RDM_PANELS = {True: 4, False: 8}


def _balanced_subsample(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Indices of up to n stimuli, as many per class as possible, sorted."""
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    per_class = max(1, n // len(classes))
    chosen = [rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in classes]
    return np.sort(np.concatenate(chosen))


def _record_digits_models(ctx: StudyContext) -> dict[str, Any]:
    dataset = ctx.dataset("digits")
    shape = list(dataset.info.image_shape)
    recordings = {}
    for run, model in ctx.models.items():
        if list(getattr(model, "config", {}).get("input_shape", [])) == shape and hasattr(model, "recordable_layers"):
            recordings[run] = probe.record(model, dataset, model.recordable_layers(), device=ctx.device, progress=False)
    return recordings


def _digits_recordings(ctx: StudyContext) -> dict[str, Any]:
    recordings = dict(ctx.recordings) or _record_digits_models(ctx)
    if not recordings:
        raise KeyError("the similarity step needs ctx.recordings (the recording step) or trained digits models (the Zoo step)")
    # compare only recordings over the same stimuli: the digits test split
    names = {run: (getattr(rec, "dataset", None) or {}).get("name") for run, rec in recordings.items()}
    if any(names.values()):
        recordings = {run: rec for run, rec in recordings.items() if names[run] == "digits"}
    if not recordings:
        raise KeyError("the similarity step found no recording of the digits stimuli; run the Layers step first")
    return recordings


def similarity_step(ctx: StudyContext) -> list[Section]:
    """The demo's similarity analysis: the digits models' recordings against the category RDM."""
    return similarity_analysis(
        ctx, _digits_recordings(ctx), n_stimuli=N_STIMULI[ctx.quick], n_bootstrap=N_BOOTSTRAP[ctx.quick],
        max_rdm_panels=MAX_RDM_PANELS[ctx.quick], stimuli="digits test stimuli",
    )


def similarity_analysis(
    ctx: StudyContext,
    recordings: Mapping[str, Any] | None = None,
    *,
    measures: Sequence[str] = ("rdm", "cka"),
    reference: str | os.PathLike = "labels",
    n_stimuli: int = 250,
    n_bootstrap: int = 0,
    max_rdm_panels: int = 8,
    stimuli: str = "stimuli",
) -> list[Section]:
    """RDMs, CKA and RDM maps across the layers of every model, the layers' MDS and their ranking
    against a reference RDM.

    Parameters
    ----------
    ctx
        The study; its results get ``"similarity"`` and its tables ``similarity-*``.
    recordings
        Model name -> recording, all over the same stimuli; default ``ctx.recordings``.
    measures
        ``"rdm"`` (correlation-distance RDMs, their correlation map, MDS, ranking) and/or ``"cka"``
        (linear CKA map).
    reference
        ``"labels"`` (the category RDM: 0 within a class, 1 between), ``"none"``, or a ``.npy`` file
        holding an (n, n) RDM over all the study's stimuli.
    n_stimuli
        Class-balanced subsample (seeded with ``ctx.seed``) the measures use.
    n_bootstrap
        Bootstrap resamples of the stimuli for the ranking's confidence intervals (0: none).
    max_rdm_panels
        RDM heatmaps shown (of the first model).
    stimuli
        How the intro names the stimuli.
    """
    recordings = dict(ctx.recordings if recordings is None else recordings)
    if not recordings:
        raise KeyError("the similarity analysis needs recordings; record the models first")
    labels_all = np.asarray(next(iter(recordings.values())).labels)
    index = _balanced_subsample(labels_all, n_stimuli, ctx.seed) if (labels_all >= 0).all() else (
        np.sort(np.random.default_rng(ctx.seed).permutation(len(labels_all))[:n_stimuli]))
    labels = labels_all[index]
    representations = {
        run: {layer: np.asarray(rec[layer])[index] for layer in rec.layers} for run, rec in recordings.items()
    }
    # a layer that is constant over the chosen stimuli (a dead unit map) has no geometry to compare
    representations = {
        run: {layer: x for layer, x in layers.items() if np.ptp(x, axis=0).max() > 0}
        for run, layers in representations.items()
    }
    descriptors = {"label": labels}
    rdms, skipped = {}, []
    for run, layers in representations.items():
        run_rdms, run_skipped = _safe_rdms(run, layers, descriptors)
        rdms.update(run_rdms)
        skipped += run_skipped
    kept = {name.rsplit("/", 1)[0]: {} for name in rdms}  # layer names hold no "/", model names may
    for name in rdms:
        run, layer = name.rsplit("/", 1)
        kept[run][layer] = representations[run][layer]
    results: dict[str, Any] = {"rdms": rdms if "rdm" in measures else {}}
    if "cka" in measures:
        results["cka"] = cka_matrix(kept, progress=False)
        ctx.add_table("similarity-cka", results["cka"].to_frame())
    if "rdm" in measures:
        results["rdm_similarity"] = rdm_similarity_matrix(rdms, "pearson", progress=False)
        results["mds"] = rdm_mds(results["rdm_similarity"], seed=ctx.seed)
        ctx.add_table("similarity-rdm", results["rdm_similarity"].to_frame())
        ctx.add_table("similarity-mds", results["mds"].to_frame())
        reference_rdm = _reference_rdm(reference, labels_all, index, descriptors)
        if reference_rdm is not None:
            results["ranking"] = rank_layers(reference_rdm, rdms, "rho-a", n_bootstrap=n_bootstrap, seed=ctx.seed,
                                             progress=False)
            ctx.add_table("similarity-ranking", results["ranking"].to_frame())
    ctx.results["similarity"] = results
    first_run = next(iter(kept))
    shown = {name: r for name, r in results["rdms"].items() if name.startswith(first_run + "/")}
    shown = dict(list(shown.items())[:max_rdm_panels])
    intro = (
        f"{len(index)} {stimuli} (class-balanced subsample, seed {ctx.seed}); "
        f"{sum(len(v) for v in kept.values())} layers from {len(kept)} models."
        + (f" Correlation-distance RDMs; the panels show {first_run!r}." if "rdm" in measures else "")
        + (f" The reference is {_reference_words(reference)}, compared with rho-a." if "ranking" in results else "")
        + (f" Skipped (a stimulus with a constant pattern, correlation distance undefined): {', '.join(skipped)}."
           if skipped else "")
    )
    return [similarity_section(rdms=shown or None, cka=results.get("cka"), rdm_similarity=results.get("rdm_similarity"),
                               mds=results.get("mds"), ranking=results.get("ranking"), intro=intro)]


def _reference_words(reference: str | os.PathLike) -> str:
    return "the category RDM (0 same class, 1 different)" if str(reference) == "labels" else f"the RDM in {reference}"


def _reference_rdm(reference: str | os.PathLike, labels_all: np.ndarray, index: np.ndarray,
                   descriptors: dict[str, np.ndarray]) -> RDM | None:
    """The reference RDM over the subsample, or None (``"none"``, or labels that are unknown)."""
    if str(reference) == "none":
        return None
    if str(reference) == "labels":
        if (labels_all < 0).any() or len(np.unique(labels_all)) < 2:
            return None
        labels = labels_all[index]
        return RDM((labels[:, None] != labels[None, :]).astype(float), "category (0 same class, 1 different)",
                   descriptors, name="category")
    matrix = np.load(Path(reference), allow_pickle=False)
    n = len(labels_all)
    if matrix.shape != (n, n):
        raise ValueError(f"the reference RDM in {reference} has shape {matrix.shape}; the study has {n} stimuli, so it "
                         f"must be ({n}, {n}), rows in the order of the study's stimuli")
    if not np.isfinite(matrix).all():
        raise ValueError(f"the reference RDM in {reference} holds NaN or inf values")
    return RDM(matrix[np.ix_(index, index)], "reference", descriptors, name=Path(reference).stem)


def _safe_rdms(
    run: str, layers: dict[str, np.ndarray], descriptors: dict[str, np.ndarray]
) -> tuple[dict[str, Any], list[str]]:
    """Correlation RDMs of a model's layers, and the names of layers skipped because a stimulus's
    pattern is constant there (say, a ReLU layer that is all zero for it): correlation is undefined."""

    result, skipped = {}, []
    for layer, x in layers.items():
        name = f"{run}/{layer}"
        try:
            result[name] = rdm(x.reshape(x.shape[0], -1), "correlation", descriptors, name=name)
        except ValueError:
            skipped.append(name)
    return result, skipped
