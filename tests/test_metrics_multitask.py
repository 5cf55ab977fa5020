"""Δm (Maninis et al. 2019; Vandenhende et al. 2021) and Welch's t-test, against values computed by hand."""

from __future__ import annotations

import math

import pytest

from cinet.metrics import delta_m, welch_p_value


def test_delta_m_by_hand() -> None:
    single = {"rms": 0.50, "miou": 0.40, "delta1": 0.80}
    # rms 0.45 (lower is better: +10 %), mIoU 0.42 (+5 %) -> mean +7.5 %
    assert delta_m({"rms": 0.45, "miou": 0.42}, single) == pytest.approx(7.5)
    # rms 0.55 (-10 %), mIoU 0.40 (0 %) -> -5 %
    assert delta_m({"rms": 0.55, "miou": 0.40}, single) == pytest.approx(-5.0)
    # chosen keys: δ1 0.84 (+5 %), rms 0.45 (+10 %) -> 7.5 %
    assert delta_m({"rms": 0.45, "delta1": 0.84}, single, keys=("delta1", "rms")) == pytest.approx(7.5)
    assert delta_m(single, single) == 0.0


def test_delta_m_missing_is_nan() -> None:
    assert math.isnan(delta_m({"rms": 0.4}, {"rms": 0.5, "miou": 0.4}))
    assert math.isnan(delta_m({"rms": 0.4, "miou": None}, {"rms": 0.5, "miou": 0.4}))
    assert math.isnan(delta_m({"rms": 0.4, "miou": 0.3}, {"rms": 0.0, "miou": 0.4}))


def test_welch_by_hand() -> None:
    a, b = [1.0, 2.0, 3.0], [4.0, 5.0, 6.0, 7.0]
    # means 2 and 5.5, variances 1 and 5/3: t = -3.5 / sqrt(1/3 + 5/12) = -4.0415;
    # Welch-Satterthwaite df = (0.75)^2 / ((1/3)^2/2 + (5/12)^2/3) = 4.959; two-sided p(t, df) = 0.0101
    assert welch_p_value(a, b) == pytest.approx(0.0100, abs=2e-4)
    assert welch_p_value(a, a) == pytest.approx(1.0)
    assert math.isnan(welch_p_value([1.0], b))
    assert welch_p_value([1.0, 1.0], [2.0, 2.0]) == 0.0 and welch_p_value([1.0, 1.0], [1.0, 1.0]) == 1.0
