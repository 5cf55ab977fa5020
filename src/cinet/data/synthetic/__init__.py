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

The package: :mod:`~cinet.data.synthetic.scene` (random rooms), :mod:`~cinet.data.synthetic.render` (ray casting),
:mod:`~cinet.data.synthetic.dataset` (the dataset and its :class:`~cinet.data.DatasetInfo`).
"""

from cinet.data.synthetic.dataset import (
    DEFAULT_LENGTH,
    DEPTH_CAP,
    SPLIT_CODES,
    SyntheticDataset,
    synthetic_info,
)
from cinet.data.synthetic.render import render
from cinet.data.synthetic.scene import (
    BED,
    BOOKS,
    CEILING,
    CHAIR,
    FLOOR,
    FURNITURE,
    OBJECTS,
    PICTURE,
    SOFA,
    TABLE,
    TV,
    WALL,
    WINDOW,
    Camera,
    Scene,
    random_scene,
)

__all__ = [
    "BED",
    "BOOKS",
    "CEILING",
    "CHAIR",
    "DEFAULT_LENGTH",
    "DEPTH_CAP",
    "FLOOR",
    "FURNITURE",
    "OBJECTS",
    "PICTURE",
    "SOFA",
    "SPLIT_CODES",
    "TABLE",
    "TV",
    "WALL",
    "WINDOW",
    "Camera",
    "Scene",
    "SyntheticDataset",
    "random_scene",
    "render",
    "synthetic_info",
]
