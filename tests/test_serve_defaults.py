"""``cinet serve`` and ``cinet predict`` give the same result for the same photo by default, and ``serve`` starts
for a checkpoint without camera intrinsics (issue 25, items 3 and 4). No browser, no server for the first."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cinet.cli import build_parser, main
from inference_fixtures import synthetic_image, tiny_info, tiny_model


def _checkpoint(path: Path, *, intrinsics: bool = True) -> Path:
    import dataclasses

    from cinet.checkpoint import save_model_checkpoint

    model, kwargs = tiny_model("cinet")
    info = tiny_info() if intrinsics else dataclasses.replace(tiny_info(), intrinsics=None, name="folder")
    return save_model_checkpoint(path, model, kwargs, info, train_size=(96, 128))  # trained at 128x96 (WxH)


def test_serve_and_predict_defaults_agree_on_a_photo_far_from_the_training_size(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cinet.commands import serve
    from cinet.inference.files import FileOptions
    from cinet.inference.page import predict_page

    ckpt = _checkpoint(tmp_path / "m.ckpt")
    photo = tmp_path / "photo.png"
    Image.fromarray(synthetic_image(480, 640, seed=3)).save(photo)  # 640x480: 5x the training side
    out = tmp_path / "predict"
    assert main(["predict", "--checkpoint", str(ckpt), str(photo), "--out", str(out), "--no-progress"]) == 0
    capsys.readouterr()

    args = build_parser().parse_args(["serve", "--checkpoint", str(ckpt)])  # serve's defaults
    predictor = serve.load_predictor(args)
    page_dir = tmp_path / "page"
    page_dir.mkdir()
    res = predict_page(predictor, photo, page_dir, FileOptions(cmap=args.cmap, alpha=args.alpha))
    for suffix in ("_depth.png", "_labels.png", "_overlay.png"):
        assert (page_dir / f"photo{suffix}").read_bytes() == (out / f"photo{suffix}").read_bytes(), suffix
    # the page says what the network saw (the training size, not the photo's 640x480)
    assert (
        res.network
        == "network input 128×96 (scaled from 640×480 to the training size 128×96; results at 640×480)"
    )
    # a cap (--max-side) lowers the size further but never lifts the training-size rule
    capped = build_parser().parse_args(["serve", "--checkpoint", str(ckpt), "--max-side", "1024"])
    assert serve.load_predictor(capped).geometry(480, 640).scaled == (96, 128)


def test_serve_page_without_intrinsics_has_everything_but_the_point_cloud(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cinet.commands import serve
    from cinet.inference.files import FileOptions
    from cinet.inference.page import predict_page

    ckpt = _checkpoint(tmp_path / "m.ckpt", intrinsics=False)
    photo = tmp_path / "photo.png"
    Image.fromarray(synthetic_image(96, 128, seed=1)).save(photo)
    predictor = serve.load_predictor(build_parser().parse_args(["serve", "--checkpoint", str(ckpt)]))
    page_dir = tmp_path / "page"
    page_dir.mkdir()
    res = predict_page(predictor, photo, page_dir, FileOptions())
    assert res.viewer == {} and not [d for d in res.downloads if d.suffix == ".ply"]
    assert len(res.downloads) == 6 and all(d.is_file() for d in res.downloads)
    assert res.notes == [
        "no 3D points: dataset 'folder' has no camera intrinsics; start cinet serve with --intrinsics "
        "fx,fy,cx,cy (pixels, at the photo's size) for them"
    ]
    assert np.asarray(Image.open(page_dir / "photo_depth.png")).shape == (96, 128)
    # with --intrinsics the point cloud is back
    with_intr = tmp_path / "page2"
    with_intr.mkdir()
    res = predict_page(predictor, photo, with_intr, FileOptions(intrinsics=(100.0, 100.0, 63.5, 47.5)))
    assert set(res.viewer) == {"image", "class"} and res.notes == []


def test_serve_starts_for_a_checkpoint_without_intrinsics(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("gradio")
    from cinet.commands import serve

    ckpt = _checkpoint(tmp_path / "m.ckpt", intrinsics=False)
    args = build_parser().parse_args(
        ["serve", "--checkpoint", str(ckpt), "--port", "0", "--examples", "none"]
    )
    page, server, url = serve.start(args)
    try:
        assert url.startswith("http://127.0.0.1:")
    finally:
        page.close()
        server.close()
    out = [line for line in capsys.readouterr().out.splitlines() if line.startswith("cinet serve")]
    assert out == [
        f"cinet serve: dataset 'folder' of {ckpt} has no camera intrinsics: no 3D points (--intrinsics "
        "fx,fy,cx,cy for them)"
    ]
