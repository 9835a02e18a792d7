"""The memory plan of a study (``probe analyze STUDY.toml --plan``): per model, what its recordings will hold.

A study records, per model (``probe.study._study._record``), its layers over the stimuli into the
recordings cache (an on-disk recording per pass, ``OUT/cache``), and, when it runs the units
analysis, one more pass in memory with a ``probe.TopK`` reducer on the map and token layers, whose
results the cache keeps (``OUT/cache/topk``). ``plan_study`` builds every model and loads the stimuli
as the study does, then plans those passes with ``probe._plan.plan_recording``, recording nothing.

The plan is an upper bound: layers the cache already holds are counted as if recorded again. Models
the study trains itself are planned only once their run folder exists (after training); a language
model is not recorded on the stimuli.
"""

from __future__ import annotations

import dataclasses
import json
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

import zoo
from probe import TopK, resolve_layers
from probe._plan import (
    MemoryBudgetError,
    RecordingPlan,
    budget_message,
    first_crossing,
    format_bytes,
    parse_size,
    plan_recording,
)
from probe.study._spec import ModelEntrySpec, StudySpec
from probe.study._study import _build_model, default_layers, draw_stimuli, is_language_model
from probe.study._units_step import layers_with_units

__all__ = ["StudyPlan", "plan_study"]

#: The passes of one model, in the order the study runs them.
RECORD_PASS = "layers (cache)"
TOPK_PASS = "top-k (units analysis)"
_TOPK_BATCH = 256  # probe.study._top_patches.record_topk's batch size
_UNITS_DEFAULTS = {"k": 9, "bottom_k": 0, "layers": "auto", "distinct_stimuli": "auto"}


@dataclass
class StudyPlan:
    """The memory plans of a study's recording passes.

    Attributes
    ----------
    passes
        ``(model, pass, RecordingPlan)`` in the order the study records them.
    left_out
        Model -> why it is not planned (trained by the study and not yet trained, a language model).
    """

    passes: list[tuple[str, str, RecordingPlan]] = field(default_factory=list)
    left_out: dict[str, str] = field(default_factory=dict)

    def to_frame(self) -> pd.DataFrame:
        """``RecordingPlan.to_frame`` of every pass, with columns ``model`` and ``pass`` in front."""
        frames = [plan.to_frame().assign(model=model, **{"pass": name}) for model, name, plan in self.passes]
        if not frames:
            return pd.DataFrame(columns=["model", "pass", "layer", "item", "device_bytes", "ram_bytes", "disk_bytes",
                                         "note"])
        frame = pd.concat(frames, ignore_index=True)
        return frame[["model", "pass", *[c for c in frame.columns if c not in ("model", "pass")]]]

    @property
    def peak_ram(self) -> int:
        """The most RAM one pass needs (the passes run one after another)."""
        return max((plan.totals["ram_bytes"] for _, _, plan in self.passes), default=0)

    @property
    def disk(self) -> int:
        """Bytes every pass writes to the cache, together (they all stay there)."""
        return sum(plan.totals["disk_bytes"] for _, _, plan in self.passes)

    def check(self, max_ram: int | str | None = None, max_disk: int | str | None = None) -> None:
        """Refuse a study whose passes exceed a budget: RAM per pass (one runs at a time), disk over
        every pass (the cache keeps them all).

        Raises
        ------
        MemoryBudgetError
            Naming the model, the pass and the layer at which the budget is crossed.
        """
        if max_ram is not None:
            budget = parse_size(max_ram)
            for model, name, plan in self.passes:
                layer = first_crossing(plan.rows, "ram_bytes", budget)
                if layer is not None:
                    raise MemoryBudgetError(f"model {model!r}, {name}: " + budget_message(
                        "RAM", layer, plan.totals["ram_bytes"], budget, plan.unknown))
        if max_disk is not None:
            budget, spent = parse_size(max_disk), 0
            for model, name, plan in self.passes:
                layer = first_crossing(plan.rows, "disk_bytes", budget, spent)
                if layer is not None:
                    raise MemoryBudgetError(f"model {model!r}, {name}: " + budget_message(
                        "disk (the study's cache, all models together)", layer, self.disk, budget, plan.unknown))
                spent += plan.totals["disk_bytes"]

    def __str__(self) -> str:
        lines = []
        for model, name, plan in self.passes:
            lines += [f"== {model}: {name}", str(plan), ""]
        for model, reason in self.left_out.items():
            lines.append(f"== {model}: not planned ({reason})")
        lines.append(f"study: peak RAM of one pass {format_bytes(self.peak_ram)}, disk of every pass "
                     f"{format_bytes(self.disk)} (an upper bound: layers already cached are counted again)")
        return "\n".join(lines)


