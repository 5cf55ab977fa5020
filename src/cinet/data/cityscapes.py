"""Cityscapes (gtFine, 19 train classes) with depth from the stereo disparity.

Layout (``root`` is the Cityscapes folder)::

    leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png
    disparity/<split>/<city>/<city>_<seq>_<frame>_disparity.png      uint16
    camera/<split>/<city>/<city>_<seq>_<frame>_camera.json           extrinsic.baseline, intrinsic.fx/fy/u0/v0
    gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png   label ids 0..33

Depth: for a disparity pixel ``p > 1``, ``d = (p - 1) / 256`` and ``depth = baseline * fx / d`` (metres);
``p = 0`` (no measurement) and ``p = 1`` (d = 0, infinitely far) are invalid (0). Depth beyond the 80 m cap is
set invalid (not clipped: a far wall clipped to 80 m would be a wrong target). Labels: ``labelIds`` -> trainId
through the labels table of ``cityscapesScripts/helpers/labels.py``; everything without a trainId becomes 255.
``meta["intrinsics"]`` comes from the camera JSON (``fx, fy, u0, v0``).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from cinet.data.base import (
    BaseDataset,
    Sample,
    read_label_png,
    read_png16,
    read_rgb,
    require_dir,
    require_file,
)
from cinet.data.info import DatasetInfo, load_meta
from cinet.errors import DataError, where

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


def label_lut() -> np.ndarray:
    """Lookup table Cityscapes label id (0..33) -> trainId (0..18, 255 = ignore); length 34."""
    rows = load_meta("cityscapes")["labels"]
    lut = np.full(34, 255, np.uint8)
    for row in rows:
        if 0 <= row["id"] < 34 and 0 <= row["trainId"] < 19:
            lut[row["id"]] = row["trainId"]
    return lut


def cityscapes_info() -> DatasetInfo:
    """The :class:`DatasetInfo` of Cityscapes (19 classes, 80 m cap).

    The default intrinsics are those of the example camera file quoted in ``cityscapes.json`` (for images
    without their own camera JSON, e.g. at prediction time); samples carry their own from ``camera/``.
    """
    meta = load_meta("cityscapes")
    palette: list[list[int]] = [[0, 0, 0]] * 19
    for row in meta["labels"]:
        if 0 <= row["trainId"] < 19:
            palette[row["trainId"]] = list(row["color"])
    ex = meta["camera_json_keys"]["example_from_third_party_copy"]["intrinsic"]
    return DatasetInfo(
        name="cityscapes",
        num_classes=19,
        class_names=list(meta["train_classes19"]),
        palette=palette,
        depth_cap=float(meta["depth_cap_m"]),
        min_depth=1e-3,
        intrinsics=(float(ex["fx"]), float(ex["fy"]), float(ex["u0"]), float(ex["v0"])),
        reference_size=(2048, 1024),
    )


def disparity_to_depth(p: np.ndarray, baseline: float, fx: float, cap: float = 80.0) -> np.ndarray:
    """Cityscapes disparity PNG values -> depth in metres (0 = invalid: p <= 1 or beyond ``cap``)."""
    p = p.astype(np.float64)
    valid = p > 1
    depth = np.zeros(p.shape, np.float64)
    depth[valid] = baseline * fx * 256.0 / (p[valid] - 1.0)
    depth[depth > cap] = 0.0
    return depth.astype(np.float32)


class CityscapesDataset(BaseDataset):
    """Cityscapes fine annotations with disparity-derived depth (see the module docstring).

    Args:
        root: Cityscapes folder (holding ``leftImg8bit``, ``disparity``, ``camera``, ``gtFine``).
        split: ``train``, ``val`` or ``test``.
        transform: Joint transform on the sample dict.
    """

    OPTIONS = ()

    def __init__(self, root: str | Path, split: str = "train", *, transform: Any = None):
        super().__init__(cityscapes_info(), split, transform)
        if split not in SPLITS:
            raise ValueError(f"split: unknown split {split!r} (choose from {', '.join(SPLITS)})")
        self.root = require_dir(root, "Cityscapes root")
        img_dir = require_dir(self.root / "leftImg8bit" / split, "Cityscapes image folder")
        self.images = sorted(img_dir.glob("*/*_leftImg8bit.png"))
        if not self.images:
            raise DataError(where(img_dir, "no *_leftImg8bit.png images"))
        self.lut = label_lut()

    def __len__(self) -> int:
        return len(self.images)

    def sample_ref(self, index: int) -> str:
        return str(self.images[index])

    def paths(self, index: int) -> dict[str, Path]:
        """The four files of sample ``index``."""
        img = self.images[index]
        city = img.parent.name
        stem = img.name[: -len("_leftImg8bit.png")]
        return {
            "image": img,
            "disparity": self.root / "disparity" / self.split / city / f"{stem}_disparity.png",
            "camera": self.root / "camera" / self.split / city / f"{stem}_camera.json",
            "labels": self.root / "gtFine" / self.split / city / f"{stem}_gtFine_labelIds.png",
        }

    @staticmethod
    def read_camera(path: Path) -> tuple[float, tuple[float, float, float, float]]:
        """``(baseline, (fx, fy, u0, v0))`` from a camera JSON."""
        require_file(path, "camera JSON")
        try:
            cam = json.loads(path.read_text(encoding="utf-8"))
            baseline = float(cam["extrinsic"]["baseline"])
            k = cam["intrinsic"]
            return baseline, (float(k["fx"]), float(k["fy"]), float(k["u0"]), float(k["v0"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise DataError(where(path, f"bad camera JSON ({type(exc).__name__}: {exc})")) from None

    def _load(self, index: int) -> Sample:
        p = self.paths(index)
        for key in ("disparity", "camera", "labels"):
            require_file(p[key], f"Cityscapes {key} file")
        image = read_rgb(p["image"], with_maps=True)
        baseline, k = self.read_camera(p["camera"])
        depth = disparity_to_depth(read_png16(p["disparity"]), baseline, k[0], self.info.depth_cap)
        raw = read_label_png(p["labels"]).astype(np.int64)
        bad = (raw < 0) | (raw >= len(self.lut))
        if bad.any():
            raise DataError(where(p["labels"], f"label id {int(raw[bad].flat[0])} outside 0..33"))
        labels = self.lut[raw]
        meta = {
            "id": f"cityscapes/{self.split}/{p['image'].name[: -len('_leftImg8bit.png')]}",
            "intrinsics": k,
        }
        return {
            "image": image,
            "depth": depth,
            "labels": labels,
            "meta": meta,
            "files": [p["image"], p["disparity"], p["labels"]],
            "label_file": p["labels"],
        }

    @staticmethod
    def make_info(**_: Any) -> DatasetInfo:
        return cityscapes_info()
