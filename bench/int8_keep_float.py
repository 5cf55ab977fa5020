"""Which parts of CI-Net should stay float32 in the INT8 model? Measure it on a trained checkpoint.

``python bench/int8_keep_float.py --checkpoint runs/demo/last.ckpt [--num-calib 16 --num-eval 40 --repeat 5]``

Exports the checkpoint once (float32, fixed size = the dataset's reference size), then for each choice of
``--keep-float`` groups (``cinet.inference.quantize.FLOAT_GROUPS``) quantizes it with the same calibration
images (training split) and measures, on the same held-out images (test split): the depth metrics and mIoU
of INT8 next to float32 (:func:`cinet.inference.quantize.compare_accuracy`), the per-output error against
float32 (mean relative depth difference, fraction of pixels whose label changes) and the time per image
(float32 and INT8 onnxruntime sessions timed in turn). Prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

CHOICES = ("none", "attention", "depth_head", "attention,depth_head", "attention,depth_head,seg_head,stem")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/int8_keep_float.py", description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="trained cinet checkpoint with a stored config")
    parser.add_argument("--choices", default=";".join(CHOICES), help="';'-separated --keep-float values")
    parser.add_argument("--num-calib", type=int, default=16)
    parser.add_argument("--num-eval", type=int, default=40)
    parser.add_argument("--repeat", type=int, default=5, help="timed calls per session")
    parser.add_argument("--tiny", action="store_true", help="(unused; every bench script accepts it)")
    args = parser.parse_args(argv)

    import torch

    from cinet.build.builders import build_protocol
    from cinet.build.data import build_dataset
    from cinet.checkpoint import load_model
    from cinet.commands.export import checkpoint_config
    from cinet.inference.export import OnnxRunner, export_onnx
    from cinet.inference.quantize import (
        accuracy_report,
        compare_accuracy,
        dataset_inputs,
        parse_keep_float,
        quantize_int8,
        report_json,
        spread_indices,
    )
    from cinet.preprocess import fit

    model, payload = load_model(args.checkpoint, "cpu", overrides={"attention_impl": "naive"})
    cfg = checkpoint_config(payload, args.checkpoint)
    info = payload.dataset_info()
    width, height = info.reference_size
    norm = {"mean": model.input_mean, "std": model.input_std}  # the checkpoint's (load_model)
    calib_ds = build_dataset(cfg.data, cfg.data.train_split, train=False, **norm)
    eval_ds = build_dataset(cfg.data, cfg.data.test_split, train=False, **norm)
    protocol = build_protocol(cfg, eval_ds.info)
    samples = [eval_ds[i] for i in spread_indices(len(eval_ds), args.num_eval)]
    x = next(dataset_inputs(eval_ds, 1, (height, width)))
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="cinet-int8-sweep-") as tmp:
        fp32_path = export_onnx(
            model,
            Path(tmp) / "m.onnx",
            height=height,
            width=width,
            dataset_info=info,
            model_kwargs=payload.model,
        )
        fp32 = OnnxRunner(fp32_path)
        for choice in args.choices.split(";"):
            keep = parse_keep_float(choice)
            int8_path = Path(tmp) / "m.int8.onnx"
            t0 = time.perf_counter()
            quantize_int8(
                fp32_path,
                int8_path,
                dataset_inputs(calib_ds, args.num_calib, (height, width)),
                keep_float=keep,
            )
            quant_s = time.perf_counter() - t0
            int8 = OnnxRunner(int8_path)
            metrics = compare_accuracy(
                {"fp32": fp32, "int8": int8},
                samples,
                num_classes=eval_ds.info.num_classes,
                protocol=protocol,
                input_size=(height, width),
            )
            report = accuracy_report(metrics["fp32"], metrics["int8"])
            rel, flips = [], []
            for s in samples:
                xi = fit(s["image"].unsqueeze(0), input_size=(height, width))[0].numpy()
                d0, l0 = fp32.run_numpy(xi)
                d1, l1 = int8.run_numpy(xi)
                rel.append(float((np.abs(d1 - d0) / d0).mean()))
                flips.append(float((l0.argmax(1) != l1.argmax(1)).mean()))
            times: dict[str, list[float]] = {"fp32": [], "int8": []}
            for runner in (fp32, int8):
                runner.run_numpy(x)  # warm-up
            for _ in range(args.repeat):
                for name, runner in (("fp32", fp32), ("int8", int8)):
                    t0 = time.perf_counter()
                    runner.run_numpy(x)
                    times[name].append(time.perf_counter() - t0)
            med = {k: statistics.median(v) for k, v in times.items()}
            row = {
                "keep_float": list(keep),
                "delta1_drop": report["delta1_drop"],
                "miou_drop_points": report["miou_drop_points"],
                "abs_rel_difference": report["difference"].get("abs_rel"),
                "accepted_at_defaults": report["accepted"],
                "depth_mean_rel_diff_vs_fp32": statistics.mean(rel),
                "label_changed_fraction": statistics.mean(flips),
                "fp32_s": med["fp32"],
                "int8_s": med["int8"],
                "speedup": med["fp32"] / med["int8"],
                "quantize_s": quant_s,
                "fp32": {k: metrics["fp32"][k] for k in ("delta1", "abs_rel", "rms", "miou", "pixel_acc")},
                "int8": {k: metrics["int8"][k] for k in ("delta1", "abs_rel", "rms", "miou", "pixel_acc")},
            }
            print(json.dumps(report_json(row)), file=sys.stderr, flush=True)
            results.append(row)
    print(
        json.dumps(
            report_json(
                {
                    "benchmark": "int8-keep-float",
                    "checkpoint": str(args.checkpoint),
                    "input": [height, width],
                    "calibration": f"{cfg.data.name}/{cfg.data.train_split}, {args.num_calib} images",
                    "evaluation": f"{cfg.data.name}/{cfg.data.test_split}, {len(samples)} images",
                    "protocol": protocol.to_dict(),
                    "threads": torch.get_num_threads(),
                    "rows": results,
                }
            ),
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
