"""Attention benchmark: peak memory and time of forward + backward of the SUM product (Eq. 1–2) and the
attention BCE (Eq. 4), naive vs memory-efficient paths, side by side.

One measurement = ``loss = attention_bce(Q, K, labels) + sum(G * sigmoid(Q K^T) V / N)`` then ``backward()``
(G a fixed random upstream gradient), with Q, K [B,N,D], V [B,N,C] requiring gradients.

Peak memory, stated in the JSON (``memory_method``):

* CUDA: ``torch.cuda.max_memory_allocated()`` minus the allocation after the inputs exist (one process,
  peak statistics reset between measurements).
* CPU: every measurement runs in a fresh ``python -m cinet.bench.attention --worker`` subprocess and reports
  ``ru_maxrss`` (peak RSS) minus the peak RSS right after the inputs are allocated; so it counts every
  byte touched by the step (autograd buffers, temporaries, allocator slack), not just tensors. A tiny step
  runs before the baseline so that one-off library initialisation is not counted. A second, allocator-
  independent figure ``tensor_peak_bytes`` comes from one more step under ``torch.profiler`` with
  ``profile_memory=True`` (peak of the live-tensor counter).

Each row also gives ``tflops``: the useful floating-point operations of the step
(:func:`step_flops`, the products the naive path computes, no recomputation counted) over the median time.
``--dtypes`` repeats every size per input dtype (bf16 / fp16: Q, K, V and the upstream gradient in that dtype,
as under autocast).

A naive measurement that would not fit (estimate ``NAIVE_BYTES_PER_MAP_ELEMENT * B N^2`` vs 80% of the
available RAM / free GPU memory) is skipped with the reason, and the tiled one runs alone.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
from collections.abc import Callable
from typing import Any

import torch

from cinet.bench.common import (
    available_ram_bytes,
    hardware,
    max_rss_bytes,
    run_json_subprocess,
    synchronize,
    time_calls,
)
from cinet.bench.peak import add_peak_fractions
from cinet.ops import attention_bce, resolve_impl, sigmoid_attention
from cinet.utils.device import resolve_device

DEFAULT_SIZES = "8x4800x512x64,2x8192x512x64,1x32768x512x64"
TINY_SIZES = "2x300x32x16"
#: The attention paths the benchmark can time (`--impls`; `auto` picks one of them).
IMPLS = ("naive", "tiled", "triton")
# Bytes of peak memory per element of the B x N x N map for naive forward + backward (SUM product + BCE),
# measured on CPU (peak RSS, B=8, N=4800): about 25 bytes (6 float32 maps + masks); 32 leaves a margin.
# Used only to decide whether the naive path fits.
NAIVE_BYTES_PER_MAP_ELEMENT = 32
FIT_FRACTION = 0.8


def parse_sizes(text: str) -> list[tuple[int, int, int, int]]:
    """``"BxNxCxD,..."`` -> [(B, N, C, D), ...]."""
    sizes = []
    for item in text.split(","):
        try:
            parts = [int(p) for p in item.strip().lower().split("x")]
        except ValueError:
            parts = []
        if len(parts) != 4 or min(parts) < 1:
            raise ValueError(f"--sizes: {item!r} must be BxNxCxD with positive integers")
        sizes.append((parts[0], parts[1], parts[2], parts[3]))
    return sizes


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def parse_dtypes(text: str) -> list[str]:
    """``"float32,bfloat16"`` -> ["float32", "bfloat16"]; raises ValueError naming an unknown dtype."""
    names = [t.strip() for t in text.split(",") if t.strip()]
    for name in names:
        if name not in DTYPES:
            raise ValueError(f"--dtypes: {name!r} not in {', '.join(DTYPES)}")
    return names


def step_flops(b: int, n: int, c: int, d: int) -> int:
    """Useful FLOPs of one forward + backward of the benchmarked step.

    Forward: ``Q K^T`` (2 B N^2 D) and ``sigmoid(.) V`` (2 B N^2 C) for the SUM product, ``Q K^T`` again
    (2 B N^2 D) for the BCE; backward: twice the forward (each product gives two gradient products).
    Total ``6 B N^2 (2 D + C)``; elementwise work (sigmoid, BCE) is not counted.
    """
    return 6 * b * n * n * (2 * d + c)


def estimate_naive_bytes(b: int, n: int, c: int, d: int) -> int:
    """Rough peak of the naive forward + backward: the N x N maps dominate."""
    return NAIVE_BYTES_PER_MAP_ELEMENT * b * n * n + 4 * 4 * b * n * (c + d)


def _inputs(
    b: int, n: int, c: int, d: int, device: torch.device, dtype: torch.dtype = torch.float32
) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    q = (torch.randn(b, n, d, generator=g) / d**0.5).to(device, dtype).requires_grad_()  # [B,N,D]
    k = torch.randn(b, n, d, generator=g).to(device, dtype).requires_grad_()  # [B,N,D]
    v = torch.randn(b, n, c, generator=g).to(device, dtype).requires_grad_()  # [B,N,C]
    upstream = torch.randn(b, n, c, generator=g).to(device, dtype)  # [B,N,C]
    labels = torch.randint(0, 13, (b, n), generator=g)
    labels[torch.rand(b, n, generator=g) < 0.1] = 255
    return {"q": q, "k": k, "v": v, "g": upstream, "labels": labels.to(device)}


def _step(impl: str, x: dict[str, torch.Tensor], tile: int | None) -> None:

    q, k, v = x["q"], x["k"], x["v"]
    for t in (q, k, v):
        t.grad = None
    y = sigmoid_attention(q, k, v, scale=1.0 / q.shape[1], impl=impl, tile_size=tile)  # [B,N,C]
    loss = attention_bce(q, k, x["labels"], ignore_index=255, impl=impl, tile_size=tile) + (y * x["g"]).sum()
    loss.backward()


def measure(
    impl: str,
    b: int,
    n: int,
    c: int,
    d: int,
    device: torch.device,
    repeat: int,
    warmup: int,
    tile: int | None,
    dtype: str = "float32",
) -> dict[str, Any]:
    """Time and peak memory of one forward + backward for ``impl`` (in this process)."""

    torch_dtype = DTYPES[dtype]
    _step(impl, _inputs(1, 64, 16, 16, device, torch_dtype), tile)  # initialise libraries before the baseline
    x = _inputs(b, n, c, d, device, torch_dtype)
    q = x["q"]

    def step() -> None:
        _step(impl, x, tile)

    gc.collect()
    synchronize(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    else:
        base = max_rss_bytes()
    timing = time_calls(step, device, repeat, warmup)
    peak = (torch.cuda.max_memory_allocated(device) if device.type == "cuda" else max_rss_bytes()) - base
    achieved = step_flops(b, n, c, d) / max(timing["median_s"], 1e-12)
    result = {
        "impl": impl,
        "resolved_impl": resolve_impl(impl, device, n, dtype=q.dtype, head_dim=d),
        "peak_bytes": int(peak),
        "peak_mib": round(peak / 2**20, 1),
        **{key: val for key, val in timing.items()},
        "achieved_flops_per_s": achieved,
        "tflops": float(f"{achieved / 1e12:.4g}"),
        "dtype": dtype,
    }
    if device.type == "cpu":  # allocator-independent second figure (after the RSS measurement)
        tensor_peak = tensor_peak_bytes(step)
        result.update({"tensor_peak_bytes": tensor_peak, "tensor_peak_mib": round(tensor_peak / 2**20, 1)})
    return result


def tensor_peak_bytes(fn: Callable[[], None]) -> int:
    """Peak of live tensor bytes allocated during ``fn()`` (CPU): ``torch.profiler`` with
    ``profile_memory=True``, maximum of the ``Total Allocated`` counter of its memory events (0 at the start)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    with tempfile.TemporaryDirectory(prefix="cinet-bench-") as tmp:
        path = os.path.join(tmp, "trace.json")
        prof.export_chrome_trace(path)
        with open(path) as f:
            events = json.load(f)["traceEvents"]
    totals = [
        e["args"]["Total Allocated"]
        for e in events
        if e.get("name") == "[memory]" and "Total Allocated" in e.get("args", {})
    ]
    return int(max([0, *totals]))


