"""Consistency loss L_con (paper Eq. 7).

For a depth feature map ``f_d`` and a segmentation feature map ``f_s`` of the same shape [B,C,h,w], and every
position p and neighbour p' at offset l in {1, 2} along x or y::

    D(f, p, p') = exp(-||f_p - f_p'||^2 / (2 sigma^2))          (Mahalanobis distance with Sigma = sigma^2 I)
    L_con = mean over pairs with psi = 1 of |D(f_d, p, p') - D(f_s, p, p')|

where ``psi(p, p') = 1`` when the ground-truth labels (nearest-downsampled to h x w) at p and p' are both valid and
different, and each map has its own learned sigma (``sigma_d`` for ``f_d``, ``sigma_s`` for ``f_s``).

Choices (see ``docs/losses.md``):

* ``||.||^2`` is the mean over channels (the squared Euclidean distance divided by C). With C = 256 a raw sum makes
  ``exp`` underflow to 0 for almost every pair; the mean keeps D in a useful range for sigma ~ 1 (the init).
* The paper compares each position 8 times (offsets +-1, +-2 along x and y). Going backwards repeats the forward
  pairs exactly, so every unordered pair appears twice: we compute each unordered pair once, which leaves the
  mean unchanged.
* Sum over pairs in the paper -> mean over contributing pairs here; several feature maps (stages) are averaged.
* sigma is parameterised as ``log sigma`` so it stays positive.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from cinet.ops import resize_map
from cinet.ops.autocast import float32_region, upcast_half

__all__ = ["ConsistencyLoss", "consistency_loss", "feature_similarity"]


def _shift_pairs(x: torch.Tensor, offset: int, axis: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Views ``(x[p], x[p + offset along axis])`` over the positions where both exist (axis -1 = x, -2 = y)."""
    n = x.shape[axis]
    return x.narrow(axis, 0, n - offset), x.narrow(axis, offset, n - offset)


def feature_similarity(f: torch.Tensor, offset: int, axis: int, log_sigma: torch.Tensor) -> torch.Tensor:
    """``D(f, l) = exp(-mean_c (f_p - f_p')^2 / (2 sigma^2))`` for p' = p + offset along ``axis``.

    Args:
        f: Features [B,C,h,w].
        offset: Offset l in pixels (> 0).
        axis: -1 (x) or -2 (y).
        log_sigma: Scalar ``log sigma``.

    Returns:
        [B,h,w-l] (axis -1) or [B,h-l,w] (axis -2) similarities in (0, 1].
    """
    a, b = _shift_pairs(f, offset, axis)  # [B,C,...]
    dist = (a - b).pow(2).mean(dim=1)  # [B,h',w'] per-channel mean of the squared distance
    return torch.exp(-dist * torch.exp(-2.0 * log_sigma) / 2.0)


def consistency_loss(
    f_d: torch.Tensor,
    f_s: torch.Tensor,
    labels: torch.Tensor,
    log_sigma_d: torch.Tensor,
    log_sigma_s: torch.Tensor,
    offsets: Sequence[int] = (1, 2),
    ignore_index: int = 255,
) -> torch.Tensor:
    """Consistency loss (Eq. 7) of one pair of feature maps.

    Args:
        f_d: Depth-branch features [B,C,h,w].
        f_s: Segmentation-branch features [B,C,h,w].
        labels: Ground-truth labels [B,H,W] (nearest-downsampled to (h, w) here).
        log_sigma_d: Scalar ``log sigma`` of the depth map.
        log_sigma_s: Scalar ``log sigma`` of the segmentation map.
        offsets: Offsets l (paper: {1, 2}).
        ignore_index: Ignored label (pairs involving it have psi = 0).

    Returns:
        Scalar mean of ``|D(f_d) - D(f_s)|`` over the pairs with psi = 1; 0 with a gradient path if there is none.
    """
    if f_d.shape != f_s.shape or f_d.dim() != 4:
        raise ValueError(
            f"feature maps must be [B,C,h,w] of equal shape, got {tuple(f_d.shape)}, {tuple(f_s.shape)}"
        )
    with float32_region(f_d.device.type):
        f_d, f_s = upcast_half(f_d), upcast_half(f_s)
        lab = resize_map(labels, tuple(f_d.shape[-2:]))  # [B,h,w]
        total = (f_d.sum() + f_s.sum() + log_sigma_d.sum() + log_sigma_s.sum()) * 0.0  # keeps a grad path
        count = torch.zeros((), dtype=f_d.dtype, device=f_d.device)
        for offset in offsets:
            for axis in (-1, -2):  # x, y; the opposite directions give the same unordered pairs
                if f_d.shape[axis] <= offset:
                    continue
                la, lb = _shift_pairs(lab, offset, axis)  # [B,h',w']
                psi = ((la != ignore_index) & (lb != ignore_index) & (la != lb)).to(f_d.dtype)
                d_d = feature_similarity(f_d, offset, axis, log_sigma_d)  # [B,h',w']
                d_s = feature_similarity(f_s, offset, axis, log_sigma_s)  # [B,h',w']
                total = total + ((d_d - d_s).abs() * psi).sum()
                count = count + psi.sum()
        return total / count.clamp_min(1.0)


