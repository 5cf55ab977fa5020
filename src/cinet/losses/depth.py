"""Depth losses: BerHu (paper Eq. 8), pair loss (Eq. 9), normal loss (Eq. 10) and L_depth (Eq. 11).

Conventions shared by every function of this file:

* ``pred`` and ``target`` are [B,1,H,W] (or [B,H,W]) depth maps in metres.
* A target pixel is valid when it is finite and > 0 and ``valid`` (optional bool mask) is True there.
  Invalid targets are replaced by 0 before any arithmetic so that NaN/inf never reach the loss or its gradient.
* The paper's sums are means here (over valid pixels, pairs or stencils), so the loss scale does not depend on
  the image size or the number of valid pixels.
* A batch without any valid pixel gives a zero loss that still has a ``grad_fn`` (``pred.sum() * 0``), never NaN.
* Half/bfloat16 inputs are promoted to float32 (float64 is kept, for gradcheck).
"""

from __future__ import annotations

import torch

from cinet.ops.autocast import upcast_half

__all__ = ["berhu_loss", "depth_loss", "normal_loss", "pair_loss", "valid_depth_mask"]


def _as_4d(x: torch.Tensor, name: str) -> torch.Tensor:
    if x.dim() == 3:
        return x.unsqueeze(1)
    if x.dim() != 4 or x.shape[1] != 1:
        raise ValueError(f"{name} must be [B,1,H,W] or [B,H,W], got {tuple(x.shape)}")
    return x


