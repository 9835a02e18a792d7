"""What a study found, in sentences computed from its results: the report's first section.

Every finding is read off a result object of an analysis (never written by hand) and links to the
section that shows it: which layers of two models are most alike, which layer matches the reference
RDM best, where a linear read-out works best against raw pixels, which units are most class-selective,
whether the linear autoencoders find PCA's subspace, which MAE mask ratio probes best, how well word
vectors answer analogies and cluster word categories, and what an image-text model names zero-shot.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd

from probe.study._context import StudyContext, import_function
from probe.study._transfer_step import PIXELS

__all__ = ["Finding", "compute_findings", "findings_frame"]

# Units named in the findings: the most class-selective ones over every layer shown, per group of stimuli.
N_SELECTIVE_UNITS = 3
# A linear autoencoder whose largest principal angle to PCA's subspace is below this spans it.
SPANS_PCA_DEGREES = 1.0
# ... and one whose singular-vector alignment error is below this recovers PCA's ordered directions.
RECOVERS_DIRECTIONS = 0.05


@dataclass(frozen=True)
class Finding:
    """One sentence of the summary.

    Attributes
    ----------
    topic
        What it is about: ``"Similarity"``, ``"Reference RDM"``, ``"Transfer"``, ``"Label efficiency"``,
        ``"Units"``, ``"Subspaces"``, ``"Measures"``, ``"Layer identification"``, ``"Codes"``, ``"Colorization"``, ``"Mask ratio"``, ``"Fine-tuning"``,
        ``"Greedy pretraining"``, ``"Words"``, ``"Captions"``, ``"Masked LM ratio"``.
    text
        The sentence, with its numbers.
    analysis
        The analysis whose section shows it (a key of ``ANALYSIS_STEPS``).
    stimuli
        The stimuli (words of ``ctx.data_of``) of that section, "" when the analysis has one section.
    model
        The model it is about, "" when it is about several.
    value
        Its headline number (CKA, accuracy, selectivity, degrees...), or None.
    """

    topic: str
    text: str
    analysis: str
    stimuli: str = ""
    model: str = ""
    value: float | None = None


def findings_frame(findings: list[Finding]) -> pd.DataFrame:
    """The findings as a tidy table (the study writes it as ``results/findings.csv``)."""
    columns = ["topic", "model", "text", "value", "analysis", "stimuli"]
    return pd.DataFrame([{c: getattr(f, c) for c in columns} for f in findings], columns=columns)


def compute_findings(ctx: StudyContext) -> list[Finding]:
    """The findings of every analysis that ran (those that did not run add none)."""
    findings: list[Finding] = []
    for entry in _FINDERS:
        findings += _finder(entry, ctx)(ctx)
    return findings


# ----------------------------------------------------------------------------------------------
# similarity


def _similarity(ctx: StudyContext) -> list[Finding]:
    findings = []
    for words, results in (ctx.results.get("similarity_by_stimuli") or {}).items():
        pairs = results.get("best_pairs")
        if pairs is not None:
            findings += _most_alike(pairs, words)
        ranking = results.get("ranking")
        if ranking is not None and len(ranking.frame):
            best = ranking.frame.sort_values("score", ascending=False).iloc[0]
            findings.append(Finding(
                "Reference RDM", f"{best['model']} · {best['layer']} matches the reference RDM best of the "
                f"{len(ranking.frame)} layers ({ranking.method} {best['score']:.2f}).", "similarity", words,
                str(best["model"]), float(best["score"])))
    return findings


def _most_alike(best_pairs: pd.DataFrame, words: str) -> list[Finding]:
    """Per model: the other model with the most alike pair of layers (and that pair), and the least alike,
    from the similarity analysis's ``best_pairs`` table."""
    findings = []
    for model, pairs in best_pairs.groupby("model", sort=False):
        pairs = pairs.sort_values("value", ascending=False)
        best = pairs.iloc[0]
        text = (f"{model} is most like {best['other']}: {model} · {best['layer']} and {best['other']} · "
                f"{best['other_layer']} ({best['measure']} {best['value']:.2f})")
        if len(pairs) > 1:
            least = pairs.iloc[-1]
            text += f"; least like {least['other']} (its best pair: {least['value']:.2f})"
        findings.append(Finding("Similarity", text + ".", "similarity", words, str(model), float(best["value"])))
    return findings


# ----------------------------------------------------------------------------------------------
# transfer


