"""Training-step benchmark: images/s of the engine's stage-3 step (``CINetModule.compute_losses``: forward and
the variant's terms of Eq. 13, then backward and the module's SGD) of ``--variant`` (default ``cinet``) with a
ResNet-101 at 480x640, one row per configuration. The module is built by ``cinet.build.builders.build_module``, as
``cinet train`` builds it, so every variant of the table runs its own terms.

Rows (``--modes``; each a fresh copy of the same initial model):

* ``fp32``: float32, contiguous (NCHW) tensors.
* ``bf16``: ``torch.autocast(dtype=bfloat16)`` mixed precision (losses run in float32 where they say so).
* ``channels_last``: float32, model and images in ``torch.channels_last``.
* ``bf16_channels_last``: both.
* ``compile``: ``torch.compile(model)`` with bf16 + channels-last (``--compile`` adds it; slow to compile).

FLOPs: ``torch.utils.flop_counter.FlopCounterMode`` over one fp32 forward + loss + backward with the naive
attention (the algorithmic work: the memory-efficient paths recompute the attention logits in backward,
which is not counted as model FLOPs). Achieved FLOP/s = FLOPs per image x images/s; on CUDA the fraction of
the GPU's dense bf16 peak is reported when the GPU is known. ``--profile K`` adds the top K operators of one
step of the first row (``torch.profiler``, self time).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
from typing import Any

import torch

from cinet.bench.common import hardware, parse_choices, synchronize, time_calls
from cinet.bench.peak import add_peak_fractions
from cinet.build.builders import build_model, build_module
from cinet.build.data import dataset_info_from_config
from cinet.checks.model import training_size_problem
from cinet.config import Config, ModelConfig, StageConfig, load_config, validate
from cinet.data.info import DatasetInfo, voc_palette
from cinet.errors import InputError, describe
from cinet.ops import use_attention_impl
from cinet.utils.device import resolve_device

MODES: dict[str, dict[str, bool]] = {
    "fp32": {"bf16": False, "channels_last": False, "compile": False},
    "bf16": {"bf16": True, "channels_last": False, "compile": False},
    "channels_last": {"bf16": False, "channels_last": True, "compile": False},
    "bf16_channels_last": {"bf16": True, "channels_last": True, "compile": False},
    "compile": {"bf16": True, "channels_last": True, "compile": True},
}
# Dense bf16 tensor-core peak (FLOP/s) by GPU name fragment (vendor datasheets, SXM parts).
BF16_PEAK = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12}


def bf16_peak(name: str) -> float | None:
    """Datasheet dense bf16 peak of a GPU name, None when unknown."""
    for key, value in BF16_PEAK.items():
        if key in name:
            return value
    return None


def model_settings(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """Sizes of the benchmarked model and batch: each option given on the command line, else ``--config``'s
    value (its ``model.*``, ``data.batch_size`` and ``data.crop_size`` / ``image_size`` / synthetic size, the
    dataset's class count), else the built-in default (``--tiny``: resnet18, small channels, 64x80).

    Raises:
        ConfigError: ``--config`` is not a config file or bundled name (or breaks a rule).
    """
    tiny = bool(getattr(args, "tiny", False))
    config = getattr(args, "config", None)
    base: dict[str, Any] = {
        "variant": "cinet",
        "encoder": "resnet18" if tiny else "resnet101",
        "num_classes": 13,
        "channels": 32 if tiny else 512,
        "qk_channels": 16 if tiny else 64,
        "decoder_channels": (32, 16, 16) if tiny else (256, 128, 64),
        "attention_impl": "auto",
        "batch_size": 1 if tiny or device.type == "cpu" else 2,
        "height": 64 if tiny else 480,
        "width": 80 if tiny else 640,
    }
    if config:
        cfg = load_config(config)
        m = cfg.model
        size = cfg.data.crop_size or cfg.data.image_size or cfg.data.options.get("size")
        base.update(
            variant=m.variant,
            encoder=m.encoder,
            num_classes=dataset_info_from_config(cfg.data).num_classes,
            channels=m.channels,
            qk_channels=m.qk_channels,
            decoder_channels=tuple(m.decoder_channels),
            attention_impl=m.attention_impl,
            batch_size=cfg.data.batch_size,
            **({"height": int(size[0]), "width": int(size[1])} if size else {}),
        )
    given = {
        "variant": getattr(args, "variant", None),
        "encoder": args.encoder,
        "num_classes": getattr(args, "num_classes", None),
        "channels": args.channels,
        "attention_impl": getattr(args, "attention_impl", None),
        "batch_size": args.batch_size,
        "height": args.height,
        "width": args.width,
    }
    return {"config": config, **base, **{k: v for k, v in given.items() if v is not None}}


def settings_config(settings: dict[str, Any]) -> Config:
    """The :class:`cinet.config.Config` of the benchmarked model: ``settings["config"]`` (None: the defaults)
    with every ``model.*`` field that ``settings`` names (random init: ``encoder_weights`` null)."""
    cfg = load_config(settings.get("config"))
    fields = {f.name for f in dataclasses.fields(ModelConfig)}
    given = {k: list(v) if isinstance(v, tuple) else v for k, v in settings.items() if k in fields}
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, encoder_weights=None, **given))
    validate(cfg, "cinet bench")  # the checks load_config runs on an override
    return cfg


def build_step_module(settings: dict[str, Any], stage: int = 3) -> Any:
    """The engine's :class:`~cinet.engine.module.CINetModule` of one stage (default 3: every term of the
    variant), built by :func:`cinet.build.builders.build_module` as ``cinet train`` builds it: the same model,
    loss terms (the variant table x the stage table) and optimizer groups."""

    cfg = settings_config(settings)
    n = settings["num_classes"]
    info = DatasetInfo(
        name="bench", num_classes=n, class_names=[f"class{i}" for i in range(n)], palette=voc_palette(n)
    )
    return build_module(cfg, info, StageConfig(stage=stage, lr=1e-5))


def check_training_input(model: torch.nn.Module, settings: dict[str, Any], what: str = "") -> None:
    """Refuse ``--height/--width/--batch-size`` at which a training step of ``model`` cannot run.

    Batch norm refuses one value per channel in training (:func:`cinet.checks.model.training_size_problem`):
    without this check, a traceback in the middle of the benchmark.

    Args:
        model: The benchmarked network (any device, ``meta`` included).
        settings: :func:`model_settings`' dict (``batch_size``, ``height``, ``width``).
        what: Prefix of the message naming the row (``"encoder resnet18: "``).

    Raises:
        InputError: One line naming the options, the layer, and the smallest square size that trains.
    """
    problem = training_size_problem(
        model,
        settings["batch_size"],
        settings["height"],
        settings["width"],
        size_key="input",
        batch_key="--batch-size",
        square="--height {side} --width {side}",
    )
    if problem is not None:
        raise InputError(f"--height/--width: {what}{problem}")


def build(settings: dict[str, Any]) -> torch.nn.Module:
    """The benchmarked network alone (inference rows), built as ``cinet train`` builds it (no loss)."""

    return build_model(settings_config(settings), settings["num_classes"])


def synthetic_batch(settings: dict[str, Any], device: torch.device) -> dict[str, torch.Tensor]:
    """Random images [B,3,H,W], depth [B,1,H,W] in metres (10% invalid) and labels [B,H,W] (10% ignore)."""
    g = torch.Generator().manual_seed(0)
    b, h, w = settings["batch_size"], settings["height"], settings["width"]
    depth = 0.5 + 9.5 * torch.rand(b, 1, h, w, generator=g)
    depth[torch.rand(b, 1, h, w, generator=g) < 0.1] = 0.0
    labels = torch.randint(0, settings["num_classes"], (b, h, w), generator=g)
    labels[torch.rand(b, h, w, generator=g) < 0.1] = 255
    return {
        "image": torch.randn(b, 3, h, w, generator=g).to(device),
        "depth": depth.to(device),
        "labels": labels.to(device),
    }


def training_step_fn(
    module: Any, batch: dict[str, torch.Tensor], device: torch.device, bf16: bool
) -> tuple[Any, torch.optim.Optimizer]:
    """A closure running one full step of the engine (``CINetModule.compute_losses``: forward and the stage's
    loss terms; backward; the module's SGD with its parameter groups) and its optimizer."""
    opt = module.configure_optimizers()["optimizer"]

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16):
            losses = module.compute_losses(batch)
        losses["total"].backward()
        opt.step()

    return step, opt


