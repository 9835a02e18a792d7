"""The demo's transfer step: probes per layer, label efficiency vs raw pixels, MAE mask ratio."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

import probe
from analyses import label_efficiency, probe_layers
from probe.study._context import StudyContext
from probe.study._transfer_experiments import encode_features, mask_ratio_sweep
from reports import Section, transfer_section

__all__ = ["transfer_analysis", "transfer_step"]

LAYER_RUNS = {True: ("cnn",), False: ("cnn", "simclr", "mae")}  # by ctx.quick
ENCODER_RUNS = {True: ("simclr",), False: ("simclr", "mae", "cnn")}
BUDGETS = {True: (1, 10, None), False: (1, 5, 10, 50, None)}
SEEDS = {True: (0,), False: (0, 1, 2)}
MASK_RATIOS = (0.25, 0.5, 0.75, 0.9)
MASK_EPOCHS = 3  # illustrative only: benchmarks/transfer_bars.py trains the sweep properly


def _digits_models(ctx: StudyContext) -> dict[str, Any]:
    shape = list(ctx.dataset("digits", "train").info.image_shape)
    return {run: model for run, model in ctx.models.items()
            if list(getattr(model, "config", {}).get("input_shape", [])) == shape}


def _stratified_halves(labels: np.ndarray, seed: int, train_fraction: float = 0.6) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of a stratified (train, test) split of one set of stimuli."""
    rng = np.random.default_rng(seed)
    train_rows = []
    for label in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == label))
        train_rows.append(rows[: max(1, int(round(train_fraction * len(rows))))])
    train_rows = np.sort(np.concatenate(train_rows))
    return train_rows, np.setdiff1d(np.arange(len(labels)), train_rows)


def _recording_pair(ctx: StudyContext, run: str, model: Any) -> tuple[Any, Any]:
    """(train recording, test recording) of a digits model.

    The full demo records the train split (reusing the recording step's test recording); quick
    mode splits the test stimuli instead (stratified, seeded), which needs one small recording.
    """
    test_set = ctx.dataset("digits", "test")
    test = ctx.recordings.get(run)
    if test is None or len(test.labels) != len(test_set):
        test = probe.record(model, test_set, model.recordable_layers(), device=ctx.device, progress=False)
    if ctx.quick:
        train_rows, test_rows = _stratified_halves(np.asarray(test.labels), ctx.seed)
        return tuple(
            probe.Recording({layer: np.asarray(test[layer])[rows] for layer in test.layers}, labels=test.labels[rows])
            for rows in (train_rows, test_rows)
        )
    train = probe.record(model, ctx.dataset("digits", "train"), list(test.layers), device=ctx.device, progress=False)
    return train, test


def _pixels(dataset: Any) -> tuple[np.ndarray, np.ndarray]:
    images = [dataset[i] for i in range(len(dataset))]
    return (np.stack([np.asarray(x, dtype=np.float64).ravel() for x, _ in images]),
            np.array([int(y) for _, y in images]))


def transfer_step(ctx: StudyContext) -> list[Section]:
    """Probe every layer of the digits models, label-efficiency curves, and (full mode) the MAE sweep."""
    models = _digits_models(ctx)
    # The demo fixes C (one fit per probe) to stay within about a minute on 2 CPU cores;
    # analyses.linear_probe chooses C by cross-validation when it is not given.
    probe_options = dict(C=1.0, max_iter=300, device=ctx.device, progress=False, tol=1e-5)
    layer_runs = [run for run in LAYER_RUNS[ctx.quick] if run in models]
    layer_transfer = None
    if layer_runs:
        pairs = {run: _recording_pair(ctx, run, models[run]) for run in layer_runs}
        layer_transfer = probe_layers(pairs, **probe_options)

    train_set, test_set = ctx.dataset("digits", "train"), ctx.dataset("digits", "test")
    if ctx.quick:  # split the test stimuli, as for the layer probes
        pixels, labels = _pixels(test_set)
        train_rows, test_rows = _stratified_halves(labels, ctx.seed)
        feature_sets = {"raw pixels": ((pixels[train_rows], labels[train_rows]), (pixels[test_rows], labels[test_rows]))}
    else:
        feature_sets = {"raw pixels": (_pixels(train_set), _pixels(test_set))}
    for run in ENCODER_RUNS[ctx.quick]:
        if run in models:
            if ctx.quick:
                features, labels = encode_features(models[run], test_set)
                feature_sets[f"{run} encoder"] = ((features[train_rows], labels[train_rows]),
                                                  (features[test_rows], labels[test_rows]))
            else:
                feature_sets[f"{run} encoder"] = (encode_features(models[run], train_set),
                                                  encode_features(models[run], test_set))
    arrays = {name: (train[0], test[0]) for name, (train, test) in feature_sets.items()}
    labels_train = feature_sets["raw pixels"][0][1]
    labels_test = feature_sets["raw pixels"][1][1]
    efficiency = label_efficiency(arrays, labels_per_class=BUDGETS[ctx.quick], seeds=SEEDS[ctx.quick],
                                  y_train=labels_train, y_test=labels_test, **probe_options)

    sweep = None
    if not ctx.quick:
        sweep = mask_ratio_sweep(MASK_RATIOS, dataset="digits", epochs=MASK_EPOCHS, out=ctx.out / "mask-ratio",
                                 seed=ctx.seed, device=ctx.device, progress=False)
    ctx.results["transfer"] = dict(layers=layer_transfer, label_efficiency=efficiency, mask_ratio=sweep)
    notes = ("Digits, quick mode: probes trained on 60 % of the test split, scored on the other 40 %; "
             if ctx.quick else
             f"Digits: probes trained on the train split ({len(train_set)} stimuli), scored on the test split "
             f"({len(test_set)}); ")
    notes += "C = 1 for every probe (linear_probe cross-validates C when it is not given)."
    if sweep is not None:
        notes += f" Mask-ratio sweep: one MAE per ratio, {MASK_EPOCHS} epochs each."
    return [transfer_section(layer_transfer, efficiency, sweep, notes=notes)]


