"""Fused Triton kernels for the SUM's sigmoid attention (Eq. 1–2) and the attention BCE (Eq. 4).

FlashAttention-style, but the map ``P = sigmoid(S)``, ``S = Q K^T``, is element-wise: no running maximum or
normaliser, every ``[BLOCK_M, BLOCK_N]`` tile of ``P`` is final as soon as it is computed. Nothing of size
N x N is written to memory; ``tl.dot`` accumulates in float32 for fp16/bf16/fp32 inputs (fp32 inputs use
``input_precision="ieee"``, i.e. no TF32, so results match the PyTorch paths to fp32 round-off).

Three kernels cover everything, thanks to the symmetry ``S^T = K Q^T``:

* ``_sigmoid_mix_kernel(A, B, X)``: ``out_i = scale * sum_j sigmoid(a_i . b_j) x_j`` ->
  forward ``Y = fwd(Q, K, V)``, ``dV = fwd(K, Q, dY)`` (``P^T dY``), and the BCE gradients
  ``dQ = w * fwd(Q, K, w K)``, ``dK = w * fwd(K, Q, w Q)`` (``d softplus / dS = sigmoid``).
* ``_sigmoid_grad_kernel(A, B, X, Y)``: ``out_i = scale * sum_j sigmoid'(a_i . b_j) (x_i . y_j) b_j`` ->
  ``dQ = grad(Q, K, dY, V)`` and ``dK = grad(K, Q, V, dY)`` (``dS = dP * P (1 - P)``, ``dP = dY V^T``).
* ``_softplus_rows_kernel(A, B, w)``: ``out_i = w_i sum_j w_j softplus(a_i . b_j)`` (stable softplus), the
  negative part of the BCE; the host sums the rows (deterministic, no atomics).

Every kernel is deterministic (each program owns its output rows). The backward therefore recomputes the
``dY V^T`` reduction twice (once for dQ, once for dK) instead of using atomics for dQ.

The kernels are built lazily: with ``TRITON_INTERPRET=1`` (read at call time) they run in Triton's interpreter
(CPU tensors work; used by the tests on machines without a GPU), else they are compiled for CUDA. To run under
an interpreter switched on after ``import triton``, the kernels call no ``@triton.jit`` library helper
(``tl.zeros``, ``tl.sigmoid``, ``tl.sum`` are such helpers): ``tl.full``, sigmoid written out, the row sum as ``tl.reduce(x, 1, tl.standard._sum_combine)`` (what ``tl.sum``
does). Triton 3.8's interpreter computes bf16 ``tl.dot`` wrongly, so there (only) bf16 operands are upcast
to fp32 (``UPCAST``).
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch.autograd.function import once_differentiable

try:  # Triton is optional: without it the dispatcher falls back to the tiled PyTorch path.
    import triton
    import triton.language as tl

    HAS_TRITON = True
except ImportError:  # pragma: no cover - depends on the environment
    triton = None
    tl = None
    HAS_TRITON = False

MAX_HEAD_DIM = 256
DEFAULT_BLOCK = 64


def interpret_mode() -> bool:
    """True when ``TRITON_INTERPRET=1`` (kernels run in Triton's CPU interpreter)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def available(device: torch.device) -> bool:
    """Whether the kernels can run on ``device``: Triton importable and CUDA, or the interpreter is on."""
    if not HAS_TRITON:
        return False
    if interpret_mode():
        return True
    return torch.device(device).type == "cuda" and torch.cuda.is_available()


# ----------------------------------------------------------------------------------------------------------
# Kernel sources (plain functions; compiled or interpreted on first use by _kernels()).
# ----------------------------------------------------------------------------------------------------------
if HAS_TRITON:

    def _sigmoid_mix(
        A, B, X, Out,
        N, D, C,
        s_ab, s_an, s_ad,
        s_bb, s_bn, s_bd,
        s_xb, s_xn, s_xc,
        s_ob, s_on, s_oc,
        scale,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_C: tl.constexpr,
        PREC: tl.constexpr, UPCAST: tl.constexpr,
    ):  # fmt: skip
        """out[b, i, c] = scale * sum_j sigmoid(A[b,i,:] . B[b,j,:]) X[b,j,c]; grid (M blocks, C blocks, B)."""
        pid_m = tl.program_id(0)
        pid_c = tl.program_id(1)
        pid_b = tl.program_id(2).to(tl.int64)
        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_d = tl.arange(0, BLOCK_D)
        offs_c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
        mask_m = offs_m < N
        mask_d = offs_d < D
        mask_c = offs_c < C
        a = tl.load(
            A + pid_b * s_ab + offs_m[:, None] * s_an + offs_d[None, :] * s_ad,
            mask=mask_m[:, None] & mask_d[None, :],
            other=0.0,
        )  # [BM, BD]
        if UPCAST:  # the interpreter's tl.dot mishandles bf16: compute in fp32 there
            a = a.to(tl.float32)
        acc = tl.full([BLOCK_M, BLOCK_C], 0.0, tl.float32)
        for start in range(0, N, BLOCK_N):
            offs_n = start + tl.arange(0, BLOCK_N)
            mask_n = offs_n < N
            bt = tl.load(
                B + pid_b * s_bb + offs_n[None, :] * s_bn + offs_d[:, None] * s_bd,
                mask=mask_d[:, None] & mask_n[None, :],
                other=0.0,
            )  # [BD, BN]
            if UPCAST:  # the interpreter's tl.dot mishandles bf16: compute in fp32 there
                bt = bt.to(tl.float32)
            s = tl.dot(a, bt, input_precision=PREC)  # [BM, BN] fp32
            p = tl.where(mask_n[None, :], 1.0 / (1.0 + tl.exp(-s)), 0.0)  # padding keys contribute nothing
            x = tl.load(
                X + pid_b * s_xb + offs_n[:, None] * s_xn + offs_c[None, :] * s_xc,
                mask=mask_n[:, None] & mask_c[None, :],
                other=0.0,
            )  # [BN, BC]
            if UPCAST:  # the interpreter's tl.dot mishandles bf16: compute in fp32 there
                x = x.to(tl.float32)
            acc += tl.dot(p.to(x.dtype), x, input_precision=PREC)
        acc = acc * scale
        tl.store(
            Out + pid_b * s_ob + offs_m[:, None] * s_on + offs_c[None, :] * s_oc,
            acc.to(Out.dtype.element_ty),
            mask=mask_m[:, None] & mask_c[None, :],
        )

    def _sigmoid_grad(
        A, B, X, Y, Out,
        N, D, C,
        s_ab, s_an, s_ad,
        s_bb, s_bn, s_bd,
        s_xb, s_xn, s_xc,
        s_yb, s_yn, s_yc,
        s_ob, s_on, s_od,
        scale,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_C: tl.constexpr,
        PREC: tl.constexpr, UPCAST: tl.constexpr,
    ):  # fmt: skip
        """out[b,i,:] = scale * sum_j s'(a_i . b_j) (x_i . y_j) b_j with s' = sigmoid (1 - sigmoid); grid (M, B)."""
        pid_m = tl.program_id(0)
        pid_b = tl.program_id(1).to(tl.int64)
        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_d = tl.arange(0, BLOCK_D)
        mask_m = offs_m < N
        mask_d = offs_d < D
        a = tl.load(
            A + pid_b * s_ab + offs_m[:, None] * s_an + offs_d[None, :] * s_ad,
            mask=mask_m[:, None] & mask_d[None, :],
            other=0.0,
        )  # [BM, BD]
        if UPCAST:  # the interpreter's tl.dot mishandles bf16: compute in fp32 there
            a = a.to(tl.float32)
        acc = tl.full([BLOCK_M, BLOCK_D], 0.0, tl.float32)
        for start in range(0, N, BLOCK_N):
            offs_n = start + tl.arange(0, BLOCK_N)
            mask_n = offs_n < N
            b = tl.load(
                B + pid_b * s_bb + offs_n[:, None] * s_bn + offs_d[None, :] * s_bd,
                mask=mask_n[:, None] & mask_d[None, :],
                other=0.0,
            )  # [BN, BD]
            if UPCAST:  # the interpreter's tl.dot mishandles bf16: compute in fp32 there
                b = b.to(tl.float32)
            s = tl.dot(a, tl.trans(b), input_precision=PREC)  # [BM, BN] fp32
            p = 1.0 / (1.0 + tl.exp(-s))  # sigmoid
            dp = tl.full([BLOCK_M, BLOCK_N], 0.0, tl.float32)
            for c0 in range(0, C, BLOCK_C):
                offs_c = c0 + tl.arange(0, BLOCK_C)
                mask_c = offs_c < C
                x = tl.load(
                    X + pid_b * s_xb + offs_m[:, None] * s_xn + offs_c[None, :] * s_xc,
                    mask=mask_m[:, None] & mask_c[None, :],
                    other=0.0,
                )  # [BM, BC]
                if UPCAST:  # the interpreter's tl.dot mishandles bf16: compute in fp32 there
                    x = x.to(tl.float32)
                yt = tl.load(
                    Y + pid_b * s_yb + offs_n[None, :] * s_yn + offs_c[:, None] * s_yc,
                    mask=mask_c[:, None] & mask_n[None, :],
                    other=0.0,
                )  # [BC, BN]
                if UPCAST:  # the interpreter's tl.dot mishandles bf16: compute in fp32 there
                    yt = yt.to(tl.float32)
                dp += tl.dot(x, yt, input_precision=PREC)
            ds = dp * p * (1.0 - p) * scale
            ds = tl.where(mask_n[None, :], ds, 0.0)
            acc += tl.dot(ds.to(b.dtype), b, input_precision=PREC)  # [BM, BD]
        tl.store(
            Out + pid_b * s_ob + offs_m[:, None] * s_on + offs_d[None, :] * s_od,
            acc.to(Out.dtype.element_ty),
            mask=mask_m[:, None] & mask_d[None, :],
        )

    def _softplus_rows(
        A, B, W, Out,
        N, D,
        s_ab, s_an, s_ad,
        s_bb, s_bn, s_bd,
        s_wb, s_wn,
        s_ob, s_on,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
        PREC: tl.constexpr, UPCAST: tl.constexpr,
    ):  # fmt: skip
        """out[b, i] = w_i sum_j w_j softplus(a_i . b_j) (stable: max(s, 0) + log(1 + exp(-|s|))); grid (M, B)."""
        pid_m = tl.program_id(0)
        pid_b = tl.program_id(1).to(tl.int64)
        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_d = tl.arange(0, BLOCK_D)
        mask_m = offs_m < N
        mask_d = offs_d < D
        a = tl.load(
            A + pid_b * s_ab + offs_m[:, None] * s_an + offs_d[None, :] * s_ad,
            mask=mask_m[:, None] & mask_d[None, :],
            other=0.0,
        )  # [BM, BD]
        if UPCAST:  # the interpreter's tl.dot mishandles bf16: compute in fp32 there
            a = a.to(tl.float32)
        w_m = tl.load(W + pid_b * s_wb + offs_m * s_wn, mask=mask_m, other=0.0)  # [BM]
        acc = tl.full([BLOCK_M], 0.0, tl.float32)
        for start in range(0, N, BLOCK_N):
            offs_n = start + tl.arange(0, BLOCK_N)
            mask_n = offs_n < N
            bt = tl.load(
                B + pid_b * s_bb + offs_n[None, :] * s_bn + offs_d[:, None] * s_bd,
                mask=mask_d[:, None] & mask_n[None, :],
                other=0.0,
            )  # [BD, BN]
            if UPCAST:  # the interpreter's tl.dot mishandles bf16: compute in fp32 there
                bt = bt.to(tl.float32)
            w_n = tl.load(W + pid_b * s_wb + offs_n * s_wn, mask=mask_n, other=0.0)  # [BN], 0 on padding
            s = tl.dot(a, bt, input_precision=PREC)  # [BM, BN] fp32
            sp = tl.maximum(s, 0.0) + tl.log(1.0 + tl.exp(-tl.abs(s)))
            acc += tl.reduce(sp * w_n[None, :], 1, tl.standard._sum_combine)  # row sums
        tl.store(Out + pid_b * s_ob + offs_m * s_on, acc * w_m, mask=mask_m)


_KERNEL_CACHE: dict[bool, dict[str, Any]] = {}


def _kernels() -> dict[str, Any]:
    """The three kernels, jitted for CUDA or wrapped for the interpreter depending on ``TRITON_INTERPRET``."""
    if not HAS_TRITON:
        raise RuntimeError("Triton is not installed")
    interp = interpret_mode()
    if interp not in _KERNEL_CACHE:
        if interp:
            from triton.runtime.interpreter import InterpretedFunction

            wrap = InterpretedFunction
        else:
            from triton.runtime.jit import JITFunction

            wrap = JITFunction
        _KERNEL_CACHE[interp] = {
            "mix": wrap(_sigmoid_mix),
            "grad": wrap(_sigmoid_grad),
            "softplus": wrap(_softplus_rows),
        }
    return _KERNEL_CACHE[interp]


def _pow2(x: int, lo: int = 16, hi: int | None = None) -> int:
    p = max(lo, 1 << max(int(x) - 1, 0).bit_length())
    return min(p, hi) if hi is not None else p


def _block(tile: int | None) -> int:
    """Rows/columns per program: ``tile`` rounded to a power of two in [16, 128] (default 64)."""
    return _pow2(DEFAULT_BLOCK if tile is None else tile, 16, 128)


def _prec(dtype: torch.dtype) -> str | None:
    return "ieee" if dtype == torch.float32 else None  # None: the default (fp16/bf16 MMA)


def _upcast(dtype: torch.dtype) -> bool:
    """Interpreter only: upcast bf16 operands of ``tl.dot`` to fp32 (Triton 3.8's interpreter gets bf16 dots wrong)."""
    return interpret_mode() and dtype == torch.bfloat16


def _check(q: torch.Tensor, k: torch.Tensor) -> None:
    if q.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise TypeError(f"Triton attention needs fp16/bf16/fp32 inputs, got {q.dtype}")
    if q.shape[-1] > MAX_HEAD_DIM:
        raise ValueError(f"Triton attention supports D <= {MAX_HEAD_DIM}, got {q.shape[-1]}")
    if q.shape != k.shape:
        raise ValueError(f"queries {tuple(q.shape)} and keys {tuple(k.shape)} differ")


def sigmoid_mix(
    a: torch.Tensor, b: torch.Tensor, x: torch.Tensor, scale: float, block: int, out_dtype: torch.dtype
) -> torch.Tensor:
    """``scale * sigmoid(A B^T) X`` ([B,N,D],[B,N,D],[B,N,C] -> [B,N,C]) with the fused kernel."""
    bsz, n, d = a.shape
    c = x.shape[-1]
    out = torch.empty(bsz, n, c, dtype=out_dtype, device=a.device)  # [B,N,C]
    block_c = _pow2(c, 16, 64)
    grid = (triton.cdiv(n, block), triton.cdiv(c, block_c), bsz)
    _kernels()["mix"][grid](
        a, b, x, out, n, d, c,
        *a.stride(), *b.stride(), *x.stride(), *out.stride(),
        float(scale),
        BLOCK_M=block, BLOCK_N=block, BLOCK_D=_pow2(d), BLOCK_C=block_c,
        PREC=_prec(a.dtype), UPCAST=_upcast(a.dtype),
    )  # fmt: skip
    return out


def sigmoid_grad(
    a: torch.Tensor, b: torch.Tensor, x: torch.Tensor, y: torch.Tensor, scale: float, block: int
) -> torch.Tensor:
    """``out_i = scale * sum_j sigmoid'(a_i . b_j) (x_i . y_j) b_j`` ([B,N,D], dtype of ``a``)."""
    bsz, n, d = a.shape
    c = x.shape[-1]
    out = torch.empty_like(a)  # [B,N,D]
    grid = (triton.cdiv(n, block), bsz)
    _kernels()["grad"][grid](
        a, b, x, y, out, n, d, c,
        *a.stride(), *b.stride(), *x.stride(), *y.stride(), *out.stride(),
        float(scale),
        BLOCK_M=block, BLOCK_N=block, BLOCK_D=_pow2(d), BLOCK_C=_pow2(c, 16, 64),
        PREC=_prec(a.dtype), UPCAST=_upcast(a.dtype),
    )  # fmt: skip
    return out


class _SigmoidAttentionTriton(torch.autograd.Function):
    """Fused ``sigmoid(Q K^T) V * scale``; saves only Q, K, V."""

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        scale: float,
        block: int,
    ) -> torch.Tensor:
        ctx.save_for_backward(q, k, v)
        ctx.scale, ctx.block = scale, block
        return sigmoid_mix(q, k, v, scale, block, v.dtype)  # [B,N,C]

    @staticmethod
    @once_differentiable
    def backward(
        ctx: torch.autograd.function.FunctionCtx, dy: torch.Tensor
    ) -> tuple[torch.Tensor | None, ...]:
        q, k, v = ctx.saved_tensors
        scale, block = ctx.scale, ctx.block
        dy = dy.to(v.dtype).contiguous()
        need_q, need_k, need_v = ctx.needs_input_grad[:3]
        dq = sigmoid_grad(q, k, dy, v, scale, block) if need_q else None  # sum_j dS_ij k_j
        dk = sigmoid_grad(k, q, v, dy, scale, block) if need_k else None  # sum_i dS_ij q_i
        dv = sigmoid_mix(k, q, dy, scale, block, v.dtype) if need_v else None  # P^T dY * scale
        return dq, dk, dv, None, None


