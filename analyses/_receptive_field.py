"""Receptive fields of map units and tokens: computed exactly where the path allows, measured otherwise.

Layouts. A layer's output is read as channels-first maps (batch, C, H, W) or (batch, C, L),
channels-last maps (batch, H, W, C) (timm Swin stages, a LayerNorm or Linear over the last axis of a
4-d tensor) or tokens (batch, T, D) of a ViT, whose last ``gh * gw`` tokens form the patch grid
(earlier ones are class/register tokens). ``layout="auto"`` never guesses from the shape: it reads
the layout off the module that produced the tensor (conv, pool, norm layers: channels-first;
LayerNorm/Linear over the last axis, timm ``output_fmt``, Swin blocks: channels-last or tokens;
activations, dropout and containers: whatever produced their input or output), then, if that says
nothing, off which axes grow when the input grows; failing both it refuses and asks for ``layout=``.
Map positions (y, x) always index the H and W axes, whatever the layout; for tokens (y, x) is the
token's cell in the patch grid.

Calls. A module that runs several times per forward pass (a shared ReLU) is addressed as
``name#k``, its k-th call (counting from 1), as ``probe.record`` names its recordings; the plain
name of such a module is refused as ambiguous.

Exact: the model is traced with ``torch.fx`` and the graph from the input to the layer's call is
walked as a DAG in forward order. Every tensor on the way gets its field: per spatial axis a regular
grid (size, stride, start) — position p sees input pixels [start + p * stride, start + p * stride +
size) — or the whole input (stride 0). Modules and functions that move the grid — Conv1d/2d
(modules or ``F.conv*d``), MaxPool/AvgPool 1d/2d (modules or ``F.*_pool*d``), constant padding —
follow the classic recursion over (kernel k, stride s, padding p, dilation d)::

    size  <- size + d * (k - 1) * jump
    start <- start - p * jump
    jump  <- jump * s

Element-wise operations (BatchNorm with running statistics, ``F.batch_norm`` in eval mode,
activations, Dropout, Identity, stochastic depth, ``+ - * /``, ``torch.add``/``mul``/``where``...)
give the union of the fields of their arguments that depend on the input: start = min(starts), end
= max(ends), same stride; parameters and constants add nothing. So do ``torch.cat`` along the
channels, ``chunk``/``split`` along the channels and channel slices. Global pooling (adaptive pooling
to 1, ``mean``/``sum``/``amax`` over the spatial axes with ``keepdim=True``) gives the whole input
when the fields of its map together cover it, and an argument of one position broadcast over a map
must see the whole input: so after a squeeze-excite gate every unit sees the whole input. Adaptive
pooling into equal windows is a pool. The walk gives up (and ``"auto"`` measures) where maps of
different strides merge, an operation is unknown (reshapes, attention, upsampling, normalisation
over space), the graph cannot be traced, or an in-place operation writes the input into a tensor
that is read again. Shapes come from one pass of the traced graph over an all-zeros input on a
copy of the model whose parameters are on the ``meta`` device (no arithmetic; the model itself
where that copy cannot run). Only channels-first maps are walked exactly; channels-last maps and
tokens are measured.

Measured: where the exact walk gives up (maps of different strides merge, attention, unknown
modules, no trace), the field is measured with gradients: a float64 copy of the model is
run on several random inputs, one position of the layer (its channels summed with random weights,
which no normalisation over channels can cancel) is back-propagated
to the input, and the bounding box of the pixels with a non-zero gradient in *any* draw is the
field. The union over random draws matters: a single input leaves zero gradient where a ReLU is off
or where a max-pool did not pick a pixel, which would shrink the field; float64 keeps tiny gradients
from rounding to zero. Each probed position gets its own draws in one batch, so one backward pass
measures them all. The first two, the middle and the last two positions along the middle row and
column are probed; box edges clipped by the image border are left out of the fit of (size, stride,
start), and every probed box must then equal the fitted one (clipped to the image): fields that do
not form a regular grid (windowed attention) are an error, not a guess. When every box along an
axis covers the whole input (global pooling, attention), the field is the whole input (stride 0);
when too few edges are unclipped, the answer is an error rather than a guess (the input is never
enlarged to see past the border: adaptive pooling would change the geometry). For tokens the grid
stride is the patch size when the edges alone cannot tell it (a 2 x 2 patch grid).
"""

from __future__ import annotations

import copy
import math
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from zoo._names import unknown_name_error
from zoo._reducer import first_tensor

__all__ = ["ReceptiveField", "find_layer", "receptive_field"]

Geometry = tuple[tuple[int, int, int, int], ...]  # per spatial axis: (kernel, stride, padding, dilation)
Layout = Literal["auto", "maps", "channels_first", "channels_last", "tokens"]
LAYOUTS = ("auto", "maps", "channels_first", "channels_last", "tokens")
# the engine's spellings (probe.TopKResult.source_layout, probe.record's layout=) mean the same
_LAYOUT_ALIASES = {
    "maps": "channels_first", "channels-first": "channels_first", "nchw": "channels_first", "ncl": "channels_first",
    "channels-last": "channels_last", "nhwc": "channels_last", "nlc": "tokens",
}  # fmt: skip
_LAYOUT_NDIM = {"channels_first": (3, 4), "channels_last": (4,), "tokens": (3,)}
_LAYOUT_HELP = (
    "pass layout='channels_first' (alias 'maps': (batch, C, H, W) or (batch, C, L)), "
    "'channels_last' ((batch, H, W, C)) or 'tokens' ((batch, T, D) of a ViT)"
)


class _NotExact(Exception):
    """The path to the layer has no closed-form receptive field (the reason is the message)."""


class _GraphFails(_NotExact):
    """The traced graph fails to run (on the meta device: a model that reads tensor values)."""


class _Irregular(_NotExact):
    """The measured fields do not form a regular grid of equal, evenly spaced boxes."""


class IrregularFieldError(ValueError):
    """The layer's receptive fields exist but are no regular grid (windowed attention): no single
    (size, stride, start) describes them. ``analyses.top_patches`` then shows whole stimuli."""


class _StopForward(Exception):
    """Raised by a hook to end the forward pass once the recorded layer has run."""


def _split_call(layer: str) -> tuple[str, int | None]:
    """``"name#k"`` -> (``"name"``, k); any other name -> (name, None)."""
    base, sep, suffix = layer.rpartition("#")
    if sep and base and suffix.isdigit() and int(suffix) >= 1:
        return base, int(suffix)
    return layer, None


def _resolve_layer(model: nn.Module, layer: str) -> tuple[nn.Module, str, int | None]:
    """(module, module name, call) of ``name`` or ``name#k`` (call None: the module's only call)."""
    modules = dict(model.named_modules())
    if layer in modules:
        return modules[layer], layer, None
    base, call = _split_call(layer)
    if call is not None and base in modules:
        return modules[base], base, call
    names = [name for name in modules if name]
    raise unknown_name_error("layer", layer, names, listing="`probe layers RUN_OR_MODEL` or model.named_modules()")


def find_layer(model: nn.Module, layer: str) -> nn.Module:
    """The module of a layer name: ``dict(model.named_modules())[layer]``, or the module of
    ``name#k`` (its k-th call in a forward pass, as ``probe.record`` names it). An unknown name
    lists the nearest valid ones."""
    return _resolve_layer(model, layer)[0]


