"""``precision: auto``: bf16 autocast where this machine's matrix units run it faster, float32 elsewhere.

The CPU's bf16 units are read from PyTorch's own CPU probe (``torch._C._cpu._get_cpu_capability()``, the cpuinfo
library PyTorch ships; ``/proc/cpuinfo`` flags when that probe is missing). The rule, and the measurements behind it
(docs/performance.md, "Precision"):

==========================================  ===============  =============================================
device                                      ``auto`` gives   measured (training step, bf16 vs float32)
==========================================  ===============  =============================================
CUDA with bf16 (Ampere and newer)           ``bf16-mixed``   Lightning's and PyTorch's standard choice
CUDA without bf16, MPS, other               ``32-true``
CPU with AMX-BF16 (Intel Sapphire Rapids+)  ``bf16-mixed``   Xeon with AMX, ResNet-18 96x128: 2.7x faster
CPU with AVX-512 BF16 (AMD Zen 4, Intel     ``bf16-mixed``   AMD EPYC (Zen 4), EfficientNet-Lite0 64x80 to
Cooper Lake)                                                 96x128: 1.5-1.7x faster; the demo's ResNet-18 1.6x
CPU with either, whose bf16 convolution     ``32-true``      an AMD EPYC (family 26) with AVX-512 BF16 ran
probe is not >= 1.1x faster                                  bf16 convolutions 100x slower (2026-11-30)
CPU without either                          ``32-true``      bf16 is emulated there: slower than float32
==========================================  ===============  =============================================

On a CPU with bf16 units the flags are not enough: PyTorch runs a bf16 convolution through oneDNN only where its
own checks pass, else through a slow reference path. So ``auto`` also measures (:func:`cpu_bf16_speedup`: one
convolution step, float32 against bf16 autocast, ~0.1 s once per process) and keeps float32 unless bf16 is at least
:data:`MIN_BF16_SPEEDUP` times faster; the measured ratio is said in the reason line (and ``precision.json``).

Only the training precision is chosen here (test evaluation under ``auto`` stays float32, so metrics compare
across machines); inference picks its runtime by the same bf16 rule, with a first-batch parity check
(:mod:`cinet.inference.runtime`).
"""

from __future__ import annotations

import functools
import os
import platform
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

__all__ = [
    "MIN_BF16_SPEEDUP",
    "PrecisionChoice",
    "cpu_bf16_speedup",
    "cpu_features",
    "cpu_model",
    "cuda_runs_bf16",
    "resolve_precision",
]

#: CPU feature names (PyTorch's cpuinfo probe; the same names as Linux's ``/proc/cpuinfo`` flags).
BF16_MATRIX_FEATURES = ("amx_bf16", "avx512_bf16")
#: ``auto`` picks bf16 on a CPU only where :func:`cpu_bf16_speedup` is at least this.
MIN_BF16_SPEEDUP = 1.1
#: Environment variable holding this machine's measured :func:`cpu_bf16_speedup`: set by the first measurement,
#: read by the processes it starts (DDP workers decide as the launcher did); set it to skip the measurement.
BF16_SPEEDUP_ENV = "CINET_CPU_BF16_SPEEDUP"


@dataclass(frozen=True)
class PrecisionChoice:
    """A resolved Lightning precision and why.

    Attributes:
        precision: Lightning's precision string (``32-true``, ``bf16-mixed``, ...).
        reason: One line for the run's log and ``precision.json`` (what the probe found).
    """

    precision: str
    reason: str


def cpu_features() -> dict[str, bool]:
    """This CPU's instruction-set features that decide the precision and the inference runtime.

    Returns:
        ``{"amx_bf16", "amx_int8", "avx512_bf16", "avx512_vnni", "avx512_f": bool, "cpu_name": str}``; every
        flag False where neither probe answers (non-x86 CPUs, other systems).
    """
    names = ("amx_bf16", "amx_int8", "avx512_bf16", "avx512_vnni", "avx512_f")
    probe = getattr(getattr(torch._C, "_cpu", None), "_get_cpu_capability", None)
    caps: Mapping[str, object] = {}
    if probe is not None:
        try:
            caps = probe()
        except (RuntimeError, TypeError):  # pragma: no cover - depends on the PyTorch build
            caps = {}
    if not caps:
        flags = set(_proc_cpuinfo("flags").split())
        linux_name = {"avx512_f": "avx512f"}  # the other four are spelled alike in both probes
        caps = {name: linux_name.get(name, name) in flags for name in names}
    features: dict[str, bool] = {name: bool(caps.get(name, False)) for name in names}
    features["cpu_name"] = str(caps.get("cpu_name", "")) or cpu_model()  # type: ignore[assignment]
    return features


def _proc_cpuinfo(field: str) -> str:
    """The value of the first ``field`` line of Linux's ``/proc/cpuinfo`` ("" elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(field):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``; ``platform.processor()`` elsewhere)."""
    return _proc_cpuinfo("model name") or platform.processor() or platform.machine() or "unknown"


def cuda_runs_bf16(device: torch.device | int | None = None) -> bool:
    """Whether a CUDA device runs bf16 natively: compute capability 8.0 or newer (Ampere+).
    ``torch.cuda.is_bf16_supported()`` also counts emulation (True on a V100 or T4), hence not used.

    Args:
        device: The device (None: the current one).
    """
    return torch.cuda.is_available() and torch.cuda.get_device_capability(device)[0] >= 8


