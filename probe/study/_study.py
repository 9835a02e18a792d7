"""A study: the user's models, one set of stimuli, the analyses, one report (``probe analyze``).

``Study.from_file("study.toml").run()`` goes through four stages, each saying what it does:

1. **prepare**: load the stimuli (a seeded subset when ``limit`` is given), build every model, and
   resolve its layers. Every name is checked here, before anything is recorded.
2. **record**: each model's layers over the stimuli, through the recordings cache in
   ``OUT/cache``: what an earlier run (of this study or another one over the same stimuli)
   recorded is read back, only what is new is recorded, and a killed run resumes.
3. **analyse**: the analyses the study names, in a fixed order (``ANALYSIS_STEPS``), each adding
   its results, tidy tables and report sections to the shared ``StudyContext``.
4. **write**: ``report.html``, ``results/*.csv``, a copy of the study file and the versions of the
   toolkit and its libraries.

The demo's analyses are these same steps (``probe.study._demo``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import os
import platform
import sys
import time
import zlib
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import Subset

import zoo
from probe import resolve_layers
from probe.study._cache import RecordingCache
from probe.study._context import StudyContext, dataset_labels
from probe.study._spec import StudySpec, StudySpecError
from zoo._io import atomic_write_text

if TYPE_CHECKING:
    from reports import Section

__all__ = ["ANALYSIS_STEPS", "Study", "StudyResult", "analysis_step", "default_layers"]

# Analysis name -> "module:function" of its step (ctx, **options) -> sections. They run in this order,
# whatever the file's. The steps (and the analyses and reports they import) load only once the models
# and their layers are checked, so that a wrong name is reported in seconds.
ANALYSIS_STEPS: dict[str, str] = {
    "summary": "probe.study._summary_step:summary_analysis",
    "layers": "probe.study._layers_step:layers_analysis",
    "similarity": "probe.study._similarity_step:similarity_analysis",
    "units": "probe.study._units_step:units_analysis",
    "subspaces": "probe.study._subspaces_step:subspaces_analysis",
    "transfer": "probe.study._transfer_step:transfer_analysis",
}


def analysis_step(name: str) -> Callable[..., list["Section"]]:
    """The step function of the analysis ``name`` (a key of ``ANALYSIS_STEPS``)."""
    module, _, function = ANALYSIS_STEPS[name].partition(":")
    return getattr(importlib.import_module(module), function)

# Modules whose output is their input (or noise on it) tell nothing a neighbour does not.
_PASS_THROUGH = (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d)


@dataclass
class StudyResult:
    """What a study run made.

    Attributes
    ----------
    out
        The output folder.
    report
        The report's path (``out / "report.html"``).
    results
        Result objects by analysis name (``results["similarity"]["cka"]`` is an
        ``analyses.SimilarityMatrix``...).
    tables
        Tidy tables by name, as written to ``out / "results" / f"{name}.csv"``.
    recordings
        Model name -> ``probe.Recording`` of its layers over the stimuli.
    recorded, from_cache
        Model name -> the layers (and ``top-k of LAYER`` passes of the units analysis) recorded by
        this run / read from the cache.
    failed
        Analysis name -> why it could not run (it is then left out of the report, which says so).
    timings
        Seconds per stage and per analysis.
    """

    out: Path
    report: Path
    results: dict[str, Any]
    tables: dict[str, pd.DataFrame]
    recordings: dict[str, Any]
    recorded: dict[str, list[str]]
    from_cache: dict[str, list[str]]
    failed: dict[str, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)


class Study:
    """A study read from a TOML file (see ``probe init-study``) or built from a dict.

    Examples
    --------
    >>> result = Study.from_file("study.toml").run()
    >>> result.tables["similarity-cka"].head()
    >>> result.report                        # the HTML report
    """

    def __init__(self, spec: StudySpec, *, out: str | os.PathLike | None = None):
        self.spec = spec if out is None else dataclasses.replace(spec, out=Path(out).absolute())

    @classmethod
    def from_file(cls, path: str | os.PathLike, *, out: str | os.PathLike | None = None) -> "Study":
        """Read and check a study file; ``out`` replaces its output folder."""
        return cls(StudySpec.from_file(path), out=out)

    @classmethod
    def from_dict(cls, mapping: Mapping[str, Any], folder: str | os.PathLike = ".", *,
                  out: str | os.PathLike | None = None) -> "Study":
        """A study from a dict shaped as the file (relative paths resolve against ``folder``)."""
        return cls(StudySpec.from_dict(mapping, folder=Path(folder)), out=out)

    def run(self, *, progress: bool = True, device: str | None = None) -> StudyResult:
        """Prepare, record (through the cache), analyse and write; returns what was made.

        Parameters
        ----------
        progress
            Progress bars and one status line per stage on stderr.
        device
            Overrides the study's ``device``.
        """
        spec = self.spec
        ctx = StudyContext(out=spec.out, seed=spec.seed, device=zoo.resolve_device(device or spec.device),
                           progress=progress)
        timings: dict[str, float] = {}
        started = time.perf_counter()
        layers, data = _prepare(spec, ctx)
        timings["prepare"] = time.perf_counter() - started
        started = time.perf_counter()
        _record(spec, ctx, layers, data)
        timings["record"] = time.perf_counter() - started
        sections, failed = [], {}
        for name, options in spec.analyses.items():
            _status(ctx, f"analysis {name}")
            started = time.perf_counter()
            try:
                sections += analysis_step(name)(ctx, **options)
            except (ValueError, KeyError) as err:  # one analysis that does not apply must not lose the others
                failed[name] = err.args[0] if err.args else str(err)
                print(f"study: analysis {name!r} left out: {failed[name]}", file=sys.stderr)
            timings[name] = time.perf_counter() - started
        report = _write(spec, ctx, sections, failed)
        return StudyResult(out=spec.out, report=report, results=ctx.results, tables=ctx.tables,
                           recordings=ctx.recordings, recorded=ctx.recorded, from_cache=ctx.from_cache, failed=failed,
                           timings=timings)


def _status(ctx: StudyContext, message: str) -> None:
    if ctx.progress:
        print(f"study: {message}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------------
# prepare


def default_layers(model: nn.Module) -> list[str]:
    """The layers ``layers = "auto"`` records: ``model.recordable_layers()`` when the model has it
    (zoo models), else the model's top-level modules with containers of blocks (``nn.Sequential``,
    ``nn.ModuleList``) opened one level, leaving out identity and dropout modules."""
    if hasattr(model, "recordable_layers"):
        return list(model.recordable_layers())
    layers = []
    for name, child in model.named_children():
        if isinstance(child, (nn.Sequential, nn.ModuleList)) and len(child) > 0:
            layers += [f"{name}.{inner}" for inner, block in child.named_children() if not isinstance(block, _PASS_THROUGH)]
        elif not isinstance(child, _PASS_THROUGH):
            layers.append(name)
    if not layers:
        raise ValueError(f"{type(model).__name__} has no submodules to record; name its layers in the study file")
    return layers


def _load_stimuli(spec: StudySpec, ctx: StudyContext) -> tuple[Any, dict[str, Any]]:
    """The study's stimuli (a seeded subset when ``limit`` is given) and what identifies them."""
    data = spec.data
    _status(ctx, f"loading {data.dataset} ({data.split})")
    dataset = zoo.load_dataset(data.dataset, split=data.split, **data.options)
    rows = np.arange(len(dataset))
    if data.limit is not None and data.limit < len(dataset):
        rows = np.sort(np.random.default_rng(data.seed).permutation(len(dataset))[: data.limit])
    subset = Subset(dataset, rows.tolist())
    subset.info = getattr(dataset, "info", None)
    subset.labels = dataset_labels(dataset)[rows]
    ctx.datasets[data.dataset, data.split] = subset
    ctx.labels = subset.labels
    described = {"dataset": data.dataset, "split": data.split, "options": data.options,
                 "rows_sha256": hashlib.sha256(rows.astype(np.int64).tobytes()).hexdigest(), "n_stimuli": len(rows)}
    return subset, described


