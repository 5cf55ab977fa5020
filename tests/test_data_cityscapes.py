"""Cityscapes loader on one tiny sample in the official layout (disparity PNG + camera JSON + labelIds)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cinet.data import load_dataset
from cinet.errors import DataError

BASELINE, FX, FY, U0, V0 = 0.209313, 2262.52, 2265.3017905988554, 1096.98, 513.137
DISP = np.array([[0, 1, 2, 1600], [5000, 30000, 65535, 257]], np.uint16)
IDS = np.array([[7, 8, 26, 0], [33, 6, 24, 11]], np.uint8)
# road 7 -> 0, sidewalk 8 -> 1, car 26 -> 13, unlabeled 0 -> 255, bicycle 33 -> 18, ground 6 -> 255,
# person 24 -> 11, building 11 -> 2 (cityscapesScripts labels.py)
TRAIN_IDS = np.array([[0, 1, 13, 255], [18, 255, 11, 2]])
STEM = "aachen_000000_000019"


def write_sample(root: Path, split: str = "train", disp: np.ndarray = DISP, ids: np.ndarray = IDS) -> None:
    h, w = disp.shape
    for kind in ("leftImg8bit", "disparity", "camera", "gtFine"):
        (root / kind / split / "aachen").mkdir(parents=True, exist_ok=True)
    img = np.arange(h * w * 3, dtype=np.uint8).reshape(h, w, 3)
    Image.fromarray(img).save(root / "leftImg8bit" / split / "aachen" / f"{STEM}_leftImg8bit.png")
    Image.fromarray(disp).save(root / "disparity" / split / "aachen" / f"{STEM}_disparity.png")
    cam = {
        "extrinsic": {
            "baseline": BASELINE,
            "pitch": 0.038,
            "roll": 0.0,
            "x": 1.7,
            "y": 0.1,
            "yaw": -0.0195,
            "z": 1.22,
        },
        "intrinsic": {"fx": FX, "fy": FY, "u0": U0, "v0": V0},
    }
    (root / "camera" / split / "aachen" / f"{STEM}_camera.json").write_text(json.dumps(cam))
    Image.fromarray(ids, mode="L").save(root / "gtFine" / split / "aachen" / f"{STEM}_gtFine_labelIds.png")


def test_cityscapes_values(tmp_path: Path) -> None:
    write_sample(tmp_path)
    ds = load_dataset("cityscapes", tmp_path, split="train")
    assert len(ds) == 1
    s = ds[0]
    depth = s["depth"][0].numpy()
    for y in range(DISP.shape[0]):
        for x in range(DISP.shape[1]):
            p = int(DISP[y, x])
            exp = BASELINE * FX * 256.0 / (p - 1) if p > 1 else 0.0
            if exp > 80.0:
                exp = 0.0  # beyond the 80 m cap: invalid
            assert depth[y, x] == pytest.approx(exp, rel=1e-6, abs=0), (p, depth[y, x])
    assert depth[0, 0] == 0 and depth[0, 1] == 0 and depth[0, 2] == 0  # p = 0, p = 1, 121 km
    assert depth[0, 3] == pytest.approx(BASELINE * FX * 256 / 1599)
    np.testing.assert_array_equal(s["labels"].numpy(), TRAIN_IDS)
    assert s["meta"]["intrinsics"] == (FX, FY, U0, V0)
    assert s["meta"]["id"] == f"cityscapes/train/{STEM}"
    assert ds.info.class_names[13] == "car" and ds.info.palette[0] == [128, 64, 128]


def test_cityscapes_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="leftImg8bit/val: Cityscapes image folder not found"):
        load_dataset("cityscapes", tmp_path, split="val")
    write_sample(tmp_path)
    ds = load_dataset("cityscapes", tmp_path)
    cam = tmp_path / "camera" / "train" / "aachen" / f"{STEM}_camera.json"
    cam.write_text("{}")
    with pytest.raises(DataError, match=f"{STEM}_camera.json: bad camera JSON"):
        ds[0]
    cam.unlink()
    with pytest.raises(DataError, match=f"{STEM}_camera.json: Cityscapes camera file not found"):
        ds[0]
    write_sample(tmp_path, ids=np.full((2, 4), 40, np.uint8))
    with pytest.raises(DataError, match=r"gtFine_labelIds.png: label id 40 outside 0..33"):
        ds[0]
    write_sample(tmp_path, ids=np.zeros((3, 4), np.uint8))
    with pytest.raises(
        DataError, match=r"sizes differ within one sample \(image 4x2, depth 4x2, labels 4x3\)"
    ):
        ds[0]
