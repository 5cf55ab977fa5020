"""NYUv2 in the pre-processed ``.npy`` format of MTAN / LibMTL / Auto-Lambda (13 classes, 288x384).

Layout (the ``nyuv2`` folder those repositories download), samples numbered ``0 .. N-1``::

    root/train/image/<i>.npy    float ``288x384x3`` RGB in 0..1           (795 samples)
    root/train/label/<i>.npy    float ``288x384`` NYU13 ids 0..12, -1 = ignore
    root/train/depth/<i>.npy    float ``288x384x1`` depth in metres, 0 = invalid
    root/train/normal/<i>.npy   float ``288x384x3`` normals (not read: cinet has no normal head)
    root/val/...                the same for the 654 official test images

Conventions, as MTAN's ``im2im_pred/create_dataset.py`` and ``utils.py`` read them (``np.load`` of
``'{:d}.npy'.format(index)``, the length counted from ``image/*.npy``; ``ignore_index=-1`` in the
segmentation loss; depth pixels whose value is 0 are masked out): label -1 becomes 255 (ignore), ids 0..12
are kept (the 13-class order of ``meta/nyuv2.json``: bed, books, ceiling, ...), depth is returned in metres
as stored. The image is returned at full float precision (no rounding to 8 bits). ``test`` is an alias of
``val``. Intrinsics: the NYU toolbox values scaled to the frame size (the frames are the 640x480 images
resized as a whole).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from cinet.data.base import BaseDataset, Sample, require_dir
from cinet.data.info import DatasetInfo
from cinet.data.nyud_mt import depth_map, read_npy
from cinet.data.nyuv2 import nyuv2_info
from cinet.errors import DataError, where

#: The frame size of the pre-processed set, ``(H, W)``.
MTAN_SIZE: tuple[int, int] = (288, 384)


def nyuv2_mtan_info() -> DatasetInfo:
    """The :class:`DatasetInfo` of the MTAN format (NYU13, no crop, evaluated at 288x384): NYUv2's
    (:func:`cinet.data.nyuv2.nyuv2_info`) without its Eigen crop, at the set's frame size."""
    return dataclasses.replace(
        nyuv2_info(13), name="nyuv2_mtan", eval_crop=None, protocol_crop=None, protocol_size=MTAN_SIZE
    )


class NYUv2MTANDataset(BaseDataset):
    """NYUv2 as MTAN / LibMTL / Auto-Lambda store it (``{train,val}/{image,label,depth}/<i>.npy``).

    Args:
        root: The folder holding ``train/`` and ``val/``.
        split: ``train`` or ``val`` (``test`` = ``val``).
        transform: Joint transform on the sample dict.

    Raises:
        ValueError: Unknown split (``split: ...``).
        DataError: Missing folder, a gap in the numbering, a file of the wrong shape or values (named).
    """

    OPTIONS: tuple[str, ...] = ()

    def __init__(self, root: str | Path, split: str = "train", *, transform: Any = None):
        super().__init__(nyuv2_mtan_info(), split, transform)
        name = "val" if split == "test" else split
        if name not in ("train", "val"):
            raise ValueError(f"split: unknown split {split!r} (train, val or test = val)")
        self.root = require_dir(root, "NYUv2 (MTAN format) root")
        self.dir = require_dir(self.root / name, f"NYUv2 (MTAN format) {name} folder")
        image_dir = require_dir(self.dir / "image", f"{name} image folder")
        stems = sorted(p.stem for p in image_dir.glob("*.npy"))
        numbers = sorted(int(s) for s in stems if s.isdigit())
        if not numbers:
            raise DataError(where(image_dir, "no <i>.npy images"))
        for expected, got in enumerate(numbers):  # MTAN reads 0..N-1 with N = the number of image files
            if got != expected:
                raise DataError(where(image_dir / f"{expected}.npy", "missing (samples are numbered 0..N-1)"))
        for sub in ("label", "depth"):
            require_dir(self.dir / sub, f"{name} {sub} folder")
        self.count = len(numbers)

    def __len__(self) -> int:
        return self.count

    def _path(self, kind: str, index: int) -> Path:
        path = self.dir / kind / f"{index}.npy"
        if not path.is_file():
            raise DataError(where(path, f"{kind} of sample {index} not found"))
        return path

    def sample_ref(self, index: int) -> str:
        return str(self.dir / "image" / f"{index}.npy")

    def _load(self, index: int) -> Sample:
        image_path, label_path, depth_path = (self._path(k, index) for k in ("image", "label", "depth"))
        image = read_npy(image_path)
        if image.ndim != 3 or image.shape[2] != 3 or not np.issubdtype(image.dtype, np.number):
            raise DataError(where(image_path, f"image array of shape {image.shape}, expected HxWx3 in 0..1"))
        image = np.asarray(image, dtype=np.float32)
        if image.size and (not np.isfinite(image).all() or image.min() < 0 or image.max() > 1):
            raise DataError(where(image_path, "image values outside 0..1 (this format stores RGB / 255)"))
        raw = read_npy(label_path)
        if raw.ndim == 3 and raw.shape[2] == 1:
            raw = raw[:, :, 0]
        if raw.ndim != 2 or not np.issubdtype(raw.dtype, np.number):
            raise DataError(where(label_path, f"label array of shape {raw.shape}, expected HxW"))
        bad = ~np.isin(raw, np.arange(-1, 13))
        if bad.any():
            raise DataError(
                where(label_path, f"label value {raw[bad].flat[0].item():g} outside -1..12 (-1 = ignore)")
            )
        ids = raw.astype(np.int64)
        labels = np.where(ids < 0, 255, ids).astype(np.uint8)
        depth = depth_map(read_npy(depth_path), depth_path)
        return {
            # float 0..255: to_tensor_sample divides by 255, so the stored 0..1 values come back unrounded
            "image": image * np.float32(255.0),
            "depth": depth,
            "labels": labels,
            "meta": {"id": f"nyuv2_mtan/{self.split}/{index}"},
            "files": [image_path, depth_path, label_path],
            "label_file": label_path,
        }

    @staticmethod
    def make_info(**_: Any) -> DatasetInfo:
        return nyuv2_mtan_info()