def count_flops(module: Any, batch: dict[str, torch.Tensor]) -> dict[str, int]:
    """FLOPs of one fp32 forward (model only) and one full step's forward + loss + backward (naive attention)."""
    from torch.utils.flop_counter import FlopCounterMode

    with use_attention_impl("naive"):  # the algorithmic work; the kernels recompute, not counted
        with FlopCounterMode(display=False) as fwd_counter, torch.no_grad():
            module.model(batch["image"])
        with FlopCounterMode(display=False) as step_counter:
            module.compute_losses(batch)["total"].backward()
    module.zero_grad(set_to_none=True)
    return {"forward": int(fwd_counter.get_total_flops()), "train_step": int(step_counter.get_total_flops())}


def profile_step(step: Any, device: torch.device, top: int) -> list[dict[str, Any]]:
    """Top ``top`` operators by self time of one step (``torch.profiler``; CPU, plus CUDA when on GPU)."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        step()
        synchronize(device)
    events = list(prof.key_averages())
    key = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    total = sum(getattr(e, key) for e in events) or 1.0
    events.sort(key=lambda e: getattr(e, key), reverse=True)
    return [
        {
            "op": e.key,
            "self_s": getattr(e, key) / 1e6,
            "percent": 100.0 * getattr(e, key) / total,
            "calls": e.count,
        }
        for e in events[:top]
    ]


def run_train_step(args: argparse.Namespace) -> dict[str, Any]:
    """Benchmark the rows of ``args.modes`` (plus ``compile`` with ``args.compile``); JSON-ready dict."""
    device = resolve_device(args.device)
    names = parse_choices(args.modes, MODES, "fp32,bf16,channels_last")  # before anything is built
    if getattr(args, "compile", False) and "compile" not in names:
        names.append("compile")
    settings = model_settings(args, device)
    torch.manual_seed(0)
    base = build_step_module(settings).to(device).train()
    bsz = settings["batch_size"]
    check_training_input(base.model, settings)
    batch = synthetic_batch(settings, device)
    flops = count_flops(base, batch)
    per_image = flops["train_step"] / bsz
    peak = bf16_peak(torch.cuda.get_device_name(device)) if device.type == "cuda" else None

    rows = []
    for name in names:
        mode = MODES[name]
        module = copy.deepcopy(base)
        module.channels_last = mode["channels_last"]  # the engine's own switch (trainer.channels_last)
        if mode["channels_last"]:
            module.model.to(memory_format=torch.channels_last)
        if mode["compile"]:
            module.model = torch.compile(module.model)
        step, _ = training_step_fn(module, batch, device, mode["bf16"])
        row: dict[str, Any] = {"mode": name, **mode, "dtype": "bf16" if mode["bf16"] else "fp32"}
        try:
            timing = time_calls(step, device, args.repeat, args.warmup)
        except Exception as exc:  # a row that cannot run here (e.g. no compiler for torch.compile)
            row["error"] = describe(exc)
            rows.append(row)
            continue
        ips = bsz / timing["median_s"]
        row.update(
            {
                "step_s": timing["median_s"],
                "times_s": timing["times_s"],
                "images_per_s": ips,
                "achieved_flops_per_s": per_image * ips,
            }
        )
        if peak is not None:
            row["fraction_of_bf16_peak"] = per_image * ips / peak
        if getattr(args, "profile", 0) and name == names[0]:
            row["profile_top_ops"] = profile_step(step, device, args.profile)
        if device.type == "cuda":
            row["max_memory_allocated_bytes"] = int(torch.cuda.max_memory_allocated(device))
            torch.cuda.reset_peak_memory_stats(device)
        rows.append(row)
        del module, step
    peak_info = add_peak_fractions(rows, device)
    return {
        "benchmark": "train-step",
        "what": "CINetModule.compute_losses (stage 3) + backward + SGD step, synthetic data",
        "settings": {k: list(v) if isinstance(v, tuple) else v for k, v in settings.items()},
        "flops_per_image": {"forward": flops["forward"] / bsz, "train_step": per_image},
        "flop_counter": "torch.utils.flop_counter.FlopCounterMode, fp32, naive attention",
        "bf16_peak_flops_per_s": peak,
        **peak_info,
        "timing": f"median of {args.repeat} steps after {args.warmup} warm-up",
        "hardware": hardware(device),
        "rows": rows,
    }
