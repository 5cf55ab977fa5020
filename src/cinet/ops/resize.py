"""The one resize of maps that must not mix values: labels, depth, masks (nearest pixel centre).

Used for the data transforms (:mod:`cinet.data.transforms`), the labels at the SUM's feature size (the
"down-sampled" m of Eq. 3, for the ideal map, L_att and L_con) and predictions restored to the input size, so
that all parts agree on one pixel grid (pixel centres, ``align_corners=False``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["resize_map"]


def resize_map(t: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize a depth, label, mask or validity map ``[..., H, W]`` to ``size`` ``(h, w)`` by the nearest pixel
    centre (``nearest-exact``), never mixing values: the one resize of every such map in cinet.

    Output pixel ``j`` takes input pixel ``floor((j + 0.5) * H / h)``: the same grid as the bilinear image
    resize (``align_corners=False``) and :func:`cinet.data.info.scale_intrinsics`. PyTorch's ``nearest``
    (``floor(j * H / h)``) shifts the map by up to half an input pixel (a label edge 0.49 output px off on
    average for 4032 -> 320 wide; docs/data.md).

    Args:
        t: Map of any dtype (labels int64, depth float32 metres, bool masks), ``[..., H, W]``.
        size: Target ``(h, w)`` in pixels.

    Returns:
        The map at ``[..., h, w]`` with the input dtype.
    """
    if tuple(t.shape[-2:]) == tuple(size):
        return t
    lead = t.shape[:-2]
    flat = t.reshape(1, -1, *t.shape[-2:])
    work = flat if flat.dtype in (torch.float32, torch.float64) else flat.double()  # exact for int64 labels
    out = F.interpolate(work, size=tuple(size), mode="nearest-exact")
    return out.to(t.dtype).reshape(*lead, *size)
