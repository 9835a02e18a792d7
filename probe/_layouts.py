"""Layouts: how a layer's output is arranged, found from the module and the shapes, or stated.

====================  ==================================  ============================================
layout                output                              units, and where they are
====================  ==================================  ============================================
``channels-first``    (batch, C, H, W) or (batch, C, L)   C channels at H x W (or L) positions
``channels-last``     (batch, H, W, C)                    C channels at H x W positions (Swin, MaxViT)
``tokens``            (batch, T, D)                       D features at T tokens
``tokens+N``          (batch, N + T, D)                   the same, after N prefix tokens (class,
                                                          distillation, register tokens)
``vector``            (batch, D)                          D units
====================  ==================================  ============================================

``probe.record`` finds each recorded layer's layout on its first batch, whose forward pass it follows
module call by module call (``tracing``), before anything is written, with these rules in order:

1. Stated by the user (``layout=``) — always wins.
2. The module itself: a class named ``...1d``/``2d``/``3d`` (``Conv2d``, ``BatchNorm2d``,
   ``MaxPool2d``, timm's ``LayerNorm2d``, ``BatchNormAct2d``...) with an output of that rank is
   channels-first; ``nn.LayerNorm``/``RMSNorm`` over the last axis, ``nn.Linear``,
   ``nn.Embedding`` put the features last (channels-last for 4-d outputs, tokens for 3-d);
   timm's ``output_fmt`` attribute (``NHWC``, ``NCHW``, ``NLC``, ``NCL``) and torchvision's
   ``Permute`` say it outright.
3. The modules run inside it whose output has the same shape as its output (a residual block's
   last norm, a Swin stage's LayerNorm): their layout, when they agree.
4. A module whose output has its input's shape (activations, dropout, squeeze-excitation,
   identity): the layout of the latest module output of that shape before it.
5. The maps made inside it all have one layout and the output's spatial size matches theirs only
   under that reading (concatenations such as DenseNet blocks): that layout.
6. Otherwise the rank: 3-d outputs are tokens, 2-d ones vectors; **a 4-d (or higher) output is
   refused** with an error naming the layer, its shape and the values ``layout=`` takes (unless it
   is recorded with ``reduce="flatten"``, which needs no layout). Outputs of one shape that the
   rules read both ways (a permuted map whose sides equal its channels) are refused the same way.

Prefix tokens come from timm's ``num_prefix_tokens`` (checked against ``patch_embed.num_patches``),
torchvision's ``VisionTransformer`` (its class token) and blocks called with their token grid
``(H, W)`` (CoaT, PVT: the tokens beyond the grid come first); a shape-preserving module (a final
norm) keeps those of its input.

A layer whose output does not lead with the batch (windowed attention gives (batch * windows, N,
C)) has rows that are not stimuli; it is refused before anything is written.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping

import torch
from torch import nn

from probe._hooks import call_model, describe_batch, first_tensor, forward_failure, no_fastpath
from zoo._names import unknown_name_error

__all__ = [
    "Layout",
    "LAYOUTS",
    "RANK_DEFAULT",
    "ModuleCall",
    "trace_calls",
    "tracing",
    "LayoutFinder",
    "layer_layouts",
    "batch_size_of",
]

#: Layout names ``layout=`` accepts (``tokens+N``: N prefix tokens, such as ``tokens+1``).
LAYOUTS = ("channels-first", "channels-last", "tokens", "tokens+N", "vector")
_KINDS = ("channels-first", "channels-last", "tokens", "vector")
_ALIASES = {
    "maps": "channels-first",
    "nchw": "channels-first",
    "ncl": "channels-first",
    "nhwc": "channels-last",
    "nlc": "tokens",
    "units": "vector",
}
_MAPS = ("channels-first", "channels-last")
_FORMATS = {"NCHW": ("channels-first", 4), "NHWC": ("channels-last", 4), "NCL": ("channels-first", 3), "NLC": ("tokens", 3)}
_ND_CLASS = re.compile(r"([123])d(?=[A-Z_]|$)")
#: Modules that work on (batch, C, *spatial) maps without saying so in their class name.
_CHANNELS_FIRST_MODULES = (
    nn.GroupNorm, nn.LocalResponseNorm, nn.PixelShuffle, nn.PixelUnshuffle, nn.Upsample, nn.ChannelShuffle, nn.Fold
)
_MAX_PREFIX = 16  # more tokens beyond a block's grid than this are not read as prefix tokens


@dataclass(frozen=True)
class Layout:
    """How one layer's output is arranged (see the module docstring).

    Attributes
    ----------
    kind
        ``"channels-first"``, ``"channels-last"``, ``"tokens"`` or ``"vector"``.
    prefix_tokens
        For tokens: how many class/distillation/register tokens come before the others.
    how
        Why this layout was chosen ("stated", "Conv2d output", ...); not compared.
    """

    kind: str
    prefix_tokens: int = 0
    how: str = field(default="stated", compare=False)

    @property
    def name(self) -> str:
        """``"channels-last"``, ``"tokens+1"``...: what ``layout=`` takes and manifests store."""
        return f"tokens+{self.prefix_tokens}" if self.kind == "tokens" and self.prefix_tokens else self.kind

    @property
    def is_map(self) -> bool:
        return self.kind in _MAPS

    @classmethod
    def parse(cls, value: str | Layout, how: str = "stated") -> Layout:
        """A ``Layout`` from a name (``"channels-last"``, ``"tokens+1"``, aliases ``maps``, ``nhwc``...)."""
        if isinstance(value, Layout):
            return value
        if not isinstance(value, str):
            raise ValueError(f"a layout must be a name such as 'channels-last', got {value!r}; valid: {LAYOUTS}")
        text = value.strip().lower()
        text = _ALIASES.get(text, text)
        prefixed = re.fullmatch(r"tokens\+(\d+)", text)
        if prefixed:
            return cls("tokens", int(prefixed.group(1)), how)
        if text not in _KINDS:
            raise unknown_name_error("layout", value, [*_KINDS, "tokens+1", *_ALIASES])
        return cls(text, 0, how)

    def fits(self, shape: tuple[int, ...]) -> str | None:
        """None when an output of ``shape`` (batch first) can have this layout, else why not."""
        ndim = len(shape)
        if self.kind in _MAPS and ndim < 3:
            return f"a {self.kind} map needs at least 3 dimensions (batch, ...), got {ndim}"
        if self.kind == "tokens" and ndim != 3:
            return f"tokens need 3 dimensions (batch, tokens, dim), got {ndim}"
        if self.kind == "tokens" and self.prefix_tokens >= shape[1]:
            return f"{self.prefix_tokens} prefix tokens leave none of the {shape[1]} tokens"
        if self.kind == "vector" and ndim != 2:
            return f"a vector needs 2 dimensions (batch, units), got {ndim}"
        return None

    def spatial_axes(self, ndim: int) -> tuple[int, ...]:
        """Axes of the positions of a map of ``ndim`` dimensions (batch first)."""
        return tuple(range(2, ndim)) if self.kind == "channels-first" else tuple(range(1, ndim - 1))

    def channels_first(self, x: torch.Tensor) -> torch.Tensor:
        """The map as (batch, C, *spatial): a permuted view for channels-last, else ``x`` itself."""
        if self.kind != "channels-last":
            return x
        return x.permute(0, x.dim() - 1, *range(1, x.dim() - 1))

    def map_shape(self, raw_shape: tuple[int, ...]) -> tuple[tuple[int, ...], int]:
        """(spatial shape, channels) of a map whose per-stimulus shape is ``raw_shape``."""
        if self.kind == "channels-last":
            return tuple(raw_shape[:-1]), raw_shape[-1]
        return tuple(raw_shape[1:]), raw_shape[0]


def _features_last(ndim: int, how: str) -> Layout | None:
    if ndim >= 4:
        return Layout("channels-last", 0, how)
    return Layout("tokens", 0, how) if ndim == 3 else None


#: ``Layout.how`` of a layout that only the output's rank implies (3-d: tokens).
RANK_DEFAULT = "read by its rank"


def _by_rank(shape: tuple[int, ...]) -> Layout | None:
    """The layout the rank alone implies: None for 4-d and more (ambiguous)."""
    if len(shape) <= 2:
        return Layout("vector", 0, "vector output")
    if len(shape) == 3:
        return Layout("tokens", 0, RANK_DEFAULT)
    return None


# -- tracing every module call -------------------------------------------------------------------
@dataclass
class ModuleCall:
    """One module call of a traced forward pass."""

    name: str
    module: nn.Module
    call: int  # 1-based count of this module's calls in the pass
    parent: int | None  # index (in start order) of the call it ran inside
    done_before: int  # number of calls completed when it started
    input_shape: tuple[int, ...] | None = None
    args: tuple = ()  # positional arguments while the call runs (for failure messages), cleared after
    grid: tuple[int, int] | None = None  # an (H, W) argument: the token grid of a CoaT/PVT block
    output_shape: tuple[int, ...] | None = None
    end: int = -1  # completion order


def _grid_argument(args: tuple, kwargs: dict) -> tuple[int, int] | None:
    for value in (*args, *kwargs.values()):
        if (
            isinstance(value, (tuple, list, torch.Size))
            and len(value) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
        ):
            return int(value[0]), int(value[1])
    return None


class _Tracer:
    """Enter/leave hooks on every module that log each call (see ``tracing``)."""

    def __init__(self) -> None:
        self.calls: list[ModuleCall] = []
        self.stack: list[int] = []
        self.counts: dict[str, int] = {}
        self.finished = 0

    def enter(self, name: str):
        def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
            self.counts[name] = self.counts.get(name, 0) + 1
            first = first_tensor(args) if args else None
            first = first if first is not None else first_tensor(list(kwargs.values()))
            self.calls.append(
                ModuleCall(
                    name,
                    module,
                    self.counts[name],
                    self.stack[-1] if self.stack else None,
                    self.finished,
                    tuple(first.shape) if first is not None else None,
                    args,
                    _grid_argument(args, kwargs),
                )
            )
            self.stack.append(len(self.calls) - 1)

        return hook

    def leave(self, module: nn.Module, _args: tuple, output: Any) -> None:
        # the latest call of this module still running (calls above it raised and were caught)
        position = next((p for p in range(len(self.stack) - 1, -1, -1) if self.calls[self.stack[p]].module is module), None)
        if position is None:
            return
        call = self.calls[self.stack[position]]
        del self.stack[position:]
        tensor = first_tensor(output)
        call.args = ()
        call.output_shape = tuple(tensor.shape) if tensor is not None else None
        call.end = self.finished
        self.finished += 1


@contextmanager
def tracing(model: nn.Module) -> Iterator[_Tracer]:
    """Log every module call of the forward passes run in the block (``tracer.calls``, in start order).

    Each call keeps its input and output shapes (first tensor of each), its nesting and an ``(H, W)``
    argument if it has one. The hooks are removed afterwards, also when the block raises.
    """
    tracer = _Tracer()
    handles = []
    try:
        for name, module in model.named_modules():
            handles.append(module.register_forward_pre_hook(tracer.enter(name), with_kwargs=True))
            handles.append(module.register_forward_hook(tracer.leave))
        yield tracer
    finally:
        for handle in handles:
            handle.remove()


def trace_calls(model: nn.Module, x: Any) -> list[ModuleCall]:
    """Run ``model`` once on ``x`` (a tensor, or a dict of keyword tensors) and return every module call.

    Raises
    ------
    ValueError
        When the forward pass fails: the message names the innermost module that was running and
        its input shapes.
    """
    with no_fastpath(), tracing(model) as tracer:
        try:
            call_model(model, x)
        except torch.OutOfMemoryError:
            raise
        except (RuntimeError, ValueError, TypeError, IndexError) as err:
            running = tracer.calls[tracer.stack[-1]] if tracer.stack else None
            failed = None if running is None else (running.name, running.module, running.args)
            raise forward_failure(x, failed, err) from err
    return tracer.calls


def batch_size_of(x: Any) -> int:
    """Number of stimuli in a batch: a tensor's first dimension, or that of a dict's first tensor."""
    tensor = first_tensor(x)
    if tensor is None or tensor.dim() == 0:
        raise ValueError(f"a batch must be a tensor or a dict of tensors with a batch axis, got {describe_batch(x)}")
    return int(tensor.shape[0])


# -- finding layouts ---------------------------------------------------------------------------
class LayoutFinder:
    """The layout of every call of a traced pass (rules 2-6 of the module docstring)."""

    def __init__(self, calls: list[ModuleCall]):
        self.calls = calls
        self._found: dict[int, Layout | None] = {}
        self._inside_cache: dict[int, list[int]] = {}

    # rule 2
    def own(self, index: int) -> Layout | None:
        """The layout a call's module type or attributes say its output has, or None."""
        call = self.calls[index]
        shape = call.output_shape
        if shape is None or len(shape) < 3:
            return None
        module, ndim = call.module, len(shape)
        kind = type(module).__name__
        fmt = getattr(module, "output_fmt", None)
        fmt = getattr(fmt, "value", fmt)
        if isinstance(fmt, str) and fmt.upper() in _FORMATS:
            layout_kind, rank = _FORMATS[fmt.upper()]
            if rank == ndim:
                return Layout(layout_kind, 0, f"{kind} with output_fmt {fmt.upper()}")
        dims = getattr(module, "dims", None)
        if kind == "Permute" and isinstance(dims, (list, tuple)) and len(dims) == ndim == 4:
            if list(dims) == [0, 2, 3, 1]:
                return Layout("channels-last", 0, "Permute to (batch, H, W, C)")
            if list(dims) == [0, 3, 1, 2]:
                return Layout("channels-first", 0, "Permute to (batch, C, H, W)")
        nd = _ND_CLASS.search(kind)
        if nd is not None:
            return Layout("channels-first", 0, f"{kind} output") if ndim == int(nd.group(1)) + 2 else None
        if isinstance(module, _CHANNELS_FIRST_MODULES):
            return Layout("channels-first", 0, f"{kind} output")
        normalized = getattr(module, "normalized_shape", None)
        if isinstance(normalized, (tuple, list, torch.Size)) and len(normalized) == 1 and shape[-1] == normalized[0]:
            return _features_last(ndim, f"{kind} over the last axis")
        if isinstance(module, nn.Linear) and shape[-1] == module.out_features:
            return _features_last(ndim, f"{kind} over the last axis")
        if isinstance(module, nn.Embedding) and shape[-1] == module.embedding_dim:
            return _features_last(ndim, f"{kind} output")
        if isinstance(module, nn.MultiheadAttention) and ndim == 3:
            return Layout("tokens", 0, f"{kind} output")
        return None

    def _inside(self, index: int) -> list[int]:
        """Calls made inside a call (its descendants), in start order."""
        if index not in self._inside_cache:
            end = self.calls[index].end
            inside = []
            for j in range(index + 1, len(self.calls)):
                if self.calls[j].end > end:  # started after this call ended
                    break
                inside.append(j)
            self._inside_cache[index] = inside
        return self._inside_cache[index]

    def find(self, index: int) -> Layout | None:
        """The layout of a call's output (with prefix tokens for tokens), or None when it cannot be told."""
        if index not in self._found:
            self._found[index] = None  # guards against cycles; replaced below
            layout = self._find(index)
            if layout is not None and layout.kind == "tokens":
                prefix = self._prefix_tokens(index, self.calls[index].output_shape[1])
                how = f"tokens after {prefix} prefix tokens" if layout.how == RANK_DEFAULT else layout.how
                layout = Layout("tokens", prefix, how) if prefix else layout
            self._found[index] = layout
        return self._found[index]

    def _find(self, index: int) -> Layout | None:
        call = self.calls[index]
        shape = call.output_shape
        if shape is None:
            return None
        if len(shape) <= 2:
            return Layout("vector", 0, "vector output")
        own = self.own(index)
        if own is not None:
            return own
        # rule 3: what the modules inside say about outputs of this very shape
        inside = self._inside(index)
        same = [(j, found) for j in inside if self.calls[j].output_shape == shape for found in [self.own(j)] if found]
        if len({found.kind for _, found in same}) > 1:
            return None
        if same:
            j, found = same[-1]
            return Layout(found.kind, 0, f"as {self.calls[j].name!r} inside it")
        # rule 4: a shape-preserving module keeps its input's layout
        if call.input_shape == shape:
            found, conclusive = self._input_layout(index)
            if conclusive:
                return found
        # rule 5: the maps made inside share one layout, and only that reading fits the output's size
        maps = [(j, found) for j in inside for found in [self.own(j)] if found is not None and found.is_map]
        maps = [(j, found) for j, found in maps if len(self.calls[j].output_shape) == len(shape)]
        if len(shape) >= 4 and len({found.kind for _, found in maps}) == 1:
            kind = maps[0][1].kind
            other = "channels-last" if kind == "channels-first" else "channels-first"
            sizes = {found.map_shape(self.calls[j].output_shape[1:])[0] for j, found in maps}
            if Layout(kind).map_shape(shape[1:])[0] in sizes and Layout(other).map_shape(shape[1:])[0] not in sizes:
                return Layout(kind, 0, f"like the {kind} maps made inside it")
        return _by_rank(shape)

    def _input_layout(self, index: int) -> tuple[Layout | None, bool]:
        """(layout, conclusive): the layout of the latest output of this call's input shape completed
        before it started; not conclusive when there is none or its layout cannot be told, and
        conclusively None when outputs of that shape in the enclosing call disagree."""
        call = self.calls[index]
        shape = call.input_shape
        before = self._made_before(index, shape)
        if not before:
            return None, False
        latest = max(before, key=lambda j: self.calls[j].end)
        found = self.find(latest)
        if found is None:
            return None, False
        parent_start = self.calls[call.parent].done_before if call.parent is not None else 0
        kinds = {other.kind for j in before if self.calls[j].end >= parent_start for other in [self.find(j)] if other}
        if len(kinds) > 1:
            return None, True
        return Layout(found.kind, 0, f"as its input, the output of {self.calls[latest].name!r}"), True

    def _prefix_tokens(self, index: int, n_tokens: int) -> int:
        """Prefix (class, distillation, register) tokens of a tokens output, from the enclosing calls."""
        current: int | None = index
        while current is not None:
            call = self.calls[current]
            if call.grid is not None:
                extra = n_tokens - call.grid[0] * call.grid[1]
                if 0 <= extra <= _MAX_PREFIX:
                    return extra
            module = call.module
            prefix = getattr(module, "num_prefix_tokens", None)
            if isinstance(prefix, int) and not isinstance(prefix, bool) and prefix >= 0:
                patches = getattr(getattr(module, "patch_embed", None), "num_patches", None)
                if isinstance(patches, int) and n_tokens == patches:
                    return 0
                return prefix if n_tokens > prefix else 0
            if type(module).__name__ == "VisionTransformer" and isinstance(getattr(module, "class_token", None), torch.Tensor):
                return 1 if n_tokens == getattr(module, "seq_length", None) else 0  # torchvision's ViT
            current = call.parent
        # a shape-preserving module (a final norm) keeps the prefix tokens of its input
        call = self.calls[index]
        if call.input_shape == call.output_shape:
            before = self._made_before(index, call.input_shape)
            if before:
                found = self.find(max(before, key=lambda j: self.calls[j].end))
                return found.prefix_tokens if found is not None and found.kind == "tokens" else 0
        return 0

    def _made_before(self, index: int, shape: tuple[int, ...] | None) -> list[int]:
        """Calls completed before this one started whose output has ``shape``."""
        done_before = self.calls[index].done_before
        return [j for j in range(index) if self.calls[j].end < done_before and self.calls[j].output_shape == shape]


