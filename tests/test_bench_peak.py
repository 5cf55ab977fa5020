"""The matmul peak probe of ``cinet bench`` (issue #27, item 5): units, dtypes, fractions."""

from __future__ import annotations

import pytest

from cinet.bench.peak import matmul_peak, peak_fraction


def test_matmul_peak_is_operations_per_second():
    peak = matmul_peak("cpu", ("fp32", "bf16", "int8"), n=128, repeat=2)
    assert set(peak) == {"fp32", "bf16", "int8"}
    for value in peak.values():
        # 2 n^3 = 4.2 MFLOP per matmul: any real CPU does that in well under a second, and none at 1e15/s
        assert value is None or 4.2e6 < value < 1e15
    assert peak["fp32"] is not None


def test_peak_fraction():
    assert peak_fraction(50.0, {"fp32": 200.0}, "fp32") == 0.25
    assert peak_fraction(50.0, {"fp32": 200.0}, "bf16") is None
    assert peak_fraction(None, {"fp32": 200.0}, "fp32") is None
    assert peak_fraction(50.0, {"fp32": None}, "fp32") is None


def test_unknown_dtype_is_refused():
    with pytest.raises(ValueError, match="unknown dtype 'fp8'"):
        matmul_peak("cpu", ("fp8",), n=16)
