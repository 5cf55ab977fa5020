"""Sigmoid attention of the SUM (Eq. 1–2) and its BCE attention loss (Eq. 4), behind one dispatch.

Shapes (nanoGPT style): B batch, N = h*w positions (row-major), D = C_qk query/key channels, C value channels.

* :func:`sigmoid_attention` — ``Y = sigmoid(Q K^T) V * scale``  ([B,N,D],[B,N,D],[B,N,C] -> [B,N,C]).
* :func:`attention_bce` — mean over valid pairs of ``BCE(A_ij, sigmoid(q_i . k_j))`` with the ideal map
  ``A = M M^T`` built from labels (Eq. 3); pairs with an ignore pixel are excluded.
* :func:`ideal_attention_apply` — ``Y = (M M^T) V * scale`` computed as ``M (M^T V)`` (stage 1 of training
  feeds the ideal map into the SUM); never materialises N x N.

``impl`` selects the path: ``naive`` materialises the B x N x N map; ``tiled`` and ``triton`` (memory-efficient,
added in the fast-path work) never do; ``auto`` picks the best available one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

ATTENTION_IMPLS = ("naive", "tiled", "triton", "auto")


def _check_impl(impl: str) -> str:
    if impl not in ATTENTION_IMPLS:
        raise ValueError(f"attention_impl must be one of {ATTENTION_IMPLS}, got {impl!r}")
    return impl


def resolve_impl(impl: str, device: torch.device) -> str:
    """Map ``auto`` (and unavailable choices) to a concrete implementation for ``device``."""
    _check_impl(impl)
    if impl == "auto":
        return "naive"
    return impl


def sigmoid_attention_naive(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """Reference path: materialise ``sigmoid(Q K^T)`` ([B,N,N]) then multiply by V."""
    logits = torch.bmm(q, k.transpose(1, 2))  # [B,N,N]
    return torch.bmm(torch.sigmoid(logits), v) * scale  # [B,N,C]


def sigmoid_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, scale: float = 1.0, impl: str = "auto"
) -> torch.Tensor:
    """``sigmoid(Q K^T) V * scale`` (Eq. 1 and the product of Eq. 2).

    Args:
        q: Queries [B,N,D].
        k: Keys [B,N,D].
        v: Values [B,N,C].
        scale: Multiplier of the aggregated values (``1/N`` by default in the SUM).
        impl: ``naive | tiled | triton | auto``.

    Returns:
        [B,N,C] aggregated values.
    """
    impl = resolve_impl(impl, q.device)
    return sigmoid_attention_naive(q, k, v, scale)


def _valid_onehot(labels: torch.Tensor, num_classes: int, ignore_index: int) -> tuple[torch.Tensor, torch.Tensor]:
    valid = labels != ignore_index  # [B,N]
    safe = torch.where(valid, labels, torch.zeros_like(labels))
    m = F.one_hot(safe, num_classes).to(torch.float32) * valid.unsqueeze(-1)  # [B,N,C]
    return m, valid


def attention_bce_naive(
    q: torch.Tensor, k: torch.Tensor, labels: torch.Tensor, ignore_index: int = 255
) -> torch.Tensor:
    """Reference Eq. 4 from logits: materialises logits and the ideal map ([B,N,N])."""
    logits = torch.bmm(q, k.transpose(1, 2)).float()  # [B,N,N]
    valid = labels != ignore_index  # [B,N]
    target = (labels.unsqueeze(2) == labels.unsqueeze(1)).float()  # [B,N,N]
    pair_valid = (valid.unsqueeze(2) & valid.unsqueeze(1)).float()
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    denom = pair_valid.sum()
    return (bce * pair_valid).sum() / denom.clamp_min(1.0)


def attention_bce(
    q: torch.Tensor, k: torch.Tensor, labels: torch.Tensor, *, ignore_index: int = 255, impl: str = "auto"
) -> torch.Tensor:
    """Attention loss (Eq. 4): BCE between the ideal map (Eq. 3) and ``sigmoid(Q K^T)``, from logits.

    Args:
        q: Queries [B,N,D].
        k: Keys [B,N,D].
        labels: Class ids at the feature resolution, flattened row-major [B,N]; ``ignore_index`` excluded.
        ignore_index: Label value of pixels excluded from rows and columns of the map.
        impl: ``naive | tiled | triton | auto``.

    Returns:
        Scalar mean over valid pairs (0 with a gradient path when no pair is valid).
    """
    impl = resolve_impl(impl, q.device)
    return attention_bce_naive(q, k, labels, ignore_index)


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
    m, _ = _valid_onehot(labels, num_classes, ignore_index)  # [B,N,K]
    m = m.to(v.dtype)
    pooled = torch.bmm(m.transpose(1, 2), v)  # [B,K,C]
    return torch.bmm(m, pooled) * scale  # [B,N,C]


def downsample_labels(labels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Nearest-neighbour downsampling of label maps to the feature size (the "down-sampled" m of Eq. 3).

    Uses ``F.interpolate(mode="nearest")`` (source index ``floor(i * in / out)``), the one rule used
    everywhere in cinet (ideal map, attention loss, consistency loss), so that all parts agree.

    Args:
        labels: [B,H,W] integer labels (``255`` = ignore is kept as is).
        size: Target (h, w).

    Returns:
        [B,h,w] labels with the input dtype.
    """
    if tuple(labels.shape[-2:]) == tuple(size):
        return labels
    out = F.interpolate(labels.unsqueeze(1).float(), size=size, mode="nearest")
    return out.squeeze(1).to(labels.dtype)
