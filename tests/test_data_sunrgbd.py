"""SUN RGB-D loader on tiny files in the official layout: bit-rotated depth PNG, allsplit.mat, labels."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

from cinet.data import dataset_info, load_dataset
from cinet.data.sunrgbd import decode_depth
from cinet.errors import DataError

H, W = 4, 6
MM = np.array(
    [
        [0, 1, 999, 1234, 4321, 7999],
        [8000, 8001, 9500, 12345, 500, 2000],
        [3000, 3001, 3002, 3003, 3004, 3005],
        [6000, 6500, 7000, 7500, 7900, 100],
    ],
    dtype=np.uint16,
)


def encode(mm: np.ndarray) -> np.ndarray:
    """Inverse of the toolbox decoding: rotate the 16 bits left by 3."""
    v = mm.astype(np.uint32)
    return (((v << 3) | (v >> 13)) & 0xFFFF).astype(np.uint16)


def write_sequence(data_root: Path, rel: str, label: np.ndarray, depth_png: np.ndarray | None = None) -> Path:
    seq = data_root / rel
    for sub in ("image", "depth_bfx", "label"):
        (seq / sub).mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (W, H), (200, 40, 90)).save(seq / "image" / "img.jpg", quality=100)
    png = encode(MM) if depth_png is None else depth_png
    Image.fromarray(png).save(seq / "depth_bfx" / "img.png")
    Image.fromarray(label.astype(np.uint8), mode="L").save(seq / "label" / "label.png")
    (seq / "intrinsics.txt").write_text("529.5 0 365.0\n0 529.5 265.0\n0 0 1\n")
    return seq


def make_root(root: Path) -> np.ndarray:
    label = np.arange(H * W).reshape(H, W) % 38  # 0 = void, 1..37
    write_sequence(root / "SUNRGBD", "kv1/NYUdata/NYU0001", label)
    write_sequence(root / "SUNRGBD", "kv2/kinect2data/seqB", label[::-1].copy())
    split_dir = root / "SUNRGBDtoolbox" / "traintestSUNRGBD"
    split_dir.mkdir(parents=True)
    alltrain = np.array(["/n/fs/sun3d/data/SUNRGBD/kv1/NYUdata/NYU0001"], dtype=object)
    alltest = np.array(["/n/fs/sun3d/data/SUNRGBD/kv2/kinect2data/seqB/"], dtype=object)
    scipy.io.savemat(split_dir / "allsplit.mat", {"alltrain": alltrain, "alltest": alltest})
    return label


def test_depth_decoding_exact_and_cap() -> None:
    d = decode_depth(encode(MM))
    exp = np.minimum(MM.astype(np.float32) / np.float32(1000), np.float32(8.0))
    np.testing.assert_array_equal(d, exp)
    assert d[0, 3] == np.float32(1.234) and d[1, 2] == 8.0 and d[0, 0] == 0
    # low 3 bits set -> the toolbox rotation puts them on top -> >= 8.192 m -> capped at 8
    assert decode_depth(np.array([[0b101]], np.uint16))[0, 0] == 8.0


def test_sunrgbd_values(tmp_path: Path) -> None:
    label = make_root(tmp_path)
    train = load_dataset("sunrgbd", tmp_path, split="train")
    test = load_dataset("sunrgbd", tmp_path / "SUNRGBD", split="test")  # also without the toolbox beside
    assert len(train) == 1 and len(test) == 1
    s = train[0]
    assert s["meta"]["id"] == "sunrgbd/kv1/NYUdata/NYU0001"
    exp = np.minimum(MM.astype(np.float32) / np.float32(1000), np.float32(8.0))
    np.testing.assert_array_equal(s["depth"][0].numpy(), exp)
    lab = s["labels"].numpy()
    for y in range(H):
        for x in range(W):
            assert lab[y, x] == (255 if label[y, x] == 0 else label[y, x] - 1)
    assert s["meta"]["intrinsics"] == (529.5, 529.5, 364.0, 264.0)  # the toolbox's 1-based cx, cy minus 1
    assert train.info.class_names[0] == "wall" and train.info.num_classes == 37
    assert test[0]["meta"]["id"] == "sunrgbd/kv2/kinect2data/seqB"
    np.testing.assert_array_equal(test[0]["labels"].numpy()[0], lab[-1])
    assert dataset_info("sunrgbd").depth_cap == 8.0


def test_sunrgbd_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no split list"):
        load_dataset("sunrgbd", tmp_path)
    make_root(tmp_path)
    seq = tmp_path / "SUNRGBD" / "kv1" / "NYUdata" / "NYU0001"
    Image.fromarray((MM % 256).astype(np.uint8), mode="L").save(seq / "depth_bfx" / "img.png")
    ds = load_dataset("sunrgbd", tmp_path)
    with pytest.raises(
        DataError, match=r"depth_bfx/img.png: expected a 16-bit single-channel PNG, got PIL mode 'L'"
    ):
        ds[0]
    Image.fromarray(encode(MM)).save(seq / "depth_bfx" / "img.png")
    bad = np.zeros((H, W), np.uint8)
    bad[1, 1] = 40
    Image.fromarray(bad, mode="L").save(seq / "label" / "label.png")
    with pytest.raises(DataError, match=r"label/label.png: label value 40 outside 0..37"):
        ds[0]
    (seq / "label" / "label.png").unlink()
    with pytest.raises(DataError, match=r"label/label.png: 37-class label image not found"):
        ds[0]
    np.save(seq / "label" / "label.npy", np.full((H, W), 2, np.uint8))
    assert (ds[0]["labels"] == 1).all()  # ESANet's label.npy is read too


def test_sunrgbd_handa_lists(tmp_path: Path) -> None:
    make_root(tmp_path)
    shutil.rmtree(tmp_path / "SUNRGBDtoolbox")
    # the Handa lists name the image file: SUNRGBD/<sensor>/<subset>/<sequence>/image/<name>.jpg
    (tmp_path / "sunrgbd_training_images.txt").write_text(
        "SUNRGBD/kv2/kinect2data/seqB/image/img.jpg\nSUNRGBD/kv1/NYUdata/NYU0001/image/img.jpg\n"
    )
    ds = load_dataset("sunrgbd", tmp_path, split="train")
    assert [ds[i]["meta"]["id"] for i in range(2)] == [
        "sunrgbd/kv2/kinect2data/seqB",
        "sunrgbd/kv1/NYUdata/NYU0001",
    ]
    with pytest.raises(DataError, match=r"no split list: .*sunrgbd_testing_images\.txt"):
        load_dataset("sunrgbd", tmp_path, split="test")