def _transfer(ctx: StudyContext) -> list[Finding]:
    findings = []
    for words, results in (ctx.results.get("transfer_by_stimuli") or {}).items():
        layers = results.get("layers")
        if layers is not None:
            frame = layers.to_frame()
            pixels = frame[frame["model"] == PIXELS]
            baseline = f" (raw pixels: {pixels['accuracy'].iloc[0]:.2f})" if len(pixels) else ""
            for model, rows in frame[frame["model"] != PIXELS].groupby("model", sort=False):
                best = rows.sort_values("accuracy", ascending=False).iloc[0]
                findings.append(Finding(
                    "Transfer", f"{model}: a linear probe reads the labels best from {best['layer']}, accuracy "
                    f"{best['accuracy']:.2f}{baseline}.", "transfer", words, str(model), float(best["accuracy"])))
        efficiency = results.get("label_efficiency")
        if efficiency is not None:
            summary = efficiency.summary()
            for budget in sorted({summary["labels_per_class"].min(), summary["labels_per_class"].max()}):
                at = summary[summary["labels_per_class"] == budget].sort_values("accuracy_mean", ascending=False)
                ranked = "; ".join(f"{row.features} {row.accuracy_mean:.2f}" for row in at.itertuples())
                labels = "1 label" if budget == 1 else f"{budget:g} labels"
                findings.append(Finding(
                    "Label efficiency", f"With {labels} per class: {ranked}.", "transfer", words,
                    str(at.iloc[0]["features"]), float(at.iloc[0]["accuracy_mean"])))
    return findings


# ----------------------------------------------------------------------------------------------
# units


def _units(ctx: StudyContext) -> list[Finding]:
    """The most class-selective shown units of each group of stimuli (``N_SELECTIVE_UNITS`` per group)."""
    by_group: dict[str, list[tuple[float, str, str, int, str]]] = {}
    for card, patches in (ctx.results.get("units") or {}).items():
        selectivity = patches.selectivity
        if selectivity is None:
            continue
        model = max((name for name in ctx.models if card.startswith(f"{name} · ")), key=len, default="")
        units = patches.unit_names(np.arange(len(selectivity.index)))
        names = patches.class_names
        for row, index in enumerate(selectivity.index):
            preferred = int(selectivity.preferred_class[row])
            label = names[preferred] if names is not None and preferred < len(names) else str(preferred)
            by_group.setdefault(ctx.data_of.get(model, ""), []).append((float(index), card, model, int(units[row]), label))
    findings = []
    for words, rows in by_group.items():
        rows.sort(key=lambda r: -r[0])
        for index, card, model, unit, label in rows[:N_SELECTIVE_UNITS]:
            findings.append(Finding("Units", f"{card}, unit {unit}, prefers class {label!r} (class selectivity "
                                             f"{index:.2f}; 1 = responds to one class only).", "units", words, model,
                                    index))
    return findings


# ----------------------------------------------------------------------------------------------
# subspaces


def _subspaces(ctx: StudyContext) -> list[Finding]:
    findings = []
    for comparison in ctx.results.get("subspaces") or []:
        metrics = comparison.metrics
        k = max(comparison.ks)
        at_k = metrics[(metrics["k"] == k) & (metrics["method"] != "pca")]
        if not len(at_k):
            continue
        worst = float(at_k["max_angle_deg"].max())
        if worst < SPANS_PCA_DEGREES:
            text = (f"{comparison.source}: the {len(at_k)} linear autoencoders span PCA's {k}-dimensional subspace "
                    f"(largest principal angle {worst:.2g}°)")
        else:
            method = at_k.sort_values("max_angle_deg").iloc[-1]["method"]
            text = (f"{comparison.source}: {method} does not reach PCA's {k}-dimensional subspace (largest principal "
                    f"angle {worst:.2g}°; more iterations may close it)")
        alignment = at_k.set_index("method")["singular_vector_alignment_error"]
        if "linear-ae-nonuniform" in alignment and "linear-ae" in alignment:
            ordered, plain = alignment["linear-ae-nonuniform"], alignment["linear-ae"]
            verb = "recovers" if ordered < RECOVERS_DIRECTIONS else "comes closer to" if ordered < plain else "misses"
            text += (f"; the non-uniform L2 one {verb} PCA's ordered directions (alignment error {ordered:.2g}; "
                     f"the plain one {plain:.2g}, which only the subspace constrains)")
        findings.append(Finding("Subspaces", text + ".", "subspaces", value=worst))
    return findings


# ----------------------------------------------------------------------------------------------
# mask ratio


def _mask_ratio(ctx: StudyContext) -> list[Finding]:
    sweep = ctx.results.get("mask_ratio")
    if sweep is None:
        return []
    summary = sweep.summary().set_index("mask_ratio")
    best = summary.loc[sweep.best_ratio]
    n_seeds = int(best["n_seeds"])
    spread = f" ± {best['probe_accuracy_std']:.2f} (sd over {n_seeds} seeds)" if n_seeds > 1 else ""
    text = (f"Of mask ratios {', '.join(f'{r:g}' for r in summary.index)}, the MAE trained at "
            f"{sweep.best_ratio:g} probes best (accuracy {best['probe_accuracy_mean']:.2f}{spread})")
    if n_seeds > 1:
        runner_up = summary.drop(index=sweep.best_ratio)["probe_accuracy_mean"]
        if len(runner_up) and best["probe_accuracy_mean"] - runner_up.max() < best["probe_accuracy_std"]:
            text += (f", within one sd of the ratio {runner_up.idxmax():g} ({runner_up.max():.2f}), so the peak is "
                     "not resolved at these seeds")
    ratio = best.get("run_recon_ratio_mean")
    if ratio is not None and np.isfinite(ratio) and ratio >= 1:
        text += (f"; but it reconstructs no better than the mean image (error ratio {ratio:.2f}), so its encoder has "
                 "barely learned the task and the ranking says little about the ratio")
    return [Finding("Mask ratio", text + ".", "mask_ratio", value=float(best["probe_accuracy_mean"]))]