class ConsistencyLoss(nn.Module):
    """L_con (Eq. 7) over several stages, each with its own learned ``sigma_d`` and ``sigma_s``.

    The parameters ``log_sigma_d`` and ``log_sigma_s`` ([num_maps], initialised to ``log(init_sigma)``) belong to
    this module: the optimizer must include them (they do when the loss is a submodule of the trained module).
    With ``learn_sigma=False`` they are buffers (fixed sigma).

    Args:
        num_maps: Number of (depth, segmentation) feature-map pairs (stages).
        offsets: Offsets l (paper: {1, 2}).
        ignore_index: Ignored label.
        init_sigma: Initial sigma (1.0 with the per-channel-mean distance).
        learn_sigma: Learn sigma (paper) or keep it fixed.
    """

    def __init__(
        self,
        num_maps: int,
        offsets: Sequence[int] = (1, 2),
        ignore_index: int = 255,
        init_sigma: float = 1.0,
        learn_sigma: bool = True,
    ) -> None:
        super().__init__()
        if num_maps < 1 or init_sigma <= 0:
            raise ValueError(f"need num_maps >= 1 and init_sigma > 0, got {num_maps}, {init_sigma}")
        self.num_maps = num_maps
        self.offsets = tuple(offsets)
        self.ignore_index = ignore_index
        init = torch.full((num_maps,), float(torch.log(torch.tensor(init_sigma))))
        if learn_sigma:
            self.log_sigma_d = nn.Parameter(init.clone())
            self.log_sigma_s = nn.Parameter(init.clone())
        else:
            self.register_buffer("log_sigma_d", init.clone())
            self.register_buffer("log_sigma_s", init.clone())

    def forward(
        self,
        depth_features: Sequence[torch.Tensor],
        seg_features: Sequence[torch.Tensor],
        labels: torch.Tensor,
    ) -> torch.Tensor:
        """Mean over the ``num_maps`` stages of :func:`consistency_loss`.

        Args:
            depth_features: ``num_maps`` depth features [B,C_t,h_t,w_t] (coarse to fine).
            seg_features: ``num_maps`` segmentation features, pairwise the same shapes.
            labels: Labels [B,H,W].

        Returns:
            Scalar loss.
        """
        if len(depth_features) != self.num_maps or len(seg_features) != self.num_maps:
            raise ValueError(
                f"ConsistencyLoss expects {self.num_maps} feature maps per branch, got "
                f"{len(depth_features)} depth and {len(seg_features)} segmentation maps"
            )
        losses = [
            consistency_loss(
                f_d, f_s, labels, self.log_sigma_d[i], self.log_sigma_s[i], self.offsets, self.ignore_index
            )
            for i, (f_d, f_s) in enumerate(zip(depth_features, seg_features))
        ]
        return torch.stack(losses).mean()

    def extra_repr(self) -> str:
        return f"num_maps={self.num_maps}, offsets={self.offsets}, ignore_index={self.ignore_index}"
