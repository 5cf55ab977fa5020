"""Sigmoid attention of the SUM (Eq. 1–2) and its BCE attention loss (Eq. 4), behind one dispatch.

Shapes (nanoGPT style): B batch, N = h*w positions (row-major), D = C_qk query/key channels, C value channels.

* :func:`sigmoid_attention` — ``Y = sigmoid(Q K^T) V * scale``  ([B,N,D],[B,N,D],[B,N,C] -> [B,N,C]).
* :func:`attention_bce` — mean over valid pairs of ``BCE(A_ij, sigmoid(q_i . k_j))`` with the ideal map
  ``A = M M^T`` built from labels (Eq. 3); pairs with an ignore pixel are excluded.
* :func:`ideal_attention_apply` — ``Y = (M M^T) V * scale`` computed as ``M (M^T V)`` (stage 1 of training
  feeds the ideal map into the SUM); never materialises N x N.

``impl`` selects the path: ``naive`` materialises the B x N x N map; ``tiled`` (plain PyTorch, blocks of query
rows, :mod:`cinet.ops.tiled`) and ``triton`` (fused kernels, :mod:`cinet.ops.triton_kernels`) never do; ``auto``
picks ``triton`` on CUDA when Triton is importable and the inputs qualify, else ``tiled`` when
``N >= $CINET_ATTENTION_TILED_MIN_N`` (default 1024), else ``naive``; ``CINET_ATTENTION_NO_TRITON=1`` keeps
``auto`` off Triton. An explicit ``triton`` falls back to ``tiled`` where Triton cannot run (CPU without
``TRITON_INTERPRET=1``, float64, unsupported sizes).
The tile size (query rows per block) is the ``tile_size`` argument, else ``$CINET_ATTENTION_TILE`` (256).

Under autocast, the attention product runs in the autocast dtype (like the naive ``bmm``), and the BCE in
float32 in every path.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Iterator

import torch
import torch.nn.functional as F

from cinet.ops import tiled as _tiled
from cinet.ops.autocast import float32_region, to_autocast_dtype, upcast_half

ATTENTION_IMPLS = ("naive", "tiled", "triton", "auto")
TILED_MIN_N_ENV = "CINET_ATTENTION_TILED_MIN_N"
DEFAULT_TILED_MIN_N = 1024
NO_TRITON_ENV = "CINET_ATTENTION_NO_TRITON"  # "1": ``auto`` never picks Triton (escape hatch)


#: The path every attention call of the current context takes instead of its own (``use_attention_impl``).
_FORCED_IMPL: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "cinet_attention_impl", default=None
)


@contextlib.contextmanager
def use_attention_impl(impl: str) -> Iterator[None]:
    """Run a block with every attention call (the SUM's product, L_att) on ``impl``, whatever path the modules
    were built with: the one runtime switch (evaluation's memory-bounded path, the benches' FLOP counts).

    The path changes how the product and the BCE are computed, not their values (to float rounding).

    Raises:
        ValueError: Unknown ``impl``.
    """
    token = _FORCED_IMPL.set(check_attention_impl(impl))
    try:
        yield
    finally:
        _FORCED_IMPL.reset(token)


def check_attention_impl(impl: str) -> str:
    """``impl`` if it names an attention path (:data:`ATTENTION_IMPLS`), the one check of that value.

    Raises:
        ValueError: ``"attention_impl: ..."`` naming the valid paths.
    """
    if impl not in ATTENTION_IMPLS:
        raise ValueError(f"attention_impl: {impl!r} not in {', '.join(ATTENTION_IMPLS)}")
    return impl


def _tiled_min_n() -> int:
    env = os.environ.get(TILED_MIN_N_ENV, "")
    return int(env) if env else DEFAULT_TILED_MIN_N


def triton_usable(
    device: torch.device, dtype: torch.dtype | None = None, head_dim: int | None = None
) -> bool:
    """Whether the Triton kernels can run here: CUDA (or ``TRITON_INTERPRET=1``), Triton importable,
    fp16/bf16/fp32 inputs and query/key channels ``D <= 256``."""
    from cinet.ops import triton_kernels  # local: imports Triton (optional), for the CUDA path only

    if not triton_kernels.available(torch.device(device)):
        return False
    if dtype is not None and dtype not in (torch.float16, torch.bfloat16, torch.float32):
        return False
    return head_dim is None or head_dim <= triton_kernels.MAX_HEAD_DIM


def resolve_impl(
    impl: str,
    device: torch.device,
    n: int | None = None,
    *,
    dtype: torch.dtype | None = None,
    head_dim: int | None = None,
) -> str:
    """Map ``auto`` (and unavailable choices) to a concrete implementation.

    Args:
        impl: ``naive | tiled | triton | auto``.
        device: Device of the inputs.
        n: Number of positions N (``auto`` picks ``naive`` below the tiled threshold; unknown N -> not naive).
        dtype: Input dtype (Triton needs fp16/bf16/fp32).
        head_dim: Query/key channels D.

    Returns:
        ``naive``, ``tiled`` or ``triton`` (inside :func:`use_attention_impl`, its path replaces ``impl``).
    """
    impl = _FORCED_IMPL.get() or check_attention_impl(impl)
    device = torch.device(device)
    if impl == "triton":
        return "triton" if triton_usable(device, dtype, head_dim) else "tiled"
    if impl == "auto":
        no_triton = os.environ.get(NO_TRITON_ENV, "0") == "1"
        if device.type == "cuda" and not no_triton and triton_usable(device, dtype, head_dim):
            return "triton"
        if n is None or n >= _tiled_min_n():
            return "tiled"
        return "naive"
    return impl


def sigmoid_attention_naive(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """Reference path: materialise ``sigmoid(Q K^T)`` ([B,N,N]) then multiply by V."""
    logits = torch.bmm(q, k.transpose(1, 2))  # [B,N,N]
    return torch.bmm(torch.sigmoid(logits), v) * scale  # [B,N,C]


def sigmoid_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    scale: float = 1.0,
    impl: str = "auto",
    tile_size: int | None = None,
) -> torch.Tensor:
    """``sigmoid(Q K^T) V * scale`` (Eq. 1 and the product of Eq. 2).

    Args:
        q: Queries [B,N,D].
        k: Keys [B,N,D].
        v: Values [B,N,C].
        scale: Multiplier of the aggregated values (``1/N`` by default in the SUM).
        impl: ``naive | tiled | triton | auto``.
        tile_size: Query rows per block of the tiled/Triton paths (default ``$CINET_ATTENTION_TILE`` or 256).

    Returns:
        [B,N,C] aggregated values.
    """
    impl = resolve_impl(impl, q.device, q.shape[1], dtype=q.dtype, head_dim=q.shape[-1])
    if impl == "naive":
        return sigmoid_attention_naive(q, k, v, scale)
    q, k, v = to_autocast_dtype(q, k, v)
    with float32_region(q.device.type):
        if impl == "triton":
            from cinet.ops import triton_kernels  # local: imports Triton (optional), for the CUDA path only

            return triton_kernels.sigmoid_attention_triton(q, k, v, scale, tile_size)
        return _tiled.sigmoid_attention_tiled(q, k, v, scale, tile_size)


def valid_onehot(
    labels: torch.Tensor, num_classes: int, ignore_index: int = 255
) -> tuple[torch.Tensor, torch.Tensor]:
    """The one-hot matrix M of Eq. 3 (zero rows at ``ignore_index``) and the valid mask.

    Args:
        labels: [B,N] integer labels.
        num_classes: Columns of M.
        ignore_index: Ignored label value.

    Returns:
        ``(M [B,N,C] float32, valid [B,N] bool)``.
    """
    valid = labels != ignore_index  # [B,N]
    safe = torch.where(valid, labels, torch.zeros_like(labels))
    m = F.one_hot(safe.long(), num_classes).to(torch.float32) * valid.unsqueeze(-1)  # [B,N,C]
    return m, valid


def attention_bce_logits(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = 255) -> torch.Tensor:
    """Eq. 4 from an explicit map of logits: the one naive BCE (materialises the ideal map, [B,N,N]).

    ``BCE(A_ij, sigmoid(logits_ij))`` via ``binary_cross_entropy_with_logits`` with autocast disabled (half and
    bfloat16 logits promoted to float32; float64 kept, for gradcheck), averaged over the pairs (i, j) whose two
    pixels are both valid; 0 (with a gradient path to ``logits``) when no pair is valid.

    Args:
        logits: Pre-sigmoid attention map ``Q K^T`` [B,N,N].
        labels: [B,N] integer labels at the feature size.
        ignore_index: Label of ignored pixels (pairs involving them are excluded).
    """
    with float32_region(logits.device.type):
        x = upcast_half(logits)
        valid = labels != ignore_index  # [B,N]
        target = (labels.unsqueeze(2) == labels.unsqueeze(1)).to(x.dtype)  # [B,N,N] = M M^T on valid pairs
        pair_valid = (valid.unsqueeze(2) & valid.unsqueeze(1)).to(x.dtype)  # [B,N,N]
        bce = F.binary_cross_entropy_with_logits(x, target, reduction="none")  # [B,N,N]
        return (bce * pair_valid).sum() / pair_valid.sum().clamp_min(1.0)


def attention_bce_naive(
    q: torch.Tensor, k: torch.Tensor, labels: torch.Tensor, ignore_index: int = 255
) -> torch.Tensor:
    """Reference Eq. 4 from queries and keys: materialises the logits ``Q K^T`` [B,N,N]."""
    return attention_bce_logits(torch.bmm(q, k.transpose(1, 2)), labels, ignore_index)


def attention_bce(
    q: torch.Tensor,
    k: torch.Tensor,
    labels: torch.Tensor,
    *,
    ignore_index: int = 255,
    impl: str = "auto",
    tile_size: int | None = None,
) -> torch.Tensor:
    """Attention loss (Eq. 4): BCE between the ideal map (Eq. 3) and ``sigmoid(Q K^T)``, from logits.

    Args:
        q: Queries [B,N,D].
        k: Keys [B,N,D].
        labels: Class ids at the feature resolution, flattened row-major [B,N]; ``ignore_index`` excluded.
        ignore_index: Label value of pixels excluded from rows and columns of the map.
        impl: ``naive | tiled | triton | auto``.
        tile_size: Query rows per block of the tiled/Triton paths.

    Returns:
        Scalar mean over valid pairs (0 with a gradient path when no pair is valid).
    """
    impl = resolve_impl(impl, q.device, q.shape[1], dtype=q.dtype, head_dim=q.shape[-1])
    if impl == "naive":
        return attention_bce_naive(q, k, labels, ignore_index)
    if impl == "triton":
        from cinet.ops import triton_kernels  # local: imports Triton (optional), for the CUDA path only

        return _tiled.attention_bce_tiled(
            q, k, labels, ignore_index, tile_size, softplus_sum=triton_kernels.softplus_pair_sum_triton
        )
    return _tiled.attention_bce_tiled(q, k, labels, ignore_index, tile_size)


def ideal_attention_apply(
    labels: torch.Tensor, v: torch.Tensor, num_classes: int, *, scale: float = 1.0, ignore_index: int = 255
) -> torch.Tensor:
    """``(M M^T) V * scale`` with the ideal map of Eq. 3, as ``M (M^T V)`` (no N x N tensor).

    Args:
        labels: [B,N] class ids at feature resolution (``ignore_index`` rows/columns are zero).
        v: Values [B,N,C].
        num_classes: Number of classes C of the one-hot matrix M.
        scale: Multiplier (``1/N`` by default in the SUM).
        ignore_index: Ignored label value.

    Returns:
        [B,N,C] aggregated values.
    """
    m, _ = valid_onehot(labels, num_classes, ignore_index)  # [B,N,K]
    m = m.to(v.dtype)
    pooled = torch.bmm(m.transpose(1, 2), v)  # [B,K,C]
    return torch.bmm(m, pooled) * scale  # [B,N,C]
