"""The views of the ``cinet serve`` page (:mod:`cinet.inference.page`) and their helpers in ``visualize``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cinet.errors import InputError
from cinet.inference import figures, page, pointcloud, visualize
from cinet.inference.files import FileOptions
from cinet.inference.predictor import Predictor
from cinet.utils import colors
from inference_fixtures import INTRINSICS, synthetic_image, tiny_info, tiny_model


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    model, kwargs = tiny_model()
    return Predictor(model, tiny_info(), model_kwargs=kwargs)


def test_class_shares_counts_classes_present_most_frequent_first() -> None:
    labels = np.array(
        [[2, 2, 2, 0], [0, 255, 4, 4], [2, 2, 4, 7]], dtype=np.uint8
    )  # 255, 7: not classes of 5
    assert visualize.class_shares(labels, 5) == [(2, 5 / 12), (4, 3 / 12), (0, 2 / 12)]


def test_depth_colorbar_runs_from_vmin_to_vmax_colour() -> None:
    bar = visualize.depth_colorbar(1.0, 4.0, 200, "magma", height=30)
    lut = colors.colormap_lut("magma")
    assert bar.shape == (30, 200, 3) and bar.dtype == np.uint8
    np.testing.assert_array_equal(bar[0, 0], lut[0])
    np.testing.assert_array_equal(bar[0, -1], lut[255])
    np.testing.assert_array_equal(bar[0, 100], lut[128])  # 2.5075 m of 1..4 m -> index 128
    assert (bar[20:] < 128).any()  # the labels are drawn (dark text on white)


def test_viewer_cloud_is_the_predict_cloud_subsampled_and_turned_y_up(predictor: Predictor) -> None:
    pred = predictor.predict(synthetic_image(40, 56))
    full = pointcloud.point_cloud(pred.depth, pred.image, pred.labels, INTRINSICS)
    assert len(full) == 40 * 56
    view = page.viewer_cloud(pred, predictor.info.palette, INTRINSICS, "image", max_points=600)
    sub = pointcloud.point_cloud(pred.depth, pred.image, pred.labels, INTRINSICS, stride=2)  # 560 <= 600
    assert len(view) == 20 * 28
    np.testing.assert_array_equal(view["x"], sub["x"])
    np.testing.assert_array_equal(view["y"], -sub["y"])
    np.testing.assert_array_equal(view["z"], -sub["z"])
    np.testing.assert_array_equal(view["red"], sub["red"])
    by_class = page.viewer_cloud(pred, predictor.info.palette, INTRINSICS, "class", max_points=10_000)
    assert len(by_class) == 40 * 56  # stride 1 when everything fits
    seg = colors.colorize_labels(pred.labels, predictor.info.palette)
    np.testing.assert_array_equal(by_class["green"], seg[..., 1].ravel())
    with pytest.raises(ValueError, match="colouring"):
        page.viewer_cloud(pred, predictor.info.palette, INTRINSICS, "depth")


def test_keep_attention_only_draws_the_same_attention(predictor: Predictor) -> None:
    pred = predictor.predict(synthetic_image(37, 53), return_output=True)
    slim = page.keep_attention_only(pred)
    assert (
        slim.output is not None and slim.output.depth_features == [] and slim.output.seg_logits.numel() == 0
    )
    np.testing.assert_array_equal(
        page.attention_view(slim, 10, 30), figures.attention_figure(pred, 10, 30)[0]
    )
    with pytest.raises(InputError, match="outside"):
        page.attention_view(slim, 53, 0)


def test_has_attention_only_with_a_sum() -> None:
    for variant, expected in [("cinet", True), ("sum", True), ("fsm", False), ("baseline", False)]:
        model, kwargs = tiny_model(variant)
        assert Predictor(model, tiny_info(), model_kwargs=kwargs).has_attention is expected


def test_predict_page_names_the_upload_not_its_temporary_path(predictor: Predictor, tmp_path: Path) -> None:
    upload = tmp_path / "3f9c" / "cached_name.png"
    upload.parent.mkdir()
    upload.write_bytes(b"not a picture")
    with pytest.raises(InputError) as info:
        page.predict_page(predictor, upload, tmp_path, FileOptions(), name="room.png")
    assert str(info.value).startswith("room.png: cannot read image") and str(tmp_path) not in str(info.value)


def test_predict_page_without_sum_keeps_no_output(tmp_path: Path) -> None:
    from PIL import Image

    model, kwargs = tiny_model("baseline")
    pred_ = Predictor(model, tiny_info(), model_kwargs=kwargs)
    path = tmp_path / "room.png"
    Image.fromarray(synthetic_image(40, 56)).save(path)
    res = page.predict_page(pred_, path, tmp_path, FileOptions())
    assert res.prediction.output is None and res.stem == "room"
    assert [p.name for p in res.downloads][-1] == "room.ply" and len(res.downloads) == 7
    assert set(res.viewer) == {"image", "class"} and all(p.is_file() for p in res.viewer.values())
