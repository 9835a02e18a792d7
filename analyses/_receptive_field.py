"""Receptive fields of convolutional units: computed exactly where the path allows, measured otherwise.

Exact: the model is traced with ``torch.fx`` and the path from the input to the layer is walked in
forward order. When that path is a chain (every node has one tensor input) made only of modules and
functions with known geometry — Conv1d/2d, MaxPool/AvgPool 1d/2d (modules or ``F.*_pool*d``), and
element-wise modules and functions (BatchNorm, activations, Dropout, Identity) — the field follows
from the classic recursion over (kernel k, stride s, padding p, dilation d) per spatial axis::

    size  <- size + d * (k - 1) * jump
    start <- start - p * jump
    jump  <- jump * s

Measured: where the path branches (residual additions, attention, concatenation), holds unknown
modules, or cannot be traced, the field is measured with gradients: a float64 copy of the model is
run on several random inputs, one position of the layer (all its channels summed) is back-propagated
to the input, and the bounding box of the pixels with a non-zero gradient in *any* draw is the
field. The union over random draws matters: a single input leaves zero gradient where a ReLU is off
or where a max-pool did not pick a pixel, which would shrink the field; float64 keeps tiny gradients
from rounding to zero. Each probed position gets its own draws in one batch, so one backward pass
measures them all. The first two, the middle and the last two positions along the middle row and
column are probed; box edges clipped by the image border are left out of the fit of (size, stride,
start). When every box along an axis covers the whole input (global pooling, attention), the field
is the whole input; when too few edges are unclipped, the answer is an error rather than a guess
(the input is never enlarged to see past the border: adaptive pooling would change the geometry).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable, Literal

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from zoo._names import unknown_name_error

__all__ = ["ReceptiveField", "receptive_field", "find_layer"]

Geometry = tuple[tuple[int, int, int, int], ...]  # per spatial axis: (kernel, stride, padding, dilation)


class _NotExact(Exception):
    """The path to the layer has no closed-form receptive field (the reason is the message)."""


class _StopForward(Exception):
    """Raised by a hook to end the forward pass once the recorded layer has run."""


def find_layer(model: nn.Module, layer: str) -> nn.Module:
    """Return ``dict(model.named_modules())[layer]``; an unknown name lists the nearest valid ones."""
    modules = dict(model.named_modules())
    if layer not in modules:
        names = [name for name in modules if name]
        raise unknown_name_error("layer", layer, names, listing="`probe layers RUN_OR_MODEL` or model.named_modules()")
    return modules[layer]


@dataclass(frozen=True)
class ReceptiveField:
    """The input region that can influence each position of a layer's map.

    All tuples hold one entry per spatial axis (y, x); 1-d maps are read as one row (y has size 1).

    Attributes
    ----------
    layer
        The layer's module name.
    input_shape
        (C, H, W) of the input the field was computed for.
    map_shape
        (h, w) of the layer's map for that input.
    size
        Field size in input pixels (h, w).
    stride
        Input pixels between neighbouring map positions (jump).
    start
        Top-left input pixel of the field of map position (0, 0); negative when it runs into padding.
    method
        ``"exact"`` or ``"gradient"``.
    """

    layer: str
    input_shape: tuple[int, ...]
    map_shape: tuple[int, int]
    size: tuple[int, int]
    stride: tuple[int, int]
    start: tuple[int, int]
    method: str

    def box(self, y: int, x: int) -> tuple[int, int, int, int]:
        """Input box (top, left, bottom, right) of map position (y, x), half-open like a slice.

        The box may run past the image border (negative top/left, bottom > H, right > W).
        """
        top = self.start[0] + int(y) * self.stride[0]
        left = self.start[1] + int(x) * self.stride[1]
        return top, left, top + self.size[0], left + self.size[1]

    def boxes(self, y: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Boxes of many positions: int array of shape (*y.shape, 4) with (top, left, bottom, right)."""
        top = self.start[0] + np.asarray(y, dtype=np.int64) * self.stride[0]
        left = self.start[1] + np.asarray(x, dtype=np.int64) * self.stride[1]
        return np.stack([top, left, top + self.size[0], left + self.size[1]], axis=-1)

    def to_frame(self) -> pd.DataFrame:
        """One row per spatial axis: axis, size, stride, start, map size."""
        return pd.DataFrame(
            {
                "layer": self.layer,
                "axis": ["y", "x"],
                "size": self.size,
                "stride": self.stride,
                "start": self.start,
                "map_size": self.map_shape,
                "method": self.method,
            }
        )


