"""Depth evaluation metrics (CI-Net paper, Sec. 4.1 "Metrics", after Eigen et al.).

With ``d`` the ground-truth depth, ``d~`` the predicted depth and ``N`` the number of valid pixels:

* accuracy with threshold ``delta_p``: fraction of valid pixels with ``max(d / d~, d~ / d) < 1.25 ** p``
  (``p = 1, 2, 3``; reported as a fraction in ``[0, 1]``, as in the paper's tables),
* ``rms``     = ``sqrt(1/N * sum (d - d~)^2)``,
* ``rms_log`` = ``sqrt(1/N * sum (ln d - ln d~)^2)``,
* ``abs_rel`` = ``1/N * sum |d - d~| / d``,
* ``sq_rel``  = ``1/N * sum (d - d~)^2 / d``.

Protocol (BTS / AdaBins convention, the common NYU protocol):

* a pixel is valid when the ground truth is finite, ``min_depth < gt`` and, when ``max_depth`` is given,
  ``gt < max_depth`` (strict on both sides), the optional caller mask is true and the pixel lies inside
  the optional crop window;
* predictions are clamped to ``[min_depth, max_depth]`` before the metrics are computed (NaN predictions
  become ``min_depth``; ``+inf`` becomes ``max_depth`` when one is given), so ``ln d~`` is always defined;
* ``crop="eigen"`` is NYU's Eigen crop, the numpy slice ``[45:471, 41:601]`` defined at 480x640 and scaled
  proportionally (rounded half up) to other resolutions; a tuple ``(top, bottom, left, right)`` is a numpy slice
  ``[top:bottom, left:right]`` at the resolution of the inputs (``None`` entries and negative bounds
  behave as in numpy).

Two reductions over a set (:class:`DepthMetrics`):

* ``"per_image"`` (default, BTS/AdaBins): every metric is computed per image, then averaged over images
  (so ``rms`` is the mean of per-image RMSEs);
* ``"pooled"``: every valid pixel of the whole set counts once (``rms = sqrt(sum sq err / total N)``).

Images without any valid pixel are skipped and counted in ``num_skipped``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
import torchmetrics

__all__ = ["DEPTH_KEYS", "EIGEN_CROP", "EIGEN_CROP_SIZE", "DepthMetrics", "depth_metrics", "resolve_crop"]

DEPTH_KEYS: tuple[str, ...] = ("delta1", "delta2", "delta3", "rms", "rms_log", "abs_rel", "sq_rel")

#: NYU Eigen crop as numpy slice bounds (top, bottom, left, right), defined at EIGEN_CROP_SIZE (H, W).
EIGEN_CROP: tuple[int, int, int, int] = (45, 471, 41, 601)
EIGEN_CROP_SIZE: tuple[int, int] = (480, 640)

Crop = str | Sequence[int | None] | None
Reduction = Literal["per_image", "pooled"]

# Order of the per-pixel sums returned by ``_depth_sums`` (after the pixel count).
_SUM_KEYS = ("delta1", "delta2", "delta3", "sq", "sq_log", "abs_rel", "sq_rel")


def resolve_crop(
    crop: Crop, height: int, width: int
) -> tuple[int | None, int | None, int | None, int | None]:
    """Turn a crop spec into numpy slice bounds ``(top, bottom, left, right)`` at ``height x width``.

    Args:
        crop: ``None`` (no crop), ``"eigen"`` (``[45:471, 41:601]`` at 480x640, scaled proportionally and
            rounded half up at other sizes) or four slice bounds ``(top, bottom, left, right)``.
        height: Image height in pixels.
        width: Image width in pixels.

    Returns:
        The four slice bounds (entries may be ``None``, meaning open-ended).

    Raises:
        ValueError: Unknown crop name or a tuple that is not four ints/None.
    """
    if crop is None:
        return (None, None, None, None)
    if isinstance(crop, str):
        if crop.lower() != "eigen":
            raise ValueError(f"unknown crop {crop!r}: expected 'eigen', None or (top, bottom, left, right)")
        top, bottom, left, right = EIGEN_CROP
        ref_h, ref_w = EIGEN_CROP_SIZE
        sy, sx = height / ref_h, width / ref_w
        # Round half up (not Python's banker's rounding): 45 * 0.5 = 22.5 -> 23.
        return tuple(math.floor(v * s + 0.5) for v, s in ((top, sy), (bottom, sy), (left, sx), (right, sx)))  # type: ignore[return-value]
    bounds = tuple(crop)
    if len(bounds) != 4 or not all(
        b is None or (isinstance(b, int) and not isinstance(b, bool)) for b in bounds
    ):
        raise ValueError(f"crop must be (top, bottom, left, right) ints or None, got {crop!r}")
    return bounds  # type: ignore[return-value]


def _crop_mask(crop: Crop, height: int, width: int, device: torch.device) -> torch.Tensor | None:
    if crop is None:
        return None
    top, bottom, left, right = resolve_crop(crop, height, width)
    mask = torch.zeros(height, width, dtype=torch.bool, device=device)
    mask[top:bottom, left:right] = True
    return mask


def _as_batch(x: torch.Tensor, name: str) -> torch.Tensor:
    """[H,W] -> [1,H,W]; [B,1,H,W] -> [B,H,W]; [B,H,W] kept."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim == 2:
        return x.unsqueeze(0)
    if x.ndim == 3:
        return x
    if x.ndim == 4 and x.shape[1] == 1:
        return x[:, 0]
    raise ValueError(f"{name} must be [H,W], [B,H,W] or [B,1,H,W], got shape {tuple(x.shape)}")


