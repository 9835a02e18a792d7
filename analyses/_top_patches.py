"""Top-activating patches per unit (Zeiler & Fergus 2014; Zhou et al. 2015), cropped to the exact field.

A recording with a ``probe.TopK`` reducer keeps, in one streaming pass, each unit's k best (and
worst) stimuli and where in the map they happened (O(units x k) memory, plus the pooled response of
every stimulus for histograms and class selectivity). ``top_patches`` is the small second pass over
the winning stimuli only: it crops each winner's receptive field from its stimulus, and re-runs
the layer on a few of them to check that the recorded values are reproducible.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, SequentialSampler

from analyses._memory import check_memory
from analyses._receptive_field import (
    IrregularFieldError,
    ReceptiveField,
    _parse_layout,
    _run_to_layer,
    _token_grid,
    find_layer,
    receptive_field,
)

__all__ = ["TopPatches", "ClassSelectivity", "top_patches", "class_selectivity", "crop_boxes"]

# Padding outside the image is drawn as a grey checkerboard, a pattern natural images rarely hold.
_CHECKER = (0.42, 0.58)


@dataclass
class ClassSelectivity:
    """Class-selectivity index per unit (Morcos et al. 2018).

    ``index = (mu_max - mu_rest) / (mu_max + mu_rest)``, with ``mu_max`` the largest class-conditional
    mean response and ``mu_rest`` the mean of the other classes' means. The index is defined for
    non-negative responses (0: no preference, 1: responds to one class only). For a unit with a
    negative class mean, the class means are first shifted by their minimum (so the least-driving
    class sits at 0) and ``shifted`` is True: the index then measures the preferred class's lead over
    the others relative to the response range, and always lies in [0, 1]. A unit whose class means
    are all equal gets 0.

    Attributes
    ----------
    index
        Array of shape (n_units,).
    preferred_class
        Array of shape (n_units,): the class with the largest mean.
    class_means
        Array of shape (n_classes, n_units).
    shifted
        Boolean array of shape (n_units,).
    class_names
        One name per class, or None.
    """

    index: np.ndarray
    preferred_class: np.ndarray
    class_means: np.ndarray
    shifted: np.ndarray
    class_names: tuple[str, ...] | None = None

    def to_frame(self) -> pd.DataFrame:
        """One row per unit: unit, selectivity, preferred class (and its name), shifted."""
        frame = pd.DataFrame(
            {
                "unit": np.arange(self.index.size),
                "selectivity": self.index,
                "preferred_class": self.preferred_class,
                "shifted": self.shifted,
            }
        )
        if self.class_names is not None:
            frame["preferred_name"] = [self.class_names[c] for c in self.preferred_class]
        return frame


def class_selectivity(
    responses: np.ndarray, labels: np.ndarray, class_names: Sequence[str] | None = None
) -> ClassSelectivity:
    """Morcos et al.'s class-selectivity index of every unit.

    Parameters
    ----------
    responses
        Array of shape (n_stimuli, n_units), e.g. each unit's max-over-space response per stimulus.
    labels
        Integer array of shape (n_stimuli,); -1 marks unlabelled stimuli, which are left out.
    class_names
        Optional names of the classes 0..n_classes-1.

    Returns
    -------
    ClassSelectivity
        See its docstring for the treatment of negative responses.
    """
    responses = np.asarray(responses, dtype=np.float64)
    labels = np.asarray(labels).astype(np.int64).ravel()
    if responses.ndim != 2 or labels.shape[0] != responses.shape[0]:
        raise ValueError(
            f"responses must have shape (n_stimuli, n_units) and labels shape (n_stimuli,), "
            f"got {responses.shape} and {labels.shape}"
        )
    known = labels >= 0
    classes = np.unique(labels[known])
    if classes.size < 2:
        raise ValueError(f"class selectivity needs at least 2 labelled classes, found {classes.size}")
    class_means = np.stack([responses[labels == c].mean(axis=0) for c in classes])
    shifted = class_means.min(axis=0) < 0
    means = np.where(shifted, class_means - class_means.min(axis=0), class_means)
    best = means.argmax(axis=0)
    mu_max = means.max(axis=0)
    mu_rest = (means.sum(axis=0) - mu_max) / (classes.size - 1)
    denominator = mu_max + mu_rest
    index = np.divide(mu_max - mu_rest, denominator, out=np.zeros_like(mu_max), where=denominator > 0)
    names = None if class_names is None else tuple(class_names)
    return ClassSelectivity(index, classes[best], class_means, shifted, names)


def crop_boxes(
    images: np.ndarray, boxes: np.ndarray, size: tuple[int, int] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Crop boxes that may run past the border; the outside is a grey checkerboard.

    Parameters
    ----------
    images
        Array of shape (n, C, H, W) in display space [0, 1].
    boxes
        Int array of shape (n, 4): (top, left, bottom, right), half-open; all boxes the same size.
    size
        (h, w) of the crops; default the first box's size.

    Returns
    -------
    patches
        Array of shape (n, C, h, w).
    masks
        Bool array of shape (n, h, w): True where the pixel lies inside the image.
    """
    images = np.asarray(images)
    n, channels, height, width = images.shape
    boxes = np.asarray(boxes, dtype=np.int64).reshape(n, 4)
    if size is None:
        size = (int(boxes[0, 2] - boxes[0, 0]), int(boxes[0, 3] - boxes[0, 1])) if n else (0, 0)
    h, w = size
    checker = np.where((np.arange(h)[:, None] + np.arange(w)[None, :]) % 2 == 0, *_CHECKER)
    patches = np.broadcast_to(checker, (n, channels, h, w)).astype(np.float32)
    masks = np.zeros((n, h, w), dtype=bool)
    for i, (top, left, bottom, right) in enumerate(boxes):
        if (bottom - top, right - left) != (h, w):
            raise ValueError(f"box {i} has size {(bottom - top, right - left)}, expected {(h, w)}")
        src_top, src_left = max(top, 0), max(left, 0)
        src_bottom, src_right = min(bottom, height), min(right, width)
        if src_top >= src_bottom or src_left >= src_right:
            continue
        dst = (slice(src_top - top, src_bottom - top), slice(src_left - left, src_right - left))
        patches[i, :, dst[0], dst[1]] = images[i, :, src_top:src_bottom, src_left:src_right]
        masks[i, dst[0], dst[1]] = True
    return patches, masks


