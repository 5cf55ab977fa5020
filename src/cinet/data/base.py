"""Common dataset machinery: the sample dict, file readers with one-line errors, collate, denormalise.

A sample is a dict::

    image   float32 [3, H, W], normalised with ``info.mean`` / ``info.std``
    depth   float32 [1, H, W], metres, 0 = invalid
    labels  int64 [H, W], 0-based train ids, 255 = ignore
    meta    dict: id (str), intrinsics ((fx, fy, cx, cy) at the current size, or None), orig_size ((H, W))

Every loader implements :meth:`BaseDataset._load` returning numpy arrays (``image`` uint8 HxWx3, ``depth``
float HxW metres, ``labels`` integer HxW train ids) plus ``meta`` and ``files`` (the paths read, for error
messages). :meth:`BaseDataset.__getitem__` validates them, converts to tensors (image in 0..1), applies the
transform and finally normalises the image (unless the transform already ran :class:`Normalize`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from cinet.data.info import DatasetInfo
from cinet.errors import CinetError, DataError, describe, where

log = logging.getLogger(__name__)

Sample = dict[str, Any]


class BaseDataset(torch.utils.data.Dataset):
    """Base class of every cinet dataset.

    Args:
        info: The dataset description.
        split: Split name.
        transform: Callable on the sample dict (see :mod:`cinet.data.transforms`), applied to tensors with
            the image in 0..1; normalisation happens afterwards unless the transform contains ``Normalize``.
    """

    def __init__(self, info: DatasetInfo, split: str, transform: Callable[[Sample], Sample] | None = None):
        self.info = info
        self.split = split
        self.transform = transform

    def __len__(self) -> int:  # pragma: no cover - overridden
        raise NotImplementedError

    def _load(self, index: int) -> Sample:  # pragma: no cover - overridden
        raise NotImplementedError

    def __getitem__(self, index: int) -> Sample:
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(
                f"index {index} out of range for {self.info.name}/{self.split} ({len(self)} samples)"
            )
        with self.sample_context(index):
            raw = self._load(index)
            sample = to_tensor_sample(raw, self.info)
            if self.transform is not None:
                sample = self.transform(sample)
            if not sample["meta"].pop("normalized", False):
                sample["image"] = normalize_image(sample["image"], self.info.mean, self.info.std)
        return sample

    def sample_ref(self, index: int) -> str:
        """The file (or id) of sample ``index`` for error messages; subclasses name their main file."""
        return f"{self.info.name}/{self.split}/{index}"

    @contextlib.contextmanager
    def sample_context(self, index: int) -> Iterator[None]:
        """Make any failure while reading sample ``index`` name it (dataset, split, index, file or id).

        A :class:`CinetError` (already naming its file) gets `` [sample I of NAME/SPLIT]`` appended; any other
        exception (a decoder or transform failing, e.g. in a DataLoader worker) becomes a :class:`DataError`
        ``"<file or id>: cannot load sample I of NAME/SPLIT (<Type>: <message>)"`` chained to the original.
        """
        where_ = f"sample {index} of {self.info.name}/{self.split}"
        try:
            yield
        except CinetError as exc:
            if getattr(exc, "_cinet_sample", False):
                raise
            new = type(exc)(f"{exc} [{where_}]")
            new._cinet_sample = True  # type: ignore[attr-defined]
            raise new.with_traceback(exc.__traceback__) from exc.__cause__
        except Exception as exc:
            try:
                ref = self.sample_ref(index)
            except Exception:  # the failure may be in the lookup itself
                ref = f"{self.info.name}/{self.split}/{index}"
            new_err = DataError(where(ref, f"cannot load {where_} ({describe(exc)})"))
            new_err._cinet_sample = True  # type: ignore[attr-defined]
            raise new_err from exc

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.info.name!r}, split={self.split!r}, len={len(self)})"


def check_sample_sizes(files: Sequence[str | Path], shapes: dict[str, tuple[int, int]]) -> None:
    """Raise :class:`DataError` naming ``files`` when the ``(H, W)`` of a sample's arrays differ."""
    if len(set(shapes.values())) == 1:
        return
    desc = ", ".join(f"{k} {w}x{h}" for k, (h, w) in shapes.items())  # WxH, as every size in messages
    raise DataError(f"{', '.join(map(str, files))}: sizes differ within one sample ({desc})")


def header_size(path: Path, *, turned: bool = False) -> tuple[int, int]:
    """``(H, W)`` of an image file from its header (no pixel decoded); ``turned``: as :func:`read_rgb` returns
    it (EXIF orientation applied).

    Raises:
        DataError: Naming the file when it is not an image PIL can identify.
    """
    try:
        with no_pixel_limit(), Image.open(path) as img:
            width, height = img.size
    except Exception as exc:  # PIL raises many types for corrupt files
        raise DataError(
            where(path, f"cannot read image ({type(exc).__name__}: {exc})".replace("\n", " "))
        ) from None
    if turned and exif_orientation(path) in EXIF_TRANSPOSING:
        width, height = height, width
    return height, width


