"""NYU Depth v2 (labelled subset) from the official files.

``root/nyu_depth_v2_labeled.mat`` is MATLAB v7.3 (HDF5). h5py returns MATLAB's column-major arrays transposed:
``images`` (1449, 3, 640, 480) uint8, ``depths`` (1449, 640, 480) float metres (in-painted; ``rawDepths``
is the raw Kinect depth), ``labels`` (1449, 640, 480) raw class ids 0..894 (0 = unlabelled). Sample ``i``
is therefore ``images[i].transpose(2, 1, 0)`` (480x640x3) and ``depths[i].T``. The file is opened lazily, once
per process (DataLoader worker).

``root/splits.mat`` (``trainNdxs`` 795, ``testNdxs`` 654, 1-based) selects the split; when it is absent the
same official lists shipped in ``meta/nyuv2.json`` are used (with a warning). ``val`` is an alias of ``test``
(NYUv2 has no separate validation split).

Labels: raw ``r`` -> NYU40 id ``map894to40[r-1]`` (1..40) -> optionally NYU13 ``map40to13[c-1]`` (1..13);
the result is made 0-based and raw 0 (unlabelled) becomes 255. Depth above the 10 m cap is clipped to 10 m
(the toolbox ``maxDepth``); non-finite values become 0 (invalid).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from cinet.data.base import BaseDataset, Sample, require_dir, require_file
from cinet.data.info import DatasetInfo, load_meta, nyu_intrinsics
from cinet.errors import DataError, where

log = logging.getLogger(__name__)

MAT_FILE = "nyu_depth_v2_labeled.mat"
SPLITS_FILE = "splits.mat"
NUM_IMAGES = 1449


def label_lut(classes: int) -> np.ndarray:
    """Lookup table raw NYU label (0..894) -> 0-based train id (255 = void) for 40 or 13 classes."""
    meta = load_meta("nyuv2")
    map40 = np.asarray(meta["map894to40"], dtype=np.int64)  # raw r (1..894) -> 1..40
    if classes == 40:
        ids = map40
    elif classes == 13:
        ids = np.asarray(meta["map40to13"], dtype=np.int64)[map40 - 1]
    else:
        raise ValueError(f"classes: NYUv2 has 40 or 13 classes, got {classes!r}")
    return np.concatenate([[255], ids - 1]).astype(np.uint8)


def nyuv2_info(classes: int = 40) -> DatasetInfo:
    """The :class:`DatasetInfo` of NYUv2 with 40 or 13 classes (Eigen crop, 10 m cap, toolbox intrinsics)."""
    meta = load_meta("nyuv2")
    if classes not in (40, 13):
        raise ValueError(f"classes: NYUv2 has 40 or 13 classes, got {classes!r}")
    k, ref = nyu_intrinsics()
    crop = meta["depth_range_m"]["eigen_crop"]
    (r0, r1), (c0, c1) = crop["rows_0based_inclusive"], crop["cols_0based_inclusive"]
    return DatasetInfo(
        name="nyuv2",
        num_classes=classes,
        class_names=list(meta[f"classes{classes}"]),
        palette=[list(c) for c in meta[f"palette{classes}"]],
        depth_cap=float(meta["depth_range_m"]["max"]),
        min_depth=float(meta["depth_range_m"]["min"]),
        intrinsics=k,
        reference_size=ref,
        eval_crop=(r0, r1 + 1, c0, c1 + 1),
        void_color=list(meta["void_color"]),
        protocol_crop="eigen",
        protocol_size=(int(crop["image_hw"][0]), int(crop["image_hw"][1])),
    )


def _load_splits(root: Path) -> dict[str, np.ndarray]:
    path = root / SPLITS_FILE
    if not path.is_file():
        log.warning("%s not found: using the official 795/654 split from cinet's metadata", path)
        meta = load_meta("nyuv2")
        return {"train": np.asarray(meta["train_indices"]), "test": np.asarray(meta["test_indices"])}
    import scipy.io

    try:
        mat = scipy.io.loadmat(path)
    except Exception as exc:
        raise DataError(
            where(path, f"cannot read ({type(exc).__name__}: {exc})".replace("\n", " "))
        ) from None
    out = {}
    for split, key in (("train", "trainNdxs"), ("test", "testNdxs")):
        if key not in mat:
            raise DataError(where(path, f"variable {key!r} missing"))
        out[split] = np.asarray(mat[key]).astype(np.int64).ravel()
    return out


class NYUv2Dataset(BaseDataset):
    """NYUv2 labelled set (795 train / 654 test) from ``nyu_depth_v2_labeled.mat`` + ``splits.mat``.

    Args:
        root: Folder holding ``nyu_depth_v2_labeled.mat`` and ``splits.mat``.
        split: ``train`` or ``test`` (``val`` = ``test``).
        transform: Joint transform on the sample dict.
        classes: 40 (NYU40) or 13 (NYU13).
        raw_depth: Use ``rawDepths`` (holes, 0 = invalid) instead of the in-painted ``depths``.
    """

    OPTIONS = ("classes", "raw_depth")

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        *,
        transform: Any = None,
        classes: int = 40,
        raw_depth: bool = False,
    ):
        classes = int(classes)
        super().__init__(nyuv2_info(classes), split, transform)
        if split == "val":
            split = "test"
        if split not in ("train", "test"):
            raise ValueError(f"split: unknown split {split!r} (train or test)")
        self.root = require_dir(root, "NYUv2 root")
        self.mat_path = require_file(self.root / MAT_FILE, "NYUv2 labelled .mat file")
        self.depth_key = "rawDepths" if raw_depth else "depths"
        self.lut = label_lut(classes)
        self._h5: Any = None
        self._pid = -1
        f = self._file()
        for key in ("images", self.depth_key, "labels"):
            if key not in f:
                raise DataError(
                    where(self.mat_path, f"dataset {key!r} missing (not the labelled NYUv2 file?)")
                )
        n = f["images"].shape[0]
        if f["images"].ndim != 4 or f["images"].shape[1] != 3:
            raise DataError(
                where(self.mat_path, f"'images' has shape {f['images'].shape}, expected (N, 3, W, H)")
            )
        indices = _load_splits(self.root)[split]
        bad = indices[(indices < 1) | (indices > n)]
        if bad.size:
            split_file = self.root / SPLITS_FILE
            if split_file.is_file():
                raise DataError(
                    where(split_file, f"index {int(bad[0])} outside 1..{n} (images in {MAT_FILE})")
                )
            raise DataError(
                where(
                    self.mat_path,
                    f"{n} images, but the official split needs index {int(bad[0])} ({SPLITS_FILE} missing)",
                )
            )
        self.indices = indices  # 1-based

    def _file(self) -> Any:
        if self._h5 is None or self._pid != os.getpid():
            import h5py

            try:
                self._h5 = h5py.File(self.mat_path, "r")
            except OSError as exc:
                what = "truncated HDF5 file" if "truncated" in str(exc) else "not a MATLAB v7.3 (HDF5) file"
                raise DataError(where(self.mat_path, f"{what} ({exc})".replace("\n", " "))) from None
            self._pid = os.getpid()
        return self._h5

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_h5"] = None
        return state

    def __len__(self) -> int:
        return len(self.indices)

    def sample_ref(self, index: int) -> str:
        return f"{self.mat_path}[{int(self.indices[index])}]"

    def _load(self, index: int) -> Sample:
        n1 = int(self.indices[index])
        f = self._file()
        i = n1 - 1
        try:
            image = np.asarray(f["images"][i]).transpose(2, 1, 0)
            depth = np.asarray(f[self.depth_key][i], dtype=np.float32).T
            raw = np.asarray(f["labels"][i]).T
        except Exception as exc:  # truncated file
            raise DataError(
                where(self.mat_path, f"cannot read sample {n1} ({type(exc).__name__}: {exc})")
            ) from None
        if raw.max(initial=0) >= len(self.lut) or raw.min(initial=0) < 0:
            value = int(raw.max()) if raw.max() >= len(self.lut) else int(raw.min())
            raise DataError(where(self.mat_path, f"sample {n1}: raw label value {value} outside 0..894"))
        labels = self.lut[raw.astype(np.int64)]
        cap = np.float32(self.info.depth_cap)
        depth = np.where(np.isfinite(depth) & (depth > cap), cap, depth)  # inf stays invalid, not 10 m
        meta = {"id": f"nyuv2/{n1:04d}"}
        return {
            "image": np.ascontiguousarray(image, dtype=np.uint8),
            "depth": depth,
            "labels": labels,
            "meta": meta,
            "files": [f"{self.mat_path}[{n1}]"],
        }

    @staticmethod
    def make_info(classes: int = 40, **_: Any) -> DatasetInfo:
        return nyuv2_info(int(classes))
