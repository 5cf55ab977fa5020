"""The one input policy: how an image is normalised, fitted to the network, and how outputs come back.

A trained model's input is described by one :class:`InputSpec` (mean / std on the 0..1 scale, the size it was
trained at, the evaluation's fixed input size), read from its checkpoint
(:meth:`cinet.checkpoint.CheckpointPayload.input_spec`). Training visualisation (``engine/module.py``),
``cinet eval`` (:meth:`cinet.engine.module.CINetModule.predict_batch`), ``cinet predict`` / ``serve`` and the
Python :class:`~cinet.inference.predictor.Predictor` (PyTorch and ONNX), ``cinet export``'s INT8 calibration
and accuracy check (:mod:`cinet.inference.quantize`) all normalise with :meth:`InputSpec.normalize` and fit with
:func:`plan_geometry`, :func:`to_network` and :meth:`Geometry.restore`, so the same checkpoint on the same image
gives the same depth and labels through every path (``tests/test_preprocess.py``). The arithmetic of the
normalisation is the data layer's (:func:`cinet.data.base.normalize_image`, :func:`~cinet.data.base.denormalize`).

The fitting policy, in order:

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
records the size it was trained at (:attr:`cinet.checkpoint.CheckpointPayload.train_size`); ``cinet predict``
says when the rule scaled an image (``--keep-size`` turns it off, with a warning). ``cinet eval`` applies the same rule, which
changes nothing when the evaluated images have the training size (the usual case: ``data.image_size`` applies
to every split).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from cinet.data.base import denormalize, normalize_image
from cinet.ops import resize_map

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
    "InputSpec",
    "fit",
    "plan_geometry",
    "to_network",
    "training_side",
    "unit_scale",
]


def unit_scale(mean: Sequence[float], std: Sequence[float]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``(mean, std)`` as float tuples on the 0..1 scale: values given on the 0..255 scale (any mean above 1)
    are divided by 255."""
    mean, std = tuple(float(v) for v in mean), tuple(float(v) for v in std)
    if max(mean) > 1.0:
        mean, std = tuple(v / 255.0 for v in mean), tuple(v / 255.0 for v in std)
    return mean, std


@dataclass(frozen=True)
class InputSpec:
    """What a trained model expects of its input: one value per concept, read from its checkpoint.

    Attributes:
        mean: Per-channel mean (RGB, 0..1 scale) the model was trained with (its encoder's).
        std: Per-channel standard deviation (RGB, 0..1 scale).
        train_size: ``(H, W)`` of the training images, or None when unknown: images far from it are scaled to
            its longer side (:func:`training_side`).
        eval_size: ``(H, W)`` of evaluation's fixed network input (``data.eval_size``), or None.

    Camera intrinsics travel with the dataset description (:class:`cinet.data.DatasetInfo`, scaled to each
    image by :meth:`~cinet.data.DatasetInfo.intrinsics_for`), not here: they change no network input.

    Raises:
        ValueError: ``mean`` / ``std`` not of 3 values, a non-positive ``std`` or size.
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]
    train_size: tuple[int, int] | None = None
    eval_size: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        mean, std = unit_scale(self.mean, self.std)
        if len(mean) != 3 or len(std) != 3:
            raise ValueError(f"mean and std need 3 values (RGB), got {mean} and {std}")
        if min(std) <= 0:
            raise ValueError(f"std must be positive, got {std}")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)
        for name in ("train_size", "eval_size"):
            size = getattr(self, name)
            if size is not None:
                size = (int(size[0]), int(size[1]))
                if min(size) < 1:
                    raise ValueError(f"{name} must be positive, got {size}")
                object.__setattr__(self, name, size)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """``[3,H,W]`` or ``[B,3,H,W]`` on the 0..1 scale -> the network's normalised input."""
        return normalize_image(images, self.mean, self.std)

    def normalize_uint8(self, rgb: torch.Tensor) -> torch.Tensor:
        """``[..., H, W, 3]`` uint8 RGB (a decoded image) -> the normalised float32 input ``[1,3,H,W]``."""
        return self.normalize(rgb.permute(2, 0, 1).unsqueeze(0).float() / 255.0)

    def denormalize(self, images: torch.Tensor) -> torch.Tensor:
        """Undo :meth:`normalize` (clamped to 0..1), for pictures of the input."""
        return denormalize(images, self.mean, self.std)

    def plan(
        self,
        height: int,
        width: int,
        *,
        input_size: tuple[int, int] | None = None,
        max_side: int | None = None,
        keep_size: bool = False,
        multiple: int = OUTPUT_STRIDE,
        mode: str = "pad",
    ) -> Geometry:
        """:func:`plan_geometry` with this spec's training size (``input_size`` default: :attr:`eval_size`)."""
        return plan_geometry(
            height,
            width,
            input_size=input_size if input_size is not None else self.eval_size,
            max_side=max_side,
            train_size=self.train_size,
            keep_size=keep_size,
            multiple=multiple,
            mode=mode,
        )


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
        train_size: ``(H, W)`` of the training images (:attr:`cinet.checkpoint.CheckpointPayload.train_size`), or None.
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


def fit(
    images: torch.Tensor,
    *,
    input_size: tuple[int, int] | None = None,
    train_size: tuple[int, int] | None = None,
) -> tuple[torch.Tensor, Geometry]:
    """A normalised batch ``[B,3,H,W]`` fitted to the network as ``cinet eval`` fits it (no ``max_side``).

    Args:
        images: Normalised images (the datasets' eval transform).
        input_size: Fixed network input ``(H, W)`` (``data.eval_size``, a fixed-size ONNX file), or None.
        train_size: ``(H, W)`` the model was trained at: images far from it are scaled to its longer side.

    Returns:
        ``(network input [B,3,Hp,Wp], geometry)``; ``geometry.restore`` maps outputs back to ``H x W``.
    """
    h, w = (int(v) for v in images.shape[-2:])
    geometry = plan_geometry(h, w, input_size=input_size, train_size=train_size)
    return to_network(images, geometry), geometry
