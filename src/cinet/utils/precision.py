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
Cooper Lake)                                                 96x128: 1.5-1.7x faster
CPU without either                          ``32-true``      bf16 is emulated there: slower than float32
==========================================  ===============  =============================================

Only the training precision is chosen here (test evaluation under ``auto`` stays float32, so metrics compare
across machines); inference picks its runtime by the same bf16 rule, with a first-batch parity check
(:mod:`cinet.inference.runtime`).
"""

from __future__ import annotations

import platform
from collections.abc import Mapping
from dataclasses import dataclass

import torch

__all__ = ["PrecisionChoice", "cpu_features", "cpu_model", "cuda_runs_bf16", "resolve_precision"]

#: CPU feature names (PyTorch's cpuinfo probe; the same names as Linux's ``/proc/cpuinfo`` flags).
BF16_MATRIX_FEATURES = ("amx_bf16", "avx512_bf16")


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


def resolve_precision(
    precision: str,
    accelerator: str,
    *,
    features: Mapping[str, bool] | None = None,
    cuda_bf16: bool | None = None,
) -> PrecisionChoice:
    """Turn ``trainer.precision`` into Lightning's precision string; ``auto`` picks per machine (table above).

    Args:
        precision: ``auto`` or a Lightning precision (``32``, ``32-true``, ``bf16-mixed``, ``16-mixed``, ...).
        accelerator: ``cpu``, ``gpu``/``cuda``, ``mps`` or ``auto`` (CUDA when available, else CPU).
        features: The CPU's features (:func:`cpu_features`); given in tests to stand for another CPU.
        cuda_bf16: Whether the CUDA device runs bf16 natively (:func:`cuda_runs_bf16`); given in tests.

    Returns:
        The precision and one line saying why (``32`` and ``64`` become ``32-true`` / ``64-true``).
    """
    if precision != "auto":
        resolved = f"{precision}-true" if precision in ("32", "64") else precision
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
    if units:
        return PrecisionChoice("bf16-mixed", f"auto: bf16-mixed (the CPU has {', '.join(units)})")
    return PrecisionChoice("32-true", "auto: 32-true (the CPU has neither AMX-BF16 nor AVX-512 BF16)")
