"""Ideal attention map (Eq. 3) and attention loss (Eq. 4)."""

from __future__ import annotations

import math

import pytest
import torch
from torch.autograd import gradcheck

from cinet.losses import (
    AttentionLoss,
    attention_loss,
    attention_loss_qk,
    ideal_attention_map,
)
from cinet.models.outputs import AttentionState
from cinet.ops import resize_map


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def test_ideal_map_two_classes_block_structure() -> None:
    labels = torch.tensor([[[0, 0], [1, 1]]])  # pixels 0,1 class 0; pixels 2,3 class 1
    expected = torch.tensor([[[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1]]], dtype=torch.float32)
    a = ideal_attention_map(labels, num_classes=2)
    assert a.dtype == torch.float32
    assert torch.equal(a, expected)


def test_ideal_map_3x3_left_column_block() -> None:
    # column 0 is class 0 (pixels 0, 3, 6), the rest class 1 -> A_ij = 1 iff both in the same set
    labels = torch.tensor([[[0, 1, 1], [0, 1, 1], [0, 1, 1]]])
    a = ideal_attention_map(labels, num_classes=2)[0]
    left = torch.tensor([1, 0, 0, 1, 0, 0, 1, 0, 0], dtype=torch.bool)
    expected = (left[:, None] == left[None, :]).float()
    assert torch.equal(a, expected)
    # symmetric, binary, row sums = class sizes (3 for class 0, 6 for class 1)
    assert torch.equal(a.sum(1), torch.tensor([3.0, 6, 6, 3, 6, 6, 3, 6, 6]))


def test_ideal_map_ignore_rows_and_columns_are_zero() -> None:
    labels = torch.tensor([[[0, 255], [1, 0]]])
    expected = torch.tensor([[[1, 0, 0, 1], [0, 0, 0, 0], [0, 0, 1, 0], [1, 0, 0, 1]]], dtype=torch.float32)
    assert torch.equal(ideal_attention_map(labels, 2), expected)


def test_ideal_map_rejects_out_of_range_label() -> None:
    with pytest.raises(ValueError, match="label value 5"):
        ideal_attention_map(torch.tensor([[[0, 5]]]), num_classes=3)


def test_attention_loss_hand_values() -> None:
    labels = torch.tensor([[0, 1]])  # target [[1, 0], [0, 1]]
    logits = torch.tensor([[[2.0, -1.0], [3.0, 0.0]]])
    # BCE(x, 1) = softplus(-x), BCE(x, 0) = softplus(x)
    # (softplus(-2) + softplus(-1) + softplus(3) + softplus(0)) / 4
    # = (0.126928 + 0.313262 + 3.048587 + 0.693147) / 4 = 1.045481
    expected = (softplus(-2) + softplus(-1) + softplus(3) + softplus(0)) / 4
    assert attention_loss(logits, labels).item() == pytest.approx(expected, rel=1e-6)
    assert expected == pytest.approx(1.045481, abs=1e-6)
    # [B,h,w] labels give the same thing
    assert attention_loss(logits, labels.view(1, 1, 2)).item() == pytest.approx(expected, rel=1e-6)


def test_attention_loss_ignore_excludes_pairs() -> None:
    labels = torch.tensor([[0, 255]])
    logits = torch.tensor([[[2.0, -1.0], [3.0, 0.0]]])
    # only the pair (0, 0) is valid: softplus(-2) = 0.126928
    assert attention_loss(logits, labels).item() == pytest.approx(softplus(-2), rel=1e-6)
    # changing logits of pairs with the ignored pixel changes nothing
    other = logits.clone()
    other[0, 0, 1], other[0, 1, :] = 50.0, -70.0
    assert attention_loss(other, labels).item() == pytest.approx(softplus(-2), rel=1e-6)


def test_attention_loss_all_ignored_is_zero_with_grad() -> None:
    logits = torch.randn(1, 4, 4, requires_grad=True)
    loss = attention_loss(logits, torch.full((1, 2, 2), 255))
    assert loss.item() == 0.0 and loss.grad_fn is not None
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))


def test_attention_loss_matches_qk_path() -> None:
    q, k = torch.randn(2, 9, 4), torch.randn(2, 9, 4)
    labels = torch.randint(0, 3, (2, 3, 3))
    labels[0, 1, 1] = 255
    explicit = attention_loss(torch.bmm(q, k.transpose(1, 2)), labels)
    assert attention_loss_qk(q, k, labels).item() == pytest.approx(explicit.item(), rel=1e-5)
    assert attention_loss_qk(q, k, labels.view(2, 9), impl="naive").item() == pytest.approx(
        explicit.item(), rel=1e-5
    )


def test_attention_loss_gradcheck() -> None:
    logits = torch.randn(1, 4, 4, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([[0, 1, 255, 1]])
    assert gradcheck(lambda x: attention_loss(x, labels), (logits,))


def test_attention_loss_large_logits_under_bf16_autocast() -> None:
    labels = torch.tensor([[0, 1]])
    logits = torch.tensor([[[100.0, 100.0], [-100.0, -100.0]]], requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = attention_loss(logits.bfloat16(), labels)
        q = (torch.randn(1, 4, 8) * 10).requires_grad_()
        loss_qk = attention_loss_qk(q, q, torch.tensor([[0, 1, 1, 0]]))
    # targets [[1, 0], [0, 1]]: BCE(100,1)=~0, BCE(100,0)=100, BCE(-100,0)=~0, BCE(-100,1)=100 -> mean 50
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(50.0, rel=1e-3)
    assert torch.isfinite(loss_qk)
    loss.backward()
    assert torch.isfinite(logits.grad).all()


def test_attention_loss_module_downsamples_labels() -> None:
    q, k = torch.randn(1, 4, 3), torch.randn(1, 4, 3)
    labels = torch.tensor([[[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 255, 255], [2, 2, 255, 255]]])
    state = AttentionState(query=q, key=k, size=(2, 2))
    small = resize_map(labels, (2, 2))
    assert torch.equal(small, torch.tensor([[[0, 1], [2, 255]]]))
    assert AttentionLoss()(state, labels).item() == pytest.approx(attention_loss_qk(q, k, small).item())
