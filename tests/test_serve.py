"""``cinet serve`` end to end: one server on a free loopback port with a tiny checkpoint, called with gradio_client.

The page's outputs and downloads are checked against :class:`Predictor` and ``cinet predict`` on a real NYUv2
photo (``../shared/data/nyu_samples``; skipped when absent); a corrupt upload gets one clear message and the
server keeps serving; 20 concurrent requests are all answered, each with its own image, one at a time.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cinet.cli import main
from cinet.inference import figures, pointcloud, visualize
from cinet.inference.predictor import Predictor, load_image
from cinet.utils import colors

NYU_SAMPLES = Path(__file__).parents[2] / "shared" / "data" / "nyu_samples"
PHOTO = NYU_SAMPLES / "000464.png"
MAX_SIDE = 160  # network input of the test server (results come back at the photo's 640x480)
PREDICT_API = "/predict"


def test_serve_without_gradio_says_how_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "gradio", None)  # import gradio -> ImportError
    assert main(["serve", "--checkpoint", str(tmp_path / "any.ckpt")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: cinet serve needs Gradio, an optional extra: pip install 'cinet-pytorch[app]'"]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny checkpoint whose camera is 4:3, as the NYU photo served here (a 56x40 camera's intrinsics are not
    scaled to a 640x480 photo: docs/data.md, Intrinsics)."""
    import dataclasses

    from cinet.checkpoint import save_model_checkpoint
    from inference_fixtures import tiny_info, tiny_model

    model, kwargs = tiny_model()
    info = dataclasses.replace(tiny_info(), intrinsics=(50.0, 48.0, 31.5, 23.5), reference_size=(64, 48))
    return save_model_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.ckpt", model, kwargs, info)


@pytest.fixture(scope="module")
def served(ckpt: Path):
    """(url, PageServer) of one running page for the whole module."""
    pytest.importorskip("gradio")
    pytest.importorskip("gradio_client")
    if not PHOTO.is_file():
        pytest.skip("shared/data/nyu_samples not present")
    from cinet.cli import build_parser
    from cinet.commands import serve

    args = build_parser().parse_args(
        ["serve", "--checkpoint", str(ckpt), "--port", "0", "--max-side", str(MAX_SIDE), "--examples", "none"]
    )
    page, server, url = serve.start(args)
    yield url, server
    page.close()
    server.close()


@pytest.fixture(scope="module")
def client(served):
    from gradio_client import Client

    return Client(served[0], verbose=False)


def _predict(client, path: Path, cmap: str = "turbo", alpha: float = 0.5, colouring: str = "image"):
    from gradio_client import handle_file

    return client.predict(handle_file(str(path)), cmap, alpha, colouring, api_name=PREDICT_API)


def _rgb(path: str) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def test_server_binds_loopback(served) -> None:
    assert served[0].startswith("http://127.0.0.1:")


