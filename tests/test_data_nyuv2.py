"""NYUv2 loader on a tiny file in the official format (HDF5 .mat, transposed arrays) + splits.mat."""

from __future__ import annotations

import logging
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io
import torch

from cinet.data import dataset_info, load_dataset, load_meta
from cinet.data.base import denormalize
from cinet.errors import DataError

H, W = 6, 8


def _images() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(3, H, W, 3), dtype=np.uint8)
    depths = rng.uniform(0.5, 9.5, size=(3, H, W)).astype(np.float32)
    raw = rng.integers(0, 895, size=(3, H, W)).astype(np.uint16)
    # known raw classes (names in classes894): 4 ceiling, 5 chair, 11 floor, 21 wall; 0 unlabelled
    raw[:, 0, :5] = [0, 4, 5, 11, 21]
    depths[1, 0, 0] = np.nan
    depths[1, 0, 1] = 12.0  # beyond the 10 m cap
    return images, depths, raw


def write_nyu(root: Path, raw: np.ndarray | None = None, splits: bool = True) -> tuple[np.ndarray, ...]:
    images, depths, raw_ = _images()
    raw = raw_ if raw is None else raw
    root.mkdir(parents=True, exist_ok=True)
    with h5py.File(root / "nyu_depth_v2_labeled.mat", "w") as f:
        # MATLAB stores column-major: h5py sees (N, 3, W, H) / (N, W, H)
        f["images"] = np.stack([im.transpose(2, 1, 0) for im in images])
        f["depths"] = np.stack([d.T for d in depths])
        f["labels"] = np.stack([r.T for r in raw])
    if splits:
        scipy.io.savemat(
            root / "splits.mat",
            {"trainNdxs": np.array([[1], [3]], np.uint16), "testNdxs": np.array([[2]], np.uint16)},
        )
    return images, depths, raw


def test_nyuv2_values(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    images, depths, raw = write_nyu(tmp_path)
    meta = load_meta("nyuv2")
    map40, map13 = meta["map894to40"], meta["map40to13"]
    train = load_dataset("nyuv2", tmp_path, split="train")
    test = load_dataset("nyuv2", tmp_path, split="test", classes=13)
    assert len(train) == 2 and len(test) == 1
    for ds, idxs, classes in ((train, [0, 2], 40), (test, [1], 13)):
        for j, i in enumerate(idxs):
            with caplog.at_level(logging.WARNING):
                s = ds[j]
            assert s["meta"]["id"] == f"nyuv2/{i + 1:04d}"
            img = (
                (denormalize(s["image"], ds.info.mean, ds.info.std).permute(1, 2, 0).numpy() * 255)
                .round()
                .astype(np.uint8)
            )
            np.testing.assert_array_equal(img, images[i])
            exp_depth = np.where(np.isnan(depths[i]), 0, np.minimum(depths[i], 10.0))
            np.testing.assert_array_equal(s["depth"][0].numpy(), exp_depth)
            lab = s["labels"].numpy()
            for y in range(H):
                for x in range(W):
                    r = int(raw[i, y, x])
                    if r == 0:
                        exp = 255
                    elif classes == 40:
                        exp = map40[r - 1] - 1
                    else:
                        exp = map13[map40[r - 1] - 1] - 1
                    assert lab[y, x] == exp, (i, y, x, r)
            names = ds.info.class_names
            assert lab[0, 0] == 255
            assert [names[v] for v in lab[0, 1:5]] == ["ceiling", "chair", "floor", "wall"]
    assert "non-finite" in caplog.text
    s = test[0]
    assert s["depth"][0, 0, 0] == 0 and s["depth"][0, 0, 1] == 10.0
    assert s["labels"].dtype == torch.int64 and s["meta"]["orig_size"] == (H, W)


def test_nyuv2_info() -> None:
    info = dataset_info("nyuv2")
    assert info.num_classes == 40 and info.class_names[0] == "wall" and info.class_names[39] == "otherprop"
    assert info.eval_crop == (45, 471, 41, 601) and info.reference_size == (640, 480)
    assert info.depth_cap == 10.0
    assert info.intrinsics[0] == pytest.approx(518.8579011745019)
    assert info.intrinsics[2] == pytest.approx(324.58244941119034)
    assert info.eval_crop_for(240, 320) == (22, 236, 20, 300)
    assert dataset_info("nyuv2", classes=13).class_names[4] == "floor"


def test_nyuv2_errors(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(DataError, match=f"{missing}: NYUv2 root not found"):
        load_dataset("nyuv2", missing)
    tmp_path.joinpath("empty").mkdir()
    with pytest.raises(DataError, match=r"nyu_depth_v2_labeled\.mat: NYUv2 labelled \.mat file not found"):
        load_dataset("nyuv2", tmp_path / "empty")
    bad = tmp_path / "bad"
    _, _, raw = _images()
    raw[2, 3, 4] = 900
    write_nyu(bad, raw=raw)
    ds = load_dataset("nyuv2", bad)
    with pytest.raises(
        DataError, match=r"nyu_depth_v2_labeled.mat: sample 3: raw label value 900 outside 0..894"
    ):
        ds[1]
    trunc = tmp_path / "trunc"
    trunc.mkdir()
    (trunc / "nyu_depth_v2_labeled.mat").write_bytes(b"MATLAB 5.0 MAT-file, not hdf5")
    with pytest.raises(DataError, match=r"nyu_depth_v2_labeled.mat: not a MATLAB v7.3 \(HDF5\) file"):
        load_dataset("nyuv2", trunc)
    nosplit = tmp_path / "nosplit"
    write_nyu(nosplit, splits=False)  # falls back to the official lists: indices beyond the 3 images
    with pytest.raises(
        DataError,
        match=r"nyu_depth_v2_labeled.mat: 3 images, but the official split needs index \d+ \(splits.mat missing\)",
    ):
        load_dataset("nyuv2", nosplit)


def test_nyuv2_pickles_for_workers_and_val_alias(tmp_path: Path) -> None:
    import pickle

    write_nyu(tmp_path)
    ds = load_dataset("nyuv2", tmp_path, split="val")
    first = ds[0]  # opens the HDF5 file in this process
    clone = pickle.loads(pickle.dumps(ds))  # what a DataLoader worker receives (no open h5py handle)
    assert clone._h5 is None and len(clone) == 1
    assert torch.equal(clone[0]["depth"], first["depth"]) and first["meta"]["id"] == "nyuv2/0002"
