"""The synthetic dataset: one procedurally rendered room per sample, deterministic per ``(seed, split, index)``."""

from __future__ import annotations

from typing import Any

import numpy as np

from cinet.data.base import BaseDataset, Sample
from cinet.data.info import DatasetInfo, load_meta, nyu_intrinsics, scale_intrinsics
from cinet.data.synthetic.render import render
from cinet.data.synthetic.scene import Camera, Scene, random_scene

SPLIT_CODES = {"train": 0, "val": 1, "test": 2}
DEFAULT_LENGTH = {"train": 1000, "val": 200, "test": 200}
DEPTH_CAP = 10.0


def synthetic_info(size: tuple[int, int] = (240, 320)) -> DatasetInfo:
    """The :class:`DatasetInfo` of the synthetic dataset at image size ``(H, W)``."""
    meta = load_meta("nyuv2")
    k, ref = nyu_intrinsics()
    h, w = size
    return DatasetInfo(
        name="synthetic",
        num_classes=13,
        class_names=list(meta["classes13"]),
        palette=[list(c) for c in meta["palette13"]],
        depth_cap=DEPTH_CAP,
        min_depth=1e-3,
        intrinsics=scale_intrinsics(k, ref, (w, h)),
        reference_size=(w, h),
        void_color=list(meta["void_color"]),
        protocol_size=(h, w),
    )


class SyntheticDataset(BaseDataset):
    """Procedural indoor rooms (see the module docstring).

    Args:
        split: ``"train"``, ``"val"`` or ``"test"`` (disjoint seed streams).
        transform: Joint transform on the sample dict.
        length: Number of samples (default 1000 train, 200 val/test).
        size: Image size ``(H, W)`` (default ``(240, 320)``); an int means square.
        seed: Base seed.
        holes: Add sensor-like holes (depth 0) to the depth maps.
    """

    OPTIONS = ("length", "size", "seed", "holes")

    def __init__(
        self,
        split: str = "train",
        *,
        transform: Any = None,
        length: int | None = None,
        size: tuple[int, int] | int = (240, 320),
        seed: int = 0,
        holes: bool = False,
    ):
        if split not in SPLIT_CODES:
            raise ValueError(f"split: unknown split {split!r} (choose from {', '.join(SPLIT_CODES)})")
        size = _parse_size(size)
        super().__init__(synthetic_info(size), split, transform)
        self.size = size
        self.length = int(DEFAULT_LENGTH[split] if length is None else length)
        if self.length < 0:
            raise ValueError(f"length: must be >= 0, got {self.length}")
        self.seed = int(seed)
        if self.seed < 0:
            raise ValueError(f"seed: must be >= 0 (a numpy seed), got {self.seed}")
        self.holes = bool(holes)

    def __len__(self) -> int:
        return self.length

    def sample_ref(self, index: int) -> str:
        return f"synthetic/{self.split}/{index:06d}"

    def rng(self, index: int) -> np.random.Generator:
        """The Generator of sample ``index`` (seeded from (seed, split, index))."""
        return np.random.default_rng([self.seed, SPLIT_CODES[self.split], int(index)])

    def scene(self, index: int) -> Scene:
        """The scene (geometry, camera pose) of sample ``index``."""
        return random_scene(self.rng(index))

    def camera(self, index: int) -> Camera:
        """The camera pose of sample ``index``."""
        return self.scene(index).camera

    @staticmethod
    def make_info(size: tuple[int, int] | int = (240, 320)) -> DatasetInfo:
        """The :class:`DatasetInfo` of the dataset built with ``size`` (no sample is rendered)."""
        return synthetic_info(_parse_size(size))

    def _load(self, index: int) -> Sample:
        rng = self.rng(index)
        scene = random_scene(rng)
        h, w = self.size
        k = self.info.intrinsics
        assert k is not None
        image, depth, labels = render(scene, h, w, k, rng, holes=self.holes)
        meta = {"id": f"synthetic/{self.split}/{index:06d}", "intrinsics": k, "pose": scene.camera.as_meta()}
        return {"image": image, "depth": depth, "labels": labels, "meta": meta, "files": [meta["id"]]}


def _parse_size(size: Any) -> tuple[int, int]:
    if isinstance(size, str):
        parts = size.lower().replace("x", ",").split(",")
        size = [int(p) for p in parts if p.strip()]
    if isinstance(size, int):
        size = (size, size)
    try:
        h, w = (int(v) for v in size)
    except (TypeError, ValueError):
        raise ValueError(f"size: must be (H, W), got {size!r}") from None
    if h < 8 or w < 8:
        raise ValueError(f"size: must be at least [8, 8] ([H, W]), got [{h}, {w}]")
    return h, w
