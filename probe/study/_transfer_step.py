"""The transfer analyses: linear probes on every recorded layer, label efficiency against raw pixels,
and (an analysis that trains models) the MAE's mask-ratio sweep."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd

import probe
from analyses import label_efficiency, probe_layers
from probe.study._context import StudyContext, stimulus_pixels
from probe.study._transfer_experiments import mask_ratio_sweep
from reports import Section, transfer_section

__all__ = ["mask_ratio_analysis", "transfer_analysis"]

# Raw pixels join the probes and the label-efficiency curves as a baseline up to this many values per stimulus.
MAX_PIXELS = 16384
PIXELS = "raw pixels"


def _stratified_halves(labels: np.ndarray, seed: int, train_fraction: float = 0.6) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of a stratified (train, test) split of one set of stimuli."""
    rng = np.random.default_rng(seed)
    train_rows = []
    for label in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == label))
        train_rows.append(rows[: max(1, int(round(train_fraction * len(rows))))])
    train_rows = np.sort(np.concatenate(train_rows))
    return train_rows, np.setdiff1d(np.arange(len(labels)), train_rows)


def _split_recording(recording: Any, rows: np.ndarray) -> probe.Recording:
    return probe.Recording({layer: np.asarray(recording[layer])[rows] for layer in recording.layers},
                           labels=np.asarray(recording.labels)[rows], shapes=recording.shapes)


def _feature_layers(ctx: StudyContext, names: list[str], features: str | Sequence[str]) -> dict[str, str]:
    """Model -> the layer its label-efficiency curve reads: its last recorded layer, or the named ones."""
    if features == "last":
        return {name: ctx.recordings[name].layers[-1] for name in names}
    chosen = {}
    for feature in features:
        model = max((n for n in ctx.recordings if feature.startswith(n + "/")), key=len, default=None)
        if model in names:
            layer = feature[len(model) + 1:]
            if layer not in ctx.recordings[model].layers:
                raise KeyError(f"the transfer analysis's feature {feature!r} is not a recorded layer of {model!r}; "
                               f"recorded: {', '.join(ctx.recordings[model].layers)}")
            chosen[model] = layer
    return chosen


def transfer_analysis(
    ctx: StudyContext,
    *,
    labels_per_class: Sequence[int] = (1, 10, 100),
    test_fraction: float = 0.4,
    seeds: Sequence[int] = (0,),
    C: float = 1.0,
    max_iter: int = 300,
    models: str | Sequence[str] = "all",
    features: str | Sequence[str] = "last",
) -> list[Section]:
    """Linear probes on every recorded layer of the models, and label-efficiency curves of one layer per
    model against raw pixels: one section per group of models recorded on the same stimuli.

    Each group's stimuli are split once, stratified by class and seeded with ``ctx.seed``:
    ``test_fraction`` of each class scores the probes, the rest trains them. Budgets larger than the
    smallest class's training share are left out (and named).

    Parameters
    ----------
    labels_per_class, seeds
        The label-efficiency curves' budgets and the seeds of their draws of labelled examples.
    test_fraction
        Share of each class held out to score the probes.
    C, max_iter
        The logistic probes' inverse L2 strength and iterations (one fixed C: no cross-validation).
    models
        ``"all"`` or the models whose every layer is probed.
    features
        ``"last"`` (each model's last recorded layer) or ``MODEL/LAYER`` names: the layers of the
        label-efficiency curves (a model of ``features`` joins them even when ``models`` leaves it out).

    Tables: ``transfer-layers`` and ``transfer-label-efficiency`` (with a ``stimuli`` column).
    """
    wanted = set(ctx.recordings) if models == "all" else set(models)
    if features != "last":  # the models of named features join the curves
        wanted |= {n for n in ctx.recordings if any(f.startswith(n + "/") for f in features)}
    groups = {words: [n for n in names if n in wanted] for words, names in ctx.stimulus_groups().items()}
    groups = {words: names for words, names in groups.items() if names}
    sections, by_stimuli, layer_frames, efficiency_frames, problems = [], {}, [], [], []
    for words, names in groups.items():
        labels = np.asarray(ctx.recordings[names[0]].labels)
        if (labels < 0).any() or len(np.unique(labels)) < 2:
            problems.append(f"{words or 'the stimuli'} have no labels (two classes or more)")
            continue
        probed = [n for n in names if models == "all" or n in models]
        result, section = _group_transfer(
            ctx, words, labels, probed, _feature_layers(ctx, probed if features == "last" else names, features),
            labels_per_class=labels_per_class,
            test_fraction=test_fraction, seeds=seeds, C=C, max_iter=max_iter, titled=len(groups) > 1)
        by_stimuli[words] = result
        sections.append(section)
        if result["layers"] is not None:
            layer_frames.append(result["layers"].to_frame().assign(stimuli=words))
        if result["label_efficiency"] is not None:
            efficiency_frames.append(result["label_efficiency"].to_frame().assign(stimuli=words))
    if not sections:
        raise ValueError(f"the transfer analysis needs stimuli labelled with two classes or more; "
                         f"{'; '.join(problems)} (leave the transfer analysis out)")
    ctx.results["transfer"] = next(iter(by_stimuli.values()))
    ctx.results["transfer_by_stimuli"] = by_stimuli
    if layer_frames:
        ctx.add_table("transfer-layers", pd.concat(layer_frames, ignore_index=True))
    if efficiency_frames:
        ctx.add_table("transfer-label-efficiency", pd.concat(efficiency_frames, ignore_index=True))
    return sections


