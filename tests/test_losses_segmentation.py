"""Class-weighted cross entropy (Eq. 12)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.autograd import gradcheck

from cinet.losses import (
    WeightedCrossEntropy,
    class_weights_from_labels,
    dataset_class_weights,
    weighted_cross_entropy,
)


def test_class_weights_hand_values() -> None:
    # N_total = 4, N_0 = 3, N_1 = 1, N_2 = 0 -> w = (1/4, 3/4, 1)
    w = class_weights_from_labels(torch.tensor([[[0, 0], [0, 1]]]), num_classes=3)
    assert torch.allclose(w, torch.tensor([0.25, 0.75, 1.0]))
    # ignore excluded: N_total = 3, N_0 = 2, N_1 = 1 -> w = (1/3, 2/3)
    w = class_weights_from_labels(torch.tensor([[[0, 255], [0, 1]]]), num_classes=2)
    assert torch.allclose(w, torch.tensor([1 / 3, 2 / 3]))


def test_dataset_class_weights_accumulate_counts() -> None:
    labels = [torch.tensor([[0, 0], [0, 1]]), torch.tensor([[1, 1, 255]])]
    # counts over both: N_0 = 3, N_1 = 3, N_total = 6 -> (1/2, 1/2)
    assert torch.allclose(dataset_class_weights(labels, 2), torch.tensor([0.5, 0.5]))


def test_weighted_ce_hand_value() -> None:
    labels = torch.tensor([[[0, 0], [0, 1]]])  # w = (1/4, 3/4)
    # logits (class 0, class 1) per pixel: (0,0), (2,0), (0,1), (0,1)
    logits = torch.tensor([[[[0.0, 2.0], [0.0, 0.0]], [[0.0, 0.0], [1.0, 1.0]]]])
    # nll: ln 2 = 0.693147, log(1+e^-2) = 0.126928, log(1+e^1) = 1.313262 (y=0), log(1+e^-1) = 0.313262 (y=1)
    # (0.25 * (0.693147 + 0.126928 + 1.313262) + 0.75 * 0.313262) / (3 * 0.25 + 0.75) = 0.512187
    nll = [math.log(2), math.log1p(math.exp(-2)), math.log1p(math.exp(1)), math.log1p(math.exp(-1))]
    expected = (0.25 * sum(nll[:3]) + 0.75 * nll[3]) / 1.5
    assert expected == pytest.approx(0.512187, abs=1e-6)
    assert weighted_cross_entropy(logits, labels, 2).item() == pytest.approx(expected, rel=1e-6)
    # same normalisation as PyTorch's weighted mean
    ref = F.cross_entropy(logits, labels, weight=torch.tensor([0.25, 0.75]))
    assert weighted_cross_entropy(logits, labels, 2).item() == pytest.approx(ref.item(), rel=1e-6)


def test_weighted_ce_fixed_weights() -> None:
    logits, labels = torch.randn(2, 3, 4, 4), torch.randint(0, 3, (2, 4, 4))
    w = torch.tensor([1.0, 2.0, 0.5])
    ref = F.cross_entropy(logits, labels, weight=w)
    assert weighted_cross_entropy(logits, labels, 3, weights=w).item() == pytest.approx(ref.item(), rel=1e-6)
    assert WeightedCrossEntropy(3, class_weights=w)(logits, labels).item() == pytest.approx(
        ref.item(), rel=1e-6
    )


def test_weighted_ce_ignore_pixels_change_nothing() -> None:
    logits, labels = torch.randn(1, 3, 3, 3), torch.randint(0, 3, (1, 3, 3))
    labels[0, 1, 1] = 255
    a = weighted_cross_entropy(logits, labels, 3)
    logits2 = logits.clone()
    logits2[0, :, 1, 1] = torch.tensor([100.0, -50.0, 3.0])
    assert weighted_cross_entropy(logits2, labels, 3).item() == pytest.approx(a.item())
    # same as dropping the pixel by hand: weights from the 8 valid pixels, PyTorch ignore_index
    w = class_weights_from_labels(labels, 3)
    ref = F.cross_entropy(logits, labels, weight=w, ignore_index=255)
    assert a.item() == pytest.approx(ref.item(), rel=1e-6)


def test_weighted_ce_rejects_bad_label() -> None:
    logits = torch.randn(1, 2, 1, 2)
    with pytest.raises(ValueError, match="label value 7"):
        weighted_cross_entropy(logits, torch.tensor([[[0, 7]]]), 2)
    with pytest.raises(ValueError, match="label value -1"):
        weighted_cross_entropy(logits, torch.tensor([[[-1, 0]]]), 2, weights=torch.ones(2))


def test_weighted_ce_all_ignored_is_zero_with_grad() -> None:
    logits = torch.randn(1, 2, 2, 2, requires_grad=True)
    loss = weighted_cross_entropy(logits, torch.full((1, 2, 2), 255), 2)
    assert loss.item() == 0.0 and loss.grad_fn is not None
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))


def test_weighted_ce_gradcheck() -> None:
    logits = torch.randn(1, 3, 2, 3, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([[[0, 1, 2], [1, 255, 1]]])
    assert gradcheck(lambda x: weighted_cross_entropy(x, labels, 3), (logits,))


def test_weighted_ce_large_logits_under_bf16_autocast() -> None:
    logits = (torch.randn(2, 3, 4, 4).sign() * 100).requires_grad_()
    labels = torch.randint(0, 3, (2, 4, 4))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = weighted_cross_entropy(logits.bfloat16(), labels, 3)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(logits.grad).all()


def test_one_class_batch_trains_with_plain_cross_entropy() -> None:
    """Eq. 12 gives the only class weight 0 (loss 0/0); its limit, any positive weight, is plain cross entropy."""
    logits = torch.tensor([[[[2.0, 0.0]], [[0.0, 1.0]]]], requires_grad=True)  # [1,2,1,2]: two pixels
    labels = torch.tensor([[[0, 0]]])  # both class 0
    loss = weighted_cross_entropy(logits, labels, num_classes=2)
    # by hand: pixel 0 nll = log(1 + e^-2), pixel 1 nll = log(1 + e^1); mean
    expected = (math.log(1 + math.exp(-2.0)) + math.log(1 + math.exp(1.0))) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()
    assert logits.grad.abs().sum() > 0
    assert class_weights_from_labels(labels, 2).tolist() == [1.0, 1.0]
    assert class_weights_from_labels(torch.tensor([[0, 0, 1]]), 2).tolist() == pytest.approx([1 / 3, 2 / 3])


def test_dataset_weights_of_one_class_are_ones_and_match_the_batch_formula() -> None:
    """``loss.class_weights=dataset`` goes through the same Eq. 12 code (builders used to repeat the formula)."""
    assert dataset_class_weights([torch.tensor([[2, 2, 255]])], 3).tolist() == [1.0, 1.0, 1.0]
    w = dataset_class_weights([torch.tensor([[0, 0]]), torch.tensor([[1, 255]])], 3)
    assert w.tolist() == pytest.approx([1 / 3, 2 / 3, 1.0])  # (3 - 2) / 3, (3 - 1) / 3, (3 - 0) / 3