def plan_study(spec: StudySpec, device: str | None = None) -> StudyPlan:
    """The memory plan of every model of a study, without recording (see the module docstring).

    Parameters
    ----------
    spec
        The checked study (``StudySpec.from_file``); ``spec.out`` locates the cache.
    device
        Where the study will record (default the study's ``device``); the models are built and the
        planning forward pass runs on the CPU.

    Returns
    -------
    StudyPlan
    """
    record_device = zoo.resolve_device(device or spec.device)
    plan = StudyPlan()
    loaded: dict[str, Any] = {}
    for entry in spec.models:
        model = _planned_model(entry, spec.seed, plan.left_out)
        if model is None:
            continue
        data = entry.data or spec.data
        key = json.dumps(dataclasses.asdict(data), sort_keys=True, default=str)
        if key not in loaded:
            loaded[key] = draw_stimuli(data)[0]
        stimuli = zoo.prepare_for(model, loaded[key])
        layers = default_layers(model) if entry.layers == "auto" else resolve_layers(model, list(entry.layers))
        recorded = plan_recording(model, stimuli, layers, reduce=entry.reduce, layout=entry.layout,
                                  batch_size=spec.batch_size, out=Path(spec.out) / "cache", device=record_device)
        plan.passes.append((entry.name, RECORD_PASS, recorded))
        if "units" in spec.analyses:
            topk = _topk_plan(model, stimuli, entry.name, recorded, spec.analyses["units"], record_device)
            if topk is not None:
                plan.passes.append((entry.name, TOPK_PASS, topk))
    return plan


def _planned_model(entry: ModelEntrySpec, seed: int, left_out: dict[str, str]) -> Any:
    """The model of a study entry, built on the CPU as the study builds it; None (saying why in
    ``left_out``) for a model the study trains that is not trained yet, or a language model."""
    if entry.train is not None and not (Path(entry.spec) / "config.json").is_file():
        left_out[entry.name] = f"the study trains it into {entry.spec} first; plan again once it is trained"
        return None
    torch.manual_seed(seed + zlib.crc32(entry.name.encode()))
    model = _build_model(entry, torch.device("cpu"))
    if is_language_model(model):
        left_out[entry.name] = "a language model: the words analysis reads its embedding table, nothing is recorded"
        return None
    return model


def _topk_plan(model: Any, stimuli: Any, name: str, recorded: RecordingPlan, options: dict[str, Any],
               device: torch.device) -> RecordingPlan | None:
    """The units analysis's top-k pass of a model (as ``probe.study._units_step`` runs it), its results
    written to the cache; None when it has no layer with units to map."""
    options = {**_UNITS_DEFAULTS, **options}
    chosen = layers_with_units(recorded.shapes, name, options["layers"])
    if not chosen:
        return None
    n_stimuli = len(stimuli)
    k, bottom_k = min(options["k"], n_stimuli), min(options["bottom_k"], n_stimuli)
    distinct = n_stimuli >= 4 * options["k"] if options["distinct_stimuli"] == "auto" else bool(options["distinct_stimuli"])
    modules = list(dict.fromkeys(layer.split("#")[0] for layer in chosen))
    plan = plan_recording(
        model, stimuli, modules, batch_size=_TOPK_BATCH, device=device,
        reducers={"topk": lambda: TopK(k, bottom_k=bottom_k, distinct_stimuli=distinct, pool="max")},
    )
    labels = n_stimuli * np.dtype(np.int64).itemsize
    plan.rows = [  # the cache saves each layer's result beside its labels (probe.study._topk_cache)
        dataclasses.replace(row, disk_bytes=row.ram_bytes + labels, note=row.note.replace("not saved to disk", "saved in the cache"))
        if row.item == "topk" and row.ram_bytes is not None else row
        for row in plan.rows
    ]
    return plan


