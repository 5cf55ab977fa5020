"""The built-in synthetic dataset: contract, determinism, split disjointness, exact floor geometry."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cinet.data import dataset_info, load_dataset
from cinet.data.base import collate, denormalize
from cinet.data.synthetic import FLOOR, WALL
from cinet.errors import ConfigError

SIZE = (60, 80)


def test_sample_contract() -> None:
    ds = load_dataset("synthetic", split="train", size=SIZE, length=3)
    assert len(ds) == 3
    s = ds[0]
    assert s["image"].shape == (3, *SIZE) and s["image"].dtype == torch.float32
    assert s["depth"].shape == (1, *SIZE) and s["depth"].dtype == torch.float32
    assert s["labels"].shape == SIZE and s["labels"].dtype == torch.int64
    assert s["meta"]["id"] == "synthetic/train/000000"
    assert s["meta"]["orig_size"] == SIZE
    assert len(s["meta"]["intrinsics"]) == 4
    # normalised with ImageNet statistics: denormalising gives back 0..1 values
    img = denormalize(s["image"], ds.info.mean, ds.info.std)
    assert float(img.min()) >= 0 and float(img.max()) <= 1
    assert float(s["image"].min()) < 0  # normalised, not raw 0..1
    info = ds.info
    assert info.num_classes == 13 and info.class_names[4] == "floor" and info.class_names[11] == "wall"
    assert int(s["labels"].max()) < info.num_classes
    assert float(s["depth"].max()) <= info.depth_cap
    assert float(s["depth"].min()) > 0  # no holes by default
    batch = collate([ds[0], ds[1]])
    assert batch["image"].shape == (2, 3, *SIZE) and isinstance(batch["meta"], list)
    assert dataset_info("synthetic", size=SIZE) == info


def test_deterministic_per_seed_and_index() -> None:
    a = load_dataset("synthetic", size=SIZE, length=4, seed=3)
    b = load_dataset("synthetic", size=SIZE, length=4, seed=3)
    for i in (0, 3):
        sa, sb = a[i], b[i]
        for key in ("image", "depth", "labels"):
            assert torch.equal(sa[key], sb[key])
    assert not torch.equal(a[0]["depth"], a[1]["depth"])
    c = load_dataset("synthetic", size=SIZE, length=4, seed=4)
    assert not torch.equal(a[0]["depth"], c[0]["depth"])


def test_train_test_disjoint() -> None:
    tr = load_dataset("synthetic", split="train", size=SIZE, length=5)
    te = load_dataset("synthetic", split="test", size=SIZE, length=5)
    train_depths = [tr[i]["depth"] for i in range(5)]
    for j in range(5):
        d = te[j]["depth"]
        assert all(not torch.equal(d, t) for t in train_depths)
    assert (
        len(load_dataset("synthetic", split="test")) == 200
        and len(load_dataset("synthetic", split="train")) == 1000
    )


@pytest.mark.parametrize("index", [0, 1, 2])
def test_floor_depth_matches_analytic_plane(index: int) -> None:
    ds = load_dataset("synthetic", size=(48, 64), length=3, seed=11)
    s = ds[index]
    pose = s["meta"]["pose"]
    fx, fy, cx, cy = s["meta"]["intrinsics"]
    rot = np.array(pose["rotation"])
    height = pose["position"][1]
    assert height == pytest.approx(pose["height"])
    h, w = 48, 64
    u, v = np.meshgrid(np.arange(w), np.arange(h))
    ray_y = (
        rot[1, 0] * (u - cx) / fx + rot[1, 1] * (v - cy) / fy + rot[1, 2]
    )  # world-y of the ray (z_cam = 1)
    floor = s["labels"].numpy() == FLOOR
    assert floor.sum() > 20
    expected = -height / ray_y[floor]  # z-depth where the ray meets y = 0
    np.testing.assert_allclose(s["depth"][0].numpy()[floor], expected, rtol=1e-4)
    # the camera method agrees with meta
    cam = ds.camera(index)
    np.testing.assert_allclose(cam.rotation, rot)


def test_several_classes_per_image_and_all_over_a_few() -> None:
    ds = load_dataset("synthetic", size=SIZE, length=12)
    seen: set[int] = set()
    for i in range(len(ds)):
        labels = set(torch.unique(ds[i]["labels"]).tolist())
        assert {FLOOR, WALL} <= labels
        assert len(labels) >= 4, labels
        seen |= labels
    assert len(seen) >= 10


@pytest.mark.parametrize("size", [(17, 23), (96, 64)])
def test_any_size(size: tuple[int, int]) -> None:
    ds = load_dataset("synthetic", size=size, length=1)
    s = ds[0]
    assert s["image"].shape == (3, *size) and s["labels"].shape == size
    k = s["meta"]["intrinsics"]
    assert k[2] == pytest.approx((324.58244941119034 + 0.5) * size[1] / 640 - 0.5)


def test_holes_option() -> None:
    a = load_dataset("synthetic", size=SIZE, length=2, holes=True)[1]
    b = load_dataset("synthetic", size=SIZE, length=2)[1]
    holes = a["depth"] == 0
    assert holes.any() and not (b["depth"] == 0).any()
    assert torch.equal(a["depth"][~holes], b["depth"][~holes])
    assert torch.equal(a["labels"], b["labels"])


def test_bad_options() -> None:
    # the reader names its argument (ValueError); the build layer names the setting (ConfigError)
    with pytest.raises(ValueError, match=r"^colour: unknown option"):
        load_dataset("synthetic", colour=True)
    with pytest.raises(ValueError, match=r"^name: unknown dataset 'nyu'"):
        load_dataset("nyu")
    with pytest.raises(ValueError, match=r"^split: unknown split 'dev'"):
        load_dataset("synthetic", split="dev")
    from cinet.build.data import build_dataset
    from cinet.config import DataConfig

    norm = {"mean": (0.5,) * 3, "std": (0.5,) * 3}
    with pytest.raises(ConfigError, match=r"^data\.options\.colour: unknown option"):
        build_dataset(DataConfig(options={"colour": True}), "train", train=False, **norm)
    with pytest.raises(ConfigError, match=r"^data\.name: unknown dataset 'nyu'"):
        build_dataset(DataConfig(name="nyu"), "train", train=False, **norm)
    with pytest.raises(ConfigError, match=r"^synthetic: unknown split 'dev'"):
        build_dataset(DataConfig(), "dev", train=False, **norm)
    with pytest.raises(ConfigError, match=r"^data\.options\.size: must be at least \[8, 8\]"):
        build_dataset(DataConfig(options={"size": [4, 4]}), "train", train=False, **norm)


def test_info_roundtrip_and_all_names() -> None:
    import dataclasses

    from cinet.data import DatasetInfo

    for name, n in (("synthetic", 13), ("nyuv2", 40), ("sunrgbd", 37), ("cityscapes", 19)):
        info = dataset_info(name)
        assert info.num_classes == n and len(info.palette) == n and info.ignore_index == 255
        assert DatasetInfo.from_dict(dataclasses.asdict(info)) == info
    info = dataset_info("synthetic", size=(480, 640))
    assert info.intrinsics_for(640, 480) == pytest.approx(info.intrinsics)
    assert info.intrinsics_for(320, 240)[0] == pytest.approx(info.intrinsics[0] / 2)


def test_dataloader_with_collate() -> None:
    ds = load_dataset("synthetic", size=(24, 32), length=3)
    loader = torch.utils.data.DataLoader(ds, batch_size=2, collate_fn=collate)
    batch = next(iter(loader))
    assert batch["depth"].shape == (2, 1, 24, 32) and batch["labels"].dtype == torch.int64
    assert [m["id"] for m in batch["meta"]] == ["synthetic/train/000000", "synthetic/train/000001"]
