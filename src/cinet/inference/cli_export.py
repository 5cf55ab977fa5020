"""``cinet export``: a checkpoint -> ONNX (``images -> depth, seg_logits``), checked with onnxruntime.

By default the file is dynamic (any batch, height and width: ``cinet predict --onnx`` then fits each image
exactly as ``cinet predict --checkpoint`` does). ``--height``/``--width`` make a fixed-size file instead; its
size is printed here and by ``cinet predict --onnx``, which resizes every image to it.

No torch import at module level.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

from cinet.errors import InputError

logger = logging.getLogger(__name__)

DEFAULT_SIZE = (480, 640)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the options of ``cinet export``."""
    parser.add_argument("--checkpoint", type=Path, required=True, help="cinet checkpoint (.ckpt)")
    parser.add_argument("--onnx", type=Path, required=True, help="output .onnx file")
    parser.add_argument(
        "--height",
        type=int,
        default=None,
        help="fixed input height: a fixed-size file (default: dynamic; traced at the training size)",
    )
    parser.add_argument("--width", type=int, default=None, help="fixed input width (see --height)")
    parser.add_argument(
        "--dynamic",
        action="store_true",
        help="dynamic batch, height and width axes also when --height/--width are given (their size is traced)",
    )
    parser.add_argument("--opset", type=int, default=None, help="ONNX opset (default: the exporter's)")
    parser.add_argument(
        "--exporter",
        choices=("auto", "dynamo", "torchscript"),
        default="auto",
        help="auto: torch.onnx dynamo exporter, then the TorchScript one if it fails (default)",
    )
    parser.add_argument(
        "--tolerance",
        type=float,
        default=1e-4,
        help="largest allowed |onnxruntime - PyTorch| difference of any output value (default 1e-4)",
    )
    parser.add_argument("--no-check", action="store_true", help="skip the onnxruntime parity check")


def run(args: argparse.Namespace) -> int:
    """Export, check with ``onnx.checker`` and onnxruntime, print the largest difference. Returns the exit code."""
    from cinet.checkpoint import load_model
    from cinet.data.info import DatasetInfo
    from cinet.inference.export import export_onnx, onnx_parity
    from cinet.inference.preprocess import training_size_of

    out: Path = args.onnx
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out.parent):
            pass
    except OSError as exc:
        raise InputError(
            f"{out.parent}: output folder is not writable ({exc.strerror or type(exc).__name__})"
        ) from exc
    if out.is_dir():
        raise InputError(f"{out}: is a folder; give the .onnx file name")

    model, payload = load_model(args.checkpoint, "cpu", overrides={"attention_impl": "naive"})
    info = DatasetInfo.from_dict(payload["dataset"]) if payload.get("dataset") else None
    train_size = training_size_of(payload)
    ref_h, ref_w = DEFAULT_SIZE
    if train_size is not None:
        ref_h, ref_w = train_size
    elif info is not None and info.reference_size is not None:
        ref_w, ref_h = info.reference_size
    height = args.height or ref_h
    width = args.width or ref_w
    dynamic = args.dynamic or (args.height is None and args.width is None)
    if height < 8 or width < 8:
        raise InputError(f"--height/--width: need at least 8x8, got {height}x{width}")
    if info is None:
        logger.warning("%s: no dataset info; 'cinet predict --onnx' will refuse this file", args.checkpoint)

    try:
        export_onnx(
            model,
            out,
            height=height,
            width=width,
            dynamic=dynamic,
            opset=args.opset,
            dataset_info=info,
            model_kwargs=payload.get("model"),
            exporter=args.exporter,
            train_size=train_size,
        )
    except RuntimeError as exc:
        raise InputError(f"{args.checkpoint}: {exc}") from exc
    import onnx

    exporter = next(
        (
            p.value
            for p in onnx.load(str(out), load_external_data=False).metadata_props
            if p.key == "cinet.exporter"
        ),
        "?",
    )
    size = (
        "dynamic: any batch and size"
        if dynamic
        else f"fixed input {height}x{width}: 'cinet predict --onnx' resizes every image to it"
    )
    print(f"wrote {out} ({size}; {exporter} exporter, checker ok)")
    if args.no_check:
        return 0
    sizes = [(height, width, 1)]
    if dynamic:
        sizes.append((max(8, height // 2 + 3), max(8, width // 2 + 5), 2))  # another size and batch
    worst = 0.0
    for h, w, b in sizes:
        diff = onnx_parity(model, out, height=h, width=w, batch=b)
        worst = max(worst, diff)
        print(f"onnxruntime vs PyTorch on {b}x3x{h}x{w}: max |difference| = {diff:.3g}")
    if worst > args.tolerance:
        msg = f"error: {out}: onnxruntime differs from PyTorch by {worst:.3g} (> --tolerance {args.tolerance:g})"
        print(msg, file=sys.stderr)
        return 1
    return 0
