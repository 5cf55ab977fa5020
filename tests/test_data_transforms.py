"""Joint transforms: alignment of image / depth / labels, depth scaling, fill values, intrinsics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cinet.data import load_dataset
from cinet.data.transforms import (
    Normalize,
    RandomCrop,
    RandomRotation,
    RandomScale,
    Resize,
    build_transforms,
    hflip,
    rotate,
)

H, W = 48, 64
K = (50.0, 52.0, 31.5, 23.5)


def pattern() -> dict:
    """Blocks of 8x8 pixels; label, depth and image are all functions of the block id."""
    yy, xx = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    labels = ((yy // 8) * 3 + (xx // 8) * 5) % 13
    depth = (1.0 + 0.5 * labels.float())[None]
    image = torch.stack([labels.float() / 20, 1 - labels.float() / 20, torch.full((H, W), 0.5)])
    return {"image": image, "depth": depth, "labels": labels.long(), "meta": {"id": "p", "intrinsics": K}}


def interior(labels: torch.Tensor) -> torch.Tensor:
    """Pixels whose 3x3 neighbourhood has one label (away from block edges)."""
    lab = labels.float()[None, None]
    mx = torch.nn.functional.max_pool2d(lab, 3, 1, 1)
    mn = -torch.nn.functional.max_pool2d(-lab, 3, 1, 1)
    return ((mx == mn)[0, 0]) & (labels != 255)


@pytest.mark.parametrize("s", [2.0, 1.5, 0.75])
def test_scale_divides_depth_and_keeps_alignment(s: float) -> None:
    out = RandomScale(s, s)(pattern())
    nh, nw = round(H * s), round(W * s)
    assert (
        out["image"].shape == (3, nh, nw)
        and out["depth"].shape == (1, nh, nw)
        and out["labels"].shape == (nh, nw)
    )
    lab = out["labels"]
    # depth everywhere is the pattern's depth of the label at the same pixel, divided by s
    torch.testing.assert_close(out["depth"][0], (1.0 + 0.5 * lab.float()) / s, rtol=0, atol=1e-6)
    inner = interior(lab)
    assert inner.sum() > 0.3 * nh * nw
    torch.testing.assert_close(out["image"][0][inner], lab.float()[inner] / 20, rtol=0, atol=1e-4)
    fx, fy, cx, cy = out["meta"]["intrinsics"]
    assert fx == pytest.approx(K[0] * nw / W) and cx == pytest.approx((K[2] + 0.5) * nw / W - 0.5)
    assert fy == pytest.approx(K[1] * nh / H) and cy == pytest.approx((K[3] + 0.5) * nh / H - 0.5)


def test_rotation_fills_invalid_and_ignore() -> None:
    out = rotate(pattern(), 30.0)
    lab, dep = out["labels"], out["depth"][0]
    assert lab[0, 0] == 255 and dep[0, 0] == 0 and lab[-1, -1] == 255 and dep[-1, -1] == 0
    assert (lab == 255).sum() > 100
    assert torch.equal(lab == 255, dep == 0)  # same nearest sampling for both
    valid = lab != 255
    torch.testing.assert_close(dep[valid], 1.0 + 0.5 * lab[valid].float())
    inner = interior(lab)
    torch.testing.assert_close(out["image"][0][inner], lab.float()[inner] / 20, rtol=0, atol=1e-4)
    torch.manual_seed(0)
    r = RandomRotation(10)(pattern())
    assert r["labels"].shape == (H, W)


def test_flip_twice_is_identity() -> None:
    p = pattern()
    once = hflip(p)
    assert not torch.equal(once["labels"], p["labels"])
    assert torch.equal(once["labels"][:, 0], p["labels"][:, -1])
    assert once["meta"]["intrinsics"][2] == W - 1 - K[2]
    twice = hflip(once)
    for key in ("image", "depth", "labels"):
        assert torch.equal(twice[key], p[key])
    assert twice["meta"]["intrinsics"] == K


def test_crop_pads_with_invalid_and_ignore() -> None:
    p = pattern()
    out = RandomCrop((H + 10, W + 6))(p)
    assert out["labels"].shape == (H + 10, W + 6)
    assert torch.equal(out["labels"][:H, :W], p["labels"]) and torch.equal(
        out["depth"][:, :H, :W], p["depth"]
    )
    assert (out["labels"][H:] == 255).all() and (out["labels"][:, W:] == 255).all()
    assert (out["depth"][:, H:] == 0).all() and (out["depth"][:, :, W:] == 0).all()
    assert (out["image"][:, H:] == 0).all()
    torch.manual_seed(3)
    c = RandomCrop((20, 30))(p)
    _, _, cx, cy = c["meta"]["intrinsics"]
    top, left = int(K[3] - cy), int(K[2] - cx)
    assert torch.equal(c["labels"], p["labels"][top : top + 20, left : left + 30])
    assert torch.equal(c["depth"], p["depth"][:, top : top + 20, left : left + 30])


def test_eval_policy_and_normalize_flag() -> None:
    r = Resize((24, 32))(pattern())
    assert r["depth"].shape == (1, 24, 32) and r["meta"]["intrinsics"][0] == pytest.approx(K[0] / 2)
    n = Normalize(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))(pattern())
    assert n["meta"]["normalized"] is True
    torch.testing.assert_close(n["image"][2], torch.full((H, W), (0.5 - 0.406) / 0.225))
    # a dataset does not normalise twice when the transform already did
    a = load_dataset("synthetic", size=(24, 32), length=1)[0]
    b = load_dataset(
        "synthetic",
        size=(24, 32),
        length=1,
        transform=build_transforms(False, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)),
    )[0]
    assert torch.equal(a["image"], b["image"]) and "normalized" not in b["meta"]


def test_train_pipeline_on_synthetic() -> None:
    tf = build_transforms(
        True,
        crop_size=(32, 40),
        scale_range=(1.0, 1.5),
        rotation=5,
        flip=True,
        color_jitter=0.3,
        mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225),
    )
    ds = load_dataset("synthetic", size=(36, 48), length=2, transform=tf)
    s = ds[0]
    assert (
        s["image"].shape == (3, 32, 40) and s["depth"].shape == (1, 32, 40) and s["labels"].shape == (32, 40)
    )
    lab = s["labels"]
    assert set(np.unique(lab.numpy())) <= set(range(13)) | {255}
    assert torch.equal(lab == 255, s["depth"][0] == 0)  # synthetic depth has no holes: invalid <=> uncovered
