"""Consistency loss (Eq. 7)."""

from __future__ import annotations

import math

import pytest
import torch
from torch.autograd import gradcheck

from cinet.losses import ConsistencyLoss, consistency_loss

ZERO = torch.tensor(0.0)


def row(values: list[float], channels: int = 1) -> torch.Tensor:
    """[1,C,1,W] features with every channel equal to ``values``."""
    return torch.tensor(values).view(1, 1, 1, -1).repeat(1, channels, 1, 1)


def test_hand_value_1x3() -> None:
    f_d, f_s = row([0.0, 1.0, 3.0]), row([0.0, 0.0, 0.0])
    labels = torch.tensor([[[0, 1, 1]]])
    # psi: (0,1) l=1 differs; (1,2) l=1 same -> 0; (0,2) l=2 differs. sigma = 1:
    # |exp(-1/2) - 1| = 0.393469, |exp(-9/2) - 1| = 0.988891 -> mean 0.691180
    expected = ((1 - math.exp(-0.5)) + (1 - math.exp(-4.5))) / 2
    assert expected == pytest.approx(0.691180, abs=1e-6)
    assert consistency_loss(f_d, f_s, labels, ZERO, ZERO).item() == pytest.approx(expected, rel=1e-6)
    # ||.||^2 is a per-channel mean: 4 identical channels give the same value
    assert consistency_loss(row([0.0, 1.0, 3.0], 4), row([0.0] * 3, 4), labels, ZERO, ZERO).item() == (
        pytest.approx(expected, rel=1e-6)
    )
    # sigma_d = 2: exp(-1/8) = 0.882497, exp(-9/8) = 0.324652 -> (0.117503 + 0.675348) / 2 = 0.396425
    sig2 = torch.tensor(math.log(2.0))
    expected2 = ((1 - math.exp(-1 / 8)) + (1 - math.exp(-9 / 8))) / 2
    assert consistency_loss(f_d, f_s, labels, sig2, ZERO).item() == pytest.approx(expected2, rel=1e-6)
    # the y direction is handled the same way (transpose everything)
    t = consistency_loss(f_d.transpose(2, 3), f_s.transpose(2, 3), labels.transpose(1, 2), ZERO, ZERO)
    assert t.item() == pytest.approx(expected, rel=1e-6)


def test_labels_are_downsampled_and_ignore_excluded() -> None:
    f_d, f_s = row([0.0, 1.0, 3.0]), row([0.0, 0.0, 0.0])
    # 2x6 labels -> 1x3 by the nearest pixel centre (nearest-exact) takes row floor(0.5 * 2) = 1 and
    # columns floor((j + 0.5) * 2) = 1, 3, 5 = [0, 255, 1]
    labels = torch.tensor([[[5, 5, 5, 5, 5, 5], [5, 0, 5, 255, 5, 1]]])
    # only (0,2) at l=2 counts: 1 - exp(-9/2) = 0.988891
    assert consistency_loss(f_d, f_s, labels, ZERO, ZERO).item() == pytest.approx(
        1 - math.exp(-4.5), rel=1e-6
    )


def test_no_contributing_pair_is_zero_with_grad() -> None:
    f_d = torch.randn(1, 2, 3, 3, requires_grad=True)
    log_sigma = torch.zeros((), requires_grad=True)
    loss = consistency_loss(
        f_d, torch.randn(1, 2, 3, 3), torch.ones(1, 3, 3, dtype=torch.long), log_sigma, ZERO
    )
    assert loss.item() == 0.0 and loss.grad_fn is not None
    loss.backward()
    assert torch.equal(f_d.grad, torch.zeros_like(f_d)) and log_sigma.grad == 0


def _literal_eq7(f_d, f_s, labels, sd, ss, ignore=255) -> float:
    """Eq. 7 as written: every position, offsets +-1, +-2 along x and y (8 comparisons), mean over psi = 1."""
    h, w = f_d.shape[-2:]
    total, count = 0.0, 0
    for i in range(h):
        for j in range(w):
            for di, dj in [(0, 1), (0, -1), (1, 0), (-1, 0), (0, 2), (0, -2), (2, 0), (-2, 0)]:
                i2, j2 = i + di, j + dj
                if not (0 <= i2 < h and 0 <= j2 < w):
                    continue
                a, b = int(labels[0, i, j]), int(labels[0, i2, j2])
                if ignore in (a, b) or a == b:
                    continue
                dd = math.exp(-float(((f_d[0, :, i, j] - f_d[0, :, i2, j2]) ** 2).mean()) / (2 * sd**2))
                ds = math.exp(-float(((f_s[0, :, i, j] - f_s[0, :, i2, j2]) ** 2).mean()) / (2 * ss**2))
                total += abs(dd - ds)
                count += 1
    return total / count


def test_matches_literal_eight_comparisons() -> None:
    f_d, f_s = torch.randn(1, 3, 4, 5), torch.randn(1, 3, 4, 5)
    labels = torch.randint(0, 3, (1, 4, 5))
    labels[0, 2, 2] = 255
    got = consistency_loss(f_d, f_s, labels, torch.tensor(math.log(0.7)), torch.tensor(math.log(1.3)))
    assert got.item() == pytest.approx(_literal_eq7(f_d, f_s, labels, 0.7, 1.3), rel=1e-5)


def test_gradcheck_including_sigmas() -> None:
    f_d = torch.randn(1, 2, 3, 4, dtype=torch.float64, requires_grad=True)
    f_s = torch.randn(1, 2, 3, 4, dtype=torch.float64, requires_grad=True)
    sd = torch.tensor(0.1, dtype=torch.float64, requires_grad=True)
    ss = torch.tensor(-0.2, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([[[0, 1, 1, 2], [0, 0, 255, 2], [1, 1, 0, 2]]])
    assert gradcheck(lambda a, b, c, d: consistency_loss(a, b, labels, c, d), (f_d, f_s, sd, ss))


def test_module_sigmas_and_stage_mean() -> None:
    module = ConsistencyLoss(num_maps=2)
    assert [p.shape for p in module.parameters()] == [torch.Size([2]), torch.Size([2])]
    assert torch.equal(module.log_sigma_d.detach(), torch.zeros(2))  # sigma initialised to 1
    depth = [torch.randn(2, 4, 2, 2), torch.randn(2, 3, 4, 4)]
    seg = [torch.randn(2, 4, 2, 2), torch.randn(2, 3, 4, 4)]
    labels = torch.randint(0, 3, (2, 8, 8))
    loss = module(depth, seg, labels)
    per_map = [consistency_loss(d, s, labels, ZERO, ZERO) for d, s in zip(depth, seg)]
    assert loss.item() == pytest.approx((per_map[0].item() + per_map[1].item()) / 2, rel=1e-6)
    loss.backward()
    assert module.log_sigma_d.grad.abs().sum() > 0 and module.log_sigma_s.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="expects 2 feature maps"):
        module(depth[:1], seg[:1], labels)
    assert list(ConsistencyLoss(2, learn_sigma=False).parameters()) == []


def test_finite_under_bf16_autocast() -> None:
    f_d = (torch.randn(1, 256, 4, 4) * 100).requires_grad_()
    labels = torch.randint(0, 2, (1, 4, 4))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = consistency_loss(f_d.bfloat16(), torch.randn(1, 256, 4, 4).bfloat16(), labels, ZERO, ZERO)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(f_d.grad).all()
