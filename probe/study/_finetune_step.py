"""The study's ``finetune`` analysis: encoders pretrained on some classes, adapted to unseen ones three ways."""

from __future__ import annotations

from collections.abc import Sequence

from probe.study._context import StudyContext
from probe.study._findings import Finding
from probe.study._finetune_experiments import finetune_comparison
from reports import Section, finetune_section

__all__ = ["finetune_analysis", "finetune_findings"]


def finetune_analysis(
    ctx: StudyContext, *, models: Sequence[str] = ("cnn", "ae-conv", "mae", "simclr"), dataset: str = "digits",
    pretrain_classes: Sequence[int] = (0, 1, 2, 3, 4), probe_classes: Sequence[int] = (5, 6, 7, 8, 9),
    labels_per_class: Sequence[int] = (1, 10, 100), seeds: Sequence[int] = (0, 1, 2), pretrain_epochs: int = 3,
    steps: int = 200,
) -> list[Section]:
    """Pretrain each zoo model on ``pretrain_classes`` (runs in ``ctx.out / "class-split"``, reused when
    finished) and compare a linear probe, last-block and full fine-tuning on ``probe_classes``
    (``probe.study.finetune_comparison``). The table ``finetune`` holds one row per run."""
    comparison = finetune_comparison(list(models), pretrain_classes, probe_classes, dataset=dataset,
                                     labels_per_class=labels_per_class, seeds=seeds, pretrain_epochs=pretrain_epochs,
                                     pretrain_seed=ctx.seed, steps=steps, out=ctx.out / "class-split", device=ctx.device,
                                     progress=ctx.progress)
    ctx.results["finetune"] = comparison
    ctx.add_table("finetune", comparison.to_frame())
    notes = f"Each model was pretrained for {pretrain_epochs} epochs; each fine-tuning ran {steps} optimiser steps."
    return [finetune_section(comparison, notes=notes)]


def finetune_findings(ctx: StudyContext) -> list[Finding]:
    """At the smallest and the largest budget: how many models gain from fine-tuning everything over the
    linear probe, and the largest gain."""
    comparison = ctx.results.get("finetune")
    if comparison is None:
        return []
    gains = comparison.gains()
    if "full" not in gains:
        return []
    findings = []
    budgets = sorted(set(gains["labels_per_class"]))
    for budget in dict.fromkeys([budgets[0], budgets[-1]]):
        rows = gains[gains["labels_per_class"] == budget]
        better = rows[rows["full"] > 0]
        top = rows.loc[rows["full"].idxmax()]
        text = (f"With {budget} labelled image{'s' if budget != 1 else ''} per unseen class, fine-tuning the whole "
                f"encoder beats its frozen linear probe for {len(better)} of {len(rows)} models; the largest gain is "
                f"{top['model']}'s, {top['full']:+.3f}.")
        findings.append(Finding("Fine-tuning", text, "finetune", model="", value=float(top["full"])))
    return findings
