"""``cinet predict``: depth + segmentation files for images, folders and globs.

Per image ``<stem>``: ``_depth.png`` (uint16 mm, 0 = invalid), ``_depth_color.png``, ``_labels.png`` (uint8 ids),
``_seg_color.png``, ``_overlay.png`` and ``_panel.png`` (both with a legend of the classes present); optionally ``.ply`` (``--ply``), the SUM attention of a
pixel (``--attention X,Y``, Fig. 7) and the FSM / LSU features of Eq. 14 (``--features``, Fig. 8).

An existing file at any of these paths is replaced only when an earlier ``cinet predict`` wrote it (its PNG text
entry ``Software=cinet``, its PLY ``comment cinet`` line); any other file stops the command before the model
runs, with nothing written.

No torch import at module level (``cinet --help`` stays fast).
"""

from __future__ import annotations

import argparse
import collections
import glob
import logging
import math
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cinet.checks.files import check_before_writing, check_images
from cinet.checks.outputs import check_own_outputs, check_writable_dir, ensure_output_dir
from cinet.commands.common import PathArgument, add_model_options, check_model_options, load_predictor
from cinet.errors import InputError
from cinet.inference import IMAGE_EXTENSIONS
from cinet.utils.io import allocate_stems

if TYPE_CHECKING:
    from cinet.inference.files import FileOptions
    from cinet.inference.predictor import Prediction, Predictor

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the options of ``cinet predict`` (those shared with ``cinet serve``: :func:`add_model_options`)."""
    add_model_options(parser, onnx_note="runs with onnxruntime")
    parser.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        action=PathArgument,
        help="image files, folders or glob patterns",
    )
    parser.add_argument(
        "--out", type=Path, required=True, action=PathArgument, help="output folder (created if missing)"
    )
    parser.add_argument("--batch-size", type=int, default=1, help="images per forward pass (default: 1)")
    parser.add_argument(
        "--keep-size",
        action="store_true",
        help="run the network at each image's own size even when far from the size the checkpoint was trained "
        "at (default: such images are scaled to the training size, and a warning says so)",
    )
    parser.add_argument(
        "--skip-bad", action="store_true", help="skip unreadable / non-image files with a warning"
    )
    parser.add_argument(
        "--depth-range", metavar="MIN,MAX", default=None, help="fixed depth range of the colour map in metres"
    )
    parser.add_argument(
        "--ply", action="store_true", help="also write <stem>.ply (coloured, labelled points)"
    )
    parser.add_argument("--ply-ascii", action="store_true", help="write ASCII PLY instead of binary")
    parser.add_argument(
        "--attention",
        metavar="X,Y",
        action="append",
        default=[],
        help="write the SUM attention map of pixel (X column, Y row) over the image (Fig. 7); repeatable",
    )
    parser.add_argument(
        "--features",
        action="store_true",
        help="write the allocated features F_d, F_s of each FSM/LSU stage (Eq. 14, Fig. 8)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


# --------------------------------------------------------------------------------------------- inputs


def expand_inputs(items: list[str]) -> list[Path]:
    """Files, folders (their images, sorted, not recursive) and glob patterns -> file paths, duplicates dropped.

    Raises:
        InputError: A path that does not exist, a folder without images, or a pattern matching nothing.
    """
    files: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
            if not found:
                raise InputError(f"{path}: folder has no images ({', '.join(sorted(IMAGE_EXTENSIONS))})")
            files += found
        elif path.is_file():
            files.append(path)
        elif glob.has_magic(item):
            matches = sorted(Path(m) for m in glob.glob(item, recursive=True))
            found = [m for m in matches if m.is_file()]
            found += [
                p
                for m in matches
                if m.is_dir()
                for p in sorted(m.iterdir())
                if p.suffix.lower() in IMAGE_EXTENSIONS
            ]
            if not found:
                raise InputError(f"{item}: no file matches this pattern")
            files += found
        else:
            raise InputError(f"{path}: no such file or folder")
    seen: set[Path] = set()
    unique = []
    for f in files:
        key = f.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(f)
    return unique


OUTPUT_SUFFIXES = (
    "_depth.png",
    "_depth_color.png",
    "_labels.png",
    "_seg_color.png",
    "_overlay.png",
    "_panel.png",
)


def output_suffixes(args: argparse.Namespace, attention_points: list[tuple[float, float]]) -> list[str]:
    """Every file-name suffix one image's outputs get with these options (see :func:`write_outputs`)."""
    suffixes = list(OUTPUT_SUFFIXES)
    suffixes += [f"_attention_{x:g}_{y:g}.png" for x, y in attention_points]
    if getattr(args, "features", False):
        suffixes += [f"_features_stage{k}_{t}.png" for k in range(1, 10) for t in "ds"]
    if getattr(args, "ply", False):
        suffixes.append(".ply")
    return suffixes


