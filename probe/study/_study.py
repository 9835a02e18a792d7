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
from probe.study._context import StudyContext, dataset_labels, import_function
from probe.study._findings import Finding, compute_findings, findings_frame
from probe.study._layer_listing import precheck_layers, remember_layers
from probe.study._resources import StepMeter, StepUsage
from probe.study._spec import DataSpec, ModelEntrySpec, StudySpec, StudySpecError
from zoo._io import atomic_write_text

if TYPE_CHECKING:
    from reports import Report, Section

__all__ = ["ANALYSIS_STEPS", "Study", "StudyResult", "analysis_step", "data_words", "default_layers",
           "is_language_model"]

# Analysis name -> "module:function" of its step (ctx, **options) -> sections. They run in this order,
# whatever the file's. The steps (and the analyses and reports they import) load only once the models
# and their layers are checked, so that a wrong name is reported in seconds.
ANALYSIS_STEPS: dict[str, str] = {
    "summary": "probe.study._summary_step:summary_analysis",
    "layers": "probe.study._layers_step:layers_analysis",
    "similarity": "probe.study._similarity_step:similarity_analysis",
    "measures": "probe.study._measures_step:measures_analysis",
    "units": "probe.study._units_step:units_analysis",
    "subspaces": "probe.study._subspaces_step:subspaces_analysis",
    "transfer": "probe.study._transfer_step:transfer_analysis",
    "neighbours": "probe.study._neighbours_step:neighbours_analysis",
    "code_plane": "probe.study._code_plane:code_plane_analysis",
    "codes": "probe.study._codes_step:codes_analysis",
    "colorization": "probe.study._colorization_step:colorization_analysis",
    "words": "probe.study._words_step:words_analysis",
    "captions": "probe.study._captions_step:captions_analysis",
    "mask_ratio": "probe.study._transfer_step:mask_ratio_analysis",
    "finetune": "probe.study._finetune_step:finetune_analysis",
    "greedy": "probe.study._greedy_step:greedy_analysis",
    "function_views": "probe.study._function_experiments:function_views_analysis",
    "mlm_ratio": "probe.study._words_step:mlm_ratio_analysis",
}


