"""Helpers shared by the benchmarks: device choice, timing, peak memory, hardware description."""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

import torch

from cinet.errors import InputError
from cinet.utils.io import atomic_write_text
from cinet.utils.precision import cpu_model


def parse_choices(
    text: str | None,
    valid: Iterable[str],
    default: str,
    *,
    option: str = "--modes",
    required: str | None = None,
) -> list[str]:
    """The names of a comma-separated option (``--modes``, ``--impls``), each one of ``valid``; checked before any
    measurement.

    Args:
        text: The option's value (None or blank: ``default``).
        valid: The benchmark's names (rows, attention paths).
        default: The names when none are given.
        option: The option, first in the error line.
        required: A name the benchmark cannot do without (the reference of its ratios), or None.

    Returns:
        The names, in the given order, without repeats.

    Raises:
        InputError: ``<option>: ...`` naming the unknown names (or the missing required one) and the valid ones.
    """
    valid = list(valid)
    names = list(dict.fromkeys(m.strip() for m in (text if text and text.strip() else default).split(",")))
    names = [m for m in names if m]
    unknown = [m for m in names if m not in valid]
    if unknown:
        raise InputError(
            f"{option}: unknown {', '.join(map(repr, unknown))}; choose among {', '.join(valid)}"
        )
    if required is not None and required not in names:
        raise InputError(
            f"{option}: {required!r} is required (the reference of the ratios), got {','.join(names)}"
        )
    return names


def check_cpu_only(device: str, benchmark: str) -> None:
    """A CPU-only benchmark (``inference``, ``encoders``) refuses any ``--device`` but ``cpu`` / ``auto``.

    Raises:
        InputError: ``--device: the <benchmark> benchmark runs on the CPU only (cpu), got 'cuda'``.
    """
    if device not in ("auto", "cpu"):
        raise InputError(f"--device: the {benchmark} benchmark runs on the CPU only (cpu), got {device!r}")


def parse_hw(text: str, option: str) -> tuple[int, int]:
    """``"480x640"`` -> ``(480, 640)``: a size option ``HxW`` in pixels, both >= 1.

    Raises:
        InputError: ``<option>: ...`` for anything else.
    """
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() and int(p) >= 1 for p in parts):
        raise InputError(f"{option}: {text!r} must be HxW in pixels, e.g. 480x640")
    return int(parts[0]), int(parts[1])


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(fn: Callable[[], Any], device: torch.device, repeat: int, warmup: int = 1) -> dict[str, float]:
    """Run ``fn`` ``warmup`` times, then ``repeat`` timed times; seconds per call (median, min, all)."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(max(1, repeat)):
        t0 = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(times), "min_s": min(times), "times_s": times}


def max_rss_bytes() -> int:
    """Peak resident set size of this process so far (``ru_maxrss`` is KiB on Linux)."""
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def available_ram_bytes() -> int:
    """``MemAvailable`` from ``/proc/meminfo`` (falls back to total physical memory)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def hardware(device: torch.device | None = None) -> dict[str, Any]:
    """What ran a benchmark or an ablation: CPU model and threads, GPU name(s), library versions.

    Args:
        device: The device that ran it; None: describe the machine (every CUDA GPU, comma-separated).

    Returns:
        ``{"cpu", "cpu_count", "torch_threads", "torch", "python", "platform"}`` plus ``"device"`` when
        ``device`` is given and ``"gpu"`` (a string) when a CUDA device ran / is present.
    """
    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    if device is not None:
        info["device"] = str(device)
        if device.type == "cuda":
            info["gpu"] = torch.cuda.get_device_name(device)
    elif torch.cuda.is_available():
        info["gpu"] = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
    return info


def run_json_subprocess(module: str, argv: list[str], timeout: float | None = None) -> dict[str, Any]:
    """Run ``python -m module argv...`` in a fresh interpreter and parse the JSON on its last stdout line."""
    proc = subprocess.run(
        [sys.executable, "-m", module, *argv], capture_output=True, text=True, timeout=timeout, check=False
    )
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        return {"error": f"worker exited with code {proc.returncode}", "stderr_tail": tail}
    return json.loads(lines[-1])


def emit(result: dict[str, Any], out: str | None = None) -> None:
    """Print ``result`` as JSON on stdout (and write it to ``out`` when given)."""
    text = json.dumps(result, indent=2)
    print(text)
    if out:
        atomic_write_text(out, text + "\n")
