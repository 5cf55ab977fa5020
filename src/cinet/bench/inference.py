"""Inference benchmark: images/s of eager PyTorch vs onnxruntime (CPU) for the same CI-Net and input size.

The model is exported with :func:`cinet.inference.export.export_onnx` (the SUM exports its naive attention
path; eager PyTorch uses ``attention_impl``, ``auto`` by default). Both run on the CPU with their default
thread pools; the JSON records the thread counts and the largest output difference (a sanity check that both
ran the same network).

Rows (``--modes``): ``eager`` (PyTorch fp32), ``onnxruntime`` (fp32), ``int8`` (the same file quantized by
:func:`cinet.inference.quantize.quantize_int8`, calibrated on ``--num-calib`` random normalised inputs: this
row measures speed only, accuracy is checked by ``cinet export --quantize int8`` on real images) and
``bf16`` (eager PyTorch under ``torch.autocast("cpu", torch.bfloat16)``; onnxruntime's CPU provider has no
bf16 convolution kernels, so there is no onnxruntime bf16 row).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cinet.bench.common import check_cpu_only, hardware, parse_choices, time_calls
from cinet.bench.encoders import forward_flops
from cinet.bench.peak import add_peak_fractions
from cinet.bench.train_step import build, model_settings
from cinet.inference.export import export_onnx
from cinet.inference.quantize import parse_keep_float, quantize_int8
from cinet.inference.runtime import agreement


def _export(model: torch.nn.Module, path: Path, height: int, width: int, dynamic: bool) -> str:
    """Export with the project's exporter; returns how."""

    export_onnx(model, path, height=height, width=width, dynamic=dynamic)
    return "cinet.inference.export.export_onnx"


MODES = ("eager", "onnxruntime", "int8", "bf16")


def _output_gap(ref: tuple[np.ndarray, np.ndarray], out: tuple[np.ndarray, np.ndarray]) -> dict[str, float]:
    """How far ``out`` (depth, logits) is from ``ref``: the runtime parity check's numbers
    (:func:`cinet.inference.runtime.agreement`: mean relative depth difference, label agreement)."""
    agr = agreement(*(torch.from_numpy(np.asarray(a)) for a in (*out, *ref)))
    return {"depth_mean_rel_diff": agr.depth_rel_diff, "label_agreement": 1.0 - agr.label_disagreement}


#: Compute dtype of each runtime row (the matmul peak it is compared with; int8 rows: integer OP/s).
RUNTIME_DTYPES = {
    "pytorch-eager": "fp32",
    "pytorch-eager-bf16": "bf16",
    "onnxruntime": "fp32",
    "int8": "int8",
}