def to_tensor_sample(raw: Sample, info: DatasetInfo) -> Sample:
    """Validate a raw numpy sample and turn it into tensors (image float in 0..1, not normalised)."""
    files: Sequence[str | Path] = raw.get("files") or [raw["meta"].get("id", "?")]
    image, depth, labels = raw["image"], raw["depth"], raw["labels"]
    check_sample_sizes(
        files, {"image": image.shape[:2], "depth": depth.shape[:2], "labels": labels.shape[:2]}
    )
    depth = np.asarray(depth, dtype=np.float32)
    bad = ~np.isfinite(depth)
    if bad.any():
        log.warning("%s: %d non-finite depth values set to 0 (invalid)", files[0], int(bad.sum()))
        depth = np.where(bad, np.float32(0), depth)
    if (depth < 0).any():
        log.warning("%s: negative depth values set to 0 (invalid)", files[0])
        depth = np.maximum(depth, 0)
    labels = np.asarray(labels)
    check_label_file(labels, info.num_classes, raw.get("label_file") or files[-1])
    h, w = image.shape[:2]
    meta = dict(raw["meta"])
    meta.setdefault("intrinsics", info.intrinsics_for(w, h))
    meta["orig_size"] = (h, w)
    return {
        "image": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float().div_(255.0),
        "depth": torch.from_numpy(np.ascontiguousarray(depth))[None],
        "labels": torch.from_numpy(labels.astype(np.int64)),
        "meta": meta,
    }


def check_label_file(labels: np.ndarray, num_classes: int, path: str | Path) -> None:
    """Raise :class:`DataError` naming ``path`` when a decoded label map holds an id outside the dataset's classes.

    Args:
        labels: ``HxW`` train ids read from the file ``path``.
        num_classes: Valid ids are ``0..num_classes-1``; 255 is ignore.
        path: The label file (named in the message).

    (The loss-side check of a batch is :func:`cinet.losses.check_labels`, which raises ``ValueError``.)
    """
    bad = ((labels >= num_classes) & (labels != 255)) | (labels < 0)
    if bad.any():
        value = int(labels[bad].flat[0])
        raise DataError(where(path, f"label value {value} outside 0..{num_classes - 1} (255 = ignore)"))


