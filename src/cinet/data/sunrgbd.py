"""SUN RGB-D (10335 images, 5285 train / 5050 test, 37 classes + void) in the official folder layout.

``root`` is the folder that holds ``SUNRGBD/`` (or ``SUNRGBD/`` itself). Each sample is one sequence folder
``SUNRGBD/<sensor>/<subset>/<sequence>/`` with

* ``image/*.jpg``: the RGB image;
* ``depth_bfx/*.png`` (default, the filled depth) or ``depth/*.png`` (raw, ``depth="raw"``): 16-bit PNGs stored
  bit-rotated. The toolbox (``read3dPoints.m``) decoding is used: ``v = (p >> 3) | (p << 13)`` in 16 bits,
  metres ``= v / 1000``, values above 8 m clipped to 8 m, 0 = invalid;
* ``intrinsics.txt``: row-major 3x3 ``K`` (fx, fy, cx, cy in the toolbox's 1-based pixel coordinates; cinet's
  ``meta["intrinsics"]`` are 0-based: cx - 1, cy - 1, see :func:`toolbox_intrinsics`);
* the 37-class labels (0 = void, 1..37 = seg37list order, made 0-based with void -> 255).

Labels: the official labels live in ``SUNRGBDtoolbox/Metadata/SUNRGBD2Dseg.mat`` (a ~64 GB-in-MATLAB HDF5
file indexed in ``SUNRGBDMeta`` order, which could not be verified), so this loader reads a per-sequence
export instead. **Primary**: ``<sequence>/label/label.png`` (8-bit PNG, 0 = void, 1..37); also accepted:
``<sequence>/label/label.npy`` (ESANet's export, same values). The per-folder ``seg.mat`` is NOT used: its
``seglabel`` indexes a per-image name list, not seg37list (sunrgbd.json ``label_storage``).

Splits, first found wins: ``root/<split>.txt`` (one sequence path per line), the toolbox
``SUNRGBDtoolbox/traintestSUNRGBD/allsplit.mat`` (``alltrain`` / ``alltest``), or the Handa lists
``sunrgbd_training_images.txt`` / ``sunrgbd_testing_images.txt``. Paths are cut after their last
``SUNRGBD/`` (the original lists start with ``/n/fs/sun3d/data/SUNRGBD/``) and after the sequence folder.
``val`` is an alias of ``test``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from cinet.data.base import BaseDataset, Sample, read_label_png, read_png16, read_rgb, require_dir
from cinet.data.info import DatasetInfo, load_meta
from cinet.errors import DataError, where

log = logging.getLogger(__name__)

SEQUENCE_SUBDIRS = ("image", "depth", "depth_bfx", "label", "annotation2Dfinal", "fullres", "extrinsics")


def decode_depth(png: np.ndarray, cap: float = 8.0) -> np.ndarray:
    """SUN RGB-D depth PNG (uint16, bit-rotated) -> metres (toolbox ``read3dPoints.m``), clipped to ``cap``."""
    if png.dtype != np.uint16:
        raise ValueError(f"expected uint16 depth, got {png.dtype}")
    v = png.astype(np.uint32)
    mm = (v >> 3) | ((v << 13) & 0xFFFF)
    return np.minimum(mm.astype(np.float32) / np.float32(1000.0), np.float32(cap))


def toolbox_intrinsics(k: np.ndarray) -> tuple[float, float, float, float]:
    """``(fx, fy, cx, cy)`` for 0-based pixel centres from a SUN RGB-D ``intrinsics.txt`` (9 numbers, row-major K).

    The toolbox back-projects with ``[x, y] = meshgrid(1:W, 1:H)`` (``read_3d_pts_general.m``): its principal
    point is in MATLAB's 1-based pixel coordinates, so the 0-based one cinet uses everywhere (NYU, Cityscapes,
    the folder format, :func:`cinet.inference.pointcloud.backproject`) is ``cx - 1, cy - 1``; used as written
    it is 1 px off (5.8 mm at 3 m; pykitti#26 is the same fault).
    """
    return (float(k[0]), float(k[4]), float(k[2]) - 1.0, float(k[5]) - 1.0)


def sunrgbd_info() -> DatasetInfo:
    """The :class:`DatasetInfo` of SUN RGB-D (37 classes, 8 m cap, per-image intrinsics)."""
    meta = load_meta("sunrgbd")
    return DatasetInfo(
        name="sunrgbd",
        num_classes=37,
        class_names=list(meta["classes37"]),
        palette=[list(c) for c in meta["palette37"]],
        depth_cap=float(meta["depth_cap_m"]),
        min_depth=1e-3,
        void_color=list(meta["void_color"]),
    )


def _sequence_rel(line: str) -> str | None:
    line = line.strip().replace("\\", "/")
    if not line or line.startswith("#"):
        return None
    if "SUNRGBD/" in line:
        line = line.rsplit("SUNRGBD/", 1)[1]
    parts = [p for p in line.split("/") if p]
    for i, p in enumerate(parts):
        if p in SEQUENCE_SUBDIRS:
            parts = parts[:i]
            break
    return "/".join(parts) or None


def _mat_strings(value: Any) -> list[str]:
    arr = np.asarray(value, dtype=object).ravel()
    out = []
    for v in arr:
        while isinstance(v, np.ndarray):
            v = v.ravel()[0] if v.size else ""
        out.append(str(v))
    return out


class SUNRGBDDataset(BaseDataset):
    """SUN RGB-D from the official folder layout (see the module docstring).

    Args:
        root: Folder holding ``SUNRGBD/`` (and optionally ``SUNRGBDtoolbox/``), or ``SUNRGBD/`` itself.
        split: ``train`` or ``test`` (``val`` = ``test``).
        transform: Joint transform on the sample dict.
        depth: ``"bfx"`` (filled, default) or ``"raw"``.
    """

    OPTIONS = ("depth",)

    def __init__(self, root: str | Path, split: str = "train", *, transform: Any = None, depth: str = "bfx"):
        super().__init__(sunrgbd_info(), split, transform)
        if split == "val":
            split = "test"
        if split not in ("train", "test"):
            raise ValueError(f"split: unknown split {split!r} (train or test)")
        if depth not in ("bfx", "raw"):
            raise ValueError(f"depth: 'bfx' or 'raw', got {depth!r}")
        self.depth_sub = "depth_bfx" if depth == "bfx" else "depth"
        root = require_dir(root, "SUN RGB-D root")
        self.root = root
        self.data_root = root / "SUNRGBD" if (root / "SUNRGBD").is_dir() else root
        self.sequences = self._split_list(split)
        if not self.sequences:
            raise DataError(where(root, f"split {split!r} is empty"))

    def _split_list(self, split: str) -> list[str]:
        root = self.root
        own = root / f"{split}.txt"
        if own.is_file():
            lines = own.read_text(encoding="utf-8").splitlines()
            return [s for s in map(_sequence_rel, lines) if s]
        for base in (root, root.parent):
            allsplit = base / "SUNRGBDtoolbox" / "traintestSUNRGBD" / "allsplit.mat"
            if allsplit.is_file():
                import scipy.io

                try:
                    mat = scipy.io.loadmat(allsplit)
                except Exception as exc:
                    raise DataError(where(allsplit, f"cannot read ({type(exc).__name__}: {exc})")) from None
                key = "alltrain" if split == "train" else "alltest"
                if key not in mat:
                    raise DataError(where(allsplit, f"variable {key!r} missing"))
                return [s for s in map(_sequence_rel, _mat_strings(mat[key])) if s]
        handa = root / ("sunrgbd_training_images.txt" if split == "train" else "sunrgbd_testing_images.txt")
        if handa.is_file():
            return [s for s in map(_sequence_rel, handa.read_text(encoding="utf-8").splitlines()) if s]
        raise DataError(
            where(
                root,
                f"no split list: expected {split}.txt, SUNRGBDtoolbox/traintestSUNRGBD/allsplit.mat or {handa.name}",
            )
        )

    def __len__(self) -> int:
        return len(self.sequences)

    def sample_ref(self, index: int) -> str:
        return str(self.data_root / self.sequences[index])

    @staticmethod
    def _one(folder: Path, pattern: str, what: str) -> Path:
        require_dir(folder, what + " folder")
        files = sorted(folder.glob(pattern))
        if not files:
            raise DataError(where(folder, f"no {what} file ({pattern})"))
        return files[0]

    def _load(self, index: int) -> Sample:
        rel = self.sequences[index]
        seq = self.data_root / rel
        require_dir(seq, "SUN RGB-D sequence folder")
        rgb_path = self._one(seq / "image", "*.jpg", "image")
        depth_path = self._one(seq / self.depth_sub, "*.png", "depth")
        image = read_rgb(rgb_path, with_maps=True)
        png = read_png16(depth_path)
        depth = decode_depth(png, self.info.depth_cap)
        label_file = seq / "label" / "label.png"
        if label_file.is_file():
            raw = read_label_png(label_file).astype(np.int64)
        elif (seq / "label" / "label.npy").is_file():
            label_file = seq / "label" / "label.npy"
            try:
                raw = np.load(label_file).astype(np.int64)
            except Exception as exc:
                raise DataError(where(label_file, f"cannot read ({type(exc).__name__})")) from None
        else:
            raise DataError(
                where(label_file, "37-class label image not found (label/label.png or label/label.npy)")
            )
        bad = (raw < 0) | (raw > 37)
        if bad.any():
            raise DataError(
                where(label_file, f"label value {int(raw[bad].flat[0])} outside 0..37 (0 = void)")
            )
        labels = np.where(raw == 0, 255, raw - 1).astype(np.uint8)
        meta: dict[str, Any] = {"id": f"sunrgbd/{rel}"}
        kfile = seq / "intrinsics.txt"
        if kfile.is_file():
            try:
                k = np.array(kfile.read_text().split(), dtype=np.float64)
            except ValueError:
                raise DataError(where(kfile, "expected 9 numbers (3x3 K, row-major)")) from None
            if k.size != 9:
                raise DataError(where(kfile, f"expected 9 numbers (3x3 K, row-major), got {k.size}"))
            meta["intrinsics"] = toolbox_intrinsics(k)
        else:
            meta["intrinsics"] = None
        return {
            "image": image,
            "depth": depth,
            "labels": labels,
            "meta": meta,
            "files": [rgb_path, depth_path, label_file],
            "label_file": label_file,
        }

    @staticmethod
    def make_info(**_: Any) -> DatasetInfo:
        return sunrgbd_info()
