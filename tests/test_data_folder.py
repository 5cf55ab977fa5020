"""Folder loader: layout, split lists, classes file, every error case, and the real NYU samples."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cinet.build.data import dataset_info_from_config
from cinet.config import DataConfig
from cinet.data import dataset_info, load_dataset
from cinet.data.base import denormalize
from cinet.errors import ConfigError, DataError

H, W = 5, 7
NYU_SAMPLES = Path(__file__).parents[2] / "shared" / "data" / "nyu_samples"


def write_folder(root: Path, stems: tuple[str, ...] = ("a", "b", "c")) -> dict[str, tuple[np.ndarray, ...]]:
    rng = np.random.default_rng(1)
    out = {}
    for sub in ("rgb", "depth", "labels"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for stem in stems:
        img = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
        dep = rng.integers(0, 20000, (H, W), dtype=np.uint16)
        lab = rng.integers(0, 4, (H, W), dtype=np.uint8)
        lab[0, 0] = 255
        Image.fromarray(img).save(root / "rgb" / f"{stem}.png")
        Image.fromarray(dep).save(root / "depth" / f"{stem}.png")
        Image.fromarray(lab, mode="L").save(root / "labels" / f"{stem}.png")
        out[stem] = (img, dep, lab)
    (root / "classes.json").write_text(json.dumps(["wall", "floor", "chair", "table"]))
    return out


def test_folder_values_and_splits(tmp_path: Path) -> None:
    data = write_folder(tmp_path)
    ds = load_dataset("folder", tmp_path, depth_scale=2000)
    assert len(ds) == 3 and ds.info.class_names == ["wall", "floor", "chair", "table"]
    for i, stem in enumerate(("a", "b", "c")):
        img, dep, lab = data[stem]
        s = ds[i]
        assert s["meta"]["id"] == f"folder/{stem}"
        out_img = (
            (denormalize(s["image"], ds.info.mean, ds.info.std).permute(1, 2, 0).numpy() * 255)
            .round()
            .astype(np.uint8)
        )
        np.testing.assert_array_equal(out_img, img)
        np.testing.assert_array_equal(s["depth"][0].numpy(), dep.astype(np.float32) / np.float32(2000))
        np.testing.assert_array_equal(s["labels"].numpy(), lab.astype(np.int64))
        assert s["meta"]["intrinsics"] is None
    (tmp_path / "train.txt").write_text("c\n# comment\n\na\n")
    (tmp_path / "test.txt").write_text("b\n")
    tr = load_dataset("folder", tmp_path, split="train", num_classes=4, intrinsics=(10, 11, 3, 2))
    assert [tr[i]["meta"]["id"] for i in range(len(tr))] == ["folder/c", "folder/a"]
    assert tr[0]["meta"]["intrinsics"] == (10.0, 11.0, 3.0, 2.0)
    assert len(load_dataset("folder", tmp_path, split="test")) == 1
    with pytest.raises(DataError, match=r"val.txt: split list not found"):
        load_dataset("folder", tmp_path, split="val")
    info = dataset_info("folder", num_classes=3)
    assert info.class_names == ["class_0", "class_1", "class_2"] and len(info.palette) == 3
    with pytest.raises(ValueError, match=r"^num_classes: folder dataset needs num_classes or class_names"):
        dataset_info("folder")
    with pytest.raises(
        ConfigError, match=r"^data\.options\.num_classes: folder dataset needs num_classes or class_names"
    ):
        dataset_info_from_config(DataConfig(name="folder"))


def test_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=f"{tmp_path / 'missing'}: folder dataset root not found"):
        load_dataset("folder", tmp_path / "missing", num_classes=4)
    write_folder(tmp_path)
    # missing depth for a stem
    (tmp_path / "depth" / "b.png").unlink()
    with pytest.raises(DataError, match=r"depth/b.png: missing for RGB image b.png"):
        load_dataset("folder", tmp_path)
    Image.fromarray(np.zeros((H, W), np.uint16)).save(tmp_path / "depth" / "b.png")
    # corrupt (truncated) image
    good = (tmp_path / "rgb" / "a.png").read_bytes()
    (tmp_path / "rgb" / "a.png").write_bytes(good[: len(good) // 2])
    ds = load_dataset("folder", tmp_path)
    with pytest.raises(DataError, match=r"rgb/a.png: cannot read image"):
        ds[0]
    (tmp_path / "rgb" / "a.png").write_bytes(good)
    # 8-bit depth where 16-bit is expected
    Image.fromarray(np.zeros((H, W), np.uint8), mode="L").save(tmp_path / "depth" / "a.png")
    with pytest.raises(
        DataError, match=r"depth/a.png: expected a 16-bit single-channel PNG, got PIL mode 'L'"
    ):
        ds[0]
    # sizes differ within one sample
    Image.fromarray(np.zeros((H + 1, W), np.uint16)).save(tmp_path / "depth" / "a.png")
    with pytest.raises(
        DataError, match=rf"a.png: sizes differ within one sample \(image {W}x{H}, depth {W}x{H + 1}"
    ):
        ds[0]
    Image.fromarray(np.zeros((H, W), np.uint16)).save(tmp_path / "depth" / "a.png")
    # label beyond the class count
    lab = np.zeros((H, W), np.uint8)
    lab[2, 3] = 9
    Image.fromarray(lab, mode="L").save(tmp_path / "labels" / "a.png")
    with pytest.raises(DataError, match=r"labels/a.png: label value 9 outside 0..3 \(255 = ignore\)"):
        ds[0]
    with pytest.raises(ValueError, match=r"^depth_scal: unknown option"):
        load_dataset("folder", tmp_path, depth_scal=5000)
    with pytest.raises(ConfigError, match=r"^data\.options\.depth_scal: unknown option"):
        dataset_info_from_config(DataConfig(name="folder", root=str(tmp_path), options={"depth_scal": 5000}))


def test_folder_nonfinite_depth_is_invalid(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from cinet.data.base import to_tensor_sample

    info = dataset_info("folder", num_classes=2)
    depth = np.array([[1.0, np.nan], [np.inf, 2.0]], np.float32)
    raw = {
        "image": np.zeros((2, 2, 3), np.uint8),
        "depth": depth,
        "labels": np.zeros((2, 2), np.uint8),
        "meta": {"id": "x"},
        "files": ["x.png"],
    }
    s = to_tensor_sample(raw, info)
    assert s["depth"][0].tolist() == [[1.0, 0.0], [0.0, 2.0]]
    assert "x.png: 2 non-finite depth values set to 0" in caplog.text


@pytest.mark.skipif(not NYU_SAMPLES.is_dir(), reason="shared/data/nyu_samples not present")
def test_real_nyu_samples_through_folder(tmp_path: Path) -> None:
    for sub in ("rgb", "depth", "labels"):
        (tmp_path / sub).mkdir()
    for n in ("000433", "000464"):
        shutil.copy(NYU_SAMPLES / f"{n}.png", tmp_path / "rgb" / f"{n}.png")
        shutil.copy(NYU_SAMPLES / f"depth_gt_{n}.png", tmp_path / "depth" / f"{n}.png")
        shutil.copy(NYU_SAMPLES / f"segm_gt_{n}.png", tmp_path / "labels" / f"{n}.png")
    ds = load_dataset("folder", tmp_path, split="test", depth_scale=5000, num_classes=40)
    assert len(ds) == 2
    s = ds[1]  # 000464
    assert s["image"].shape == (3, 480, 640) and s["meta"]["orig_size"] == (480, 640)
    raw = np.asarray(Image.open(NYU_SAMPLES / "depth_gt_000464.png"))
    np.testing.assert_array_equal(s["depth"][0].numpy(), raw.astype(np.float32) / np.float32(5000))
    d = s["depth"][0]
    assert float((d == 0).float().mean()) == pytest.approx(0.37, abs=0.001)
    assert float(d[d > 0].min()) == pytest.approx(1.5174, abs=1e-4)
    assert float(d.max()) == pytest.approx(5.2284, abs=1e-4)
    assert sorted(torch.unique(s["labels"]).tolist()) == [0, 1, 5, 6, 10, 17, 34, 38, 39, 255]
    s0 = ds[0]  # 000433
    assert sorted(torch.unique(s0["labels"]).tolist()) == [0, 1, 8, 10, 21, 37, 38, 39, 255]
    assert float(s0["depth"].max()) == pytest.approx(29649 / 5000)


def _lab(rgb: list[list[int]]) -> np.ndarray:
    """sRGB (0..255) -> CIELAB (D65), the textbook formulas (written here, not taken from the code under test)."""
    c = np.asarray(rgb, dtype=float) / 255.0
    c = np.where(c > 0.04045, ((c + 0.055) / 1.055) ** 2.4, c / 12.92)
    m = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]])
    xyz = c @ m.T / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[:, 1] - 16, 500 * (f[:, 0] - f[:, 1]), 200 * (f[:, 1] - f[:, 2])], axis=1)


def _closest_pair(palette: list[list[int]]) -> float:
    lab = _lab(palette)
    d = np.linalg.norm(lab[:, None] - lab[None], axis=-1)
    d[np.eye(len(palette), dtype=bool)] = np.inf
    return float(d.min())


@pytest.mark.parametrize(("n", "at_least"), [(3, 40.0), (13, 25.0), (40, 20.0)])
def test_default_palette_keeps_the_classes_apart(tmp_path: Path, n: int, at_least: float) -> None:
    """Issue 25: the VOC colormap gave wall, floor and window of NYU's 13 classes three purples (ΔE76 11-27 from
    each other, 11.3 the closest pair of 13). The folder dataset's default palette keeps every pair apart."""
    from cinet.data.folder import folder_info
    from cinet.data.info import voc_palette

    names = ["bed", "books", "ceiling", "chair", "floor", "furniture", "objects", "picture", "sofa", "table",
             "tv", "wall", "window"] if n == 13 else [f"c{i}" for i in range(n)]  # fmt: skip
    info = folder_info(class_names=names)
    assert len(info.palette) == n and all(0 <= v <= 255 for c in info.palette for v in c)
    assert _closest_pair(info.palette) >= at_least
    if n == 13:
        assert _closest_pair(voc_palette(13)) < 12  # the old default: the test would have failed
        wall, floor, window = (info.palette[names.index(k)] for k in ("wall", "floor", "window"))
        assert _closest_pair([wall, floor, window]) >= 40
