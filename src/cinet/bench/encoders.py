"""Encoder benchmark: parameters, forward FLOPs and CPU images/s of CI-Net with each encoder family.

For every encoder (the paper's dilated ResNet-101 first, then one timm model per family) the same CI-Net
(``--variant``, default ``cinet``) is built with random weights and measured in one run:

* ``params_m`` / ``encoder_params_m``: parameters of the whole network / of the encoder, in millions.
* ``gflops``: forward FLOPs (2 x multiply-adds, ``torch.utils.flop_counter.FlopCounterMode``) of one image at
  ``--flops-size`` (default 480x640, NYUv2), counted on the meta device (no compute, no memory).
* ``infer_img_s``: images/s of an eager ``torch.inference_mode`` forward on the CPU at ``--height x --width``.
* ``train_img_s``: images/s of the engine's stage-3 training step (``CINetModule.compute_losses``: forward and
  the variant's terms, then backward and SGD) on the CPU at the same size, ``--batch-size`` images per step.
* ``infer_vs_first`` / ``train_vs_first``: the images/s divided by those of the first row (ratios taken in
  the same run, on the same machine, are what compares; absolute numbers depend on the CPU and its load).
"""

from __future__ import annotations

import argparse
import copy
from typing import Any

import torch

from cinet.bench.common import check_cpu_only, hardware, parse_hw, time_calls
from cinet.bench.peak import add_peak_fractions
from cinet.bench.train_step import (
    build,
    build_step_module,
    check_training_input,
    synthetic_batch,
    training_step_fn,
)
from cinet.models.encoder import is_timm_encoder
from cinet.models.timm_encoder import timm_model_name
from cinet.ops import use_attention_impl

DEFAULT_ENCODERS = (
    "resnet101",
    "timm:resnet50d",
    "timm:convnext_tiny",
    "timm:efficientnet_b3",
    "timm:regnety_016",
    "timm:mobilenetv3_large_100",
    "timm:vit_small_patch16_224",
    "timm:swin_tiny_patch4_window7_224",
)
TINY_ENCODERS = ("resnet18", "timm:test_resnet", "timm:test_convnext", "timm:test_vit")


def family(encoder: str) -> str:
    """The model family: ``torchvision resnet`` or the timm module that defines the architecture."""

    if not is_timm_encoder(encoder):
        return "torchvision resnet (dilated)"
    from timm.models import model_entrypoint

    return "timm " + model_entrypoint(timm_model_name(encoder).split(".")[0]).__module__.rsplit(".", 1)[-1]


def forward_flops(model: torch.nn.Module, height: int, width: int) -> int:
    """Forward FLOPs of one ``1x3xHxW`` image, counted on a meta-device copy of ``model``."""
    from torch.utils.flop_counter import FlopCounterMode

    meta = copy.deepcopy(model).to("meta").eval()
    counter = FlopCounterMode(display=False)
    # the naive path: the algorithmic work (the kernels recompute, not counted as FLOPs)
    with counter, torch.no_grad(), use_attention_impl("naive"):
        meta(torch.empty(1, 3, height, width, device="meta"))
    return int(counter.get_total_flops())


def settings_of(args: argparse.Namespace) -> dict[str, Any]:
    """Sizes of the benchmark (``--tiny``: small timm test models, small channels, 64x80)."""
    tiny = bool(args.tiny)
    encoders = [e.strip() for e in args.encoders.split(",")] if args.encoders else None
    return {
        "encoders": encoders or list(TINY_ENCODERS if tiny else DEFAULT_ENCODERS),
        "variant": args.variant,
        "num_classes": args.num_classes,
        "channels": 16 if tiny else 512,
        "qk_channels": 8 if tiny else 64,
        "decoder_channels": (8, 8, 8) if tiny else (256, 128, 64),
        "height": args.height or (64 if tiny else 240),
        "width": args.width or (80 if tiny else 320),
        "flops_size": parse_hw(args.flops_size, "--flops-size"),
        "batch_size": args.batch_size,
        "repeat": args.repeat,
        "warmup": args.warmup,
    }


def measure(encoder: str, s: dict[str, Any]) -> dict[str, Any]:
    """One row of the table (see the module docstring)."""

    torch.manual_seed(0)
    module = build_step_module({**s, "encoder": encoder, "attention_impl": "auto"})  # the engine's stage 3
    model = module.model
    fh, fw = s["flops_size"]
    row: dict[str, Any] = {
        "encoder": encoder,
        "family": family(encoder),
        "output_stride": int(model.encoder.output_stride),
        "stages": int(model.num_stages),
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "encoder_params_m": sum(p.numel() for p in model.encoder.parameters()) / 1e6,
        f"gflops_{fh}x{fw}": forward_flops(model, fh, fw) / 1e9,
        "mean": list(model.input_mean),
        "std": list(model.input_std),
    }
    device = torch.device("cpu")
    b, h, w = s["batch_size"], s["height"], s["width"]
    images = torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(0))
    model.eval()

    def infer() -> None:
        with torch.inference_mode():
            model(images)

    t = time_calls(infer, device, s["repeat"], s["warmup"])
    row["infer_img_s"] = 1.0 / t["median_s"]
    row["dtype"] = "fp32"
    row["achieved_flops_per_s"] = (
        forward_flops(model, h, w) * row["infer_img_s"]
    )  # inference, at the timed size

    module.train()
    batch = synthetic_batch({**s, "batch_size": b}, device)
    step, _ = training_step_fn(module, batch, device, bf16=False)  # the variant's stage-3 terms
    t = time_calls(step, device, s["repeat"], s["warmup"])
    row["train_img_s"] = b / t["median_s"]
    return row


def run_encoders(args: argparse.Namespace) -> dict[str, Any]:
    """Measure every encoder of ``--encoders`` in one run; JSON-ready dict with ratios to the first row."""
    check_cpu_only(args.device, "encoders")
    s = settings_of(args)
    for encoder in s["encoders"]:  # every row's size checked before the first is measured
        with torch.device("meta"):
            model = build({**s, "encoder": encoder, "attention_impl": "naive"})
        check_training_input(model, s, f"encoder {encoder}: ")
    rows = [measure(encoder, s) for encoder in s["encoders"]]
    first = rows[0]
    for row in rows:
        row["infer_vs_first"] = row["infer_img_s"] / first["infer_img_s"]
        row["train_vs_first"] = row["train_img_s"] / first["train_img_s"]
    peak_info = add_peak_fractions(rows, torch.device("cpu"))
    fh, fw = s["flops_size"]
    return {
        "benchmark": "encoders",
        "settings": {**s, "flops_size": f"{fh}x{fw}", "decoder_channels": list(s["decoder_channels"])},
        "hardware": hardware(torch.device("cpu")),
        **peak_info,
        "rows": rows,
    }
