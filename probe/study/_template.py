"""The commented example study that ``probe init-study`` writes: a torchvision ResNet-18 from a weights file
on a folder of images, with every analysis and its default options.

The analyses' part is generated from ``ANALYSES``, so the defaults it shows are the ones a study runs with.
"""

from __future__ import annotations

import os
from pathlib import Path

from probe.study._spec import ANALYSES, ANALYSIS_HELP, OPT_IN_ANALYSES, _toml_value, _zoo_foundation

__all__ = ["STUDY_TEMPLATE", "write_template"]

_HEAD = """\
# A study for `probe analyze`: models, stimuli and analyses -> one report (report.html, results/*.csv).
# Relative paths resolve against this file's folder. Check it without running anything:
#   probe analyze study.toml --check

out = "runs/study"               # output folder (default: runs/<this file's name>)
title = "ResNet-18 on my images"
seed = 0                         # seed of everything random
device = "auto"                  # "auto", "cpu", "cuda", "cuda:1"
batch_size = 64                  # stimuli per batch when recording

[data]
dataset = "imagefolder:images"   # a folder of class sub-folders (images/cat/*.jpg...); or "digits", "photos"...
split = "train"                  # "test" needs images/test/ (and images/train/); a plain folder is all "train"
limit = 500                      # a seeded subset of the images (leave it out for all of them)
options = { image_size = 224 }   # keyword options of zoo.load_dataset (an image folder is read at 32 px by default)

[[models]]                       # one such table per model
name = "resnet18"                # any text, shown in the report
arch = "torchvision:resnet18"    # or run = "RUN_FOLDER", pretrained = "efficientnet-lite0", factory = "net.py:build"
weights = "resnet18.safetensors" # a .safetensors or .pt file; "pretrained": torchvision's own weights
layers = ["layer1", "layer2", "layer3", "layer4", "avgpool"]  # or "auto"; `probe layers MODEL` lists them
# reduce = "auto"                # what is kept of each layer, e.g. "spatial-mean", or { layer4 = "flatten" }
# input_size = 224               # the side in pixels at which the model sees the stimuli (default: its own)
# data = { dataset = "digits" }  # this model's own stimuli, shaped as [data] (default: the study's)

# A zoo model the study trains first (once: a run already trained with these settings is reused):
# [[models]]
# name = "cnn"
# run = "runs/cnn"
# train = { model = "cnn", dataset = "imagefolder:images", epochs = 5, dataset_options = { image_size = 32 } }
# (A pretrained network's random-weights baseline: pretrained = "efficientnet-lite0" with init = "random".)

# The analyses to run, each with its options at their defaults: uncomment an option to change it, and
# leave an analysis's table out to skip it (a study without any [analyses] runs every analysis).
"""

_OPTION_COLUMN = 32


def _analyses_part() -> str:
    lines = []
    for name, options in ANALYSES.items():
        # an analysis that trains models runs only when named: its table stays commented out
        off = "# " if name in OPT_IN_ANALYSES else ""
        lines += ["", f"{off}[analyses.{name}]  # {ANALYSIS_HELP[name]}"]
        for key, option in options.items():
            setting = f"# {key} (not set)" if option.default is None else f"# {key} = {_toml_value(option.default)}"
            lines.append(f"{setting:<{_OPTION_COLUMN}} # {option.help}")
    return "\n".join(lines) + "\n"


#: The example study ``probe init-study`` writes (TOML, with comments).
STUDY_TEMPLATE: str = _HEAD + _analyses_part()


def write_template(path: str | os.PathLike, force: bool = False) -> Path:
    """Write ``STUDY_TEMPLATE`` to ``path`` (atomically) and return the path.

    Parameters
    ----------
    path
        Where to write, e.g. ``"study.toml"``; missing folders are made.
    force
        Replace an existing file.

    Raises
    ------
    FileExistsError
        ``path`` exists and ``force`` is not given.
    """
    path = Path(path)
    if path.exists() and not force:
        raise FileExistsError(f"{path} exists; pass force=True to replace it")
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder; name the study file to write, e.g. {path / 'study.toml'}")
    _zoo_foundation("_io").atomic_write_text(path, STUDY_TEMPLATE)
    return path