def _depth_sums(
    pred: torch.Tensor,
    gt: torch.Tensor,
    valid: torch.Tensor | None,
    min_depth: float,
    max_depth: float | None,
    crop: Crop,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image valid-pixel counts ``[B]`` and per-image sums ``[B, 7]`` (order ``_SUM_KEYS``), float64."""
    pred_b, gt_b = _as_batch(pred, "pred"), _as_batch(gt, "gt")
    if pred_b.shape != gt_b.shape:
        raise ValueError(f"pred and gt shapes differ: {tuple(pred.shape)} vs {tuple(gt.shape)}")
    if min_depth <= 0:
        raise ValueError(f"min_depth must be > 0 (log metrics), got {min_depth}")
    if max_depth is not None and max_depth <= min_depth:
        raise ValueError(f"max_depth ({max_depth}) must be > min_depth ({min_depth})")

    gt64 = gt_b.detach().to(torch.float64)
    pred64 = pred_b.detach().to(device=gt64.device, dtype=torch.float64)

    mask = torch.isfinite(gt64) & (gt64 > min_depth)
    if max_depth is not None:
        mask &= gt64 < max_depth
    if valid is not None:
        valid_b = _as_batch(valid, "valid").to(device=mask.device)
        if valid_b.shape != mask.shape:
            raise ValueError(f"valid shape {tuple(valid.shape)} does not match gt {tuple(gt.shape)}")
        mask &= valid_b.bool()
    crop_mask = _crop_mask(crop, mask.shape[-2], mask.shape[-1], mask.device)
    if crop_mask is not None:
        mask &= crop_mask

    # BTS/AdaBins: clamp the prediction into the evaluation range (NaN -> min, +inf -> max).
    pred64 = torch.nan_to_num(pred64, nan=min_depth, posinf=max_depth if max_depth is not None else math.inf)
    pred64 = pred64.clamp(min=min_depth, max=max_depth)

    # Replace invalid gt by 1 so no NaN/inf is produced where the mask is false, then zero them out.
    g = torch.where(mask, gt64, torch.ones_like(gt64))
    p = torch.where(mask, pred64, torch.ones_like(pred64))
    m = mask.to(torch.float64)

    ratio = torch.maximum(g / p, p / g)
    diff = g - p
    sq = diff.square()
    terms = (
        ratio < 1.25,
        ratio < 1.25**2,
        ratio < 1.25**3,
        sq,
        (torch.log(g) - torch.log(p)).square(),
        diff.abs() / g,
        sq / g,
    )
    # One term at a time (no [B, 7, H, W] float64 tensor); invalid pixels contribute 0.
    sums = torch.stack([(term * m).sum(dim=(-2, -1)) for term in terms], dim=1)  # [B, 7]
    counts = m.sum(dim=(-2, -1))
    return counts, sums


def _metrics_from_sums(count: torch.Tensor, sums: torch.Tensor) -> torch.Tensor:
    """``[..., 7]`` sums and ``[...]`` counts -> ``[..., 7]`` metrics (order ``DEPTH_KEYS``)."""
    mean = sums / count.unsqueeze(-1)
    return torch.stack(
        [
            mean[..., 0],
            mean[..., 1],
            mean[..., 2],
            mean[..., 3].sqrt(),
            mean[..., 4].sqrt(),
            mean[..., 5],
            mean[..., 6],
        ],
        dim=-1,
    )


def depth_metrics(
    pred: torch.Tensor,
    gt: torch.Tensor,
    valid: torch.Tensor | None = None,
    *,
    min_depth: float = 1e-3,
    max_depth: float | None = None,
    crop: Crop = None,
) -> dict[str, float]:
    """Depth metrics of one image (paper Sec. 4.1), see the module docstring for the definitions.

    Args:
        pred: Predicted depth in metres, ``[H, W]`` or ``[1, H, W]`` (``[1, 1, H, W]`` also accepted).
        gt: Ground-truth depth, same shape as ``pred``.
        valid: Optional boolean mask (same shape); ANDed with the range/finite/crop validity.
        min_depth: Valid ground truth is ``> min_depth``; predictions are clamped to ``>= min_depth``.
        max_depth: When given, valid ground truth is ``< max_depth`` and predictions are clamped to it.
        crop: ``None``, ``"eigen"`` or ``(top, bottom, left, right)`` slice bounds.

    Returns:
        ``{"delta1", "delta2", "delta3", "rms", "rms_log", "abs_rel", "sq_rel"}`` as floats. All NaN when
        the image has no valid pixel.
    """
    counts, sums = _depth_sums(pred, gt, valid, min_depth, max_depth, crop)
    if counts.numel() != 1:
        raise ValueError(f"depth_metrics takes one image, got a batch of {counts.numel()}; use DepthMetrics")
    if counts[0] == 0:
        return dict.fromkeys(DEPTH_KEYS, math.nan)
    values = _metrics_from_sums(counts[0], sums[0])
    return {k: float(v) for k, v in zip(DEPTH_KEYS, values.tolist())}


class DepthMetrics(torchmetrics.Metric):
    """Accumulates the depth metrics over a set (per-image mean or pooled over pixels).

    All states are float64 sum tensors reduced with ``"sum"``, so DDP synchronisation (and
    :meth:`merge_state`) is exact. Both reductions are accumulated; ``reduction`` only picks what
    :meth:`compute` returns.

    States:
        ``img_sum`` [7]: sum over images of the per-image metrics (order ``DEPTH_KEYS``).
        ``pix_sum`` [7]: sum over all valid pixels of delta hits, sq err, sq log err, abs rel, sq rel.
        ``n_pixels``: number of valid pixels; ``n_images``: images with >= 1 valid pixel;
        ``n_skipped``: images without any valid pixel (excluded from both reductions).

    Args:
        reduction: ``"per_image"`` (mean over images of per-image metrics, BTS/AdaBins) or ``"pooled"``.
        min_depth: See :func:`depth_metrics`.
        max_depth: See :func:`depth_metrics`.
        crop: See :func:`depth_metrics`.
    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    img_sum: torch.Tensor
    pix_sum: torch.Tensor
    n_pixels: torch.Tensor
    n_images: torch.Tensor
    n_skipped: torch.Tensor

    def __init__(
        self,
        *,
        reduction: Reduction = "per_image",
        min_depth: float = 1e-3,
        max_depth: float | None = None,
        crop: Crop = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if reduction not in ("per_image", "pooled"):
            raise ValueError(f"reduction must be 'per_image' or 'pooled', got {reduction!r}")
        if min_depth <= 0:
            raise ValueError(f"min_depth must be > 0, got {min_depth}")
        if max_depth is not None and max_depth <= min_depth:
            raise ValueError(f"max_depth ({max_depth}) must be > min_depth ({min_depth})")
        if crop is not None:
            resolve_crop(crop, *EIGEN_CROP_SIZE)  # validate early
        self.reduction: Reduction = reduction
        self.min_depth = float(min_depth)
        self.max_depth = None if max_depth is None else float(max_depth)
        self.crop = crop
        n = len(DEPTH_KEYS)
        self.add_state("img_sum", torch.zeros(n, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("pix_sum", torch.zeros(n, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("n_pixels", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("n_images", torch.zeros((), dtype=torch.int64), dist_reduce_fx="sum")
        self.add_state("n_skipped", torch.zeros((), dtype=torch.int64), dist_reduce_fx="sum")

    def update(self, pred: torch.Tensor, gt: torch.Tensor, valid: torch.Tensor | None = None) -> None:
        """Add a batch: ``pred``, ``gt`` (and optional boolean ``valid``) of shape ``[B, 1, H, W]``."""
        counts, sums = _depth_sums(pred, gt, valid, self.min_depth, self.max_depth, self.crop)
        counts, sums = counts.to(self.pix_sum.device), sums.to(self.pix_sum.device)
        has = counts > 0
        self.n_skipped += (~has).sum()
        if not bool(has.any()):
            return
        counts, sums = counts[has], sums[has]
        self.img_sum += _metrics_from_sums(counts, sums).sum(dim=0)
        self.pix_sum += sums.sum(dim=0)
        self.n_pixels += counts.sum()
        self.n_images += has.sum()

    def compute(self) -> dict[str, float]:
        """The seven metrics (``DEPTH_KEYS``) under ``self.reduction``; NaN when nothing was valid."""
        if int(self.n_images) == 0:
            return dict.fromkeys(DEPTH_KEYS, math.nan)
        if self.reduction == "per_image":
            values = self.img_sum / self.n_images.to(torch.float64)
        else:
            values = _metrics_from_sums(self.n_pixels, self.pix_sum)
        return {k: float(v) for k, v in zip(DEPTH_KEYS, values.tolist())}

    @property
    def num_images(self) -> int:
        """Images that contributed (at least one valid pixel)."""
        return int(self.n_images)

    @property
    def num_skipped(self) -> int:
        """Images skipped because no pixel was valid."""
        return int(self.n_skipped)
