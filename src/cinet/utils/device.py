"""One place that turns a ``--device`` value into a :class:`torch.device` (predict, serve, bench, Predictor)."""

from __future__ import annotations

import torch

from cinet.errors import InputError


def resolve_device(name: str | torch.device, *, option: str = "--device") -> torch.device:
    """``auto`` -> CUDA when available, else CPU; otherwise the named device, checked to exist here.

    Args:
        name: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` (or any :class:`torch.device` string) or a device.
        option: How error messages name the setting.

    Returns:
        The device.

    Raises:
        InputError: One line for a name PyTorch does not know, or a CUDA device this machine does not have.
    """
    if str(name) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError, ValueError):
        raise InputError(f"{option}: {str(name)!r} is not a device (cpu, cuda, cuda:N or auto)") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise InputError(
                f"{option} {name}: no CUDA device is available on this machine (use cpu or auto)"
            )
        if device.index is not None and device.index >= count:
            raise InputError(
                f"{option} {name}: this machine has {count} CUDA device(s) (cuda:0..cuda:{count - 1})"
            )
    elif device.type not in ("cpu", "meta"):
        available = {"mps": torch.backends.mps.is_available()}.get(device.type, False)
        if not available:
            raise InputError(f"{option} {name}: not available on this machine (use cpu, cuda or auto)")
    return device
