"""Language experiments that train zoo models: the masked language model's mask-ratio sweep.

BERT masks 15 % of the tokens; this sweep trains one masked language model per ratio on the same
corpus and compares them on masked-token accuracy, both at each model's own ratio (what it was
trained for) and at a common 15 % (the same task for all), beside the unigram-frequency baseline.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import pandas as pd
import torch

import zoo
from probe.study._transfer_experiments import _trained_model

__all__ = ["MaskedLMRatioSweep", "masked_lm_ratio_sweep", "COMMON_MASK_RATIO"]

#: The masking at which every model of the sweep is also scored: BERT's.
COMMON_MASK_RATIO = 0.15


@dataclass
class MaskedLMRatioSweep:
    """Masked-token accuracy of masked language models trained with different mask ratios.

    Attributes
    ----------
    frame
        One row per mask ratio: mask_ratio, masked_accuracy (on the test split at the model's own
        ratio), masked_accuracy_at_15 (at 15 % masking, the same masks for every model),
        unigram_accuracy_at_15 (always guessing the most frequent training word, on those masks),
        train_seconds (the run's epochs), then run_dir.
    dataset
        The corpus trained on and scored.
    """

    frame: pd.DataFrame
    dataset: str

    def to_frame(self) -> pd.DataFrame:
        """The per-ratio table (a copy)."""
        return self.frame.copy()


def _train_seconds(run_dir: Path) -> float:
    """The summed epoch times in the run's log."""
    return float(sum(float(row["seconds"]) for row in zoo.RunDir.open(run_dir).read_log_rows()))


def masked_lm_ratio_sweep(
    ratios: Sequence[float] = (0.05, 0.15, 0.3, 0.5),
    *,
    dataset: str = "bible-kjv",
    epochs: int | None = None,
    out: str | os.PathLike = "runs/mlm-ratio",
    seed: int = 0,
    device: str | torch.device = "auto",
    progress: bool = True,
    dataset_options: dict[str, Any] | None = None,
    **model_options: Any,
) -> MaskedLMRatioSweep:
    """Train one masked language model per mask ratio, then score each on masked tokens.

    Parameters
    ----------
    ratios
        Mask ratios, each in (0, 1).
    dataset
        A text corpus for ``zoo.load_dataset`` (``"bible-kjv"``, ``"text:PATH"``, ...).
    epochs
        Training epochs per model (None: the zoo's default for ``"mlm"``).
    out
        Folder of the run directories (one per ratio, ``mlm-ratio-0.15`` ...); finished runs are
        loaded, interrupted ones resumed.
    seed
        Seed of training.
    device
        Where to train and score.
    progress
        Progress bars.
    dataset_options
        Options for ``zoo.load_dataset`` (``sequence_length``, ``min_count``, ...).
    **model_options
        Other ``"mlm"`` options passed to ``zoo.train`` (``dim``, ``depth``, ``heads``, training settings).

    Returns
    -------
    MaskedLMRatioSweep
    """
    ratios = [float(r) for r in ratios]
    if not ratios or any(not 0.0 < r < 1.0 for r in ratios):
        raise ValueError(f"mask ratios must lie strictly between 0 and 1; got {ratios}")
    if "mask_ratio" in model_options:
        raise ValueError("pass the mask ratios as ratios=, not mask_ratio=")
    test_set = zoo.load_dataset(dataset, split="test", **(dataset_options or {}))
    rows = []
    for ratio in ratios:
        run_dir = Path(out) / f"mlm-ratio-{ratio:g}"
        model = _trained_model("mlm", run_dir, dataset=dataset, epochs=epochs, seed=seed, device=device,
                               progress=progress, dataset_options=dataset_options, mask_ratio=ratio, **model_options)
        own = model.masked_accuracy(test_set)
        common = model.masked_accuracy(test_set, COMMON_MASK_RATIO)
        rows.append(dict(mask_ratio=ratio, masked_accuracy=own["masked_accuracy"],
                         masked_accuracy_at_15=common["masked_accuracy"],
                         unigram_accuracy_at_15=common["unigram_accuracy"],
                         train_seconds=_train_seconds(run_dir), run_dir=str(run_dir)))
    return MaskedLMRatioSweep(frame=pd.DataFrame(rows), dataset=dataset)
