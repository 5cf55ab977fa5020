"""``cinet bench attention|train-step|inference|encoders [options]``: benchmarks printing JSON.

No torch import at module level (``cinet --help`` stays fast); each benchmark imports what it needs in
:func:`run`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from cinet.checks.outputs import check_not_an_input, check_output_file, is_onnx_model
from cinet.commands.common import PathArgument
from cinet.errors import InputError

BENCHMARKS = ("attention", "train-step", "inference", "encoders")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the ``bench`` sub-subcommands and their options on ``parser``."""
    sub = parser.add_subparsers(dest="benchmark", metavar="BENCHMARK")
    sub.required = True

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--device", default="auto", help="cpu, cuda or auto (CUDA when available)")
        p.add_argument("--repeat", type=int, default=3, help="timed repetitions (median reported)")
        p.add_argument("--warmup", type=int, default=1, help="untimed repetitions first")
        p.add_argument("--tiny", action="store_true", help="tiny sizes (tests, smoke runs)")
        p.add_argument("--out", default=None, action=PathArgument, help="also write the JSON to this file")

    att = sub.add_parser("attention", help="SUM attention + BCE: naive vs tiled (memory, time)")
    common(att)
    att.add_argument(
        "--sizes",
        default=None,
        help="comma-separated BxNxCxD (default 8x4800x512x64,2x8192x512x64,1x32768x512x64)",
    )
    att.add_argument(
        "--impls", default=None, help="comma-separated implementations (default naive,tiled[,triton])"
    )
    att.add_argument("--tile", type=int, default=None, help="tile size (query rows per block)")
    att.add_argument(
        "--dtypes",
        default="float32",
        help="comma-separated input dtypes among float32, bfloat16, float16 (default float32)",
    )

    def model_options(p: argparse.ArgumentParser, batch_help: str, batch_default: int | None) -> None:
        p.add_argument(
            "--config",
            default=None,
            action=PathArgument,
            help="take the model, batch size and image size from this config (e.g. demo); options override it",
        )
        p.add_argument("--encoder", default=None, help="encoder (default resnet101; resnet18 with --tiny)")
        p.add_argument("--variant", default=None, help="model variant (default cinet)")
        p.add_argument("--batch-size", type=int, default=batch_default, help=batch_help)
        p.add_argument("--height", type=int, default=None, help="input height (default 480)")
        p.add_argument("--width", type=int, default=None, help="input width (default 640)")
        p.add_argument("--channels", type=int, default=None, help="SUM/decoder channels (default 512)")
        p.add_argument("--num-classes", type=int, default=None, help="segmentation classes (default 13)")

    tr = sub.add_parser("train-step", help="images/s and FLOP/s of a full training step")
    common(tr)
    model_options(tr, "images per step (default 2 on CUDA, 1 on CPU and with --tiny)", None)
    tr.add_argument("--attention-impl", default=None, help="naive, tiled, triton or auto (default auto)")
    tr.add_argument(
        "--modes",
        default="fp32,bf16,channels_last",
        help="comma-separated rows among fp32, bf16, channels_last, bf16_channels_last, compile",
    )
    tr.add_argument("--compile", action="store_true", help="add the torch.compile row")
    tr.add_argument(
        "--profile", type=int, default=0, metavar="K", help="top K ops of one step (torch.profiler)"
    )

    inf = sub.add_parser("inference", help="images/s: eager PyTorch vs onnxruntime fp32 and INT8 (CPU)")
    common(inf)
    model_options(inf, "images per call (default 1)", 1)
    inf.add_argument(
        "--onnx",
        default=None,
        action=PathArgument,
        help="ONNX file to write/reuse (default: a temporary file)",
    )
    inf.add_argument(
        "--modes",
        default="eager,onnxruntime,int8",
        help="comma-separated rows among eager, onnxruntime, int8, bf16 (eager PyTorch under bf16 autocast)",
    )
    inf.add_argument("--num-calib", type=int, default=4, help="INT8 calibration inputs (random; speed only)")
    inf.add_argument(
        "--int8-keep-float", default=None, help="INT8: parts kept float32 (as cinet export --keep-float)"
    )

    enc = sub.add_parser("encoders", help="params, FLOPs, CPU inference / train images/s per encoder family")
    common(enc)
    enc.add_argument(
        "--encoders",
        default=None,
        help="comma-separated model.encoder names (default: resnet101 and one timm model per family; "
        "timm test models with --tiny)",
    )
    enc.add_argument("--variant", default="cinet", help="model variant (default cinet)")
    enc.add_argument("--batch-size", type=int, default=2, help="images per training step (default 2)")
    enc.add_argument("--height", type=int, default=None, help="timed input height (default 240; 64 --tiny)")
    enc.add_argument("--width", type=int, default=None, help="timed input width (default 320; 80 --tiny)")
    enc.add_argument("--flops-size", default="480x640", help="HxW of the FLOP count (default 480x640)")
    enc.add_argument("--num-classes", type=int, default=13, help="segmentation classes")


