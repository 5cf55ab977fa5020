"""Memory: estimate what a forward pass or a preview needs, and refuse what cannot fit, before any work.

The estimates (:func:`available_bytes`, :func:`output_bytes`, :func:`measure_bytes_per_pixel`) and the refusals
with plain arguments (:func:`check_image_fits`: ``cinet predict`` / ``serve`` / :class:`cinet.Predictor`, again
per batch; :func:`check_preview_memory`: ``cinet data preview``). The evaluation's check, which names config
keys, is :func:`cinet.checks.model.check_eval_memory`.

This module imports only torch and :mod:`cinet.errors` and takes plain arguments, so the predictor (which checks
again before each batch, after the up-front check of its command) can use it without importing a layer above
its own. Sizes are ``(H, W)`` in pixels; messages write them WxH.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence

import torch

from cinet.errors import DataError, InputError

logger = logging.getLogger(__name__)

__all__ = [
    "LOADED_BYTES_PER_PIXEL",
    "MEASURE_SIDE",
    "MEMORY_CHECK_MIN_PIXELS",
    "MEMORY_FRACTION",
    "PREVIEW_BYTES_PER_PIXEL",
    "SUGGEST_MARGIN",
    "available_bytes",
    "check_image_fits",
    "check_preview_memory",
    "measure_bytes_per_pixel",
    "output_bytes",
]

#: Images up to this many pixels (x batch), at the network input and at their own size (the results), are not
#: checked against the free memory.
MEMORY_CHECK_MIN_PIXELS = 2**20
#: Share of the free memory a forward pass may plan to use (the rest: allocator slack, other processes).
MEMORY_FRACTION = 0.9
#: Bytes per pixel of the original image that a run holds when the check runs again before the forward pass (the
#: decoded uint8 RGB, and one copy of it): the ``--max-side`` an error suggests is sized for the free memory minus
#: these (:func:`check_image_fits`). The float tensors are made after that check.
LOADED_BYTES_PER_PIXEL = 6
#: The suggested ``--max-side`` plans for this share of what is left, for the free memory of the next run differing
#: from this one's (measured: 0.3-0.5 GiB of 19-20 GiB between two runs of the same command).
SUGGEST_MARGIN = 0.95
#: Side of the square input of the one-time memory measurement (>= 1024 SUM positions: the tiled path).
MEASURE_SIDE = 256
#: Peak memory of ``data preview`` per pixel of a sample, measured: a 20000x15000 folder image peaked at 20.6 GB
#: (69 bytes per pixel: the decoded image, float tensors, colourised depth and labels, the figure).
PREVIEW_BYTES_PER_PIXEL = 72

GIB = 2.0**30


def available_bytes(device: torch.device) -> int | None:
    """Free memory for a forward pass on ``device`` (bytes), or None when unknown.

    CUDA: ``torch.cuda.mem_get_info`` plus what PyTorch's caching allocator holds unused. CPU: Linux
    ``MemAvailable`` of ``/proc/meminfo``, else ``os.sysconf`` available pages.
    """
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    if device.type != "cpu":
        return None
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def output_bytes(height: int, width: int, padded: tuple[int, int], batch: int, num_classes: int) -> int:
    """Bytes of a forward's input and outputs beside its activations: float32 depth, logits and their softmax /
    argmax at the image size (``height`` x ``width``), and the network input with its outputs at ``padded``
    (H, W). Part of :meth:`cinet.Predictor.forward_bytes` and of the evaluation's memory check."""
    ph, pw = padded
    return batch * height * width * 4 * (2 * num_classes + 2) + batch * ph * pw * 4 * (3 + num_classes + 1)


def measure_bytes_per_pixel(model: torch.nn.Module, device: torch.device) -> float:
    """Activation peak of one inference forward per input pixel, measured with fake tensors (no compute).

    Source: ``torch.distributed._tools.mem_tracker.MemTracker`` under ``FakeTensorMode`` (PyTorch's memory
    estimator). Returns 0 where it cannot run (the memory check is then skipped).
    """
    try:
        from torch._subclasses.fake_tensor import FakeTensorMode
        from torch.distributed._tools.mem_tracker import MemTracker

        with FakeTensorMode(allow_non_fake_inputs=True):
            x = torch.empty(1, 3, MEASURE_SIDE, MEASURE_SIDE, device=device)
            tracker = MemTracker()
            tracker.track_external(model)
            with tracker, torch.inference_mode():
                model(x)
            peak = tracker.get_tracker_snapshot("peak")
        act = sum(
            v
            for per_device in peak.values()
            for k, v in per_device.items()
            if str(k).endswith(("ACT", "TEMP"))
        )
        return act / float(MEASURE_SIDE * MEASURE_SIDE)
    except Exception as exc:  # a private PyTorch API: never let the estimate break a prediction
        logger.debug("forward memory not measured (%s: %s)", type(exc).__name__, exc)
        return 0.0