@dataclass
class TopPatches:
    """The stimuli and patches that drive each unit of a layer most (and least).

    Attributes
    ----------
    layer
        The layer's module name.
    topk
        The streaming pass's ``probe.TopKResult`` (values, stimuli, positions, pooled responses).
    patches, masks
        Arrays of shape (n_units, k, C, h, w) in display space [0, 1] and (n_units, k, h, w)
        (True inside the image) for the top entries, best first.
    bottom_patches, bottom_masks
        The same for the bottom (most suppressive) entries, lowest first.
    boxes, bottom_boxes
        Int arrays of shape (n_units, k, 4): each crop's (top, left, bottom, right) in the stimulus.
    field
        The receptive field: of the map positions (maps), of the patch tokens (tokens; measured),
        or None (units, and tokens whose fields are no regular grid: whole stimuli).
    labels
        Int array of shape (n_stimuli,), -1 where unknown.
    selectivity
        ``ClassSelectivity`` of the pooled responses when at least two classes are labelled, else None.
    class_names
        The dataset's class names, or None.
    max_recheck_error
        Largest absolute difference between recorded values and a re-run of the layer on the best
        and worst stimulus of each unit (at most 64 stimuli): 0 up to rounding for deterministic data.
    field_note
        What the crops show when it is not simply each entry's receptive field at its position, for a
        caption: tokens (their patch, or the whole stimulus after attention), whole-stimulus fields;
        None otherwise.
    """

    def unit_names(self, rows: np.ndarray | Sequence[int]) -> np.ndarray:
        """The layer's unit indices of these rows: themselves, unless the result covers some units only
        (made from ``TopKResult.select(units)``)."""
        rows = np.asarray(rows, dtype=np.int64)
        ids = getattr(self.topk, "unit_ids", None)
        return rows if ids is None else np.asarray(ids)[rows]

    layer: str
    topk: Any
    patches: np.ndarray
    masks: np.ndarray
    bottom_patches: np.ndarray
    bottom_masks: np.ndarray
    boxes: np.ndarray
    bottom_boxes: np.ndarray
    field: ReceptiveField | None
    labels: np.ndarray = field(repr=False)
    selectivity: ClassSelectivity | None = None
    class_names: tuple[str, ...] | None = None
    max_recheck_error: float = 0.0
    field_note: str | None = None

    @property
    def n_units(self) -> int:
        """Number of units of the layer."""
        return self.topk.n_units

    @property
    def k(self) -> int:
        """Top entries per unit."""
        return self.topk.top_values.shape[1]

    @property
    def pooled(self) -> np.ndarray | None:
        """Array of shape (n_stimuli, n_units): each stimulus's pooled response (max or mean over space)."""
        return self.topk.pooled

    def to_frame(self) -> pd.DataFrame:
        """One row per entry: layer, unit, kind, rank, stimulus, position, y, x, value, top, left, bottom, right, label."""
        frame = self.topk.to_frame()
        boxes = np.concatenate([b.reshape(-1, 4) for b in (self.boxes, self.bottom_boxes) if b.size])
        frame[["top", "left", "bottom", "right"]] = boxes
        frame["label"] = self.labels[frame["stimulus"].to_numpy()]
        return frame

    def select_units(
        self,
        units: Literal["selective", "random", "strongest"] | Sequence[int] = "selective",
        n_units: int = 8,
        seed: int = 0,
    ) -> np.ndarray:
        """Choose units to show.

        Parameters
        ----------
        units
            ``"selective"``: the most class-selective (needs labels; else the strongest);
            ``"strongest"``: largest top value; ``"random"``: a seeded sample; or explicit indices.
        n_units
            How many (ignored for explicit indices).
        seed
            Seed of the random sample.

        Returns
        -------
        numpy.ndarray
            Int array of unit indices.
        """
        return select_units(self.topk, self.selectivity, units, n_units, seed)

    def grid(
        self, units: Sequence[int], which: Literal["top", "bottom"] = "top", padding: int = 1, stretch: bool = False
    ) -> np.ndarray:
        """Tile patches into one image: one row per unit, one column per rank.

        Parameters
        ----------
        units
            Unit indices, one row each.
        which
            Top or bottom entries.
        padding
            White pixels between patches.
        stretch
            Stretch each patch's in-image pixels to [0, 1] (display only; the padding keeps its
            checkerboard). Helps to see the structure of low-contrast patches.

        Returns
        -------
        numpy.ndarray
            Array of shape (rows, columns) for one channel or (rows, columns, 3), values in [0, 1].
        """
        patches = {"top": self.patches, "bottom": self.bottom_patches}[which][np.asarray(units)]
        masks = {"top": self.masks, "bottom": self.bottom_masks}[which][np.asarray(units)]
        if patches.shape[1] == 0:
            raise ValueError(f"no {which} patches were kept; record with probe.TopK(k, bottom_k=...) and k, bottom_k >= 1")
        patches = patches.astype(np.float64)
        if stretch:
            inside = np.broadcast_to(masks[:, :, None], patches.shape)
            low = np.where(inside, patches, np.inf).min(axis=(2, 3, 4), keepdims=True)
            high = np.where(inside, patches, -np.inf).max(axis=(2, 3, 4), keepdims=True)
            scale = np.where(high > low, high - low, 1.0)
            patches = np.where(inside, (patches - np.where(np.isfinite(low), low, 0)) / scale, patches)
        n_rows, n_columns, channels, h, w = patches.shape
        grid = np.ones((n_rows * (h + padding) - padding, n_columns * (w + padding) - padding, channels))
        for row in range(n_rows):
            for column in range(n_columns):
                top, left = row * (h + padding), column * (w + padding)
                grid[top : top + h, left : left + w] = np.moveaxis(patches[row, column], 0, -1)
        return grid[..., 0] if channels == 1 else grid

    def histogram(self, unit: int, bins: int = 30) -> tuple[np.ndarray, np.ndarray]:
        """Histogram of a unit's pooled response over all stimuli: (counts, bin edges)."""
        if self.pooled is None:
            raise ValueError("pooled responses were not kept; record with probe.TopK(..., keep_pooled=True)")
        return np.histogram(self.pooled[:, unit], bins=bins)


