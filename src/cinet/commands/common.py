"""Helpers shared by the ``cinet`` subcommands (no torch import at module level).

``cinet predict`` and ``cinet serve`` run one model on photos: they share the options that choose the model, the
device, how a photo is fitted to the network and how results are drawn (:func:`add_model_options`, defaults in
:data:`MODEL_DEFAULTS`, checks in :func:`check_model_options`) and how the model is loaded
(:func:`load_predictor`), so the same photo gives the same files through both.
"""

from __future__ import annotations

import argparse
import logging
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cinet.errors import InputError
from cinet.inference.pointcloud import parse_intrinsics
from cinet.inference.runtime import RUNTIMES, RuntimeChoiceError, check_runtime_source
from cinet.utils.colors import DEFAULT_DEPTH_CMAP, DEPTH_CMAPS

if TYPE_CHECKING:
    from cinet.inference.predictor import Predictor

#: Defaults of the options shared by ``cinet predict`` and ``cinet serve`` (one table: the two agree).
MODEL_DEFAULTS: dict[str, Any] = {
    "device": "cpu",
    "max_side": 0,  # none: the training-size rule alone decides the size the network sees
    "fit": "pad",
    "cmap": DEFAULT_DEPTH_CMAP,
    "alpha": 0.5,
    "ply_stride": 1,
    "intrinsics": None,
    "runtime": "auto",
}


class PathArgument(argparse.Action):
    """``action=`` of every option and argument of the command line that names a file or folder.

    An empty or blank string (``--out ""``, ``--out " "``, a shell variable that was never set) is refused with
    one line naming the option, :class:`~cinet.errors.InputError`, while the command line is parsed, before
    anything runs:
    ``Path("")`` is the current folder, where the command would otherwise read or write. ``type=`` (e.g.
    ``Path``) converts the other values as usual; empty values of options that name no file stay allowed.
    """

    def __init__(self, option_strings: list[str], dest: str, type: Any = None, **kwargs: Any) -> None:
        self.convert = type
        if type is not None and isinstance(kwargs.get("default"), str):
            kwargs["default"] = type(kwargs["default"])
        super().__init__(option_strings, dest, **kwargs)  # no type: argparse hands over the string as typed

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        """Store the value(s), converted by ``type``.

        Raises:
            InputError: An empty or blank value, naming the option (its long name) or the argument (its metavar).
        """
        many = isinstance(values, list)
        items = values if many else [values]
        # "" and " " (a quoted, unset variable): almost surely a mistake
        if any(not v.strip() for v in items):
            name = max(self.option_strings, key=len) if self.option_strings else self.metavar or self.dest
            raise InputError(f"{name}: empty path; give a file or folder name")
        if self.convert is not None:
            items = [self.convert(v) for v in items]
        setattr(namespace, self.dest, items if many else items[0])


