"""User data in a plain folder layout.

::

    root/rgb/<stem>.png|jpg|jpeg    RGB images
    root/depth/<stem>.png           16-bit PNG, ``depth_scale`` units per metre (default 1000 = mm), 0 = invalid
    root/labels/<stem>.png          8-bit (or 16-bit) class ids, 255 = ignore
    root/<split>.txt                optional: one stem per line (blank lines and ``#`` comments skipped)
    root/classes.yaml|json          optional: a list of class names, or {names: [...], palette: [[r,g,b], ...]}

Files are matched by stem. Without any ``<split>.txt`` every stem belongs to every split (a warning says so
for splits other than ``train``); when some split files exist, the requested one must exist. A folder without
a ``depth/`` (``labels/``) directory gives all-invalid depth (all-ignore labels); when the directory exists,
each stem must have its file. The number of classes comes from ``class_names`` / ``num_classes`` options or
from ``classes.yaml|json``.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from cinet.data.base import (
    BaseDataset,
    Sample,
    check_label_file,
    check_sample_sizes,
    check_upright,
    header_size,
    read_label_png,
    read_png16,
    read_rgb,
    require_dir,
)
from cinet.data.info import DatasetInfo, distinct_palette
from cinet.errors import DataError, SplitNotFoundError, where

log = logging.getLogger(__name__)

RGB_EXTS = (".png", ".jpg", ".jpeg")
SPLITS = ("train", "val", "test")
#: The folder dataset's default smallest valid depth (metres).
DEFAULT_MIN_DEPTH = 1e-3
_WARNED: set[tuple[str, str]] = set()  # (root, split) already warned about "no split lists" in this process


def _read_classes_file(root: Path) -> tuple[list[str] | None, list[list[int]] | None]:
    for name in ("classes.yaml", "classes.yml", "classes.json"):
        path = root / name
        if not path.is_file():
            continue
        try:
            text = path.read_text(encoding="utf-8")
            if path.suffix == ".json":
                data = json.loads(text)
            else:
                import yaml

                data = yaml.safe_load(text)
        except Exception as exc:
            raise DataError(
                where(path, f"cannot parse ({type(exc).__name__}: {exc})".replace("\n", " "))
            ) from None
        palette = None
        if isinstance(data, dict):
            palette = data.get("palette")
            data = data.get("names", data.get("classes"))
        if not isinstance(data, list) or not data or not all(isinstance(n, str) for n in data):
            raise DataError(where(path, "expected a list of class names (or a mapping with 'names')"))
        return list(data), palette
    return None, None


#: Why a map of another format than the expected PNG does not do (named when one is found instead).
DEPTH_HINT = "depth maps must be 16-bit PNGs (metres x depth_scale); a JPEG is 8-bit and lossy"
LABELS_HINT = "label maps must be PNGs of class ids; a JPEG's compression changes the ids"
RGB_HINT = f"RGB images must be one of {', '.join(sorted(RGB_EXTS))}"


def _same_stem(
    folder: Path, stem: str, listings: dict[Path, dict[str, list[Path]]], exclude: tuple[str, ...]
) -> list[Path]:
    """Files of ``folder`` named ``stem`` with another extension (or another case), e.g. ``x.jpg`` for ``x.png``.

    ``listings`` caches one listing per folder (the folder is read once for all samples).
    """
    if folder not in listings:
        table: dict[str, list[Path]] = {}
        for p in sorted(folder.iterdir()):
            if p.is_file():
                table.setdefault(p.stem.casefold(), []).append(p)
        listings[folder] = table
    return [
        p
        for p in listings[folder].get(stem.casefold(), [])
        if not (p.stem == stem and p.suffix.lower() in exclude)
    ]


def _check_depth_range(depth_cap: float, min_depth: float) -> None:
    """A ``ValueError`` ``"<option>: ..."`` unless ``0 < min_depth < depth_cap``, both finite (the evaluation's
    depth range: the log metrics need depth > 0)."""
    for name, value in (("depth_cap", depth_cap), ("min_depth", min_depth)):
        if not math.isfinite(value) or value <= 0:
            raise ValueError(f"{name}: must be a finite number of metres > 0, got {value!r}")
    if depth_cap <= min_depth:
        if min_depth == DEFAULT_MIN_DEPTH:  # the cap is what was set
            raise ValueError(f"depth_cap: must be > min_depth ({min_depth:g} m), got {depth_cap:g}")
        raise ValueError(f"min_depth: must be < depth_cap ({depth_cap:g} m), got {min_depth:g}")


def folder_info(
    *,
    num_classes: int | None = None,
    class_names: list[str] | None = None,
    palette: list[list[int]] | None = None,
    depth_cap: float = 10.0,
    min_depth: float = DEFAULT_MIN_DEPTH,
    intrinsics: tuple[float, float, float, float] | None = None,
    intrinsics_size: tuple[int, int] | None = None,
    root: Path | None = None,
    **_: Any,
) -> DatasetInfo:
    """The :class:`DatasetInfo` of a folder dataset (reads only ``root/classes.*`` when no classes are given)."""
    file_palette = None
    if class_names is None and num_classes is None and root is not None:
        class_names, file_palette = _read_classes_file(Path(root))
    if class_names is None and num_classes is None:
        what = "folder dataset needs num_classes or class_names (or root/classes.yaml)"
        if root is not None:  # a file-level error: the folder has no classes file
            raise DataError(f"{root}/classes.yaml: {what}")
        raise ValueError(f"num_classes: {what}")
    if class_names is not None:
        class_names = [str(n) for n in class_names]
        if num_classes is not None and int(num_classes) != len(class_names):
            raise ValueError(f"num_classes: {num_classes} but {len(class_names)} class_names given")
        num_classes = len(class_names)
    else:
        num_classes = int(num_classes)  # type: ignore[arg-type]
        class_names = [f"class_{i}" for i in range(num_classes)]
    if not 1 <= num_classes <= 255:
        raise ValueError(f"num_classes: must be in 1..255, got {num_classes}")
    if palette is not None and not all(
        len(c) == 3 and all(isinstance(v, int) and 0 <= v <= 255 for v in c) for c in palette
    ):
        raise ValueError(f"palette: expected [r, g, b] colours of integers 0..255, got {palette!r}")
    palette = palette or file_palette or distinct_palette(num_classes)
    if len(palette) != num_classes:
        raise ValueError(f"palette: {len(palette)} colours for {num_classes} classes")
    _check_depth_range(depth_cap, min_depth)
    if intrinsics is not None and (
        len(intrinsics) != 4
        or not all(math.isfinite(v) for v in intrinsics)
        or min(intrinsics[0], intrinsics[1]) <= 0
    ):
        raise ValueError(f"intrinsics: expected (fx, fy, cx, cy), finite, fx and fy > 0, got {intrinsics!r}")
    if intrinsics_size is not None and (len(intrinsics_size) != 2 or min(intrinsics_size) < 1):
        raise ValueError(f"intrinsics_size: expected (width, height) >= 1, got {intrinsics_size!r}")
    return DatasetInfo(
        name="folder",
        num_classes=num_classes,
        class_names=class_names,
        palette=[[int(c) for c in p] for p in palette],
        depth_cap=float(depth_cap),
        min_depth=float(min_depth),
        intrinsics=tuple(float(v) for v in intrinsics) if intrinsics is not None else None,  # type: ignore[arg-type]
        reference_size=tuple(int(v) for v in intrinsics_size) if intrinsics_size is not None else None,  # type: ignore[arg-type]
    )


class FolderDataset(BaseDataset):
    """RGB-D-semantic samples from ``root/rgb``, ``root/depth``, ``root/labels`` (see the module docstring).

    Args:
        root: Dataset folder.
        split: Split name (selects ``root/<split>.txt`` when present).
        transform: Joint transform on the sample dict.
        depth_scale: Depth PNG units per metre (1000 = millimetres; NYU-style exports often use 5000).
        num_classes: Number of classes (or give ``class_names`` / ``root/classes.yaml``).
        class_names: Class names, one per id.
        palette: Colours for previews (default: :func:`cinet.data.info.distinct_palette`).
        depth_cap: Largest depth used in evaluation (metres).
        min_depth: Smallest valid depth (metres).
        intrinsics: ``(fx, fy, cx, cy)`` of the camera (0-based pixel centres).
        intrinsics_size: ``(width, height)`` the intrinsics belong to; None = every image's own size.
    """

    OPTIONS = (
        "depth_scale",
        "num_classes",
        "class_names",
        "palette",
        "depth_cap",
        "min_depth",
        "intrinsics",
        "intrinsics_size",
    )

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        *,
        transform: Any = None,
        depth_scale: float = 1000.0,
        num_classes: int | None = None,
        class_names: list[str] | None = None,
        palette: list[list[int]] | None = None,
        depth_cap: float = 10.0,
        min_depth: float = DEFAULT_MIN_DEPTH,
        intrinsics: tuple[float, float, float, float] | None = None,
        intrinsics_size: tuple[int, int] | None = None,
    ):
        root = require_dir(root, "folder dataset root")
        info = folder_info(
            num_classes=num_classes,
            class_names=class_names,
            palette=palette,
            depth_cap=depth_cap,
            min_depth=min_depth,
            intrinsics=intrinsics,
            intrinsics_size=intrinsics_size,
            root=root,
        )
        super().__init__(info, split, transform)
        if not math.isfinite(depth_scale) or depth_scale <= 0:
            raise ValueError(f"depth_scale: must be a finite number > 0, got {depth_scale!r}")
        self.root = root
        self.depth_scale = float(depth_scale)
        self.fixed_intrinsics = info.intrinsics if info.reference_size is None else None
        rgb_dir = require_dir(root / "rgb", "rgb folder")
        by_stem: dict[str, Path] = {}
        for p in sorted(rgb_dir.iterdir()):
            if p.suffix.lower() in RGB_EXTS and p.is_file():
                by_stem.setdefault(p.stem, p)
        stems = self._split_stems(root, split, by_stem)
        self.depth_dir = root / "depth" if (root / "depth").is_dir() else None
        self.labels_dir = root / "labels" if (root / "labels").is_dir() else None
        if self.depth_dir is None:
            log.warning("%s: no depth/ folder, depth is all invalid", root)
        if self.labels_dir is None:
            log.warning("%s: no labels/ folder, labels are all ignore (255)", root)
        #: depth or label maps belong to the photos: an EXIF-turned photo is refused (check_upright)
        self.has_maps = self.depth_dir is not None or self.labels_dir is not None
        self._header_sizes: list[tuple[str, tuple[int, int]]] | None = None  # header_sizes(), once read
        self.items: list[tuple[str, Path]] = []
        listings: dict[Path, dict[str, list[Path]]] = {}
        for stem in stems:
            if stem not in by_stem:
                found = _same_stem(rgb_dir, stem, listings, exclude=())
                why = (
                    "file names are case-sensitive"
                    if any(p.suffix.lower() in RGB_EXTS for p in found)
                    else RGB_HINT
                )
                hint = f" (found {', '.join(p.name for p in found)}: {why})" if found else ""
                if not found and Path(stem).suffix.lower() in RGB_EXTS and Path(stem).stem in by_stem:
                    hint = f" ({split}.txt lists file names: list stems, {Path(stem).stem!r})"
                raise DataError(
                    where(rgb_dir / f"{stem}.png", f"RGB image listed in {split}.txt not found{hint}")
                )
            self.items.append((stem, by_stem[stem]))
            for d, what in ((self.depth_dir, DEPTH_HINT), (self.labels_dir, LABELS_HINT)):
                if d is not None and not (d / f"{stem}.png").is_file():
                    found = _same_stem(d, stem, listings, exclude=(".png",))
                    if any(p.suffix.lower() == ".png" for p in found):
                        what = "file names are case-sensitive"
                    hint = f" (found {', '.join(p.name for p in found)}: {what})" if found else ""
                    raise DataError(
                        where(d / f"{stem}.png", f"missing for RGB image {by_stem[stem].name}{hint}")
                    )
        if not self.items:
            raise DataError(where(rgb_dir, f"no images for split {split!r}"))

    @staticmethod
    def _split_stems(root: Path, split: str, by_stem: dict[str, Path]) -> list[str]:
        list_file = root / f"{split}.txt"
        if list_file.is_file():
            lines = list_file.read_text(encoding="utf-8").splitlines()
            return [s.strip() for s in lines if s.strip() and not s.strip().startswith("#")]
        existing = [s for s in SPLITS if (root / f"{s}.txt").is_file()]
        if existing:
            raise SplitNotFoundError(
                where(list_file, f"split list not found (found {', '.join(e + '.txt' for e in existing)})")
            )
        if split != "train" and (str(root), split) not in _WARNED:
            _WARNED.add((str(root), split))
            log.warning("%s: no split lists, split %r uses all %d images", root, split, len(by_stem))
        return sorted(by_stem)

    def __len__(self) -> int:
        return len(self.items)

    def sample_ref(self, index: int) -> str:
        return str(self.items[index][1])

    def check_labels(self) -> None:
        """Decode every label map of the split and check its ids (``0..C-1``, 255 = ignore; mode L or P).

        Run before training (:func:`cinet.checks.data.check_training_data`), so that a bad label
        anywhere in the split is found before the run directory exists, not at its batch. Costs one PNG decode
        per sample (about 2 ms for 640x480).

        Raises:
            DataError: The first bad label file (named, with its sample).
        """
        if self.labels_dir is None:
            return
        for index, (stem, _) in enumerate(self.items):
            with self.sample_context(index):
                path = self.labels_dir / f"{stem}.png"
                check_label_file(read_label_png(path), self.info.num_classes, path)

    def header_sizes(self) -> list[tuple[str, tuple[int, int]]]:
        """``(image file, (H, W))`` of every sample from the file headers (no pixel decoded), each sample's
        image (refused when turned by an EXIF orientation, :func:`cinet.data.base.check_upright`) and maps checked to agree: a mismatch anywhere in the split is found before
        training starts, not at its batch.

        Read once per dataset object (the pre-training checks and the memory checks share it).

        Raises:
            DataError: A sample whose image and maps differ in size (naming its files), or an unreadable header.
        """
        if self._header_sizes is not None:
            return self._header_sizes
        sizes = []
        for index, (stem, rgb_path) in enumerate(self.items):
            with self.sample_context(index):  # errors name the sample, as when it is loaded
                files: list[Path] = [rgb_path]
                if self.has_maps:
                    check_upright(rgb_path)  # as _load refuses it, before any pixel is read
                shapes = {"image": header_size(rgb_path, turned=not self.has_maps)}
                for key, folder in (("depth", self.depth_dir), ("labels", self.labels_dir)):
                    if folder is not None:
                        files.append(folder / f"{stem}.png")
                        shapes[key] = header_size(files[-1])
                check_sample_sizes(files, shapes)
            sizes.append((str(rgb_path), shapes["image"]))
        self._header_sizes = sizes
        return sizes

    def _load(self, index: int) -> Sample:
        stem, rgb_path = self.items[index]
        image = read_rgb(rgb_path, with_maps=self.has_maps)
        h, w = image.shape[:2]
        files: list[Path] = [rgb_path]
        if self.depth_dir is not None:
            dpath = self.depth_dir / f"{stem}.png"
            depth = read_png16(dpath).astype(np.float32) / np.float32(self.depth_scale)
            files.append(dpath)
        else:
            depth = np.zeros((h, w), np.float32)
        label_file = None
        if self.labels_dir is not None:
            label_file = self.labels_dir / f"{stem}.png"
            labels = read_label_png(label_file)
            files.append(label_file)
        else:
            labels = np.full((h, w), 255, np.uint8)
        meta: dict[str, Any] = {"id": f"folder/{stem}"}
        if self.fixed_intrinsics is not None:
            meta["intrinsics"] = self.fixed_intrinsics
        return {
            "image": image,
            "depth": depth,
            "labels": labels,
            "meta": meta,
            "files": files,
            "label_file": label_file,
        }

    @staticmethod
    def make_info(**options: Any) -> DatasetInfo:
        return folder_info(**options)