def sigmoid_attention_triton(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float = 1.0, tile: int | None = None
) -> torch.Tensor:
    """``sigmoid(Q K^T) V * scale`` (Eq. 1–2) with fused Triton kernels (no N x N tensor in memory).

    Args:
        q: Queries [B,N,D] (fp16, bf16 or fp32; D <= 256).
        k: Keys [B,N,D].
        v: Values [B,N,C].
        scale: Multiplier of the aggregated values.
        tile: Block size (rounded to a power of two in [16, 128]; default 64).

    Returns:
        [B,N,C] in the common dtype of the inputs.
    """
    dtype = torch.promote_types(torch.promote_types(q.dtype, k.dtype), v.dtype)
    q, k, v = (t.to(dtype) for t in (q, k, v))
    _check(q, k)
    return _SigmoidAttentionTriton.apply(q, k, v, float(scale), _block(tile))


def _softplus_rows_launch(q: torch.Tensor, k: torch.Tensor, w: torch.Tensor, block: int) -> torch.Tensor:
    bsz, n, d = q.shape
    out = torch.empty(bsz, n, dtype=torch.float32, device=q.device)  # [B,N]
    grid = (triton.cdiv(n, block), bsz)
    _kernels()["softplus"][grid](
        q, k, w, out, n, d,
        *q.stride(), *k.stride(), *w.stride(), *out.stride(),
        BLOCK_M=block, BLOCK_N=block, BLOCK_D=_pow2(d), PREC=_prec(q.dtype), UPCAST=_upcast(q.dtype),
    )  # fmt: skip
    return out


