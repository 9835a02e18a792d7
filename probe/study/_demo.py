"""``probe demo``: train a small zoo on the embedded data, record it, analyse it, write one report.

The demo is a list of steps. Each step takes the shared ``DemoContext``, may add to it (trained
models, recordings, results) and returns the report sections it contributes. Adding an analysis
to the demo is writing one step function and listing it in ``DEMO_STEPS``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from probe.study._context import DemoContext
from probe.study._layers_step import layers_step
from probe.study._real_network_step import real_network_step
from probe.study._similarity_step import similarity_step
from probe.study._subspaces_step import subspaces_step
from probe.study._transfer_step import transfer_step
from probe.study._units_step import units_step
from probe.study._zoo_step import zoo_step
from reports import Report, Section

__all__ = ["DEMO_STEPS", "run_demo"]

# Steps run in this order; a step may use what earlier ones added to the context.
DEMO_STEPS: list[tuple[str, Callable[[DemoContext], list[Section]]]] = [
    ("Zoo", zoo_step),
    ("Layers", layers_step),
    ("Similarity", similarity_step),
    ("Units", units_step),
    ("Subspaces", subspaces_step),
    ("Transfer", transfer_step),
    ("Real network", real_network_step),
]


def run_demo(ctx: DemoContext, report_path: Path | None = None) -> Path:
    """Run every demo step and write the report; returns the report's path."""
    report = Report(
        "Neuroscience-style analysis of a small model zoo and a pretrained network",
        subtitle=f"Embedded data (scikit-learn's digits and natural image patches), the bundled photographs and "
        f"Fashion-MNIST, seed {ctx.seed}"
        + (", quick mode" if ctx.quick else ""),
    )
    for title, step in DEMO_STEPS:
        started = time.perf_counter()
        for section in step(ctx):
            report.add(section)
        ctx.timings[title] = time.perf_counter() - started
    return report.write(report_path or ctx.out / "report.html")
