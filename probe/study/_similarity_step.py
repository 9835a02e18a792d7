"""The similarity analysis: RDMs, CKA and RDM maps across the layers of the models recorded on the same
stimuli, the layers' second-order MDS, and their ranking against a reference RDM.

Stimuli are subsampled (class-balanced, fixed seed) to keep the analysis fast. Without a measured
reference, the category RDM (0 within a class, 1 between classes) stands in for one, so that the
ranking shows where class structure emerges.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analyses import RDM, cka_matrix, noise_ceiling, pool_rdms, rank_layers, rdm, rdm_mds, rdm_similarity_matrix
from probe.study._context import StudyContext
from reports import Section, similarity_section

__all__ = ["best_layer_pairs", "similarity_analysis", "stimulus_subsample"]

# How layers are compared with the reference RDM: rho-a, defined for RDMs with tied dissimilarities (the
# category RDM); a reference measured in several subjects is pooled and given its noise ceiling the same way.
RANKING_METHOD = "rho-a"


def _balanced_subsample(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Indices of up to n stimuli, as many per class as possible, sorted."""
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    per_class = max(1, n // len(classes))
    chosen = [rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in classes]
    return np.sort(np.concatenate(chosen))


def stimulus_subsample(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """The stimuli a comparison of layers reads: class-balanced when every stimulus is labelled, else a seeded
    random subset; sorted indices."""
    if (labels >= 0).all():
        return _balanced_subsample(labels, n, seed)
    return np.sort(np.random.default_rng(seed).permutation(len(labels))[:n])


def similarity_analysis(
    ctx: StudyContext,
    *,
    measures: Sequence[str] = ("rdm", "cka"),
    reference: str | os.PathLike = "labels",
    n_stimuli: int = 250,
    n_bootstrap: int = 0,
    models: str | Sequence[str] = "all",
    max_rdm_panels: int = 8,
) -> list[Section]:
    """RDMs, CKA and RDM maps across the layers of the models, the layers' MDS and their ranking against
    a reference RDM: one section per group of models recorded on the same stimuli.

    Parameters
    ----------
    ctx
        The study. Its results get ``"similarity"`` (the measures of the first group: ``rdms``, ``cka``,
        ``rdm_similarity``, ``mds``, ``ranking``, ``best_pairs``: ``best_layer_pairs`` of the CKA map) and ``"similarity_by_stimuli"`` (stimuli words -> the
        same, for every group); its tables ``similarity-cka``, ``-rdm``, ``-mds``, ``-ranking`` and
        ``-best-pairs`` (each model's most alike layer pair with every other model), with a ``stimuli`` column.
    measures
        ``"rdm"`` (correlation-distance RDMs, their correlation map, MDS, ranking) and/or ``"cka"``
        (linear CKA map).
    reference
        ``"labels"`` (the category RDM: 0 within a class, 1 between), ``"none"``, or a ``.npy`` file
        holding an (n, n) RDM over a group's stimuli, or (k, n, n): k subjects or repetitions, pooled into
        the reference, whose noise ceiling (``analyses.noise_ceiling``) the ranking then shows.
    n_stimuli
        Class-balanced subsample (seeded with ``ctx.seed``) the measures use.
    n_bootstrap
        Bootstrap resamples of the stimuli for the ranking's confidence intervals (0: none).
    models
        ``"all"`` or the names of the models compared.
    max_rdm_panels
        RDM heatmaps shown per group (of its first model).
    """
    groups = ctx.stimulus_groups(models)
    if not groups:
        raise KeyError("the similarity analysis needs recordings; record the models first")
    sections, by_stimuli, frames = [], {}, {}
    for words, names in groups.items():
        recordings = {name: ctx.recordings[name] for name in names}
        results, section = _group_similarity(ctx, words, recordings, measures=measures, reference=reference,
                                             n_stimuli=n_stimuli, n_bootstrap=n_bootstrap,
                                             max_rdm_panels=max_rdm_panels, titled=len(groups) > 1)
        by_stimuli[words] = results
        sections.append(section)
        for key in ("cka", "rdm_similarity", "mds", "ranking"):
            if results.get(key) is not None:
                frames.setdefault(key, []).append(results[key].to_frame().assign(stimuli=words))
        if results.get("best_pairs") is not None:
            frames.setdefault("pairs", []).append(results["best_pairs"].assign(stimuli=words))
    ctx.results["similarity"] = next(iter(by_stimuli.values()))
    ctx.results["similarity_by_stimuli"] = by_stimuli
    for key, table in (("cka", "similarity-cka"), ("rdm_similarity", "similarity-rdm"), ("mds", "similarity-mds"),
                       ("ranking", "similarity-ranking"), ("pairs", "similarity-best-pairs")):
        if key in frames:
            ctx.add_table(table, pd.concat(frames[key], ignore_index=True))
    return sections


def _group_similarity(ctx: StudyContext, words: str, recordings: Mapping[str, Any], *, measures: Sequence[str],
                      reference: str | os.PathLike, n_stimuli: int, n_bootstrap: int, max_rdm_panels: int,
                      titled: bool) -> tuple[dict[str, Any], Section]:
    """The measures over one group of recordings of the same stimuli, and its section."""
    labels_all = np.asarray(next(iter(recordings.values())).labels)
    index = stimulus_subsample(labels_all, n_stimuli, ctx.seed)
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
    if not kept:
        raise ValueError(f"no recorded layer of {', '.join(recordings)} varies over the stimuli {words}")
    results: dict[str, Any] = {"rdms": rdms if "rdm" in measures else {}}
    if "cka" in measures:
        results["cka"] = cka_matrix(kept, progress=False)
        if len(kept) > 1:
            results["best_pairs"] = best_layer_pairs(results["cka"])
    if "rdm" in measures:
        results["rdm_similarity"] = rdm_similarity_matrix(rdms, "pearson", progress=False)
        results["mds"] = rdm_mds(results["rdm_similarity"], seed=ctx.seed) if len(rdms) > 2 else None
        reference_rdm = None
        if not (titled and _fits_other_stimuli(reference, len(labels_all))):
            reference_rdm = _reference_rdm(reference, labels_all, index, descriptors)
        if reference_rdm is not None:
            results["ranking"] = rank_layers(reference_rdm, rdms, RANKING_METHOD, n_bootstrap=n_bootstrap,
                                             seed=ctx.seed, progress=False)
            results["ranking"].ceiling = _reference_ceiling(reference, index)
    first_run = next(iter(kept))
    shown = {name: r for name, r in results["rdms"].items() if name.startswith(first_run + "/")}
    shown = dict(list(shown.items())[:max_rdm_panels])
    intro = (
        f"{len(index)} stimuli of {words or 'the study'} (class-balanced subsample, seed {ctx.seed}); "
        f"{sum(len(v) for v in kept.values())} layers from {len(kept)} models."
        + (f" Correlation-distance RDMs; the panels show {first_run!r}." if "rdm" in measures and shown else "")
        + (f" The reference is {_reference_words(reference)}, compared with rho-a." if "ranking" in results else "")
        + (f" Skipped (a stimulus with a constant pattern, correlation distance undefined): {', '.join(skipped)}."
           if skipped else "")
    )
    title = f"Representational similarity · {words}" if titled and words else "Representational similarity"
    section = similarity_section(rdms=shown or None, cka=results.get("cka"),
                                 rdm_similarity=results.get("rdm_similarity"), mds=results.get("mds"),
                                 ranking=results.get("ranking"), intro=intro, title=title, models=list(ctx.recordings))
    return results, section


def best_layer_pairs(cka: Any) -> pd.DataFrame:
    """For every ordered pair of models of a similarity matrix: their most alike pair of layers.

    Returns
    -------
    pandas.DataFrame
        One row per (model, other): ``model``, ``other``, ``layer`` (of model), ``other_layer``, ``value``
        (the largest entry of the matrix between the two models' layers), ``measure``.
    """
    values, models, layers = np.asarray(cka.values), np.asarray(cka.models), np.asarray(cka.layers)
    names = list(dict.fromkeys(cka.models))
    rows = []
    for model in names:
        mine = np.flatnonzero(models == model)
        for other in names:
            if other == model:
                continue
            theirs = np.flatnonzero(models == other)
            block = values[np.ix_(mine, theirs)]
            i, j = np.unravel_index(np.argmax(block), block.shape)
            rows.append({"model": model, "other": other, "layer": layers[mine[i]], "other_layer": layers[theirs[j]],
                         "value": float(block[i, j]), "measure": cka.measure})
    return pd.DataFrame(rows, columns=["model", "other", "layer", "other_layer", "value", "measure"])


def _fits_other_stimuli(reference: str | os.PathLike, n: int) -> bool:
    """A reference RDM file over another number of stimuli (it belongs to another group of models)."""
    if str(reference) in ("labels", "none"):
        return False
    return np.load(Path(reference), mmap_mode="r", allow_pickle=False).shape[-1] != n


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
    if matrix.shape[-2:] != (n, n) or matrix.ndim not in (2, 3) or (matrix.ndim == 3 and len(matrix) < 2):
        raise ValueError(f"the reference RDM in {reference} has shape {matrix.shape}; the study has {n} stimuli, so it "
                         f"must be ({n}, {n}), or (k, {n}, {n}) for k >= 2 subjects or repetitions, rows in the order "
                         "of the study's stimuli")
    if not np.isfinite(matrix).all():
        raise ValueError(f"the reference RDM in {reference} holds NaN or inf values")
    if matrix.ndim == 3:  # several subjects: the reference is their pooled RDM, as the ranking's method pools it
        subjects = matrix[:, index][:, :, index]
        return RDM.from_condensed(pool_rdms(subjects, RANKING_METHOD), "reference (pooled)", descriptors,
                                  name=Path(reference).stem)
    return RDM(matrix[np.ix_(index, index)], "reference", descriptors, name=Path(reference).stem)


def _reference_ceiling(reference: str | os.PathLike, index: np.ndarray) -> Any:
    """The noise ceiling of a reference file holding several subjects' RDMs, or None."""
    if str(reference) in ("labels", "none"):
        return None
    matrix = np.load(Path(reference), mmap_mode="r", allow_pickle=False)
    if matrix.ndim != 3:
        return None
    return noise_ceiling(np.asarray(matrix[:, index][:, :, index]), RANKING_METHOD)


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