# ----------------------------------------------------------------------------------------------
# words and captions


def _words(ctx: StudyContext) -> list[Finding]:
    words = ctx.results.get("words")
    if not words:
        return []
    findings = []
    for name, accuracy in words["accuracy"].items():
        totals = accuracy.totals_frame().set_index("questions").loc["all"]
        if totals["total"]:
            findings.append(Finding(
                "Words", f"{name} answers {totals['accuracy']:.1%} of the {int(totals['total']):,} analogy questions "
                f"whose words it knows ({accuracy.method}; {int(totals['skipped']):,} skipped).", "words", model=name,
                value=float(totals["accuracy"])))
    geometry = words["geometry"]
    if geometry is not None:
        for name in geometry.models:
            ratio = geometry.within[name] / geometry.between[name]
            clustered = "cluster" if geometry.p_values[name] < 0.05 else "do not cluster clearly"
            findings.append(Finding(
                "Words", f"In {name}, the word categories {clustered}: words of one category are {ratio:.2f} times as "
                f"far apart as words of different ones (permutation p = {geometry.p_values[name]:.3g}, "
                f"{len(geometry.words)} words).", "words", model=name, value=float(ratio)))
    return findings


def _mlm_ratio(ctx: StudyContext) -> list[Finding]:
    sweep = ctx.results.get("mlm_ratio")
    if sweep is None:
        return []
    frame = sweep.to_frame()
    best = frame.sort_values("masked_accuracy_at_15", ascending=False).iloc[0]
    baseline = float(best["unigram_accuracy_at_15"])
    text = (f"Of mask ratios {', '.join(f'{r:g}' for r in frame['mask_ratio'])}, the masked language model trained at "
            f"{best['mask_ratio']:g} predicts masked words best on the common 15 % masks (accuracy "
            f"{best['masked_accuracy_at_15']:.3f}, {best['masked_accuracy_at_15'] / max(baseline, 1e-12):.1f} times "
            f"the unigram baseline's {baseline:.3f}).")
    return [Finding("Masked LM ratio", text, "mlm_ratio", value=float(best["masked_accuracy_at_15"]))]


def _captions(ctx: StudyContext) -> list[Finding]:
    findings = []
    for name, result in (ctx.results.get("captions") or {}).items():
        scores = result.accuracy.set_index(["images", "method", "candidates"])["accuracy"]
        seen = scores.get(("seen", "zero-shot", "seen names"))
        probe = scores.get(("seen", "linear probe", "seen names"))
        if seen is not None and probe is not None:
            findings.append(Finding(
                "Captions", f"{name} names the classes it was trained on zero-shot with accuracy {seen:.2f}, against "
                f"{probe:.2f} for a linear probe trained on its image features.", "captions", stimuli=name, model=name,
                value=float(seen)))
        held = scores.get(("held-out", "zero-shot", "held-out names"))
        if held is not None:
            chance = 1 / len(result.held_out_classes)
            findings.append(Finding(
                "Captions", f"{name} tells apart the classes held out of its training ({', '.join(result.held_out_classes)}) "
                f"from their names alone with accuracy {held:.2f} (chance {chance:.2f}).", "captions", stimuli=name,
                model=name, value=float(held)))
    return findings


# The finders in the report's order. A (analysis, "module:function") finder lives beside its study step and
# is imported only when that analysis has a result (its module imports this one).
_FINDERS: tuple[Callable[[StudyContext], list[Finding]] | tuple[str, str], ...] = (
    _similarity, ("measures", "probe.study._measures_step:measures_findings"), _transfer, _units, _subspaces, ("codes", "probe.study._codes_step:codes_findings"),
    ("colorization", "probe.study._colorization_step:colorization_findings"), _mask_ratio,
    ("finetune", "probe.study._finetune_step:finetune_findings"), ("greedy", "probe.study._greedy_step:greedy_findings"),
    _words, _captions, _mlm_ratio,
)


def _finder(entry: Callable[[StudyContext], list[Finding]] | tuple[str, str], ctx: StudyContext
            ) -> Callable[[StudyContext], list[Finding]]:
    if callable(entry):
        return entry
    analysis, path = entry
    if analysis not in ctx.results:
        return lambda ctx: []
    return import_function(path)
