"""Ray casting of a synthetic :class:`~cinet.data.synthetic.scene.Scene` into image, depth and labels (numpy).

Vectorised over all pixels: the depth is the exact z-depth (along the optical axis) of the first hit and the
labels come from the same hit, so image, depth and labels agree to the pixel. Colours come from procedural
textures on the materials and Lambertian shading; no colour depends on the distance to the camera.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from cinet.data.synthetic.scene import (
    CEILING,
    FLOOR,
    PATTERN_CHECKER,
    PATTERN_NOISE,
    PATTERN_STRIPES,
    WALL,
    WINDOW,
    Scene,
)

__all__ = ["render"]


@functools.lru_cache(maxsize=8)
def _pixel_rays(h: int, w: int, k: tuple[float, float, float, float]) -> tuple[np.ndarray, np.ndarray]:
    fx, fy, cx, cy = k
    xs = ((np.arange(w) - cx) / fx).astype(np.float32)
    ys = ((np.arange(h) - cy) / fy).astype(np.float32)
    return xs, ys


_NOISE_TABLE = np.random.default_rng(12345).random(4096).astype(np.float32)


def _noise(ia: np.ndarray, ib: np.ndarray, salt: np.ndarray) -> np.ndarray:
    # int32 arithmetic wraps around (a hash); only the low 12 bits are used
    idx = (ia * np.int32(73856093)) ^ (ib * np.int32(19349663)) ^ (salt * np.int32(83492791))
    return _NOISE_TABLE[idx & 4095]


def render(
    scene: Scene,
    h: int,
    w: int,
    k: tuple[float, float, float, float],
    rng: np.random.Generator,
    holes: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ray cast ``scene`` at ``h`` x ``w`` with intrinsics ``k``: (image uint8 HxWx3, depth float32, labels uint8)."""
    cam = scene.camera
    rot = cam.rotation.astype(np.float32)
    c = tuple(float(v) for v in cam.position)
    xs, ys = _pixel_rays(h, w, k)
    # ray direction (camera z component = 1, so the ray parameter t is the z-depth)
    d = [xs[None, :] * rot[i, 0] + ys[:, None] * rot[i, 1] + rot[i, 2] for i in range(3)]
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = [np.float32(1.0) / di for di in d]
        rw, rh, rd = scene.room
        lo, hi = (-rw / 2, 0.0, 0.0), (rw / 2, rh, rd)
        # distance to the room's far plane per axis; a ray parallel to an axis (d = 0) never meets its planes
        tax = [
            np.where(d[i] > 0, (hi[i] - c[i]) * inv[i], np.where(d[i] < 0, (lo[i] - c[i]) * inv[i], np.inf))
            for i in range(3)
        ]
    t = np.minimum(np.minimum(tax[0], tax[1]), tax[2])
    on_y = t == tax[1]
    on_x = (t == tax[0]) & ~on_y
    label = np.where(on_y, np.where(d[1] > 0, CEILING, FLOOR), WALL).astype(np.uint8)
    mat = np.where(on_y, np.where(d[1] > 0, 1, 0), 2).astype(np.int32)
    nrm = [
        np.where(on_x, -np.sign(d[0]), 0).astype(np.float32),
        np.where(on_y, -np.sign(d[1]), 0).astype(np.float32),
        np.where(~on_x & ~on_y, -np.sign(d[2]), 0).astype(np.float32),
    ]

    def window(corners: np.ndarray) -> tuple[slice, slice] | None:
        """Pixel window that contains the projection of ``corners`` (whole image if one is behind)."""
        pc = (corners - cam.position) @ cam.rotation  # camera coordinates
        if (pc[:, 2] <= 0.05).any():
            return (slice(0, h), slice(0, w))
        u = k[0] * pc[:, 0] / pc[:, 2] + k[2]
        v = k[1] * pc[:, 1] / pc[:, 2] + k[3]
        u0, u1 = max(math.floor(u.min()), 0), min(math.ceil(u.max()) + 1, w)
        v0, v1 = max(math.floor(v.min()), 0), min(math.ceil(v.max()) + 1, h)
        if u0 >= u1 or v0 >= v1:
            return None
        return (slice(v0, v1), slice(u0, u1))

    # decals (pictures, windows) on the walls: relabel wall hits inside their rectangle
    on_z = ~on_x & ~on_y
    for wall, along, yc, hw, hh, lab, m in scene.decals:
        if wall == "back":
            corners = np.array([[along + a * hw, yc + b * hh, rd] for a in (-1, 1) for b in (-1, 1)])
        else:
            wx = -rw / 2 if wall == "left" else rw / 2
            corners = np.array([[wx, yc + b * hh, along + a * hw] for a in (-1, 1) for b in (-1, 1)])
        sl = window(corners)
        if sl is None:
            continue
        ts = t[sl]
        if wall == "back":
            sel = on_z[sl] & (d[2][sl] > 0) & (np.abs(c[0] + ts * d[0][sl] - along) < hw)
        else:
            side = (d[0][sl] < 0) if wall == "left" else (d[0][sl] > 0)
            sel = on_x[sl] & side & (np.abs(c[2] + ts * d[2][sl] - along) < hw)
        sel &= np.abs(c[1] + ts * d[1][sl] - yc) < hh
        label[sl][sel] = lab
        mat[sl][sel] = m

    def commit(sl: tuple[slice, slice], hit: np.ndarray, th: np.ndarray, lab: int, m: int, n: list) -> None:
        t[sl][hit] = th[hit]
        label[sl][hit] = lab
        mat[sl][hit] = m
        for i in range(3):
            ni = n[i]
            nrm[i][sl][hit] = ni[hit] if isinstance(ni, np.ndarray) else ni

    eps = np.float32(1e-4)
    for bmin, bmax, lab, m in scene.boxes:
        corners = np.array(
            [[x, y, z] for x in (bmin[0], bmax[0]) for y in (bmin[1], bmax[1]) for z in (bmin[2], bmax[2])]
        )
        sl = window(corners)
        if sl is None:
            continue
        tmins, tmaxs = [], []
        with np.errstate(invalid="ignore"):
            for i in range(3):
                a = (float(bmin[i]) - c[i]) * inv[i][sl]
                b = (float(bmax[i]) - c[i]) * inv[i][sl]
                tmins.append(np.minimum(a, b))
                tmaxs.append(np.maximum(a, b))
        tn = np.maximum(np.maximum(tmins[0], tmins[1]), tmins[2])
        tf = np.minimum(np.minimum(tmaxs[0], tmaxs[1]), tmaxs[2])
        hit = (tn <= tf) & (tn > eps) & (tn < t[sl])
        if not hit.any():
            continue
        ax_x = tn == tmins[0]
        ax_y = (tn == tmins[1]) & ~ax_x
        ax_z = ~ax_x & ~ax_y
        n = [
            np.where(ax, -np.sign(d[i][sl]), 0).astype(np.float32) for i, ax in enumerate((ax_x, ax_y, ax_z))
        ]
        commit(sl, hit, tn, lab, m, n)

    for x0, z0, r, y0, y1, lab, m in scene.cylinders:
        corners = np.array([[x, y, z] for x in (x0 - r, x0 + r) for y in (y0, y1) for z in (z0 - r, z0 + r)])
        sl = window(corners)
        if sl is None:
            continue
        dx, dy, dz = d[0][sl], d[1][sl], d[2][sl]
        ox, oz = c[0] - x0, c[2] - z0
        a = dx * dx + dz * dz
        b = ox * dx + oz * dz
        disc = b * b - a * (ox * ox + oz * oz - r * r)
        with np.errstate(invalid="ignore", divide="ignore"):
            ts = (-b - np.sqrt(np.maximum(disc, 0))) / a
            ys_ = c[1] + ts * dy
            side = (disc > 0) & (ts > eps) & (ys_ >= y0) & (ys_ <= y1)
            ts = np.where(side, ts, np.inf)
            if c[1] > y1:
                tc = (y1 - c[1]) * inv[1][sl]
                cap = (tc > eps) & ((ox + tc * dx) ** 2 + (oz + tc * dz) ** 2 <= r * r)
                tc = np.where(cap, tc, np.inf)
            else:
                tc = np.full_like(ts, np.inf)
        th = np.minimum(ts, tc)
        hit = np.isfinite(th) & (th < t[sl])
        if not hit.any():
            continue
        is_side = ts <= tc
        n = [
            np.where(is_side, (ox + th * dx) / r, 0).astype(np.float32),
            np.where(is_side, 0, 1).astype(np.float32),
            np.where(is_side, (oz + th * dz) / r, 0).astype(np.float32),
        ]
        commit(sl, hit, th, lab, m, n)

    for centre, r, lab, m in scene.spheres:
        corners = np.array(
            [
                [centre[0] + sx * r, centre[1] + sy * r, centre[2] + sz * r]
                for sx in (-1, 1)
                for sy in (-1, 1)
                for sz in (-1, 1)
            ]
        )
        sl = window(corners)
        if sl is None:
            continue
        o = [float(v) for v in cam.position - centre]
        dd = [d[i][sl] for i in range(3)]
        a = dd[0] * dd[0] + dd[1] * dd[1] + dd[2] * dd[2]
        b = o[0] * dd[0] + o[1] * dd[1] + o[2] * dd[2]
        disc = b * b - a * (o[0] ** 2 + o[1] ** 2 + o[2] ** 2 - r * r)
        with np.errstate(invalid="ignore"):
            th = (-b - np.sqrt(np.maximum(disc, 0))) / a
        hit = (disc > 0) & (th > eps) & (th < t[sl])
        if not hit.any():
            continue
        n = [((o[i] + th * dd[i]) / r).astype(np.float32) for i in range(3)]
        commit(sl, hit, th, lab, m, n)

    # ---- appearance: textures x Lambertian shading
    p = [c[i] + t * d[i] for i in range(3)]
    ax = np.abs(nrm[0]) >= 0.5
    ay = np.abs(nrm[1]) >= 0.5
    tu = np.where(ay | ax, p[2], p[0])
    tv = np.where(ay, p[0], p[1])
    ptype = np.array([mm[0] for mm in scene.materials], dtype=np.int32)[mat]
    scale = np.array([mm[1] for mm in scene.materials], dtype=np.float32)[mat]
    c1 = np.stack([mm[2] for mm in scene.materials]).astype(np.float32)
    c2 = np.stack([mm[3] for mm in scene.materials]).astype(np.float32)
    emissive = np.array([mm[4] for mm in scene.materials])[mat]
    ia = np.floor(tu / scale).astype(np.int32)
    ib = np.floor(tv / scale).astype(np.int32)
    checker = ((ia + ib) & 1).astype(np.float32)
    stripes = (ia & 1).astype(np.float32)
    noise = _noise(ia, ib, mat)
    mix = np.select(
        [ptype == PATTERN_CHECKER, ptype == PATTERN_STRIPES, ptype == PATTERN_NOISE],
        [checker, stripes, noise],
        0.0,
    )
    fine = _noise(np.floor(tu * 40).astype(np.int32), np.floor(tv * 40).astype(np.int32), mat + 7)
    mix = np.clip(mix + (fine - 0.5) * 0.15, 0, 1)[..., None]
    albedo = c1[mat] * (1 - mix) + c2[mat] * mix

    kind, lv, gain, ambient = scene.light
    lv = [float(v) for v in lv]
    if kind == "point":
        lx, ly, lz = (lv[i] - p[i] for i in range(3))
        dist = np.sqrt(lx * lx + ly * ly + lz * lz) + 1e-6
        ndotl = np.maximum((nrm[0] * lx + nrm[1] * ly + nrm[2] * lz) / dist, 0)
        diffuse = gain * ndotl / (1.0 + (dist / 5.0) ** 2)
    else:
        diffuse = gain * np.maximum(-(nrm[0] * lv[0] + nrm[1] * lv[1] + nrm[2] * lv[2]), 0)
    shade = np.where(emissive, 1.0, ambient + diffuse).astype(np.float32)
    img = albedo * shade[..., None] * np.float32(rng.uniform(0.85, 1.2))
    img += rng.normal(0.0, 0.01, size=(1, 1, 3)).astype(np.float32)  # colour cast
    img += rng.standard_normal((h, w, 1), dtype=np.float32) * np.float32(0.012)  # sensor noise
    image = (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)

    depth = t.astype(np.float32)
    if holes:
        depth = _add_holes(depth, label, rng)
    return image, depth, label


def _add_holes(depth: np.ndarray, label: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Kinect-like missing depth: depth edges, a few blobs, windows (glass), image borders."""
    h, w = depth.shape
    out = depth.copy()
    gx = np.zeros_like(depth, dtype=bool)
    gx[:, 1:] = np.abs(np.diff(depth, axis=1)) > 0.06 * depth[:, 1:]
    gy = np.zeros_like(gx)
    gy[1:] = np.abs(np.diff(depth, axis=0)) > 0.06 * depth[1:]
    edge = gx | gy
    edge[:, :-1] |= edge[:, 1:]
    edge[:-1] |= edge[1:].copy()
    out[edge] = 0
    out[label == WINDOW] = 0
    yy, xx = np.ogrid[:h, :w]
    for _ in range(int(rng.integers(0, 4))):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        ry, rx = rng.uniform(0.02, 0.08) * h, rng.uniform(0.02, 0.08) * w
        out[((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1] = 0
    b = max(1, round(0.01 * w))
    out[:, :b] = 0
    out[:, w - b :] = 0
    return out
