"""``cinet export``: a checkpoint -> ONNX (``images -> depth, seg_logits``), checked with onnxruntime; or a
model folder in the Hugging Face Hub convention (``--pretrained DIR``, ``--push-to-hub USER/NAME``,
:mod:`cinet.inference.hub`).

By default the file is dynamic (any batch, height and width: ``cinet predict --onnx`` then fits each image
exactly as ``cinet predict --checkpoint`` does). ``--height``/``--width`` make a fixed-size file instead; its
size is printed here and by ``cinet predict --onnx``, which resizes every image to it.

No torch import at module level.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cinet.checks.outputs import check_new_folder, check_not_an_input, check_output_file
from cinet.commands.common import PathArgument
from cinet.config import load_config
from cinet.errors import CheckpointError, InputError
from cinet.inference import IMAGE_EXTENSIONS

if TYPE_CHECKING:
    from cinet.checkpoint import CheckpointPayload
    from cinet.preprocess import InputSpec

logger = logging.getLogger(__name__)

DEFAULT_SIZE = (480, 640)


#: The oldest opset the TorchScript exporter writes (torch.onnx); the newest is the installed onnx's.
MIN_OPSET = 7


#: Options that act only with another one: ``dest`` -> what it needs. Given without it (any value but the parser's
#: default), an option would silently do nothing (``--num-calib 64`` without ``--quantize int8``): refused.
DEPENDENT_OPTIONS: dict[str, str] = {
    **dict.fromkeys(
        ("height", "width", "dynamic", "opset", "exporter", "tolerance", "no_check", "quantize"),
        "--onnx FILE",
    ),
    **dict.fromkeys(
        (
            "calibration_images",
            "num_calib",
            "eval_split",
            "num_eval",
            "keep_float",
            "max_delta1_drop",
            "max_miou_drop",
            "config",
        ),
        "--quantize int8",
    ),
    "metrics": "--pretrained DIR or --push-to-hub",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the options of ``cinet export``."""
    parser.add_argument(
        "--checkpoint", type=Path, required=True, action=PathArgument, help="cinet checkpoint (.ckpt)"
    )
    parser.add_argument("--onnx", type=Path, default=None, action=PathArgument, help="output .onnx file")
    hub = parser.add_argument_group(
        "weights that travel (huggingface_hub's PyTorchModelHubMixin convention: config.json, model.safetensors, "
        "README.md model card)"
    )
    hub.add_argument(
        "--pretrained",
        type=Path,
        action=PathArgument,
        default=None,
        metavar="DIR",
        help="write the model folder here (absent or empty); read it with cinet predict --pretrained DIR",
    )
    hub.add_argument(
        "--push-to-hub",
        default=None,
        metavar="USER/NAME",
        help="upload the model folder to this hub repository",
    )
    hub.add_argument(
        "--metrics",
        type=Path,
        action=PathArgument,
        default=None,
        help="metrics.json of these weights for the model card (default: the one beside the checkpoint, if any)",
    )
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
    q = parser.add_argument_group("INT8 quantization (also writes M.int8.onnx and M.int8.accuracy.json)")
    q.add_argument(
        "--quantize", choices=("int8",), default=None, help="static INT8 quantization (onnxruntime)"
    )
    q.add_argument(
        "--calibration-images",
        default=None,
        action=PathArgument,
        metavar="DIR_OR_SPLIT",
        help="folder of images or a split of the checkpoint's dataset (default: its training split)",
    )
    q.add_argument(
        "--num-calib",
        type=int,
        default=16,
        help="calibration images (default 16)",
    )
    q.add_argument("--eval-split", default=None, help="held-out split for the accuracy check (default: test)")
    q.add_argument(
        "--num-eval",
        type=int,
        default=50,
        help="held-out images for the accuracy check (default 50)",
    )
    q.add_argument(
        "--keep-float",
        default=None,
        help="parts kept in float32: none or a comma list of attention, depth_head, seg_head, stem "
        "(default: attention, chosen by measurement)",
    )
    q.add_argument(
        "--max-delta1-drop",
        type=float,
        default=0.01,
        help="refuse above this δ1 drop (default 0.01)",
    )
    q.add_argument(
        "--max-miou-drop",
        type=float,
        default=1.0,
        help="refuse above this mIoU drop, in points (default 1)",
    )
    q.add_argument(
        "--config",
        default=None,
        action=PathArgument,
        help="YAML over the checkpoint's stored config (its data: section)",
    )