def _conv_step_seconds(bf16: bool, repeats: int, give_up_s: float) -> float:
    """The fastest of ``repeats`` forward + backward passes of one 3x3 convolution (64 -> 64 channels, batch 8,
    24x32: a layer of the demo's network), under bf16 autocast or in float32; stops at a pass over ``give_up_s``."""
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(0)  # never the global generator: the probe may run after seeding
    x = torch.randn(8, 64, 24, 32, generator=g).requires_grad_()
    w = (torch.randn(64, 64, 3, 3, generator=g) * 0.05).requires_grad_()
    times: list[float] = []
    for i in range(repeats + 1):  # the first pass creates oneDNN's primitives: not timed
        t = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            y = F.conv2d(x, w, padding=1)
        y.float().square().mean().backward()
        elapsed = time.perf_counter() - t
        if i > 0:
            times.append(elapsed)
        if elapsed > give_up_s:
            break
    return min(times) if times else elapsed


@functools.lru_cache(maxsize=1)
def cpu_bf16_speedup(repeats: int = 5) -> float:
    """How many times faster one convolution step runs on this CPU under bf16 autocast than in float32.

    The fastest of ``repeats`` timed passes each way, on one thread (min of one thread: robust to other jobs on
    the machine, where two threads' timings were 10x off), ~0.15 s; AMD EPYC Zen 4: 1.5-1.7x, idle or beside two
    training runs. A CPU whose bf16 convolutions take PyTorch's slow reference path gives far below 1, found
    within a second (a bf16 pass 20x slower than float32 ends the measurement). Cached per process and kept in the ``CINET_CPU_BF16_SPEEDUP`` environment variable, which the
    processes this one starts (DDP workers) read instead of measuring again.

    Returns:
        float32 seconds / bf16 seconds (> 1: bf16 is faster).
    """
    known = os.environ.get(BF16_SPEEDUP_ENV)
    if known:
        try:
            return float(known)
        except ValueError:
            pass
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread: no OpenMP barrier waits on a busy machine (the ratio is per core)
    try:
        with torch.enable_grad():
            fp32 = _conv_step_seconds(False, repeats, give_up_s=float("inf"))
            bf16 = _conv_step_seconds(True, repeats, give_up_s=max(20 * fp32, 1e-3))
    finally:
        torch.set_num_threads(threads)
    speedup = fp32 / max(bf16, 1e-9)
    os.environ[BF16_SPEEDUP_ENV] = f"{speedup:.4g}"
    return speedup


def resolve_precision(
    precision: str,
    accelerator: str,
    *,
    features: Mapping[str, bool] | None = None,
    cuda_bf16: bool | None = None,
    bf16_speedup: float | Callable[[], float] | None = None,
) -> PrecisionChoice:
    """Turn ``trainer.precision`` into Lightning's precision string; ``auto`` picks per machine (table above).

    Args:
        precision: ``auto`` or a Lightning precision (``32``, ``32-true``, ``bf16-mixed``, ``16-mixed``, ...).
        accelerator: ``cpu``, ``gpu``/``cuda``, ``mps`` or ``auto`` (CUDA when available, else CPU).
        features: The CPU's features (:func:`cpu_features`); given in tests to stand for another CPU.
        cuda_bf16: Whether the CUDA device runs bf16 natively (:func:`cuda_runs_bf16`); given in tests.
        bf16_speedup: This CPU's bf16 speed-up (:func:`cpu_bf16_speedup`), or a function returning it, asked only
            when ``features`` has bf16 units. None: measured when ``features`` is None (this machine); with a
            stand-in ``features`` and no speed-up, the flags alone decide.

    Returns:
        The precision and one line saying why (``32`` becomes ``32-true``).
    """
    if precision != "auto":
        resolved = "32-true" if precision == "32" else precision
        return PrecisionChoice(resolved, f"{resolved} (set in the config)")
    kind = accelerator
    if kind == "auto":
        kind = "cuda" if torch.cuda.is_available() else "cpu"
    if kind in ("gpu", "cuda"):
        bf16 = cuda_bf16 if cuda_bf16 is not None else cuda_runs_bf16()
        if bf16:
            return PrecisionChoice("bf16-mixed", "auto: bf16-mixed (this CUDA device runs bf16)")
        return PrecisionChoice("32-true", "auto: 32-true (this CUDA device has no bf16)")
    if kind != "cpu":
        return PrecisionChoice("32-true", f"auto: 32-true (no bf16 rule for accelerator {kind!r})")
    feats = features if features is not None else cpu_features()
    units = [name for name in BF16_MATRIX_FEATURES if feats.get(name)]
    if not units:
        return PrecisionChoice("32-true", "auto: 32-true (the CPU has neither AMX-BF16 nor AVX-512 BF16)")
    has = f"the CPU has {', '.join(units)}"
    if bf16_speedup is None and features is None:
        bf16_speedup = cpu_bf16_speedup
    speedup = bf16_speedup() if callable(bf16_speedup) else bf16_speedup
    if speedup is None:
        return PrecisionChoice("bf16-mixed", f"auto: bf16-mixed ({has})")
    measured = f"a convolution step ran {speedup:.2f}x as fast in bf16 as in float32"
    if speedup < MIN_BF16_SPEEDUP:
        return PrecisionChoice("32-true", f"auto: 32-true ({has}, but {measured})")
    return PrecisionChoice("bf16-mixed", f"auto: bf16-mixed ({has}; {measured})")
