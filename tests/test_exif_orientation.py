"""EXIF orientation (issue #23, kind 2): a photo with depth / label maps is refused for every turning orientation
(2..8, square photos included) in every dataset reader, the header scan before training, ``cinet data preview``
and evaluation; a photo without maps (``cinet predict``, the page) is turned as a viewer shows it. Expected
arrays are made with numpy from the orientation's definition (EXIF 2.3, tag 0x0112), not with Pillow."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cinet.cli import main
from cinet.data import load_dataset
from cinet.data.base import read_rgb
from cinet.errors import DataError

ORIENTATIONS = range(1, 9)


def shown_from_stored(stored: np.ndarray, orientation: int) -> np.ndarray:
    """What a viewer shows for ``stored`` pixels (HxWx3) with EXIF ``orientation`` (numpy only)."""
    ops = {
        1: lambda a: a,
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1, :],
        5: lambda a: a.transpose(1, 0, 2),
        6: lambda a: np.rot90(a, k=-1),  # 90 degrees clockwise
        7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),  # transverse: mirror across the anti-diagonal
        8: lambda a: np.rot90(a, k=1),  # 90 degrees counter-clockwise
    }
    return np.ascontiguousarray(ops[orientation](stored))


def save_tagged(path: Path, stored: np.ndarray, orientation: int) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(stored).save(path, exif=exif.tobytes())  # PNG keeps the pixels exactly


def stored_pixels(h: int, w: int) -> np.ndarray:
    rng = np.random.default_rng(h * 100 + w)
    return rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("orientation", ORIENTATIONS)
@pytest.mark.parametrize("size", [(6, 6), (6, 10)])
def test_predict_reader_turns_each_orientation_as_a_viewer(tmp_path: Path, orientation: int, size) -> None:
    stored = stored_pixels(*size)
    path = tmp_path / "photo.png"
    save_tagged(path, stored, orientation)
    assert np.array_equal(read_rgb(path), shown_from_stored(stored, orientation))


def make_folder(root: Path, orientation: int, size: tuple[int, int]) -> Path:
    for sub in ("rgb", "depth", "labels"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    h, w = size
    save_tagged(root / "rgb" / "cam.png", stored_pixels(h, w), orientation)
    Image.fromarray(np.full((h, w), 1500, np.uint16)).save(root / "depth" / "cam.png")
    Image.fromarray(np.zeros((h, w), np.uint8)).save(root / "labels" / "cam.png")
    return root / "rgb" / "cam.png"


@pytest.mark.parametrize("orientation", ORIENTATIONS)
@pytest.mark.parametrize("size", [(16, 16), (16, 24)])
def test_folder_dataset_refuses_every_turning_orientation(tmp_path: Path, orientation: int, size) -> None:
    photo = make_folder(tmp_path / "ds", orientation, size)
    ds = load_dataset("folder", tmp_path / "ds", "train", num_classes=2)
    if orientation == 1:
        assert tuple(ds[0]["labels"].shape) == size
        assert ds.header_sizes() == [(str(photo), size)]
        return
    for read in (lambda: ds[0], ds.header_sizes):
        with pytest.raises(DataError) as err:
            read()
        msg = str(err.value)
        assert "\n" not in msg and msg.startswith(f"{photo}: EXIF orientation {orientation} (")


def test_folder_without_maps_turns_the_photo(tmp_path: Path) -> None:
    (tmp_path / "rgb").mkdir()
    stored = stored_pixels(4, 6)
    save_tagged(tmp_path / "rgb" / "a.png", stored, 6)
    ds = load_dataset("folder", tmp_path, "train", num_classes=2)
    assert ds.header_sizes()[0][1] == (6, 4)
    assert tuple(ds[0]["image"].shape) == (3, 6, 4)


def test_preview_and_train_refuse_a_turned_photo_in_one_line(tmp_path: Path, capsys) -> None:
    photo = make_folder(tmp_path / "ds", 3, (32, 40))  # 180 degrees: sizes agree, so only the tag can tell
    out = tmp_path / "preview"
    rc = main(["data", "preview", "folder", "--root", str(tmp_path / "ds"), "--out", str(out),
               "num_classes=2"])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith(f"error: {photo}: EXIF orientation 3 ")
    run = tmp_path / "run"
    rc = main(["train", "--config", "smoke", "--run-dir", str(run), "data.name=folder",
               f"data.root={tmp_path / 'ds'}", "data.options={num_classes: 2}", "data.image_size=null",
               "data.crop_size=[16,16]", "data.batch_size=1"])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and not run.exists()
    assert len(err) == 1 and err[0].startswith(f"error: {photo}: EXIF orientation 3 ")


def test_sunrgbd_and_cityscapes_readers_refuse_a_turned_photo(tmp_path: Path) -> None:
    from test_data_cityscapes import write_sample
    from test_data_sunrgbd import make_root

    make_root(tmp_path / "sun")
    photo = tmp_path / "sun" / "SUNRGBD" / "kv1" / "NYUdata" / "NYU0001" / "image" / "img.jpg"
    exif = Image.Exif()
    exif[0x0112] = 2
    Image.open(photo).convert("RGB").save(photo, exif=exif.tobytes(), quality=100)
    with pytest.raises(DataError, match="EXIF orientation 2"):
        load_dataset("sunrgbd", tmp_path / "sun", split="train")[0]

    write_sample(tmp_path / "cs")
    photo = next((tmp_path / "cs" / "leftImg8bit").rglob("*.png"))
    save_tagged(photo, np.asarray(Image.open(photo).convert("RGB")), 8)
    with pytest.raises(DataError, match="EXIF orientation 8"):
        load_dataset("cityscapes", tmp_path / "cs", split="train")[0]


def test_orientations_outside_2_to_8_are_shown_as_stored(tmp_path: Path) -> None:
    """Some cameras write 0 (or junk): viewers and exif_transpose show those photos as stored; so do datasets."""
    for value in (0, 9):
        make_folder(tmp_path / f"ds{value}", value, (16, 24))
        ds = load_dataset("folder", tmp_path / f"ds{value}", "train", num_classes=2)
        assert tuple(ds[0]["labels"].shape) == (16, 24)


def test_a_pil_image_is_turned_like_its_file(tmp_path: Path) -> None:
    from cinet.inference.predictor import load_image

    stored = stored_pixels(6, 10)
    path = tmp_path / "p.png"
    save_tagged(path, stored, 6)
    with Image.open(path) as img:
        assert np.array_equal(load_image(img), shown_from_stored(stored, 6))