def normalize_image(image: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """``(image - mean) / std`` per channel for ``[3,H,W]`` or ``[B,3,H,W]``."""
    m = torch.as_tensor(mean, dtype=image.dtype, device=image.device).view(-1, 1, 1)
    s = torch.as_tensor(std, dtype=image.dtype, device=image.device).view(-1, 1, 1)
    return (image - m) / s


def denormalize(image: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Undo :func:`normalize_image`: ``[3,H,W]`` or ``[B,3,H,W]`` back to 0..1 (clamped), for visualisation."""
    m = torch.as_tensor(mean, dtype=image.dtype, device=image.device).view(-1, 1, 1)
    s = torch.as_tensor(std, dtype=image.dtype, device=image.device).view(-1, 1, 1)
    return (image * s + m).clamp_(0.0, 1.0)


def to_uint8_image(image: torch.Tensor, info: DatasetInfo) -> np.ndarray:
    """A normalised ``[3,H,W]`` image as a uint8 HxWx3 array (for previews), undone with ``info.mean/std``."""
    x = denormalize(image.detach().float().cpu(), info.mean, info.std)
    return (x.permute(1, 2, 0).numpy() * 255.0 + 0.5).astype(np.uint8)


def collate(batch: Sequence[Sample], size_hint: str = "resize them to one size") -> Sample:
    """Stack ``image``, ``depth``, ``labels`` (and any other tensor) into batches; ``meta`` stays a list.

    Args:
        batch: Samples (see the module docstring).
        size_hint: What the user can change when the samples differ in size (ends the error message).

    Raises:
        DataError: The samples differ in size (names them, their sizes and ``size_hint``).
    """
    if not batch:
        raise ValueError("collate: empty batch")
    out: Sample = {}
    for key in batch[0]:
        values = [s[key] for s in batch]
        if key == "meta" or not isinstance(values[0], torch.Tensor):
            out[key] = values
            continue
        shapes = [tuple(v.shape) for v in values]
        if len(set(shapes)) > 1:
            ids = [
                str(s.get("meta", {}).get("id", "?")) if isinstance(s.get("meta"), dict) else "?"
                for s in batch
            ]
            desc = ", ".join(f"{i} {sh[-1]}x{sh[-2]}" for i, sh in zip(ids, shapes))  # WxH
            raise DataError(f"{ids[0]}: samples of one batch differ in '{key}' size ({desc}); {size_hint}")
        out[key] = torch.stack(values)
    return out


# ----------------------------------------------------------------------------------------------- file readers


def require_dir(path: Path, what: str = "dataset root") -> Path:
    """Return ``path`` if it is a directory, else raise :class:`DataError` naming it."""
    if path is None:
        raise DataError(f"data.root: not set; the {what} is needed (data.root=DIR, or root=DIR)")
    path = Path(path).expanduser()
    if not path.is_dir():
        raise DataError(where(path, f"{what} not found"))
    return path


def require_file(path: Path, what: str = "file") -> Path:
    """Return ``path`` if it is a file, else raise :class:`DataError` naming it."""
    if not Path(path).is_file():
        raise DataError(where(path, f"{what} not found"))
    return Path(path)


@contextlib.contextmanager
def no_pixel_limit() -> Iterator[None]:
    """PIL's decompression-bomb guard lifted while opening and decoding an image file.

    PIL refuses images above ``Image.MAX_IMAGE_PIXELS`` (179 MP: a 20000x15000 photo or scan) as a "decompression
    bomb" and warns above half of that. cinet's readers open a user's own files, and ``cinet predict`` /
    :meth:`cinet.inference.predictor.Predictor.check_fits` estimate the memory an image needs from its header
    before decoding it; the guard would only refuse valid images. The global is restored on exit.
    """
    import warnings

    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            yield
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def _open(path: Path) -> Image.Image:
    require_file(path)
    try:
        with no_pixel_limit():
            img = Image.open(path)
            img.load()
    except Exception as exc:  # PIL raises many types for corrupt / truncated files
        raise DataError(
            where(path, f"cannot read image ({type(exc).__name__}: {exc})".replace("\n", " "))
        ) from None
    return img


#: 16-bit greyscale modes of PIL (PNG / TIFF): scaled to 8 bits as ``round(v / 257)`` (65535 -> 255).
MODES_16BIT = ("I;16", "I;16B", "I;16L", "I;16N")
#: EXIF orientation values that turn the image by 90 degrees (its width and height swap).
EXIF_TRANSPOSING = (5, 6, 7, 8)
EXIF_ORIENTATION = 0x0112
#: What each EXIF orientation (TIFF/EXIF tag 0x0112) does to the stored pixels to show them (1 = as stored).
EXIF_ORIENTATION_NAMES = {
    1: "as stored",
    2: "mirrored left-right",
    3: "rotated 180 degrees",
    4: "mirrored top-bottom",
    5: "transposed",
    6: "rotated 90 degrees clockwise",
    7: "transversed",
    8: "rotated 90 degrees counter-clockwise",
}


def pil_to_rgb(img: Image.Image) -> np.ndarray:
    """Any PIL image as an ``HxWx3`` uint8 RGB array: the one colour conversion of datasets and ``predict``.

    * ``1``, ``L``, ``P``, ``CMYK``, ``YCbCr``... : PIL's own conversion to RGB;
    * ``LA``, ``PA``, ``RGBA``, ``La``, ``RGBa``, ``P`` with transparency: the alpha channel is dropped;
    * 16-bit greyscale (``I;16*``, and ``I`` with values in 0..65535): ``round(v / 257)``, the full 16-bit
      range mapped onto 0..255 (PIL's ``convert("RGB")`` would clip every value above 255 to white);
    * ``I`` outside 0..65535, and ``F`` (float): ``F`` values in 0..1 times 255, anything else stretched from
      its finite minimum..maximum to 0..255 (no fixed range exists); NaN / inf -> 0.

    Raises:
        ValueError: A mode PIL cannot convert (the caller names the file).
    """
    if img.mode == "RGB":
        return np.ascontiguousarray(np.asarray(img, dtype=np.uint8))
    if img.mode in (*MODES_16BIT, "I", "F"):
        arr = np.asarray(img).astype(np.float64)
        finite = np.isfinite(arr)
        lo, hi = (float(arr[finite].min()), float(arr[finite].max())) if finite.any() else (0.0, 0.0)
        if img.mode in MODES_16BIT or (img.mode == "I" and lo >= 0 and hi <= 65535):
            arr = arr / 257.0
        elif img.mode == "F" and lo >= 0 and hi <= 1:
            arr = arr * 255.0
        else:
            arr = (arr - lo) / max(hi - lo, 1e-12) * 255.0
        grey = np.clip(np.rint(np.where(finite, arr, 0.0)), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(grey[:, :, None], 3, axis=2))
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    elif img.mode == "La":
        img = img.convert("LA")
    return np.ascontiguousarray(np.asarray(img.convert("RGB"), dtype=np.uint8))


def check_upright(path: str | Path) -> None:
    """Refuse an image with depth / label maps whose EXIF orientation is not 1 (as stored): one line naming it.

    A camera photo may carry an orientation tag (2..8) that viewers, Pillow's ``exif_transpose`` and
    ``cinet predict`` apply, while the depth and label maps that belong to it are plain PNGs: nothing says
    whether they were saved in the stored or in the shown orientation (labelme#1529 drew labels on the turned
    photo; a depth sensor writes the stored one). Guessing gives labels that miss the photo without a word
    (0.00 agreement for orientation 2 or 3), so every dataset refuses all seven turning orientations alike,
    square photos included (docs/data.md, "EXIF orientation").

    Raises:
        DataError: ``"<path>: EXIF orientation N (what it does): ..."``.
    """
    _refuse_turned(path, exif_orientation(path))


def _refuse_turned(path: str | Path, orientation: int) -> None:
    """The refusal of :func:`check_upright` for an orientation already read."""
    if orientation in range(2, 9):  # 0, 9, 65535 (written by some cameras): viewers show them as stored
        what = EXIF_ORIENTATION_NAMES[orientation]
        raise DataError(
            where(
                path,
                f"EXIF orientation {orientation} ({what} when shown): its depth and label maps cannot say "
                "whether they follow the stored or the shown pixels; save the photo as shown without the tag, "
                "its maps in the same orientation (docs/data.md, EXIF orientation)",
            )
        )


def read_rgb(path: Path, *, with_maps: bool = False) -> np.ndarray:
    """An image file as uint8 HxWx3 RGB: turned by its EXIF orientation, converted by :func:`pil_to_rgb`.

    The reader of every dataset and of ``cinet predict`` (the same file gives the same array). Depth and label
    maps are read as stored (:func:`read_png16`, :func:`read_label_png`): never turned, never colour-converted.

    Args:
        path: The image file.
        with_maps: The image has depth / label maps (a dataset sample): an EXIF orientation other than 1 is
            refused (:func:`check_upright`) instead of applied.

    Raises:
        DataError: Naming the file: unreadable, or turned by EXIF while ``with_maps``.
    """
    from PIL import ImageOps

    img = _open(path)
    if with_maps:  # from the file already open (the hot path of training: no second open)
        _refuse_turned(path, _orientation(img))
    try:
        img = ImageOps.exif_transpose(img)  # camera photos (the orientation tag, EXIF 0x0112)
        return pil_to_rgb(img)
    except Exception as exc:  # a broken EXIF block, an unconvertible mode
        raise DataError(
            where(path, f"cannot read image ({type(exc).__name__}: {exc})".replace("\n", " "))
        ) from None


def exif_orientation(path: str | Path) -> int:
    """The EXIF orientation (1..8) of an image file; 1 (as stored) when it has none or cannot be read."""
    try:
        with no_pixel_limit(), Image.open(path) as img:
            return _orientation(img)
    except Exception:
        return 1


def _orientation(img: Image.Image) -> int:
    """The EXIF orientation of an open image; 1 when it has none or its EXIF block cannot be read."""
    try:
        return int(img.getexif().get(EXIF_ORIENTATION, 1))
    except Exception:  # a broken EXIF block
        return 1


def read_png16(path: Path) -> np.ndarray:
    """A single-channel 16-bit PNG as uint16 HxW; 8-bit or colour files raise :class:`DataError`."""
    img = _open(path)
    if img.mode not in ("I;16", "I;16B", "I;16L", "I"):
        raise DataError(where(path, f"expected a 16-bit single-channel PNG, got PIL mode {img.mode!r}"))
    arr = np.asarray(img)
    if arr.dtype != np.uint16:
        if arr.min() < 0 or arr.max() > 65535:
            raise DataError(where(path, "16-bit PNG values outside 0..65535"))
        arr = arr.astype(np.uint16)
    return arr


def read_label_png(path: Path) -> np.ndarray:
    """A label PNG (mode L or P: the stored indices, not colours) as uint8 HxW."""
    img = _open(path)
    if img.mode not in ("L", "P"):
        if img.mode in ("I;16", "I;16B", "I;16L", "I"):
            return np.asarray(img).astype(np.int64)
        raise DataError(
            where(
                path,
                f"expected a single-channel label PNG (mode L or P) of class ids, got mode {img.mode!r}: "
                "labels are ids 0..C-1 (255 = ignore), not colours (docs/data.md)",
            )
        )
    return np.asarray(img, dtype=np.uint8)