def enclosing_per_stimulus(calls: list[ModuleCall], index: int, batch: int) -> str | None:
    """The nearest enclosing module whose output leads with the batch, to record instead."""
    current = calls[index].parent
    while current is not None:
        shape = calls[current].output_shape
        if shape and shape[0] == batch and calls[current].name:
            return calls[current].name
        current = calls[current].parent
    return None


# -- the recorded layers -------------------------------------------------------------------------
def layer_layouts(
    calls: list[ModuleCall],
    names: list[str],
    stated: Mapping[str, Layout | None],
    batch: int,
    need_layout: Mapping[str, bool],
    reshaped: Mapping[str, bool] | None = None,
) -> dict[tuple[str, int], Layout | None]:
    """The layout of each call of the recorded layers, checking that each can be recorded.

    Parameters
    ----------
    calls
        A traced pass (``trace_calls``).
    names
        Recorded module names.
    stated
        Layer -> layout the user stated, or None.
    batch
        Stimuli in the traced batch.
    need_layout
        Layer -> whether its reduction needs the layout (``flatten`` does not).
    reshaped
        Layer -> whether the user reshapes its output (then its module says nothing of the layout).

    Returns
    -------
    dict
        (layer, call number) -> layout, or None for a flattened layer whose layout cannot be told.

    Raises
    ------
    ValueError
        A layer that is not called, whose output does not lead with the batch, or whose 4-d output's
        layout cannot be told (and is needed); the message says what to do.
    """
    finder = LayoutFinder(calls)
    reshaped = reshaped or {}
    by_name: dict[str, list[int]] = {name: [] for name in names}
    for index, call in enumerate(calls):
        if call.name in by_name:
            by_name[call.name].append(index)
    missing = [name for name, found in by_name.items() if not found]
    if missing:
        raise ValueError(
            f"layers {missing} were not called during the forward pass (defined but unused by forward); "
            "remove them from layers"
        )
    layouts: dict[tuple[str, int], Layout | None] = {}
    for name in names:
        for index in by_name[name]:
            call = calls[index]
            label = name if len(by_name[name]) == 1 else f"{name}#{call.call}"
            shape = call.output_shape
            if shape is None:
                raise ValueError(f"layer {label!r} returned no tensor; it cannot be recorded")
            if len(shape) == 0 or shape[0] != batch:
                raise not_per_stimulus_error(label, shape, batch, enclosing_per_stimulus(calls, index, batch))
            if stated.get(name) is not None:
                layout = stated[name]
                problem = layout.fits(shape)
                if problem:
                    raise ValueError(f"layer {label!r} has output of shape {shape}, which cannot be layout={layout.name!r}: {problem}")
            elif reshaped.get(name):
                layout = _by_rank(shape)
            else:
                layout = finder.find(index)
            if layout is None and need_layout.get(name, True):
                raise ambiguous_layout_error(label, shape, type(call.module).__name__)
            layouts[(name, call.call)] = layout
    return layouts


