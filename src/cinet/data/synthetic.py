"""Built-in synthetic RGB-D-semantic dataset: procedurally rendered indoor rooms (no files needed).

Each sample is one room (floor, four walls, ceiling) with furniture-like boxes (beds, tables, chairs, sofas,
cabinets, TVs, books), cylinders and spheres (objects), pictures and windows on the walls, seen by a pinhole
camera with NYUv2-like intrinsics scaled to the image size. Everything is ray cast in numpy, vectorised over
all pixels: the depth is the exact z-depth (along the optical axis) of the first hit and the labels come from
the same hit, so image, depth and labels agree to the pixel.

Colours come from procedural textures (plain, checker, stripes, value noise) on randomly coloured materials
and Lambertian shading from one point or directional light; no colour depends on the distance to the camera,
so depth must be inferred from perspective, occlusion, shading and object size.

The classes are NYUv2's 13-class set (``classes13`` of ``meta/nyuv2.json``, 0-based), all of which occur.
A sample is deterministic per ``(seed, split, index)``: its numpy Generator is seeded from that triple, and
the splits use different split codes, hence disjoint seed streams.

World frame: metres, ``y`` up, floor at ``y = 0``, ceiling at ``y = room height``, room ``x`` in
``[-width/2, width/2]`` and ``z`` in ``[0, depth]``. The camera frame is x right, y down, z forward (optical
axis); ``meta["pose"]`` gives the camera centre and the camera-to-world rotation (columns = camera axes) of
the rendered view (before any transform: a crop, scale or flip changes ``meta["intrinsics"]``, not the pose).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cinet.data.base import BaseDataset, Sample
from cinet.data.info import DatasetInfo, load_meta, nyu_intrinsics, scale_intrinsics
from cinet.errors import ConfigError

# 0-based ids of NYU's 13-class set (classes13 order).
BED, BOOKS, CEILING, CHAIR, FLOOR, FURNITURE, OBJECTS, PICTURE, SOFA, TABLE, TV, WALL, WINDOW = range(13)
SPLIT_CODES = {"train": 0, "val": 1, "test": 2}
DEFAULT_LENGTH = {"train": 1000, "val": 200, "test": 200}
DEPTH_CAP = 10.0

_PLAIN, _CHECKER, _STRIPES, _NOISE = range(4)


def synthetic_info(size: tuple[int, int] = (240, 320)) -> DatasetInfo:
    """The :class:`DatasetInfo` of the synthetic dataset at image size ``(H, W)``."""
    meta = load_meta("nyuv2")
    k, ref = nyu_intrinsics()
    h, w = size
    return DatasetInfo(
        name="synthetic",
        num_classes=13,
        class_names=list(meta["classes13"]),
        palette=[list(c) for c in meta["palette13"]],
        depth_cap=DEPTH_CAP,
        min_depth=1e-3,
        intrinsics=scale_intrinsics(k, ref, (w, h)),
        reference_size=(w, h),
        void_color=list(meta["void_color"]),
    )


# ------------------------------------------------------------------------------------------------ scene


@dataclass
class Camera:
    """Pinhole camera: centre (world), camera-to-world rotation (columns x right, y down, z forward)."""

    position: np.ndarray
    rotation: np.ndarray
    height: float
    pitch: float
    yaw: float
    roll: float

    def as_meta(self) -> dict[str, Any]:
        return {
            "position": [float(v) for v in self.position],
            "rotation": [[float(v) for v in row] for row in self.rotation],
            "height": float(self.height),
            "pitch": float(self.pitch),
            "yaw": float(self.yaw),
            "roll": float(self.roll),
        }


@dataclass
class Scene:
    """A random room: geometry, materials, light and camera."""

    room: tuple[float, float, float]  # width (x), height (y), depth (z)
    camera: Camera
    boxes: list[tuple[np.ndarray, np.ndarray, int, int]] = field(
        default_factory=list
    )  # (min, max, label, mat)
    cylinders: list[tuple[float, float, float, float, float, int, int]] = field(default_factory=list)
    spheres: list[tuple[np.ndarray, float, int, int]] = field(default_factory=list)
    decals: list[tuple[str, float, float, float, float, int, int]] = field(default_factory=list)
    materials: list[tuple[int, float, np.ndarray, np.ndarray, bool]] = field(default_factory=list)
    light: tuple[str, np.ndarray, float, float] = (
        "point",
        np.zeros(3),
        1.0,
        0.3,
    )  # kind, pos/dir, gain, ambient


def _rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    f = np.array([math.sin(yaw) * math.cos(pitch), -math.sin(pitch), math.cos(yaw) * math.cos(pitch)])
    r0 = np.array([math.cos(yaw), 0.0, -math.sin(yaw)])
    d0 = np.cross(r0, f)
    r = math.cos(roll) * r0 + math.sin(roll) * d0
    d = -math.sin(roll) * r0 + math.cos(roll) * d0
    return np.stack([r, d, f], axis=1)


def _hsv(
    rng: np.random.Generator, h: tuple[float, float], s: tuple[float, float], v: tuple[float, float]
) -> np.ndarray:
    hh, ss, vv = rng.uniform(*h) % 1.0, rng.uniform(*s), rng.uniform(*v)
    i = int(hh * 6) % 6
    f = hh * 6 - int(hh * 6)
    p, q, t = vv * (1 - ss), vv * (1 - f * ss), vv * (1 - (1 - f) * ss)
    return np.array([(vv, t, p), (q, vv, p), (p, vv, t), (p, q, vv), (t, p, vv), (vv, p, q)][i])


class _Builder:
    """Random scene construction (all randomness from one Generator)."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.scene: Scene | None = None

    def material(self, kind: str) -> int:
        rng = self.rng
        emissive = False
        if kind == "floor":
            c1 = _hsv(rng, (0.02, 0.12), (0.2, 0.7), (0.25, 0.8))
            ptype, scale = (
                int(rng.choice([_STRIPES, _CHECKER, _NOISE, _PLAIN], p=[0.35, 0.25, 0.3, 0.1])),
                0.3,
            )
        elif kind in ("wall", "ceiling"):
            c1 = _hsv(rng, (0.0, 1.0), (0.0, 0.25), (0.6, 0.95))
            ptype, scale = int(rng.choice([_PLAIN, _NOISE, _STRIPES], p=[0.5, 0.35, 0.15])), 0.25
        elif kind == "window":
            c1 = _hsv(rng, (0.5, 0.65), (0.05, 0.4), (0.85, 1.0))
            ptype, scale, emissive = _CHECKER, 0.5, True
        elif kind == "tv":
            c1 = _hsv(rng, (0.0, 1.0), (0.0, 0.3), (0.02, 0.12))
            ptype, scale = _PLAIN, 1.0
        else:
            c1 = _hsv(rng, (0.0, 1.0), (0.1, 0.9), (0.15, 0.95))
            ptype, scale = int(rng.integers(0, 4)), float(rng.uniform(0.04, 0.25))
        scale = float(scale * rng.uniform(0.6, 1.6))
        c2 = np.clip(c1 * rng.uniform(0.5, 0.85) + rng.uniform(-0.05, 0.05, 3), 0, 1)
        if kind == "picture":
            c2 = _hsv(rng, (0.0, 1.0), (0.3, 1.0), (0.2, 1.0))
        assert self.scene is not None
        self.scene.materials.append((ptype, scale, c1, c2, emissive))
        return len(self.scene.materials) - 1

    def box(
        self, lo: tuple[float, float, float], hi: tuple[float, float, float], label: int, mat: int
    ) -> None:
        assert self.scene is not None
        self.scene.boxes.append((np.array(lo, dtype=np.float64), np.array(hi, dtype=np.float64), label, mat))

    def on_wall(
        self, wall: str, along: float, width: float, depth: float
    ) -> tuple[float, float, float, float]:
        """Footprint ``(x0, x1, z0, z1)`` of an object of ``width`` (along the wall) x ``depth`` against ``wall``."""
        w, _, d = self.scene.room  # type: ignore[union-attr]
        if wall == "back":
            return (along - width / 2, along + width / 2, d - depth, d)
        if wall == "left":
            return (-w / 2, -w / 2 + depth, along - width / 2, along + width / 2)
        return (w / 2 - depth, w / 2, along - width / 2, along + width / 2)

    def along_range(self, wall: str, width: float) -> float:
        w, _, d = self.scene.room  # type: ignore[union-attr]
        if wall == "back":
            return float(self.rng.uniform(-w / 2 + width / 2, w / 2 - width / 2))
        return float(self.rng.uniform(1.3 + width / 2, max(1.31 + width / 2, d - width / 2)))

    def build(self) -> Scene:
        rng = self.rng
        rw, rh, rd = rng.uniform(3.0, 6.0), rng.uniform(2.4, 3.0), rng.uniform(3.6, 7.0)
        height = rng.uniform(1.0, 1.7)
        pitch, yaw, roll = (
            math.radians(rng.uniform(-5, 25)),
            math.radians(rng.uniform(-35, 35)),
            math.radians(rng.uniform(-3, 3)),
        )
        pos = np.array([rng.uniform(-0.3, 0.3) * rw, height, rng.uniform(0.2, 0.8)])
        cam = Camera(pos, _rotation(yaw, pitch, roll), height, pitch, yaw, roll)
        self.scene = scene = Scene(room=(rw, rh, rd), camera=cam)
        self.material("floor")  # 0
        self.material("ceiling")  # 1
        self.material("wall")  # 2

        walls = ["back", "left", "right"]
        # pictures and windows: decals on the walls (wall, along-centre, y-centre, half-width, half-height, label, mat)
        for label, count in ((PICTURE, int(rng.integers(1, 4))), (WINDOW, int(rng.integers(0, 3)))):
            for _ in range(count):
                wall = walls[int(rng.integers(0, 3))]
                if label == PICTURE:
                    hw, hh, yc = rng.uniform(0.15, 0.6), rng.uniform(0.15, 0.45), rng.uniform(1.2, 1.8)
                else:
                    hw, hh, yc = rng.uniform(0.3, 0.8), rng.uniform(0.4, 0.7), rng.uniform(1.3, 1.6)
                along = self.along_range(wall, 2 * hw)
                mat = self.material("window" if label == WINDOW else "picture")
                scene.decals.append((wall, along, float(yc), float(hw), float(hh), label, mat))

        if rng.random() < 0.4:  # bed with headboard and pillows
            wall = walls[int(rng.integers(0, 3))]
            bw, bl, bh = rng.uniform(1.0, 1.8), rng.uniform(1.9, 2.1), rng.uniform(0.4, 0.6)
            x0, x1, z0, z1 = self.on_wall(wall, self.along_range(wall, bw), bw, bl)
            mat = self.material("bed")
            self.box((x0, 0, z0), (x1, bh, z1), BED, mat)
            hx0, hx1, hz0, hz1 = self.on_wall(
                wall, (x0 + x1) / 2 if wall == "back" else (z0 + z1) / 2, bw, 0.08
            )
            self.box((hx0, 0, hz0), (hx1, bh + rng.uniform(0.3, 0.6), hz1), BED, self.material("furniture"))
            pm = self.material("objects")
            for k in range(int(rng.integers(1, 3))):
                px = self.on_wall(
                    wall,
                    ((x0 + x1) / 2 if wall == "back" else (z0 + z1) / 2) + (k - 0.5) * bw / 2.2,
                    bw / 2.5,
                    0.45,
                )
                self.box(
                    (px[0] + 0.03, bh, px[2] + 0.1), (px[1] - 0.03, bh + 0.15, px[3] - 0.05), OBJECTS, pm
                )

        for _ in range(int(rng.integers(1, 4))):  # cabinets / shelves / wardrobes
            wall = walls[int(rng.integers(0, 3))]
            cw, cd, ch = rng.uniform(0.4, 1.3), rng.uniform(0.35, 0.6), rng.uniform(0.5, 2.1)
            x0, x1, z0, z1 = self.on_wall(wall, self.along_range(wall, cw), cw, cd)
            self.box((x0, 0, z0), (x1, ch, z1), FURNITURE, self.material("furniture"))
            if ch < 1.1 and rng.random() < 0.5:  # a TV on a low cabinet
                tw, th = min(cw * 0.9, rng.uniform(0.6, 1.1)), rng.uniform(0.35, 0.6)
                tx = self.on_wall(wall, (x0 + x1) / 2 if wall == "back" else (z0 + z1) / 2, tw, 0.08)
                self.box((tx[0], ch, tx[2]), (tx[1], ch + th, tx[3]), TV, self.material("tv"))
            elif rng.random() < 0.5:  # books on top
                bm = self.material("books")
                self._books(x0, x1, z0, z1, ch, bm)

        if rng.random() < 0.25:  # wall-mounted TV
            wall = walls[int(rng.integers(0, 3))]
            tw, th = rng.uniform(0.7, 1.3), rng.uniform(0.4, 0.75)
            x0, x1, z0, z1 = self.on_wall(wall, self.along_range(wall, tw), tw, 0.06)
            y0 = rng.uniform(1.0, 1.4)
            self.box((x0, y0, z0), (x1, y0 + th, z1), TV, self.material("tv"))

        if rng.random() < 0.45:  # sofa along a wall
            wall = walls[int(rng.integers(0, 3))]
            sl, sd = rng.uniform(1.4, 2.2), rng.uniform(0.75, 0.95)
            x0, x1, z0, z1 = self.on_wall(wall, self.along_range(wall, sl), sl, sd)
            mat = self.material("sofa")
            seat = rng.uniform(0.38, 0.46)
            self.box((x0, 0, z0), (x1, seat, z1), SOFA, mat)
            bx = self.on_wall(wall, (x0 + x1) / 2 if wall == "back" else (z0 + z1) / 2, sl, 0.2)
            self.box((bx[0], 0, bx[2]), (bx[1], seat + rng.uniform(0.35, 0.5), bx[3]), SOFA, mat)

        if rng.random() < 0.75:  # table with legs, chairs and things on top
            tw, tdp, th = rng.uniform(0.8, 1.6), rng.uniform(0.6, 1.0), rng.uniform(0.68, 0.78)
            cx = rng.uniform(-rw / 2 + tw / 2 + 0.3, rw / 2 - tw / 2 - 0.3)
            cz = rng.uniform(1.8 + tdp / 2, max(1.81 + tdp / 2, rd - tdp / 2 - 0.5))
            x0, x1, z0, z1 = cx - tw / 2, cx + tw / 2, cz - tdp / 2, cz + tdp / 2
            mat = self.material("table")
            self.box((x0, th - 0.04, z0), (x1, th, z1), TABLE, mat)
            leg = 0.05
            for lx in (x0, x1 - leg):
                for lz in (z0, z1 - leg):
                    self.box((lx, 0, lz), (lx + leg, th - 0.04, lz + leg), TABLE, mat)
            if rng.random() < 0.6:
                self._books(x0 + 0.1, x1 - 0.1, z0 + 0.1, z1 - 0.1, th, self.material("books"))
            for _ in range(int(rng.integers(0, 3))):
                r = rng.uniform(0.03, 0.08)
                px, pz = rng.uniform(x0 + r, x1 - r), rng.uniform(z0 + r, z1 - r)
                if rng.random() < 0.5:
                    scene.cylinders.append(
                        (px, pz, r, th, th + rng.uniform(0.08, 0.3), OBJECTS, self.material("objects"))
                    )
                else:
                    scene.spheres.append((np.array([px, th + r, pz]), r, OBJECTS, self.material("objects")))
            cm = self.material("chair")
            for side in (-1, 1):
                if rng.random() < 0.55:
                    self._chair(cx + side * rng.uniform(-0.3, 0.3), cz + side * (tdp / 2 + 0.3), side, cm)

        for _ in range(int(rng.integers(1, 4))):  # floor objects: bins, lamps, balls, boxes
            kind = int(rng.integers(0, 3))
            px = rng.uniform(-rw / 2 + 0.3, rw / 2 - 0.3)
            pz = rng.uniform(1.4, rd - 0.3)
            mat = self.material("objects")
            if kind == 0:
                r = rng.uniform(0.1, 0.25)
                scene.cylinders.append((px, pz, r, 0.0, rng.uniform(0.25, 1.6), OBJECTS, mat))
            elif kind == 1:
                r = rng.uniform(0.1, 0.3)
                scene.spheres.append((np.array([px, r, pz]), r, OBJECTS, mat))
            else:
                s = rng.uniform(0.2, 0.5, 3)
                self.box(
                    (px - s[0] / 2, 0, pz - s[2] / 2), (px + s[0] / 2, s[1], pz + s[2] / 2), OBJECTS, mat
                )

        if rng.random() < 0.7:
            lpos = np.array([rng.uniform(-rw / 2, rw / 2) * 0.8, rh - 0.05, rng.uniform(0.3, rd - 0.3)])
            scene.light = ("point", lpos, float(rng.uniform(0.9, 1.4)), float(rng.uniform(0.2, 0.4)))
        else:
            ldir = np.array([rng.uniform(-0.6, 0.6), -1.0, rng.uniform(-0.6, 0.6)])
            scene.light = (
                "directional",
                ldir / np.linalg.norm(ldir),
                float(rng.uniform(0.6, 0.9)),
                float(rng.uniform(0.25, 0.45)),
            )
        return scene

    def _books(self, x0: float, x1: float, z0: float, z1: float, y: float, mat: int) -> None:
        rng = self.rng
        n = int(rng.integers(1, 5))
        bx = rng.uniform(x0, max(x0 + 0.01, x1 - 0.3))
        bz = rng.uniform(z0, max(z0 + 0.01, z1 - 0.25))
        for i in range(n):  # a stack of books
            w, d, t = rng.uniform(0.15, 0.3), rng.uniform(0.12, 0.22), rng.uniform(0.02, 0.06)
            self.box(
                (bx, y, bz), (bx + w, y + t, bz + d), BOOKS, mat if i % 2 == 0 else self.material("books")
            )
            y += t

    def _chair(self, cx: float, cz: float, side: int, mat: int) -> None:
        rng = self.rng
        s, seat, back = rng.uniform(0.4, 0.5), rng.uniform(0.42, 0.48), rng.uniform(0.35, 0.5)
        x0, x1, z0, z1 = cx - s / 2, cx + s / 2, cz - s / 2, cz + s / 2
        self.box((x0, seat - 0.05, z0), (x1, seat, z1), CHAIR, mat)
        bz = (z1 - 0.05, z1) if side > 0 else (z0, z0 + 0.05)
        self.box((x0, seat, bz[0]), (x1, seat + back, bz[1]), CHAIR, mat)
        leg = 0.04
        for lx in (x0, x1 - leg):
            for lz in (z0, z1 - leg):
                self.box((lx, 0, lz), (lx + leg, seat - 0.05, lz + leg), CHAIR, mat)


