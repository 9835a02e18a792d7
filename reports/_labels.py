"""Point labels that never overlap: each label takes the nearest free spot around its point.

Labels are placed one at a time in display coordinates. Each tries positions on rings of growing
radius around its point (right, above, left, below and the diagonals first) and takes the first whose
box overlaps no label placed before and no point; a label that had to move away from its point gets a
thin leader line. Searching ring by ring makes the result deterministic and overlap-free by
construction, unlike force-based repulsion, which may stop before every overlap is resolved.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.text import Annotation

__all__ = ["place_labels"]

_RING_STEP = 6.0  # points between rings
_MAX_RINGS = 400
_ANGLES = np.radians([0, 90, 180, 270, 45, 135, 225, 315, 22.5, 67.5, 112.5, 157.5, 202.5, 247.5, 292.5, 337.5])
_LEADER_FROM = 4.0  # points beyond the marker: labels placed farther get a leader line
_HORIZONTAL = {0.0: "left", 0.5: "center", 1.0: "right"}
_VERTICAL = {0.0: "bottom", 0.5: "center", 1.0: "top"}


def _anchor(direction: float) -> float:
    """Which part of the label faces the point along one axis: its start (0), middle (0.5) or end (1)."""
    return 0.0 if direction > 0.3 else 1.0 if direction < -0.3 else 0.5


def _overlaps(box: np.ndarray, boxes: np.ndarray) -> bool:
    """Whether ``box`` (x0, y0, x1, y1) overlaps any row of ``boxes``."""
    if not len(boxes):
        return False
    return bool(np.any((box[0] < boxes[:, 2]) & (boxes[:, 0] < box[2]) & (box[1] < boxes[:, 3]) & (boxes[:, 1] < box[3])))


def _inside(box: np.ndarray, frame: np.ndarray) -> bool:
    return bool(box[0] >= frame[0] and box[1] >= frame[1] and box[2] <= frame[2] and box[3] <= frame[3])


def _candidates(point: np.ndarray, size: np.ndarray, start: float, pixels_per_point: float):
    """Yield (box, offset in points, ha, va) on rings around ``point`` (pixels), from ``start`` pixels out."""
    for ring in range(_MAX_RINGS):
        radius = start + ring * _RING_STEP * pixels_per_point
        for angle in _ANGLES if ring else _ANGLES[:8]:
            dx, dy = np.cos(angle), np.sin(angle)
            fx, fy = _anchor(dx), _anchor(dy)
            corner = point + radius * np.array([dx, dy]) - size * np.array([fx, fy])
            offset = (radius * dx / pixels_per_point, radius * dy / pixels_per_point)
            yield np.concatenate([corner, corner + size]), offset, _HORIZONTAL[fx], _VERTICAL[fy]


def _place(candidates, obstacles: dict[str, np.ndarray], frame: np.ndarray, pad: float):
    """The first candidate clear of labels and points and inside ``frame``; failing that, the first
    clear of labels."""
    fallback = None
    for box, offset, ha, va in candidates:
        padded = box + np.array([-pad, -pad, pad, pad])
        if _overlaps(padded, obstacles["labels"]):
            continue
        if _inside(box, frame) and not _overlaps(padded, obstacles["points"]):
            return box, offset, ha, va
        fallback = fallback or (box, offset, ha, va)
    return fallback


def place_labels(
    ax: Axes,
    xy: np.ndarray,
    texts: Sequence[str],
    colors: Sequence[str] | None = None,
    fontsize: float = 7,
    marker_radius: float | np.ndarray = 4.0,
    pad: float = 2.0,
    avoid: Sequence[Artist] = (),
) -> list[Annotation]:
    """Label points so that no two labels overlap and labels avoid the points.

    Call it after everything else is drawn on ``ax`` and its limits are final (it draws the figure once
    to read them).

    Parameters
    ----------
    ax
        The axes holding the points.
    xy
        Array of shape (n_points, 2): the points, in data coordinates.
    texts
        One label per point.
    colors
        One colour per leader line; default grey.
    fontsize
        Label size in points.
    marker_radius
        Radius in typographic points that labels keep clear of around each point: one value, or an
        array of shape (n_points,).
    pad
        Pixels kept free between labels.
    avoid
        Artists already drawn (a legend, say) that labels must not cover.

    Returns
    -------
    list of matplotlib.text.Annotation
        The labels, in the order of ``texts``.
    """
    fig = ax.figure
    fig.canvas.draw()  # fixes the limits (equal aspect is applied at draw time) and gives a renderer
    renderer = fig.canvas.get_renderer()
    ax.set_autoscale_on(False)
    pixels_per_point = fig.dpi / 72.0
    xy = np.asarray(xy, dtype=np.float64)
    points = ax.transData.transform(xy)
    reach = np.broadcast_to(np.asarray(marker_radius, dtype=np.float64), len(points))[:, None] * pixels_per_point
    taken = [artist.get_window_extent(renderer).extents for artist in avoid]
    obstacles = {"points": np.hstack([points - reach, points + reach]), "labels": np.reshape(taken, (-1, 4))}
    frame = ax.get_window_extent(renderer).extents
    annotations = []
    for i, (point, text) in enumerate(zip(points, texts)):
        probe = ax.text(0, 0, text, fontsize=fontsize)
        extent = probe.get_window_extent(renderer)
        probe.remove()
        size = np.array([extent.width, extent.height])
        start = reach[i, 0] + pad + 1.5 * pixels_per_point
        box, offset, ha, va = _place(_candidates(point, size, start, pixels_per_point), obstacles, frame, pad)
        obstacles["labels"] = np.vstack([obstacles["labels"], box])
        far = np.hypot(*offset) * pixels_per_point > start + _LEADER_FROM * pixels_per_point
        color = colors[i] if colors is not None else "grey"
        arrow = {"arrowstyle": "-", "lw": 0.5, "color": color, "alpha": 0.7, "shrinkA": 1, "shrinkB": 2} if far else None
        annotations.append(ax.annotate(text, xy[i], xytext=offset, textcoords="offset points", ha=ha, va=va,
                                       fontsize=fontsize, arrowprops=arrow, annotation_clip=False))
    return annotations
