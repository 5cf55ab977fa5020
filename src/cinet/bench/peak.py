"""This machine's measured matrix-multiply peak, per dtype, so every bench row can say how close to it it runs.

A short probe in the same process as the rows it is compared with (these machines are noisy: a peak measured
an hour earlier says little): the best of a few square matmuls, ``2 n^3`` operations each. int8 uses
``torch._int_mm`` (PyTorch's int8 x int8 -> int32 GEMM; oneDNN / AMX-INT8 or VNNI on x86 CPUs).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import torch

__all__ = ["PEAK_DTYPES", "add_peak_fractions", "matmul_peak", "peak_fraction"]

#: Probe dtypes: name -> torch dtype.
PEAK_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16, "int8": torch.int8}
#: Other spellings of the probe dtypes that bench rows use.
DTYPE_ALIASES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}


def _default_side(device: torch.device) -> int:
    """Side of the probe's square matrices: large enough to reach the device's matmul rate."""
    return 8192 if device.type == "cuda" else 2048


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(
    device: torch.device | str = "cpu",
    dtypes: Iterable[str] = ("fp32", "bf16"),
    *,
    n: int | None = None,
    repeat: int = 3,
) -> dict[str, float | None]:
    """Measured matmul throughput of this device per dtype (the denominator of ``peak_fraction``).

    Args:
        device: Where to measure.
        dtypes: Names among :data:`PEAK_DTYPES`.
        n: Side of the square matrices (default 2048 on a CPU, 8192 on a GPU).
        repeat: Timed matmuls per dtype after one warm-up; the fastest counts.

    Returns:
        ``{dtype: operations per second}`` (FLOP/s; int8: integer OP/s), ``None`` for a dtype this device
        cannot multiply.

    Raises:
        ValueError: An unknown dtype name.
    """
    device = torch.device(device)
    n = n or _default_side(device)
    out: dict[str, float | None] = {}
    for name in dtypes:
        if name not in PEAK_DTYPES:
            raise ValueError(f"unknown dtype {name!r}; valid: {', '.join(PEAK_DTYPES)}")
        dtype = PEAK_DTYPES[name]
        if dtype == torch.int8:
            a = torch.randint(-64, 64, (n, n), dtype=dtype, device=device)
            b = torch.randint(-64, 64, (n, n), dtype=dtype, device=device)

            def mm(a: torch.Tensor = a, b: torch.Tensor = b) -> torch.Tensor:
                return torch._int_mm(a, b)

        else:
            a = torch.randn(n, n, dtype=dtype, device=device)
            b = torch.randn(n, n, dtype=dtype, device=device)

            def mm(a: torch.Tensor = a, b: torch.Tensor = b) -> torch.Tensor:
                return a @ b

        try:
            mm()
        except (RuntimeError, NotImplementedError):
            out[name] = None
            continue
        best = float("inf")
        for _ in range(max(1, repeat)):
            _synchronize(device)
            t0 = time.perf_counter()
            mm()
            _synchronize(device)
            best = min(best, time.perf_counter() - t0)
        out[name] = 2.0 * n**3 / best
    return out


def peak_fraction(achieved: float | None, peak: dict[str, Any], dtype: str) -> float | None:
    """``achieved / peak[dtype]`` to 3 significant digits; None when either is unknown.

    Args:
        achieved: Achieved operations per second of a bench row.
        peak: :func:`matmul_peak`'s result.
        dtype: The row's compute dtype (``fp32``, ``bf16``, ``int8``).
    """
    ref = peak.get(dtype)
    if not achieved or not ref:
        return None
    return float(f"{achieved / ref:.3g}")


def add_peak_fractions(entries: list[dict[str, Any]], device: torch.device | str) -> dict[str, Any]:
    """Measure the peak of every dtype the entries use and add ``fraction_of_peak`` to each entry.

    Args:
        entries: Bench rows (or the per-path dicts of a row) with ``achieved_flops_per_s`` and ``dtype``
            (a :data:`PEAK_DTYPES` name or ``float32``/``bfloat16``/``float16``); others are left as they are.
        device: The device the rows ran on.

    Returns:
        ``{"peak_flops_per_s": {dtype: value or None}, "peak_method": str}`` for the benchmark's result.
    """
    measured = [e for e in entries if e.get("achieved_flops_per_s") and e.get("dtype")]
    dtypes = sorted({DTYPE_ALIASES.get(e["dtype"], e["dtype"]) for e in measured} & set(PEAK_DTYPES))
    peak = matmul_peak(device, dtypes) if dtypes else {}
    for e in measured:
        e["fraction_of_peak"] = peak_fraction(
            e["achieved_flops_per_s"], peak, DTYPE_ALIASES.get(e["dtype"], e["dtype"])
        )
    n = _default_side(torch.device(device))
    return {
        "peak_flops_per_s": peak,
        "peak_method": f"best of 3 square {n}x{n} matmuls per dtype (int8: torch._int_mm), in this run",
    }
