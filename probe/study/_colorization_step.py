"""The study's ``colorization`` analysis: what a colorization model makes of a few stimuli, and its colour error.

For each colorization model (zoo's ``colorization``: it sees the lightness L of an image and predicts its
colour ab in CIE Lab), a few of its stimuli are shown three ways: the grey input (the lightness with no
colour), the prediction (``model.colorize``) and the truth. The colour error of an image is the mean
Euclidean distance per pixel between the predicted and the true ab, in Lab units; predicting grey
(ab = 0) is the baseline. The model's ``evaluate`` gives the same numbers over all its stimuli.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from probe.study._context import StudyContext, display_pixels
from reports import Section, colorization_section
from zoo.models.colorization import lab_to_rgb

if TYPE_CHECKING:  # imported where used: _findings imports the finders of the steps
    from probe.study._findings import Finding

__all__ = ["ColorizationExamples", "colorization_analysis", "colorization_examples", "colorization_findings",
           "is_colorization_model", "shown_indices"]


@dataclass
class ColorizationExamples:
    """A colorization model's grey inputs, predictions and truths for a few stimuli, and its colour error.

    Attributes
    ----------
    model
        The model's name.
    indices
        The stimuli shown, shape (n_images,): rows of the model's stimuli.
    grey
        The grey inputs (the lightness with ab = 0, as sRGB), shape (n_images, H, W) in [0, 1].
    predicted
        The colorized images, shape (n_images, H, W, 3) in [0, 1].
    truth
        The stimuli themselves, shape (n_images, H, W, 3) in [0, 1].
    ab_error
        Per image shown, the mean ab error per pixel of the prediction (Lab units), shape (n_images,).
    grey_ab_error
        Per image shown, that of predicting grey (the mean length of the true ab), shape (n_images,).
    metrics
        ``model.evaluate`` over all the model's stimuli: ab_error, grey_ab_error, ab_error_ratio,
        bin_accuracy.
    n_stimuli
        How many stimuli ``metrics`` is computed over.
    """

    model: str
    indices: np.ndarray
    grey: np.ndarray = field(repr=False)
    predicted: np.ndarray = field(repr=False)
    truth: np.ndarray = field(repr=False)
    ab_error: np.ndarray = field(repr=False)
    grey_ab_error: np.ndarray = field(repr=False)
    metrics: dict[str, float] = field(default_factory=dict)
    n_stimuli: int = 0

    def to_frame(self) -> pd.DataFrame:
        """One row per image shown: model, index, ab_error, grey_ab_error."""
        return pd.DataFrame({"model": self.model, "index": self.indices, "ab_error": self.ab_error,
                             "grey_ab_error": self.grey_ab_error})


def is_colorization_model(model: Any) -> bool:
    """Whether a model is a colorization pretext model: family ``"pretext"`` with a ``colorize``."""
    return getattr(model, "family", None) == "pretext" and callable(getattr(model, "colorize", None))


def shown_indices(n_stimuli: int, n_images: int) -> np.ndarray:
    """``n_images`` (at most ``n_stimuli``) evenly spaced rows from the first to the last stimulus."""
    if n_stimuli < 1 or n_images < 1:
        raise ValueError(f"need at least one stimulus and one image, got {n_stimuli} and {n_images}")
    return np.unique(np.linspace(0, n_stimuli - 1, min(n_images, n_stimuli)).round().astype(np.int64))


@torch.no_grad()
def colorization_examples(model: Any, stimuli: Any, *, n_images: int = 6, name: str = "") -> ColorizationExamples:
    """Grey input, prediction and truth of ``n_images`` evenly spaced stimuli, their ab errors, and the
    model's ``evaluate`` over all the stimuli.

    Parameters
    ----------
    model
        A colorization model (``zoo.models.Colorization``) built for the stimuli's normalisation.
    stimuli
        A dataset of ``(image, label)``, images RGB of shape (3, H, W) normalised as the model expects;
        ``stimuli.info`` denormalises them.
    """
    model = model.eval()
    device = next(model.parameters()).device
    indices = shown_indices(len(stimuli), n_images)
    images = torch.stack([torch.as_tensor(stimuli[int(i)][0]) for i in indices]).float().to(device)
    lab = model.lab(images)
    truth_ab = lab[:, 1:]
    ab_error = (model.predict_ab(images) - truth_ab).norm(dim=1).mean(dim=(1, 2))
    grey_ab_error = truth_ab.norm(dim=1).mean(dim=(1, 2))
    grey_rgb = lab_to_rgb(torch.cat([lab[:, :1], torch.zeros_like(truth_ab)], dim=1))
    grey = display_pixels(stimuli, (grey_rgb - model.pixel_mean) / model.pixel_std)
    metrics = model.evaluate(stimuli, stimuli)
    return ColorizationExamples(
        model=name, indices=indices, grey=grey.mean(-1) if grey.ndim == 4 else grey,
        predicted=display_pixels(stimuli, model.colorize(images)), truth=display_pixels(stimuli, images),
        ab_error=ab_error.double().cpu().numpy(), grey_ab_error=grey_ab_error.double().cpu().numpy(),
        metrics={key: float(value) for key, value in metrics.items()}, n_stimuli=len(stimuli))


def colorization_analysis(ctx: StudyContext, *, models: Sequence[str] | str = "all", n_images: int = 6) -> list[Section]:
    """Grey input, prediction and truth of ``n_images`` stimuli of every colorization model of the study
    (``"all"``) or of those named, with their ab errors; the table ``colorization`` holds one row per image
    shown. A study without colorization models gets no section."""
    names = [n for n, m in ctx.models.items() if n in ctx.stimuli and is_colorization_model(m)] if models == "all" \
        else list(models)
    for name in names:
        if not is_colorization_model(ctx.models[name]):
            raise ValueError(f"colorization.models names {name!r}, which is not a colorization model (it needs a "
                             "pretext model with colorize, such as the zoo's 'colorization')")
    if not names:
        return []
    examples = [colorization_examples(ctx.models[name], ctx.stimuli[name], n_images=n_images, name=name)
                for name in names]
    ctx.results["colorization"] = {example.model: example for example in examples}
    ctx.add_table("colorization", pd.concat([example.to_frame() for example in examples]))
    return [colorization_section(examples)]


def colorization_findings(ctx: StudyContext) -> list[Finding]:
    """Per colorization model: its mean ab error over its stimuli against predicting grey."""
    from probe.study._findings import Finding

    findings = []
    for name, example in (ctx.results.get("colorization") or {}).items():
        metrics = example.metrics
        ratio = metrics["ab_error_ratio"]
        verdict = "better than" if ratio < 1 else "no better than"
        findings.append(Finding(
            "Colorization", f"{name} colours its {example.n_stimuli} stimuli {verdict} grey: mean ab error "
            f"{metrics['ab_error']:.1f} Lab units per pixel against {metrics['grey_ab_error']:.1f} for predicting grey "
            f"(ratio {ratio:.2f}).", "colorization", model=name, value=float(ratio)))
    return findings