@dataclass(frozen=True)
class ReceptiveField:
    """The input region that can influence each position of a layer's map.

    All tuples hold one entry per spatial axis (y, x); 1-d maps are read as one row (y has size 1).

    Attributes
    ----------
    layer
        The layer's name (``name#k`` for the k-th call of a module).
    input_shape
        (C, H, W) of the input the field was computed for.
    map_shape
        (h, w) of the layer's map for that input (for tokens: the patch grid).
    size
        Field size in input pixels (h, w).
    stride
        Input pixels between neighbouring map positions (jump); 0 along an axis where every
        position sees the whole input (then ``size`` is the input's extent and ``start`` 0).
    start
        Top-left input pixel of the field of map position (0, 0); negative when it runs into padding.
    method
        ``"exact"`` or ``"gradient"``.
    layout
        How the layer's output was read: ``"channels_first"``, ``"channels_last"`` or ``"tokens"``.
    prefix_tokens
        Tokens before the patch grid (class and register tokens); 0 for maps.
    """

    layer: str
    input_shape: tuple[int, ...]
    map_shape: tuple[int, int]
    size: tuple[int, int]
    stride: tuple[int, int]
    start: tuple[int, int]
    method: str
    layout: str = "channels_first"
    prefix_tokens: int = 0

    @property
    def whole_input(self) -> bool:
        """True when every position sees the whole input (global pooling, attention)."""
        return all(s == 0 for s in self.stride)

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
        """One row per spatial axis: axis, size, stride, start, map size, method, layout."""
        return pd.DataFrame(
            {
                "layer": self.layer,
                "axis": ["y", "x"],
                "size": self.size,
                "stride": self.stride,
                "start": self.start,
                "map_size": self.map_shape,
                "method": self.method,
                "layout": self.layout,
            }
        )


# ----------------------------------------------------------------------------------------------
# exact: a walk over the torch.fx graph
#
# The walk keeps, for every tensor on the way from the input to the layer, its field: per spatial
# axis (size, stride, start), the input pixels [start + p * stride, start + p * stride + size) that
# can reach its position p; stride 0 where every position sees the whole input (size is then the
# input's extent, start 0). Tensors that do not depend on the input (parameters, constants) have
# no field (None). Shapes come from running the traced graph once, up to the layer, on zeros.

_Field = tuple[tuple[int, int, int], ...]  # per spatial axis: (size, stride, start)


def _pair(value: Any, n_axes: int) -> tuple[int, ...]:
    values = tuple(value) if isinstance(value, (tuple, list, torch.Size)) else (value,) * n_axes
    if len(values) != n_axes or not all(isinstance(v, int) for v in values):
        raise _NotExact(f"unsupported geometry argument {value!r}")
    return values


def _conv_axes(kernel: Any, stride: Any, padding: Any, dilation: Any, n_axes: int) -> Geometry:
    kernel, stride, dilation = (_pair(v, n_axes) for v in (kernel, stride, dilation))
    if padding == "valid":
        padding = (0,) * n_axes
    elif padding == "same":  # the left/top pad; PyTorch puts the odd pixel of an even total on the right
        padding = tuple(d * (k - 1) // 2 for k, d in zip(kernel, dilation))
    else:
        padding = _pair(padding, n_axes)
    return tuple(zip(kernel, stride, padding, dilation))


def _conv_geometry(module: nn.Module) -> Geometry:
    n_axes = module.weight.ndim - 2
    geometry = _conv_axes(module.kernel_size, module.stride, module.padding, module.dilation, n_axes)
    # reflect/replicate padding reads pixels inside the box near the border; circular padding reads
    # the far side of the image, so measure instead
    if getattr(module, "padding_mode", "zeros") == "circular" and any(p for _, _, p, _ in geometry):
        raise _NotExact("circular padding")
    return geometry


def _functional_conv(input: Any, weight: Any, bias: Any = None, stride: Any = 1, padding: Any = 0, dilation: Any = 1,
                     groups: Any = 1) -> Geometry:  # fmt: skip
    if not isinstance(weight, torch.Tensor):
        raise _NotExact(f"unsupported convolution weight {type(weight).__name__}")
    return _conv_axes(tuple(weight.shape[2:]), stride, padding, dilation, weight.ndim - 2)


def _pool_geometry(n_axes: int, kernel: Any, stride: Any, padding: Any = 0, dilation: Any = 1) -> Geometry:
    kernel = _pair(kernel, n_axes)
    stride = kernel if stride is None or stride == [] or stride == () else _pair(stride, n_axes)
    return tuple(zip(kernel, stride, _pair(padding, n_axes), _pair(dilation, n_axes)))


def _module_pool_geometry(module: nn.Module) -> Geometry:
    if getattr(module, "return_indices", False):
        raise _NotExact(f"{type(module).__name__} returns indices")
    n_axes = 1 if isinstance(module, (nn.MaxPool1d, nn.AvgPool1d)) else 2
    return _pool_geometry(n_axes, module.kernel_size, module.stride, module.padding, getattr(module, "dilation", 1))


def _functional_max_pool(n_axes: int) -> Callable[..., Geometry]:
    def geometry(input: Any, kernel_size: Any, stride: Any = None, padding: Any = 0, dilation: Any = 1,
                 ceil_mode: Any = False, return_indices: Any = False) -> Geometry:  # fmt: skip
        if return_indices:
            raise _NotExact("max pooling that returns indices")
        return _pool_geometry(n_axes, kernel_size, stride, padding, dilation)

    return geometry


def _functional_avg_pool(n_axes: int) -> Callable[..., Geometry]:
    def geometry(input: Any, kernel_size: Any, stride: Any = None, padding: Any = 0, *_: Any, **__: Any) -> Geometry:
        return _pool_geometry(n_axes, kernel_size, stride, padding)  # (ceil_mode, count_include_pad, ...)

    return geometry


def _some(owner: Any, *names: str) -> tuple[Any, ...]:
    """The attributes of ``owner`` among ``names`` (older releases lack some)."""
    return tuple(getattr(owner, name) for name in names if hasattr(owner, name))


# modules and functions that move the grid: (kernel, stride, padding, dilation) per axis
_GEOMETRY_MODULES: dict[type, Callable[[nn.Module], Geometry]] = {
    nn.Conv1d: _conv_geometry,
    nn.Conv2d: _conv_geometry,
    nn.MaxPool1d: _module_pool_geometry,
    nn.MaxPool2d: _module_pool_geometry,
    nn.AvgPool1d: _module_pool_geometry,
    nn.AvgPool2d: _module_pool_geometry,
}
_GEOMETRY_FUNCTIONS: dict[Any, Callable[..., Geometry]] = {
    F.conv1d: _functional_conv,
    F.conv2d: _functional_conv,
    F.max_pool1d: _functional_max_pool(1),
    F.max_pool2d: _functional_max_pool(2),
    F.avg_pool1d: _functional_avg_pool(1),
    F.avg_pool2d: _functional_avg_pool(2),
}
# element-wise: each output position depends on the same position of every tensor argument (with
# broadcasting); parameters and constants add nothing. BatchNorm only in eval mode with running statistics.
_NORM_MODULES = (nn.BatchNorm1d, nn.BatchNorm2d)
_POINTWISE_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.CELU, nn.SELU, nn.GELU, nn.SiLU, nn.Mish, nn.Sigmoid,
    nn.Tanh, nn.Softplus, nn.Softsign, nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.PReLU, nn.RReLU,
    nn.LogSigmoid, nn.Tanhshrink, nn.Threshold, nn.Hardshrink, nn.Softshrink, nn.Dropout, nn.Dropout1d,
    nn.Dropout2d, nn.AlphaDropout, nn.FeatureAlphaDropout, nn.Identity,
)  # fmt: skip
_POINTWISE_FUNCTIONS = frozenset(
    (
        operator.add, operator.sub, operator.mul, operator.truediv, operator.neg, operator.pos, operator.abs,
        operator.pow, operator.iadd, operator.isub, operator.imul, operator.itruediv,
        *_some(torch, "add", "sub", "subtract", "mul", "multiply", "div", "divide", "true_divide", "maximum",
               "minimum", "clamp", "clip", "where", "relu", "relu_", "sigmoid", "tanh", "exp", "abs", "neg", "sqrt",
               "rsqrt", "square", "erf"),
        *_some(F, "relu", "relu_", "relu6", "leaky_relu", "leaky_relu_", "elu", "elu_", "selu", "celu", "gelu",
               "silu", "mish", "hardswish", "hardsigmoid", "hardtanh", "hardtanh_", "softplus", "softsign", "sigmoid",
               "tanh", "logsigmoid", "tanhshrink", "threshold", "prelu", "dropout", "dropout1d", "dropout2d",
               "alpha_dropout", "feature_alpha_dropout"),
    )
)  # fmt: skip
_POINTWISE_METHODS = frozenset(
    {
        "relu", "relu_", "sigmoid", "sigmoid_", "tanh", "tanh_", "exp", "abs", "neg", "sqrt", "rsqrt", "square",
        "clamp", "clamp_", "clip", "clamp_min", "clamp_max", "add", "add_", "sub", "sub_", "mul", "mul_", "div",
        "div_", "pow", "maximum", "minimum",
    }
)  # fmt: skip
_SELF_METHODS = frozenset({"contiguous", "clone", "float", "double", "half", "bfloat16", "to", "type", "type_as"})
# global and adaptive pooling; reductions over axes
_ADAPTIVE_MODULES = (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d)
_ADAPTIVE_FUNCTIONS = frozenset(
    _some(F, "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_max_pool1d", "adaptive_max_pool2d")
)
_REDUCE_FUNCTIONS = frozenset(_some(torch, "mean", "sum", "amax", "amin"))
_REDUCE_METHODS = frozenset({"mean", "sum", "amax", "amin"})
_CAT_FUNCTIONS = frozenset(_some(torch, "cat", "concat", "concatenate"))
_SPLIT_FUNCTIONS = frozenset(_some(torch, "chunk", "split"))
_SPLIT_METHODS = frozenset({"chunk", "split"})
_PAD_MODULES = _some(nn, "ZeroPad1d", "ZeroPad2d", "ConstantPad1d", "ConstantPad2d")
# operations known to return a new tensor (all others may return their input or a view of it)
_FRESH_FUNCTIONS = frozenset(
    (
        operator.add, operator.sub, operator.mul, operator.truediv, *_some(torch, "add", "sub", "mul", "div"),
        *_GEOMETRY_FUNCTIONS, *_ADAPTIVE_FUNCTIONS, *_CAT_FUNCTIONS, F.batch_norm,
    )
)  # fmt: skip