# Raw pixels join the label-efficiency curves as a baseline up to this many values per stimulus.
MAX_PIXELS = 16384


def _split_recording(recording: Any, rows: np.ndarray) -> probe.Recording:
    return probe.Recording({layer: np.asarray(recording[layer])[rows] for layer in recording.layers},
                           labels=np.asarray(recording.labels)[rows], shapes=recording.shapes)


def transfer_analysis(
    ctx: StudyContext,
    *,
    labels_per_class: Sequence[int] = (1, 10, 100),
    test_fraction: float = 0.4,
    seeds: Sequence[int] = (0,),
    C: float = 1.0,
    max_iter: int = 300,
) -> list[Section]:
    """Linear probes on every recorded layer of every model, and label-efficiency curves of each
    model's last recorded layer against raw pixels.

    The stimuli are split once, stratified by class and seeded with ``ctx.seed``: ``test_fraction``
    of each class scores the probes, the rest trains them. Budgets larger than the smallest class's
    training share are left out (and named). Tables: ``transfer-layers`` and
    ``transfer-label-efficiency``.
    """
    labels = None if ctx.labels is None else np.asarray(ctx.labels)
    if labels is None or (labels < 0).any() or len(np.unique(labels)) < 2:
        raise ValueError("the transfer analysis needs stimuli labelled with two classes or more; this dataset has no "
                         "labels (leave the transfer analysis out)")
    train_rows, test_rows = _stratified_halves(labels, ctx.seed, train_fraction=1.0 - test_fraction)
    probe_options = dict(C=C, max_iter=max_iter, device=ctx.device, progress=False, tol=1e-5)
    pairs = {name: (_split_recording(rec, train_rows), _split_recording(rec, test_rows))
             for name, rec in ctx.recordings.items()}
    layer_transfer = probe_layers(pairs, **probe_options)
    ctx.add_table("transfer-layers", layer_transfer.to_frame())

    smallest = int(np.unique(labels[train_rows], return_counts=True)[1].min()) if len(train_rows) else 0
    budgets = [b for b in labels_per_class if b <= smallest]
    dropped = [b for b in labels_per_class if b > smallest]
    last = {f"{name} · {rec.layers[-1]}": np.asarray(rec[rec.layers[-1]]) for name, rec in ctx.recordings.items()}
    feature_sets = {name: (features[train_rows], features[test_rows]) for name, features in last.items()}
    first_stimuli = next(iter(ctx.stimuli.values()), None)
    if first_stimuli is not None and np.asarray(first_stimuli[0][0]).size <= MAX_PIXELS:
        pixels, _ = _pixels(first_stimuli)
        feature_sets = {"raw pixels": (pixels[train_rows], pixels[test_rows]), **feature_sets}
    efficiency = None
    if budgets:
        efficiency = label_efficiency(feature_sets, labels_per_class=budgets, seeds=tuple(seeds),
                                      y_train=labels[train_rows], y_test=labels[test_rows], **probe_options)
        ctx.add_table("transfer-label-efficiency", efficiency.to_frame())
    ctx.results["transfer"] = dict(layers=layer_transfer, label_efficiency=efficiency)
    notes = (f"Probes trained on {len(train_rows)} stimuli and scored on {len(test_rows)} (a split stratified by "
             f"class, seed {ctx.seed}); C = {C} for every probe.")
    if dropped:
        notes += (f" Left out of the label-efficiency curves: {', '.join(map(str, dropped))} labels per class (the "
                  f"smallest class has {smallest} training stimuli).")
    if "raw pixels" not in feature_sets:
        notes += f" Raw pixels are left out of the curves (more than {MAX_PIXELS} values per stimulus)."
    return [transfer_section(layer_transfer, efficiency, None, notes=notes)]