def _measure_fresh(
    impl: str,
    size: tuple[int, int, int, int],
    device: torch.device,
    repeat: int,
    warmup: int,
    tile: int | None,
    dtype: str = "float32",
) -> dict[str, Any]:
    if device.type == "cuda":
        return measure(impl, *size, device, repeat, warmup, tile, dtype)
    spec = {
        "dtype": dtype,
        "impl": impl,
        "size": list(size),
        "device": str(device),
        "repeat": repeat,
        "warmup": warmup,
        "tile": tile,
    }
    return run_json_subprocess("cinet.bench.attention", ["--worker", json.dumps(spec)])


def run_attention(
    sizes: str = DEFAULT_SIZES,
    device: str = "auto",
    repeat: int = 3,
    warmup: int = 1,
    impls: str | None = None,
    tile: int | None = None,
    *,
    dtypes: str = "float32",
) -> dict[str, Any]:
    """Benchmark every size (and input dtype); returns the JSON-ready result (see module docstring).

    Raises:
        ValueError: A malformed size or an unknown dtype.
    """
    dtype_names = parse_dtypes(dtypes)
    dev = resolve_device(device)
    names = (impls or ("naive,tiled,triton" if dev.type == "cuda" else "naive,tiled")).split(",")
    if dev.type == "cuda":
        budget = int(torch.cuda.mem_get_info(dev)[0] * FIT_FRACTION)
        method = "torch.cuda.max_memory_allocated minus allocated after inputs; one process"
    else:
        budget = int(available_ram_bytes() * FIT_FRACTION)
        method = (
            "peak RSS (getrusage ru_maxrss) minus peak RSS after inputs are allocated; fresh subprocess each"
        )
    rows = []
    for size, dtype in [(size, dt) for size in parse_sizes(sizes) for dt in dtype_names]:
        b, n, c, d = size
        row: dict[str, Any] = {
            "dtype": dtype,
            "B": b,
            "N": n,
            "C": c,
            "D": d,
            "estimated_naive_bytes": estimate_naive_bytes(*size),
        }
        for impl in names:
            if impl == "naive" and row["estimated_naive_bytes"] > budget:
                row[impl] = {"skipped": f"estimated {row['estimated_naive_bytes'] / 2**30:.1f} GiB > budget "
                             f"{budget / 2**30:.1f} GiB ({FIT_FRACTION:.0%} of available memory)"}  # fmt: skip
                continue
            row[impl] = _measure_fresh(impl, size, dev, repeat, warmup, tile, dtype)
        naive = row.get("naive", {})
        for impl in names:
            other = row.get(impl, {})
            if impl == "naive" or "peak_bytes" not in naive or "peak_bytes" not in other:
                continue
            row[f"memory_ratio_naive_over_{impl}"] = round(
                naive["peak_bytes"] / max(other["peak_bytes"], 1), 2
            )
            row[f"time_ratio_naive_over_{impl}"] = round(naive["median_s"] / max(other["median_s"], 1e-9), 3)
            row[f"min_time_ratio_naive_over_{impl}"] = round(naive["min_s"] / max(other["min_s"], 1e-9), 3)
            if "tensor_peak_bytes" in naive and "tensor_peak_bytes" in other:
                ratio = naive["tensor_peak_bytes"] / max(other["tensor_peak_bytes"], 1)
                row[f"tensor_memory_ratio_naive_over_{impl}"] = round(ratio, 2)
        rows.append(row)
    paths = [row[impl] for row in rows for impl in names if isinstance(row.get(impl), dict)]
    peak_info = add_peak_fractions(paths, dev)
    return {
        "benchmark": "attention",
        "what": "forward+backward of sigmoid(QK^T)V/N (SUM, Eq. 1-2) + attention BCE (Eq. 4)",
        "memory_method": method,
        "timing": f"median (and min) of {repeat} runs after {warmup} warm-up; wall clock",
        "tile": tile,
        "hardware": hardware(dev),
        **peak_info,
        "results": rows,
    }


def _worker(spec_json: str) -> int:
    spec = json.loads(spec_json)
    result = measure(
        spec["impl"],
        *spec["size"],
        torch.device(spec["device"]),
        spec["repeat"],
        spec["warmup"],
        spec["tile"],
        spec.get("dtype", "float32"),
    )
    print(json.dumps(result))
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m cinet.bench.attention --worker SPEC`` (internal: one measurement in a fresh process)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--worker", required=True, help="JSON spec of one measurement")
    args = parser.parse_args(argv)
    return _worker(args.worker)


if __name__ == "__main__":
    sys.exit(main())
