"""The study's ``greedy`` analysis: greedy layer-wise pretraining against end-to-end training of a deep MLP.

It runs ``probe.study.greedy_layerwise_experiment`` (one greedy stack per seed, then per budget of labels
per class, and for every label, the stack fine-tuned end to end beside the same MLP trained from random
weights on the same labels) and shows test accuracy by budget and each greedy layer's reconstruction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from probe.study._context import StudyContext
from probe.study._pretraining_experiments import greedy_layerwise_experiment
from reports import Section, greedy_section

if TYPE_CHECKING:  # imported where used: _findings imports the finders of the steps
    from probe.study._findings import Finding

__all__ = ["greedy_analysis", "greedy_findings"]


def greedy_analysis(
    ctx: StudyContext, *, dataset: str = "digits", widths: Sequence[int] = (256, 128, 64),
    labels_per_class: Sequence[int] = (10, 100), seeds: Sequence[int] = (0, 1, 2), activation: str = "relu",
    pretrain_epochs: int = 10, finetune_epochs: int = 20,
) -> list[Section]:
    """Greedy layer-wise pretraining vs end-to-end training on ``dataset`` at each of ``labels_per_class``
    and with every label (``"all"``, always added), one run per seed (``greedy_layerwise_experiment``).

    The table ``greedy`` holds one row per method, budget and seed; ``greedy-layers`` one row per greedy
    layer and seed (its reconstruction error against predicting each code by its mean).
    """
    budgets = [*dict.fromkeys(int(b) for b in labels_per_class), "all"]
    result = greedy_layerwise_experiment(dataset, widths, budgets, list(seeds), pretrain_epochs=pretrain_epochs,
                                         finetune_epochs=finetune_epochs, activation=activation, device=ctx.device,
                                         progress=ctx.progress)
    ctx.results["greedy"] = result
    ctx.add_table("greedy", result.to_frame())
    ctx.add_table("greedy-layers", result.reconstruction)
    return [greedy_section(result)]


def greedy_findings(ctx: StudyContext) -> list[Finding]:
    """The paired greedy-minus-end-to-end accuracy difference at the smallest budget, with its sd over seeds,
    and whether it is within one sd of 0."""
    from probe.study._findings import Finding

    result = ctx.results.get("greedy")
    if result is None:
        return []
    difference = result.difference()
    numeric = difference[difference["budget"] != "all"]
    if not len(numeric):
        numeric = difference
    row = numeric.iloc[int(np.argmin([float(b) if b != "all" else np.inf for b in numeric["budget"]]))]
    mean, sd, n = float(row["difference_mean"]), float(row["difference_sd"]), int(row["n_seeds"])
    budget = "every label" if row["budget"] == "all" else f"{row['budget']} labels per class"
    text = (f"With {budget}, greedy layer-wise pretraining changes the MLP's test accuracy by {mean:+.3f} ± {sd:.3f} "
            f"against end-to-end training (greedy minus end to end, paired over {n} seed{'s' if n != 1 else ''})")
    if n < 2:
        text += "; one seed gives no spread to judge it by"
    elif abs(mean) <= sd:
        text += "; that is within one sd of 0, so no clear effect"
    else:
        text += f"; {'a gain' if mean > 0 else 'a loss'} larger than its sd"
    return [Finding("Greedy pretraining", text + ".", "greedy", value=mean)]
