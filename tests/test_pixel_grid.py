"""One pixel grid for every resize of a map (issue #23, kind 1): labels, depth, masks and the attention targets are
resized by the nearest pixel centre (``nearest-exact``), the grid of the bilinear image resize and of
``scale_intrinsics``. Expected values come from geometry (pixel ``j`` of an output of width ``w`` covers
``[j, j + 1) * W / w`` of the input), never from the code under test."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cinet.data.info import scale_intrinsics
from cinet.data.transforms import RandomScale, Resize, applied_scale, resize_map
from cinet.preprocess import Geometry

# (input width, edge column, output width): x0.5, x1.3, x2, a 4032-wide photo to 320, odd ratios
EDGE_CASES = [
    (8, 3, 4),
    (10, 3, 13),
    (6, 1, 12),
    (4032, 1001, 320),
    (4032, 2017, 320),
    (37, 11, 23),
    (23, 9, 37),
]


def first_label_one(out_width: int, in_width: int, edge: int) -> int:
    """First output column whose centre lies right of the label edge at input x = ``edge`` (continuous
    coordinates, pixel i covering [i, i + 1)): centre of output j is at (j + 0.5) * in / out."""
    return math.ceil(edge * out_width / in_width - 0.5)


@pytest.mark.parametrize(("in_w", "edge", "out_w"), EDGE_CASES)
def test_label_edge_stays_where_the_image_edge_is(in_w: int, edge: int, out_w: int) -> None:
    labels = torch.zeros(2, in_w, dtype=torch.int64)
    labels[:, edge:] = 1
    out = resize_map(labels[None], (2, out_w))[0]
    assert out.dtype == torch.int64
    first = int(torch.nonzero(out[0])[0])
    assert first == first_label_one(out_w, in_w, edge)


def test_depth_and_validity_maps_use_the_same_grid() -> None:
    depth = torch.arange(10, dtype=torch.float32).repeat(3, 1)[None]  # [1,3,10] value = column
    out = resize_map(depth, (3, 4))
    # output column j looks at input column floor((j + 0.5) * 10 / 4) = 1, 3, 6, 8
    assert out[0, 0].tolist() == [1.0, 3.0, 6.0, 8.0]
    valid = resize_map(depth > 2.5, (3, 4))
    assert valid.dtype == torch.bool and valid[0, 0].tolist() == [False, True, True, True]


def test_resize_transform_moves_maps_with_the_image() -> None:
    """Resize of a whole sample: a vertical step in the image and the label/depth edge stay together."""
    h, w, edge = 6, 20, 7
    image = torch.zeros(3, h, w)
    image[:, :, edge:] = 1.0
    labels = torch.zeros(h, w, dtype=torch.int64)
    labels[:, edge:] = 1
    depth = torch.ones(1, h, w)
    depth[:, :, edge:] = 2.0
    for out_w in (26, 31, 47):  # upscaling: the bilinear image is not blurred by an antialias filter
        out = Resize((h, out_w))({"image": image, "labels": labels, "depth": depth, "meta": {}})
        row = out["image"][0, 0]
        image_edge = int(torch.nonzero(row >= 0.5)[0])  # first column at least half bright
        label_edge = int(torch.nonzero(out["labels"][0])[0])
        depth_edge = int(torch.nonzero(out["depth"][0, 0] == 2.0)[0])
        assert label_edge == depth_edge == first_label_one(out_w, w, edge)
        assert abs(label_edge - image_edge) <= 1  # the image's 0.5-crossing may fall on either side of a tie


def _floor_depth(h: int, w: int, k: tuple[float, float, float, float], height: float) -> torch.Tensor:
    """Depth of a horizontal floor ``height`` metres below a level pinhole camera (0 above the horizon)."""
    _fx, fy, _cx, cy = k
    v = torch.arange(h, dtype=torch.float64)[:, None].expand(h, w)
    ray = (v - cy) / fy
    return torch.where(ray > 0.25, height / ray.clamp(min=1e-9), torch.zeros_like(ray)).float()[None]


@pytest.mark.parametrize("scale", [1.3, 0.7, 0.45])
def test_floor_back_projection_after_a_resize_keeps_the_floor_height(scale: float) -> None:
    """The issue's measurement: a floor 1.5 m below the camera, resized, back-projected with the resized
    intrinsics. ``nearest`` put it 11 mm (x1.3) / 20 mm (x0.7) off on average; by pixel centres about 1 mm."""
    h, w, cam = 120, 160, 1.5
    k = (145.0, 145.0, 79.5, 59.5)
    depth = _floor_depth(h, w, k, cam)
    sample = {"image": torch.zeros(3, h, w), "depth": depth, "meta": {"intrinsics": k}}
    nh, nw = round(h * scale), round(w * scale)
    out = Resize((nh, nw))(sample)
    fx, fy, cx, cy = out["meta"]["intrinsics"]
    assert (fx, fy, cx, cy) == pytest.approx(scale_intrinsics(k, (w, h), (nw, nh)))
    d = out["depth"][0].double()
    v = torch.arange(nh, dtype=torch.float64)[:, None].expand(nh, nw)
    valid = d > 0
    y = (v - cy) * d / fy  # the floor's height below the camera, per pixel
    mean_error_mm = float((y[valid] - cam).mean()) * 1000
    assert abs(mean_error_mm) < 3.0


def test_attention_targets_take_the_label_at_each_feature_cell_centre() -> None:
    labels = torch.arange(8).repeat(8, 1)[None]  # [1,8,8] value = column
    small = resize_map(labels, (2, 2))
    # cell j of 2 covers input columns [4j, 4j + 4): its centre pixel is floor((j + 0.5) * 4) = 2, 6
    assert small.tolist() == [[[2, 6], [2, 6]]]
    assert resize_map(labels, (8, 8)) is labels


def test_prediction_labels_restored_by_pixel_centres() -> None:
    geom = Geometry(orig=(5, 5), scaled=(2, 2), padded=(2, 2))
    labels = torch.tensor([[[[0.0, 1.0], [0.0, 1.0]]]])
    out = geom.restore(labels, mode="nearest")[0, 0]
    # output column j of 5 looks at input floor((j + 0.5) * 2 / 5) = 0, 0, 1, 1, 1
    assert out[0].tolist() == [0.0, 0.0, 1.0, 1.0, 1.0]


def test_random_scale_divides_depth_by_the_scale_it_applied() -> None:
    sample = {"image": torch.zeros(3, 7, 9), "depth": torch.ones(1, 7, 9), "meta": {}}
    out = RandomScale(1.3, 1.3)(sample)
    assert tuple(out["depth"].shape[-2:]) == (9, 12)  # round(9.1), round(11.7)
    # applied: 9/7 down, 12/9 across; their geometric mean sqrt(12/7), not the drawn 1.3
    assert float(out["depth"][0, 0, 0]) == pytest.approx(1 / math.sqrt(12 / 7), rel=1e-6)
    assert applied_scale((7, 9), (9, 12)) == pytest.approx(math.sqrt(12 / 7))
    assert applied_scale((416, 544), (416, 544)) == 1.0


def test_nearest_exact_matches_pil_nearest() -> None:
    """Pillow's NEAREST (the reference of image libraries) samples by pixel centres too."""
    from PIL import Image

    rng = np.random.default_rng(0)
    arr = rng.integers(0, 40, size=(13, 29), dtype=np.uint8)
    for size in ((7, 11), (20, 50), (5, 29)):
        ref = np.asarray(Image.fromarray(arr).resize((size[1], size[0]), Image.Resampling.NEAREST))
        ours = resize_map(torch.from_numpy(arr.astype(np.int64))[None], size)[0].numpy()
        assert np.array_equal(ours, ref)