def valid_depth_mask(target: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Boolean mask of usable target pixels: ``isfinite(target) & (target > 0) & valid``."""
    mask = torch.isfinite(target) & (target > 0)
    if valid is not None:
        mask = mask & valid.reshape(mask.shape).bool()
    return mask


def _prepare(
    pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Shapes to [B,1,H,W], dtype to >= float32, invalid targets to 0; returns (pred, target, mask)."""
    pred = upcast_half(_as_4d(pred, "pred"))
    target = _as_4d(target, "target")
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    mask = valid_depth_mask(target, None if valid is None else _as_4d(valid, "valid"))  # [B,1,H,W]
    target = torch.where(mask, target, torch.zeros_like(target)).to(pred.dtype)
    return pred, target, mask


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``sum(values * mask) / max(sum(mask), 1)``: zero with a grad path when the mask is empty."""
    m = mask.to(values.dtype)
    return (values * m).sum() / m.sum().clamp_min(1.0)


def berhu_loss(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Reverse Huber loss (Eq. 8), mean over the valid pixels of the batch.

    With ``e = |d - d~|``: ``e`` if ``e <= c`` else ``(e^2 + c^2) / (2c)``, where ``c = 0.2 * max e`` over the
    valid pixels of the whole batch, detached (no gradient flows through the threshold). When every error is 0
    the threshold is clamped to a tiny positive value, so a perfect prediction gives 0, not NaN.

    Args:
        pred: Predicted depth [B,1,H,W] or [B,H,W].
        target: Ground-truth depth, same shape (0, NaN, inf = invalid).
        valid: Optional extra bool mask, same shape.

    Returns:
        Scalar loss.
    """
    pred, target, mask = _prepare(pred, target, valid)
    err = (pred - target).abs()  # [B,1,H,W]
    err_valid = torch.where(mask, err, torch.zeros_like(err))
    c = (0.2 * err_valid.detach().amax()).clamp_min(1e-12)  # scalar, per batch
    l2 = (err * err + c * c) / (2.0 * c)
    loss = torch.where(err <= c, err, l2)  # [B,1,H,W]
    return _masked_mean(loss, mask)


def pair_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    valid: torch.Tensor | None = None,
    num_pairs: int = 500,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Pair loss (Eq. 9): ``|(d_p - d_q) - (d~_p - d~_q)|`` over random pixel pairs, mean over pairs.

    Per image, ``num_pairs`` pairs (p, q) are drawn independently (with replacement) and uniformly among the
    image's valid pixels, with ``p != q``. Images with fewer than 2 valid pixels contribute nothing. The draw
    is vectorised (no host sync): ranks are drawn in float64 and mapped to pixel indices through a stable
    sort of the validity mask.

    Args:
        pred: Predicted depth [B,1,H,W] or [B,H,W].
        target: Ground-truth depth, same shape (0, NaN, inf = invalid).
        valid: Optional extra bool mask, same shape.
        num_pairs: Pairs per image (paper: 500).
        generator: Optional ``torch.Generator`` for reproducible draws (its device is used for drawing).

    Returns:
        Scalar loss.
    """
    pred, target, mask = _prepare(pred, target, valid)
    b = pred.shape[0]
    p_flat = pred.reshape(b, -1)  # [B,P]
    t_flat = target.reshape(b, -1)  # [B,P]
    m_flat = mask.reshape(b, -1)  # [B,P]
    count = m_flat.sum(dim=1)  # [B]
    # Flat indices of the valid pixels first (in raster order), then the invalid ones.
    order = torch.argsort((~m_flat).to(torch.uint8), dim=1, stable=True)  # [B,P]
    draw_device = generator.device if generator is not None else torch.device("cpu")
    u = torch.rand((2, b, num_pairs), generator=generator, device=draw_device, dtype=torch.float64)
    u = u.to(pred.device)
    cnt = count.to(torch.float64).unsqueeze(1)  # [B,1]
    rank_p = torch.minimum((u[0] * cnt).floor(), (cnt - 1).clamp_min(0)).long()  # [B,K] in [0, n)
    rank_q = torch.minimum((u[1] * (cnt - 1)).floor(), (cnt - 2).clamp_min(0)).long()  # [B,K] in [0, n-1)
    rank_q = rank_q + (rank_q >= rank_p).long()  # skip p: q uniform over the n-1 others
    last = p_flat.shape[1] - 1  # images with < 2 valid pixels: keep indices in range, masked below
    rank_p, rank_q = rank_p.clamp(0, last), rank_q.clamp(0, last)
    idx_p = torch.gather(order, 1, rank_p)  # [B,K]
    idx_q = torch.gather(order, 1, rank_q)  # [B,K]
    diff_pred = torch.gather(p_flat, 1, idx_p) - torch.gather(p_flat, 1, idx_q)  # [B,K]
    diff_true = torch.gather(t_flat, 1, idx_p) - torch.gather(t_flat, 1, idx_q)  # [B,K]
    loss = (diff_pred - diff_true).abs()  # [B,K]
    usable = (count >= 2).unsqueeze(1).expand_as(loss)  # [B,K]
    return _masked_mean(loss, usable)


def _normals(d: torch.Tensor) -> torch.Tensor:
    """Surface normals ``(-dx d, -dy d, 1)`` by forward differences, on the [H-1, W-1] stencil grid.

    Args:
        d: Depth [B,1,H,W].

    Returns:
        [B,3,H-1,W-1] un-normalised normals.
    """
    dx = d[:, :, :-1, 1:] - d[:, :, :-1, :-1]  # [B,1,H-1,W-1]
    dy = d[:, :, 1:, :-1] - d[:, :, :-1, :-1]  # [B,1,H-1,W-1]
    return torch.cat([-dx, -dy, torch.ones_like(dx)], dim=1)  # [B,3,H-1,W-1]


def normal_loss(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Normal loss (Eq. 10): ``1 - cos(n, n~)``, mean over the valid stencils.

    Normals use forward differences: at pixel (i, j), ``dx = d[i, j+1] - d[i, j]``, ``dy = d[i+1, j] - d[i, j]``
    (gradients in metres per pixel). A stencil counts only when the pixel and its right and down neighbours are
    all valid in the target. The z component is 1, so ``|n| >= 1`` and the cosine is always defined.

    Args:
        pred: Predicted depth [B,1,H,W] or [B,H,W].
        target: Ground-truth depth, same shape (0, NaN, inf = invalid).
        valid: Optional extra bool mask, same shape.

    Returns:
        Scalar loss (zero with a grad path when H or W < 2 or no stencil is valid).
    """
    pred, target, mask = _prepare(pred, target, valid)
    if pred.shape[-1] < 2 or pred.shape[-2] < 2:
        return pred.sum() * 0.0
    n_pred = _normals(pred)  # [B,3,H-1,W-1]
    n_true = _normals(target)  # [B,3,H-1,W-1]
    stencil = mask[:, :, :-1, :-1] & mask[:, :, :-1, 1:] & mask[:, :, 1:, :-1]  # [B,1,H-1,W-1]
    # cos = <n, n~> / (|n| |n~|) as <n, n~> * rsqrt(|n|^2 |n~|^2): the same value, and 9x faster forward +
    # backward than two Tensor.norm(dim=1) over a 3-channel dim on CPU (15.5 -> 1.7 ms at 8x96x128, AMD EPYC)
    dot = (n_pred * n_true).sum(dim=1, keepdim=True)  # [B,1,H-1,W-1]
    sq = (n_pred * n_pred).sum(dim=1, keepdim=True) * (n_true * n_true).sum(dim=1, keepdim=True)
    cos = dot * sq.rsqrt()  # [B,1,H-1,W-1]; |n| >= 1, so sq >= 1
    return _masked_mean(1.0 - cos, stencil)


def depth_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    valid: torch.Tensor | None = None,
    lam: float = 1.0,
    mu: float = 5.0,
    num_pairs: int = 500,
    generator: torch.Generator | None = None,
    return_terms: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """L_depth = L_berhu + lam * L_pair + mu * L_norm (Eq. 11).

    Args:
        pred: Predicted depth [B,1,H,W] or [B,H,W].
        target: Ground-truth depth, same shape (0, NaN, inf = invalid).
        valid: Optional extra bool mask, same shape.
        lam: Weight of the pair loss (paper: 1).
        mu: Weight of the normal loss (paper: 5).
        num_pairs: Pairs per image for the pair loss (paper: 500).
        generator: Optional generator for the pair sampling.
        return_terms: Also return ``{"berhu", "pair", "normal"}``.

    Returns:
        The scalar loss, or ``(loss, terms)`` when ``return_terms``.
    """
    terms = {
        "berhu": berhu_loss(pred, target, valid),
        "pair": pair_loss(pred, target, valid, num_pairs=num_pairs, generator=generator),
        "normal": normal_loss(pred, target, valid),
    }
    total = terms["berhu"] + lam * terms["pair"] + mu * terms["normal"]
    return (total, terms) if return_terms else total