def test_outputs_and_downloads_match_predictor_and_predict(
    client, served, ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image, depth_view, overlay, legend, viewer, downloads, status, attention, _ = _predict(
        client, PHOTO, cmap="magma", alpha=0.3
    )
    pred = Predictor.from_checkpoint(ckpt, max_side=MAX_SIDE).predict(PHOTO, return_output=True)
    info = Predictor.from_checkpoint(ckpt).info
    rgb = load_image(PHOTO)
    assert pred.depth.shape == (480, 640)

    np.testing.assert_array_equal(_rgb(image), rgb)
    view = _rgb(depth_view)
    depth_rgb, (lo, hi) = colors.colorize_depth(pred.depth, cmap="magma")
    np.testing.assert_array_equal(view[:480], depth_rgb)  # the colour bar sits below the depth image
    np.testing.assert_array_equal(view[480:], visualize.depth_colorbar(lo, hi, 640, "magma"))
    seg_rgb = colors.colorize_labels(pred.labels, info.palette, info.void_color)
    from cinet.inference.files import LEGEND_CAPTION

    key = visualize.legend(  # the overlay file of cinet predict carries the legend of the classes present
        visualize.present_classes(pred.labels, info.num_classes),
        info.class_names,
        info.palette,
        480,
        min_width=visualize.caption_width(LEGEND_CAPTION, visualize.caption_height(480)),  # its panel caption
    )
    np.testing.assert_array_equal(
        _rgb(overlay), np.concatenate([visualize.overlay(rgb, seg_rgb, 0.3), key], 1)
    )
    assert f"depth {lo:.2f}–{hi:.2f} m" in status and "000464.png" in status
    for c, share in visualize.class_shares(pred.labels, info.num_classes):
        assert f"{info.class_names[c]} {100 * share:.1f}%" in legend
    assert attention is None

    # the downloads are byte for byte the files `cinet predict` writes for the same photo and options
    out = tmp_path / "predict"
    argv = ["predict", "--checkpoint", str(ckpt), str(PHOTO), "--out", str(out), "--ply"]
    assert main([*argv, "--max-side", str(MAX_SIDE), "--cmap", "magma", "--alpha", "0.3"]) == 0
    capsys.readouterr()
    expected = sorted(p.name for p in out.iterdir())
    assert sorted(Path(d).name for d in downloads) == expected and len(expected) == 7
    for d in downloads:
        assert Path(d).read_bytes() == (out / Path(d).name).read_bytes(), Path(d).name
    got_depth = np.asarray(Image.open(next(d for d in downloads if d.endswith("_depth.png"))))
    np.testing.assert_array_equal(got_depth, visualize.depth_to_uint16(pred.depth))
    got_labels = np.asarray(Image.open(next(d for d in downloads if d.endswith("_labels.png"))))
    np.testing.assert_array_equal(got_labels, pred.labels)
    cloud = pointcloud.read_ply(next(d for d in downloads if d.endswith(".ply")))
    intr = info.intrinsics_for(640, 480)
    expect = pointcloud.point_cloud(pred.depth, rgb, pred.labels, intr)
    np.testing.assert_array_equal(cloud, expect)

    # the 3D viewer: the same points, y up (x, -y, -z), at most --viewer-points of them
    view_cloud = pointcloud.read_ply(viewer)
    assert 0 < len(view_cloud) <= 150_000 and len(view_cloud) < len(cloud)
    stride = 2  # 307200 valid pixels -> every 2nd row and column = 76800 points
    sub = pointcloud.point_cloud(pred.depth, rgb, pred.labels, intr, stride=stride)
    np.testing.assert_allclose(view_cloud["x"], sub["x"], rtol=1e-6)
    np.testing.assert_allclose(view_cloud["y"], -sub["y"], rtol=1e-6)
    np.testing.assert_allclose(view_cloud["z"], -sub["z"], rtol=1e-6)
    by_class = pointcloud.read_ply(client.predict("class", api_name="/view3d"))
    np.testing.assert_array_equal(by_class["red"], seg_rgb[::stride, ::stride, 0].ravel())

    # a pixel's attention (Fig. 7) is the map `cinet predict --attention X,Y` draws
    att_path, text = client.predict(120, 300, api_name="/attention")
    assert text == "attention of pixel (120, 300)"
    np.testing.assert_array_equal(_rgb(att_path), figures.attention_figure(pred, 120, 300)[0])
    other, _ = client.predict(600, 20, api_name="/attention")
    assert np.abs(_rgb(other).astype(int) - _rgb(att_path).astype(int)).mean() > 1.0


def test_bad_uploads_get_one_clear_message_and_the_server_keeps_serving(
    client, served, tmp_path: Path
) -> None:
    from gradio_client.exceptions import AppError

    truncated = tmp_path / "broken.png"
    truncated.write_bytes(PHOTO.read_bytes()[:5000])
    not_image = tmp_path / "notes.png"
    not_image.write_text("these are notes, not a picture\n")
    wrong_type = tmp_path / "notes.txt"
    wrong_type.write_text("text\n")

    for path, message in [
        (truncated, "broken.png: cannot read image"),  # the one image reader's message (#13)
        (
            not_image,
            "notes.png: cannot read image (UnidentifiedImageError: cannot identify image file 'notes.png')",
        ),
        (wrong_type, "Invalid file type"),
    ]:
        with pytest.raises(AppError) as info:
            _predict(client, path)
        text = str(info.value)
        assert text.startswith(message) and "\n" not in text and "/tmp" not in text, text

    status = _predict(client, PHOTO)[6]
    assert "000464.png" in status  # still serving


def test_twenty_concurrent_requests_are_all_answered_one_at_a_time(
    client, served, ckpt: Path, tmp_path: Path
) -> None:
    server = served[1]
    photo = load_image(PHOTO)
    paths = []
    for i in range(20):  # 20 different small crops of the photo, so that a mixed-up answer shows
        crop = photo[40 + 8 * i : 40 + 8 * i + 48, 60 + 12 * i : 60 + 12 * i + 64]
        p = tmp_path / f"req_{i:02d}.png"
        Image.fromarray(crop).save(p)
        paths.append(p)
    from gradio_client import handle_file

    served_before = server.served
    server.max_in_flight = 0
    jobs = [client.submit(handle_file(str(p)), "turbo", 0.5, "image", api_name=PREDICT_API) for p in paths]
    results = [job.result(timeout=300) for job in jobs]

    predictor = Predictor.from_checkpoint(ckpt, max_side=MAX_SIDE)
    for p, result in zip(paths, results):
        status, downloads = result[6], result[5]
        assert p.name in status, status
        depth_png = next(d for d in downloads if d.endswith(f"{p.stem}_depth.png"))
        expect = visualize.depth_to_uint16(predictor.predict(p).depth)
        np.testing.assert_array_equal(np.asarray(Image.open(depth_png)), expect)
    assert server.served - served_before == 20
    assert server.max_in_flight == 1  # queued: one request at a time (--concurrency 1)
