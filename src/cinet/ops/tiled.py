"""Memory-efficient (tiled) sigmoid attention and attention BCE in plain PyTorch.

The SUM's map ``A~ = sigmoid(Q K^T)`` (Eq. 1) is element-wise, so any block of it can be computed on its own:
no running maximum or normaliser is needed (unlike softmax). Both functions here walk over blocks of
``tile`` query rows, i.e. they only ever hold ``[B, tile, N]`` slices of the map, and recompute them in the
backward pass instead of saving them (only Q, K, V are saved).

* :func:`sigmoid_attention_tiled` — ``Y = sigmoid(Q K^T) V * scale`` (Eq. 1 and the product of Eq. 2).
  With ``S = Q K^T`` and ``P = sigmoid(S)``:
  ``dV = P^T dY * scale``, ``dP = dY V^T * scale``, ``dS = dP * P * (1 - P)``, ``dQ = dS K``, ``dK = dS^T Q``.
* :func:`attention_bce_tiled` — the attention loss (Eq. 4) from logits. With the ideal map ``A = M M^T``
  (Eq. 3) and ``BCE(s, a) = softplus(s) - a s``:
  ``sum_valid BCE = sum_{i,j valid} softplus(S_ij) - sum_c (M^T Q)_c . (M^T K)_c``.
  The softplus sum is tiled (its gradient is ``sigmoid(S)``); the positive part only needs class-pooled
  sums ``[B, K, D]``. The result is divided by the number of valid pairs, ``sum_b n_valid(b)^2``.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from cinet.ops.autocast import float32_region

DEFAULT_TILE = 256
TILE_ENV = "CINET_ATTENTION_TILE"


def tile_size(tile: int | None = None) -> int:
    """Query rows per block: ``tile`` if given, else ``$CINET_ATTENTION_TILE``, else 256.

    Raises:
        ValueError: The tile size is not a positive integer.
    """
    if tile is None:
        env = os.environ.get(TILE_ENV, "")
        try:
            tile = int(env) if env else DEFAULT_TILE
        except ValueError as exc:
            raise ValueError(f"{TILE_ENV} must be a positive integer, got {env!r}") from exc
    if int(tile) < 1:
        raise ValueError(f"attention tile size must be a positive integer, got {tile}")
    return int(tile)


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """Accumulation dtype: float32 for half/bfloat16 inputs, the input dtype otherwise."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


class _SigmoidAttentionTiled(torch.autograd.Function):
    """``sigmoid(Q K^T) V * scale`` over blocks of query rows; saves only Q, K, V."""

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        scale: float,
        tile: int,
    ) -> torch.Tensor:
        b, n, _ = q.shape
        out = torch.empty(b, n, v.shape[-1], dtype=v.dtype, device=v.device)  # [B,N,C]
        kt = k.transpose(1, 2)  # [B,D,N]
        for i in range(0, n, tile):
            j = min(i + tile, n)
            p = torch.bmm(q[:, i:j], kt).sigmoid_()  # [B,t,N]
            out[:, i:j] = torch.bmm(p, v).mul_(scale)  # [B,t,C]
        ctx.save_for_backward(q, k, v)
        ctx.scale = scale
        ctx.tile = tile
        return out

    @staticmethod
    @once_differentiable
    def backward(
        ctx: torch.autograd.function.FunctionCtx, dy: torch.Tensor
    ) -> tuple[torch.Tensor | None, ...]:
        q, k, v = ctx.saved_tensors
        scale, tile = ctx.scale, ctx.tile
        need_q, need_k, need_v = ctx.needs_input_grad[:3]
        _, n, _ = q.shape
        dy = dy.to(v.dtype)
        acc = _acc_dtype(q.dtype)
        dq = torch.empty_like(q) if need_q else None  # [B,N,D], each block written once
        dk = torch.zeros(k.shape, dtype=acc, device=k.device) if need_k else None  # [B,N,D]
        dv = torch.zeros(v.shape, dtype=_acc_dtype(v.dtype), device=v.device) if need_v else None  # [B,N,C]
        kt, vt = k.transpose(1, 2), v.transpose(1, 2)  # [B,D,N], [B,C,N]
        for i in range(0, n, tile):
            j = min(i + tile, n)
            dy_b = dy[:, i:j]  # [B,t,C]
            p = torch.bmm(q[:, i:j], kt).sigmoid_()  # [B,t,N] recomputed
            if dv is not None:  # [B,N,C] += P^T dY in place (fp32 accumulation, no [B,N,C] temporary)
                dv.baddbmm_(p.transpose(1, 2).to(dv.dtype), dy_b.to(dv.dtype))
            if dq is None and dk is None:
                continue
            # dS / scale = dP / scale * P * (1 - P), one fused pass; the scale goes on the small products.
            ds = torch.bmm(dy_b, vt)  # dP / scale, [B,t,N]
            torch.ops.aten.sigmoid_backward.grad_input(ds, p, grad_input=ds)  # in place: ds *= P (1 - P)
            if dq is not None:
                dq[:, i:j] = torch.bmm(ds, k).mul_(scale)  # [B,t,D]
            if dk is not None:  # [B,N,D] += scale * dS^T Q
                dk.baddbmm_(ds.transpose(1, 2).to(acc), q[:, i:j].to(acc), alpha=scale)
        if dv is not None:
            dv = dv.mul_(scale).to(v.dtype)
        if dk is not None:
            dk = dk.to(k.dtype)
        return dq, dk, dv, None, None