def run_inference(args: argparse.Namespace) -> dict[str, Any]:
    """Benchmark eager vs onnxruntime (fp32, INT8) on CPU; JSON-ready dict."""
    import onnxruntime as ort

    device = torch.device("cpu")
    check_cpu_only(args.device, "inference")
    modes = parse_choices(
        getattr(args, "modes", None), MODES, "eager,onnxruntime,int8", required="onnxruntime"
    )
    settings = model_settings(args, device)
    bsz, h, w = settings["batch_size"], settings["height"], settings["width"]
    torch.manual_seed(0)
    model = build(settings).eval()
    images = torch.randn(bsz, 3, h, w, generator=torch.Generator().manual_seed(0))

    def eager() -> tuple[torch.Tensor, torch.Tensor]:
        with torch.inference_mode():
            out = model(images)
        return out.depth, out.seg_logits

    def eager_bf16() -> tuple[torch.Tensor, torch.Tensor]:
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(images)
        return out.depth, out.seg_logits

    rows: list[dict[str, Any]] = []
    ref: tuple[np.ndarray, np.ndarray] | None = None
    for mode, fn, label in (("eager", eager, "pytorch-eager"), ("bf16", eager_bf16, "pytorch-eager-bf16")):
        if mode in modes:
            t = time_calls(fn, device, args.repeat, args.warmup)
            d, s = fn()
            out = (d.float().numpy(), s.float().numpy())
            row = {"runtime": label, "step_s": t["median_s"], "min_s": t["min_s"], "times_s": t["times_s"],
                   "images_per_s": bsz / t["median_s"]}  # fmt: skip
            if ref is not None:
                row.update(_output_gap(ref, out))
            ref = ref or out
            rows.append(row)

    with tempfile.TemporaryDirectory(prefix="cinet-bench-") as tmp:
        path = Path(args.onnx) if args.onnx else Path(tmp) / "model.onnx"
        exporter = "existing file"
        if not (args.onnx and path.is_file()):
            exporter = _export(model, path, h, w, dynamic=bsz != 1)
        onnx_bytes = {"onnxruntime": path.stat().st_size}
        paths = {"onnxruntime": path}
        if "int8" in modes:
            paths["int8"] = Path(tmp) / "model.int8.onnx"
            gen = torch.Generator().manual_seed(1)
            calib = [torch.randn(bsz, 3, h, w, generator=gen).numpy() for _ in range(args.num_calib)]
            keep = parse_keep_float(getattr(args, "int8_keep_float", None))
            quantize_int8(
                path, paths["int8"], calib, keep_float=keep, calibration_source="random normal inputs"
            )
            onnx_bytes["int8"] = paths["int8"].stat().st_size
        sessions = {k: ort.InferenceSession(str(p), ort.SessionOptions(), providers=["CPUExecutionProvider"])
                    for k, p in paths.items()}  # fmt: skip
        feed = {sessions["onnxruntime"].get_inputs()[0].name: images.numpy()}
        timed = _time_interleaved({k: (lambda s=s: s.run(None, feed)) for k, s in sessions.items()}, args)
        outs = {k: tuple(s.run(None, feed)[:2]) for k, s in sessions.items()}
    for key, t in timed.items():
        row = {"runtime": key, "step_s": t["median_s"], "min_s": t["min_s"], "times_s": t["times_s"],
               "images_per_s": bsz / t["median_s"], "provider": "CPUExecutionProvider",
               "onnxruntime": ort.__version__, "onnx_bytes": onnx_bytes[key]}  # fmt: skip
        if key == "int8":
            row["keep_float"] = list(keep)
            row["num_calib"] = args.num_calib
        if ref is not None or key == "int8":
            row.update(_output_gap(ref if ref is not None else outs["onnxruntime"], outs[key]))
        rows.append(row)
    flops = forward_flops(model, h, w) * bsz  # FlopCounterMode, the naive attention path
    for row in rows:
        row["dtype"] = RUNTIME_DTYPES[row["runtime"]]
        row["achieved_flops_per_s"] = flops / row["step_s"]
    peak_info = add_peak_fractions(rows, device)
    by = {r["runtime"]: r for r in rows}
    result: dict[str, Any] = {
        "benchmark": "inference",
        "what": "forward only (depth + segmentation), CPU; rows: " + ", ".join(modes),
        "settings": {k: list(v) if isinstance(v, tuple) else v for k, v in settings.items()},
        "exporter": exporter,
        "onnx_bytes": onnx_bytes["onnxruntime"],
        "timing": f"median of {args.repeat} calls after {args.warmup} warm-up; onnxruntime rows interleaved",
        "hardware": {**hardware(device), "onnxruntime_threads": "default (physical cores)"},
        "forward_flops": flops,
        **peak_info,
        "rows": rows,
    }
    if "pytorch-eager" in by:
        d, s = outs["onnxruntime"]
        result["max_abs_output_diff"] = max(float(np.abs(d - ref[0]).max()), float(np.abs(s - ref[1]).max()))
        result["speedup_onnxruntime_over_eager"] = by["pytorch-eager"]["step_s"] / by["onnxruntime"]["step_s"]
    if "int8" in by:
        result["speedup_int8_over_onnxruntime"] = by["onnxruntime"]["step_s"] / by["int8"]["step_s"]
        result["speedup_int8_over_onnxruntime_min"] = by["onnxruntime"]["min_s"] / by["int8"]["min_s"]
    if "pytorch-eager-bf16" in by and "pytorch-eager" in by:
        result["speedup_bf16_over_eager"] = by["pytorch-eager"]["step_s"] / by["pytorch-eager-bf16"]["step_s"]
    return result


def _time_interleaved(fns: dict[str, Any], args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Time several calls in turn (a, b, a, b, ...) so that a busy CPU slows them alike; as ``time_calls``."""
    import statistics
    import time

    for fn in fns.values():
        for _ in range(args.warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(max(1, args.repeat)):
        for key, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - t0)
    return {k: {"median_s": statistics.median(v), "min_s": min(v), "times_s": v} for k, v in times.items()}