def _prepare(spec: StudySpec, ctx: StudyContext) -> tuple[dict[str, list[str]], dict[str, Any]]:
    """Build every model and resolve its layers, then load the stimuli: every name is checked before
    any data is read or anything recorded. Returns the layers of each model and what identifies the
    stimuli."""
    problems, layers_by_model = [], {}
    for index, entry in enumerate(spec.models):
        _status(ctx, f"loading model {entry.name!r} ({entry.spec})")
        # a model without weights (a factory's, or an architecture's random init) is the same in every
        # run: seeded by the study's seed and its name, so adding another model changes nothing here
        torch.manual_seed(spec.seed + zlib.crc32(entry.name.encode()))
        model = zoo.load_model(entry.spec, weights=entry.weights, device=ctx.device).eval()
        try:
            layers_by_model[entry.name] = (
                default_layers(model) if entry.layers == "auto" else resolve_layers(model, list(entry.layers)))
        except (KeyError, ValueError) as err:
            problems.append(f"models[{index}].layers (model {entry.name!r}): {err.args[0] if err.args else err}")
        ctx.models[entry.name] = model
    if problems:
        raise StudySpecError("\n".join(problems))
    stimuli, data = _load_stimuli(spec, ctx)
    for entry in spec.models:
        model = ctx.models[entry.name]
        try:
            zoo.check_input_shape(model, stimuli, subject=f"the study's data ({spec.data.dataset})",
                                  advice=f"model {entry.name!r} needs the dataset it was trained on (its run "
                                  "folder's config.json names it)")
        except ValueError as err:
            raise StudySpecError(str(err)) from None
        ctx.stimuli[entry.name] = zoo.prepare_for(model, stimuli)
        ctx.sources[entry.name] = {"source": entry.source, "spec": entry.spec, "weights": entry.weights}
        if entry.source == "run":
            ctx.run_dirs[entry.name] = Path(entry.spec)
    return layers_by_model, data


