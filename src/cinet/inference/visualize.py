"""Turn predictions into images: 16-bit depth PNGs, colour maps, palettes, overlays and side-by-side panels.

The colour maps of depth and class ids are :mod:`cinet.utils.colors`' (shared with the training images
of :mod:`cinet.engine.callbacks`). All functions take and return numpy arrays (``HxW`` maps, ``HxWx3`` uint8 RGB); :func:`save_png` writes any of
them atomically (:mod:`cinet.utils.io`), so an interrupted run never leaves a half-written file.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cinet.utils.colors import DEFAULT_DEPTH_CMAP, colorize
from cinet.utils.io import atomic_write_bytes

DEPTH_PNG_SCALE = 1000.0  # uint16 depth PNG: millimetres
DEPTH_PNG_MAX = 65535  # 65.535 m


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


def depth_colorbar(
    vmin: float, vmax: float, width: int, cmap: str = DEFAULT_DEPTH_CMAP, height: int | None = None
) -> np.ndarray:
    """A horizontal colour bar for :func:`colorize_depth` images, labelled in metres.

    Args:
        vmin: Depth at the left end (metres), the low end of the colour map.
        vmax: Depth at the right end (metres).
        width: Bar width in pixels (the width of the depth image it goes with).
        cmap: The colour map of the depth image.
        height: Total height (gradient + label strip); default ``max(24, width // 16)``.

    Returns:
        ``height x width x 3`` uint8: the gradient on top, the labels ``vmin``, the middle and ``vmax`` in
        metres below it on white.
    """
    from PIL import Image, ImageDraw, ImageFont

    height = height or max(24, width // 16)
    bar_h = max(4, height // 2)
    t = np.linspace(0.0, 1.0, width)[None, :].repeat(bar_h, axis=0)
    bar = colorize(vmin + t * (vmax - vmin), vmin, vmax, cmap)
    strip = Image.new("RGB", (width, height - bar_h), (255, 255, 255))
    draw = ImageDraw.Draw(strip)
    try:
        font = ImageFont.load_default(size=max(8, height - bar_h - 3))
    except TypeError:  # Pillow < 10.1: fixed-size bitmap font
        font = ImageFont.load_default()
    labels = [(0.0, f"{vmin:.2f} m"), (0.5, f"{(vmin + vmax) / 2:.2f} m"), (1.0, f"{vmax:.2f} m")]
    for frac, text in labels:
        text_w = draw.textlength(text, font=font)
        x = min(max(frac * width - text_w / 2, 1), width - text_w - 1)
        draw.text((x, 0), text, fill=(0, 0, 0), font=font)
    return np.concatenate([bar, np.asarray(strip, dtype=np.uint8)], axis=0)


# --------------------------------------------------------------------------------------------- segmentation


def class_shares(labels: np.ndarray, num_classes: int) -> list[tuple[int, float]]:
    """The classes present in a label map and their share of the pixels, most frequent first.

    Args:
        labels: ``HxW`` class ids; ids outside ``0..num_classes-1`` (void) are not counted as a class.
        num_classes: Number of classes of the dataset.

    Returns:
        ``[(class id, share of all pixels in 0..1), ...]`` for every class with at least one pixel.
    """
    ids = np.asarray(labels).astype(np.int64).ravel()
    counts = np.bincount(ids[(ids >= 0) & (ids < num_classes)], minlength=num_classes)
    total = max(ids.size, 1)
    present = [(int(c), counts[c] / total) for c in np.nonzero(counts)[0]]
    return sorted(present, key=lambda item: (-item[1], item[0]))


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


def present_classes(labels: np.ndarray, num_classes: int, limit: int | None = None) -> list[int]:
    """Class ids present in ``labels`` (ignore / out-of-range ids left out), most frequent first.

    Args:
        labels: ``HxW`` class ids.
        num_classes: Ids ``>= num_classes`` (e.g. 255 = ignore) are not classes.
        limit: Keep at most this many (the most frequent).
    """
    ids = np.asarray(labels).astype(np.int64).ravel()
    counts = np.bincount(ids[(ids >= 0) & (ids < num_classes)], minlength=num_classes)
    order = [int(i) for i in np.argsort(-counts, kind="stable") if counts[i] > 0]
    return order[:limit] if limit is not None else order


def legend(
    class_ids: Sequence[int],
    names: Sequence[str],
    palette: Sequence[Sequence[int]],
    height: int,
    width: int | None = None,
    *,
    min_width: int = 60,
) -> np.ndarray:
    """A white ``height x width x 3`` uint8 column listing ``class_ids`` as a colour swatch and a name each.

    Rows are ``max(10, min(24, height // max(len(class_ids), 1)))`` pixels high; entries that do not fit are
    summarised as ``+N more``. ``width`` defaults to fit the longest name, and at least ``min_width`` pixels
    (e.g. the :func:`caption_width` of the panel caption above it).
    """
    from PIL import Image, ImageDraw

    n = len(class_ids)
    row = max(10, min(24, height // max(n, 1)))
    font = _font(max(8, row - 4))
    fits = max(1, height // row)
    shown = list(class_ids) if n <= fits else list(class_ids[: fits - 1])
    texts = [f"{names[i]}" for i in shown]
    if len(shown) < n:
        texts.append(f"+{n - len(shown)} more")
    if width is None:
        probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
        longest = max((probe.textlength(t, font=font) for t in texts), default=0)
        width = max(min_width, int(longest) + row + 8)
    img = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    for k, text in enumerate(texts):
        y = k * row
        if k < len(shown):
            draw.rectangle(
                [2, y + 2, row - 2, y + row - 2],
                fill=tuple(int(c) for c in palette[shown[k]]),
                outline=(0, 0, 0),
            )
        draw.text((row + 2, y + 1), text, fill=(0, 0, 0), font=font)
    return np.asarray(img, dtype=np.uint8)


def with_legend(
    image: np.ndarray, labels: np.ndarray, names: Sequence[str], palette: Sequence[Sequence[int]]
) -> np.ndarray:
    """``image`` (``HxWx3``) with a :func:`legend` of the classes present in ``labels`` appended on the right."""
    ids = present_classes(labels, len(names))
    return np.concatenate([image, legend(ids, names, palette, image.shape[0])], axis=1)


# --------------------------------------------------------------------------------------------- panels


def _font(size: int):  # type: ignore[no-untyped-def]
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: fixed-size bitmap font
        return ImageFont.load_default()


def caption_height(tile_height: int) -> int:
    """Height of :func:`make_panel`'s caption strip over tiles ``tile_height`` pixels high."""
    return max(12, tile_height // 12)


def caption_width(text: str, height: int) -> int:
    """Pixels a caption strip ``height`` high needs to show ``text`` whole (3 px margin each side)."""
    from PIL import Image, ImageDraw

    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    return _with_latin1_fallback(lambda t: int(probe.textlength(t, font=_caption_font(height))), text) + 6


def _caption_font(height: int) -> Any:
    return _font(max(8, height - 6))


def _with_latin1_fallback(draw: Callable[[str], Any], text: str) -> Any:
    """``draw(text)``; a bitmap font (no FreeType) holds Latin-1 only: on failure, the rest escaped (names)."""
    try:
        return draw(text)
    except UnicodeEncodeError:
        return draw(text.encode("latin-1", "backslashreplace").decode("latin-1"))


def _caption(text: str, width: int, height: int) -> np.ndarray:
    from PIL import Image, ImageDraw

    strip = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(strip)
    font = _caption_font(height)
    _with_latin1_fallback(lambda t: draw.text((3, 1), t, fill=(0, 0, 0), font=font), text)
    return np.asarray(strip, dtype=np.uint8)


def colorbar(
    vmin: float, vmax: float, width: int, cmap: str = DEFAULT_DEPTH_CMAP, unit: str = "m"
) -> np.ndarray:
    """A horizontal colour bar ``width`` wide: the map from ``vmin`` to ``vmax``, labelled at both ends."""
    bar_h = max(8, min(16, width // 20))
    ramp = colorize(np.tile(np.linspace(vmin, vmax, width), (bar_h, 1)), vmin, vmax, cmap)
    label = _caption(f"{vmin:.2f} {unit}", width, max(12, bar_h))
    right = _caption(f"{vmax:.2f} {unit}", width, max(12, bar_h))
    # the right label drawn right-aligned: take the left-drawn strip's text width from the right edge
    text_cols = np.flatnonzero((right < 128).any(axis=(0, 2)))
    if text_cols.size:
        shift = width - 3 - int(text_cols.max())
        right = np.roll(right, shift, axis=1)
        right[:, :shift] = 255
        merged = np.minimum(label, right)
    else:
        merged = label
    return np.concatenate([ramp, merged], axis=0)


def make_panel(
    tiles: Sequence[np.ndarray], captions: Sequence[str] | None = None, gap: int = 0
) -> np.ndarray:
    """Put ``HxWx3`` tiles of one height side by side, with an optional caption strip above each.

    The caption strip is :func:`caption_height` pixels high; text that does not fit is cut (size a
    :func:`legend` with ``min_width=caption_width(...)`` to show its caption whole). A tile may be wider or
    narrower than the others.
    """
    h = tiles[0].shape[0]
    if any(t.shape[0] != h for t in tiles):
        raise ValueError("make_panel: all tiles need the same height")
    columns = []
    for i, tile in enumerate(tiles):
        col = tile
        if captions is not None:
            strip = _caption(captions[i], tile.shape[1], caption_height(h))
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
