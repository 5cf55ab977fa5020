"""Float32 islands inside a mixed-precision step: one home for "run this block without autocast".

Under ``torch.autocast`` (``trainer.precision: bf16-mixed`` / ``16-mixed``, ``--runtime bf16``) convolutions and
matrix products run in bf16/fp16. A few computations of CI-Net must not: the depth head's output (a bf16 depth steps
by 1.6 cm at 3 m, coarser than the neighbour differences Eq. 9-10 compare; docs/results.md "bf16 vs float32"),
the losses (Eq. 4, 11-13) and the attention-agreement metric's histogram bins. Each wraps its block in
:func:`float32_region` and upcasts its inputs with :func:`upcast_half`. The opposite cast, a hand-written kernel
taking the dtype a ``bmm`` would get under autocast, is :func:`to_autocast_dtype`.

Source: PyTorch AMP, "Autocast and custom autograd functions / ops that need float32"
(https://pytorch.org/docs/stable/amp.html).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

__all__ = ["float32_region", "to_autocast_dtype", "upcast_half"]

_HALF_DTYPES = (torch.float16, torch.bfloat16)


@contextlib.contextmanager
def float32_region(device_type: str) -> Iterator[None]:
    """Disable autocast for ``device_type`` inside the block (ops run in their inputs' own dtypes).

    A no-op on device types without autocast (``meta``, used by the FLOP count, where
    ``torch.autocast(enabled=False)`` itself raises).

    Args:
        device_type: ``tensor.device.type`` of the block's inputs ("cpu", "cuda", ...).
    """
    if not torch.amp.is_autocast_available(device_type):
        yield
        return
    with torch.autocast(device_type=device_type, enabled=False):
        yield


def upcast_half(x: torch.Tensor) -> torch.Tensor:
    """float16/bfloat16 -> float32; every other dtype kept (float64 for gradcheck, integer labels).

    Args:
        x: Any tensor.

    Returns:
        ``x`` itself, or a float32 copy when ``x`` is half precision.
    """
    return x.float() if x.dtype in _HALF_DTYPES else x


def to_autocast_dtype(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Cast floating tensors to the autocast dtype when autocast is on for their device (as ``bmm`` would).

    For hand-written kernels that run with autocast disabled but should compute in the dtype autocast chose.

    Args:
        tensors: Tensors on one device; non-floating ones are returned unchanged.

    Returns:
        The tensors, cast or not, in the given order.
    """
    device_type = tensors[0].device.type
    if not (torch.amp.is_autocast_available(device_type) and torch.is_autocast_enabled(device_type)):
        return tensors
    dtype = torch.get_autocast_dtype(device_type)
    return tuple(t.to(dtype) if t.is_floating_point() else t for t in tensors)
