"""NYUD-v2 in the multi-task format of ATRC / Multi-Task-Learning-PyTorch (MTI-Net) / InvPT / MLoRE / MTMamba.

Layout (``NYUDv2/`` or ``NYUD_MT/`` as those repositories ship it), one id per sample::

    root/gt_sets/train.txt, val.txt     one id per line (795 train / 654 val = the official NYUv2 split)
    root/images/<id>.jpg                RGB (``.png`` in the InvPT / TaskPrompter copy; either is read)
    root/segmentation/<id>.png          uint8 NYU40 ids: 0 = background/unlabelled, 1..40 = the 40 classes
    root/depth/<id>.npy                 float32 ``HxW`` (or ``HxWx1``) depth in metres, 0 = invalid
    root/normals/, root/edge/           surface normals and edges (not read: cinet has no such heads)

Conventions, as the loaders of those repositories apply them (``data/nyud.py``: ``_load_semseg`` maps 0 to
the ignore label and ``c`` to ``c - 1``; ``_load_depth`` returns the ``.npy`` unchanged): label 0 becomes 255
(ignore), ``c`` in 1..40 becomes train id ``c - 1`` (0..39, the NYU40 order of ``meta/nyuv2.json``), and depth
is returned in metres as stored (no cap: the field's evaluation uses no cap, see
:data:`cinet.metrics.protocols.PRESETS`). ``test`` is an alias of ``val``. The images are the 480x640 NYUv2
frames; the NYU intrinsics are attached to frames of that size only (a cropped copy gets ``None``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from cinet.data.base import BaseDataset, Sample, read_label_png, read_rgb, require_dir, require_file
from cinet.data.info import DatasetInfo
from cinet.data.nyuv2 import nyuv2_info
from cinet.errors import DataError, where

IMAGE_EXTENSIONS = (".jpg", ".png")


def read_npy(path: Path) -> np.ndarray:
    """A ``.npy`` array (no pickles), or :class:`DataError` naming ``path`` when it cannot be read."""
    try:
        return np.load(path, allow_pickle=False)
    except Exception as exc:  # truncated file, pickled object array, not an .npy
        raise DataError(
            where(path, f"cannot read .npy ({type(exc).__name__}: {exc})".replace("\n", " "))
        ) from None


def depth_map(array: np.ndarray, path: Path) -> np.ndarray:
    """A depth array ``HxW`` or ``HxWx1`` as float32 ``HxW`` metres; :class:`DataError` naming ``path`` otherwise."""
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim != 2 or not np.issubdtype(array.dtype, np.number):
        raise DataError(
            where(path, f"depth array of shape {array.shape} ({array.dtype}), expected HxW or HxWx1")
        )
    return np.asarray(array, dtype=np.float32)


def nyud_mt_info() -> DatasetInfo:
    """The :class:`DatasetInfo` of the multi-task NYUD format (NYU40, no crop, toolbox intrinsics at 640x480):
    NYUv2's (:func:`cinet.data.nyuv2.nyuv2_info`) without its Eigen crop and protocol size."""
    return dataclasses.replace(
        nyuv2_info(40), name="nyud_mt", eval_crop=None, protocol_crop=None, protocol_size=None
    )


def read_split(root: Path, split: str) -> list[str]:
    """The ids listed in ``root/gt_sets/<split>.txt`` (blank lines skipped)."""
    path = require_file(root / "gt_sets" / f"{split}.txt", f"NYUD {split} list")
    try:
        ids = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(where(path, f"cannot read ({type(exc).__name__}: {exc})")) from None
    ids = [i for i in ids if i]
    if not ids:
        raise DataError(where(path, "no ids listed"))
    return ids


class NYUDMTDataset(BaseDataset):
    """NYUD-v2 in the multi-task (ATRC / MTI-Net / InvPT) folder format.

    Args:
        root: The ``NYUDv2`` folder (``images/``, ``segmentation/``, ``depth/``, ``gt_sets/``).
        split: ``train`` or ``val`` (``test`` = ``val``).
        transform: Joint transform on the sample dict.

    Raises:
        ValueError: Unknown split (``split: ...``).
        DataError: Missing folder, list or file (named).
    """

    OPTIONS: tuple[str, ...] = ()

    def __init__(self, root: str | Path, split: str = "train", *, transform: Any = None):
        super().__init__(nyud_mt_info(), split, transform)
        name = "val" if split == "test" else split
        if name not in ("train", "val"):
            raise ValueError(f"split: unknown split {split!r} (train, val or test = val)")
        self.root = require_dir(root, "NYUD multi-task root")
        self.ids = read_split(self.root, name)
        self.items: list[tuple[Path, Path, Path]] = []
        for i in self.ids:
            images = [self.root / "images" / f"{i}{ext}" for ext in IMAGE_EXTENSIONS]
            image = next((p for p in images if p.is_file()), None)
            if image is None:
                raise DataError(where(images[0], f"image of id {i!r} not found (nor {images[1].name})"))
            label = require_file(self.root / "segmentation" / f"{i}.png", f"segmentation of id {i!r}")
            depth = require_file(self.root / "depth" / f"{i}.npy", f"depth of id {i!r}")
            self.items.append((image, label, depth))

    def __len__(self) -> int:
        return len(self.items)

    def sample_ref(self, index: int) -> str:
        return str(self.items[index][0])

    def _load(self, index: int) -> Sample:
        image_path, label_path, depth_path = self.items[index]
        image = read_rgb(image_path)
        raw = read_label_png(label_path)
        if raw.ndim != 2:
            raise DataError(where(label_path, f"label image of shape {raw.shape}, expected one channel"))
        if raw.max(initial=0) > 40:
            raise DataError(where(label_path, f"label value {int(raw.max())} outside 0..40 (0 = ignore)"))
        labels = np.where(raw == 0, 255, raw.astype(np.int64) - 1).astype(np.uint8)
        depth = depth_map(read_npy(depth_path), depth_path)
        h, w = image.shape[:2]
        meta: dict[str, Any] = {"id": f"nyud_mt/{self.ids[index]}"}
        if (w, h) != tuple(self.info.reference_size or ()):
            meta["intrinsics"] = None  # a cropped or resized copy: the toolbox intrinsics do not apply
        return {
            "image": image,
            "depth": depth,
            "labels": labels,
            "meta": meta,
            "files": [image_path, depth_path, label_path],
            "label_file": label_path,
        }

    @staticmethod
    def make_info(**_: Any) -> DatasetInfo:
        return nyud_mt_info()
