"""Coloured, labelled point clouds from a depth map (pinhole back-projection) and PLY files.

Pixel (u, v) — u the column, v the row, 0-based pixel centres — with depth z goes to

    X = (u - cx) z / fx,   Y = (v - cy) z / fy,   Z = z

(camera frame: x right, y down, z forward; metres). Only pixels with a valid depth (finite, > 0) become points.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cinet.errors import InputError
from cinet.utils.io import atomic_write_bytes

Intrinsics = tuple[float, float, float, float]

PLY_DTYPE = np.dtype(
    [
        ("x", "<f4"),
        ("y", "<f4"),
        ("z", "<f4"),
        ("red", "u1"),
        ("green", "u1"),
        ("blue", "u1"),
        ("label", "u1"),
    ]
)


def parse_intrinsics(text: str) -> Intrinsics:
    """``"fx,fy,cx,cy"`` -> a tuple of floats; InputError naming the option when malformed."""
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 4 or not all(np.isfinite(values)) or values[0] <= 0 or values[1] <= 0:
        raise InputError(f"--intrinsics: expected fx,fy,cx,cy with fx, fy > 0, got {text!r}")
    return values  # type: ignore[return-value]


def backproject(depth: np.ndarray, intrinsics: Intrinsics) -> tuple[np.ndarray, np.ndarray]:
    """Back-project a depth map.

    Args:
        depth: ``HxW`` metres.
        intrinsics: ``(fx, fy, cx, cy)`` in pixels at this image size (0-based pixel centres).

    Returns:
        ``(points [N,3] float32 (X, Y, Z), mask HxW bool)`` — N = number of valid pixels, row-major order.
    """
    fx, fy, cx, cy = intrinsics
    d = np.asarray(depth, dtype=np.float64)
    mask = np.isfinite(d) & (d > 0)
    v, u = np.nonzero(mask)  # row-major
    z = d[v, u]
    points = np.stack([(u - cx) * z / fx, (v - cy) * z / fy, z], axis=1).astype(np.float32)
    return points, mask


def point_cloud(
    depth: np.ndarray, rgb: np.ndarray, labels: np.ndarray, intrinsics: Intrinsics, stride: int = 1
) -> np.ndarray:
    """Structured array (:data:`PLY_DTYPE`) of the valid pixels, taking every ``stride``-th row and column."""
    if stride > 1:
        depth, rgb, labels = depth[::stride, ::stride], rgb[::stride, ::stride], labels[::stride, ::stride]
        fx, fy, cx, cy = intrinsics
        intrinsics = (fx / stride, fy / stride, cx / stride, cy / stride)
    points, mask = backproject(depth, intrinsics)
    out = np.empty(len(points), dtype=PLY_DTYPE)
    out["x"], out["y"], out["z"] = points[:, 0], points[:, 1], points[:, 2]
    colours = rgb[mask]
    out["red"], out["green"], out["blue"] = colours[:, 0], colours[:, 1], colours[:, 2]
    out["label"] = np.clip(labels[mask], 0, 255).astype(np.uint8)
    return out


def ply_header_text(text: str) -> str:
    """``text`` made safe for one PLY header line: printable ASCII, non-ASCII and control characters escaped.

    The PLY header is ASCII, one statement per line (Turk's PLY format; e.g. ``plyfile`` decodes it as ASCII),
    so a user-given name such as ``café_ü.png`` is written as ``caf\\xe9_\\xfc.png`` (Python's
    ``backslashreplace``) and a line break cannot end the comment early.
    """
    text = text.replace("\\", "\\\\")
    text = "".join(
        c if c.isprintable() or not c.isascii() else c.encode("unicode_escape").decode() for c in text
    )
    return text.encode("ascii", "backslashreplace").decode("ascii")


def ply_bytes(points: np.ndarray, *, binary: bool = True, comments: Sequence[str] = ()) -> bytes:
    """Encode a :data:`PLY_DTYPE` array as PLY (binary little-endian or ASCII).

    ``comments`` may hold any text (file names): see :func:`ply_header_text`.
    """
    header = ["ply", f"format {'binary_little_endian' if binary else 'ascii'} 1.0"]
    header += [f"comment {ply_header_text(c)}" for c in comments]
    header += [f"element vertex {len(points)}"]
    header += ["property float x", "property float y", "property float z"]
    header += ["property uchar red", "property uchar green", "property uchar blue", "property uchar label"]
    header += ["end_header"]
    head = ("\n".join(header) + "\n").encode("ascii")
    if binary:
        return head + np.ascontiguousarray(points, dtype=PLY_DTYPE).tobytes()
    lines = [
        f"{p['x']:.6g} {p['y']:.6g} {p['z']:.6g} {p['red']} {p['green']} {p['blue']} {p['label']}"
        for p in points
    ]
    return head + ("\n".join(lines) + ("\n" if lines else "")).encode("ascii")


def write_ply(
    path: str | Path, points: np.ndarray, *, binary: bool = True, comments: Sequence[str] = ()
) -> Path:
    """Write a point cloud atomically as ``x y z`` float, ``red green blue`` uchar, ``label`` uchar."""
    p = Path(path)
    atomic_write_bytes(p, ply_bytes(points, binary=binary, comments=comments))
    return p


def read_ply(path: str | Path) -> np.ndarray:
    """Read a PLY written by :func:`write_ply` (binary little-endian or ASCII) -> :data:`PLY_DTYPE` array."""
    data = Path(path).read_bytes()
    end = data.index(b"end_header\n") + len(b"end_header\n")
    header = data[:end].decode("ascii").splitlines()
    n = next(int(line.split()[2]) for line in header if line.startswith("element vertex"))
    if any("binary_little_endian" in line for line in header):
        return np.frombuffer(data[end:], dtype=PLY_DTYPE, count=n).copy()
    rows = [line.split() for line in data[end:].decode("ascii").splitlines() if line.strip()][:n]
    out = np.empty(n, dtype=PLY_DTYPE)
    for name in PLY_DTYPE.names:
        col = PLY_DTYPE.names.index(name)
        out[name] = [r[col] for r in rows]
    return out