def not_per_stimulus_error(layer: str, shape: tuple[int, ...], batch: int, enclosing: str | None) -> ValueError:
    instead = f"record the enclosing block {enclosing!r} instead, or " if enclosing else "record an enclosing block, or "
    return ValueError(
        f"layer {layer!r} gives output of shape {tuple(shape)} for a batch of {batch} stimuli: its first dimension is "
        "not the batch (windows, patches or heads folded into it?), so its rows are not stimuli and it cannot be "
        f"recorded as it is; {instead}pass reshape={{{layer.split('#')[0]!r}: fn}} where fn(output, batch_size) returns "
        "the output as a tensor of shape (batch_size, ...)"
    )


def ambiguous_layout_error(layer: str, shape: tuple[int, ...], module_type: str) -> ValueError:
    per_stimulus = tuple(shape[1:])
    return ValueError(
        f"cannot tell the layout of layer {layer!r} ({module_type}), whose output has shape {tuple(shape)} (batch "
        f"first): neither its module nor the modules around it say whether it is channels-first (batch, C, H, W), "
        f"channels-last (batch, H, W, C) or something else. State it with layout={{{layer.split('#')[0]!r}: "
        f"'channels-first'}} (values: {', '.join(LAYOUTS)}), or record it with reduce='flatten', which keeps all "
        f"{_product(per_stimulus)} values whatever the layout"
    )


def _product(shape: tuple[int, ...]) -> int:
    total = 1
    for side in shape:
        total *= int(side)
    return total

