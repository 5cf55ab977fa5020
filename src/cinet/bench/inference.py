"""Inference benchmark: images/s of eager PyTorch vs onnxruntime (CPU) for the same CI-Net and input size.

The model is exported with :func:`cinet.inference.export.export_onnx` (the SUM exports its naive attention
path; eager PyTorch uses ``attention_impl``, ``auto`` by default). Both run on the CPU with their default
thread pools; the JSON records the thread counts and the largest output difference (a sanity check that both
ran the same network).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cinet.bench.common import hardware, time_calls
from cinet.bench.train_step import build, model_settings


def _export(model: torch.nn.Module, path: Path, height: int, width: int, dynamic: bool) -> str:
    """Export with the project's exporter; returns how."""
    from cinet.inference.export import export_onnx

    export_onnx(model, path, height=height, width=width, dynamic=dynamic)
    return "cinet.inference.export.export_onnx"


def run_inference(args: argparse.Namespace) -> dict[str, Any]:
    """Benchmark eager vs onnxruntime on CPU; JSON-ready dict."""
    import onnxruntime as ort

    device = torch.device("cpu")
    if args.device not in ("auto", "cpu"):
        raise ValueError("the inference benchmark compares on CPU only (--device cpu)")
    settings = model_settings(args, device)
    bsz, h, w = settings["batch_size"], settings["height"], settings["width"]
    torch.manual_seed(0)
    model = build(settings).eval()
    images = torch.randn(bsz, 3, h, w, generator=torch.Generator().manual_seed(0))

    def eager() -> tuple[torch.Tensor, torch.Tensor]:
        with torch.inference_mode():
            out = model(images)
        return out.depth, out.seg_logits

    eager_t = time_calls(eager, device, args.repeat, args.warmup)
    depth_ref, seg_ref = eager()

    with tempfile.TemporaryDirectory(prefix="cinet-bench-") as tmp:
        path = Path(args.onnx) if args.onnx else Path(tmp) / "model.onnx"
        exporter = "existing file"
        if not (args.onnx and path.is_file()):
            exporter = _export(model, path, h, w, dynamic=bsz != 1)
        opts = ort.SessionOptions()
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        feed = {name: images.numpy()}
        ort_t = time_calls(lambda: session.run(None, feed), device, args.repeat, args.warmup)
        depth_ort, seg_ort = session.run(None, feed)[:2]
        onnx_bytes = path.stat().st_size
    max_diff = max(
        float(np.abs(depth_ort - depth_ref.numpy()).max()), float(np.abs(seg_ort - seg_ref.numpy()).max())
    )
    rows = [
        {"runtime": "pytorch-eager", "step_s": eager_t["median_s"], "times_s": eager_t["times_s"],
         "images_per_s": bsz / eager_t["median_s"]},
        {"runtime": "onnxruntime", "step_s": ort_t["median_s"], "times_s": ort_t["times_s"],
         "images_per_s": bsz / ort_t["median_s"], "provider": "CPUExecutionProvider", "onnxruntime": ort.__version__},
    ]  # fmt: skip
    return {
        "benchmark": "inference",
        "what": "forward only (depth + segmentation), float32, CPU",
        "settings": {k: list(v) if isinstance(v, tuple) else v for k, v in settings.items()},
        "exporter": exporter,
        "onnx_bytes": onnx_bytes,
        "max_abs_output_diff": max_diff,
        "speedup_onnxruntime_over_eager": eager_t["median_s"] / ort_t["median_s"],
        "timing": f"median of {args.repeat} calls after {args.warmup} warm-up",
        "hardware": hardware(device),
        "rows": rows,
    }
