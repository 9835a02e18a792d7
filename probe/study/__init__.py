"""Studies: the steps that train zoo models, record them, analyse the recordings and write a report.

This is the orchestration above the four packages of the flow (zoo → probe engine → analyses →
reports) and the only code that imports all of them. ``probe demo`` is one built-in study: a list
of steps (``DEMO_STEPS``) that share a ``DemoContext`` and each return report sections. Experiments
that train models as part of an analysis (the MAE mask-ratio sweep, class-split transfer) and the
one-call top patches live here for the same reason.
"""

from probe.study._context import DemoContext
from probe.study._demo import DEMO_STEPS, run_demo
from probe.study._top_patches import record_top_patches
from probe.study._transfer_experiments import (
    ClassSplitTransfer,
    MaskRatioSweep,
    class_split_transfer,
    encode_features,
    mask_ratio_sweep,
)

__all__ = [
    "DemoContext",
    "DEMO_STEPS",
    "run_demo",
    "record_top_patches",
    "encode_features",
    "MaskRatioSweep",
    "mask_ratio_sweep",
    "ClassSplitTransfer",
    "class_split_transfer",
]
