"""Forward hooks that hand each recorded layer's output to a callback, and always come off again.

Conventions (documented in ``probe.record``):

- **Tuple, list or dict outputs**: the first tensor found depth-first (tuple/list order, dict
  insertion order) is recorded, for example ``attn_output`` of ``nn.MultiheadAttention`` and
  ``output`` of ``nn.LSTM``.
- **A module called several times per forward pass** (a shared ReLU, a weight-tied block): each
  call is recorded as its own layer ``name#1``, ``name#2`` ... in call order.
- **Fused fast paths**: ``nn.TransformerEncoderLayer`` in eval mode runs one fused kernel that skips
  its submodules' hooks (pytorch#128413); the fast path is switched off during the pass and
  restored afterwards.
- Hooks are removed in a ``finally`` block, also when the forward pass raises. When the model
  raises, the batch is run once more with enter/leave hooks on every module to name the
  innermost module that failed and its input shapes (no such hooks slow down normal passes).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator, Mapping

import torch
from torch import nn

from zoo._reducer import first_tensor

__all__ = ["first_tensor", "capture_outputs", "ForwardCapture", "call_model", "describe_batch", "forward_failure", "no_fastpath"]


def _describe_inputs(args: tuple) -> str:
    shapes = [tuple(a.shape) for a in args if isinstance(a, torch.Tensor)]
    return ", ".join(str(s) for s in shapes) or "no tensor input"


def call_model(model: nn.Module, x: Any) -> Any:
    """``model(**x)`` for a dict batch (``input_ids``, ``attention_mask``...), else ``model(x)``."""
    return model(**x) if isinstance(x, Mapping) else model(x)


def describe_batch(x: Any) -> str:
    """The per-stimulus shape of a batch, for messages: ``(3, 32, 32)`` or ``{'input_ids': (12,), ...}``."""
    if isinstance(x, torch.Tensor):
        return str(tuple(x.shape[1:]))
    if isinstance(x, Mapping):
        shapes = {key: tuple(value.shape[1:]) for key, value in x.items() if isinstance(value, torch.Tensor)}
        return "{" + ", ".join(f"{key!r}: {shape}" for key, shape in shapes.items()) + "}"
    return type(x).__name__


def forward_failure(x: Any, failed: tuple[str, nn.Module, tuple] | None, err: Exception) -> ValueError:
    """The error for a forward pass that raised: the innermost module running and its input shapes.

    ``failed`` is (name, module, positional arguments), or None when no module was running.
    """
    if failed is not None:
        name, module, args = failed
        where = f"in layer {name or '<root>'!r} ({type(module).__name__}) with input shape {_describe_inputs(args)}"
    else:
        where = "outside any layer"
    return ValueError(
        f"the forward pass failed {where} for stimuli of shape {describe_batch(x)}: {err}. "
        "Check that the data matches the model's expected input (for a zoo model, "
        "model.config['input_shape'])."
    )


class _ReducerFailure(Exception):
    """Raised inside a hook when the callback fails, to tell it apart from the model's own errors."""

    def __init__(self, layer: str):
        super().__init__(layer)
        self.layer = layer


class ForwardCapture:
    """Live hooks on a model: counts calls per recorded module; explains a failing forward pass.

    Use through ``capture_outputs``. ``callback(name, call, output)`` receives each call's output
    (first tensor, detached, on the model's device) with ``call`` counting from 1 within a pass.
    """

    def __init__(self, model: nn.Module, names: list[str], callback: Callable[[str, int, torch.Tensor], None]):
        self.model = model
        self.names = list(names)
        self.callback = callback
        self.calls: dict[str, int] = dict.fromkeys(self.names, 0)
        self._running: list[tuple[str, nn.Module, tuple]] = []
        self._locating = False
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def _install(self) -> None:
        modules = dict(self.model.named_modules())
        for name in self.names:
            self._handles.append(modules[name].register_forward_hook(self._recorder(name)))

    def _remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _locate_failure(self, x: Any) -> tuple[str, nn.Module, tuple] | None:
        """Re-run a failed batch with enter/leave hooks on every module; return the innermost one running.

        Tracking hooks on every module would slow every pass down (each hooked call takes
        PyTorch's slow path), so they are only installed to explain a failure.
        """
        tracking = []
        self._locating = True
        try:
            for name, module in self.model.named_modules():
                tracking.append(module.register_forward_pre_hook(self._entered(name, module)))
                tracking.append(module.register_forward_hook(self._left))
            self._running.clear()
            try:
                call_model(self.model, x)
            except Exception:
                return self._running[-1] if self._running else None
            return None
        finally:
            for handle in tracking:
                handle.remove()
            self._locating = False
            self._running.clear()

    def _entered(self, name: str, module: nn.Module):
        def hook(_module: nn.Module, args: tuple) -> None:
            self._running.append((name, module, args))

        return hook

    def _left(self, _module: nn.Module, _args: tuple, _output: Any) -> None:
        if self._running:
            self._running.pop()

    def _recorder(self, name: str):
        def hook(_module: nn.Module, _args: tuple, output: Any) -> None:
            if self._locating:
                return
            tensor = first_tensor(output)
            if tensor is None:
                raise _ReducerFailure(name) from TypeError(
                    f"layer {name!r} returned {type(output).__name__} without any tensor; it cannot be recorded"
                )
            self.calls[name] += 1
            try:
                self.callback(name, self.calls[name], tensor.detach())
            except Exception as err:
                raise _ReducerFailure(name) from err

        return hook

    def forward(self, x: Any) -> Any:
        """Run ``model(x)``, resetting the call counts; failures name the layer that raised.

        Raises
        ------
        ValueError
            When the model raises on this input (a shape it cannot take): the message names the
            innermost module that was running and its input shapes.
        """
        self.calls = dict.fromkeys(self.names, 0)
        try:
            return call_model(self.model, x)
        except _ReducerFailure as failure:
            cause = failure.__cause__
            if isinstance(cause, Exception):
                cause.add_note(f"(while recording layer {failure.layer!r})")
                raise cause from None
            raise
        except torch.OutOfMemoryError:
            raise
        except (RuntimeError, ValueError, TypeError, IndexError) as err:
            raise forward_failure(x, self._locate_failure(x), err) from err


def _mha_fastpath_enabled() -> bool | None:
    mha = getattr(torch.backends, "mha", None)
    return mha.get_fastpath_enabled() if mha is not None and hasattr(mha, "get_fastpath_enabled") else None


@contextmanager
def capture_outputs(
    model: nn.Module, names: list[str], callback: Callable[[str, int, torch.Tensor], None]
) -> Iterator[ForwardCapture]:
    """Install recording hooks on ``names`` of ``model`` for the duration of the block.

    Parameters
    ----------
    model
        The model.
    names
        Module names from ``model.named_modules()``.
    callback
        Called as ``callback(name, call, output)`` for every call of a recorded module.

    Yields
    ------
    ForwardCapture
        Run batches with its ``forward(x)``; ``calls`` holds the per-module call counts of the last pass.
    """
    capture = ForwardCapture(model, names, callback)
    with no_fastpath():
        try:
            capture._install()
            yield capture
        finally:
            capture._remove()


@contextmanager
def no_fastpath() -> Iterator[None]:
    """Switch off the fused attention fast path (which skips submodule hooks) for the block."""
    fastpath = _mha_fastpath_enabled()
    try:
        if fastpath:
            torch.backends.mha.set_fastpath_enabled(False)
        yield
    finally:
        if fastpath:
            torch.backends.mha.set_fastpath_enabled(True)
