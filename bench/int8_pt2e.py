"""PyTorch's own x86 INT8 path (PT2E static quantization with torchao's X86InductorQuantizer, lowered by
``torch.compile``: oneDNN int8 kernels, AMX-INT8 / AVX-512 VNNI) against onnxruntime's QDQ INT8 (``cinet export
--quantize int8``) and the float paths, on a trained checkpoint: accuracy on held-out images and time per image.

Issue #27 item 4's experiment; not a cinet command (needs ``pip install torchao`` and a C++ compiler for
Inductor). Usage::

    cinet export --checkpoint runs/demo/last.ckpt --onnx /tmp/demo.onnx --quantize int8
    python bench/int8_pt2e.py --checkpoint runs/demo/last.ckpt --onnx-int8 /tmp/demo.int8.onnx > pt2e.json

Prints one JSON: the metrics of every path on the checkpoint's test images (the protocol of ``cinet eval``), and
the median seconds per image of each path at the given sizes, timed in turn (a, b, c, ... repeated) so that a
busy CPU slows every path alike.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--onnx", default=None, help="the float32 ONNX file of the checkpoint (optional row)")
    p.add_argument("--onnx-int8", default=None, help="its INT8 file from cinet export --quantize int8")
    p.add_argument("--num-calib", type=int, default=16, help="calibration images of the training split")
    p.add_argument("--num-eval", type=int, default=40, help="held-out test images")
    p.add_argument("--sizes", default="96x128,240x320", help="timed input sizes HxW")
    p.add_argument("--repeat", type=int, default=10)
    args = p.parse_args()

    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
        X86InductorQuantizer,
        get_default_x86_inductor_quantization_config,
    )

    from cinet.bench.common import hardware
    from cinet.build.builders import build_protocol
    from cinet.build.data import build_dataset, dataset_info_from_config
    from cinet.checkpoint import load_model
    from cinet.config import load_config
    from cinet.inference.export import ExportWrapper, OnnxRunner, exportable_copy
    from cinet.inference.quantize import compare_accuracy, spread_indices

    model, payload = load_model(args.checkpoint)
    cfg = load_config(None, base=payload.config)
    mean, std = model.input_mean, model.input_std
    info = dataset_info_from_config(cfg.data)
    train = build_dataset(cfg.data, cfg.data.train_split, train=False, mean=mean, std=std)
    test = build_dataset(cfg.data, cfg.data.test_split, train=False, mean=mean, std=std)
    calib = [train[i]["image"].unsqueeze(0).float() for i in spread_indices(len(train), args.num_calib)]
    fp32 = ExportWrapper(exportable_copy(model)).eval()

    # A Conv2d module called more than once in the graph forms one source partition with several outputs, which
    # the x86 quantizer's fusion patterns (conv + add + relu, ...) refuse with a ValueError: leave those convs out
    # of the fused patterns (they are still quantized alone).
    import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as x86q

    def single_output_partitions(*a: object, **k: object) -> list:
        return [f for f in _find(*a, **k) if all(len(p.output_nodes) == 1 for p in f)]

    _find = x86q.find_sequential_partitions
    x86q.find_sequential_partitions = single_output_partitions

    def quantize(example: torch.Tensor) -> tuple[torch.nn.Module, float]:
        t0 = time.perf_counter()
        exported = torch.export.export(fp32, (example,)).module()
        quantizer = X86InductorQuantizer()
        quantizer.set_global(get_default_x86_inductor_quantization_config())
        prepared = prepare_pt2e(exported, quantizer)
        with torch.no_grad():
            for c in calib:
                prepared(torch.nn.functional.interpolate(c, size=example.shape[-2:], mode="bilinear"))
        converted = convert_pt2e(prepared)
        torch._inductor.config.freezing = True  # constant-fold and prepack the int8 weights
        compiled = torch.compile(converted)
        with torch.no_grad():
            compiled(example)
        return compiled, time.perf_counter() - t0

    h, w = calib[0].shape[-2:]
    int8_pt2e, prep_s = quantize(calib[0])
    runners = {"eager-fp32": fp32, "pt2e-int8": int8_pt2e}
    if args.onnx_int8:
        runners["onnx-int8"] = OnnxRunner(args.onnx_int8)
    held_out = [test[i] for i in spread_indices(len(test), args.num_eval)]
    metrics = compare_accuracy(
        runners,
        held_out,
        num_classes=info.num_classes,
        protocol=build_protocol(cfg, info),
        input_size=(h, w),
        train_size=payload.train_size,
    )
    keys = ("delta1", "rms", "abs_rel", "pixel_acc", "miou")
    result = {
        "checkpoint": args.checkpoint,
        "calibration": f"{len(calib)} training-split images",
        "accuracy": {n: {k: m[k] for k in keys} | {"num_images": m["num_images"]} for n, m in metrics.items()},
        "pt2e_prepare_and_compile_s": round(prep_s, 1),
        "timing": {},
        "hardware": hardware(torch.device("cpu")),
        "torch_threads": torch.get_num_threads(),
    }
    for size in args.sizes.split(","):
        sh, sw = (int(v) for v in size.split("x"))
        x = torch.randn(1, 3, sh, sw, generator=torch.Generator().manual_seed(0))
        paths = {"eager-fp32": fp32}
        with torch.no_grad():
            paths["eager-bf16"] = lambda b: _bf16(fp32, b)
            paths["pt2e-int8"] = int8_pt2e if (sh, sw) == (h, w) else quantize(x)[0]
        if args.onnx:
            paths["onnx-fp32"] = OnnxRunner(args.onnx)
        if args.onnx_int8:
            paths["onnx-int8"] = runners["onnx-int8"]
        times: dict[str, list[float]] = {n: [] for n in paths}
        with torch.inference_mode():
            for f in paths.values():  # warm-up
                f(x)
            for _ in range(args.repeat):
                for n, f in paths.items():
                    t = time.perf_counter()
                    f(x)
                    times[n].append(time.perf_counter() - t)
        med = {n: statistics.median(v) for n, v in times.items()}
        result["timing"][size] = {
            n: {"median_s": med[n], "min_s": min(times[n]), "speedup_vs_eager_fp32": med["eager-fp32"] / med[n]}
            for n in paths
        }
    json.dump(result, sys.stdout, indent=1)
    print()
    return 0


def _bf16(model: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.autocast("cpu", dtype=torch.bfloat16):
        return model(x)


if __name__ == "__main__":
    sys.exit(main())