def unit_selectivity(topk: Any, labels: np.ndarray, class_names: Sequence[str] | None = None) -> ClassSelectivity | None:
    """The class selectivity of a top-k recording's units (from its pooled responses); None without
    pooled responses or with fewer than two labelled classes."""
    labels = np.asarray(labels)
    if topk.pooled is None or np.unique(labels[labels >= 0]).size < 2:
        return None
    return class_selectivity(topk.pooled, labels, class_names)


def select_units(
    topk: Any,
    selectivity: ClassSelectivity | None,
    units: Literal["selective", "random", "strongest"] | Sequence[int] = "selective",
    n_units: int = 8,
    seed: int = 0,
) -> np.ndarray:
    """The units to show of a top-k recording (see ``TopPatches.select_units``); also before cropping,
    so that only the shown units are cropped (``topk.select(units)``)."""
    n_total = topk.n_units
    n_units = min(int(n_units), n_total)
    if not isinstance(units, str):
        chosen = np.asarray(units, dtype=np.int64).ravel()
        if chosen.size == 0 or chosen.min() < 0 or chosen.max() >= n_total:
            raise ValueError(f"unit indices must lie in [0, {n_total}), got {chosen.tolist()}")
        return chosen
    if units == "selective" and selectivity is None:
        units = "strongest"
    scores = {
        "selective": lambda: selectivity.index if selectivity is not None else None,
        "strongest": lambda: topk.top_values[:, 0] if topk.top_values.shape[1] else -topk.bottom_values[:, 0],
        "random": lambda: np.random.default_rng(seed).permutation(n_total)[::-1].astype(float),
    }
    if units not in scores:
        raise ValueError(f"units must be 'selective', 'strongest', 'random' or a list of indices, got {units!r}")
    # stable sort on the negated score: ties keep the lower unit index first
    return np.argsort(-scores[units](), kind="stable")[:n_units]


