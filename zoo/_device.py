"""Choosing the device: a choice, not an assumption."""

from __future__ import annotations

import torch

__all__ = ["resolve_device"]


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
    """
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r} was requested but CUDA is not available; use device='cpu' or 'auto'")
    return device