def run(args: argparse.Namespace) -> int:
    """Export, check with ``onnx.checker`` and onnxruntime, print the largest difference. Returns the exit code."""
    from cinet.checkpoint import load_model

    pretrained = getattr(args, "pretrained", None)
    repo_id = getattr(args, "push_to_hub", None)
    if args.onnx is None and pretrained is None and repo_id is None:
        raise InputError("cinet export: give --onnx FILE, --pretrained DIR or --push-to-hub USER/NAME")
    check_dependent_options(args)
    # every output and option that can be checked without the model, before anything is written or uploaded
    if pretrained is not None:
        check_new_folder(pretrained, "--pretrained folder")
    if args.onnx is not None:
        check_onnx_outputs(args)
    if not (math.isfinite(args.tolerance) and args.tolerance >= 0):  # NaN passed every parity check
        raise InputError(f"--tolerance: must be a finite number >= 0, got {args.tolerance:g}")
    if pretrained is not None or repo_id is not None:
        from cinet.inference import hub

        if pretrained is not None:
            folder = hub.save_pretrained(args.checkpoint, pretrained, metrics=args.metrics)
            print(f"model folder: {folder} (config.json, {hub.WEIGHTS_NAME}, README.md)")
        if repo_id is not None:
            url = hub.push_to_hub(args.checkpoint, repo_id, metrics=args.metrics)
            print(f"pushed to {repo_id}: {url}")
        if args.onnx is None:
            return 0

    out: Path = args.onnx
    model, payload = load_model(args.checkpoint, "cpu", overrides={"attention_impl": "naive"})
    info = payload.dataset_info() if payload.dataset else None
    train_size = payload.train_size
    ref_h, ref_w = DEFAULT_SIZE
    if train_size is not None:
        ref_h, ref_w = train_size
    elif info is not None and info.reference_size is not None:
        ref_w, ref_h = info.reference_size
    if (args.height is None) != (args.width is None):
        given = "--height" if args.height is not None else "--width"
        raise InputError(
            f"{given}: give --height and --width together (a fixed-size file), or neither (dynamic)"
        )
    height = args.height if args.height is not None else ref_h
    width = args.width if args.width is not None else ref_w
    args.dynamic = args.dynamic or (args.height is None and args.width is None)
    if height < 8 or width < 8:
        raise InputError(
            f"--height/--width: need at least 8 pixels each, got --height {height} --width {width}"
        )
    if info is None:
        logger.warning("%s: no dataset info; 'cinet predict --onnx' will refuse this file", args.checkpoint)
    if not args.quantize:
        return _export_checked(args, model, payload, info, out, height, width)

    cfg = checkpoint_config(payload, args.checkpoint, args.config)  # names the dataset; fails early
    spec = payload.input_spec(fallback=(model.input_mean, model.input_std))  # the checkpoint's (load_model)
    data = quantize_data(cfg, payload, spec, args)  # the images exist, the class counts fit: before exporting
    with tempfile.TemporaryDirectory(prefix="cinet-export-") as tmp:  # nothing is written before the end
        fp32 = Path(tmp) / out.name
        rc = _export_checked(args, model, payload, info, fp32, height, width)
        if rc != 0:
            print(f"error: {out}: nothing written", file=sys.stderr)
            return rc
        return _quantize_checked(args, data, payload, spec, fp32, out)


def check_opset(opset: int | None) -> None:
    """Refuse an ``--opset`` no exporter can write (a negative or future one) before the model is loaded.

    Raises:
        InputError: ``--opset: must be between 7 and <newest>``.
    """
    if opset is None:
        return
    import onnx

    newest = onnx.defs.onnx_opset_version()
    if not MIN_OPSET <= opset <= newest:
        raise InputError(
            f"--opset: must be between {MIN_OPSET} and {newest} (this onnx's newest), got {opset}"
        )


def check_dependent_options(args: argparse.Namespace) -> None:
    """Refuse an option given without the one it acts with (:data:`DEPENDENT_OPTIONS`), before any work.

    Raises:
        InputError: ``--num-calib: acts only with --quantize int8; add it, or drop --num-calib``.
    """
    present = {
        "--onnx FILE": args.onnx is not None,
        "--quantize int8": bool(args.quantize),
        "--pretrained DIR or --push-to-hub": bool(
            getattr(args, "pretrained", None) or getattr(args, "push_to_hub", None)
        ),
    }
    parser = argparse.ArgumentParser(add_help=False)
    add_arguments(parser)  # the defaults, from their one place
    for dest, needs in DEPENDENT_OPTIONS.items():
        default = parser.get_default(dest)
        if not present[needs] and getattr(args, dest, default) != default:
            option = "--" + dest.replace("_", "-")
            raise InputError(f"{option}: acts only with {needs}; add it, or drop {option}")


