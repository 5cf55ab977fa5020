"""Turn predictions into images: 16-bit depth PNGs, colour maps, palettes, overlays and side-by-side panels.

All functions take and return numpy arrays (``HxW`` maps, ``HxWx3`` uint8 RGB); :func:`save_png` writes any of
them atomically (:mod:`cinet.utils.io`), so an interrupted run never leaves a half-written file.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cinet.utils.io import atomic_write_bytes

DEPTH_PNG_SCALE = 1000.0  # uint16 depth PNG: millimetres
DEPTH_PNG_MAX = 65535  # 65.535 m
DEFAULT_DEPTH_CMAP = "turbo"


# --------------------------------------------------------------------------------------------- depth


def depth_to_uint16(depth: np.ndarray) -> np.ndarray:
    """Metres -> uint16 millimetres (the depth PNG format).

    ``0`` marks invalid pixels (non-finite or <= 0). Valid depths are rounded to the nearest millimetre, at
    least 1 mm (so a valid pixel never reads as invalid) and saturated at 65535 (65.535 m).
    """
    d = np.asarray(depth, dtype=np.float64)
    valid = np.isfinite(d) & (d > 0)
    mm = np.where(valid, np.rint(np.where(valid, d, 0.0) * DEPTH_PNG_SCALE), 0.0)
    mm = np.where(valid, np.clip(mm, 1, DEPTH_PNG_MAX), 0)
    return mm.astype(np.uint16)


def uint16_to_depth(png: np.ndarray) -> np.ndarray:
    """uint16 millimetres -> float32 metres (0 stays 0 = invalid)."""
    return np.asarray(png, dtype=np.float32) / np.float32(DEPTH_PNG_SCALE)


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


# --------------------------------------------------------------------------------------------- segmentation


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


def overlay(image: np.ndarray, colors: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend a colour image over ``image``: ``(1 - alpha) * image + alpha * colors`` (uint8)."""
    out = (1.0 - alpha) * image.astype(np.float32) + alpha * colors.astype(np.float32)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def heatmap_overlay(
    image: np.ndarray,
    heat: np.ndarray,
    *,
    alpha: float = 0.55,
    cmap: str = "jet",
    marker: tuple[float, float] | None = None,
) -> np.ndarray:
    """Lay a heat map (values in [0, 1], image size) over ``image``; optionally mark a pixel (x, y) with a cross."""
    out = overlay(image, colorize(heat, 0.0, 1.0, cmap), alpha)
    if marker is not None:
        h, w = out.shape[:2]
        x, y = round(marker[0]), round(marker[1])
        r = max(2, min(h, w) // 40)
        for dx in range(-r, r + 1):
            for px, py in ((x + dx, y), (x, y + dx)):
                if 0 <= px < w and 0 <= py < h:
                    out[py, px] = (255, 255, 255) if abs(dx) < r else (0, 0, 0)
    return out


# --------------------------------------------------------------------------------------------- panels


def _caption(text: str, width: int, height: int) -> np.ndarray:
    from PIL import Image, ImageDraw, ImageFont

    strip = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(strip)
    try:
        font = ImageFont.load_default(size=max(8, height - 6))
    except TypeError:  # Pillow < 10.1: fixed-size bitmap font
        font = ImageFont.load_default()
    try:
        draw.text((3, 1), text, fill=(0, 0, 0), font=font)
    except UnicodeEncodeError:  # a bitmap font (no FreeType) holds Latin-1 only: escape the rest (names)
        draw.text(
            (3, 1), text.encode("latin-1", "backslashreplace").decode("latin-1"), fill=(0, 0, 0), font=font
        )
    return np.asarray(strip, dtype=np.uint8)


def make_panel(
    tiles: Sequence[np.ndarray], captions: Sequence[str] | None = None, gap: int = 0
) -> np.ndarray:
    """Put ``HxWx3`` tiles of one height side by side, with an optional caption strip above each.

    The caption strip is ``max(12, H // 12)`` pixels high; text that does not fit is cut.
    """
    h = tiles[0].shape[0]
    if any(t.shape[0] != h for t in tiles):
        raise ValueError("make_panel: all tiles need the same height")
    columns = []
    for i, tile in enumerate(tiles):
        col = tile
        if captions is not None:
            strip = _caption(captions[i], tile.shape[1], max(12, h // 12))
            col = np.concatenate([strip, tile], axis=0)
        columns.append(col)
        if gap and i < len(tiles) - 1:
            columns.append(np.full((col.shape[0], gap, 3), 255, dtype=np.uint8))
    return np.concatenate(columns, axis=1)


# --------------------------------------------------------------------------------------------- files


def encode_png(array: np.ndarray, text: dict[str, str] | None = None) -> bytes:
    """PNG bytes of a uint8 ``HxW`` / ``HxWx3`` or uint16 ``HxW`` array, with optional tEXt entries."""
    from PIL import Image, PngImagePlugin

    arr = np.ascontiguousarray(array)
    if arr.dtype == np.uint16:
        if arr.ndim != 2:
            raise ValueError("16-bit PNGs must be single-channel")
        img = Image.fromarray(arr)  # mode I;16
    elif arr.dtype == np.uint8:
        img = Image.fromarray(arr, "L" if arr.ndim == 2 else "RGB")
    else:
        raise ValueError(f"encode_png: uint8 or uint16 arrays only, got {arr.dtype}")
    info = None
    if text:
        info = PngImagePlugin.PngInfo()
        for k, v in text.items():
            info.add_text(k, v)
    buf = io.BytesIO()
    img.save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


def save_png(path: str | Path, array: np.ndarray, text: dict[str, str] | None = None) -> Path:
    """Write an array as PNG atomically (see :func:`encode_png`)."""
    p = Path(path)
    atomic_write_bytes(p, encode_png(array, text))
    return p
