"""The measures analysis: every similarity measure on the same layers, where the measures disagree, and,
when the study holds several seeds of one architecture, layer identification and the seed-to-seed ceiling.

Each group of models recorded on the same stimuli gets one section. Stimuli are subsampled
(class-balanced, fixed seed), and each layer is reduced to its top principal components (``components``)
before any measure, so that every measure, the CCA family included, is defined on every layer and all
maps compare the same representations.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from analyses import MEASURES, get_measure, layer_identification_from_maps, measure_disagreement, measure_matrices
from probe.study._context import StudyContext
from probe.study._findings import Finding
from probe.study._similarity_step import stimulus_subsample
from reports import Section, measures_section

__all__ = ["ceiling_scores", "measures_analysis", "measures_findings", "top_components"]


def top_components(X: np.ndarray, components: int) -> tuple[np.ndarray, float]:
    """The stimuli's coordinates on the layer's top principal components (centred), and the share of
    the variance they keep; a layer with no more units than ``components`` is only centred."""
    X = torch.as_tensor(np.asarray(X).reshape(len(X), -1), dtype=torch.float64)
    X = X - X.mean(dim=0)
    if components <= 0 or X.shape[1] <= components:
        return X.numpy(), 1.0
    U, S, _ = torch.linalg.svd(X, full_matrices=False)
    kept = min(components, len(S))
    total = float((S**2).sum())
    share = float((S[:kept] ** 2).sum()) / total if total > 0 else 1.0
    return (U[:, :kept] * S[:kept]).numpy(), share


def ceiling_scores(maps: Any, measure: str, seed_models: Sequence[str]) -> pd.DataFrame:
    """For every layer of the first seed model and every model that is not a seed: the measure between the
    layer and its most alike layer of that model (``layer``, ``other``, ``other_layer``, ``value``)."""
    matrix = maps.maps[measure]
    spec = maps.measures[measure]
    closeness = spec.closeness(matrix.values)
    models = np.asarray(matrix.models, dtype=object)
    rows = []
    first = np.flatnonzero(models == seed_models[0])
    for other in dict.fromkeys(matrix.models):
        if other in seed_models:
            continue
        theirs = np.flatnonzero(models == other)
        for i in first:
            j = theirs[int(np.argmax(closeness[i, theirs]))]
            rows.append({"layer": matrix.layers[i], "other": other, "other_layer": matrix.layers[j],
                         "value": float(matrix.values[i, j])})
    return pd.DataFrame(rows, columns=["layer", "other", "other_layer", "value"])


def measures_analysis(
    ctx: StudyContext,
    *,
    measures: Sequence[str] | str = "all",
    n_stimuli: int = 300,
    components: int = 64,
    models: str | Sequence[str] = "all",
    seed_models: str | Sequence[str] = "none",
    ceiling_measure: str = "linear-cka",
) -> list[Section]:
    """Every measure's layer x layer map, their disagreement and, with seed models, layer identification.

    Parameters
    ----------
    ctx
        The study. Its results get ``"measures"`` (of the first group: ``maps``, ``disagreement``,
        ``identification``, ``ceiling_scores``, ``variance_kept``) and ``"measures_by_stimuli"``; its
        tables ``measures-maps``, ``measures-agreement``, ``measures-conclusions``,
        ``measures-identification`` and ``measures-ceiling``.
    measures
        ``"all"`` or names from ``analyses.list_measures()``.
    n_stimuli
        Class-balanced subsample (seeded with ``ctx.seed``).
    components
        Each layer is reduced to this many top principal components first (0: no reduction).
    models
        ``"all"`` or the models compared.
    seed_models
        ``"none"`` or models that are seeds of one architecture (the same layers): they give layer identification and the
        seed-to-seed ceiling against which every other model's score is drawn.
    ceiling_measure
        The measure of the ceiling figure.
    """
    names = list(MEASURES) if measures == "all" else list(measures)
    ceiling_measure = get_measure(ceiling_measure).name  # as the maps name it (rbf-cka-0.40 -> rbf-cka-0.4)
    seed_models = [] if seed_models == "none" else list(seed_models)
    groups = ctx.stimulus_groups(models)
    if not groups:
        raise KeyError("the measures analysis needs recordings; record the models first")
    missing = [m for m in seed_models if m not in ctx.recordings]
    if missing:
        raise ValueError(f"seed_models {missing} are not recorded models of the study; recorded: "
                         f"{', '.join(ctx.recordings)}")
    sections, by_stimuli, frames = [], {}, {}
    for words, group in groups.items():
        results = _group_measures(ctx, group, names, n_stimuli, components,
                                  [m for m in seed_models if m in group], ceiling_measure)
        by_stimuli[words] = results
        for key, frame in _tables(results).items():
            frames.setdefault(key, []).append(frame.assign(stimuli=words))
        sections.append(_section(ctx, results, words, titled=len(groups) > 1, ceiling_measure=ceiling_measure))
    ctx.results["measures"] = next(iter(by_stimuli.values()))
    ctx.results["measures_by_stimuli"] = by_stimuli
    for key, parts in frames.items():
        ctx.add_table(key, pd.concat(parts, ignore_index=True))
    return sections


def _group_measures(ctx: StudyContext, group: list[str], names: list[str], n_stimuli: int, components: int,
                    seeds: list[str], ceiling_measure: str) -> dict[str, Any]:
    recordings = {name: ctx.recordings[name] for name in group}
    index = stimulus_subsample(np.asarray(next(iter(recordings.values())).labels), n_stimuli, ctx.seed)
    # CCA and whitening need the two layers' dimensions together below the stimulus count
    components = min(components, (len(index) - 1) // 2) if components > 0 else 0
    representations, shares = {}, []
    for run, recording in recordings.items():
        layers = {}
        for layer in recording.layers:
            X = np.asarray(recording[layer])[index]
            if np.ptp(X.reshape(len(X), -1), axis=0).max() == 0:
                continue  # constant over the stimuli: no geometry to compare
            layers[layer], share = top_components(X, components)
            if share < 1.0:
                shares.append(share)
        if layers:
            representations[run] = layers
    if not representations:
        raise ValueError(f"no recorded layer of {', '.join(group)} varies over the chosen stimuli")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # skipped measures are listed in the section with their reason
        maps = measure_matrices(representations, names, on_undefined="drop", progress=False)
        results: dict[str, Any] = {"maps": maps, "n_stimuli": len(index), "components": components,
                                   "n_reduced": len(shares), "variance_kept": float(np.mean(shares)) if shares else 1.0}
        if len(maps) >= 2 and len(maps.names) >= 3:
            results["disagreement"] = measure_disagreement(maps)
        seeds = [s for s in seeds if s in representations]
        if len(seeds) >= 2:
            kept = set(maps.names)
            common = [layer for layer in representations[seeds[0]]
                      if all(layer in representations[s] and f"{s}/{layer}" in kept for s in seeds)]
            results["identification"] = layer_identification_from_maps(maps, seeds, common)
            if ceiling_measure in maps.maps and len(representations) > len(seeds):
                results["ceiling_scores"] = ceiling_scores(maps, ceiling_measure, seeds)
    return results


def _tables(results: dict[str, Any]) -> dict[str, pd.DataFrame]:
    tables = {"measures-maps": results["maps"].to_frame()}
    if "disagreement" in results:
        tables["measures-agreement"] = results["disagreement"].to_frame()
        tables["measures-conclusions"] = results["disagreement"].conclusions
    if "identification" in results:
        tables["measures-identification"] = results["identification"].to_frame()
        tables["measures-ceiling"] = results["identification"].ceiling.to_frame()
    return tables


def _section(ctx: StudyContext, results: dict[str, Any], words: str, *, titled: bool, ceiling_measure: str
             ) -> Section:
    maps = results["maps"]
    components = results["components"]
    reduction = (f" The {results['n_reduced']} layers wider than {components} units are reduced to their top "
                 f"{components} principal components first (keeping on average {100 * results['variance_kept']:.0f} % "
                 "of their variance; at most half the stimuli, so that CCA and whitening are defined on every pair)."
                 if results["n_reduced"] else "")
    if maps.dropped:
        reduction += " Left out, as some measure is undefined on them: " + "; ".join(
            f"{name} ({reason})" for name, reason in maps.dropped.items()) + "."
    intro = (f"{results['n_stimuli']} stimuli of {words or 'the study'} (class-balanced subsample, seed {ctx.seed}); "
             f"{len(maps.names)} layers; {len(maps)} measures.{reduction}")
    identification = results.get("identification")
    if identification is not None:
        intro += f" Seeds of one architecture: {', '.join(identification.seeds)}."
    title = f"Similarity measures · {words}" if titled and words else "Similarity measures"
    return measures_section(maps, disagreement=results.get("disagreement"), identification=identification,
                            ceiling_scores=results.get("ceiling_scores"), ceiling_measure=ceiling_measure,
                            title=title, intro=intro, models=list(ctx.recordings))


def measures_findings(ctx: StudyContext) -> list[Finding]:
    """How many conclusions change with the measure, which measures agree least, and which identify layers
    across seeds best."""
    findings = []
    for words, results in (ctx.results.get("measures_by_stimuli") or {}).items():
        disagreement = results.get("disagreement")
        if disagreement is not None:
            agreement = disagreement.agreement.to_numpy().copy()
            np.fill_diagonal(agreement, np.inf)
            a, b = np.unravel_index(np.argmin(agreement), agreement.shape)
            labels = [disagreement.labels[m] for m in disagreement.measures]
            conclusions = disagreement.conclusions
            unanimous = int((~conclusions["changes"]).sum())
            most = int((conclusions["agreement"] >= 0.75).sum())
            findings.append(Finding(
                "Measures", f"Of {len(conclusions)} conclusions about which layer of one model is most alike a layer "
                f"of another, {unanimous} hold for all {len(labels)} measures and {most} for at least three quarters "
                f"of them; {labels[a]} and {labels[b]} agree least (Spearman {agreement[a, b]:.2f} between their "
                "maps).", "measures", words, value=float(most)))
        identification = results.get("identification")
        if identification is not None and len(identification.accuracy):
            best = identification.accuracy.iloc[0]
            worst = identification.accuracy.iloc[-1]
            findings.append(Finding(
                "Layer identification", f"Across {len(identification.seeds)} seeds, {best['label']} finds the same "
                f"layer {100 * best['accuracy']:.0f} % of the time, {worst['label']} {100 * worst['accuracy']:.0f} %.",
                "measures", words, value=float(best["accuracy"])))
    return findings