class _SoftplusPairSumTriton(torch.autograd.Function):
    """``sum_{i,j} w_i w_j softplus(q_i . k_j)`` with fused kernels; gradient ``w_i w_j sigmoid(S_ij)``."""

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        q: torch.Tensor,
        k: torch.Tensor,
        w: torch.Tensor,
        block: int,
    ) -> torch.Tensor:
        ctx.save_for_backward(q, k, w)
        ctx.block = block
        return _softplus_rows_launch(q, k, w, block).sum().to(q.dtype)

    @staticmethod
    @once_differentiable
    def backward(
        ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor
    ) -> tuple[torch.Tensor | None, ...]:
        q, k, w = ctx.saved_tensors
        block = ctx.block
        w3 = w.unsqueeze(-1)  # [B,N,1]
        g = w3 * grad.to(q.dtype)
        dq = (
            sigmoid_mix(q, k, (k * w3).contiguous(), 1.0, block, q.dtype) * g
            if ctx.needs_input_grad[0]
            else None
        )
        dk = (
            sigmoid_mix(k, q, (q * w3).contiguous(), 1.0, block, k.dtype) * g
            if ctx.needs_input_grad[1]
            else None
        )
        return dq, dk, None, None


def softplus_pair_sum_triton(
    q: torch.Tensor, k: torch.Tensor, valid: torch.Tensor, tile: int | None = None
) -> torch.Tensor:
    """``sum_b sum_{i,j valid} softplus(q_i . k_j)`` (negative part of the BCE of Eq. 4) with Triton.

    Drop-in for :func:`cinet.ops.tiled.softplus_pair_sum_tiled`; float32 inputs (the BCE always runs in fp32).

    Args:
        q: Queries [B,N,D] float32.
        k: Keys [B,N,D] float32.
        valid: [B,N] bool mask.
        tile: Block size.

    Returns:
        Scalar float32 sum.
    """
    _check(q, k)
    return _SoftplusPairSumTriton.apply(q, k, valid.to(q.dtype).contiguous(), _block(tile))
