"""The layers analysis: what each recorded layer holds (units, value range, sparsity, a histogram)."""

from __future__ import annotations

import pandas as pd

from probe.study._context import StudyContext
from reports import Section, layers_section

__all__ = ["layers_analysis"]


def layers_analysis(ctx: StudyContext) -> list[Section]:
    """Per layer of every recording in ``ctx.recordings``: units, value range, sparsity, a histogram.

    The table ``layers`` holds one row per model and layer (``probe.Recording.to_frame``).
    """
    if not ctx.recordings:
        raise KeyError("the layers analysis needs recordings; record the models first")
    frames = [recording.to_frame().assign(model=name) for name, recording in ctx.recordings.items()]
    table = pd.concat(frames, ignore_index=True)
    ctx.add_table("layers", table[["model", *[c for c in table.columns if c != "model"]]])
    return layers_section(ctx.recordings)
