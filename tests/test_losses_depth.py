"""Depth losses: BerHu (Eq. 8), pair (Eq. 9), normal (Eq. 10), L_depth (Eq. 11)."""

from __future__ import annotations

import math

import pytest
import torch
from torch.autograd import gradcheck

from cinet.losses import berhu_loss, depth_loss, normal_loss, pair_loss


def img(rows: list[list[float]], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.tensor(rows, dtype=dtype).view(1, 1, len(rows), len(rows[0]))


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------------------------- BerHu


def test_berhu_hand_value_and_detached_threshold() -> None:
    target = img([[1.0, 1.0], [1.0, 1.0]])
    pred = img([[1.5, 1.0], [2.0, 6.0]]).requires_grad_()
    # errors 0.5, 0, 1, 5 -> c = 0.2 * 5 = 1; L1 for 0.5, 0, 1 (1 <= c); (25 + 1) / 2 = 13 for 5
    # mean = (0.5 + 0 + 1 + 13) / 4 = 3.625
    loss = berhu_loss(pred, target)
    assert loss.item() == pytest.approx(3.625)
    loss.backward()
    # c has no gradient: d/dpred = sign(e)/4 on the L1 part, e/c/4 = 5/4 on the L2 part
    assert torch.allclose(pred.grad, img([[0.25, 0.0], [0.25, 1.25]]))


def test_berhu_masks_zero_nan_inf_targets() -> None:
    pred = img([[1.5, 1.0], [2.0, 6.0]])
    # pixel (1,1) invalid: errors 0.5, 0, 1 -> c = 0.2; 0.5 -> (0.25 + 0.04) / 0.4 = 0.725; 1 -> 1.04 / 0.4 = 2.6
    # mean = (0.725 + 0 + 2.6) / 3 = 1.108333
    for bad in (0.0, float("nan"), float("inf"), -1.0):
        p = pred.clone().requires_grad_()
        loss = berhu_loss(p, img([[1.0, 1.0], [1.0, bad]]))
        assert loss.item() == pytest.approx(3.325 / 3)
        loss.backward()
        assert torch.isfinite(p.grad).all() and p.grad[0, 0, 1, 1] == 0
    # an explicit mask does the same
    mask = img([[1.0, 1.0], [1.0, 0.0]]).bool()
    assert berhu_loss(pred, img([[1.0, 1.0], [1.0, 1.0]]), mask).item() == pytest.approx(3.325 / 3)


def test_berhu_equals_l1_below_threshold() -> None:
    target = torch.ones(1, 1, 2, 2)
    a = target + img([[0.1, 0.0], [0.2, 5.0]])  # c = 1: the three small errors are in the L1 part
    b = target + img([[0.0, -0.1], [0.05, 5.0]])
    # difference of the means = (|0.1| + 0 + 0.2 - (0 + 0.1 + 0.05)) / 4 = 0.0375
    assert (berhu_loss(a, target) - berhu_loss(b, target)).item() == pytest.approx(0.0375, abs=1e-6)


def test_berhu_perfect_prediction_is_zero_not_nan() -> None:
    target = torch.rand(2, 1, 3, 3) + 1
    pred = target.clone().requires_grad_()
    loss = berhu_loss(pred, target)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(pred.grad).all()


def test_berhu_gradcheck_away_from_kink() -> None:
    target = torch.ones(6, dtype=torch.float64)
    # the max-error pixel (error 10, c = 2) is a constant, so c does not move under the finite differences
    fixed = torch.tensor([11.0], dtype=torch.float64)
    x = torch.tensor([1.5, 0.2, 4.0, -2.0, 2.5], dtype=torch.float64, requires_grad=True)  # errors far from c

    def f(x: torch.Tensor) -> torch.Tensor:
        return berhu_loss(torch.cat([x, fixed]).view(1, 1, 2, 3), target.view(1, 1, 2, 3))

    assert gradcheck(f, (x,))


# ------------------------------------------------------------------------------------------------ pair


def test_pair_loss_two_valid_pixels_hand_value() -> None:
    # valid pixels (0,0) and (1,0): |(3 - 1) - (2 - 5)| = 5 for (p,q) and (q,p); p != q so every pair gives 5
    pred = img([[3.0, 100.0], [1.0, -7.0]])
    target = img([[2.0, 0.0], [5.0, float("nan")]])
    assert pair_loss(pred, target, num_pairs=50, generator=gen()).item() == pytest.approx(5.0)


def test_pair_loss_per_image_mean() -> None:
    pred = torch.cat([img([[3.0, 0.0], [1.0, 0.0]]), img([[2.0, 1.0], [0.0, 0.0]])])
    target = torch.cat([img([[2.0, 0.0], [5.0, 0.0]]), img([[1.0, 1.0], [0.0, 0.0]])])
    # image 0: 5 (as above); image 1: |(2 - 1) - (1 - 1)| = 1 -> mean over equal pair counts = 3
    assert pair_loss(pred, target, num_pairs=7, generator=gen()).item() == pytest.approx(3.0)
    # an image with < 2 valid pixels contributes nothing
    target[1] = 0.0
    target[1, 0, 0, 0] = 1.0
    assert pair_loss(pred, target, num_pairs=7, generator=gen()).item() == pytest.approx(5.0)


def test_pair_loss_samples_uniform_distinct_valid_pairs() -> None:
    # 3 valid pixels (the 4th is invalid and hugely wrong); pred - target = 1 at pixel 0 only.
    # A pair scores 1 iff it contains pixel 0: 4 of the 6 ordered pairs with p != q -> expected mean 2/3
    # (std of the estimate with 20000 pairs: sqrt(2/9 / 20000) = 0.0033; seeded, so deterministic anyway)
    pred = img([[2.0, 1.0], [1.0, 1e6]])
    target = img([[1.0, 1.0], [1.0, 0.0]])
    loss = pair_loss(pred, target, num_pairs=20000, generator=gen(5))
    assert loss.item() == pytest.approx(2 / 3, abs=0.02)


def test_pair_loss_zero_for_constant_shift() -> None:
    target = torch.rand(2, 1, 5, 6) + 0.5
    assert pair_loss(target + 3.0, target, generator=gen()).item() == pytest.approx(0.0, abs=1e-5)


def test_pair_loss_reproducible_with_generator() -> None:
    pred, target = torch.rand(2, 1, 6, 6), torch.rand(2, 1, 6, 6) + 0.1
    a = pair_loss(pred, target, num_pairs=20, generator=gen(3))
    b = pair_loss(pred, target, num_pairs=20, generator=gen(3))
    c = pair_loss(pred, target, num_pairs=20, generator=gen(4))
    assert a.item() == b.item() and a.item() != c.item()


def test_pair_loss_gradcheck() -> None:
    pred = torch.rand(2, 1, 3, 3, dtype=torch.float64, requires_grad=True)
    target = torch.rand(2, 1, 3, 3, dtype=torch.float64) + 2.0  # |diff| terms stay away from 0
    target[0, 0, 1, 1] = 0.0
    assert gradcheck(lambda p: pair_loss(p, target, num_pairs=10, generator=gen(1)), (pred,))


# ---------------------------------------------------------------------------------------------- normal


def test_normal_loss_2x2_hand_value() -> None:
    # target flat: n~ = (0, 0, 1); pred: dx = 2 - 1 = 1, dy = 0 -> n = (-1, 0, 1); 1 - 1/sqrt(2) = 0.292893
    loss = normal_loss(img([[1.0, 2.0], [1.0, 1.0]]), img([[1.0, 1.0], [1.0, 1.0]]))
    assert loss.item() == pytest.approx(1 - 1 / math.sqrt(2))


def test_normal_loss_3x3_invalid_stencil() -> None:
    pred = img([[1.0, 1.0, 1.0], [1.0, 2.0, 1.0], [1.0, 1.0, 1.0]])
    # (1,2) invalid -> stencil (1,1) dropped
    target = img([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    # stencils: (0,0): n = (0,0,1) -> 0; (0,1): dy = 2 - 1 -> n = (0,-1,1) -> 1 - 1/sqrt2;
    # (1,0): dx = 2 - 1 -> n = (-1,0,1) -> 1 - 1/sqrt2; (1,1) invalid. mean = 2 (1 - 1/sqrt2) / 3 = 0.195262
    assert normal_loss(pred, target).item() == pytest.approx(2 * (1 - 1 / math.sqrt(2)) / 3)


def test_normal_loss_zero_when_pred_equals_target() -> None:
    target = torch.rand(2, 1, 5, 4) + 1
    assert normal_loss(target.clone(), target).item() == pytest.approx(0.0, abs=1e-6)
    assert normal_loss(target[:, 0], target[:, 0]).item() == pytest.approx(0.0, abs=1e-6)  # [B,H,W]


def test_normal_loss_gradcheck() -> None:
    pred = torch.rand(1, 1, 3, 4, dtype=torch.float64, requires_grad=True)
    target = torch.rand(1, 1, 3, 4, dtype=torch.float64) + 1
    target[0, 0, 2, 3] = float("nan")
    assert gradcheck(lambda p: normal_loss(p, target), (pred,))


def test_normal_loss_equals_cosine_similarity_of_the_normals() -> None:
    # the fast form (dot * rsqrt of the squared norms) against torch's cosine_similarity on the same normals,
    # value and gradient, at the demo's size with invalid pixels
    g = torch.Generator().manual_seed(0)
    pred = (torch.rand(2, 1, 24, 32, generator=g) * 5 + 0.5).double().requires_grad_()
    target = torch.rand(2, 1, 24, 32, generator=g).double() * 5 + 0.5
    target[:, :, 3:6, 7:11] = 0.0
    mask = target > 0
    stencil = mask[:, :, :-1, :-1] & mask[:, :, :-1, 1:] & mask[:, :, 1:, :-1]

    def normals(d: torch.Tensor) -> torch.Tensor:
        dx = d[:, :, :-1, 1:] - d[:, :, :-1, :-1]
        dy = d[:, :, 1:, :-1] - d[:, :, :-1, :-1]
        return torch.cat([-dx, -dy, torch.ones_like(dx)], dim=1)

    cos = torch.nn.functional.cosine_similarity(normals(pred), normals(target), dim=1, eps=0.0)
    reference = (1.0 - cos)[stencil[:, 0]].mean()
    loss = normal_loss(pred, target)
    assert loss.item() == pytest.approx(reference.item(), rel=1e-12)
    (g_fast,) = torch.autograd.grad(loss, pred)
    (g_ref,) = torch.autograd.grad(reference, pred)
    assert torch.allclose(g_fast, g_ref, rtol=1e-10, atol=1e-14)


# ----------------------------------------------------------------------------------- L_depth and edges


def test_depth_loss_is_weighted_sum_of_terms() -> None:
    pred, target = torch.rand(2, 1, 4, 4) + 0.5, torch.rand(2, 1, 4, 4) + 0.5
    total, terms = depth_loss(pred, target, lam=2.0, mu=3.0, num_pairs=30, generator=gen(), return_terms=True)
    assert set(terms) == {"berhu", "pair", "normal"}
    expected = terms["berhu"] + 2.0 * terms["pair"] + 3.0 * terms["normal"]
    assert total.item() == pytest.approx(expected.item())
    assert depth_loss(pred, target, lam=2.0, mu=3.0, num_pairs=30, generator=gen()).item() == pytest.approx(
        total.item()
    )


def test_invalid_pixels_change_nothing() -> None:
    pred, target = torch.rand(1, 1, 4, 4) + 0.5, torch.rand(1, 1, 4, 4) + 0.5
    target[0, 0, 0, 3] = float("nan")
    target[0, 0, 3, 0] = float("inf")
    target[0, 0, 2, 2] = 0.0
    a = depth_loss(pred, target, num_pairs=40, generator=gen(), return_terms=True)[1]
    pred2 = pred.clone()
    pred2[0, 0, 0, 3], pred2[0, 0, 3, 0], pred2[0, 0, 2, 2] = 1e3, -5.0, 77.0
    b = depth_loss(pred2, target, num_pairs=40, generator=gen(), return_terms=True)[1]
    for name in ("berhu", "pair", "normal"):
        assert torch.isfinite(a[name]) and a[name].item() == pytest.approx(b[name].item()), name


@pytest.mark.parametrize("fn", [berhu_loss, pair_loss, normal_loss, depth_loss])
def test_all_invalid_batch_is_zero_with_grad(fn) -> None:
    pred = torch.rand(2, 1, 3, 3, requires_grad=True)
    target = torch.zeros(2, 1, 3, 3)
    target[0, 0, 0, 0] = float("nan")
    loss = fn(pred, target)
    assert loss.item() == 0.0 and loss.grad_fn is not None
    loss.backward()
    assert torch.equal(pred.grad, torch.zeros_like(pred))


def test_depth_losses_finite_under_bf16_autocast() -> None:
    pred = (torch.rand(2, 1, 6, 6) * 100 + 0.1).requires_grad_()
    target = torch.rand(2, 1, 6, 6) * 10
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = depth_loss(pred.bfloat16(), target, num_pairs=20, generator=gen())
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(pred.grad).all()


def test_shape_mismatch_raises() -> None:
    with pytest.raises(ValueError, match="differ in shape"):
        berhu_loss(torch.rand(1, 1, 2, 2), torch.rand(1, 1, 2, 3))
