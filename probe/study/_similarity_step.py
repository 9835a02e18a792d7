"""The demo's similarity step: RDMs, CKA and RDM maps across the zoo's layers, second-order MDS.

It uses the recordings of the digits test stimuli made by the recording step
(``ctx.recordings``); without them it records the digits-trained models itself. Stimuli are
subsampled (class-balanced, fixed seed) to keep the step fast. As a stand-in for a neural
reference RDM it uses the category RDM (0 within a digit class, 1 between classes), so the layer
ranking shows where class structure emerges.
"""

from __future__ import annotations

from typing import Any

import numpy as np

import probe
from analyses import RDM, cka_matrix, rank_layers, rdm, rdm_mds, rdm_similarity_matrix
from probe.study._context import DemoContext
from reports import Section, similarity_section

__all__ = ["similarity_step"]

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


def _record_digits_models(ctx: DemoContext) -> dict[str, Any]:
    dataset = ctx.dataset("digits")
    shape = list(dataset.info.image_shape)
    recordings = {}
    for run, model in ctx.models.items():
        if list(getattr(model, "config", {}).get("input_shape", [])) == shape and hasattr(model, "recordable_layers"):
            recordings[run] = probe.record(model, dataset, model.recordable_layers(), device=ctx.device, progress=False)
    return recordings


def _digits_recordings(ctx: DemoContext) -> dict[str, Any]:
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


def similarity_step(ctx: DemoContext) -> list[Section]:
    """Compute the similarity analyses on the recorded zoo and return the report section."""
    recordings = _digits_recordings(ctx)
    labels = np.asarray(next(iter(recordings.values())).labels)
    index = _balanced_subsample(labels, N_STIMULI[ctx.quick], ctx.seed)
    labels = labels[index]
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
    kept = {name.split("/", 1)[0]: {} for name in rdms}
    for name in rdms:
        run, layer = name.split("/", 1)
        kept[run][layer] = representations[run][layer]
    cka = cka_matrix(kept, progress=False)
    rdm_similarity = rdm_similarity_matrix(rdms, "pearson", progress=False)
    mds = rdm_mds(rdm_similarity, seed=ctx.seed)
    category = RDM((labels[:, None] != labels[None, :]).astype(float), "category (0 same digit, 1 different)",
                   descriptors, name="digit category")
    ranking = rank_layers(category, rdms, "rho-a", n_bootstrap=N_BOOTSTRAP[ctx.quick], seed=ctx.seed, progress=False)
    ctx.results["similarity"] = {"rdms": rdms, "cka": cka, "rdm_similarity": rdm_similarity, "mds": mds,
                                 "ranking": ranking}
    first_run = next(iter(kept))
    shown = {name: r for name, r in rdms.items() if name.startswith(first_run + "/")}
    shown = dict(list(shown.items())[: MAX_RDM_PANELS[ctx.quick]])
    intro = (
        f"{len(index)} digits test stimuli (class-balanced subsample, seed {ctx.seed}); correlation-distance RDMs "
        f"of {sum(len(v) for v in kept.values())} layers from {len(kept)} models. The RDM panels show "
        f"{first_run!r}; the reference is the category RDM, compared with rho-a (defined for its tied values)."
        + (f" Skipped (a stimulus with a constant pattern, correlation distance undefined): {', '.join(skipped)}."
           if skipped else "")
    )
    return [similarity_section(rdms=shown, cka=cka, rdm_similarity=rdm_similarity, mds=mds, ranking=ranking,
                               intro=intro)]


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
