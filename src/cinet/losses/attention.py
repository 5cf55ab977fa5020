"""Ideal attention map (paper Eq. 3) and the attention loss L_att (Eq. 4).

The SUM's map is ``A~ = sigmoid(Q K^T)`` (Eq. 1). Its supervision is the ideal map ``A = M M^T`` (Eq. 3), where
``M`` [N,C] is the one-hot matrix of the labels nearest-downsampled to the feature size (N = h*w, row-major):
``A_ij = 1`` when pixels i and j have the same class, else 0. Pixels with ``ignore_index`` have all-zero rows of
``M``; the loss excludes every pair that involves one of them.

L_att is the binary cross entropy between ``A`` and ``A~``, computed from the logits ``Q K^T`` (numerically safe
for large logits and under bf16 autocast: the BCE runs in float32) and averaged over the valid pairs (the paper
writes a sum; see ``docs/losses.md``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from cinet.ops import attention_bce, resize_map
from cinet.ops.sigmoid_attention import attention_bce_logits, valid_onehot

if TYPE_CHECKING:
    from cinet.models.outputs import AttentionState

__all__ = [
    "AttentionLoss",
    "attention_loss",
    "attention_loss_qk",
    "check_labels",
    "ideal_attention_map",
]


def check_labels(labels: torch.Tensor, num_classes: int, ignore_index: int = 255) -> None:
    """Raise ``ValueError`` naming the first label that is neither a class id in [0, C) nor ``ignore_index``.

    Args:
        labels: Integer label tensor of any shape.
        num_classes: Number of classes C.
        ignore_index: The label value that marks ignored pixels.
    """
    bad = (labels != ignore_index) & ((labels < 0) | (labels >= num_classes))
    if bool(bad.any()):
        value = int(labels[bad][0])
        raise ValueError(
            f"label value {value} is out of range: expected class ids in [0, {num_classes}) "
            f"or the ignore index {ignore_index}"
        )


def ideal_attention_map(labels: torch.Tensor, num_classes: int, ignore_index: int = 255) -> torch.Tensor:
    """Ideal attention map ``A = M M^T`` (Eq. 3).

    Args:
        labels: [B,h,w] (or [B,N]) integer labels already at the feature size (use :func:`resize_map`).
        num_classes: Number of classes C (columns of the one-hot matrix M).
        ignore_index: Label of ignored pixels; their rows and columns of ``A`` are zero.

    Returns:
        [B,N,N] float32 map with N = h*w in row-major order: ``A_ij = 1`` iff pixels i and j are valid and of
        the same class.

    Raises:
        ValueError: A label is outside [0, num_classes) and is not ``ignore_index``.
    """
    flat = labels.reshape(labels.shape[0], -1)  # [B,N]
    check_labels(flat, num_classes, ignore_index)
    m, _ = valid_onehot(flat, num_classes, ignore_index)  # [B,N,C]
    return torch.bmm(m, m.transpose(1, 2))  # [B,N,N]


def attention_loss(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = 255) -> torch.Tensor:
    """Attention loss (Eq. 4) from an explicit map of logits (materialises N x N; tests and small maps).

    ``BCE(A_ij, sigmoid(logits_ij))`` in float32 (autocast disabled), averaged over the pairs (i, j) whose two
    pixels are both valid: :func:`cinet.ops.sigmoid_attention.attention_bce_logits`, the BCE of the naive path.

    Args:
        logits: Pre-sigmoid attention map ``Q K^T`` [B,N,N].
        labels: Labels at the feature size, [B,N] or [B,h,w] with h*w = N.
        ignore_index: Label of ignored pixels (pairs involving them are excluded).

    Returns:
        Scalar mean over valid pairs; 0 (with a gradient path to ``logits``) when no pair is valid.
    """
    b, n, n2 = logits.shape
    flat = labels.reshape(labels.shape[0], -1)  # [B,N]
    if flat.shape != (b, n) or n2 != n:
        raise ValueError(f"logits {tuple(logits.shape)} do not match labels {tuple(labels.shape)} (N = h*w)")
    return attention_bce_logits(logits, flat, ignore_index)  # the one naive BCE (ops)


def attention_loss_qk(
    q: torch.Tensor, k: torch.Tensor, labels: torch.Tensor, ignore_index: int = 255, impl: str = "auto"
) -> torch.Tensor:
    """Attention loss (Eq. 4) from queries and keys, through :func:`cinet.ops.attention_bce`.

    The memory-efficient paths (``tiled``, ``triton``) never materialise the N x N map; ``naive`` does.

    Args:
        q: Queries [B,N,D].
        k: Keys [B,N,D].
        labels: Labels at the feature size, [B,N] or [B,h,w] with h*w = N.
        ignore_index: Label of ignored pixels.
        impl: ``naive | tiled | triton | auto``.

    Returns:
        Scalar mean over valid pairs, equal to ``attention_loss(q @ k^T, labels)``.
    """
    flat = labels.reshape(labels.shape[0], -1)  # [B,N]
    if flat.shape != q.shape[:2]:
        raise ValueError(f"queries {tuple(q.shape)} do not match labels {tuple(labels.shape)} (N = h*w)")
    return attention_bce(q, k, flat, ignore_index=ignore_index, impl=impl)


class AttentionLoss(nn.Module):
    """L_att (Eq. 4) of a SUM state against full-resolution labels.

    Args:
        ignore_index: Label of ignored pixels.
        impl: Attention implementation passed to :func:`cinet.ops.attention_bce`.
    """

    def __init__(self, ignore_index: int = 255, impl: str = "auto") -> None:
        super().__init__()
        self.ignore_index = ignore_index
        self.impl = impl

    def forward(self, attention: AttentionState, labels: torch.Tensor) -> torch.Tensor:
        """Loss of ``attention`` (query/key [B,N,D], size (h,w)) against labels [B,H,W] (downsampled here)."""
        small = resize_map(labels, attention.size)  # [B,h,w]
        return attention_loss_qk(attention.query, attention.key, small, self.ignore_index, self.impl)

    def extra_repr(self) -> str:
        return f"ignore_index={self.ignore_index}, impl={self.impl!r}"
