"""Colour maps for depth and class-id maps: numpy in, ``HxWx3`` uint8 out.

Pure functions below every layer that draws (the training images of :mod:`cinet.engine.callbacks`, the files
and page of :mod:`cinet.inference`), so the engine and inference need not import each other for a colour.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np

DEFAULT_DEPTH_CMAP = "turbo"
DEPTH_CMAPS = ("turbo", "magma", "viridis", "inferno", "plasma")  # the choices of --cmap (perceptual maps)

__all__ = [
    "DEFAULT_DEPTH_CMAP",
    "DEPTH_CMAPS",
    "colorize",
    "colorize_depth",
    "colorize_labels",
    "colormap_lut",
    "depth_range",
]


@functools.cache
def colormap_lut(name: str) -> np.ndarray:
    """A 256x3 uint8 lookup table of a matplotlib colour map (``turbo``, ``magma``, ``viridis``, ...)."""
    import matplotlib

    cmap = matplotlib.colormaps[name]
    return np.rint(cmap(np.linspace(0.0, 1.0, 256))[:, :3] * 255.0).astype(np.uint8)


def depth_range(depth: np.ndarray) -> tuple[float, float]:
    """``(min, max)`` of the valid (finite, > 0) depths; ``(0, 1)`` when none is valid."""
    d = np.asarray(depth)
    valid = d[np.isfinite(d) & (d > 0)]
    if valid.size == 0:
        return 0.0, 1.0
    return float(valid.min()), float(valid.max())


def colorize(values: np.ndarray, vmin: float, vmax: float, cmap: str = DEFAULT_DEPTH_CMAP) -> np.ndarray:
    """Map ``values`` linearly from ``[vmin, vmax]`` onto a colour map -> ``HxWx3`` uint8 (non-finite -> black)."""
    v = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(v)
    t = (np.where(finite, v, vmin) - vmin) / max(vmax - vmin, 1e-12)
    idx = np.clip(np.rint(t * 255.0), 0, 255).astype(np.uint8)
    rgb = colormap_lut(cmap)[idx]
    rgb[~finite] = 0
    return rgb


def colorize_depth(
    depth: np.ndarray,
    vmin: float | None = None,
    vmax: float | None = None,
    cmap: str = DEFAULT_DEPTH_CMAP,
) -> tuple[np.ndarray, tuple[float, float]]:
    """Depth in metres -> perceptual colour image (near = start of the map: blue for turbo, black for magma).

    Args:
        depth: ``HxW`` metres.
        vmin: Depth shown at the low end of the map (default: smallest valid depth).
        vmax: Depth shown at the high end (default: largest valid depth).
        cmap: A matplotlib colour map; perceptually uniform ones are ``turbo`` (default), ``magma``, ``viridis``.

    Returns:
        ``(HxWx3 uint8, (vmin, vmax))`` — the range used, which should be stated with the image. Invalid
        pixels (<= 0, non-finite) are black.
    """
    lo, hi = depth_range(depth)
    vmin = lo if vmin is None else float(vmin)
    vmax = hi if vmax is None else float(vmax)
    if vmax <= vmin:
        vmax = vmin + 1e-3
    d = np.asarray(depth, dtype=np.float64)
    rgb = colorize(d, vmin, vmax, cmap)
    rgb[~(np.isfinite(d) & (d > 0))] = 0
    return rgb, (vmin, vmax)


def colorize_labels(
    labels: np.ndarray, palette: Sequence[Sequence[int]], void_color: Sequence[int] = (0, 0, 0)
) -> np.ndarray:
    """Class ids -> ``HxWx3`` uint8 with the dataset's palette; ids outside the palette get ``void_color``."""
    lut = np.zeros((max(256, len(palette) + 1), 3), dtype=np.uint8)
    lut[:] = np.asarray(void_color, dtype=np.uint8)
    lut[: len(palette)] = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)
    ids = np.asarray(labels).astype(np.int64)
    ids = np.where((ids >= 0) & (ids < len(lut)), ids, len(lut) - 1)
    return lut[ids]