def check_onnx_outputs(args: argparse.Namespace) -> None:
    """Refuse, before the model is loaded, an ``--onnx`` output (and, with ``--quantize``, its INT8 files and
    options) that cannot be used.

    The file and its INT8 companions (:func:`cinet.inference.quantize.int8_paths`) must be writable files that
    are none of the inputs, and an existing one must be what cinet writes there (an ONNX model, cinet's accuracy
    JSON): a user's file is never replaced. With ``--quantize``: the float groups, the thresholds, the counts and
    the calibration folder (it exists and has images).

    Raises:
        InputError: One line naming the file or option.
    """
    check_opset(getattr(args, "opset", None))
    out: Path = args.onnx
    inputs: dict[str, Any] = {"--checkpoint": args.checkpoint, "--config": getattr(args, "config", None)}
    if not args.quantize:
        check_not_an_input([out], inputs)  # first: the clearest words for the checkpoint given twice
        check_output_file(out, "--onnx", kind="onnx")
        return
    from cinet.inference.quantize import int8_paths, parse_keep_float

    int8_out, report_out = int8_paths(out)
    calib = Path(args.calibration_images) if args.calibration_images else None
    if calib is not None and calib.is_dir():  # a folder of images (else a split name)
        inputs["--calibration-images"] = [p for p in calib.iterdir() if p.is_file()]
    check_not_an_input([out, int8_out, report_out], inputs)
    check_output_file(out, "--onnx", kind="onnx")
    check_output_file(int8_out, "the INT8 model of --onnx", kind="onnx")
    check_output_file(report_out, "the INT8 accuracy report of --onnx", kind="json", keys=("accepted",))
    parse_keep_float(args.keep_float)  # a bad group fails before the long work
    for name, value in (
        ("--max-delta1-drop", args.max_delta1_drop),
        ("--max-miou-drop", args.max_miou_drop),
    ):
        if not value >= 0:
            raise InputError(f"{name}: must be >= 0, got {value:g}")
    for name, count, what in (
        ("--num-calib", args.num_calib, "calibration image"),
        ("--num-eval", args.num_eval, "held-out image"),
    ):
        if count < 1:
            raise InputError(f"{name}: need at least 1 {what}, got {count}")
    if args.calibration_images is not None:
        check_calibration_source(args.calibration_images)


def check_calibration_source(calibration: str) -> bool:
    """Check a ``--calibration-images`` value: a folder with images, or a split name. Returns "is a folder".

    Raises:
        InputError: A file, a folder without images, or neither a folder nor a split (train, val, test).
    """
    path = Path(calibration)
    if path.is_dir():
        try:
            images = any(p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS for p in path.iterdir())
        except OSError as exc:
            raise InputError(
                f"--calibration-images: {path}: cannot list the folder ({exc.strerror})"
            ) from exc
        if not images:
            raise InputError(f"--calibration-images: {path}: no images (.png/.jpg/...) to calibrate with")
        return True
    if path.exists():
        raise InputError(f"--calibration-images: {path} is a file, not a folder of images or a split")
    if calibration not in ("train", "val", "test"):
        raise InputError(
            f"--calibration-images: {calibration!r} is neither a folder nor a split (train, val, test)"
        )
    return False


def checkpoint_config(
    payload: CheckpointPayload, checkpoint: str | Path, config: str | Path | None = None
) -> Any:
    """The run config stored in a checkpoint (``config`` YAML applied over it): names the dataset.

    Raises:
        InputError: The checkpoint stores no config and none is given.
        ConfigError: A bad config file or key.
    """

    stored = payload.config or None
    if stored is None and config is None:
        raise InputError(
            f"{checkpoint}: no stored run config naming its dataset; give --config with a 'data:' section "
            "(calibration and held-out images come from it)"
        )
    return load_config(config, [], base=stored)


def calibration_plan(cfg: Any, calibration: str | None, eval_split: str | None) -> tuple[str, bool, str]:
    """``(calibration source, is a folder, held-out split)`` with the defaults of ``cfg`` filled in.

    Raises:
        InputError: The calibration source is a file, a folder without images, neither a folder nor a split, or
            the held-out split.
    """
    eval_split = eval_split or cfg.data.test_split
    calib = calibration or cfg.data.train_split
    is_folder = check_calibration_source(calib)
    if not is_folder and calib == eval_split:
        raise InputError(
            f"--calibration-images: split {calib!r} is also the held-out evaluation split; "
            "calibrate on another split or a folder"
        )
    return calib, is_folder, eval_split


@dataclasses.dataclass
class QuantizeData:
    """The data of an INT8 export, built before the float32 export (a missing split fails in seconds)."""

    held_out: Any
    calibration: Any  # a folder (Path) or a dataset
    calibration_name: str
    held_out_name: str
    protocol: Any