def output_paths(out: Path, stems: Iterable[str], suffixes: Iterable[str]) -> list[Path]:
    """Every file ``cinet predict`` may write into ``out`` for these output stems (see :func:`output_suffixes`)."""
    suffixes = list(suffixes)
    return [out / f"{stem}{suffix}" for stem in stems for suffix in suffixes]


def inputs_in(out: Path | None, inputs: list[Path]) -> list[str]:
    """Names of the ``inputs`` that are files in folder ``out``: given there, or through a link that resolves
    there (output names must keep off them)."""
    if out is None or not out.is_dir():
        return []
    names = []
    for f in inputs:
        for p in (f, f.resolve()):
            if p.parent.exists() and os.path.samefile(p.parent, out):
                names.append(p.name)
    return names


def unique_stems(
    files: list[Path],
    suffixes: list[str] | tuple[str, ...] = OUTPUT_SUFFIXES,
    out: Path | None = None,
    inputs: list[Path] | None = None,
) -> list[str]:
    """Output stems of all inputs, decided up front (:func:`cinet.utils.io.allocate_stems`).

    Files with the same name in different folders get ``_2``, ``_3``... appended, never a number that is
    another input's own stem (``room_2.png``), so no output is written twice in one run; and no output takes
    the name of an input that sits in the output folder ``out`` (``room_depth.png`` next to ``room.png``
    predicted into its own folder; ``inputs``: every input given, also those skipped as unreadable, default
    ``files``), so no input is overwritten.
    """

    stems = allocate_stems([f.stem for f in files], suffixes, reserved=inputs_in(out, inputs or files))
    for f, stem in zip(files, stems):
        if stem != f.stem:
            logger.warning(
                "%s: another input has the stem %r or its output name; writing it as %r", f, f.stem, stem
            )
    return stems


def _pair(text: str, option: str, kind: type = float, names: str = "A,B") -> tuple[Any, Any]:
    try:
        a, b = (kind(v) for v in text.split(","))
    except ValueError:
        raise InputError(f"{option}: expected two numbers '{names}', got {text!r}") from None
    if not (math.isfinite(a) and math.isfinite(b)):  # float("nan"), float("inf") parse
        raise InputError(f"{option}: expected two finite numbers '{names}', got {text!r}")
    return a, b


# --------------------------------------------------------------------------------------------- outputs


def file_options(args: argparse.Namespace, attention_points: list[tuple[float, float]]) -> FileOptions:
    """The :class:`~cinet.inference.files.FileOptions` of parsed ``cinet predict`` arguments."""
    from cinet.inference.files import FileOptions

    return FileOptions(
        cmap=args.cmap,
        depth_range=args.depth_range_pair,
        alpha=args.alpha,
        attention_points=tuple(attention_points),
        features=args.features,
        ply=args.ply,
        ply_binary=not args.ply_ascii,
        ply_stride=args.ply_stride,
        intrinsics=args.intrinsics_tuple,
    )


def files_summary(paths: Iterable[Path]) -> str:
    """``"7 files: 6 .png, 1 .ply"``: how many files of each kind one image wrote (a line of predict's log)."""
    paths = list(paths)
    kinds = collections.Counter(p.suffix or "(no suffix)" for p in paths)
    return f"{len(paths)} files: " + ", ".join(f"{n} {suffix}" for suffix, n in sorted(kinds.items()))


def write_outputs(
    pred: Prediction,
    stem: str,
    out: Path,
    predictor: Predictor,
    args: argparse.Namespace,
    attention_points: list[tuple[float, float]],
    source: Path,
) -> list[Path]:
    """Write every requested file of one prediction (each atomically) and return their paths.

    The files come from :func:`cinet.inference.files.prediction_files`, which ``cinet serve`` uses too.
    """
    from cinet.inference.files import prediction_files

    files = prediction_files(
        pred,
        stem,
        predictor.info,
        file_options(args, attention_points),
        source=str(source),
        model_source=str(predictor.source),
    )
    return files.write(out)


# --------------------------------------------------------------------------------------------- run


