"""Headers and sizes: scan the input files before any work, from their headers where a size is all that is needed.

* ``cinet predict``: every input's header (:func:`check_images` with ``decode=False``), the sizes the image reader
  will return (:func:`image_sizes`, EXIF-turned) checked against the memory, the ``--attention`` pixels and the
  camera (:func:`check_before_writing`), then every pixel once (:func:`check_images`) before the output folder
  exists.
* ``cinet train`` / ``eval``: the sizes of every sample of a split whose dataset reads them from the file headers
  (:func:`header_sizes_of`: the folder dataset's :meth:`~cinet.data.folder.FolderDataset.header_sizes`, which
  also refuses a sample whose image and maps differ and an EXIF-turned photo with maps), refused when one batch
  would hold two sizes (:func:`check_split_sizes`), the largest one for the memory checks
  (:func:`largest_image_size`).

The per-sample checks of a reader (sizes within a sample, EXIF orientation, label ids) stay in the readers
(:mod:`cinet.data.base`), where every sample is read.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cinet.errors import DataError, InputError, first_line

if TYPE_CHECKING:
    from cinet.inference.predictor import Predictor

logger = logging.getLogger(__name__)

__all__ = [
    "check_before_writing",
    "check_images",
    "check_split_sizes",
    "header_sizes_of",
    "image_problem",
    "image_sizes",
    "largest_image_size",
]


def image_problem(path: Path, *, decode: bool = True) -> str | None:
    """None when PIL can read ``path`` (its header; with ``decode``, every pixel), else the reason (not an
    image, corrupt, truncated).

    Every input's header is read first (the memory check needs only the size), then every input is decoded once
    before anything is written, so a bad file stops the run with no output. No pixel limit
    (:func:`cinet.data.base.no_pixel_limit`): the memory check decides what is too large.
    """
    from PIL import Image, UnidentifiedImageError

    from cinet.data.base import no_pixel_limit  # local: cinet --help loads this module, data.base loads torch

    try:
        with no_pixel_limit(), Image.open(path) as img:
            if decode:
                img.load()
        return None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        return first_line(exc)


def check_images(files: list[Path], skip_bad: bool, *, decode: bool = True) -> list[Path]:
    """Keep the files PIL can read (``decode``: completely; else their header); a bad one raises InputError
    naming it unless ``skip_bad``."""
    good = []
    for f in files:
        reason = image_problem(f, decode=decode)
        if reason is None:
            good.append(f)
        elif skip_bad:
            logger.warning("%s: skipped, not an image (%s)", f, reason)
        else:
            raise InputError(f"{f}: not an image, or corrupt ({reason}); use --skip-bad to skip such files")
    return good


def image_sizes(files: list[Path]) -> list[tuple[int, int]]:
    """``(height, width)`` of each file as the image reader returns it (EXIF-turned), from the headers only."""
    from cinet.data.base import header_size  # local: cinet --help loads this module, data.base loads torch

    return [header_size(f, turned=True) for f in files]


def check_before_writing(
    predictor: Predictor,
    files: list[Path],
    points: list[tuple[float, float]],
    *,
    ply_needs_camera: bool = False,
) -> None:
    """Refuse, before anything is written, an image too large for the free memory (names ``--max-side``),
    smaller than an ``--attention`` pixel, or (``ply_needs_camera``: ``--ply`` without ``--intrinsics``) of
    another aspect ratio than the dataset's camera, whose intrinsics would stretch its point cloud (names the
    file)."""
    for f, (height, width) in zip(files, image_sizes(files)):
        predictor.check_fits(height, width, name=str(f))
        if ply_needs_camera and predictor.info.intrinsics_for(width, height) is None:
            raise InputError(
                f"{f}: {predictor.info.intrinsics_note(width, height)}; pass --intrinsics fx,fy,cx,cy"
            )
        for x, y in points:
            if not (0 <= x < width and 0 <= y < height):
                raise InputError(
                    f"{f}: --attention pixel ({x:g}, {y:g}) is outside the {width}x{height} image"
                )


def header_sizes_of(dataset: Any) -> list[tuple[str, tuple[int, int]]] | None:
    """``(image file, (H, W))`` of every sample from the file headers, for a dataset that can read them (the
    folder dataset, also inside the engine's wrappers); None for the others.

    Raises:
        DataError: A sample whose image and maps differ in size, an EXIF-turned photo with maps, or an
            unreadable header (named by the reader).
    """
    header_sizes = getattr(getattr(dataset, "dataset", dataset), "header_sizes", None)
    return header_sizes() if header_sizes is not None else None


def largest_image_size(dataset: Any) -> tuple[int, int]:
    """``(H, W)`` of the largest sample (by pixels) from the headers (:func:`header_sizes_of`), else of the
    first sample as the dataset returns it. ``dataset`` must not be empty."""
    sizes = header_sizes_of(dataset)
    if sizes is not None:
        return max((size for _, size in sizes), key=lambda hw: hw[0] * hw[1])
    height, width = (int(v) for v in dataset[0]["image"].shape[-2:])
    return height, width


def check_split_sizes(dataset: Any, which: str, batch_size: int, same_size: bool, hint: str) -> None:
    """Refuse a split whose loader would batch images of different sizes, from the headers, before any work.

    Training batches are shuffled (any two images can meet); evaluation batches are consecutive samples, as one
    process loads them. The headers are read for every dataset that can (each sample's image and maps agree);
    the sizes are not compared for a batch of one, or when every image is resized or cropped to one size.

    Args:
        dataset: The split's dataset.
        which: ``train``, ``val`` or ``test``.
        batch_size: Images per batch of this split's loader.
        same_size: The transform gives every image one size (``data.image_size``; ``data.crop_size`` in
            training).
        hint: What to change, for the message.

    Raises:
        DataError: Naming two files of different sizes, the batch setting and ``hint``.
    """
    sizes = header_sizes_of(dataset)  # read in every case: it checks each sample's image against its maps
    if sizes is None or batch_size < 2 or same_size:
        return
    groups = (
        [sizes] if which == "train" else [sizes[i : i + batch_size] for i in range(0, len(sizes), batch_size)]
    )
    for group in groups:
        first_file, first = group[0]
        for file, size in group[1:]:
            if size != first:
                key = "batch_size" if which == "train" else "eval_batch_size"
                raise DataError(
                    f"{first_file}, {file}: images of the {which} split differ in size "
                    f"({first[1]}x{first[0]}, {size[1]}x{size[0]}) and one batch of data.{key}={batch_size} "
                    f"would hold both; {hint}"
                )
