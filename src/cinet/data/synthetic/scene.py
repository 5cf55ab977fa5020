"""Random rooms of the synthetic dataset: geometry, materials, light and camera (no pixels; see ``render``).

World frame: metres, ``y`` up, floor at ``y = 0``, ceiling at ``y = room height``, room ``x`` in
``[-width/2, width/2]`` and ``z`` in ``[0, depth]``. The camera frame is x right, y down, z forward (optical axis).
All randomness of a scene comes from one numpy Generator (:func:`random_scene`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# 0-based ids of NYU's 13-class set (classes13 order).
BED, BOOKS, CEILING, CHAIR, FLOOR, FURNITURE, OBJECTS, PICTURE, SOFA, TABLE, TV, WALL, WINDOW = range(13)

#: Texture kinds of a material (the renderer draws them).
PATTERN_PLAIN, PATTERN_CHECKER, PATTERN_STRIPES, PATTERN_NOISE = range(4)


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
                int(
                    rng.choice(
                        [PATTERN_STRIPES, PATTERN_CHECKER, PATTERN_NOISE, PATTERN_PLAIN],
                        p=[0.35, 0.25, 0.3, 0.1],
                    )
                ),
                0.3,
            )
        elif kind in ("wall", "ceiling"):
            c1 = _hsv(rng, (0.0, 1.0), (0.0, 0.25), (0.6, 0.95))
            ptype, scale = (
                int(rng.choice([PATTERN_PLAIN, PATTERN_NOISE, PATTERN_STRIPES], p=[0.5, 0.35, 0.15])),
                0.25,
            )
        elif kind == "window":
            c1 = _hsv(rng, (0.5, 0.65), (0.05, 0.4), (0.85, 1.0))
            ptype, scale, emissive = PATTERN_CHECKER, 0.5, True
        elif kind == "tv":
            c1 = _hsv(rng, (0.0, 1.0), (0.0, 0.3), (0.02, 0.12))
            ptype, scale = PATTERN_PLAIN, 1.0
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


def random_scene(rng: np.random.Generator) -> Scene:
    """A random room (boxes, cylinders, spheres, wall decals, light, camera) drawn from ``rng``."""
    return _Builder(rng).build()