# ----------------------------------------------------------------------------------------------
# data access


class _Stimuli:
    """Sequential batches and random access over a Dataset, a sequential DataLoader or a tensor."""

    def __init__(self, data: Dataset | DataLoader | torch.Tensor, batch_size: int):
        if isinstance(data, DataLoader):
            if not isinstance(data.sampler, SequentialSampler):
                raise ValueError("top_patches needs a DataLoader without shuffling (stimulus i must be dataset[i])")
            batch_size, data = data.batch_size or batch_size, data.dataset
        if isinstance(data, np.ndarray):
            data = torch.from_numpy(data)
        self.data, self.batch_size = data, int(batch_size)
        if len(data) == 0:
            raise ValueError("the dataset is empty")
        self.info = getattr(data, "info", None)

    def __len__(self) -> int:
        return len(self.data)

    def get(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(self.data, torch.Tensor):
            return self.data[indices].float(), torch.full((len(indices),), -1, dtype=torch.int64)
        if hasattr(self.data, "get_batch"):
            images, labels = self.data.get_batch(indices)
            return images, torch.as_tensor(labels, dtype=torch.int64)
        items = [self.data[int(i)] for i in indices]
        images = torch.stack([torch.as_tensor(item[0] if isinstance(item, (tuple, list)) else item) for item in items])
        labels = [int(item[1]) if isinstance(item, (tuple, list)) and len(item) > 1 else -1 for item in items]
        return images.float(), torch.as_tensor(labels, dtype=torch.int64)

    def display(self, images: torch.Tensor) -> np.ndarray:
        """Images in [0, 1]: the dataset's ``info.denormalize`` when it has one, else min-max per image."""
        if self.info is not None and hasattr(self.info, "denormalize"):
            return self.info.denormalize(images.float()).clamp(0, 1).numpy()
        flat = images.float().flatten(1)
        low, high = flat.min(dim=1).values, flat.max(dim=1).values
        scale = torch.where(high > low, high - low, torch.ones_like(high))
        shape = (-1,) + (1,) * (images.ndim - 1)
        return ((images.float() - low.view(shape)) / scale.view(shape)).numpy()


# ----------------------------------------------------------------------------------------------
# boxes per layout


def _boxes(result, field_, stimulus_hw, which):
    """(boxes (units, k, 4), crop size) for the kept entries of one kind."""
    y, x = result.coordinates(which)
    whole = np.array([0, 0, *stimulus_hw])
    if field_ is None:  # units, or fields that are no regular grid: whole stimuli
        return np.broadcast_to(whole, (*y.shape, 4)).copy(), tuple(stimulus_hw)
    if result.layout == "maps":  # (y, x) on the H, W grid, whatever the layout of the recorded tensor
        return field_.boxes(y, x), field_.size
    token = y - field_.prefix_tokens
    row, column = np.divmod(np.maximum(token, 0), field_.map_shape[1])
    boxes = field_.boxes(row, column)
    boxes[token < 0] = whole  # class/register tokens see the whole image
    return boxes, field_.size


def _token_field(model, layer, input_shape, n_tokens, patch_size):
    """(field or None, note) of a token layer: the measured field of its patch tokens."""
    image_hw = ((1,) + tuple(input_shape[1:]))[-2:]
    patch, _, n_extra = _token_grid(model, n_tokens, image_hw, patch_size)
    extra = " (class/register tokens: the whole stimulus, resized)" if n_extra else ""
    try:
        field_ = receptive_field(model, layer, input_shape, method="gradient", layout="tokens", patch_size=patch)
    except IrregularFieldError as err:
        return None, (
            f"The tokens' measured receptive fields are no regular grid ({err}); each crop is the whole stimulus."
        )
    if field_.whole_input:
        return field_, (
            "Each token's measured receptive field is the whole stimulus (attention mixes all patches), "
            "so each crop is the whole stimulus, not the token's patch."
        )
    if (field_.size, field_.stride, field_.start) == (patch, patch, (0, 0)):
        return field_, (
            f"Each token sees exactly its {patch[0]}×{patch[1]} px patch (measured); each crop is that patch{extra}."
        )
    return field_, (
        f"Each token's measured receptive field is {field_.size[0]}×{field_.size[1]} px, more than its "
        f"{patch[0]}×{patch[1]} px patch; each crop is that field{extra}."
    )


def _render(stimuli: _Stimuli, stimulus: np.ndarray, boxes: np.ndarray, size: tuple[int, int]):
    """Crops (n_units, k, C, h, w) and masks (n_units, k, h, w), loading the winners chunk by chunk."""
    n_units, k = stimulus.shape
    channels = stimuli.get(torch.tensor([0]))[0].shape[1]
    crops = np.empty((n_units * k, channels, *size), np.float32)
    masks = np.ones((n_units * k, *size), bool)
    unique, inverse = np.unique(stimulus.ravel(), return_inverse=True)
    flat_boxes = boxes.reshape(-1, 4)
    for chunk_start in range(0, unique.size, stimuli.batch_size):
        chunk = unique[chunk_start : chunk_start + stimuli.batch_size]
        images = stimuli.display(stimuli.get(torch.as_tensor(chunk))[0])
        if images.ndim == 3:  # 1-d stimuli (C, L) are shown as one row
            images = images[:, :, None]
        entries = np.flatnonzero((inverse >= chunk_start) & (inverse < chunk_start + chunk.size))
        local = inverse[entries] - chunk_start
        whole = np.all(flat_boxes[entries] == [0, 0, images.shape[2], images.shape[3]], axis=1)
        if tuple(size) != images.shape[2:] and whole.any():  # class tokens: the whole image, resized
            resized = torch.nn.functional.adaptive_avg_pool2d(torch.from_numpy(images[local[whole]]), size)
            crops[entries[whole]] = resized.numpy()
            entries, local = entries[~whole], local[~whole]
        if entries.size:
            crops[entries], masks[entries] = crop_boxes(images[local], flat_boxes[entries], size)
    return crops.reshape(n_units, k, channels, *size), masks.reshape(n_units, k, *size)


def _recheck(model, stimuli, layer, result, device, source_layout, max_stimuli: int = 64) -> float:
    """Spot check: re-run the layer on the best (and worst) stimulus of each unit, up to ``max_stimuli``
    stimuli in all; returns the largest |recorded - recomputed| value."""
    stimulus, position, values = [], [], []
    for which in ("top", "bottom"):
        kept = getattr(result, f"{which}_values")
        if kept.size:
            stimulus.append(getattr(result, f"{which}_stimulus")[:, 0])
            position.append(getattr(result, f"{which}_position")[:, 0])
            values.append(kept[:, 0])
    stimulus, position, values = (np.concatenate(a) for a in (stimulus, position, values))
    rows = np.arange(result.n_units) if getattr(result, "unit_ids", None) is None else np.asarray(result.unit_ids)
    units = np.tile(rows, len(stimulus) // result.n_units)  # the layer's channel of each row
    unique = np.unique(stimulus)[:max_stimuli]
    checked = np.isin(stimulus, unique)
    with torch.inference_mode():
        output = _run_to_layer(model, layer, stimuli.get(torch.as_tensor(unique))[0].to(device)).float()
    if result.layout == "tokens":
        output = output.transpose(1, 2)
    elif result.layout == "maps" and source_layout == "channels_last":  # (n, H, W, C) -> (n, C, H, W)
        output = output.permute(0, 3, 1, 2)
    output = output.reshape(output.shape[0], output.shape[1], -1).cpu().numpy()  # (n, units, positions)
    recomputed = output[np.searchsorted(unique, stimulus[checked]), units[checked], position[checked]]
    return float(np.abs(recomputed - values[checked]).max(initial=0.0))


def top_patches(
    model: nn.Module,
    data: Dataset | DataLoader | torch.Tensor,
    topk: Any,
    *,
    labels: np.ndarray | None = None,
    batch_size: int = 256,
    patch_size: int | None = None,
    field_method: Literal["auto", "exact", "gradient"] = "auto",
    amp: bool = False,
) -> TopPatches | dict[str, TopPatches]:
    """Crop the top-k (and bottom-k) stimuli of every unit to their receptive fields.

    This is the analysis of a recording made with a ``probe.TopK`` reducer: it computes each
    layer's receptive field, crops the winning stimuli, re-runs the layer on a few of them to check
    that the recorded values are reproducible, and scores class selectivity. The recording itself
    is the engine's job::

        rec = probe.record(model, data, ["conv1"], reducers={"topk": lambda: probe.TopK(9)})
        patches = analyses.top_patches(model, data, rec.extras["topk"], labels=rec.labels)

    (``probe.study.record_top_patches`` does both in one call.)

    Parameters
    ----------
    model
        The recorded module; the small second pass runs where it lives, in eval mode.
    data
        The recorded stimuli: a Dataset returning ``(image, label)`` (zoo datasets), a DataLoader
        without shuffling, or a tensor of shape (n_stimuli, C, H, W). Stimulus i must be the
        recording's stimulus i.
    topk
        A ``probe.TopKResult``, or ``{layer: TopKResult}`` (a recording's ``extras`` entry); a
        layer may be ``name#k``, the k-th call of a module that runs several times per pass.
        Maps give (stimulus, y, x) entries cropped to the receptive field of (y, x), read with the
        result's ``source_layout`` (``"channels_first"`` (batch, C, H, W) or ``"channels_last"``
        (batch, H, W, C); absent: channels-first). Tokens (batch, T, D) give (stimulus, token)
        entries cropped to the token's *measured* field: its patch for a patch embedding, the
        whole stimulus once attention has mixed the patches (``field_note`` says which; class
        tokens: the whole image, resized). Vectors (batch, D) give whole stimuli.
    labels
        Int array of shape (n_stimuli,), -1 where unknown (a recording's ``labels``), for class
        selectivity; None: no labels.
    batch_size
        Stimuli loaded at a time for the crops and the re-check.
    patch_size
        ViT patch side in pixels (default: the model's ``patch_size`` attribute or config entry, or
        timm's ``patch_embed.patch_size``).
    field_method
        How the receptive field of maps is obtained (see ``analyses.receptive_field``); token
        fields are always measured.
    amp
        True when the recording ran under autocast: the re-check then tolerates half-precision
        differences.

    Returns
    -------
    TopPatches
        Or ``{layer: TopPatches}`` when ``topk`` is a mapping.

    Raises
    ------
    KeyError
        A layer that ``model`` does not have.
    ValueError
        Labels of the wrong length; a layer without unit structure; a receptive field that can be
        neither computed nor measured (``IrregularFieldError`` for maps whose fields are no
        regular grid; for tokens the whole stimulus is shown instead).
    """
    results = dict(topk) if isinstance(topk, Mapping) else {topk.layer: topk}
    if not results:
        raise ValueError("top_patches got no TopK result; record the layers with a probe.TopK reducer first")
    for name in results:
        find_layer(model, name)
    stimuli = _Stimuli(data, batch_size)
    if labels is None:
        labels = np.full(len(stimuli), -1, dtype=np.int64)
    labels = np.asarray(labels, dtype=np.int64).ravel()
    for name, result in results.items():
        if result.n_stimuli != len(stimuli) or labels.size != len(stimuli):
            raise ValueError(
                f"layer {name!r} was recorded over {result.n_stimuli} stimuli, but data holds {len(stimuli)} "
                f"and labels {labels.size}; pass the data and labels of that recording"
            )
    patches = {
        name: _second_pass(model, stimuli, name, result, labels, patch_size, field_method, amp)
        for name, result in results.items()
    }
    return patches if isinstance(topk, Mapping) else patches[topk.layer]


def _second_pass(model, stimuli, layer, result, labels, patch_size, field_method, amp) -> TopPatches:
    """Receptive field, crops of the winners, re-check of their values, class selectivity."""
    first_image = stimuli.get(torch.tensor([0]))[0][0]
    image_hw = ((1,) + tuple(first_image.shape[1:]))[-2:]
    field_, note, source_layout = None, None, None
    if result.layout == "maps":  # the engine's layout of the raw output ("" or absent: channels-first)
        source_layout = _parse_layout(getattr(result, "source_layout", "") or "channels_first")[0]
        field_ = receptive_field(model, layer, tuple(first_image.shape), method=field_method, layout=source_layout)
        if field_.whole_input:
            note = "Every position's receptive field is the whole stimulus; each crop is the whole stimulus."
    elif result.layout == "tokens":
        field_, note = _token_field(model, layer, tuple(first_image.shape), result.map_shape[0], patch_size)
    boxes, size = _boxes(result, field_, image_hw, "top")
    bottom_boxes, _ = _boxes(result, field_, image_hw, "bottom")
    channels = int(first_image.shape[0]) if first_image.ndim == 3 else 1
    entries = result.top_stimulus.size + result.bottom_stimulus.size
    check_memory(entries * (channels * 4 + 1) * int(np.prod(size)),
                 f"analyses.top_patches on layer {layer!r} ({result.n_units} units, {entries} crops of "
                 f"{size[0]}x{size[1]} px)",
                 "crop some units only: top_patches(model, data, topk.select(units)), or a smaller k")
    patches, masks = _render(stimuli, result.top_stimulus, boxes, size)
    bottom_patches, bottom_masks = _render(stimuli, result.bottom_stimulus, bottom_boxes, size)

    # the second pass runs where the model lives, in eval mode like the first; every module's own
    # mode is restored (a BatchNorm or Dropout left in train mode stays so)
    modes = {name: module.training for name, module in model.named_modules()}
    model_device = next(iter(model.parameters()), torch.empty(0)).device
    try:
        recheck = _recheck(model.eval(), stimuli, layer, result, model_device, source_layout)
    finally:
        for name, module in model.named_modules():
            module.training = modes.get(name, module.training)
    scale = max(float(np.abs(result.top_values).max(initial=0)), float(np.abs(result.bottom_values).max(initial=0)), 1.0)
    if recheck > (3e-2 if amp else 1e-3) * scale:  # the re-check runs in float32
        warnings.warn(
            f"re-running layer {layer!r} on the winning stimuli changed their values by up to {recheck:.3g}: "
            "the data or the model is not deterministic (random augmentation? dropout in train mode?)",
            stacklevel=3,
        )
    info = stimuli.info
    class_names = getattr(info, "class_names", None)
    selectivity = unit_selectivity(result, labels, class_names)
    return TopPatches(
        layer=layer,
        topk=result,
        patches=patches,
        masks=masks,
        bottom_patches=bottom_patches,
        bottom_masks=bottom_masks,
        boxes=boxes,
        bottom_boxes=bottom_boxes,
        field=field_,
        labels=labels,
        selectivity=selectivity,
        class_names=None if class_names is None else tuple(class_names),
        max_recheck_error=recheck,
        field_note=note,
    )
