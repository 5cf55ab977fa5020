"""The two NYUD formats of the multi-task literature, on tiny files written in each format.

* ``nyud_mt``: ATRC / Multi-Task-Learning-PyTorch / InvPT (``images/<id>.jpg``, ``segmentation/<id>.png`` with
  0 = background, ``depth/<id>.npy`` metres, ``gt_sets/{train,val}.txt``);
* ``nyuv2_mtan``: MTAN / LibMTL / Auto-Lambda (``{train,val}/{image,label,depth,normal}/<i>.npy``).

Expected values are written here by hand from the formats' conventions, not computed by the readers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cinet.build.data import build_dataset
from cinet.config import DataConfig
from cinet.data import dataset_info, load_dataset
from cinet.data.info import IMAGENET_MEAN, IMAGENET_STD
from cinet.errors import ConfigError, DataError

H, W = 3, 4


def _raw(sample):
    """The image of a sample back in 0..1 (datasets normalise with the ImageNet mean/std by default)."""
    m = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    s = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return sample["image"] * s + m


# ---------------------------------------------------------------------------------------------- nyud_mt

SEG = np.array([[0, 1, 2, 40], [5, 0, 39, 1], [10, 20, 30, 0]], dtype=np.uint8)
SEG_EXPECTED = np.array([[255, 0, 1, 39], [4, 255, 38, 0], [9, 19, 29, 255]])
DEPTH = np.array([[0.0, 1.5, 2.25, 12.0], [3.0, 0.0, 0.5, 9.75], [1.0, 2.0, 4.0, 8.0]], dtype=np.float32)


def make_mt(root: Path, ext: str = ".jpg", depth_shape: str = "hw") -> Path:
    for sub in ("images", "segmentation", "depth", "normals", "edge", "gt_sets"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    ids = {"train": ["0003", "0010"], "val": ["0001"]}
    for split, names in ids.items():
        (root / "gt_sets" / f"{split}.txt").write_text("\n".join(names) + "\n")
        for k, name in enumerate(names):
            rgb = np.full((H, W, 3), 40 * (k + 1), np.uint8)
            if ext == ".png":
                Image.fromarray(rgb).save(root / "images" / f"{name}.png")
            else:
                Image.fromarray(rgb).save(root / "images" / f"{name}.jpg", quality=100)
            Image.fromarray(SEG, mode="L").save(root / "segmentation" / f"{name}.png")
            d = DEPTH + k
            np.save(root / "depth" / f"{name}.npy", d[..., None] if depth_shape == "hw1" else d)
            np.save(root / "normals" / f"{name}.npy", np.zeros((H, W, 3), np.float32))
            np.save(root / "edge" / f"{name}.npy", np.zeros((H, W), np.float32))
    return root


def test_nyud_mt_values_ignore_and_splits(tmp_path: Path) -> None:
    root = make_mt(tmp_path / "NYUDv2")
    train = load_dataset("nyud_mt", root, "train")
    val = load_dataset("nyud_mt", root, "val")
    assert len(train) == 2 and len(val) == 1
    assert load_dataset("nyud_mt", root, "test").ids == ["0001"]  # test = val (654 official test images)
    s = train[1]  # id 0010, second of the list, depth + 1
    assert s["meta"]["id"] == "nyud_mt/0010"
    assert s["labels"].tolist() == SEG_EXPECTED.tolist()  # 0 -> ignore, c -> c - 1
    assert torch.equal(s["depth"][0], torch.from_numpy(DEPTH + 1))  # metres, uncapped (12 + 1 m stays)
    assert torch.allclose(_raw(s), torch.full((3, H, W), 80 / 255), atol=2 / 255)  # JPEG q=100 of a flat grey
    assert s["meta"]["intrinsics"] is None  # not a 640x480 frame: the toolbox intrinsics do not apply
    info = train.info
    assert info.num_classes == 40 and info.class_names[0] == "wall" and info.class_names[39] == "otherprop"


def test_nyud_mt_png_images_and_hw1_depth(tmp_path: Path) -> None:
    root = make_mt(tmp_path / "NYUDv2", ext=".png", depth_shape="hw1")  # InvPT / TaskPrompter copy
    s = load_dataset("nyud_mt", root, "val")[0]
    assert torch.equal(s["depth"][0], torch.from_numpy(DEPTH))
    assert torch.allclose(_raw(s), torch.full((3, H, W), 40 / 255), atol=1e-6)  # PNG: exact


def test_nyud_mt_intrinsics_on_full_frames(tmp_path: Path) -> None:
    root = tmp_path / "NYUDv2"
    for sub in ("images", "segmentation", "depth", "gt_sets"):
        (root / sub).mkdir(parents=True)
    (root / "gt_sets" / "val.txt").write_text("a\n")
    Image.new("RGB", (640, 480)).save(root / "images" / "a.png")
    Image.new("L", (640, 480)).save(root / "segmentation" / "a.png")
    np.save(root / "depth" / "a.npy", np.ones((480, 640), np.float32))
    s = load_dataset("nyud_mt", root, "val")[0]
    fx, _, cx, _ = s["meta"]["intrinsics"]
    assert (fx, cx) == pytest.approx((518.8579011745019, 324.58244941119034))  # toolbox, 0-based


def test_nyud_mt_errors_name_the_file(tmp_path: Path) -> None:
    root = make_mt(tmp_path / "NYUDv2")
    with pytest.raises(ValueError, match=r"^split: unknown split"):
        load_dataset("nyud_mt", root, "extra")
    norm = {"mean": (0.5,) * 3, "std": (0.5,) * 3}
    with pytest.raises(ConfigError, match=r"^nyud_mt: unknown split 'extra'"):
        build_dataset(DataConfig(name="nyud_mt", root=str(root)), "extra", train=False, **norm)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"val\.txt"):
        load_dataset("nyud_mt", tmp_path / "empty", "val")
    (root / "depth" / "0001.npy").unlink()
    with pytest.raises(DataError, match=r"0001\.npy"):
        load_dataset("nyud_mt", root, "val")
    root2 = make_mt(tmp_path / "b")
    Image.fromarray(np.full((H, W), 41, np.uint8), mode="L").save(root2 / "segmentation" / "0001.png")
    with pytest.raises(DataError, match=r"0001\.png.*41 outside 0\.\.40"):
        load_dataset("nyud_mt", root2, "val")[0]
    (root2 / "depth" / "0003.npy").write_bytes(b"not an npy")
    with pytest.raises(DataError, match=r"0003\.npy: cannot read \.npy"):
        load_dataset("nyud_mt", root2, "train")[0]
    with pytest.raises(ValueError, match=r"^classes: unknown option"):
        load_dataset("nyud_mt", root2, "train", classes=13)
    with pytest.raises(ConfigError, match=r"^data\.options\.classes: unknown option"):
        build_dataset(
            DataConfig(name="nyud_mt", root=str(root2), options={"classes": 13}), "train", train=False, **norm
        )


# ------------------------------------------------------------------------------------------- nyuv2_mtan

IMG = np.linspace(0.0, 1.0, H * W * 3, dtype=np.float32).reshape(H, W, 3)
LABEL = np.array([[-1, 0, 1, 12], [5, -1, 7, 3], [0, 0, 11, -1]], dtype=np.float32)  # stored as floats
LABEL_EXPECTED = [[255, 0, 1, 12], [5, 255, 7, 3], [0, 0, 11, 255]]


def make_mtan(root: Path, n_train: int = 2, n_val: int = 1) -> Path:
    for split, n in (("train", n_train), ("val", n_val)):
        for sub in ("image", "label", "depth", "normal"):
            (root / split / sub).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            np.save(root / split / "image" / f"{i}.npy", np.clip(IMG + 0.01 * i, 0, 1))
            np.save(root / split / "label" / f"{i}.npy", LABEL)
            np.save(root / split / "depth" / f"{i}.npy", (DEPTH + i)[..., None])  # HxWx1
            np.save(root / split / "normal" / f"{i}.npy", np.zeros((H, W, 3), np.float32))
    return root


def test_nyuv2_mtan_values_ignore_and_splits(tmp_path: Path) -> None:
    root = make_mtan(tmp_path / "nyuv2", n_train=3, n_val=2)
    train, val = load_dataset("nyuv2_mtan", root, "train"), load_dataset("nyuv2_mtan", root, "val")
    assert (len(train), len(val)) == (3, 2)
    assert len(load_dataset("nyuv2_mtan", root, "test")) == 2
    s = train[2]
    assert s["meta"]["id"] == "nyuv2_mtan/train/2"
    assert s["labels"].tolist() == LABEL_EXPECTED  # -1 -> ignore, 0..12 kept
    assert torch.equal(s["depth"][0], torch.from_numpy(DEPTH + 2))
    expected = torch.from_numpy(np.clip(IMG + 0.02, 0, 1)).permute(2, 0, 1)
    assert torch.allclose(_raw(s), expected, atol=1e-6)  # the float image, not rounded to 8 bits
    info = dataset_info("nyuv2_mtan")
    assert info.num_classes == 13 and info.class_names[:3] == ["bed", "books", "ceiling"]
    assert info.protocol_size == (288, 384)
    fx = s["meta"]["intrinsics"][0]  # the toolbox values scaled from 640 to 4 px wide
    assert fx == pytest.approx(518.8579011745019 * 4 / 640)


def test_nyuv2_mtan_errors_name_the_file(tmp_path: Path) -> None:
    root = make_mtan(tmp_path / "nyuv2", n_train=3)
    (root / "train" / "image" / "1.npy").unlink()
    with pytest.raises(DataError, match=r"train/image/1\.npy: missing"):
        load_dataset("nyuv2_mtan", root, "train")
    np.save(root / "val" / "label" / "0.npy", np.array([[13.0]]))
    with pytest.raises(DataError, match=r"val/label/0\.npy.*13 outside -1\.\.12"):
        load_dataset("nyuv2_mtan", root, "val")[0]
    np.save(root / "val" / "image" / "0.npy", IMG * 255)
    with pytest.raises(DataError, match=r"val/image/0\.npy: image values outside 0\.\.1"):
        load_dataset("nyuv2_mtan", root, "val")[0]
    with pytest.raises(DataError, match="not found"):
        load_dataset("nyuv2_mtan", tmp_path / "nowhere", "val")
