"""Dataset descriptions (:class:`DatasetInfo`) and the reference facts shipped in ``meta/*.json``.

The JSON files are copies of ``shared/data/*.json``: class lists, label mappings, splits, palettes,
intrinsics and depth caps, each with the ``source`` list it was read from. Code reads them through
:func:`load_meta` instead of repeating the numbers.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
IGNORE_INDEX = 255
#: Largest relative difference of aspect ratios for which a camera's intrinsics are scaled to an image.
ASPECT_TOLERANCE = 0.02


@functools.cache
def load_meta(name: str) -> dict[str, Any]:
    """The reference facts of one dataset (``"nyuv2"``, ``"sunrgbd"`` or ``"cityscapes"``)."""
    text = resources.files("cinet.data").joinpath("meta", f"{name}.json").read_text(encoding="utf-8")
    return json.loads(text)


def scale_intrinsics(
    intrinsics: tuple[float, float, float, float],
    from_size: tuple[int, int],
    to_size: tuple[int, int],
) -> tuple[float, float, float, float]:
    """Scale pinhole intrinsics ``(fx, fy, cx, cy)`` for a resize from ``from_size`` to ``to_size``.

    Sizes are ``(width, height)``. Pixel centres are at integer coordinates (0-based), so a resize by ``s``
    maps ``c`` to ``(c + 0.5) * s - 0.5`` (the ``align_corners=False`` convention of torch's resizing).
    """
    fx, fy, cx, cy = intrinsics
    sx = to_size[0] / from_size[0]
    sy = to_size[1] / from_size[1]
    return (fx * sx, fy * sy, (cx + 0.5) * sx - 0.5, (cy + 0.5) * sy - 0.5)


@dataclass
class DatasetInfo:
    """What a model, a loss or a report needs to know about a dataset (plain types only).

    Attributes:
        name: Dataset name as given to :func:`cinet.data.load_dataset`.
        num_classes: Number of semantic classes (train ids ``0..num_classes-1``).
        class_names: One name per train id.
        palette: One ``[r, g, b]`` colour per train id (0..255).
        ignore_index: Label value that is ignored (255).
        depth_cap: Largest depth in metres the loader returns / the evaluation protocol uses.
        min_depth: Smallest valid depth in metres (evaluation protocol).
        intrinsics: ``(fx, fy, cx, cy)`` in pixels (0-based pixel centres) at ``reference_size``, or None
            when the dataset has no single camera.
        reference_size: ``(width, height)`` the intrinsics and ``eval_crop`` belong to, or None.
        mean: Per-channel mean used to normalise images (RGB, 0..1 scale).
        std: Per-channel standard deviation used to normalise images.
        eval_crop: ``(top, bottom, left, right)`` numpy-slice bounds at ``reference_size`` used by the
            evaluation protocol (e.g. NYU's Eigen crop ``45:471, 41:601`` at 640x480), or None.
        void_color: Colour of ignored pixels in previews.
        protocol_crop: Named crop of the dataset's common depth evaluation protocol (``"eigen"`` for NYUv2,
            see :func:`cinet.metrics.depth.resolve_crop`), or None (no crop).
        protocol_size: ``(H, W)`` at which the common protocol computes the metrics (NYUv2 480x640, the
            synthetic dataset its render size), or None (each image at its own size).

    The evaluation protocol (:meth:`cinet.metrics.EvalProtocol.for_info`) reads ``protocol_crop``,
    ``protocol_size``, ``min_depth`` and ``depth_cap`` from here; each dataset fills them from its
    ``meta/*.json`` facts.
    """

    name: str
    num_classes: int
    class_names: list[str]
    palette: list[list[int]]
    ignore_index: int = IGNORE_INDEX
    depth_cap: float = 10.0
    min_depth: float = 1e-3
    intrinsics: tuple[float, float, float, float] | None = None
    reference_size: tuple[int, int] | None = None
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    eval_crop: tuple[int, int, int, int] | None = None
    void_color: list[int] = field(default_factory=lambda: [0, 0, 0])
    protocol_crop: str | None = None
    protocol_size: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if len(self.class_names) != self.num_classes:
            raise ValueError(
                f"{self.name}: {len(self.class_names)} class names for {self.num_classes} classes"
            )
        if len(self.palette) != self.num_classes:
            raise ValueError(
                f"{self.name}: {len(self.palette)} palette colours for {self.num_classes} classes"
            )

    def intrinsics_for(self, width: int, height: int) -> tuple[float, float, float, float] | None:
        """The intrinsics scaled to an image of ``width`` x ``height`` (None when unknown).

        None too when the image's aspect ratio is not the camera's (``reference_size``, within 2 %, the
        rounding of a resize): such an image (a portrait photo from a landscape camera, a crop) is not the
        camera's frame resized, and scaling x and y apart would stretch the point cloud (x1.33 / x0.75 for a
        turned 4:3 photo). Use :meth:`intrinsics_note` to say why.
        """
        if self.intrinsics is None or self.reference_size is None or not self._camera_aspect(width, height):
            return None
        return scale_intrinsics(self.intrinsics, tuple(self.reference_size), (width, height))

    def _camera_aspect(self, width: int, height: int) -> bool:
        """Whether a ``width`` x ``height`` image has the aspect ratio of ``reference_size`` (within 2 %)."""
        ref_w, ref_h = self.reference_size  # type: ignore[misc]
        return abs((width / height) / (ref_w / ref_h) - 1.0) <= ASPECT_TOLERANCE

    def intrinsics_note(self, width: int, height: int) -> str:
        """Why :meth:`intrinsics_for` gives None for a ``width`` x ``height`` image (for one-line messages)."""
        if self.intrinsics is None or self.reference_size is None:
            return f"dataset {self.name!r} has no camera intrinsics"
        ref_w, ref_h = self.reference_size
        return (
            f"the {width}x{height} image does not have the aspect ratio of dataset {self.name!r}'s camera "
            f"({ref_w}x{ref_h}): its intrinsics do not apply"
        )

    def eval_crop_for(self, height: int, width: int) -> tuple[int, int, int, int] | None:
        """The evaluation crop ``(top, bottom, left, right)`` scaled to ``height`` x ``width`` (rounded)."""
        if self.eval_crop is None or self.reference_size is None:
            return None
        ref_w, ref_h = self.reference_size
        t, b, left, r = self.eval_crop
        sy, sx = height / ref_h, width / ref_w
        return (round(t * sy), round(b * sy), round(left * sx), round(r * sx))

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (what goes into checkpoints)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DatasetInfo:
        """Inverse of :meth:`to_dict` (tuples restored; unknown keys ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in data.items() if k in names}
        for key in ("intrinsics", "reference_size", "mean", "std", "eval_crop", "protocol_size"):
            if kw.get(key) is not None:
                kw[key] = tuple(kw[key])
        return cls(**kw)


def distinct_palette(n: int) -> list[list[int]]:
    """``n`` (<= 256) colours that stay apart, for datasets without a palette of their own (the folder dataset).

    The Glasbey palette of ``colorcet`` (``glasbey_category10``: matplotlib's ten category colours first, then
    colours chosen one by one as far as possible, in CAM02-UCS, from all before them; no black, no white). The
    PASCAL-VOC bit colormap gave three near-identical purples to wall, floor and window of the NYU 13-class list
    (issue 25); here the closest two of the first 13 colours are 27.7 apart in CIELAB ΔE76 (VOC: 11.3), of the
    first 40 20.2 (VOC: 6.1).

    Args:
        n: Number of colours, 1..256.

    Returns:
        ``n`` ``[r, g, b]`` colours, 0..255.

    Raises:
        ValueError: ``n`` outside 1..256.
    """
    import colorcet

    colours = colorcet.glasbey_category10
    if not 1 <= n <= len(colours):
        raise ValueError(f"distinct_palette: n must be in 1..{len(colours)}, got {n}")
    return [[round(255 * float(v)) for v in c] for c in colours[:n]]


def voc_palette(n: int) -> list[list[int]]:
    """``n`` distinct colours from the PASCAL-VOC bit colormap, skipping its entry 0 (black = void)."""
    out = []
    for i in range(1, n + 1):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        out.append([r, g, b])
    return out


def nyu_intrinsics() -> tuple[tuple[float, float, float, float], tuple[int, int]]:
    """NYUv2 RGB intrinsics for 0-based pixel centres, and their ``(width, height)``."""
    k = load_meta("nyuv2")["intrinsics"]
    return (k["fx"], k["fy"], k["cx_0based"], k["cy_0based"]), (k["width"], k["height"])