def _check_requests(predictor: Predictor, args: argparse.Namespace) -> None:
    """Fail early, before any file is written, when the model cannot produce what was asked."""
    if args.attention or args.features:
        predictor.require_output_features("attention" if args.attention else "features")
    variant = predictor.model_kwargs.get("variant", "?")
    if args.attention and not predictor.has_attention:
        raise InputError(
            f"{predictor.source}: --attention needs a model with the SUM; variant {variant!r} has none "
            "(use sum, sum_fsm or cinet)"
        )
    if args.features and not predictor.has_sharing:
        raise InputError(
            f"{predictor.source}: --features needs a feature-sharing module (FSM / LSU); variant {variant!r} has none"
        )
    if args.ply and args.intrinsics_tuple is None and predictor.info.intrinsics is None:
        raise InputError(
            f"{predictor.source}: dataset {predictor.info.name!r} has no camera intrinsics; "
            "pass --intrinsics fx,fy,cx,cy"
        )


def run(args: argparse.Namespace) -> int:
    """Run ``cinet predict``; prints one line per image and a summary. Returns the exit code."""
    from tqdm import tqdm

    from cinet.inference.predictor import load_image

    if args.batch_size < 1:
        raise InputError(f"--batch-size: must be >= 1, got {args.batch_size}")
    args.intrinsics_tuple = check_model_options(args)
    args.depth_range_pair = (
        _pair(args.depth_range, "--depth-range", names="MIN,MAX") if args.depth_range else None
    )
    if args.depth_range_pair and not 0 <= args.depth_range_pair[0] < args.depth_range_pair[1]:
        raise InputError(f"--depth-range: need 0 <= MIN < MAX, got {args.depth_range}")
    points = [_pair(a, "--attention", names="X,Y") for a in args.attention]

    given = expand_inputs(args.inputs)
    files = check_images(given, args.skip_bad, decode=False)  # headers: sizes
    if not files:
        raise InputError(f"{', '.join(args.inputs)}: no readable images")
    check_writable_dir(args.out)  # creates nothing: every check below runs before the folder exists
    predictor = load_predictor(args)
    _check_requests(predictor, args)
    ply_needs_camera = bool(args.ply) and args.intrinsics_tuple is None
    check_before_writing(predictor, files, points, ply_needs_camera=ply_needs_camera)  # from the headers
    files = check_images(files, args.skip_bad)  # then every pixel, once: a truncated file stops the run here
    if not files:
        raise InputError(f"{', '.join(args.inputs)}: no readable images")
    suffixes = output_suffixes(args, points)
    stems = unique_stems(files, suffixes, args.out, given)
    # a file cinet did not write is never replaced: refused before the model runs, nothing written
    check_own_outputs(output_paths(args.out, stems, suffixes), "cinet predict")
    ensure_output_dir(args.out)
    keep_output = bool(points or args.features)

    written_paths: set[Path] = set()
    n_images = 0
    bar = tqdm(
        total=len(files), unit="img", disable=args.no_progress or not sys.stderr.isatty(), file=sys.stderr
    )
    try:
        for start in range(0, len(files), args.batch_size):
            chunk = list(zip(files[start : start + args.batch_size], stems[start : start + args.batch_size]))
            loaded = []
            for path, stem in chunk:
                try:
                    loaded.append((path, stem, load_image(path)))
                except InputError:
                    if not args.skip_bad:
                        raise
                    logger.warning("%s: skipped, cannot decode", path)
                    bar.update(1)
            if not loaded:
                continue
            preds = predictor.predict_batch(
                [img for _, _, img in loaded],
                batch_size=args.batch_size,
                return_output=keep_output,
                names=[str(path) for path, _, _ in loaded],
            )
            for (path, stem, _), pred in zip(loaded, preds):
                written = write_outputs(pred, stem, args.out, predictor, args, points, path)
                if written_paths.intersection(written):  # allocate_stems makes this impossible
                    raise RuntimeError(f"{path}: an output of an earlier image would be overwritten")
                written_paths.update(written)
                n_images += 1
                lo, hi = float(pred.depth.min()), float(pred.depth.max())
                msg = f"{path} -> {args.out / stem}* ({files_summary(written)}; depth {lo:.2f}-{hi:.2f} m)"
                tqdm.write(msg, file=sys.stdout)
                bar.update(1)
    finally:
        bar.close()
    n_written = sum(p.is_file() for p in written_paths)  # count what is on disk
    print(
        f"wrote {n_written} files for {n_images} image(s) to {os.fspath(args.out)} (runtime {predictor.runtime})"
    )
    return 0