def check_outputs(args: argparse.Namespace) -> None:
    """Refuse, before any measurement, the files a benchmark cannot write or use, and options it reads late.

    ``--out``: a writable file that is no input of the benchmark and, if it exists, a JSON of ``cinet bench``
    (a user's file is never replaced). ``bench inference``: ``--onnx`` (a file, written where it can be, an
    existing one reused only when it is an ONNX model) and ``--int8-keep-float`` of the INT8
    row.

    Raises:
        InputError: One line naming the file or option.
    """
    onnx = getattr(args, "onnx", None)
    if args.out:  # the JSON never replaces a file the benchmark reads
        check_not_an_input([args.out], {"--onnx": onnx})
        if onnx and Path(args.out).absolute() == Path(onnx).absolute():
            raise InputError(f"{args.out}: given with --out and --onnx; choose two paths")
        check_output_file(args.out, "--out", kind="json", keys=("benchmark",))
    if args.benchmark != "inference":
        return
    if onnx:  # an existing file is timed as it is (an ONNX model, not replaced), else exported there
        if Path(onnx).is_file() and not is_onnx_model(onnx):
            raise InputError(
                f"{onnx}: exists and is not an ONNX model (--onnx: an existing file is benchmarked as it is); "
                "move it away or choose another path"
            )
        check_output_file(onnx, "--onnx")
    modes = [m.strip() for m in (getattr(args, "modes", None) or "").split(",")]
    if "int8" in modes:
        from cinet.inference.quantize import parse_keep_float

        try:
            parse_keep_float(getattr(args, "int8_keep_float", None))
        except InputError as exc:  # the group list is given with --int8-keep-float here
            raise InputError(str(exc).replace("--keep-float", "--int8-keep-float", 1)) from None


#: Smallest value of the benchmarks' count options (``dest`` -> minimum; an option a benchmark lacks is skipped).
MINIMUMS = {
    "repeat": 1,
    "warmup": 0,
    "batch_size": 1,
    "height": 1,
    "width": 1,
    "channels": 1,
    "num_classes": 1,
    "tile": 1,
    "num_calib": 1,
    "profile": 0,
}


def run(args: argparse.Namespace) -> int:
    """Run the chosen benchmark and print its JSON. Returns the exit code."""
    from cinet.bench.common import emit

    for dest, low in MINIMUMS.items():  # one line naming the option, before any measurement
        value = getattr(args, dest, None)
        if value is not None and value < low:
            raise InputError(f"--{dest.replace('_', '-')}: must be >= {low}, got {value}")
    check_outputs(args)  # before any measurement: a run of minutes must not fail at its last line

    if args.benchmark == "attention":
        from cinet.bench.attention import (
            DEFAULT_SIZES,
            IMPLS,
            TINY_SIZES,
            parse_dtypes,
            parse_sizes,
            run_attention,
        )

        sizes = args.sizes or (TINY_SIZES if args.tiny else DEFAULT_SIZES)
        try:  # bad sizes / dtypes / paths: one line, exit 2, before any measurement
            parse_sizes(sizes)
            parse_dtypes(args.dtypes)
        except ValueError as exc:
            raise InputError(str(exc)) from None
        if args.impls:
            from cinet.bench.common import parse_choices

            args.impls = ",".join(parse_choices(args.impls, IMPLS, "", option="--impls"))
        result = run_attention(
            sizes, args.device, args.repeat, args.warmup, args.impls, args.tile, dtypes=args.dtypes
        )
    elif args.benchmark == "train-step":
        from cinet.bench.train_step import run_train_step

        result = run_train_step(args)
    elif args.benchmark == "inference":
        from cinet.bench.inference import run_inference

        result = run_inference(args)
    elif args.benchmark == "encoders":
        from cinet.bench.encoders import run_encoders

        result = run_encoders(args)
    else:  # pragma: no cover - argparse restricts the choices
        raise ValueError(f"unknown benchmark {args.benchmark!r}")
    emit(result, args.out)
    return 0
