"""Joint augmentations on the sample dict (torch tensors), torchvision-style.

Every transform takes and returns a sample dict with

* ``image``  float [3, H, W] in 0..1 (before :class:`Normalize`),
* ``depth``  float [1, H, W] metres, 0 = invalid,
* ``labels`` int64 [H, W], 255 = ignore,
* ``meta``   dict; ``meta["intrinsics"]`` ``(fx, fy, cx, cy)``, when not None, is updated by scale, crop, pad,
  resize and flip (rotation keeps it: a small in-plane rotation about the image centre is not a pinhole
  re-parameterisation, the approximation is documented here).

Geometric transforms move image, depth and labels together: the image is resampled bilinearly, depth and
labels with nearest neighbour; uncovered or padded area is depth 0 (invalid) and label 255 (ignore).
Every resize uses one pixel grid: pixel centres at integer coordinates, output pixel ``j`` looking at input
position ``(j + 0.5) * in / out - 0.5`` (``align_corners=False``). The image (bilinear) and the intrinsics
(:func:`cinet.data.info.scale_intrinsics`) follow it, so depth and label maps use ``nearest-exact`` (source
index ``floor((j + 0.5) * in / out)``, the nearest pixel centre), not ``nearest`` (``floor(j * in / out)``,
which shifts the maps by up to half an input pixel against the image; pytorch/pytorch#34808).
:class:`RandomScale` divides the depth by the scale it applied (the scene looks that much closer).
Randomness comes from ``torch``'s generator (seeded per DataLoader worker by PyTorch).
:class:`Normalize` marks ``meta["normalized"]``; a dataset normalises the image itself when no transform did.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from cinet.data.base import Sample, normalize_image
from cinet.data.info import IGNORE_INDEX, scale_intrinsics
from cinet.ops.resize import resize_map  # the one nearest-pixel-centre rule (re-exported here)

__all__ = [
    "CenterCrop",
    "ColorJitter",
    "Compose",
    "Normalize",
    "RandomCrop",
    "RandomHorizontalFlip",
    "RandomRotation",
    "RandomScale",
    "Resize",
    "build_transforms",
]


def _uniform(lo: float, hi: float) -> float:
    return float(lo + (hi - lo) * torch.rand(()).item())


def _copy(sample: Sample) -> Sample:
    out = dict(sample)
    out["meta"] = dict(sample.get("meta") or {})
    return out


def _size(sample: Sample) -> tuple[int, int]:
    h, w = sample["image"].shape[-2:]
    return int(h), int(w)


def _resize_all(sample: Sample, h: int, w: int) -> Sample:
    oh, ow = _size(sample)
    out = _copy(sample)
    out["image"] = TF.resize(
        sample["image"], [h, w], interpolation=v2.InterpolationMode.BILINEAR, antialias=True
    )
    if "depth" in sample:
        out["depth"] = resize_map(sample["depth"], (h, w))
    if "labels" in sample:
        out["labels"] = resize_map(sample["labels"][None], (h, w))[0]
    k = out["meta"].get("intrinsics")
    if k is not None:
        out["meta"]["intrinsics"] = scale_intrinsics(tuple(k), (ow, oh), (w, h))
    return out


def _pad(sample: Sample, top: int, bottom: int, left: int, right: int) -> Sample:
    if top == bottom == left == right == 0:
        return sample
    out = _copy(sample)
    pad = (left, right, top, bottom)
    out["image"] = F.pad(sample["image"], pad, value=0.0)
    if "depth" in sample:
        out["depth"] = F.pad(sample["depth"], pad, value=0.0)
    if "labels" in sample:
        out["labels"] = F.pad(sample["labels"], pad, value=IGNORE_INDEX)
    k = out["meta"].get("intrinsics")
    if k is not None:
        fx, fy, cx, cy = k
        out["meta"]["intrinsics"] = (fx, fy, cx + left, cy + top)
    return out


def _crop(sample: Sample, top: int, left: int, h: int, w: int) -> Sample:
    out = _copy(sample)
    for key in ("image", "depth", "labels"):
        if key in sample:
            out[key] = sample[key][..., top : top + h, left : left + w]
    k = out["meta"].get("intrinsics")
    if k is not None:
        fx, fy, cx, cy = k
        out["meta"]["intrinsics"] = (fx, fy, cx - left, cy - top)
    return out


class Compose:
    """Apply transforms in order."""

    def __init__(self, transforms: Sequence[Callable[[Sample], Sample]]):
        self.transforms = list(transforms)

    def __call__(self, sample: Sample) -> Sample:
        for t in self.transforms:
            sample = t(sample)
        return sample

    def __repr__(self) -> str:
        inner = "".join(f"\n    {t!r}," for t in self.transforms)
        return f"Compose([{inner}\n])"


class RandomRotation:
    """Rotate by an angle drawn from ``[-degrees, degrees]`` about the image centre.

    Image bilinear, depth and labels nearest; uncovered area: image 0, depth 0, labels 255.
    """

    def __init__(self, degrees: float):
        self.degrees = float(degrees)

    def __call__(self, sample: Sample) -> Sample:
        if self.degrees <= 0:
            return sample
        angle = _uniform(-self.degrees, self.degrees)
        return rotate(sample, angle)

    def __repr__(self) -> str:
        return f"RandomRotation(degrees={self.degrees})"


def rotate(sample: Sample, angle: float) -> Sample:
    """Rotate a sample by ``angle`` degrees (counter-clockwise), see :class:`RandomRotation`."""
    out = _copy(sample)
    out["image"] = TF.rotate(sample["image"], angle, interpolation=v2.InterpolationMode.BILINEAR, fill=0.0)
    if "depth" in sample:
        out["depth"] = TF.rotate(sample["depth"], angle, interpolation=v2.InterpolationMode.NEAREST, fill=0.0)
    if "labels" in sample:
        lab = sample["labels"][None].float()
        rot = TF.rotate(lab, angle, interpolation=v2.InterpolationMode.NEAREST, fill=float(IGNORE_INDEX))
        out["labels"] = rot[0].long()
    return out


class RandomScale:
    """Resize by ``s`` drawn from ``[min_scale, max_scale]``; depth is divided by the applied scale.

    Zooming in by ``s`` makes the scene look ``s`` times closer, so metric depth shrinks by ``s``
    (the CI-Net / Eigen augmentation). Intrinsics scale with the image. The sizes are rounded to whole
    pixels, so the scale actually applied is ``h'/h`` down and ``w'/w`` across; depth is divided by their
    geometric mean :func:`applied_scale`, not by the drawn ``s`` (they differ by up to 0.105 % at 416x544
    and 1.56 % at 24x32; docs/data.md).
    """

    def __init__(self, min_scale: float, max_scale: float):
        if not 0 < min_scale <= max_scale:
            raise ValueError(f"RandomScale: need 0 < min <= max, got {min_scale}, {max_scale}")
        self.min_scale, self.max_scale = float(min_scale), float(max_scale)

    def __call__(self, sample: Sample) -> Sample:
        s = _uniform(self.min_scale, self.max_scale)
        if s == 1.0:
            return sample
        h, w = _size(sample)
        nh, nw = max(1, round(h * s)), max(1, round(w * s))
        out = _resize_all(sample, nh, nw)
        if "depth" in out:
            out["depth"] = out["depth"] / applied_scale((h, w), (nh, nw))
        return out

    def __repr__(self) -> str:
        return f"RandomScale({self.min_scale}, {self.max_scale})"


def applied_scale(from_size: tuple[int, int], to_size: tuple[int, int]) -> float:
    """The zoom a resize from ``from_size`` to ``to_size`` (``(H, W)`` pixels) applies: ``sqrt(h'/h * w'/w)``.

    Metric depth is divided by it when an image is zoomed (:class:`RandomScale`).
    """
    return math.sqrt(to_size[0] / from_size[0] * to_size[1] / from_size[1])


class _Crop:
    """Crop of ``size`` (H, W) at :meth:`_origin`; a smaller sample is first padded (bottom/right) with
    invalid/ignore."""

    def __init__(self, size: int | Sequence[int]):
        self.size = (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))

    def __call__(self, sample: Sample) -> Sample:
        ch, cw = self.size
        h, w = _size(sample)
        sample = _pad(sample, 0, max(0, ch - h), 0, max(0, cw - w))
        h, w = _size(sample)
        top, left = self._origin(h - ch, w - cw)
        return _crop(sample, top, left, ch, cw)

    def _origin(self, spare_h: int, spare_w: int) -> tuple[int, int]:
        """(top, left) of the crop, given the rows/columns left over around it."""
        raise NotImplementedError


class RandomCrop(_Crop):
    """Random crop of ``size`` (H, W); a smaller sample is first padded (bottom/right) with invalid/ignore."""

    def _origin(self, spare_h: int, spare_w: int) -> tuple[int, int]:
        top = int(torch.randint(0, spare_h + 1, ()).item())
        left = int(torch.randint(0, spare_w + 1, ()).item())
        return top, left

    def __repr__(self) -> str:
        return f"RandomCrop(size={self.size})"


class CenterCrop(_Crop):
    """Centre crop of ``size`` (H, W) (padded with invalid/ignore like :class:`RandomCrop` when smaller)."""

    def _origin(self, spare_h: int, spare_w: int) -> tuple[int, int]:
        return spare_h // 2, spare_w // 2


class RandomHorizontalFlip:
    """Mirror image, depth and labels left-right with probability ``p`` (``cx -> W - 1 - cx``)."""

    def __init__(self, p: float = 0.5):
        self.p = float(p)

    def __call__(self, sample: Sample) -> Sample:
        if torch.rand(()).item() >= self.p:
            return sample
        return hflip(sample)

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(p={self.p})"


def hflip(sample: Sample) -> Sample:
    """Mirror a sample left-right."""
    out = _copy(sample)
    for key in ("image", "depth", "labels"):
        if key in sample:
            out[key] = sample[key].flip(-1)
    k = out["meta"].get("intrinsics")
    if k is not None:
        fx, fy, cx, cy = k
        out["meta"]["intrinsics"] = (fx, fy, _size(sample)[1] - 1 - cx, cy)
    return out


class ColorJitter:
    """torchvision's ColorJitter on the image only (expects the 0..1 image, i.e. before Normalize)."""

    def __init__(
        self, brightness: float = 0.4, contrast: float = 0.4, saturation: float = 0.4, hue: float = 0.0
    ):
        self.jitter = v2.ColorJitter(brightness=brightness, contrast=contrast, saturation=saturation, hue=hue)

    def __call__(self, sample: Sample) -> Sample:
        out = _copy(sample)
        out["image"] = self.jitter(sample["image"]).clamp(0.0, 1.0)
        return out

    def __repr__(self) -> str:
        return f"ColorJitter({self.jitter})"