# ------------------------------------------------------------------------------------------------ renderer


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
    mix = np.select([ptype == _CHECKER, ptype == _STRIPES, ptype == _NOISE], [checker, stripes, noise], 0.0)
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


# ------------------------------------------------------------------------------------------------ dataset


class SyntheticDataset(BaseDataset):
    """Procedural indoor rooms (see the module docstring).

    Args:
        split: ``"train"``, ``"val"`` or ``"test"`` (disjoint seed streams).
        transform: Joint transform on the sample dict.
        length: Number of samples (default 1000 train, 200 val/test).
        size: Image size ``(H, W)`` (default ``(240, 320)``); an int means square.
        seed: Base seed.
        holes: Add sensor-like holes (depth 0) to the depth maps.
    """

    OPTIONS = ("length", "size", "seed", "holes")

    def __init__(
        self,
        split: str = "train",
        *,
        transform: Any = None,
        length: int | None = None,
        size: tuple[int, int] | int = (240, 320),
        seed: int = 0,
        holes: bool = False,
    ):
        if split not in SPLIT_CODES:
            raise ConfigError(f"synthetic: unknown split {split!r} (choose from {', '.join(SPLIT_CODES)})")
        size = _parse_size(size)
        super().__init__(synthetic_info(size), split, transform)
        self.size = size
        self.length = int(DEFAULT_LENGTH[split] if length is None else length)
        if self.length < 0:
            raise ConfigError(f"synthetic: length must be >= 0, got {self.length}")
        self.seed = int(seed)
        self.holes = bool(holes)

    def __len__(self) -> int:
        return self.length

    def sample_ref(self, index: int) -> str:
        return f"synthetic/{self.split}/{index:06d}"

    def rng(self, index: int) -> np.random.Generator:
        """The Generator of sample ``index`` (seeded from (seed, split, index))."""
        return np.random.default_rng([self.seed, SPLIT_CODES[self.split], int(index)])

    def scene(self, index: int) -> Scene:
        """The scene (geometry, camera pose) of sample ``index``."""
        return _Builder(self.rng(index)).build()

    def camera(self, index: int) -> Camera:
        """The camera pose of sample ``index``."""
        return self.scene(index).camera

    def _load(self, index: int) -> Sample:
        rng = self.rng(index)
        scene = _Builder(rng).build()
        h, w = self.size
        k = self.info.intrinsics
        assert k is not None
        image, depth, labels = render(scene, h, w, k, rng, holes=self.holes)
        meta = {"id": f"synthetic/{self.split}/{index:06d}", "intrinsics": k, "pose": scene.camera.as_meta()}
        return {"image": image, "depth": depth, "labels": labels, "meta": meta, "files": [meta["id"]]}


def _parse_size(size: Any) -> tuple[int, int]:
    if isinstance(size, str):
        parts = size.lower().replace("x", ",").split(",")
        size = [int(p) for p in parts if p.strip()]
    if isinstance(size, int):
        size = (size, size)
    try:
        h, w = (int(v) for v in size)
    except (TypeError, ValueError):
        raise ConfigError(f"synthetic: size must be (H, W), got {size!r}") from None
    if h < 8 or w < 8:
        raise ConfigError(f"synthetic: size must be at least 8x8, got {h}x{w}")
    return h, w


def _make_info(size: tuple[int, int] | int = (240, 320)) -> DatasetInfo:
    return synthetic_info(_parse_size(size))


SyntheticDataset.make_info = staticmethod(_make_info)  # type: ignore[attr-defined]
