"""The one "float32 inside autocast" helper (cinet.ops.autocast) and its users."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cinet.ops.autocast import float32_region, to_autocast_dtype, upcast_half


def test_float32_region_turns_bf16_autocast_off_on_cpu() -> None:
    x, w = torch.randn(1, 3, 8, 8), torch.randn(4, 3, 3, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert F.conv2d(x, w).dtype == torch.bfloat16  # the premise: autocast is on
        with float32_region("cpu"):
            assert not torch.is_autocast_enabled("cpu")
            assert F.conv2d(x, w).dtype == torch.float32
        assert torch.is_autocast_enabled("cpu")  # restored after the block


def test_float32_region_is_a_no_op_where_autocast_does_not_exist() -> None:
    # torch.autocast(device_type="meta", enabled=False) itself raises; the FLOP count runs the model on meta
    with pytest.raises(RuntimeError), torch.autocast(device_type="meta", enabled=False):
        pass
    x = torch.empty(2, 3, device="meta")
    with float32_region("meta"):
        y = x * 2
    assert y.shape == (2, 3)


@pytest.mark.parametrize(
    ("dtype", "expected"),
    [
        (torch.bfloat16, torch.float32),
        (torch.float16, torch.float32),
        (torch.float32, torch.float32),
        (torch.float64, torch.float64),
        (torch.int64, torch.int64),
    ],
)
def test_upcast_half(dtype: torch.dtype, expected: torch.dtype) -> None:
    assert upcast_half(torch.zeros(2, dtype=dtype)).dtype == expected


def test_to_autocast_dtype_follows_bmm() -> None:
    a, ids = torch.randn(1, 2, 2), torch.arange(2)
    assert [t.dtype for t in to_autocast_dtype(a, ids)] == [torch.float32, torch.int64]  # autocast off: kept
    with torch.autocast("cpu", dtype=torch.bfloat16):
        cast = to_autocast_dtype(a, ids)
        assert (
            [t.dtype for t in cast] == [torch.bmm(a, a).dtype, torch.int64] == [torch.bfloat16, torch.int64]
        )