def sigmoid_attention_tiled(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float = 1.0, tile: int | None = None
) -> torch.Tensor:
    """``sigmoid(Q K^T) V * scale`` (Eq. 1–2) without storing the N x N map (blocks of ``tile`` query rows).

    Args:
        q: Queries [B,N,D].
        k: Keys [B,N,D].
        v: Values [B,N,C].
        scale: Multiplier of the aggregated values.
        tile: Query rows per block (default :func:`tile_size`).

    Returns:
        [B,N,C] aggregated values, same dtype as ``v``. Peak extra memory is two ``[B, tile, N]`` blocks.
    """
    dtype = torch.promote_types(torch.promote_types(q.dtype, k.dtype), v.dtype)
    return _SigmoidAttentionTiled.apply(q.to(dtype), k.to(dtype), v.to(dtype), float(scale), tile_size(tile))


class _SoftplusPairSum(torch.autograd.Function):
    """``sum_{i,j} w_i w_j softplus(q_i . k_j)`` over blocks of query rows (w = valid mask); saves Q, K, w."""

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx, q: torch.Tensor, k: torch.Tensor, w: torch.Tensor, tile: int
    ) -> torch.Tensor:
        _, n, _ = q.shape
        kt = k.transpose(1, 2)  # [B,D,N]
        wcol = w.unsqueeze(-1)  # [B,N,1]
        total = torch.zeros((), dtype=q.dtype, device=q.device)
        for i in range(0, n, tile):
            j = min(i + tile, n)
            sp = F.softplus(torch.bmm(q[:, i:j], kt))  # [B,t,N], stable: x for x > 20, log1p(exp(x)) else
            rows = torch.bmm(sp, wcol).squeeze(-1)  # [B,t] = sum_j w_j softplus(S_ij)
            total += (rows * w[:, i:j]).sum()
        ctx.save_for_backward(q, k, w)
        ctx.tile = tile
        return total

    @staticmethod
    @once_differentiable
    def backward(
        ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor
    ) -> tuple[torch.Tensor | None, ...]:
        q, k, w = ctx.saved_tensors
        tile = ctx.tile
        need_q, need_k = ctx.needs_input_grad[:2]
        _, n, _ = q.shape
        kt = k.transpose(1, 2)  # [B,D,N]
        kw = k * w.unsqueeze(-1)  # [B,N,D] keys of invalid pixels zeroed
        qw = q * w.unsqueeze(-1)  # [B,N,D]
        dq = torch.empty_like(q) if need_q else None
        dk = torch.zeros_like(k) if need_k else None
        for i in range(0, n, tile):
            j = min(i + tile, n)
            p = torch.bmm(q[:, i:j], kt).sigmoid_()  # d softplus(S) / dS, [B,t,N]
            if dq is not None:
                dq[:, i:j] = torch.bmm(p, kw)  # [B,t,D]
            if dk is not None:
                dk.baddbmm_(p.transpose(1, 2), qw[:, i:j])  # [B,N,D]
        if dq is not None:
            dq.mul_(w.unsqueeze(-1) * grad)
        if dk is not None:
            dk.mul_(w.unsqueeze(-1) * grad)
        return dq, dk, None, None