def analysis_step(name: str) -> Callable[..., list["Section"]]:
    """The step function of the analysis ``name`` (a key of ``ANALYSIS_STEPS``)."""
    return import_function(ANALYSIS_STEPS[name])

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
        The report's path (``out / "report.html"``); None on the ranks other than 0 of a study run under
        ``torchrun``, which record their shares of the stimuli and leave the analyses and the report to rank 0.
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
        Seconds per stage and per analysis (and per model the study trained, ``train NAME``).
    usage
        Per stage and analysis, its wall time and peak memory (``StepUsage``).
    """

    out: Path
    report: Path | None
    results: dict[str, Any]
    tables: dict[str, pd.DataFrame]
    recordings: dict[str, Any]
    recorded: dict[str, list[str]]
    from_cache: dict[str, list[str]]
    failed: dict[str, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    usage: dict[str, StepUsage] = field(default_factory=dict)


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
        meter = StepMeter()
        with meter.step("prepare"):
            layers, data = _prepare(spec, ctx)
        with meter.step("record"):
            _record(spec, ctx, layers, data)
        if not zoo.world().is_main:  # a distributed study: the ranks have recorded together; rank 0 does the rest
            return StudyResult(out=spec.out, report=None, results={}, tables={}, recordings=ctx.recordings,
                               recorded=ctx.recorded, from_cache=ctx.from_cache, failed={}, timings=dict(ctx.timings),
                               usage=dict(meter.usage))
        with zoo.single_process():
            return self._analyse_and_write(spec, ctx, meter)

    def _analyse_and_write(self, spec: StudySpec, ctx: StudyContext, meter: StepMeter) -> StudyResult:
        """The analyses, the findings, the report and the tables (on rank 0 alone in a distributed study)."""
        sections: dict[str, list[Section]] = {}
        failed = {}
        for name, options in spec.analyses.items():
            _status(ctx, f"analysis {name}")
            with meter.step(name):
                try:
                    sections[name] = analysis_step(name)(ctx, **options)
                except (ValueError, KeyError) as err:  # one analysis that does not apply must not lose the others
                    failed[name] = err.args[0] if err.args else str(err)
                    print(f"study: analysis {name!r} left out: {failed[name]}", file=sys.stderr)
        findings = compute_findings(ctx)
        ctx.add_table("findings", findings_frame(findings))
        report = _write(spec, ctx, sections, failed, findings, meter)
        timings = {**ctx.timings, **{step: usage.seconds for step, usage in meter.usage.items()}}
        return StudyResult(out=spec.out, report=report, results=ctx.results, tables=ctx.tables,
                           recordings=ctx.recordings, recorded=ctx.recorded, from_cache=ctx.from_cache, failed=failed,
                           timings=timings, usage=dict(meter.usage))


def is_language_model(model: nn.Module) -> bool:
    """Whether a model is a language model (word2vec, a masked LM: it has ``word_vectors()``). A study does
    not record those on its stimuli; the words analysis reads their embedding tables."""
    return callable(getattr(model, "word_vectors", None))


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


def _rows(data: DataSpec, labels: np.ndarray) -> np.ndarray:
    """The rows a ``DataSpec`` keeps: ``per_class`` of each class, then ``limit`` of those, seeded and sorted."""
    rows = np.arange(len(labels))
    rng = np.random.default_rng(data.seed)
    if data.per_class is not None:
        rows = np.concatenate([rng.permutation(np.flatnonzero(labels == c))[: data.per_class]
                               for c in np.unique(labels)])
    if data.limit is not None and data.limit < len(rows):
        rows = rng.permutation(rows)[: data.limit]
    return np.sort(rows)


def data_words(data: DataSpec) -> str:
    """The stimuli of a ``DataSpec`` in words: ``"digits (test)"``, ``"fashion-mnist (test, 20 per class)"``."""
    name = data.dataset
    if name.startswith("imagefolder:"):
        name = f"imagefolder:{Path(name.split(':', 1)[1]).name}"
    details = [data.split] + ([f"{data.per_class} per class"] if data.per_class else []) + (
        [f"{data.limit} drawn"] if data.limit else [])
    return f"{name} ({', '.join(details)})"


def draw_stimuli(data: DataSpec) -> tuple[Subset, np.ndarray]:
    """The stimuli of ``data``: a seeded subset when ``per_class`` or ``limit`` is given (with the dataset's
    ``info`` and its ``labels``), and the rows of the dataset it holds."""
    dataset = zoo.load_dataset(data.dataset, split=data.split, **data.options)
    labels = dataset_labels(dataset)
    rows = _rows(data, labels)
    subset = Subset(dataset, rows.tolist())
    subset.info = getattr(dataset, "info", None)
    subset.labels = labels[rows]
    return subset, rows


def _load_stimuli(data: DataSpec, ctx: StudyContext) -> tuple[Any, dict[str, Any]]:
    """The stimuli of ``data`` (a seeded subset when ``per_class`` or ``limit`` is given) and what identifies them."""
    _status(ctx, f"loading {data_words(data)}")
    subset, rows = draw_stimuli(data)
    ctx.datasets[data.dataset, data.split] = subset
    described = {"dataset": data.dataset, "split": data.split, "options": data.options,
                 "rows_sha256": hashlib.sha256(rows.astype(np.int64).tobytes()).hexdigest(), "n_stimuli": len(rows)}
    return subset, described


def _auto_layers(model: nn.Module) -> list[str] | None:
    """``default_layers(model)``; None for a model without submodules, which it refuses."""
    try:
        return default_layers(model)
    except ValueError:
        return None


def _build_model(entry: ModelEntrySpec, device: torch.device) -> nn.Module:
    """The model of a study entry, in eval mode (a pretrained network's random twin for ``init = "random"``),
    shown the stimuli at ``input_size`` when given."""
    if entry.source == "pretrained" and entry.init == "random":
        model = zoo.load_pretrained(entry.spec.split(":", 1)[1], device=device, random_weights=True)
    else:
        model = zoo.load_model(entry.spec, weights=entry.weights, device=device)
    if entry.input_size is not None:
        if getattr(model, "preprocessing", None) is None:
            raise StudySpecError(f"model {entry.name!r}: input_size needs a model that states its preprocessing (a "
                                 "pretrained network, a zoo run, a torchvision or timm architecture)")
        model.preprocessing = dataclasses.replace(model.preprocessing, input_size=(entry.input_size,) * 2)
    return model.eval()


def _train_runs(spec: StudySpec, ctx: StudyContext) -> None:
    """Train the zoo models that the study trains into their run folders; a run already trained with the
    same settings is reused as it is (``zoo.train(..., resume=True)``)."""
    for index, entry in enumerate(spec.models):
        if entry.train is None:
            continue
        train = entry.train
        _status(ctx, f"training {entry.name!r}: {train['model']} on {train['dataset']} into {entry.spec}")
        started = time.perf_counter()
        # a run with a checkpoint is resumed (a finished one returned as it is); a folder left by a run killed
        # before its first checkpoint is replaced (only the files its manifest lists: a folder the toolkit
        # did not write is refused)
        resume = zoo.RunDir(entry.spec).has_checkpoint()
        try:
            zoo.train(train["model"], dataset=train["dataset"], out=entry.spec, epochs=train["epochs"],
                      seed=spec.seed if train["seed"] is None else train["seed"],
                      device=ctx.device, resume=resume, force=not resume and Path(entry.spec).exists(),
                      progress=ctx.progress, dataset_options=train["dataset_options"], **train["settings"])
        except (ValueError, FileExistsError) as err:
            raise StudySpecError(f"models[{index}].train (model {entry.name!r}): {err}") from None
        ctx.timings[f"train {entry.name}"] = time.perf_counter() - started


def _prepare(spec: StudySpec, ctx: StudyContext) -> tuple[dict[str, list[str]], dict[str, dict[str, Any]]]:
    """Build every model and resolve its layers (those the study trains after the others, so that a wrong
    name elsewhere is reported before any training), then load the stimuli: every name is checked before
    any data is read or anything recorded. Returns the layers of each model and what identifies its
    stimuli."""
    precheck_layers(spec)  # against the layer names stored when each model was last built: before any is built
    layers_by_model: dict[str, list[str]] = {}
    untrained = [(i, e) for i, e in enumerate(spec.models) if e.train is None]
    _build_models(spec, ctx, untrained, layers_by_model)
    _train_runs(spec, ctx)
    _build_models(spec, ctx, [(i, e) for i, e in enumerate(spec.models) if e.train is not None], layers_by_model)
    ctx.models = {entry.name: ctx.models[entry.name] for entry in spec.models}  # the file's order
    loaded: dict[str, tuple[Any, dict[str, Any]]] = {}
    data_by_model = {}
    for entry in (None, *spec.models):  # the study's own stimuli first: their labels are ctx.labels
        data = spec.data if entry is None or entry.data is None else entry.data
        key = json.dumps(dataclasses.asdict(data), sort_keys=True, default=str)
        if key not in loaded:
            loaded[key] = _load_stimuli(data, ctx)
        stimuli, described = loaded[key]
        if entry is None:
            ctx.labels = stimuli.labels
            continue
        model = ctx.models[entry.name]
        ctx.sources[entry.name] = {"source": entry.source, "spec": entry.spec, "weights": entry.weights,
                                   "init": entry.init}
        if entry.source == "run":
            ctx.run_dirs[entry.name] = Path(entry.spec)
        if is_language_model(model):
            continue  # read by the words analysis (its embedding tables), not recorded on the stimuli
        try:
            zoo.check_input_shape(model, stimuli, subject=f"the stimuli {data_words(data)}",
                                  advice=f"model {entry.name!r} needs the dataset it was trained on (its run "
                                  "folder's config.json names it)")
        except ValueError as err:
            raise StudySpecError(str(err)) from None
        ctx.stimuli[entry.name] = zoo.prepare_for(model, stimuli)
        ctx.data_of[entry.name] = data_words(data)
        data_by_model[entry.name] = described
    return layers_by_model, data_by_model


def _build_models(spec: StudySpec, ctx: StudyContext, entries: list[tuple[int, ModelEntrySpec]],
                  layers_by_model: dict[str, list[str]]) -> None:
    problems = []
    for index, entry in entries:
        _status(ctx, f"loading model {entry.name!r} ({entry.spec})")
        # a model without weights (a factory's, or an architecture's random init) is the same in every
        # run: seeded by the study's seed and its name, so adding another model changes nothing here
        torch.manual_seed(spec.seed + zlib.crc32(entry.name.encode()))
        model = _build_model(entry, ctx.device)
        remember_layers(entry, model, _auto_layers(model))  # stored even when this entry's layers are wrong
        try:
            layers_by_model[entry.name] = (
                default_layers(model) if entry.layers == "auto" else resolve_layers(model, list(entry.layers)))
        except (KeyError, ValueError) as err:
            problems.append(f"models[{index}].layers (model {entry.name!r}): {err.args[0] if err.args else err}")
        ctx.models[entry.name] = model
    if problems:
        raise StudySpecError("\n".join(problems))


# ----------------------------------------------------------------------------------------------
# record


def _data_key(data: dict[str, Any], model: nn.Module) -> str:
    """What makes the stimuli a model sees: the data, the subset, and the model's preprocessing."""
    described = {**data, "preprocessing": repr(getattr(model, "preprocessing", None))}
    return hashlib.sha256(json.dumps(described, sort_keys=True, default=str).encode()).hexdigest()


def _record(spec: StudySpec, ctx: StudyContext, layers_by_model: dict[str, list[str]],
            data_by_model: dict[str, dict[str, Any]]) -> None:
    cache = RecordingCache(spec.out / "cache")
    ctx.cache = cache.folder
    by_name = {entry.name: entry for entry in spec.models}
    for name, model in ctx.models.items():
        if name not in data_by_model:  # a language model
            continue
        layers = layers_by_model[name]
        _status(ctx, f"recording {len(layers)} layers of {name!r}")
        entry = by_name[name]
        ctx.keys[name] = (cache.model_key(model), _data_key(data_by_model[name], model))
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


def _provenance(spec: StudySpec, ctx: StudyContext, versions: dict[str, str], meter: StepMeter) -> "Section":
    from reports import Section, render_fragment, table_html

    by_name = {entry.name: entry for entry in spec.models}
    models = []
    for name in ctx.models:
        entry, keys = by_name[name], ctx.keys.get(name, ("", ""))
        weights = entry.weights or ("random (init)" if entry.init == "random" else "its own")
        models.append({"model": name, "source": entry.spec, "weights": weights, "weights fingerprint": keys[0][:16],
                       "stimuli": ctx.data_of.get(name, ""), "stimuli fingerprint": keys[1][:16],
                       "layers": ", ".join(ctx.recordings[name].layers) if name in ctx.recordings else "",
                       "kept of each layer": entry.reduce if isinstance(entry.reduce, str) else
                       ", ".join(f"{k}: {v}" for k, v in entry.reduce.items())})
    steps = [{"step": step, "seconds": round(usage.seconds, 1), "peak RAM (MiB)": round(usage.peak_rss / 2**20),
              **({"peak GPU (MiB)": round(usage.peak_gpu / 2**20)} if usage.peak_gpu is not None else {})}
             for step, usage in meter.usage.items()]
    steps += [{"step": step, "seconds": round(seconds, 1)} for step, seconds in ctx.timings.items()]
    per_step = all(usage.per_step for usage in meter.usage.values())
    memory_note = ("Peak RAM is each step's own peak resident memory (the peak is reset before each step)."
                   if per_step else "Peak RAM is the process's peak resident memory up to the end of each step.")
    cache = [{"model": name, "layers recorded by this run": ", ".join(ctx.recorded.get(name, [])) or "none",
              "layers read from the cache": ", ".join(ctx.from_cache.get(name, [])) or "none"}
             for name in ctx.models]
    body = render_fragment(
        "sections/study_provenance.html.j2",
        seed=spec.seed,
        models=table_html(pd.DataFrame(models)),
        steps=table_html(pd.DataFrame(steps)),
        memory_note=memory_note,
        cache=table_html(pd.DataFrame(cache)),
        study_text=spec.text,
        versions=table_html(pd.DataFrame([{"package": k, "version": v} for k, v in versions.items()])),
    )
    n_cached = sum(len(v) for v in ctx.from_cache.values())
    n_total = n_cached + sum(len(v) for v in ctx.recorded.values())
    total = sum(usage.seconds for usage in meter.usage.values())
    peak = max((usage.peak_rss for usage in meter.usage.values()), default=0)
    return Section("Reproducibility", body, summary=f"{n_cached} of {n_total} layer recordings came from the cache; "
                                                    f"{total:.0f} s, peak RAM {peak / 2**30:.1f} GiB")


def _findings_section(findings: list[Finding], sections: dict[str, list["Section"]]) -> "Section":
    """The summary: each finding with a link to the section that shows it (the one of its stimuli)."""
    from reports import Section, render_fragment

    topics: dict[str, list[dict[str, str]]] = {}
    for finding in findings:
        candidates = sections.get(finding.analysis, [])
        target = next((s for s in candidates if finding.stimuli and s.title.endswith(finding.stimuli)),
                      candidates[0] if candidates else None)
        topics.setdefault(finding.topic, []).append(
            {"text": finding.text, "anchor": target.anchor if target else "", "section": target.title if target else ""})
    intro = ("What the analyses found, computed from their results (also in results/findings.csv); each line links "
             "to the section that shows it.")
    body = render_fragment("sections/findings.html.j2", intro=intro, topics=list(topics.items()))
    plural = lambda n, word, words: f"{n} {word if n == 1 else words}"
    summary = f"{plural(len(findings), 'finding', 'findings')} from {plural(len(topics), 'kind', 'kinds')} of analysis"
    return Section("Findings", body, summary=summary)


def _put_first(report: "Report", section: "Section", after: int = 0) -> None:
    """Add ``section`` (its anchor made unique among the others) and move it to position ``after``."""
    report.add(section)
    report.sections.insert(after, report.sections.pop())


def _write(spec: StudySpec, ctx: StudyContext, sections: dict[str, list["Section"]], failed: dict[str, str],
           findings: list[Finding], meter: StepMeter) -> Path:
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
    groups = sorted(set(ctx.data_of.values()))
    stimuli = (f"{n_stimuli} stimuli of {data_words(data)}" if len(groups) <= 1 else
               f"stimuli: {'; '.join(groups)}")
    report = Report(spec.title, subtitle=f"{stimuli}, {len(ctx.models)} models, seed {spec.seed}")
    if spec.description:
        report.add(Section("About this study", render_fragment("sections/text.html.j2", text=spec.description)))
    for analysis_sections in sections.values():
        for section in analysis_sections:
            report.add(section)
    for name, reason in failed.items():
        report.add(Section(f"Left out: {name}", render_fragment("sections/text.html.j2", text=reason),
                           summary="this analysis could not run on this study"))
    report.add(_provenance(spec, ctx, versions, meter))
    if findings:
        _put_first(report, _findings_section(findings, sections), after=1 if spec.description else 0)
    path = report.write(spec.out / "report.html")
    _status(ctx, f"report: {path}")
    return path