def quiet_lightning(verbose: int) -> None:
    """Keep Lightning's info chatter and known-harmless warnings out of the terminal unless ``-v`` was given.

    Args:
        verbose: Count of ``-v`` flags; 0 sets Lightning's loggers to WARNING.
    """
    import lightning  # noqa: F401  (sets its loggers' levels on import: import first, then override)

    warnings.filterwarnings("ignore", message=r".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=r".*`srun` command is available.*")
    if verbose <= 0:
        for name in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning"):
            logging.getLogger(name).setLevel(logging.WARNING)


def add_model_options(parser: argparse.ArgumentParser, *, onnx_note: str) -> None:
    """Register the options ``cinet predict`` and ``cinet serve`` share, with :data:`MODEL_DEFAULTS`.

    The model (``--checkpoint`` / ``--onnx`` / ``--pretrained``, one of them), ``--device``, ``--runtime``, ``--max-side``,
    ``--fit``, ``--cmap``, ``--alpha``, ``--ply-stride`` and ``--intrinsics``.

    Args:
        parser: The subcommand's parser.
        onnx_note: What ``--onnx`` loses in this command (its help's parenthesis).
    """
    d = MODEL_DEFAULTS
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", type=Path, action=PathArgument, help="cinet checkpoint (.ckpt)")
    src.add_argument(
        "--onnx", type=Path, action=PathArgument, help=f"ONNX file written by 'cinet export' ({onnx_note})"
    )
    src.add_argument(
        "--pretrained",
        action=PathArgument,
        metavar="DIR_OR_REPO",
        help="model folder of 'cinet export --pretrained' / save_pretrained, or a Hugging Face Hub repository "
        "id (user/name; read through the hub cache, HF_HUB_OFFLINE=1 for the cache only)",
    )
    parser.add_argument(
        "--device", default=d["device"], help=f"cpu, cuda, cuda:N or auto (default: {d['device']})"
    )
    parser.add_argument(
        "--runtime",
        choices=RUNTIMES,
        default=d["runtime"],
        help="inference runtime: auto (default: eager bf16 where the CPU / GPU has bf16 units, else eager fp32; "
        "an --onnx file as it is; docs/inference.md), eager-fp32, eager-bf16, onnx-fp32 (exports the checkpoint "
        "once per run), onnx-int8 (an INT8 --onnx file); on a PyTorch model, any but eager-fp32 is checked "
        "against it on the first batch and falls back to it when they differ",
    )
    parser.add_argument(
        "--max-side",
        type=int,
        default=d["max_side"],
        help="cap on the longer side the network sees: after the training-size rule, a larger input is scaled "
        "down to this (results stay at the image size; 0 = none, the default of 'cinet predict' and "
        "'cinet serve', which give the same result for the same photo)",
    )
    parser.add_argument(
        "--fit",
        choices=("pad", "resize"),
        default=d["fit"],
        help="make the network input a multiple of 8 by reflect padding (default) or by resizing",
    )
    parser.add_argument(
        "--cmap", choices=DEPTH_CMAPS, default=d["cmap"], help=f"depth colour map (default: {d['cmap']})"
    )
    parser.add_argument(
        "--alpha",
        type=float,
        default=d["alpha"],
        help=f"opacity of the segmentation overlay (0..1, default {d['alpha']})",
    )
    parser.add_argument(
        "--ply-stride",
        type=int,
        default=d["ply_stride"],
        help=f"keep every N-th row and column in the PLY (default {d['ply_stride']})",
    )
    parser.add_argument(
        "--intrinsics",
        metavar="FX,FY,CX,CY",
        default=d["intrinsics"],
        help="pinhole intrinsics at the image size (0-based pixel centres); default: the dataset's, scaled to "
        "each image",
    )


def check_model_options(args: argparse.Namespace) -> tuple[float, float, float, float] | None:
    """Refuse bad shared options (one line naming the option); returns the parsed ``--intrinsics``.

    Raises:
        InputError: ``--alpha`` outside 0..1, ``--max-side`` below 8 (other than 0), ``--ply-stride`` below 1,
            unparsable ``--intrinsics``, a ``--runtime`` that cannot run this kind of model (before it is loaded).
    """
    check_runtime_source(args.runtime, onnx=args.onnx is not None, where="--runtime")
    if not 0.0 <= args.alpha <= 1.0:
        raise InputError(f"--alpha: must be in 0..1, got {args.alpha}")
    if args.max_side and args.max_side < 8:
        raise InputError(f"--max-side: must be >= 8 (or 0), got {args.max_side}")
    if args.ply_stride < 1:
        raise InputError(f"--ply-stride: must be >= 1, got {args.ply_stride}")
    return parse_intrinsics(args.intrinsics) if args.intrinsics else None


def load_predictor(args: argparse.Namespace) -> Predictor:
    """The :class:`~cinet.inference.predictor.Predictor` of ``--checkpoint`` / ``--onnx`` / ``--pretrained``
    with ``--device``, ``--fit``, ``--max-side`` (0: none) and, where the command has it, ``--keep-size``."""
    from cinet.inference.predictor import Predictor

    opts = {
        "mode": args.fit,
        "max_side": args.max_side or None,
        "keep_size": getattr(args, "keep_size", False),
        "runtime": args.runtime,
    }
    try:
        if args.onnx is not None:
            return Predictor.from_onnx(args.onnx, device=args.device, **opts)
        if getattr(args, "pretrained", None) is not None:
            return Predictor.from_pretrained(args.pretrained, device=args.device, **opts)
        return Predictor.from_checkpoint(args.checkpoint, device=args.device, **opts)
    except RuntimeChoiceError as exc:  # name the option
        raise InputError(f"--runtime: {exc.detail}") from None