def softplus_pair_sum_tiled(
    q: torch.Tensor, k: torch.Tensor, valid: torch.Tensor, tile: int | None = None
) -> torch.Tensor:
    """``sum_b sum_{i,j valid} softplus(q_i . k_j)`` (negative part of Eq. 4's BCE) without an N x N tensor.

    Args:
        q: Queries [B,N,D] (float32 or float64).
        k: Keys [B,N,D], same dtype.
        valid: [B,N] bool mask of valid pixels.
        tile: Query rows per block.

    Returns:
        Scalar sum, dtype of ``q``.
    """
    return _SoftplusPairSum.apply(q, k, valid.to(q.dtype), tile_size(tile))


def compact_class_ids(labels: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Map the valid labels to ids 0..K-1 (K distinct valid values in the batch); invalid pixels get 0.

    Args:
        labels: [B,N] integer labels.
        valid: [B,N] bool mask.

    Returns:
        ([B,N] int64 ids, K) with K >= 1.
    """
    ids = torch.zeros(labels.shape, dtype=torch.long, device=labels.device)
    values = labels[valid]
    if values.numel() == 0:
        return ids, 1
    uniq, inverse = torch.unique(values, return_inverse=True)
    ids[valid] = inverse
    return ids, int(uniq.numel())


def positive_pair_sum(
    q: torch.Tensor, k: torch.Tensor, ids: torch.Tensor, valid: torch.Tensor, num_ids: int
) -> torch.Tensor:
    """``sum_b sum_{i,j valid, same class} q_i . k_j = sum_c (M^T Q)_c . (M^T K)_c`` (ideal map of Eq. 3).

    Args:
        q: Queries [B,N,D].
        k: Keys [B,N,D].
        ids: [B,N] class ids in [0, num_ids).
        valid: [B,N] bool mask (invalid rows of M are zero).
        num_ids: Number of classes K.

    Returns:
        Scalar, differentiable with respect to ``q`` and ``k``.
    """
    b, _, d = q.shape
    w = valid.to(q.dtype).unsqueeze(-1)  # [B,N,1]
    index = ids.unsqueeze(-1).expand(-1, -1, d)  # [B,N,D]
    zeros = torch.zeros(b, num_ids, d, dtype=q.dtype, device=q.device)
    pooled_q = zeros.scatter_add(1, index, q * w)  # M^T Q, [B,K,D]
    pooled_k = zeros.scatter_add(1, index, k * w)  # M^T K, [B,K,D]
    return (pooled_q * pooled_k).sum()


def attention_bce_tiled(
    q: torch.Tensor,
    k: torch.Tensor,
    labels: torch.Tensor,
    ignore_index: int = 255,
    tile: int | None = None,
    softplus_sum=softplus_pair_sum_tiled,
) -> torch.Tensor:
    """Attention loss (Eq. 4) with the ideal map of Eq. 3, mean over valid pairs, never storing N x N.

    ``sum_{i,j valid} [softplus(S_ij) - A_ij S_ij] / sum_b n_valid(b)^2`` in float32 (float64 inputs stay
    float64), autocast disabled.

    Args:
        q: Queries [B,N,D].
        k: Keys [B,N,D].
        labels: [B,N] integer labels; ``ignore_index`` pixels are excluded from rows and columns.
        ignore_index: Ignored label value.
        tile: Query rows per block.
        softplus_sum: Implementation of the softplus pair sum ``(q, k, valid, tile) -> scalar`` (the Triton
            path plugs in its kernel here).

    Returns:
        Scalar loss; 0 with a gradient path when no pair is valid.
    """
    with float32_region(q.device.type):
        dtype = _acc_dtype(torch.promote_types(q.dtype, k.dtype))
        q32, k32 = q.to(dtype), k.to(dtype)
        valid = labels != ignore_index  # [B,N]
        ids, num_ids = compact_class_ids(labels, valid)
        negative = softplus_sum(q32, k32, valid, tile)
        positive = positive_pair_sum(q32, k32, ids, valid, num_ids)
        counts = valid.sum(dim=1, dtype=torch.float64)  # [B]
        pairs = (counts * counts).sum().clamp_min(1.0).to(dtype)
        return (negative - positive) / pairs
