"""The study's summary: what each model is, where it came from, what was recorded of it."""

from __future__ import annotations

from typing import Any

import pandas as pd
from probe.study._context import StudyContext
from reports import ModelSummary, Section, render_fragment, table_html, zoo_section
from zoo import RunDir

__all__ = ["summary_analysis"]


def summary_analysis(ctx: StudyContext) -> list[Section]:
    """One row per model (source, weights, parameters, layers, stimuli, layers read from the cache),
    and the training curve and final metrics of each model that is a zoo run.

    The table ``summary`` holds the rows; ``ctx.sources`` says where each model came from.
    """
    sources = ctx.sources
    rows = []
    for name, model in ctx.models.items():
        recording = ctx.recordings.get(name)
        cached = ctx.from_cache.get(name, [])
        rows.append({
            "model": name,
            "source": sources.get(name, {}).get("spec", type(model).__name__),
            "weights": sources.get(name, {}).get("weights") or "",
            "parameters": sum(p.numel() for p in model.parameters()),
            "layers": len(recording.layers) if recording is not None else 0,
            "stimuli": recording.n_stimuli if recording is not None else 0,
            "from cache": f"{len(cached)} of {len(recording.layers)}" if recording is not None else "",
        })
    table = pd.DataFrame(rows)
    ctx.add_table("summary", table)
    intro = "Where each model came from and what was recorded of it."
    sections = [Section("Models", render_fragment("sections/table.html.j2", intro=intro, table=table_html(table)),
                        summary=f"{len(rows)} models; layers read from the recordings cache are counted in 'from cache'")]
    runs = [_run_summary(name, ctx.run_dirs[name], ctx.models[name]) for name in ctx.models if name in ctx.run_dirs]
    if runs:
        sections += zoo_section(runs)
    return sections


def _run_summary(name: str, run_dir: Any, model: Any) -> ModelSummary:
    run = RunDir.open(run_dir)
    history = pd.DataFrame(run.read_log_rows()).apply(pd.to_numeric, errors="coerce")
    config = run.read_config()
    metrics = run.read_metrics() if run.metrics_path.is_file() else {}
    return ModelSummary(
        name=name,
        family=str(getattr(model, "family", config.get("family", ""))),
        dataset=run.training_dataset()[0],
        architecture=str(model),
        n_parameters=sum(p.numel() for p in model.parameters() if p.requires_grad),
        history=history,
        metrics=dict(metrics),
    )