def _name_of(target: Any) -> str:
    return target if isinstance(target, str) else getattr(target, "__name__", repr(target))


def _is_stochastic_depth(target: Any) -> bool:
    """torchvision's ``stochastic_depth`` (fx-wrapped): a random per-sample scale, element-wise."""
    return getattr(target, "__name__", "") == "stochastic_depth" and "torchvision" in getattr(target, "__module__", "")


def _call_of(node: Any, base: str) -> int | None:
    """Which call (from 1) of module ``base`` the fx node belongs to, or None.

    fx keys the k-th call (k >= 2) of a module in ``nn_module_stack`` as ``"name@{k-1}"``.
    """
    for key, (path, _) in node.meta.get("nn_module_stack", {}).items():
        if path != base:
            continue
        suffix = key[len(base) :] if key.startswith(base) else None
        if suffix == "":
            return 1
        if suffix and suffix[0] == "@" and suffix[1:].isdigit():
            return int(suffix[1:]) + 1
        return None
    return None


# timm's TensorFlow-style "same" convolutions and pools pad by an amount computed from the input's
# size, which torch.fx cannot trace through: they are traced as single operations instead, whose
# padding the walk computes from the shape of their input (``_FieldWalk.same_padding``).
_SAME_PADDING_CLASSES = frozenset({"Conv2dSame", "MaxPool2dSame"})


class _Tracer(torch.fx.Tracer):
    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        return type(module).__name__ in _SAME_PADDING_CLASSES or super().is_leaf_module(module, qualified_name)


def _trace_target(model: nn.Module, base: str, call: int) -> tuple[torch.fx.GraphModule, list[Any], Any]:
    """(graph module, its nodes, the fx node whose output is the ``call``-th call of module ``base``)."""
    try:
        tracer = _Tracer()
        graph_module = torch.fx.GraphModule(model, tracer.trace(model))
    except Exception as err:  # noqa: BLE001 - any tracing failure means "measure instead"
        raise _NotExact(f"torch.fx cannot trace the model ({type(err).__name__}: {err})") from None
    nodes = list(graph_module.graph.nodes)
    if any("nn_module_stack" in node.meta for node in nodes):
        inside = [node for node in nodes if _call_of(node, base) == call]
    else:  # an fx without module stacks: only a module's single call can be told apart
        inside = [
            node
            for node in nodes
            if node.op == "call_module" and (node.target == base or node.target.startswith(base + "."))
        ]
        if call != 1 or sum(node.target == base for node in inside) > 1:
            raise _NotExact(f"the traced graph cannot tell the calls of {base!r} apart")
    if not inside:
        raise _NotExact(f"call {call} of layer {base!r} does not appear in the traced graph")
    return graph_module, nodes, inside[-1]


def _ancestors(node: Any) -> set[Any]:
    seen, todo = set(), [node]
    while todo:
        current = todo.pop()
        if current not in seen:
            seen.add(current)
            todo.extend(current.all_input_nodes)
    return seen


def _may_alias(node: Any, modules: Mapping[str, nn.Module]) -> bool:
    """Whether the node's output may share memory with one of its inputs (unknown operations: yes)."""
    if node.op == "call_module":
        module = modules[node.target]
        if isinstance(module, (*_GEOMETRY_MODULES, *_ADAPTIVE_MODULES, *_NORM_MODULES, *_PAD_MODULES, nn.Linear)):
            return False
        dropout = isinstance(module, (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout, nn.Identity))
        return dropout or getattr(module, "inplace", None) is not False
    if node.op == "call_function":
        return node.target not in _FRESH_FUNCTIONS
    return node.op == "call_method"


def _in_place(node: Any) -> bool:
    """Whether the node writes into its first argument (``x.add_(y)``, ``x[i] = y``, ``inplace=True``)."""
    if node.op not in ("call_function", "call_method") or not node.args:
        return False
    if node.target in (operator.setitem, operator.iadd, operator.isub, operator.imul, operator.itruediv):
        return True
    name = _name_of(node.target)
    return (name.endswith("_") and not name.endswith("__")) or node.kwargs.get("inplace") is True


def _check_in_place(nodes: list[Any], dependent: set[Any], modules: Mapping[str, nn.Module]) -> None:
    """_NotExact where an in-place operation writes the input into a tensor that is read again
    afterwards: the graph's edges would not show that reader's dependence on the input."""
    order = {node: i for i, node in enumerate(nodes)}
    for node in nodes:
        mutated = node.args[0] if _in_place(node) else None
        if not isinstance(mutated, torch.fx.Node):
            continue
        if not any(n is not mutated and n in dependent for n in node.all_input_nodes):
            continue  # x.relu_(), x.mul_(2): the field of x does not change
        group, todo = set(), [mutated]  # the tensors that may share memory with the written one
        while todo:
            current = todo.pop()
            if current in group or current is node:
                continue
            group.add(current)
            if _may_alias(current, modules):
                todo.extend(current.all_input_nodes)
            todo.extend(user for user in current.users if _may_alias(user, modules))
        for member in group:
            for reader in (member, *member.users):
                if reader is not node and order.get(reader, -1) > order[node]:
                    raise _NotExact(
                        f"the in-place operation {node.name!r} writes into a tensor that {reader.name!r} reads later"
                    )


