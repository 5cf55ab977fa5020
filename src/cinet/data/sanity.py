"""Sanity checks of a dataset's values that no file format can catch: is the depth in the right unit?

A depth PNG read with the wrong ``depth_scale`` (``1`` on millimetre PNGs, or ``1000`` on NYU-style exports
stored as metres x 5000) gives depths that are all valid numbers but wrong by a constant factor: training loss in
the thousands, every depth metric null or δ1 = 0, and no error. :func:`depth_summary` reads the raw depth of a few
samples and :func:`depth_warning` turns a summary that is mostly outside the dataset's depth range (or entirely
invalid) into one line naming the observed range and the setting to check.

A wrong unit can also land *inside* the range (issue 25: depth PNGs in whole metres, values 1..10, read as
millimetres give 0.001-0.01 m, all valid). Two more signs, independent of the range, catch that kind:

* the median valid depth is below :data:`MIN_SCENE_MEDIAN` (a camera does not see a scene at a few
  centimetres: 5 mm of median depth is a unit error, whatever the dataset's valid range says);
* the values are coarsely quantised: at most :data:`MAX_COARSE_LEVELS` distinct values whose smallest step is
  at least :data:`COARSE_STEP` of the median (whole metres: steps of 1 on values around 3-5; a millimetre PNG
  of a real scene has steps of 1 on values around 3000).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

#: A depth set is suspicious when less than this fraction of its valid pixels lies in the dataset's range.
MIN_IN_RANGE = 0.5
#: Metres: a median valid depth below this is not a scene seen by a depth camera (a unit error).
MIN_SCENE_MEDIAN = 0.1
#: At most this many distinct valid depth values, ...
MAX_COARSE_LEVELS = 64
#: ... with a smallest step of at least this fraction of the median, is depth stored in whole (large) units.
COARSE_STEP = 0.05
#: Fewest valid pixels for the quantisation check (a few pixels have few distinct values anyway).
MIN_PIXELS_FOR_LEVELS = 1000


@dataclass(frozen=True)
class DepthSummary:
    """Valid (finite, > 0) depth values of a few samples, in metres.

    Attributes:
        samples: Number of samples read.
        pixels: Number of pixels read.
        valid: Number of valid depth pixels.
        in_range: Fraction of the valid pixels inside ``[min_depth, depth_cap]`` (0 when none is valid).
        low: 1st percentile of the valid depths (metres; 0 when none is valid).
        median: Median of the valid depths (metres).
        high: 99th percentile of the valid depths (metres).
        min_depth: The dataset's smallest valid depth (metres).
        depth_cap: The dataset's largest depth (metres).
        levels: Number of distinct valid depth values.
        step: Smallest difference between two distinct valid depths (metres; 0 with fewer than 2 values).
    """

    samples: int
    pixels: int
    valid: int
    in_range: float
    low: float
    median: float
    high: float
    min_depth: float
    depth_cap: float
    levels: int = 0
    step: float = 0.0

    def describe(self) -> str:
        """E.g. ``observed 1.517-5.228 m (median 2.965 m) in 4 samples`` (the range: 1st-99th percentile)."""
        if self.valid == 0:
            return f"no valid depth in {self.samples} samples"
        return f"observed {self.low:.4g}-{self.high:.4g} m (1st-99th percentile, median {self.median:.4g} m) in {self.samples} samples"


def _raw_depth(dataset: Any, index: int) -> np.ndarray | None:
    """Depth of sample ``index`` in metres before any transform (None when the dataset cannot say)."""
    base = getattr(dataset, "dataset", dataset)  # CachedDataset / SeededDataset wrap the dataset
    load = getattr(base, "_load", None)
    if load is None:
        return None
    with base.sample_context(index):
        return np.asarray(load(index)["depth"], dtype=np.float32)


def depth_summary(dataset: Any, num: int = 8) -> DepthSummary | None:
    """Summarise the raw depth of ``num`` samples spread evenly over ``dataset``.

    Args:
        dataset: A :class:`cinet.data.base.BaseDataset` (or a wrapper with ``.dataset``).
        num: Samples to read (at most the dataset's length).

    Returns:
        The summary, or None for a dataset without raw depth access or without samples.

    Raises:
        DataError: A sample cannot be read (names the file).
    """
    n = len(dataset)
    base = getattr(dataset, "dataset", dataset)
    if n == 0 or getattr(base, "depth_dir", True) is None:  # a folder dataset without depth/ (warned already)
        return None
    info = base.info
    k = min(num, n)
    picks = sorted({round(i * (n - 1) / max(k - 1, 1)) for i in range(k)})
    values, pixels = [], 0
    for i in picks:
        depth = _raw_depth(dataset, i)
        if depth is None:
            return None
        pixels += depth.size
        values.append(depth[np.isfinite(depth) & (depth > 0)])
    valid = np.concatenate(values) if values else np.zeros(0, np.float32)
    if valid.size == 0:
        return DepthSummary(len(picks), pixels, 0, 0.0, 0.0, 0.0, 0.0, info.min_depth, info.depth_cap)
    inside = float(((valid >= info.min_depth) & (valid <= info.depth_cap)).mean())
    lo, med, hi = (float(v) for v in np.percentile(valid, [1, 50, 99]))
    levels = np.unique(valid)
    step = float(np.diff(levels).min()) if levels.size > 1 else 0.0
    return DepthSummary(
        len(picks),
        pixels,
        int(valid.size),
        inside,
        lo,
        med,
        hi,
        info.min_depth,
        info.depth_cap,
        levels=int(levels.size),
        step=step,
    )


def depth_warning(summary: DepthSummary | None, where: str, setting: str = "depth_scale") -> str | None:
    """One line when the depth looks like the wrong unit, else None.

    Signs, in order: all invalid; mostly outside the dataset's range; a median too small for a scene
    (:data:`MIN_SCENE_MEDIAN`); coarse quantisation (:data:`MAX_COARSE_LEVELS`, :data:`COARSE_STEP`).

    Args:
        summary: From :func:`depth_summary`.
        where: What was read (dataset root or name), first in the line.
        setting: The setting to check (a folder dataset's depth scale; :func:`cinet.build.data.depth_setting`).
    """
    if summary is None:
        return None
    if summary.valid == 0:
        return (
            f"{where}: no valid depth (all 0 or non-finite) in {summary.samples} samples; "
            f"check {setting} and the depth files"
        )
    if summary.in_range < MIN_IN_RANGE:
        return (
            f"{where}: {100 * (1 - summary.in_range):.0f}% of valid depth is outside the dataset's range "
            f"{summary.min_depth:g}-{summary.depth_cap:g} m ({summary.describe()}); check {setting}"
        )
    if summary.median < MIN_SCENE_MEDIAN:
        return (
            f"{where}: the median valid depth is {summary.median:.4g} m, too close for a camera's view of a scene "
            f"({summary.describe()}); a depth unit 1000x too large (e.g. whole metres read as millimetres)? "
            f"check {setting}"
        )
    if (
        summary.valid >= MIN_PIXELS_FOR_LEVELS
        and 1 < summary.levels <= MAX_COARSE_LEVELS
        and summary.step >= COARSE_STEP * summary.median
    ):
        return (
            f"{where}: depth has only {summary.levels} distinct values, in steps of {summary.step:.4g} m around a "
            f"median of {summary.median:.4g} m ({summary.describe()}): stored in whole units (metres?) instead "
            f"of a fine unit (millimetres); check {setting} and how the depth files were written"
        )
    return None