def quantize_data(
    cfg: Any, payload: CheckpointPayload, spec: InputSpec, args: argparse.Namespace
) -> QuantizeData:
    """Build the held-out and calibration data of ``cfg`` (normalised with ``spec``) and the protocol.

    Raises:
        InputError: A bad calibration source (:func:`calibration_plan`).
        DataError: A split that cannot be read (missing root, no such split).
        CheckpointError: The model's class count differs from the dataset's.
    """
    from cinet.build.builders import build_protocol
    from cinet.build.data import build_dataset

    calib, is_folder, eval_split = calibration_plan(cfg, args.calibration_images, args.eval_split)
    norm = {"mean": spec.mean, "std": spec.std}
    held_out = build_dataset(cfg.data, eval_split, train=False, **norm)
    num_classes = int(payload.model.get("num_classes", held_out.info.num_classes))
    if num_classes != held_out.info.num_classes:
        raise CheckpointError(
            f"{args.checkpoint}: model has {num_classes} classes, dataset {held_out.info.name!r} "
            f"has {held_out.info.num_classes}"
        )
    calibration = Path(calib) if is_folder else build_dataset(cfg.data, calib, train=False, **norm)
    return QuantizeData(
        held_out=held_out,
        calibration=calibration,
        calibration_name=f"{cfg.data.name}/{calib}",
        held_out_name=f"{cfg.data.name}/{eval_split}",
        protocol=build_protocol(cfg, held_out.info),
    )


def _export_checked(
    args: argparse.Namespace,
    model: Any,
    payload: CheckpointPayload,
    info: Any,
    out: Path,
    height: int,
    width: int,
) -> int:
    """Export to ``out`` and run the parity check; returns the exit code (1 when the check fails)."""
    from cinet.inference.export import export_onnx, onnx_parity

    try:
        export_onnx(
            model,
            out,
            height=height,
            width=width,
            dynamic=args.dynamic,
            opset=args.opset,
            dataset_info=info,
            model_kwargs=payload.model,
            exporter=args.exporter,
            train_size=payload.train_size,
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
        if args.dynamic
        else f"fixed input {width}x{height} (WxH): 'cinet predict --onnx' resizes every image to it"
    )
    print(
        f"{'exported' if args.quantize else 'wrote'} {out.name if args.quantize else out} ({size}; {exporter} exporter, checker ok)"
    )
    if args.no_check:
        return 0
    sizes = [(height, width, 1)]
    if args.dynamic:
        sizes.append((max(8, height // 2 + 3), max(8, width // 2 + 5), 2))  # another size and batch
    worst = 0.0
    for h, w, b in sizes:
        diff = onnx_parity(model, out, height=h, width=w, batch=b)
        worst = max(worst, diff)
        print(f"onnxruntime vs PyTorch on {b} image(s) of {w}x{h} (WxH): max |difference| = {diff:.3g}")
    if worst > args.tolerance:
        msg = f"error: {out}: onnxruntime differs from PyTorch by {worst:.3g} (> --tolerance {args.tolerance:g})"
        print(msg, file=sys.stderr)
        return 1
    return 0


def _quantize_checked(
    args: argparse.Namespace,
    data: QuantizeData,
    payload: CheckpointPayload,
    spec: InputSpec,
    fp32: Path,
    out: Path,
) -> int:
    """INT8-quantize ``fp32`` on ``data`` (normalised with ``spec``), print the accuracy report; write the three
    files only if it is accepted."""
    from cinet.inference.quantize import (
        check_accuracy,
        export_int8,
        format_report,
        install_int8_outputs,
        int8_paths,
        parse_keep_float,
    )

    int8_out, report_out = int8_paths(out)
    int8_tmp = fp32.with_name(int8_out.name)
    held_out = data.held_out
    report = export_int8(
        fp32,
        int8_tmp,
        num_classes=int(payload.model.get("num_classes", held_out.info.num_classes)),
        spec=spec,
        calibration=data.calibration,
        held_out=held_out,
        protocol=data.protocol,
        calibration_name=data.calibration_name,
        held_out_name=data.held_out_name,
        num_calib=args.num_calib,
        num_eval=args.num_eval,
        keep_float=parse_keep_float(args.keep_float),
        max_delta1_drop=args.max_delta1_drop,
        max_miou_drop=args.max_miou_drop,
    )
    print(
        f"calibrated on {report['calibration']}; float32 kept: {', '.join(report['quantization']['keep_float']) or 'none'}"
    )
    print(format_report(report, data.protocol))
    check_accuracy(report, str(int8_out))  # refused: CinetError, exit 2, the temporary files go
    install_int8_outputs(fp32, int8_tmp, report, out)
    print(
        f"wrote {out}, {int8_out} ({int8_out.stat().st_size / out.stat().st_size:.0%} of its size), {report_out}"
    )
    return 0