def check_image_fits(
    estimate: Callable[[int | None], int],
    height: int,
    width: int,
    batch: int = 1,
    *,
    network_pixels: int,
    max_side: int | None,
    min_side: int,
    device: torch.device,
    name: str = "<image>",
) -> None:
    """Refuse, before any work, an image whose forward pass cannot fit in the device's free memory.

    Only images larger than :data:`MEMORY_CHECK_MIN_PIXELS`, at the network input or at the image size, are
    checked (smaller ones fit anywhere cinet runs, and the one-time measurement behind ``estimate`` is then
    skipped).

    The image fits when its estimate is at most :data:`MEMORY_FRACTION` of the free memory. The
    ``--max-side`` the error suggests fits in that share of the free memory minus what the run itself holds
    when the check runs again before the forward pass (the decoded image, :data:`LOADED_BYTES_PER_PIXEL`
    bytes per pixel of the original) and :data:`SUGGEST_MARGIN` of that, so that running again with the
    suggestion passes both checks. (Measured: an 8000x6000 photo, whose float tensors were made before this
    second check in an earlier version, took 0.9 GiB between the two checks and was refused with the first
    suggestion.)

    Args:
        estimate: Peak bytes of predicting ``batch`` images of ``height`` x ``width`` with the network's longer
            side capped at the given ``max_side`` (None: no cap); monotone in ``max_side``
            (:meth:`cinet.Predictor.forward_bytes`).
        height: Image rows.
        width: Image columns.
        batch: Images per forward pass.
        network_pixels: Pixels of the (padded) network input at the current ``max_side``.
        max_side: The current cap on the network's longer side (None: none).
        min_side: The smallest cap to suggest (the padding multiple).
        device: Where the forward runs.
        name: What the error calls the image (its file).

    Raises:
        InputError: One line naming the file, the memory needed and free, and the ``--max-side`` (the
            ``max_side`` option of :class:`cinet.Predictor`) that fits; or, when even the smallest input leaves
            the full-size results too large, saying to downscale the file.
    """
    # the results are at the image size
    if max(network_pixels, height * width) * batch <= MEMORY_CHECK_MIN_PIXELS:
        return
    free = available_bytes(device)
    need = estimate(max_side)
    if free is None or need <= MEMORY_FRACTION * free:
        return
    budget = SUGGEST_MARGIN * (free - LOADED_BYTES_PER_PIXEL * height * width * batch)
    lo, hi = min_side, max(height, width)  # largest max_side whose estimate fits (monotone in max_side)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if estimate(mid) <= MEMORY_FRACTION * budget:
            lo = mid
        else:
            hi = mid - 1
    smallest = estimate(lo)
    if smallest > MEMORY_FRACTION * budget:  # the full-size results alone do not fit: no --max-side helps
        raise InputError(
            f"{name}: a {width}x{height} image needs about {need / GIB:.1f} GiB to predict on {device}, "
            f"more than {MEMORY_FRACTION:.0%} of the {free / GIB:.1f} GiB free, and still "
            f"{smallest / GIB:.1f} GiB at any --max-side (the results come back at the image size): "
            "downscale the file first"
        )
    raise InputError(
        f"{name}: a {width}x{height} image needs about {need / GIB:.1f} GiB to predict on {device}, "
        f"more than {MEMORY_FRACTION:.0%} of the {free / GIB:.1f} GiB free; pass --max-side {lo} (or less) "
        "to predict it at a lower resolution"
    )


def check_preview_memory(sizes: Sequence[tuple[str, tuple[int, int]]]) -> None:
    """Refuse, before any sample is decoded, a preview whose largest image cannot fit in the free memory.

    Args:
        sizes: ``(file, (H, W))`` of the samples to preview, from their headers
            (:meth:`cinet.data.folder.FolderDataset.header_sizes`); each needs :data:`PREVIEW_BYTES_PER_PIXEL`
            bytes per pixel, checked against :data:`MEMORY_FRACTION` of the free memory.

    Raises:
        DataError: One line naming the file, its size, the memory needed and free.
    """
    free = available_bytes(torch.device("cpu"))
    for file, (h, w) in sizes:
        need = PREVIEW_BYTES_PER_PIXEL * h * w
        if free is not None and need > MEMORY_FRACTION * free:
            raise DataError(
                f"{file}: a {w}x{h} image needs about {need / GIB:.1f} GiB to preview, more than "
                f"{MEMORY_FRACTION:.0%} of the {free / GIB:.1f} GiB free; downscale the file"
            )
