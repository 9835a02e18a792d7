"""The code plane of an autoencoder: where the stimuli land in its code, and what it decodes across the plane.

For a code of two dimensions the plane is the code itself; for a wider code it is the plane of the codes'
first two principal components, through their mean (a grid point ``(a, b)`` decodes the code
``mean + a u1 + b u2``; the rest of the code stays at its mean). The grid spans the 2nd to the 98th
percentile of the stimuli's codes along each axis.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch

from probe.study._context import StudyContext, display_pixels
from reports import Section, code_plane_section
from zoo import iterate_batches

__all__ = ["CodePlane", "code_plane", "code_plane_analysis", "has_code_plane"]


@dataclass
class CodePlane:
    """Where stimuli land in an autoencoder's code, and the images it decodes over that plane.

    Attributes
    ----------
    model
        The model's name.
    code_dim
        Its code's width.
    points
        The stimuli's positions in the plane, shape (n_stimuli, 2).
    labels
        Their classes, shape (n_stimuli,) (-1 when unknown).
    axes
        The plane's two axis values of the grid, each of shape (n_grid,).
    decoded
        The decoded images over the grid, shape (n_grid, n_grid, H, W[, 3]) in [0, 1]; row i is the i-th
        value of the second axis (from top: largest), column j the j-th of the first.
    explained_variance
        The share of the codes' variance in the plane (1 for a 2-D code).
    class_names
        Names of the labels, when known.
    """

    model: str
    code_dim: int
    points: np.ndarray = field(repr=False)
    labels: np.ndarray = field(repr=False)
    axes: tuple[np.ndarray, np.ndarray] = field(repr=False)
    decoded: np.ndarray = field(repr=False)
    explained_variance: float = 1.0
    class_names: Sequence[str] | None = None

    def to_frame(self) -> pd.DataFrame:
        """One row per stimulus: model, code_dim, x, y, label."""
        return pd.DataFrame({"model": self.model, "code_dim": self.code_dim, "x": self.points[:, 0],
                             "y": self.points[:, 1], "label": self.labels})


def has_code_plane(model: Any) -> bool:
    """Whether a model has an ``encode`` to a flat code and a ``decode`` back to images (zoo autoencoders)."""
    return callable(getattr(model, "decode", None)) and callable(getattr(model, "encode", None)) and \
        getattr(model, "family", None) == "autoencoder"


@torch.no_grad()
def code_plane(model: Any, stimuli: Any, *, n_grid: int = 12, name: str = "", max_stimuli: int = 2000,
               device: str | torch.device = "cpu") -> CodePlane:
    """Encode the stimuli (at most ``max_stimuli``, the first ones), find the plane of their codes and decode a
    ``n_grid`` x ``n_grid`` grid over it.

    Parameters
    ----------
    model
        An autoencoder with ``encode(images) -> (n, code_dim)`` and ``decode(codes) -> images`` (a VAE's
        ``encode`` is its posterior mean).
    stimuli
        A dataset of ``(image, label)`` prepared for the model; ``stimuli.info`` denormalises the decoded images.
    """
    if n_grid < 2:
        raise ValueError(f"n_grid must be at least 2, got {n_grid}")
    model = model.eval().to(device)
    codes, labels = [], []
    for images, batch_labels in iterate_batches(stimuli, 256):
        codes.append(model.encode(images.to(device)).float().flatten(1).cpu())
        labels.append(torch.as_tensor(batch_labels))
        if sum(len(c) for c in codes) >= max_stimuli:
            break
    codes_array = torch.cat(codes)[:max_stimuli].double().numpy()
    label_array = torch.cat(labels)[:max_stimuli].numpy()
    if not np.isfinite(codes_array).all():
        raise ValueError(f"model {name!r} encodes some stimuli to NaN or infinite codes")
    mean = codes_array.mean(0)
    if codes_array.shape[1] == 2:
        basis, explained = np.eye(2), 1.0
    else:
        _, singular, vt = np.linalg.svd(codes_array - mean, full_matrices=False)
        basis, explained = vt[:2], float((singular[:2] ** 2).sum() / max((singular**2).sum(), 1e-300))
    points = (codes_array - mean) @ basis.T
    axes = tuple(np.linspace(*np.percentile(points[:, i], [2, 98]), n_grid) for i in range(2))
    a, b = np.meshgrid(axes[0], axes[1][::-1])  # top row: the largest value of the second axis
    grid_codes = mean + np.stack([a.ravel(), b.ravel()], axis=1) @ basis
    shown = display_pixels(stimuli, model.decode(torch.as_tensor(grid_codes, dtype=torch.float32, device=device)))
    return CodePlane(model=name, code_dim=codes_array.shape[1], points=points, labels=label_array, axes=axes,
                     decoded=shown.reshape(n_grid, n_grid, *shown.shape[1:]), explained_variance=explained,
                     class_names=getattr(getattr(stimuli, "info", None), "class_names", None))


def code_plane_analysis(ctx: StudyContext, *, models: Sequence[str] | str = "auto", n_grid: int = 12) -> list[Section]:
    """The code plane of every autoencoder of the study (``"auto"``) or of those named, on its stimuli; the
    table ``code-plane`` holds every stimulus's position. A study without autoencoders gets no section."""
    names = [n for n, m in ctx.models.items() if n in ctx.stimuli and has_code_plane(m)] if models == "auto" else \
        list(models)
    for name in names:
        if not has_code_plane(ctx.models[name]):
            raise ValueError(f"code_plane.models names {name!r}, which is not an autoencoder (it has no decode)")
    if not names:
        return []
    planes = [code_plane(ctx.models[name], ctx.stimuli[name], n_grid=n_grid, name=name, device=ctx.device)
              for name in names]
    ctx.results["code_plane"] = {plane.model: plane for plane in planes}
    ctx.add_table("code-plane", pd.concat([plane.to_frame() for plane in planes]))
    return [code_plane_section(planes)]
