"""Intrinsics conventions (issue #23, kind 4): every source gives ``(fx, fy, cx, cy)`` for 0-based pixel centres,
the convention of :func:`cinet.inference.pointcloud.backproject`. The MATLAB toolboxes of NYUv2 and SUN RGB-D
back-project with ``meshgrid(1:W, 1:H)``; the references here re-implement that formula in numpy, so the
expected points come from the toolbox, not from cinet."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from cinet.data import dataset_info, load_dataset, load_meta
from cinet.data.transforms import hflip
from cinet.inference.pointcloud import backproject


def toolbox_points(depth: np.ndarray, fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    """``read_3d_pts_general.m`` / NYU ``depth_plane2depth_world.m``: x = (xx - cx) z / fx with xx = 1..W."""
    h, w = depth.shape
    xx, yy = np.meshgrid(np.arange(1, w + 1), np.arange(1, h + 1))
    valid = depth > 0
    z = depth[valid]
    return np.stack([(xx[valid] - cx) * z / fx, (yy[valid] - cy) * z / fy, z], axis=1)


def test_sunrgbd_intrinsics_back_project_like_the_toolbox(tmp_path: Path) -> None:
    from test_data_sunrgbd import make_root

    make_root(tmp_path)
    sample = load_dataset("sunrgbd", tmp_path, split="train")[0]
    depth = sample["depth"][0].numpy().astype(np.float64)
    ours, _ = backproject(depth, sample["meta"]["intrinsics"])
    # intrinsics.txt of the fixture: fx = fy = 529.5, cx = 365, cy = 265 (toolbox, 1-based)
    ref = toolbox_points(depth, 529.5, 529.5, 365.0, 265.0)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-5)


def test_nyu_intrinsics_back_project_like_the_toolbox() -> None:
    info = dataset_info("nyuv2")
    k = load_meta("nyuv2")["intrinsics"]
    assert info.reference_size == (640, 480)
    rng = np.random.default_rng(0)
    depth = rng.uniform(0.5, 9.0, size=(480, 640))
    ours, _ = backproject(depth, info.intrinsics)
    ref = toolbox_points(depth, k["fx"], k["fy"], k["cx"], k["cy"])  # camera_params.m values, 1-based
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-4)
    assert info.intrinsics[2] == pytest.approx(324.5824, abs=1e-3)  # 325.5824 in camera_params.m


def test_synthetic_world_is_rendered_with_its_own_intrinsics() -> None:
    """The renderer casts the ray of pixel (u, v) through (u - cx) / fx: the floor, back-projected with the
    sample's intrinsics and turned into the room by the camera's rotation, lies at one height (a principal
    point half a pixel off tilts it: 4 mm spread here)."""
    ds = load_dataset("synthetic", split="test", length=2, size=[48, 64])
    floor = ds.info.class_names.index("floor")
    for s in (ds[0], ds[1]):
        depth = s["depth"][0].numpy().astype(np.float64)
        labels = s["labels"].numpy()
        pts, mask = backproject(np.where(labels == floor, depth, 0.0), s["meta"]["intrinsics"])
        assert mask.sum() > 50
        rotation = np.array(s["meta"]["pose"]["rotation"])  # camera -> room
        height = (pts @ rotation.T)[:, 1]
        assert height.std() < 1e-3


def test_flip_keeps_the_back_projection() -> None:
    """A point at X metres seen in the mirrored image back-projects to -X with the mirrored intrinsics."""
    h, w = 5, 9
    k = (100.0, 100.0, 3.3, 2.0)
    depth = torch.zeros(1, h, w)
    depth[0, 2, 6] = 2.0
    out = hflip({"image": torch.zeros(3, h, w), "depth": depth, "meta": {"intrinsics": k}})
    p0, _ = backproject(depth[0].numpy(), k)
    p1, _ = backproject(out["depth"][0].numpy(), out["meta"]["intrinsics"])
    np.testing.assert_allclose(p1[0], p0[0] * np.array([-1.0, 1.0, 1.0]), atol=1e-6)


def test_a_photo_of_another_aspect_ratio_gets_no_stretched_intrinsics() -> None:
    """A portrait photo is not the landscape camera's frame resized: scaling x and y apart stretched its point
    cloud (x1.33 / x0.75); now there are no default intrinsics for it, and the message says why."""
    info = dataset_info("nyuv2")  # 640x480 camera
    assert info.intrinsics_for(320, 240) == pytest.approx((info.intrinsics[0] / 2, info.intrinsics[1] / 2,
                                                           (info.intrinsics[2] + 0.5) / 2 - 0.5,
                                                           (info.intrinsics[3] + 0.5) / 2 - 0.5))  # fmt: skip
    assert info.intrinsics_for(321, 240) is not None  # rounding of a resize
    assert info.intrinsics_for(480, 640) is None and info.intrinsics_for(640, 360) is None
    assert "480x640 image does not have the aspect ratio" in info.intrinsics_note(480, 640)


def test_predict_ply_refuses_a_photo_of_another_aspect_before_writing(tmp_path: Path, capsys) -> None:
    from PIL import Image

    from cinet.cli import main
    from inference_fixtures import save_tiny_checkpoint, synthetic_image

    ckpt = save_tiny_checkpoint(tmp_path / "m.ckpt")  # camera 56x40 (landscape)
    (tmp_path / "in").mkdir()
    Image.fromarray(synthetic_image(40, 56, 1)).save(tmp_path / "in" / "a_wide.png")
    Image.fromarray(synthetic_image(56, 40, 2)).save(tmp_path / "in" / "b_tall.png")
    out = tmp_path / "out"
    assert main(["predict", "--checkpoint", str(ckpt), str(tmp_path / "in"), "--ply", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {tmp_path / 'in' / 'b_tall.png'}: the 40x56 image")
    assert not out.exists() or not any(out.iterdir())  # nothing written
    args = ["predict", "--checkpoint", str(ckpt), str(tmp_path / "in"), "--ply", "--out", str(out)]
    assert main([*args, "--intrinsics", "50,48,19.5,27.5"]) == 0  # the user's camera: fine
