"""Predictor, visualisation, point clouds, figures (Fig. 7, Fig. 8 / Eq. 14) and checkpoint loading."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from cinet.checkpoint import load_model, save_model_checkpoint
from cinet.errors import CheckpointError, InputError
from cinet.inference import figures, pointcloud, visualize
from cinet.inference.predictor import Predictor, load_image
from cinet.utils import colors
from inference_fixtures import INTRINSICS, save_tiny_checkpoint, synthetic_image, tiny_info, tiny_model


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.ckpt")


@pytest.fixture(scope="module")
def predictor(ckpt: Path) -> Predictor:
    return Predictor.from_checkpoint(ckpt)


def _normalise(img: np.ndarray) -> torch.Tensor:
    info = tiny_info()
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255.0
    return (x - torch.tensor(info.mean).view(1, 3, 1, 1)) / torch.tensor(info.std).view(1, 3, 1, 1)


# --------------------------------------------------------------------------------------------- predictor


def test_predict_equals_model_on_normalised_input(predictor: Predictor) -> None:
    img = synthetic_image(40, 56)
    pred = predictor.predict(img, return_probs=True)
    with torch.inference_mode():
        out = predictor.model(_normalise(img))
    assert pred.depth.dtype == np.float32 and pred.depth.shape == (40, 56)
    np.testing.assert_allclose(pred.depth, out.depth[0, 0].numpy(), atol=1e-5)
    assert pred.labels.dtype == np.uint8
    np.testing.assert_array_equal(pred.labels, out.seg_logits[0].argmax(0).numpy())
    assert pred.probs is not None and pred.probs.shape == (5, 40, 56) and pred.probs.dtype == np.float32
    np.testing.assert_allclose(pred.probs.sum(0), 1.0, atol=1e-5)
    assert pred.output is None


def test_odd_size_is_reflect_padded_and_cropped(predictor: Predictor) -> None:
    img = synthetic_image(37, 53, seed=1)
    pred = predictor.predict(img)
    assert pred.geometry.padded == (40, 56) and pred.geometry.scaled == (37, 53)
    x = F.pad(_normalise(img), (0, 3, 0, 3), mode="reflect")
    with torch.inference_mode():
        out = predictor.model(x)
    np.testing.assert_allclose(pred.depth, out.depth[0, 0, :37, :53].numpy(), atol=1e-5)
    assert pred.depth.shape == (37, 53) and pred.labels.shape == (37, 53)


def test_resize_mode_and_max_side(ckpt: Path) -> None:
    img = synthetic_image(80, 112)
    p = Predictor.from_checkpoint(ckpt, max_side=56)
    pred = p.predict(img)
    assert (
        pred.geometry.scaled == (40, 56) and pred.depth.shape == (80, 112) and pred.labels.shape == (80, 112)
    )
    r = Predictor.from_checkpoint(ckpt, mode="resize").predict(synthetic_image(37, 53))
    assert r.geometry.padded == r.geometry.scaled == (40, 56) and r.depth.shape == (37, 53)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "LA", "I;16", "CMYK"])
def test_any_pil_mode(predictor: Predictor, mode: str) -> None:
    rgb = Image.fromarray(synthetic_image(37, 53, seed=2))
    if mode == "I;16":
        img = Image.fromarray((np.asarray(rgb.convert("L"), dtype=np.uint16) * 200).astype(np.uint16))
    else:
        img = rgb.convert(mode)
    pred = predictor.predict(img)
    assert pred.image.shape == (37, 53, 3) and pred.image.dtype == np.uint8
    assert pred.depth.shape == (37, 53) and np.isfinite(pred.depth).all() and (pred.depth > 0).all()


def test_greyscale_and_rgba_arrays() -> None:
    grey = synthetic_image(9, 11)[..., 0]
    np.testing.assert_array_equal(load_image(grey), np.repeat(grey[..., None], 3, axis=2))
    rgba = np.dstack([synthetic_image(9, 11), np.full((9, 11), 7, np.uint8)])
    np.testing.assert_array_equal(load_image(rgba), rgba[..., :3])
    with pytest.raises(InputError, match="uint8"):
        load_image(np.zeros((4, 4, 3), np.float32))


def test_predict_batch_equals_single(predictor: Predictor) -> None:
    images = [synthetic_image(40, 56, 3), synthetic_image(37, 53, 4), synthetic_image(40, 56, 5)]
    batch = predictor.predict_batch(images, batch_size=2)
    assert len(batch) == 3
    for img, got in zip(images, batch):
        one = predictor.predict(img)
        assert got.depth.shape == img.shape[:2]
        np.testing.assert_allclose(got.depth, one.depth, atol=1e-5)
        np.testing.assert_array_equal(got.labels, one.labels)


def test_non_image_file_names_the_file(predictor: Predictor, tmp_path: Path) -> None:
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    with pytest.raises(InputError, match=r"notes\.png"):
        predictor.predict(bad)


# --------------------------------------------------------------------------------------------- visualise


def test_depth_png_roundtrip_within_1mm(tmp_path: Path) -> None:
    depth = np.array([[0.0, 0.0004, 1.23456], [np.nan, 65.6, 9.9995]], dtype=np.float32)
    png = visualize.depth_to_uint16(depth)
    assert png.dtype == np.uint16
    assert png.tolist() == [[0, 1, 1235], [0, 65535, 10000]]  # 0 invalid, min 1 mm, saturated at 65.535 m
    rng = np.random.default_rng(0)
    d = rng.uniform(0.1, 60.0, (13, 17)).astype(np.float32)
    visualize.save_png(tmp_path / "d.png", visualize.depth_to_uint16(d))
    back = np.asarray(Image.open(tmp_path / "d.png"))
    assert back.dtype == np.uint16
    assert np.abs(visualize.uint16_to_depth(back) - d).max() <= 0.0005 + 1e-6


def test_colorize_labels_uses_palette_and_void() -> None:
    palette = [[10, 20, 30], [40, 50, 60]]
    rgb = colors.colorize_labels(np.array([[0, 1, 255]], np.uint8), palette, void_color=(1, 2, 3))
    assert rgb.tolist() == [[[10, 20, 30], [40, 50, 60], [1, 2, 3]]]


def test_colorize_depth_range() -> None:
    rgb, (lo, hi) = colors.colorize_depth(np.array([[1.0, 2.0], [3.0, 0.0]]), cmap="viridis")
    assert (lo, hi) == (1.0, 3.0) and rgb.dtype == np.uint8
    lut = colors.colormap_lut("viridis")
    assert rgb[0, 0].tolist() == lut[0].tolist() and rgb[1, 0].tolist() == lut[255].tolist()
    assert rgb[1, 1].tolist() == [0, 0, 0]  # invalid


# --------------------------------------------------------------------------------------------- point clouds


def test_backprojection_by_hand() -> None:
    depth = np.zeros((4, 6), np.float32)
    depth[2, 5] = 2.0  # v = 2 (row), u = 5 (column)
    depth[0, 0] = 4.0
    points, mask = pointcloud.backproject(depth, (10.0, 20.0, 2.5, 1.5))
    assert mask.sum() == 2
    # row-major: (0,0) first. X = (u - cx) z / fx, Y = (v - cy) z / fy, Z = z
    np.testing.assert_allclose(points[0], [(0 - 2.5) * 4 / 10, (0 - 1.5) * 4 / 20, 4.0], rtol=1e-6)
    np.testing.assert_allclose(points[1], [(5 - 2.5) * 2 / 10, (2 - 1.5) * 2 / 20, 2.0], rtol=1e-6)


@pytest.mark.parametrize("binary", [True, False])
def test_ply_roundtrip(tmp_path: Path, binary: bool) -> None:
    depth = np.full((3, 4), 2.0, np.float32)
    depth[1, 1] = 0.0  # invalid: no point
    rgb = np.arange(36, dtype=np.uint8).reshape(3, 4, 3)
    labels = np.arange(12, dtype=np.uint8).reshape(3, 4)
    cloud = pointcloud.point_cloud(depth, rgb, labels, (2.0, 2.0, 1.5, 1.0))
    path = pointcloud.write_ply(tmp_path / "c.ply", cloud, binary=binary)
    assert path.read_bytes().startswith(b"ply\nformat " + (b"binary_little_endian" if binary else b"ascii"))
    back = pointcloud.read_ply(path)
    assert len(back) == 11
    p = back[np.nonzero(back["label"] == 7)[0][0]]  # pixel v=1, u=3
    np.testing.assert_allclose([p["x"], p["y"], p["z"]], [(3 - 1.5) * 2 / 2, 0.0, 2.0], atol=1e-6)
    assert [p["red"], p["green"], p["blue"]] == rgb[1, 3].tolist()


def test_intrinsics_for_scales_with_pixel_centres() -> None:
    fx, fy, cx, cy = tiny_info().intrinsics_for(112, 80)
    assert (fx, fy) == (INTRINSICS[0] * 2, INTRINSICS[1] * 2)
    assert (cx, cy) == ((INTRINSICS[2] + 0.5) * 2 - 0.5, (INTRINSICS[3] + 0.5) * 2 - 0.5)
    with pytest.raises(InputError, match="--intrinsics"):
        pointcloud.parse_intrinsics("1,2,3")


# --------------------------------------------------------------------------------------------- figures


@pytest.mark.parametrize("size", [(40, 56), (37, 53)])
def test_attention_map_is_the_sum_row_at_feature_size(predictor: Predictor, size: tuple[int, int]) -> None:
    img = synthetic_image(*size, seed=6)
    amap = figures.attention_map(predictor, img, 20, 10)
    pred = predictor.predict(img, return_output=True)
    att = pred.output.attention
    assert amap.shape == att.size == (5, 7)
    # pixel (x=20, y=10) -> cell column floor(20.5 * 7 / 56) = 2, row floor(10.5 * 5 / 40) = 1 (no resize)
    expected = torch.sigmoid(att.logits()[0, 1 * 7 + 2]).view(5, 7).numpy()
    np.testing.assert_allclose(amap, expected, atol=1e-6)
    other = figures.attention_map(predictor, img, 50, 35)
    assert not np.allclose(amap, other)
    overlay, raw = figures.attention_figure(pred, 20, 10)
    assert overlay.shape == (*size, 3) and overlay.dtype == np.uint8 and raw.shape == (5, 7)


def test_attention_pixel_outside_image(predictor: Predictor) -> None:
    with pytest.raises(InputError, match="outside"):
        figures.attention_map(predictor, synthetic_image(40, 56), 56, 0)


def test_shared_features_fig8(predictor: Predictor) -> None:
    pred = predictor.predict(synthetic_image(37, 53, seed=7), return_output=True)
    maps = figures.shared_feature_maps(pred)
    assert [m[0].shape for m in maps] == [(5, 7), (10, 14), (19, 27)]  # padding (40x56 input) cropped
    for f_d, f_s in maps:
        for m in (f_d, f_s):
            assert m.min() == pytest.approx(0.0) and m.max() == pytest.approx(1.0)
    # F_d of stage 1 is the channel sum of what the FSM adds to the depth branch (Eq. 14)
    f_d = pred.output.shared_features[0][0][0].sum(0)
    f_d = (f_d - f_d.min()) / (f_d.max() - f_d.min())
    np.testing.assert_allclose(maps[0][0], f_d.numpy(), atol=1e-5)
    imgs = figures.feature_figures(pred)
    assert imgs[2][1].shape == (37, 53) and imgs[2][1].dtype == np.uint8


def test_figures_need_sum_and_sharing(tmp_path: Path) -> None:
    base = Predictor.from_checkpoint(save_tiny_checkpoint(tmp_path / "b.ckpt", variant="baseline"))
    with pytest.raises(InputError, match="no SUM"):
        figures.attention_map(base, synthetic_image(40, 56), 1, 1)
    with pytest.raises(InputError, match="feature-sharing"):
        figures.shared_feature_maps(base.predict(synthetic_image(40, 56), return_output=True))


# --------------------------------------------------------------------------------------------- checkpoints


def test_load_model_roundtrip(ckpt: Path) -> None:
    model, payload = load_model(ckpt)
    ref, _ = tiny_model()
    x = torch.randn(1, 3, 40, 56)
    with torch.inference_mode():
        torch.testing.assert_close(model(x).depth, ref(x).depth)
    assert payload.model["variant"] == "cinet" and payload.dataset["name"] == "toy"
    assert not model.training


@pytest.mark.parametrize(
    ("weights", "match"),
    [
        ({"num_classes": 7}, r"class count differs \(weights have 7 classes, model has 5\)"),
        ({"variant": "baseline"}, r"variant differs"),
        ({"variant": "lsu"}, r"variant differs .*sharing lsu"),
        ({"encoder": "resnet34"}, r"encoder differs \(weights are resnet34, model is resnet18\)"),
        ({"channels": 16}, r"differ in shape"),
    ],
)
def test_mismatched_checkpoint_says_what_differs(tmp_path: Path, weights: dict, match: str) -> None:
    variant = weights.pop("variant", "cinet")
    model, _ = tiny_model(variant, **weights)
    _, kwargs = tiny_model()  # the checkpoint claims the default tiny cinet
    path = save_model_checkpoint(tmp_path / "m.ckpt", model, kwargs, tiny_info())
    with pytest.raises(CheckpointError, match=match) as err:
        load_model(path)
    msg = str(err.value)
    assert msg.startswith(str(path)) and "\n" not in msg


def test_truncated_checkpoint(ckpt: Path, tmp_path: Path) -> None:
    data = ckpt.read_bytes()
    bad = tmp_path / "cut.ckpt"
    bad.write_bytes(data[: len(data) // 3])
    with pytest.raises(CheckpointError, match="cannot read checkpoint") as err:
        load_model(bad)
    assert str(err.value).startswith(str(bad)) and "\n" not in str(err.value)