def _group_transfer(ctx: StudyContext, words: str, labels: np.ndarray, probed: list[str], feature_layers: dict[str, str],
                    *, labels_per_class: Sequence[int], test_fraction: float, seeds: Sequence[int], C: float,
                    max_iter: int, titled: bool) -> tuple[dict[str, Any], Section]:
    """Layer probes and label-efficiency curves over one group of recordings of the same stimuli."""
    train_rows, test_rows = _stratified_halves(labels, ctx.seed, train_fraction=1.0 - test_fraction)
    probe_options = dict(C=C, max_iter=max_iter, device=ctx.device, progress=False)  # scikit-learn's tolerance
    first_stimuli = ctx.stimuli.get(next(iter(feature_layers), probed[0] if probed else ""), None)
    first_stimuli = getattr(first_stimuli, "base", first_stimuli)  # as loaded, before a model's resizing
    pixels = None
    if first_stimuli is not None and np.asarray(first_stimuli[0][0]).size <= MAX_PIXELS:
        pixels = stimulus_pixels(first_stimuli)
    layer_transfer = None
    if probed:
        pairs = {name: (_split_recording(ctx.recordings[name], train_rows),
                        _split_recording(ctx.recordings[name], test_rows)) for name in probed}
        if pixels is not None:  # the baseline every layer is read against, probed the same way
            as_recording = probe.Recording({"pixels": pixels}, labels=labels)
            pairs = {PIXELS: (_split_recording(as_recording, train_rows), _split_recording(as_recording, test_rows)),
                     **pairs}
        layer_transfer = probe_layers(pairs, **probe_options)

    smallest = int(np.unique(labels[train_rows], return_counts=True)[1].min()) if len(train_rows) else 0
    budgets = [b for b in labels_per_class if b <= smallest]
    dropped = [b for b in labels_per_class if b > smallest]
    feature_sets = {}
    if pixels is not None and feature_layers:
        feature_sets[PIXELS] = (pixels[train_rows], pixels[test_rows])
    for name, layer in feature_layers.items():
        features = np.asarray(ctx.recordings[name][layer])
        feature_sets[f"{name} · {layer}"] = (features[train_rows], features[test_rows])
    efficiency = None
    if budgets and feature_sets:
        efficiency = label_efficiency(feature_sets, labels_per_class=budgets, seeds=tuple(seeds),
                                      y_train=labels[train_rows], y_test=labels[test_rows], **probe_options)
    notes = (f"Stimuli: {words or 'the study'}. Probes trained on {len(train_rows)} stimuli and scored on "
             f"{len(test_rows)} (a split stratified by class, seed {ctx.seed}); C = {C:g} for every probe.")
    if dropped:
        notes += (f" Left out of the label-efficiency curves: {', '.join(map(str, dropped))} labels per class (the "
                  f"smallest class has {smallest} training stimuli).")
    if pixels is None:
        notes += f" Raw pixels are left out of the curves (more than {MAX_PIXELS} values per stimulus)."
    title = "Transfer: linear probes on frozen features" + (f" · {words}" if titled and words else "")
    result = dict(layers=layer_transfer, label_efficiency=efficiency)
    return result, transfer_section(layer_transfer, efficiency, None, notes=notes, title=title,
                                    models=list(ctx.recordings))


def mask_ratio_analysis(
    ctx: StudyContext, *, ratios: Sequence[float] = (0.25, 0.5, 0.75, 0.9), epochs: int = 3, dataset: str = "digits",
    seeds: Sequence[int] = (0,),
) -> list[Section]:
    """Train one MAE per mask ratio and seed on ``dataset`` (runs in ``ctx.out / "mask-ratio"``; finished ones
    are reused) and probe each frozen encoder on its test split (``probe.study.mask_ratio_sweep``).

    The table ``mask-ratio`` holds one row per ratio and seed.
    """
    sweep = mask_ratio_sweep(tuple(ratios), dataset=dataset, epochs=epochs, out=ctx.out / "mask-ratio", seeds=seeds,
                             device=ctx.device, progress=ctx.progress)
    ctx.results["mask_ratio"] = sweep
    ctx.add_table("mask-ratio", sweep.to_frame())
    n_seeds = len(set(seeds))
    notes = (f"One MAE per mask ratio{' and seed' if n_seeds > 1 else ''}, {epochs} epochs each on {dataset}"
             f"{f' ({n_seeds} seeds)' if n_seeds > 1 else ''}; each frozen encoder is probed with a linear probe "
             "(C chosen by cross-validation) and a cosine kNN.")
    return [transfer_section(None, None, sweep, notes=notes + _untrained_caveat(sweep, epochs),
                             title="Transfer: MAE mask ratio")]


def _untrained_caveat(sweep: Any, epochs: int) -> str:
    """A caveat when some MAEs reconstruct no better than the mean image: their probe scores then say
    little about the mask ratio."""
    frame = sweep.summary()
    if "run_recon_ratio_mean" not in frame:
        return ""
    poor = frame[frame["run_recon_ratio_mean"] >= 1]
    if not len(poor):
        return ""
    return (f" Caveat: the MAEs at ratios {', '.join(f'{r:g}' for r in poor['mask_ratio'])} reconstruct no better than "
            f"the mean image (mean error ratio ≥ 1 after {epochs} epochs): their encoders have barely learned the task, so "
            "their probe accuracies do not rank the ratios. On Fashion-MNIST at 28x28 the MAE learns: benchmarks/mae_bars.py "
            "runs the sweep there with seeds.")