class _FieldWalk:
    """The fields of the nodes of a traced graph, node by node in forward order."""

    def __init__(self, graph_module: torch.fx.GraphModule, input_shape: tuple[int, ...]):
        self.modules = dict(graph_module.named_modules())
        self.n_axes = len(input_shape) - 1
        self.extent = tuple(input_shape[1:])
        self.values: dict[Any, Any] = {}
        self.fields: dict[Any, _Field | None] = {}

    # -- checks and per-axis arithmetic

    def spatial(self, node: Any, value: Any = None) -> tuple[int, ...]:
        """The spatial shape of a node's output, which must be a channels-first map."""
        value = self.values[node] if value is None else value
        if not isinstance(value, torch.Tensor) or value.ndim != 2 + self.n_axes:
            got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise _NotExact(f"{node.name!r} gives {got}, not a map of {self.n_axes} spatial axes")
        return tuple(value.shape[2:])

    def only_source(self, node: Any, sources: list[Any]) -> Any:
        source = node.args[0] if node.args else None
        if sources != [source]:
            raise _NotExact(f"operation {node.name!r} takes the input through other arguments than its first")
        return source

    def whole(self, node: Any, axis: int, field: tuple[int, int, int], n: int) -> tuple[int, int, int]:
        """The field of pooling all ``n`` positions along an axis: the whole input, or _NotExact."""
        size, stride, start = field
        if stride == 0 or n == 1:
            return field
        if start <= 0 and start + (n - 1) * stride + size >= self.extent[axis]:
            return (self.extent[axis], 0, 0)
        raise _NotExact(f"{node.name!r} pools over a map whose fields leave part of the input out")

    def merge(self, node: Any, a: tuple[int, int, int], b: tuple[int, int, int]) -> tuple[int, int, int]:
        if a[1] == 0 or b[1] == 0:  # one side sees the whole input
            return a if a[1] == 0 else b
        if a[1] != b[1]:
            raise _NotExact(f"{node.name!r} merges maps of different strides ({a[1]} and {b[1]} px)")
        start = min(a[2], b[2])
        return (max(a[2] + a[0], b[2] + b[0]) - start, a[1], start)

    def same_padding(self, node: Any, sources: list[Any], module: nn.Module) -> Geometry:
        """The geometry of a TensorFlow-style "same" convolution or pool (timm's ``Conv2dSame``,
        ``MaxPool2dSame``) on its input: the total pad makes ceil(size / stride) positions, and the
        left/top part of it is the smaller half."""
        sizes = self.spatial(self.only_source(node, sources))
        kernel, stride, dilation = (_pair(getattr(module, name, 1), self.n_axes)
                                    for name in ("kernel_size", "stride", "dilation"))
        left = tuple(max((-(-n // s) - 1) * s + (k - 1) * d + 1 - n, 0) // 2
                     for n, k, s, d in zip(sizes, kernel, stride, dilation))
        return _conv_axes(kernel, stride, left, dilation, self.n_axes)

    # -- rules

    def geometry(self, node: Any, sources: list[Any], geometry: Geometry, out: Any) -> _Field:
        source = self.only_source(node, sources)
        if len(geometry) != self.n_axes:
            raise _NotExact("the path mixes 1-d and 2-d operations")
        self.spatial(source)
        self.spatial(node, out)
        field = []
        for (size, stride, start), (kernel, step, padding, dilation) in zip(self.fields[source], geometry):
            field.append((size + dilation * (kernel - 1) * stride, stride * step, start - padding * stride))
        return tuple(field)

    def pointwise(self, node: Any, sources: list[Any], out: Any) -> _Field:
        """Element-wise over every argument that depends on the input: the union of their fields."""
        shape = self.spatial(node, out)
        merged = None
        for source in sources:
            value = self.values[source]
            if not isinstance(value, torch.Tensor) or value.ndim != out.ndim:
                raise _NotExact(
                    f"operation {node.name!r} combines the map with a {type(value).__name__} of another shape"
                )
            field = self.fields[source]
            for axis, (n_in, n_out) in enumerate(zip(value.shape[2:], shape)):
                if n_in != n_out and not (n_in == 1 and field[axis][1] == 0):
                    raise _NotExact(f"operation {node.name!r} spreads {n_in} map position(s) over {n_out}")
            merged = field if merged is None else tuple(self.merge(node, a, b) for a, b in zip(merged, field))
        return merged

    def adaptive(self, node: Any, sources: list[Any], out: Any) -> _Field:
        source = self.only_source(node, sources)
        field = []
        for axis, (axis_field, n, m) in enumerate(
            zip(self.fields[source], self.spatial(source), self.spatial(node, out))
        ):
            if m == 1:
                field.append(self.whole(node, axis, axis_field, n))
            elif n % m == 0:  # windows of n // m positions, n // m apart
                size, stride, start = axis_field
                field.append((size + (n // m - 1) * stride, stride * (n // m), start))
            else:
                raise _NotExact(f"{node.name!r} pools {n} positions into {m} windows of unequal sizes")
        return tuple(field)

    def reduce(self, node: Any, sources: list[Any], args: tuple, kwargs: dict, out: Any) -> _Field:
        source = self.only_source(node, sources)
        value = self.values[source]
        dims = args[1] if len(args) > 1 else kwargs.get("dim")
        keepdim = args[2] if len(args) > 2 else kwargs.get("keepdim", False)
        dims = (dims,) if isinstance(dims, int) else dims
        if not keepdim or not isinstance(dims, (tuple, list)) or not all(isinstance(d, int) for d in dims):
            raise _NotExact(f"the reduction {node.name!r} does not keep the map's axes (keepdim=True)")
        dims = {d % value.ndim for d in dims}
        if 0 in dims:
            raise _NotExact(f"the reduction {node.name!r} runs over the batch")
        n_in, _ = self.spatial(source), self.spatial(node, out)
        return tuple(
            self.whole(node, axis, f, n_in[axis]) if axis + 2 in dims else f
            for axis, f in enumerate(self.fields[source])
        )

    def pad(self, node: Any, sources: list[Any], padding: Any, out: Any) -> _Field:
        source = self.only_source(node, sources)
        ndim = 2 + self.n_axes
        if not isinstance(padding, (tuple, list)) or len(padding) % 2 or not all(isinstance(p, int) for p in padding):
            raise _NotExact(f"unsupported padding {padding!r}")
        field = list(self.fields[source])
        for i in range(len(padding) // 2):
            dim = ndim - 1 - i
            if dim < 1:
                raise _NotExact(f"{node.name!r} pads the batch")
            if dim >= 2:
                size, stride, start = field[dim - 2]
                field[dim - 2] = (size, stride, start - padding[2 * i] * stride)
        self.spatial(source)
        self.spatial(node, out)
        return tuple(field)

    def split(self, node: Any, sources: list[Any], args: tuple, kwargs: dict) -> _Field:
        """chunk/split along channels: every piece keeps the map's field."""
        source = self.only_source(node, sources)
        self.spatial(source)
        dim = args[2] if len(args) > 2 else kwargs.get("dim", 0)
        if not isinstance(dim, int) or dim % self.values[source].ndim != 1:
            raise _NotExact(f"{node.name!r} splits a map along another axis than its channels")
        return self.fields[source]

    def getitem(self, node: Any, sources: list[Any], args: tuple, out: Any) -> _Field:
        source = self.only_source(node, sources)
        if isinstance(self.values[source], (tuple, list)):  # a piece of chunk/split (the only tuples with a field)
            self.spatial(node, out)
            return self.fields[source]
        index = args[1] if isinstance(args[1], tuple) else (args[1],)
        full = slice(None, None, None)
        if (
            len(index) > 2 + self.n_axes
            or not all(isinstance(i, slice) for i in index)
            or any(i != full for k, i in enumerate(index) if k != 1)
            or self.spatial(node, out) != self.spatial(source)
        ):
            raise _NotExact(f"the indexing {node.name!r} takes more than channels of the map")
        return self.fields[source]

    def field_of(self, node: Any, args: tuple, kwargs: dict, out: Any) -> _Field:
        """The field of one node's output ``out`` from its arguments' fields; _NotExact when unknown."""
        sources = [n for n in node.all_input_nodes if self.fields.get(n) is not None]
        op, target = node.op, node.target
        if op == "call_module":
            module = self.modules[target]
            kind = type(module)
            if kind in _GEOMETRY_MODULES:
                return self.geometry(node, sources, _GEOMETRY_MODULES[kind](module), out)
            if kind in _NORM_MODULES:
                if module.training or module.running_mean is None:
                    raise _NotExact(f"module {target!r} normalises with batch statistics")
                return self.pointwise(node, sources, out)
            if kind in _POINTWISE_MODULES:
                return self.pointwise(node, sources, out)
            if kind in _ADAPTIVE_MODULES:
                if getattr(module, "return_indices", False):
                    raise _NotExact(f"module {target!r} returns indices")
                return self.adaptive(node, sources, out)
            if kind in _PAD_MODULES:
                return self.pad(node, sources, module.padding, out)
            if kind.__name__ in _SAME_PADDING_CLASSES:
                return self.geometry(node, sources, self.same_padding(node, sources, module), out)
            raise _NotExact(f"module {target!r} ({kind.__name__}) has no known geometry")
        if op == "call_function":
            if target in _GEOMETRY_FUNCTIONS:
                return self.geometry(node, sources, _GEOMETRY_FUNCTIONS[target](*args, **kwargs), out)
            if target in _POINTWISE_FUNCTIONS or _is_stochastic_depth(target):
                return self.pointwise(node, sources, out)
            if target is F.batch_norm:
                if (args[5] if len(args) > 5 else kwargs.get("training", False)) is not False:
                    raise _NotExact(f"{node.name!r} normalises with batch statistics")
                return self.pointwise(node, sources, out)
            if target in _CAT_FUNCTIONS:
                dim = args[1] if len(args) > 1 else kwargs.get("dim", 0)
                if not isinstance(out, torch.Tensor) or not isinstance(dim, int) or dim % out.ndim != 1:
                    raise _NotExact(f"{node.name!r} concatenates maps along another axis than their channels")
                return self.pointwise(node, sources, out)
            if target in _ADAPTIVE_FUNCTIONS:
                return self.adaptive(node, sources, out)
            if target in _REDUCE_FUNCTIONS:
                return self.reduce(node, sources, args, kwargs, out)
            if target in _SPLIT_FUNCTIONS:
                return self.split(node, sources, args, kwargs)
            if target is operator.getitem:
                return self.getitem(node, sources, args, out)
            if target is F.pad and (args[2] if len(args) > 2 else kwargs.get("mode", "constant")) == "constant":
                return self.pad(node, sources, args[1] if len(args) > 1 else kwargs.get("pad"), out)
        if op == "call_method":
            if target in _POINTWISE_METHODS:
                return self.pointwise(node, sources, out)
            if target in _SELF_METHODS:  # the other arguments give only a dtype or device
                return self.pointwise(node, [node.args[0]] if node.args[0] in sources else [], out)
            if target in _REDUCE_METHODS:
                return self.reduce(node, sources, args, kwargs, out)
            if target in _SPLIT_METHODS:
                return self.split(node, sources, args, kwargs)
        raise _NotExact(f"operation {node.name!r} ({op} {_name_of(target)}) has no known geometry")


def _exact_field(
    model: nn.Module, base: str, call: int, input_shape: tuple[int, ...], device: torch.device, dtype: torch.dtype
) -> tuple[_Field, tuple[int, ...]]:
    """(field per spatial axis, spatial shape) of the output of the ``call``-th call of module ``base``.

    The traced graph is walked as a DAG from the input to that call; _NotExact where an operation's
    geometry is unknown, maps of different strides merge, or the graph cannot be traced.
    """
    graph_module, nodes, target = _trace_target(model, base, call)
    nodes = nodes[: nodes.index(target) + 1]
    placeholders = [node for node in nodes if node.op == "placeholder"]
    needed = _ancestors(target)
    if not placeholders or placeholders[0] not in needed:
        raise _NotExact("the layer does not depend on the model's first input")
    dependent = set()
    for node in nodes:
        if node is placeholders[0] or any(n in dependent for n in node.all_input_nodes):
            dependent.add(node)
    walk = _FieldWalk(graph_module, input_shape)
    _check_in_place(nodes, dependent, walk.modules)
    last_use = {source: node for node in nodes if node in needed for source in node.all_input_nodes}
    interpreter = torch.fx.Interpreter(graph_module)
    interpreter.env = walk.values
    with torch.no_grad():
        for node in nodes:
            if node not in needed:
                continue
            if node.op == "placeholder":
                if node is placeholders[0]:
                    walk.values[node] = torch.zeros((1, *input_shape), device=device, dtype=dtype)
                    walk.fields[node] = ((1, 1, 0),) * walk.n_axes
                    walk.spatial(node)
                    continue
                if not node.args:
                    raise _NotExact(f"the model's input {node.name!r} has no default")
                walk.values[node], walk.fields[node] = node.args[0], None
                continue
            args, kwargs = interpreter.fetch_args_kwargs_from_env(node)
            try:
                out = getattr(interpreter, node.op)(node.target, args, kwargs)
            except Exception as err:  # noqa: BLE001 - the traced graph does not run as the model does
                raise _GraphFails(f"the traced graph fails at {node.name!r} ({type(err).__name__}: {err})") from None
            walk.values[node] = out
            walk.fields[node] = walk.field_of(node, args, kwargs, out) if node in dependent else None
            for source in node.all_input_nodes:  # free what no later node reads
                if last_use.get(source) is node:
                    walk.values.pop(source, None)
    shape = walk.spatial(target)
    # an axis along which every position's box holds the whole input is the whole input (as measured),
    # not a box many times the image's size
    field = tuple(
        (walk.extent[axis], 0, 0) if stride and start + (n - 1) * stride <= 0 and start + size >= walk.extent[axis]
        else (size, stride, start)
        for axis, ((size, stride, start), n) in enumerate(zip(walk.fields[target], shape))
    )
    return field, shape


# ----------------------------------------------------------------------------------------------
# the layout of a module's output, read off the module that produced it

_CHANNELS_FIRST_MODULES = (
    nn.Conv1d, nn.Conv2d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.MaxPool1d, nn.MaxPool2d,
    nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d, nn.LPPool1d, nn.LPPool2d, nn.BatchNorm1d, nn.BatchNorm2d, nn.InstanceNorm1d,
    nn.InstanceNorm2d, nn.GroupNorm, nn.LocalResponseNorm, nn.Dropout1d, nn.Dropout2d, nn.Upsample,
    nn.PixelShuffle, nn.PixelUnshuffle, nn.ZeroPad2d, nn.ConstantPad2d, nn.ReflectionPad2d,
    nn.ReplicationPad2d,
)  # fmt: skip
_PASS_THROUGH_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.CELU, nn.SELU, nn.GELU, nn.SiLU, nn.Mish, nn.Sigmoid,
    nn.Tanh, nn.Softplus, nn.Softsign, nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.PReLU, nn.RReLU,
    nn.LogSigmoid, nn.Tanhshrink, nn.Threshold, nn.Dropout, nn.AlphaDropout, nn.Identity,
)  # fmt: skip
# element-wise modules of other libraries (timm), by class name: their output keeps their input's layout
_PASS_THROUGH_NAMES = {
    "DropPath", "GELUTanh", "QuickGELU", "Swish", "HardSwish", "HardSigmoid", "HardMish", "LayerScale",
}  # fmt: skip
# timm Swin blocks and stages emit (batch, H, W, C) from reshapes no hook sees
_CHANNELS_LAST_NAMES = {
    "SwinTransformerBlock", "SwinTransformerStage", "SwinTransformerV2Block", "SwinTransformerV2Stage", "PatchMerging",
}  # fmt: skip
_FORMATS = {"NCHW": "channels_first", "NCL": "channels_first", "NHWC": "channels_last", "NLC": "tokens"}
_LAST_AXIS = {4: "channels_last", 3: "tokens"}  # a module over the last axis of a 4-d / 3-d tensor


def _layout_rule(module: nn.Module, output: torch.Tensor) -> str | None:
    """The layout a module's own type fixes for its output, ``"input"`` when it keeps its input's,
    or None (containers, unknown modules)."""
    name = type(module).__name__
    if name in _CHANNELS_LAST_NAMES:
        return "channels_last" if output.ndim == 4 else None
    fmt = getattr(module, "output_fmt", None)  # timm PatchEmbed and friends
    fmt = getattr(fmt, "value", fmt)
    if isinstance(fmt, str):
        if getattr(module, "flatten", False) is True and output.ndim == 3:
            return "tokens"
        layout = _FORMATS.get(fmt)
        return layout if layout is not None and output.ndim == len(fmt) else None
    if isinstance(module, nn.LayerNorm) and name.endswith(("1d", "2d")):  # timm LayerNorm2d: channels-first
        return "channels_first"
    if isinstance(module, _CHANNELS_FIRST_MODULES):
        return "channels_first"
    if isinstance(module, nn.LayerNorm):
        return _LAST_AXIS.get(output.ndim) if tuple(module.normalized_shape) == (output.shape[-1],) else None
    if isinstance(module, nn.Linear):
        return _LAST_AXIS.get(output.ndim)
    if isinstance(module, nn.MultiheadAttention):
        return "tokens" if module.batch_first and output.ndim == 3 else None
    if isinstance(module, (nn.TransformerEncoderLayer, nn.TransformerDecoderLayer)):
        return "tokens" if module.self_attn.batch_first and output.ndim == 3 else None
    if isinstance(module, _PASS_THROUGH_MODULES) or name in _PASS_THROUGH_NAMES:
        return "input"
    return None


@dataclass
class _Capture:
    """What one forward pass saw of a layer: the wanted call's output, the calls, the layout."""

    output: torch.Tensor | None = None
    calls: int = 0
    complete: bool = False  # the pass ran to its end, so ``calls`` is the number of calls per pass
    layout: str | None = None


def _capture(model: nn.Module, layer: str, x: torch.Tensor, *, stop: bool = True, layouts: bool = False) -> _Capture:
    """Run ``model(x)`` and capture the output of the layer's call (``name#k``: the k-th call).

    stop: end the pass right after that call. layouts: hook every module to follow which one
    produced each tensor, and read the captured output's layout off it (see ``_layout_rule``).
    """
    target, _, call = _resolve_layer(model, layer)
    wanted = call or 1
    found = _Capture()
    known: dict[int, tuple[torch.Tensor, str]] = {}  # id(tensor) -> (tensor, layout); the tensor keeps the id alive

    def follow(module: nn.Module, args: tuple, output: Any) -> None:
        tensor = first_tensor(output)
        if tensor is None:
            return
        rule = _layout_rule(module, tensor)
        if rule == "input":
            source = first_tensor(args)
            layout = known.get(id(source), (None, None))[1] if source is not None else None
        elif rule is None:  # a container, or a module that hands on a tensor an inner module made
            layout = known.get(id(tensor), (None, None))[1]
        else:
            layout = rule
        if layout is not None:
            known[id(tensor)] = (tensor, layout)

    def hook(module: nn.Module, args: tuple, output: Any) -> None:
        found.calls += 1
        if found.calls == wanted:
            found.output = first_tensor(output)
            if found.output is None:
                raise ValueError(f"layer {layer!r} returns {type(output).__name__} without any tensor")
            found.layout = known.get(id(found.output), (None, None))[1]
            if stop:
                raise _StopForward

    handles = [module.register_forward_hook(follow) for module in model.modules()] if layouts else []
    handles.append(target.register_forward_hook(hook))  # after `follow`, which must run first
    # nn.TransformerEncoderLayer's fused eval-mode kernel skips its submodules' hooks (pytorch#128413)
    mha = getattr(torch.backends, "mha", None)
    fastpath = mha.get_fastpath_enabled() if hasattr(mha, "get_fastpath_enabled") else False
    try:
        if fastpath:
            mha.set_fastpath_enabled(False)
        model(x)
        found.complete = True
    except _StopForward:
        pass
    except Exception:
        if found.output is None:
            raise
        # the model failed after the layer (a head that needs another input size): the layer ran
    finally:
        if fastpath:
            mha.set_fastpath_enabled(True)
        for handle in handles:
            handle.remove()
    if found.output is None:
        if found.calls:
            raise ValueError(f"layer {layer!r} asks for call {wanted}, but the module ran {found.calls} time(s)")
        raise ValueError(f"layer {layer!r} did not run in the model's forward pass")
    return found


def _run_to_layer(model: nn.Module, layer: str, x: torch.Tensor) -> torch.Tensor:
    """The output of the layer (``name#k``: of the module's k-th call) for input x; the forward
    pass stops right after it."""
    return _capture(model, layer, x).output


def _device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    parameter = next(iter(model.parameters()), None)
    if parameter is None:
        return torch.device("cpu"), torch.float32
    return parameter.device, parameter.dtype if parameter.dtype.is_floating_point else torch.float32


_HOOK_DICTS = (
    "_forward_hooks", "_forward_hooks_with_kwargs", "_forward_hooks_always_called", "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs", "_backward_hooks", "_backward_pre_hooks",
)  # fmt: skip


def _meta_copy(model: nn.Module) -> nn.Module | None:
    """A copy of ``model`` whose parameters and buffers live on the meta device (shapes, no data)
    and whose modules have no hooks: a pass through it costs no arithmetic. None where it cannot be
    made (lazy or quantised parameters, objects that refuse to be copied)."""
    memo: dict[int, Any] = {}
    try:
        for module in model.modules():
            for name in _HOOK_DICTS:  # the user's hooks stay with the model
                hooks = module.__dict__.get(name)
                if isinstance(hooks, dict):
                    memo[id(hooks)] = type(hooks)()
            for tensor in (*module._parameters.values(), *module._buffers.values()):
                if isinstance(tensor, torch.Tensor) and id(tensor) not in memo:
                    meta = torch.empty_like(tensor, device="meta")
                    memo[id(tensor)] = (
                        nn.Parameter(meta, tensor.requires_grad) if isinstance(tensor, nn.Parameter) else meta
                    )
        return copy.deepcopy(model, memo)
    except Exception:  # noqa: BLE001 - no copy: the caller runs the model itself
        return None


def _zeros_pass(
    model: nn.Module, layer: str, input_shape: tuple[int, ...], layouts: bool
) -> tuple[_Capture, nn.Module]:
    """What one pass of an all-zeros input shows of the layer (``_capture``), and the model that ran
    it: a meta copy (no arithmetic) where that runs the whole pass, else the model itself (models
    whose control flow reads tensor values, tensors kept outside parameters and buffers)."""
    _, dtype = _device_dtype(model)
    shaper = _meta_copy(model)
    if shaper is not None and _device_dtype(shaper)[0].type == "meta":
        try:
            with torch.no_grad():
                zeros = torch.zeros((1, *input_shape), device="meta", dtype=dtype)
                found = _capture(shaper, layer, zeros, stop=False, layouts=layouts)
        except Exception:  # noqa: BLE001 - run the model itself, which raises what is to be raised
            found = None
        if found is not None and found.complete:
            return found, shaper
    device, dtype = _device_dtype(model)
    with torch.no_grad():
        zeros = torch.zeros((1, *input_shape), device=device, dtype=dtype)
        return _capture(model, layer, zeros, stop=False, layouts=layouts), model


def _layout_from_sizes(model, layer, input_shape, output) -> str | None:
    """The layout, read off which output axes grow with the input (doubled); None when unclear."""
    device, dtype = _device_dtype(model)
    bigger = (input_shape[0], *(2 * s for s in input_shape[1:]))
    try:
        with torch.no_grad():
            other = _run_to_layer(model, layer, torch.zeros((1, *bigger), device=device, dtype=dtype))
    except Exception:  # noqa: BLE001 - a model that takes one input size only: no answer here
        return None
    if other.ndim != output.ndim:
        return None
    grown = tuple(axis for axis in range(1, output.ndim) if other.shape[axis] != output.shape[axis])
    by_growth = {(2, 3): "channels_first", (1, 2): "channels_last", (2,): "channels_first", (1,): "tokens"}
    layout = by_growth.get(grown)
    return layout if layout is not None and output.ndim in _LAYOUT_NDIM[layout] else None


# ----------------------------------------------------------------------------------------------
# maps of each layout, and the patch grid of tokens


def _patch_size_of(model: nn.Module, patch_size: Any) -> tuple[int, int] | None:
    """The ViT patch side: the argument, else ``model.patch_size``, ``model.config["patch_size"]``
    or timm's ``model.patch_embed.patch_size``; None if none is known."""
    if patch_size is None:
        config = getattr(model, "config", None)
        embed = getattr(model, "patch_embed", None)
        candidates = (
            getattr(model, "patch_size", None),
            config.get("patch_size") if isinstance(config, Mapping) else None,
            getattr(embed, "patch_size", None) if isinstance(embed, nn.Module) else None,
        )
        patch_size = next((c for c in candidates if c is not None), None)
    if patch_size is None:
        return None
    patch = tuple(int(p) for p in patch_size) if isinstance(patch_size, (tuple, list)) else (int(patch_size),) * 2
    if len(patch) != 2 or min(patch) < 1:
        raise ValueError(f"patch_size must be a positive int or (height, width), got {patch_size!r}")
    return patch


def _token_grid(
    model: nn.Module, n_tokens: int, image_hw: tuple[int, int], patch_size: Any
) -> tuple[tuple[int, int], tuple[int, int], int]:
    """(patch (h, w), grid (rows, columns), prefix tokens) of a layer with ``n_tokens`` tokens."""
    patch = _patch_size_of(model, patch_size)
    if patch is None:
        raise ValueError(
            "the layer outputs tokens (batch, T, D): pass patch_size= (the ViT's patch side in pixels), "
            "or layout='maps' if it is a Conv1d output (batch, C, L)"
        )
    grid = (image_hw[0] // patch[0], image_hw[1] // patch[1])
    n_extra = n_tokens - grid[0] * grid[1]
    if n_extra < 0 or grid[0] * grid[1] == 0:
        raise ValueError(f"{n_tokens} tokens do not hold the {grid[0]}x{grid[1]} patch grid of patch size {patch}")
    return patch, grid, n_extra


def _map_reader(output: torch.Tensor, layout: str, grid: tuple[int, int], n_extra: int):
    """(map shape (h, w), function turning a layer output into channels-first maps (batch, C, h, w))."""
    if layout == "tokens":
        return grid, lambda o: o[:, n_extra:].reshape(o.shape[0], *grid, o.shape[-1]).permute(0, 3, 1, 2)
    if layout == "channels_last":
        return tuple(output.shape[1:3]), lambda o: o.permute(0, 3, 1, 2)
    return ((1,) + tuple(output.shape[2:]))[-2:], lambda o: o if o.ndim == 4 else o.unsqueeze(2)


def _parse_layout(layout: str) -> tuple[str, int | None]:
    """(canonical layout, stated prefix tokens or None) of a ``layout=`` value or an engine spelling."""
    text = layout.strip().lower() if isinstance(layout, str) else layout
    if isinstance(text, str) and text.startswith("tokens+") and text[7:].isdigit():
        return "tokens", int(text[7:])
    text = _LAYOUT_ALIASES.get(text, text)
    if text not in LAYOUTS:
        raise unknown_name_error("layout", layout, [*LAYOUTS, "tokens+N", *_LAYOUT_ALIASES])
    return text, None


def _choose_layout(model, layer, input_shape, found: _Capture, layout: str, shaper: nn.Module | None = None) -> str:
    """The layout to read the layer's output with; refuses what cannot be told (see the module docstring).

    ``shaper``: a meta copy of the model (``_zeros_pass``) to try the size test on first.
    """
    output = found.output
    shape = tuple(output.shape)
    if output.ndim not in (3, 4):
        raise ValueError(
            f"layer {layer!r} has output of shape {shape}: a receptive field needs a map (batch, C, H, W), "
            "(batch, H, W, C) or (batch, C, L), or tokens (batch, T, D); fully connected units see the whole stimulus"
        )
    if layout == "auto":
        layout = found.layout
        for sizer in (shaper, model) if shaper is not None and shaper is not model else (model,):
            layout = layout or _layout_from_sizes(sizer, layer, input_shape, output)
        if layout is None or output.ndim not in _LAYOUT_NDIM[layout]:
            raise ValueError(
                f"cannot tell how the output of layer {layer!r} ({type(find_layer(model, layer)).__name__}, "
                f"shape {shape}) is arranged: no module that fixes its layout produced it, and its axes do not "
                f"show it; {_LAYOUT_HELP}"
            )
    if output.ndim not in _LAYOUT_NDIM[layout]:
        raise ValueError(f"layer {layer!r} has output of shape {shape}, which is no {layout!r} layout; {_LAYOUT_HELP}")
    return layout


# ----------------------------------------------------------------------------------------------
# gradient measurement


def _positions(length: int) -> list[int]:
    """Map positions to probe along one axis: both ends (whose fields are clipped least on one
    side each) and the middle."""
    return sorted({0, 1, length // 2, length - 2, length - 1} & set(range(length)))


# Input values per backward pass of the gradient measurement: the float64 activations kept for the
# backward pass grow with it (about 1 GB for EfficientNet-Lite0 at 2^20 input values).
_MEASURE_BUDGET = 2**20


def _measure_boxes(model, layer, input_shape, n_draws, seed, to_map, map_shape, max_batch: int = 64):
    """Gradient boxes along the middle row and column: {axis: [(position, low, high, extent)]}.

    Each probed position gets its own ``n_draws`` random inputs in one batch, so a single backward
    pass measures many positions at once (the batch items are independent in eval mode). The
    channels of a position are summed with random weights, so that no normalisation cancels them.
    """
    generator = torch.Generator().manual_seed(seed)
    device, _ = _device_dtype(model)
    spatial = tuple(input_shape[1:]) if len(input_shape) == 3 else (1, input_shape[-1])
    middle = (map_shape[0] // 2, map_shape[1] // 2)
    probes = [(axis, int(p)) for axis in (0, 1) for p in _positions(map_shape[axis])]
    max_batch = min(max_batch, _MEASURE_BUDGET // max(1, math.prod(input_shape)))
    per_batch = max(1, max_batch // n_draws)
    boxes, mixing = {0: [], 1: []}, None
    for chunk_start in range(0, len(probes), per_batch):
        chunk = probes[chunk_start : chunk_start + per_batch]
        x = torch.randn((len(chunk) * n_draws, *input_shape), generator=generator, dtype=torch.float64).to(device)
        x.requires_grad_(True)
        with torch.enable_grad():
            output = to_map(_run_to_layer(model, layer, x))
            output = output.reshape(len(chunk), n_draws, output.shape[1], *map_shape)
            if not output.requires_grad:
                raise _NotExact(f"layer {layer!r} output has no gradient path to the input")
            if mixing is None:  # random channel weights: a plain sum cancels (LayerNorm, softmax over channels)
                mixing = torch.randn(output.shape[2], generator=generator, dtype=torch.float64).to(device)
            total = sum(
                (output[i, :, :, p, middle[1]] if axis == 0 else output[i, :, :, middle[0], p]) @ mixing
                for i, (axis, p) in enumerate(chunk)
            ).sum()
            (gradient,) = torch.autograd.grad(total, x, allow_unused=True)
        if gradient is None:
            raise _NotExact(f"layer {layer!r} output has no gradient path to the input")
        support = (gradient != 0).reshape(len(chunk), -1, *spatial).any(dim=1)  # (probes, H, W)
        for i, (axis, p) in enumerate(chunk):
            hits = torch.nonzero(support[i].any(dim=1 - axis)).flatten()
            if hits.numel() == 0:
                raise _NotExact(f"a position of layer {layer!r} has zero gradient for every input")
            boxes[axis].append((p, int(hits.min()), int(hits.max()) + 1, spatial[axis]))
    return boxes


def _fit_axis(boxes: list[tuple[int, int, int, int]], stride_hint: int | None = None) -> tuple[int, int, int] | None:
    """(size, stride, start) from boxes (position, low, high, extent) clipped to [0, extent); None if unknown.

    ``stride_hint`` is used only when the unclipped edges cannot tell the stride.
    """
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
        if len(boxes) > 1 and stride_hint is None:
            return None
        stride = stride_hint or 1  # a single position: any stride describes it
    start = min(low - p * stride for p, low in lows)
    size = max(high - p * stride for p, high in highs) - start
    return size, stride, start


def _check_fit(fit: tuple[int, int, int], boxes: list[tuple[int, int, int, int]], axis: int) -> None:
    """Every measured box must be the fitted box clipped to the input; else the grid is irregular."""
    size, stride, start = fit
    for p, low, high, extent in boxes:
        expected = (max(start + p * stride, 0), min(start + p * stride + size, extent))
        if (low, high) != expected:
            name = "yx"[axis]
            raise _Irregular(
                f"the measured fields are no regular grid: position {name}={p} sees [{low}, {high}) along {name}, "
                f"a grid of size {size}, stride {stride}, start {start} predicts [{expected[0]}, {expected[1]})"
            )


def _gradient_field(model, layer, input_shape, n_draws, seed, to_map, map_shape, stride_hint=(None, None)):
    measured = copy.deepcopy(model).double().eval()
    boxes = _measure_boxes(measured, layer, tuple(input_shape), n_draws, seed, to_map, map_shape)
    fits = []
    for axis in (0, 1):
        if axis == 0 and len(input_shape) == 2:  # 1-d maps are read as one row
            fits.append((1, 1, 0))
            continue
        fit = _fit_axis(boxes[axis], stride_hint[axis])
        if fit is None and all(low == 0 and high == extent for _, low, high, extent in boxes[axis]):
            # every position sees the whole input along this axis (global pooling, attention, or
            # a field wider than the image): the input itself is the field
            fit = (boxes[axis][0][3], 0, 0)
        if fit is None:
            raise _NotExact(
                "the measured fields are clipped by the image border on both sides; record the model on "
                "larger images to measure them"
            )
        _check_fit(fit, boxes[axis], axis)
        fits.append(fit)
    return tuple(f[0] for f in fits), tuple(f[1] for f in fits), tuple(f[2] for f in fits)


# ----------------------------------------------------------------------------------------------


def receptive_field(
    model: nn.Module,
    layer: str,
    input_shape: tuple[int, ...],
    *,
    method: Literal["auto", "exact", "gradient"] = "auto",
    layout: Layout = "auto",
    patch_size: int | tuple[int, int] | None = None,
    n_draws: int = 8,
    seed: int = 0,
) -> ReceptiveField:
    """Receptive field of the units of a map layer, or of the patch tokens of a ViT layer.

    Parameters
    ----------
    model
        Any module whose forward takes a batch of inputs of ``input_shape``. Its modules' train/eval
        modes are the same afterwards (each one's own); the field is computed in eval mode.
    layer
        Module name (from ``model.named_modules()``), or ``name#k`` for the k-th call of a module
        that runs several times per forward pass (as ``probe.record`` names them).
    input_shape
        (C, H, W) or (C, L) of one stimulus.
    method
        ``"exact"`` (fx graph walk, channels-first maps only; error where it does not apply),
        ``"gradient"`` (measured), or ``"auto"``: exact where possible, measured otherwise (see the
        module docstring).
    layout
        How the output is arranged: ``"channels_first"`` (alias ``"maps"``: (batch, C, H, W) or
        (batch, C, L)), ``"channels_last"`` ((batch, H, W, C)), ``"tokens"`` ((batch, T, D): the
        field of each patch token, measured; class/register tokens are left out), or ``"auto"``:
        read off the module that produced the output, never guessed from the shape. The engine's
        spellings (``"channels-first"``, ``"channels-last"``, ``"tokens+N"`` with N prefix tokens,
        which is checked) are accepted too.
    patch_size
        For tokens: the ViT's patch side in pixels (default: the model's ``patch_size`` attribute,
        ``config["patch_size"]`` or timm's ``patch_embed.patch_size``). The patch grid is
        (H // patch, W // patch); tokens before it are prefix (class/register) tokens.
    n_draws
        Random inputs whose gradient supports are united (gradient method).
    seed
        Seed of those inputs.

    Returns
    -------
    ReceptiveField
        With ``box(y, x)`` giving (top, left, bottom, right) for any map position (for tokens, the
        patch-grid cell (y, x) of token ``prefix_tokens + y * w + x``). A patch-embedding's
        tokens get their patch; tokens after global attention get the whole input (stride 0).

    Raises
    ------
    KeyError
        Unknown layer (lists the nearest names).
    IrregularFieldError
        The fields exist but are no regular grid (windowed attention), a ValueError.
    ValueError
        The layer has no map or tokens, its layout cannot be told (``layout="auto"``), a module that
        runs several times is named without ``#k``, or neither method can give the field.
    """
    if method not in ("auto", "exact", "gradient"):
        raise ValueError(f"method must be 'auto', 'exact' or 'gradient', got {method!r}")
    layout, stated_prefix = _parse_layout(layout)
    _, base, call = _resolve_layer(model, layer)
    input_shape = tuple(int(s) for s in input_shape)
    modes = {name: module.training for name, module in model.named_modules()}
    model.eval()
    try:
        found, shaper = _zeros_pass(model, layer, input_shape, layouts=layout == "auto")
        if call is None and found.calls > 1:
            calls = ", ".join(f"'{layer}#{k}'" for k in range(1, found.calls + 1))
            raise ValueError(
                f"module {layer!r} runs {found.calls}{'' if found.complete else '+'} times per forward pass; "
                f"name one call: {calls}"
            )
        layout = _choose_layout(model, layer, input_shape, found, layout, shaper)
        image_hw = ((1,) + input_shape[1:])[-2:]
        patch, grid, n_extra = (None, None), (0, 0), 0
        if layout == "tokens":
            patch, grid, n_extra = _token_grid(model, found.output.shape[1], image_hw, patch_size)
            if stated_prefix is not None and stated_prefix != n_extra:
                raise ValueError(
                    f"layout 'tokens+{stated_prefix}' says layer {layer!r} has {stated_prefix} prefix tokens, but its "
                    f"{found.output.shape[1]} tokens hold a {grid[0]}x{grid[1]} grid of {patch[0]}x{patch[1]} px "
                    f"patches and {n_extra} more; check patch_size"
                )
        map_shape, to_map = _map_reader(found.output, layout, grid, n_extra)
        made = {"input_shape": input_shape, "map_shape": tuple(map_shape), "layout": layout, "prefix_tokens": n_extra}
        reasons = []
        if method in ("auto", "exact"):
            try:
                if layout != "channels_first":
                    raise _NotExact(f"the path walk covers channels-first maps only, not {layout}")
                try:  # shapes from the meta copy where there is one, else from the model
                    field, shape = _exact_field(shaper, base, call or 1, input_shape, *_device_dtype(shaper))
                except _GraphFails:
                    if shaper is model:
                        raise
                    field, shape = _exact_field(model, base, call or 1, input_shape, *_device_dtype(model))
                if ((1,) + shape)[-2:] != tuple(map_shape):
                    raise _NotExact(f"the traced graph gives a {shape} map, the model a {tuple(map_shape)} one")
                if len(field) == 1:  # 1-d maps are read as one row
                    field = ((1, 1, 0), *field)
                size, stride, start = (tuple(f[i] for f in field) for i in range(3))
                return ReceptiveField(layer, size=size, stride=stride, start=start, method="exact", **made)
            except _NotExact as err:
                reasons.append(f"exact: {err}")
        irregular = False
        if method in ("auto", "gradient"):
            try:
                size, stride, start = _gradient_field(
                    model, layer, input_shape, n_draws, seed, to_map, map_shape, patch
                )
                return ReceptiveField(layer, size=size, stride=stride, start=start, method="gradient", **made)
            except _NotExact as err:
                irregular = isinstance(err, _Irregular)
                reasons.append(f"gradient: {err}")
    finally:
        for name, module in model.named_modules():
            module.training = modes.get(name, module.training)
    if irregular:
        raise IrregularFieldError(
            f"the receptive fields of layer {layer!r} differ from position to position (windowed attention?), "
            f"so no single size and stride describe them ({reasons[-1]})"
        )
    raise ValueError(
        f"the receptive field of layer {layer!r} can be neither computed nor measured ({'; '.join(reasons)}); "
        "pick a convolutional layer whose output depends differentiably on the input"
        + ("" if method == "auto" else ", or use method='auto'")
    )