# ----------------------------------------------------------------------------------------------
# record


def _data_key(data: dict[str, Any], model: nn.Module) -> str:
    """What makes the stimuli a model sees: the data, the subset, and the model's preprocessing."""
    described = {**data, "preprocessing": repr(getattr(model, "preprocessing", None))}
    return hashlib.sha256(json.dumps(described, sort_keys=True, default=str).encode()).hexdigest()


def _record(spec: StudySpec, ctx: StudyContext, layers_by_model: dict[str, list[str]], data: dict[str, Any]) -> None:
    cache = RecordingCache(spec.out / "cache")
    ctx.cache = cache.folder
    by_name = {entry.name: entry for entry in spec.models}
    for name, model in ctx.models.items():
        layers = layers_by_model[name]
        _status(ctx, f"recording {len(layers)} layers of {name!r}")
        entry = by_name[name]
        ctx.keys[name] = (cache.model_key(model), _data_key(data, model))
        got = cache.get(model, ctx.stimuli[name], layers, model_key=ctx.keys[name][0],
                        data_key=ctx.keys[name][1], reduce=entry.reduce, layout=entry.layout,
                        batch_size=spec.batch_size, device=ctx.device, progress=ctx.progress)
        ctx.recordings[name] = got.recording
        ctx.from_cache[name] = list(got.cached)
        ctx.recorded[name] = list(got.recorded)
        if got.cached:
            _status(ctx, f"{len(got.cached)} of {len(layers)} layers of {name!r} read from the cache")


# ----------------------------------------------------------------------------------------------
# write


def _versions() -> dict[str, str]:
    versions = {"python": platform.python_version(), "platform": platform.platform()}
    for package in ("neuroprobe", "torch", "torchvision", "numpy", "scipy", "scikit-learn", "pandas", "timm"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return versions


def _provenance(spec: StudySpec, ctx: StudyContext, versions: dict[str, str]) -> "Section":
    from reports import Section, render_fragment, table_html

    rows = [{"model": name, "layers recorded by this run": ", ".join(ctx.recorded.get(name, [])) or "none",
             "layers read from the cache": ", ".join(ctx.from_cache.get(name, [])) or "none"}
            for name in ctx.models]
    body = render_fragment(
        "sections/provenance.html.j2",
        cache=table_html(pd.DataFrame(rows)),
        study_text=spec.text,
        versions=table_html(pd.DataFrame([{"package": k, "version": v} for k, v in versions.items()])),
    )
    n_cached = sum(len(v) for v in ctx.from_cache.values())
    n_total = n_cached + sum(len(v) for v in ctx.recorded.values())
    return Section("Reproducibility", body, summary=f"{n_cached} of {n_total} layer recordings came from the cache")


def _write(spec: StudySpec, ctx: StudyContext, sections: list["Section"], failed: dict[str, str]) -> Path:
    from reports import Report, Section, render_fragment

    _status(ctx, f"writing the report and tables to {spec.out}")
    spec.out.mkdir(parents=True, exist_ok=True)
    for name, frame in ctx.tables.items():
        path = spec.out / "results" / f"{name}.csv"
        path.parent.mkdir(exist_ok=True)
        atomic_write_text(path, frame.to_csv(index=False))
    versions = _versions()
    atomic_write_text(spec.out / "study.toml", spec.text)
    atomic_write_text(spec.out / "versions.json", json.dumps(versions, indent=2) + "\n")
    data = spec.data
    n_stimuli = len(ctx.labels) if ctx.labels is not None else 0
    report = Report(spec.title, subtitle=f"{n_stimuli} stimuli of {data.dataset} ({data.split}), "
                                         f"{len(ctx.models)} models, seed {spec.seed}")
    for section in sections:
        report.add(section)
    for name, reason in failed.items():
        report.add(Section(f"Left out: {name}", render_fragment("sections/text.html.j2", text=reason),
                           summary="this analysis could not run on this study"))
    report.add(_provenance(spec, ctx, versions))
    path = report.write(spec.out / "report.html")
    _status(ctx, f"report: {path}")
    return path
