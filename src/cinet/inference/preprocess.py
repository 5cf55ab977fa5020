"""One preprocessing for evaluation and prediction: how an image is fitted to the network, and back.

``cinet eval`` (:meth:`cinet.engine.module.CINetModule.predict_batch`), ``cinet predict`` and the Python
:class:`~cinet.inference.predictor.Predictor` (PyTorch and ONNX) all call :func:`plan_geometry`,
:func:`to_network` and :meth:`Geometry.restore`, so the same checkpoint on the same image gives the same depth
and labels through every path (``tests/test_preprocess.py``).

The policy, in order:

1. **Size the network sees** (``scaled``):

   * ``input_size`` given (the checkpoint's ``data.eval_size``, or a fixed-size ONNX file): exactly that
     ``(H, W)``;
   * else ``train_size`` given (the size the checkpoint was trained at), ``keep_size`` false, and the image's
     longer side more than :data:`FAR_FACTOR` times larger or smaller than the training images' longer side
     (:func:`training_side`): scaled to the training longer side (aspect ratio kept);
   * else the image's own size;
   * then ``max_side`` (``cinet predict`` / ``cinet serve --max-side``, a memory and speed cap): when the
     longer side of that size is larger, scaled down to ``max_side``. The cap never replaces the training-size
     rule (issue 25: ``serve``'s former default cap ran a 640x480 photo at full size where ``predict`` scaled
     it to the training size, and the two disagreed on the same photo).

   Resizing is bilinear (``align_corners=False``), antialiased when shrinking.
2. **Output stride**: the network input must be a multiple of ``multiple`` (8, the encoder's output stride).
   ``pad`` (default) pads the bottom and right edges by reflection (replicate when the pad is not smaller than
   the image); ``resize`` resizes to the nearest multiple instead.
3. **Back to the image**: the network's depth and class logits are cropped to the content (the padding is
   dropped) and resized bilinearly to the original size; labels are the argmax of the restored logits.

Every operation is linear per channel, so it commutes with the mean/std normalisation: the input may be
normalised before or after (``Predictor`` and the datasets normalise first).

Why the training-resolution rule: a network sees objects at the scale it was trained on; the demo checkpoint
(trained at 96x128) gives noise on a 480x640 photo at its own size and a sensible result at 96x128. A checkpoint
records the size it was trained at (``checkpoint["cinet"]["train_size"]``); ``cinet predict`` says when the rule
scaled an image (``--keep-size`` turns it off, with a warning). ``cinet eval`` applies the same rule, which
changes nothing when the evaluated images have the training size (the usual case: ``data.image_size`` applies
to every split).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from cinet.data.transforms import resize_map

#: Output stride of the encoder: network input sides are multiples of this.
OUTPUT_STRIDE = 8
FIT_MODES = ("pad", "resize")
#: An image whose longer side is more than this factor away from the training image's is "far" from it.
FAR_FACTOR = 1.5

__all__ = [
    "FAR_FACTOR",
    "FIT_MODES",
    "OUTPUT_STRIDE",
    "Geometry",
    "plan_geometry",
    "to_network",
    "training_side",
    "training_size_of",
]


@dataclass(frozen=True)
class Geometry:
    """How an image was fitted to the network input.

    The image (``orig`` = (H, W)) is resized to ``scaled`` (identical when no resizing was needed), then padded
    at the bottom and right to ``padded``, the network input size. The content occupies
    ``[0:scaled[0], 0:scaled[1]]`` of the network input.
    """

    orig: tuple[int, int]
    scaled: tuple[int, int]
    padded: tuple[int, int]

    def to_network(self, x: float, y: float) -> tuple[float, float]:
        """Image pixel (x column, y row; 0-based centres) -> the same point in network-input pixels."""
        sx = self.scaled[1] / self.orig[1]
        sy = self.scaled[0] / self.orig[0]
        return (x + 0.5) * sx - 0.5, (y + 0.5) * sy - 0.5

    def feature_cell(self, x: float, y: float, size: tuple[int, int]) -> tuple[int, int]:
        """Image pixel (x, y) -> (column, row) of the cell of a feature grid ``size`` = (h, w) that holds it."""
        xn, yn = self.to_network(x, y)
        h, w = size
        col = math.floor((xn + 0.5) * w / self.padded[1])
        row = math.floor((yn + 0.5) * h / self.padded[0])
        return min(max(col, 0), w - 1), min(max(row, 0), h - 1)

    def content_cells(self, size: tuple[int, int]) -> tuple[int, int]:
        """Rows and columns of a feature grid ``size`` that cover image content (not padding)."""
        h, w = size
        rows = max(1, min(h, math.ceil(self.scaled[0] * h / self.padded[0])))
        cols = max(1, min(w, math.ceil(self.scaled[1] * w / self.padded[1])))
        return rows, cols

    def restore(self, t: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
        """A map ``[B,C,h,w]`` over the network input (any resolution) -> ``[B,C,H,W]`` at the image size.

        Crops the padding (scaled proportionally at a coarser resolution), then resizes to ``orig``
        (bilinear, ``align_corners=False``; ``mode="nearest"`` for label maps: the nearest pixel centre,
        ``nearest-exact``, on the same grid).
        """
        h, w = t.shape[-2:]
        if (h, w) == self.padded:
            t = t[..., : self.scaled[0], : self.scaled[1]]
        else:
            rows, cols = self.content_cells((h, w))
            t = t[..., :rows, :cols]
        if tuple(t.shape[-2:]) != self.orig:
            if mode == "nearest":
                t = resize_map(t, self.orig)
            else:
                t = F.interpolate(t, size=self.orig, mode="bilinear", align_corners=False)
        return t


def plan_geometry(
    height: int,
    width: int,
    *,
    input_size: tuple[int, int] | None = None,
    max_side: int | None = None,
    train_size: tuple[int, int] | None = None,
    keep_size: bool = False,
    multiple: int = OUTPUT_STRIDE,
    mode: str = "pad",
) -> Geometry:
    """The :class:`Geometry` of an image of ``height`` x ``width`` under the policy of the module docstring.

    Args:
        height: Image height in pixels.
        width: Image width in pixels.
        input_size: Fixed network input ``(H, W)`` (evaluation's ``data.eval_size``, a fixed-size ONNX file).
        max_side: Cap: scale down to this longer side when the size chosen by the rules above is larger.
        train_size: ``(H, W)`` the model was trained at: images far from it are scaled to its longer side.
        keep_size: Do not apply the ``train_size`` rule (``max_side`` still caps).
        multiple: Network input sides become multiples of this (the output stride, 8).
        mode: ``pad`` (reflect-pad bottom/right) or ``resize`` (resize to the nearest multiple).

    Raises:
        ValueError: Unknown ``mode``, ``multiple < 1``, or a non-positive size.
    """
    if mode not in FIT_MODES:
        raise ValueError(f"mode must be one of {FIT_MODES}, got {mode!r}")
    if multiple < 1:
        raise ValueError(f"multiple must be >= 1, got {multiple}")
    if height < 1 or width < 1:
        raise ValueError(f"image size must be positive, got height={height}, width={width}")
    h, w = height, width
    side = None
    if input_size is not None:
        h, w = int(input_size[0]), int(input_size[1])
    else:
        if not keep_size:
            side = training_side(h, w, train_size)
        if max_side is not None and (side if side is not None else max(h, w)) > max_side:
            side = max_side
    if side is not None:
        s = side / max(h, w)
        h, w = max(1, round(h * s)), max(1, round(w * s))
    m = multiple
    if mode == "resize":
        h, w = max(m, round(h / m) * m), max(m, round(w / m) * m)
        return Geometry(orig=(height, width), scaled=(h, w), padded=(h, w))
    return Geometry(orig=(height, width), scaled=(h, w), padded=(math.ceil(h / m) * m, math.ceil(w / m) * m))


def to_network(images: torch.Tensor, geometry: Geometry) -> torch.Tensor:
    """Fit a batch ``[B,3,H,W]`` (``H, W = geometry.orig``; normalised or not) to ``[B,3,*geometry.padded]``.

    Bilinear resize to ``geometry.scaled`` (antialiased when shrinking), then padding of the bottom and right
    edges: reflection, or replication when the pad is not smaller than the content.
    """
    x = images
    if tuple(x.shape[-2:]) != geometry.orig:
        raise ValueError(f"images are {tuple(x.shape[-2:])}, geometry is for {geometry.orig}")
    scaled = geometry.scaled
    if scaled != geometry.orig:
        antialias = scaled[0] < geometry.orig[0] or scaled[1] < geometry.orig[1]
        x = F.interpolate(x, size=scaled, mode="bilinear", align_corners=False, antialias=antialias)
    pad_h, pad_w = geometry.padded[0] - scaled[0], geometry.padded[1] - scaled[1]
    if pad_h or pad_w:
        reflect = pad_h < scaled[0] and pad_w < scaled[1]
        x = F.pad(x, (0, pad_w, 0, pad_h), mode="reflect" if reflect else "replicate")
    return x


def training_side(
    height: int, width: int, train_size: tuple[int, int] | None, factor: float = FAR_FACTOR
) -> int | None:
    """The longer side to scale an image to so it matches the training resolution, or None to keep it.

    Args:
        height: Image height.
        width: Image width.
        train_size: ``(H, W)`` of the training images (``checkpoint["cinet"]["train_size"]``), or None.
        factor: An image is far from the training resolution when its longer side is more than ``factor``
            times larger or smaller than the training image's longer side.

    Returns:
        The training image's longer side when the image is far from it, else None.
    """
    if train_size is None:
        return None
    side, train = max(height, width), max(int(train_size[0]), int(train_size[1]))
    if side > factor * train or side * factor < train:
        return train
    return None


def training_size_of(payload: dict[str, Any]) -> tuple[int, int] | None:
    """``(H, W)`` a checkpoint's model was trained at, from ``checkpoint["cinet"]``.

    ``train_size`` is written by ``cinet train`` since this field exists; for older checkpoints it is read from
    the stored config (``data.image_size``, else the synthetic dataset's ``data.options.size``). None when
    unknown.
    """
    size = payload.get("train_size")
    if size is None:
        data = (payload.get("config") or {}).get("data") or {}
        size = data.get("image_size")
        if size is None and data.get("name") == "synthetic":
            size = (data.get("options") or {}).get("size", (240, 320))
    if isinstance(size, int):
        size = (size, size)
    if not size or len(size) != 2:
        return None
    return int(size[0]), int(size[1])