class Resize:
    """Resize to ``size`` (H, W), or so that the shorter side is ``size`` when an int (eval policy)."""

    def __init__(self, size: int | Sequence[int]):
        self.size = size if isinstance(size, int) else (int(size[0]), int(size[1]))

    def __call__(self, sample: Sample) -> Sample:
        h, w = _size(sample)
        if isinstance(self.size, int):
            s = self.size / min(h, w)
            nh, nw = max(1, round(h * s)), max(1, round(w * s))
        else:
            nh, nw = self.size
        if (nh, nw) == (h, w):
            return sample
        return _resize_all(sample, nh, nw)

    def __repr__(self) -> str:
        return f"Resize(size={self.size})"


class Normalize:
    """``(image - mean) / std``; marks ``meta["normalized"]`` so the dataset does not normalise again.

    ``mean`` / ``std`` (RGB, 0..1 scale) have no default, as in torchvision: the encoder's (or a checkpoint's)
    are the only right ones.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        self.mean, self.std = tuple(mean), tuple(std)

    def __call__(self, sample: Sample) -> Sample:
        out = _copy(sample)
        out["image"] = normalize_image(sample["image"], self.mean, self.std)
        out["meta"]["normalized"] = True
        return out

    def __repr__(self) -> str:
        return f"Normalize(mean={self.mean}, std={self.std})"


def build_transforms(
    train: bool,
    *,
    crop_size: int | Sequence[int] | None = None,
    scale_range: Sequence[float] | None = (1.0, 1.5),
    rotation: float = 5.0,
    flip: bool = True,
    color_jitter: float | Sequence[float] | None = 0.4,
    resize: int | Sequence[int] | None = None,
    mean: Sequence[float],
    std: Sequence[float],
) -> Compose:
    """The training or evaluation pipeline.

    Train: rotation -> scale (depth / s) -> crop (when ``crop_size``) -> flip -> colour jitter -> normalise.
    Eval: resize (when ``resize``) -> normalise (the network's padding is the model side's:
    :mod:`cinet.preprocess`, shared by eval and predict).

    Args:
        train: Training (random) or evaluation (deterministic) pipeline.
        crop_size: Training crop (H, W) or int; None keeps the full image.
        scale_range: ``(min, max)`` of the random scale; None or (1, 1) disables it.
        rotation: Maximum absolute rotation in degrees (0 disables).
        flip: Random horizontal flips (p = 0.5).
        color_jitter: Brightness/contrast/saturation strength, or a ``(b, c, s, hue)`` tuple; None/0 disables.
        resize: Evaluation resize (H, W) or shorter side.
        mean: Normalisation mean (RGB, 0..1 scale): the encoder's or the checkpoint's; no default.
        std: Normalisation std.
    """
    ts: list[Callable[[Sample], Sample]] = []
    if train:
        if rotation and rotation > 0:
            ts.append(RandomRotation(rotation))
        if scale_range is not None and tuple(scale_range) != (1.0, 1.0):
            ts.append(RandomScale(float(scale_range[0]), float(scale_range[1])))
        if crop_size is not None:
            ts.append(RandomCrop(crop_size))
        if flip:
            ts.append(RandomHorizontalFlip(0.5))
        if color_jitter:
            if isinstance(color_jitter, (int, float)):
                b = c = s = float(color_jitter)
                hue = 0.0
            else:
                b, c, s, *rest = (float(v) for v in color_jitter)
                hue = rest[0] if rest else 0.0
            ts.append(ColorJitter(b, c, s, hue))
    else:
        if resize is not None:
            ts.append(Resize(resize))
    ts.append(Normalize(mean, std))
    return Compose(ts)
