"""Choosing the device: a choice, not an assumption."""

from __future__ import annotations

import torch

from zoo._names import unknown_name_error

__all__ = ["resolve_device"]

# What to suggest for a device torch does not know; torch accepts an index after each ("cuda:1").
_DEVICE_NAMES = ("auto", "cpu", "cuda", "cuda:0", "mps")


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """Turn a device request into a ``torch.device``.

    Parameters
    ----------
    device
        ``"auto"`` (or None) picks CUDA when it is present and the CPU otherwise; anything else is
        passed to ``torch.device``.

    Raises
    ------
    ValueError
        If CUDA is asked for explicitly but is not available.
    zoo.UnknownNameError
        If torch knows no such device (for example ``"tpu"``).
    """
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise unknown_name_error("device", device, _DEVICE_NAMES) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r} was requested but CUDA is not available; use device='cpu' or 'auto'")
    return device