# ----------------------------------------------------------------------------------------------
# exact: torch.fx path walk


def _pair(value: Any, n_axes: int) -> tuple[int, ...]:
    values = tuple(value) if isinstance(value, (tuple, list)) else (value,) * n_axes
    if len(values) != n_axes or not all(isinstance(v, int) for v in values):
        raise _NotExact(f"unsupported geometry argument {value!r}")
    return values


def _conv_geometry(module: nn.Module) -> Geometry:
    n_axes = module.weight.ndim - 2
    kernel, stride, dilation = (_pair(getattr(module, a), n_axes) for a in ("kernel_size", "stride", "dilation"))
    if module.padding == "valid":
        padding = (0,) * n_axes
    elif module.padding == "same":
        padding = tuple(d * (k - 1) // 2 for k, d in zip(kernel, dilation))
    else:
        padding = _pair(module.padding, n_axes)
    if getattr(module, "padding_mode", "zeros") != "zeros" and any(padding):
        # reflect/replicate/circular padding reads pixels from the far side; the box stays valid
        # for reflect/replicate near the border but not for circular, so measure instead.
        if module.padding_mode == "circular":
            raise _NotExact("circular padding")
    return tuple(zip(kernel, stride, padding, dilation))


def _pool_geometry(n_axes: int, kernel: Any, stride: Any, padding: Any = 0, dilation: Any = 1) -> Geometry:
    kernel = _pair(kernel, n_axes)
    stride = kernel if stride is None or stride == [] or stride == () else _pair(stride, n_axes)
    return tuple(zip(kernel, stride, _pair(padding, n_axes), _pair(dilation, n_axes)))


def _module_pool_geometry(module: nn.Module) -> Geometry:
    n_axes = 1 if isinstance(module, (nn.MaxPool1d, nn.AvgPool1d)) else 2
    return _pool_geometry(n_axes, module.kernel_size, module.stride, module.padding, getattr(module, "dilation", 1))


def _functional_pool(n_axes: int) -> Callable[..., Geometry]:
    def geometry(input: Any, kernel_size: Any, stride: Any = None, padding: Any = 0, dilation: Any = 1, *_, **kw):
        if kw.get("dilation") is not None:
            dilation = kw["dilation"]
        return _pool_geometry(n_axes, kernel_size, kw.get("stride", stride), kw.get("padding", padding), dilation)

    return geometry


_ELEMENTWISE_MODULES = (
    nn.BatchNorm1d, nn.BatchNorm2d, nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.GELU, nn.SiLU,
    nn.Sigmoid, nn.Tanh, nn.Softplus, nn.Mish, nn.Hardswish, nn.Hardtanh, nn.PReLU,
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Identity,
)  # fmt: skip
_MODULE_RULES: dict[type, Callable[[nn.Module], Geometry | None]] = {
    nn.Conv1d: _conv_geometry,
    nn.Conv2d: _conv_geometry,
    nn.MaxPool1d: _module_pool_geometry,
    nn.MaxPool2d: _module_pool_geometry,
    nn.AvgPool1d: _module_pool_geometry,
    nn.AvgPool2d: _module_pool_geometry,
    **{cls: (lambda module: None) for cls in _ELEMENTWISE_MODULES},
}
_ELEMENTWISE_FUNCTIONS = (
    F.relu, F.relu6, F.leaky_relu, F.elu, F.gelu, F.silu, F.sigmoid, F.tanh, F.softplus, F.dropout,
    F.dropout2d, torch.relu, torch.sigmoid, torch.tanh, torch.nn.functional.hardtanh,
)  # fmt: skip
_FUNCTION_RULES: dict[Any, Callable[..., Geometry | None]] = {
    F.max_pool1d: _functional_pool(1),
    F.max_pool2d: _functional_pool(2),
    F.avg_pool1d: _functional_pool(1),
    F.avg_pool2d: _functional_pool(2),
    **{fn: (lambda *a, **kw: None) for fn in _ELEMENTWISE_FUNCTIONS},
}
_ELEMENTWISE_METHODS = {"relu", "sigmoid", "tanh", "contiguous", "clone", "float", "double", "half"}


def _traced_path(model: nn.Module, layer: str) -> tuple[list[Any], torch.fx.GraphModule]:
    """fx nodes from the input to the layer's output, in forward order; _NotExact if not a chain."""
    try:
        graph_module = torch.fx.symbolic_trace(model)
    except Exception as err:  # noqa: BLE001 - any tracing failure means "measure instead"
        raise _NotExact(f"torch.fx cannot trace the model ({type(err).__name__}: {err})") from None
    inside = [
        node
        for node in graph_module.graph.nodes
        if (node.op == "call_module" and (node.target == layer or node.target.startswith(layer + ".")))
        or any(path == layer for path, _ in node.meta.get("nn_module_stack", {}).values())
    ]
    if not inside:
        raise _NotExact(f"layer {layer!r} does not appear in the traced graph")
    node, path = inside[-1], []
    placeholders = [n for n in graph_module.graph.nodes if n.op == "placeholder"]
    while node.op != "placeholder":
        inputs = [n for n in node.all_input_nodes if n.op != "get_attr"]
        if len(inputs) != 1:
            raise _NotExact(f"the path branches at {node.name!r} ({len(inputs)} tensor inputs)")
        path.append(node)
        node = inputs[0]
    if node is not placeholders[0]:
        raise _NotExact("the layer does not depend on the model's first input")
    return path[::-1], graph_module


def _exact_geometry(model: nn.Module, layer: str) -> list[Geometry]:
    """Geometry of every spatial step on the path to the layer; _NotExact when one is unknown."""
    path, graph_module = _traced_path(model, layer)
    modules = dict(graph_module.named_modules())
    steps = []
    for node in path:
        if node.op == "call_module":
            module = modules[node.target]
            rule = _MODULE_RULES.get(type(module))
            if rule is None:
                raise _NotExact(f"module {node.target!r} ({type(module).__name__}) has no known geometry")
            geometry = rule(module)
        elif node.op == "call_function" and node.target in _FUNCTION_RULES:
            geometry = _FUNCTION_RULES[node.target](*node.args, **node.kwargs)
        elif node.op == "call_method" and node.target in _ELEMENTWISE_METHODS:
            geometry = None
        else:
            target = getattr(node.target, "__name__", node.target)
            raise _NotExact(f"operation {node.name!r} ({node.op} {target}) has no known geometry")
        if geometry is not None:
            steps.append(geometry)
    return steps


def _compose(steps: list[Geometry], n_axes: int) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    size, jump, start = [1] * n_axes, [1] * n_axes, [0] * n_axes
    for geometry in steps:
        if len(geometry) != n_axes:
            raise _NotExact("the path mixes 1-d and 2-d operations")
        for axis, (kernel, stride, padding, dilation) in enumerate(geometry):
            size[axis] += dilation * (kernel - 1) * jump[axis]
            start[axis] -= padding * jump[axis]
            jump[axis] *= stride
    if n_axes == 1:  # 1-d maps are read as one row
        return (1, size[0]), (1, jump[0]), (0, start[0])
    return tuple(size), tuple(jump), tuple(start)


# ----------------------------------------------------------------------------------------------
# forward to the layer (shape) and gradient measurement


def _run_to_layer(model: nn.Module, layer: str, x: torch.Tensor) -> torch.Tensor:
    """The layer's output for input x; the forward pass stops right after the layer."""
    captured = {}

    def hook(module, inputs, output):
        captured["output"] = output
        raise _StopForward

    handle = find_layer(model, layer).register_forward_hook(hook)
    try:
        model(x)
    except _StopForward:
        pass
    finally:
        handle.remove()
    if "output" not in captured:
        raise ValueError(f"layer {layer!r} did not run in the model's forward pass")
    output = captured["output"]
    if not isinstance(output, torch.Tensor):
        raise ValueError(f"layer {layer!r} returns {type(output).__name__}, not a tensor")
    return output


def _map_shape(output: torch.Tensor, layer: str) -> tuple[int, int]:
    if output.ndim not in (3, 4):
        raise ValueError(
            f"layer {layer!r} has output of shape {tuple(output.shape)}: a receptive field needs a map "
            "(batch, C, H, W) or (batch, C, L); fully connected units see the whole stimulus"
        )
    return ((1,) + tuple(output.shape[2:]))[-2:]


def _positions(length: int) -> list[int]:
    """Map positions to probe along one axis: both ends (whose fields are clipped least on one
    side each) and the middle."""
    return sorted({0, 1, length // 2, length - 2, length - 1} & set(range(length)))


def _measure_boxes(model, layer, input_shape, n_draws, seed, max_batch: int = 64):
    """Gradient boxes along the middle row and column: {axis: [(position, low, high, extent)]}, map shape.

    Each probed position gets its own ``n_draws`` random inputs in one batch, so a single backward
    pass measures many positions at once (the batch items are independent in eval mode).
    """
    generator = torch.Generator().manual_seed(seed)
    device = next(iter(model.parameters()), torch.empty(0)).device
    with torch.no_grad():
        zeros = torch.zeros((1, *input_shape), dtype=torch.float64, device=device)
        map_shape = _map_shape(_run_to_layer(model, layer, zeros), layer)
    spatial = tuple(input_shape[1:]) if len(input_shape) == 3 else (1, input_shape[-1])
    middle = (map_shape[0] // 2, map_shape[1] // 2)
    probes = [(axis, int(p)) for axis in (0, 1) for p in _positions(map_shape[axis])]
    per_batch = max(1, max_batch // n_draws)
    boxes = {0: [], 1: []}
    for chunk_start in range(0, len(probes), per_batch):
        chunk = probes[chunk_start : chunk_start + per_batch]
        x = torch.randn((len(chunk) * n_draws, *input_shape), generator=generator, dtype=torch.float64).to(device)
        x.requires_grad_(True)
        with torch.enable_grad():
            output = _run_to_layer(model, layer, x)
            output = output.reshape(len(chunk), n_draws, output.shape[1], *map_shape)
            if not output.requires_grad:
                raise _NotExact(f"layer {layer!r} output has no gradient path to the input")
            total = sum(
                output[i, :, :, p, middle[1]].sum() if axis == 0 else output[i, :, :, middle[0], p].sum()
                for i, (axis, p) in enumerate(chunk)
            )
            (gradient,) = torch.autograd.grad(total, x, allow_unused=True)
        if gradient is None:
            raise _NotExact(f"layer {layer!r} output has no gradient path to the input")
        support = (gradient != 0).reshape(len(chunk), -1, *spatial).any(dim=1)  # (probes, H, W)
        for i, (axis, p) in enumerate(chunk):
            hits = torch.nonzero(support[i].any(dim=1 - axis)).flatten()
            if hits.numel() == 0:
                raise _NotExact(f"a position of layer {layer!r} has zero gradient for every input")
            boxes[axis].append((p, int(hits.min()), int(hits.max()) + 1, spatial[axis]))
    return boxes, map_shape


def _fit_axis(boxes: list[tuple[int, int, int, int]]) -> tuple[int, int, int] | None:
    """(size, stride, start) from boxes (position, low, high, extent) clipped to [0, extent); None if unknown."""
    lows = [(p, low) for p, low, high, extent in boxes if low > 0]
    highs = [(p, high) for p, low, high, extent in boxes if high < extent]
    if not lows or not highs:
        return None
    stride = None
    for edges in (lows, highs):
        if len(edges) >= 2:
            (p0, e0), (p1, e1) = edges[0], edges[-1]
            stride = (e1 - e0) // (p1 - p0)
            break
    if stride is None:
        if len(boxes) > 1:
            return None
        stride = 1  # a single position: any stride describes it
    start = min(low - p * stride for p, low in lows)
    size = max(high - p * stride for p, high in highs) - start
    return size, stride, start


def _gradient_field(model, layer, input_shape, n_draws, seed):
    measured = copy.deepcopy(model).double().eval()
    boxes, map_shape = _measure_boxes(measured, layer, tuple(input_shape), n_draws, seed)
    fits = []
    for axis in (0, 1):
        if axis == 0 and len(input_shape) == 2:  # 1-d maps are read as one row
            fits.append((1, 1, 0))
            continue
        fit = _fit_axis(boxes[axis])
        if fit is None and all(low == 0 and high == extent for _, low, high, extent in boxes[axis]):
            # every position sees the whole input along this axis (global pooling, attention, or
            # a field wider than the image): the input itself is the field
            fit = (boxes[axis][0][3], 0, 0)
        if fit is None:
            raise _NotExact(
                "the measured fields are clipped by the image border on both sides; record the model on "
                "larger images to measure them"
            )
        fits.append(fit)
    return tuple(f[0] for f in fits), tuple(f[1] for f in fits), tuple(f[2] for f in fits)


def receptive_field(
    model: nn.Module,
    layer: str,
    input_shape: tuple[int, ...],
    *,
    method: Literal["auto", "exact", "gradient"] = "auto",
    n_draws: int = 8,
    seed: int = 0,
) -> ReceptiveField:
    """Receptive field of the units of a convolutional layer.

    Parameters
    ----------
    model
        Any module whose forward takes a batch of inputs of ``input_shape``.
    layer
        Module name (from ``model.named_modules()``) whose output is a map (batch, C, H, W) or
        (batch, C, L).
    input_shape
        (C, H, W) or (C, L) of one stimulus.
    method
        ``"exact"`` (fx path walk; error where it does not apply), ``"gradient"`` (measured), or
        ``"auto"``: exact where possible, measured otherwise (see the module docstring).
    n_draws
        Random inputs whose gradient supports are united (gradient method).
    seed
        Seed of those inputs.

    Returns
    -------
    ReceptiveField
        With ``box(y, x)`` giving (top, left, bottom, right) for any map position.

    Raises
    ------
    KeyError
        Unknown layer (lists the nearest names).
    ValueError
        The layer has no map, or neither method can give the field.
    """
    if method not in ("auto", "exact", "gradient"):
        raise ValueError(f"method must be 'auto', 'exact' or 'gradient', got {method!r}")
    find_layer(model, layer)
    input_shape = tuple(int(s) for s in input_shape)
    was_training = model.training
    model.eval()
    try:
        device = next(iter(model.parameters()), torch.empty(0)).device
        with torch.no_grad():
            probe_input = torch.zeros((1, *input_shape), device=device)
            map_shape = _map_shape(_run_to_layer(model, layer, probe_input), layer)
        reasons = []
        if method in ("auto", "exact"):
            try:
                steps = _exact_geometry(model, layer)
                size, stride, start = _compose(steps, len(steps[0]) if steps else len(input_shape) - 1)
                return ReceptiveField(layer, input_shape, map_shape, size, stride, start, "exact")
            except _NotExact as err:
                reasons.append(f"exact: {err}")
        if method in ("auto", "gradient"):
            try:
                size, stride, start = _gradient_field(model, layer, input_shape, n_draws, seed)
                return ReceptiveField(layer, input_shape, map_shape, size, stride, start, "gradient")
            except _NotExact as err:
                reasons.append(f"gradient: {err}")
    finally:
        model.train(was_training)
    raise ValueError(
        f"the receptive field of layer {layer!r} can be neither computed nor measured ({'; '.join(reasons)}); "
        "pick a convolutional layer whose output depends differentiably on the input"
        + ("" if method == "auto" else ", or use method='auto'")
    )
