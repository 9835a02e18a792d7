"""Studies: the steps that record models, analyse the recordings and write a report.

This is the orchestration above the four packages of the flow (zoo → probe engine → analyses →
reports) and the only code that imports all of them. A study (``Study.from_file("study.toml")``,
``probe analyze``) names models, stimuli and analyses; its steps share a ``StudyContext`` and each
return report sections. ``probe demo`` is one built-in study (``demo_spec``) run by the same code.
Experiments that train models as part of an analysis (the MAE and masked-LM mask-ratio sweeps,
class-split transfer, fine-tuning against linear read-outs, CLIP with held-out classes, greedy layer-wise pretraining, the 2-D function views) and the one-call top patches live here for the same reason.

Names are imported on first use (PEP 562), so that checking a study file does not import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what static tools and readers see; at run time each name loads on first use
    from probe.study._context import StudyContext  # noqa: F401
    from probe.study._demo import demo_spec, demo_study, run_demo  # noqa: F401
    from probe.study._spec import StudySpec, StudySpecError  # noqa: F401
    from probe.study._study import ANALYSIS_STEPS, Study, StudyResult, default_layers  # noqa: F401
    from probe.study._template import STUDY_TEMPLATE, write_template  # noqa: F401
    from probe.study._top_patches import record_top_patches  # noqa: F401
    from probe.study._transfer_experiments import (  # noqa: F401
        ClassSplitTransfer,
        MaskRatioSweep,
        class_split_transfer,
        encode_features,
        mask_ratio_sweep,
    )
    from probe.study._pretraining_experiments import (  # noqa: F401
        GreedyLayerwiseResult,
        GreedyStack,
        greedy_layerwise_experiment,
        greedy_pretrain,
    )
    from probe.study._finetune_experiments import FinetuneComparison, finetune_comparison  # noqa: F401
    from probe.study._function_experiments import FunctionExperiment, function_views_experiment  # noqa: F401
    from probe.study._code_plane import CodePlane, code_plane  # noqa: F401
    from probe.study._language_experiments import MaskedLMRatioSweep, masked_lm_ratio_sweep  # noqa: F401
    from probe.study._caption_experiments import CaptionExperiment, clip_zero_shot_experiment, measure_captions  # noqa: F401

# public name -> the module that defines it
_EXPORTS = {
    "Study": "probe.study._study",
    "StudyResult": "probe.study._study",
    "ANALYSIS_STEPS": "probe.study._study",
    "default_layers": "probe.study._study",
    "StudySpec": "probe.study._spec",
    "StudySpecError": "probe.study._spec",
    "STUDY_TEMPLATE": "probe.study._template",
    "write_template": "probe.study._template",
    "StudyContext": "probe.study._context",
    "demo_spec": "probe.study._demo",
    "demo_study": "probe.study._demo",
    "run_demo": "probe.study._demo",
    "record_top_patches": "probe.study._top_patches",
    "encode_features": "probe.study._transfer_experiments",
    "MaskRatioSweep": "probe.study._transfer_experiments",
    "mask_ratio_sweep": "probe.study._transfer_experiments",
    "FinetuneComparison": "probe.study._finetune_experiments",
    "finetune_comparison": "probe.study._finetune_experiments",
    "ClassSplitTransfer": "probe.study._transfer_experiments",
    "class_split_transfer": "probe.study._transfer_experiments",
    "MaskedLMRatioSweep": "probe.study._language_experiments",
    "masked_lm_ratio_sweep": "probe.study._language_experiments",
    "CaptionExperiment": "probe.study._caption_experiments",
    "clip_zero_shot_experiment": "probe.study._caption_experiments",
    "measure_captions": "probe.study._caption_experiments",
    "GreedyLayerwiseResult": "probe.study._pretraining_experiments",
    "GreedyStack": "probe.study._pretraining_experiments",
    "greedy_layerwise_experiment": "probe.study._pretraining_experiments",
    "greedy_pretrain": "probe.study._pretraining_experiments",
    "FunctionExperiment": "probe.study._function_experiments",
    "function_views_experiment": "probe.study._function_experiments",
    "CodePlane": "probe.study._code_plane",
    "code_plane": "probe.study._code_plane",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'probe.study' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
