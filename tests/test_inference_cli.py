"""``cinet predict`` end to end on a tiny checkpoint: files, sizes, dtypes, PLY, figures and errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cinet.cli import main
from cinet.inference import pointcloud
from cinet.inference.predictor import Predictor
from inference_fixtures import INTRINSICS, save_tiny_checkpoint, synthetic_image

SUFFIXES = ("_depth.png", "_depth_color.png", "_labels.png", "_seg_color.png", "_overlay.png", "_panel.png")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.ckpt")


@pytest.fixture()
def images(tmp_path: Path) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(synthetic_image(40, 56, 1)).save(folder / "room.png")
    Image.fromarray(synthetic_image(37, 53, 2)).convert("L").save(folder / "odd_grey.png")
    Image.fromarray(np.dstack([synthetic_image(37, 53, 3), np.full((37, 53), 128, np.uint8)])).save(
        folder / "alpha.png"
    )
    Image.fromarray(synthetic_image(80, 112, 4)).save(folder / "big.jpg", quality=95)
    return folder


def _stderr_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_predict_writes_every_file(ckpt: Path, images: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    rc = main(["predict", "--checkpoint", str(ckpt), str(images), "--out", str(out), "--no-progress"])
    assert rc == 0
    predictor = Predictor.from_checkpoint(ckpt)
    for src in sorted(images.iterdir()):
        w, h = Image.open(src).size
        for suffix in SUFFIXES:
            assert (out / f"{src.stem}{suffix}").is_file(), suffix
        depth = Image.open(out / f"{src.stem}_depth.png")
        assert depth.size == (w, h) and np.asarray(depth).dtype == np.uint16
        labels = Image.open(out / f"{src.stem}_labels.png")
        assert labels.mode == "L" and labels.size == (w, h)
        for suffix in ("_depth_color.png", "_seg_color.png"):
            im = Image.open(out / f"{src.stem}{suffix}")
            assert im.mode == "RGB" and im.size == (w, h)
        # overlay and panel: the picture(s), then a legend column of the classes present
        overlay = Image.open(out / f"{src.stem}_overlay.png")
        assert overlay.mode == "RGB" and overlay.height == h and overlay.width >= w + 60
        panel = Image.open(out / f"{src.stem}_panel.png")
        assert panel.mode == "RGB" and panel.width == overlay.width + 2 * w and panel.height >= h
        assert "depth_range_m" in Image.open(out / f"{src.stem}_depth_color.png").info
        # file contents agree with the Python API
        pred = predictor.predict(src)
        mm = np.asarray(depth).astype(np.float64)
        assert np.abs(mm / 1000.0 - pred.depth).max() <= 0.0005 + 1e-6
        np.testing.assert_array_equal(np.asarray(labels), pred.labels)
    assert not list(out.glob(".*.tmp"))


def test_ply_default_intrinsics_scaled(
    ckpt: Path, images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    src = images / "big.jpg"  # 112x80 = 2x the reference size 56x40 of the intrinsics
    assert (
        main(["predict", "--checkpoint", str(ckpt), str(src), "--out", str(out), "--ply", "--no-progress"])
        == 0
    )
    # the log line counts each kind of file: the point cloud is not one of the PNGs
    assert f"-> {out / 'big'}* (7 files: 1 .ply, 6 .png; depth " in capsys.readouterr().out
    cloud = pointcloud.read_ply(out / "big.ply")
    assert len(cloud) == 80 * 112  # every pixel has a valid (positive) depth
    depth = Predictor.from_checkpoint(ckpt).predict(src).depth
    fx, fy = 2 * INTRINSICS[0], 2 * INTRINSICS[1]
    cx, cy = (INTRINSICS[2] + 0.5) * 2 - 0.5, (INTRINSICS[3] + 0.5) * 2 - 0.5
    u, v = 30, 17  # column, row -> row-major index v * W + u
    z = float(depth[v, u])
    p = cloud[v * 112 + u]
    np.testing.assert_allclose([p["x"], p["y"], p["z"]], [(u - cx) * z / fx, (v - cy) * z / fy, z], rtol=1e-5)


def test_ply_explicit_intrinsics_ascii(ckpt: Path, images: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    src = images / "odd_grey.png"
    args = ["predict", "--checkpoint", str(ckpt), str(src), "--out", str(out), "--ply", "--ply-ascii"]
    assert main([*args, "--intrinsics", "40,41,26,18", "--no-progress"]) == 0
    assert (out / "odd_grey.ply").read_bytes().startswith(b"ply\nformat ascii 1.0\n")
    cloud = pointcloud.read_ply(out / "odd_grey.ply")
    assert len(cloud) == 37 * 53
    depth = Predictor.from_checkpoint(ckpt).predict(src).depth
    p = cloud[0]  # pixel (u=0, v=0)
    z = float(depth[0, 0])
    np.testing.assert_allclose([p["x"], p["y"], p["z"]], [-26 * z / 40, -18 * z / 41, z], rtol=1e-5)


def test_attention_and_feature_figures(ckpt: Path, images: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    src = images / "odd_grey.png"
    args = ["predict", "--checkpoint", str(ckpt), str(src), "--out", str(out), "--no-progress"]
    assert main([*args, "--attention", "10,5", "--attention", "52,36", "--features"]) == 0
    for name in ("odd_grey_attention_10_5.png", "odd_grey_attention_52_36.png"):
        im = Image.open(out / name)
        assert im.size == (53, 37) and im.mode == "RGB"
    for k in (1, 2, 3):
        for branch in ("d", "s"):
            im = Image.open(out / f"odd_grey_features_stage{k}_{branch}.png")
            assert im.size == (53, 37) and im.mode == "L"
            arr = np.asarray(im)
            assert arr.min() == 0 and arr.max() == 255  # normalised to 0-1


def test_non_image_file_is_one_line_error(
    ckpt: Path, images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = images / "readme.png"
    bad.write_text("hello")
    out = tmp_path / "out"
    rc = main(["predict", "--checkpoint", str(ckpt), str(images / "room.png"), str(bad), "--out", str(out)])
    assert rc == 2
    line = _stderr_line(capsys)
    assert str(bad) in line and "not an image" in line
    assert not out.exists() or not any(out.iterdir())  # nothing written before the error
    rc = main(["predict", "--checkpoint", str(ckpt), str(images / "*.png"), "--out", str(out), "--skip-bad"])
    assert rc == 0
    assert (out / "room_depth.png").is_file() and not (out / "readme_depth.png").exists()


def test_missing_input_and_unwritable_out(
    ckpt: Path, images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(["predict", "--checkpoint", str(ckpt), str(tmp_path / "nope.jpg"), "--out", str(tmp_path)]) == 2
    )
    assert "nope.jpg" in _stderr_line(capsys)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    out = blocker / "sub"  # a folder below a file cannot be created
    assert main(["predict", "--checkpoint", str(ckpt), str(images / "room.png"), "--out", str(out)]) == 2
    line = _stderr_line(capsys)
    assert str(out) in line and "cannot be created (" in line and "is a file, not a folder" in line


def test_mismatched_and_truncated_checkpoint(
    ckpt: Path, images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cinet.checkpoint import save_model_checkpoint
    from inference_fixtures import tiny_info, tiny_model

    model, _ = tiny_model(num_classes=9)
    _, kwargs = tiny_model()
    wrong = save_model_checkpoint(tmp_path / "wrong.ckpt", model, kwargs, tiny_info())
    img = str(images / "room.png")
    assert main(["predict", "--checkpoint", str(wrong), img, "--out", str(tmp_path / "o")]) == 2
    line = _stderr_line(capsys)
    assert str(wrong) in line and "class count differs" in line
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(ckpt.read_bytes()[:1000])
    assert main(["predict", "--checkpoint", str(cut), img, "--out", str(tmp_path / "o")]) == 2
    line = _stderr_line(capsys)
    assert str(cut) in line and "cannot read checkpoint" in line


def test_attention_needs_sum(images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = save_tiny_checkpoint(tmp_path / "fsm.ckpt", variant="fsm")
    args = ["predict", "--checkpoint", str(base), str(images / "room.png"), "--out", str(tmp_path / "o")]
    assert main([*args, "--attention", "3,3"]) == 2
    line = _stderr_line(capsys)
    assert str(base) in line and "SUM" in line
    assert main([*args, "--features"]) == 0  # the fsm variant has the sharing module


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (
            ["--attention", "50,2"],
            "--attention pixel (50, 2) is outside the 48x40 image",
        ),  # the second image only
        (["--device", "gpu"], "--device: 'gpu' is not a device"),
        (["--max-side", "5"], "--max-side: must be >= 8 (or 0), got 5"),
        (["--device", "cuda:7"], "--device cuda:7: "),
        (["--checkpoint", "missing.ckpt"], "missing.ckpt"),
        (["--depth-range", "0,inf"], "--depth-range: expected two finite numbers 'MIN,MAX', got '0,inf'"),
        (["--depth-range", "nan,5"], "--depth-range: expected two finite numbers 'MIN,MAX', got 'nan,5'"),
        (["--attention", "nan,2"], "--attention: expected two finite numbers 'X,Y', got 'nan,2'"),
        (["--alpha", "nan"], "--alpha: must be in 0..1, got nan"),
        (["--intrinsics", "1,1,nan,0"], "--intrinsics: expected fx,fy,cx,cy with fx, fy > 0"),
    ],
)
def test_refusals_write_nothing_not_even_the_folder(
    ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], expected: str
) -> None:
    """Every refusal comes before the first file: no output folder, no image's results (was: the first image's
    files and an empty folder)."""
    big, small = tmp_path / "big.png", tmp_path / "small.png"
    Image.fromarray(synthetic_image(60, 80)).save(big)
    Image.fromarray(synthetic_image(40, 48)).save(small)
    out = tmp_path / "out" / "nested"
    args = [
        "predict",
        "--checkpoint",
        str(ckpt),
        str(big),
        str(small),
        "--out",
        str(out),
        "--no-progress",
        *extra,
    ]
    if extra[0] == "--checkpoint":
        args = ["predict", "--checkpoint", str(tmp_path / extra[1]), str(big), str(small), "--out", str(out)]
    assert main(args) == 2
    line = _stderr_line(capsys)
    assert expected in line
    assert not (tmp_path / "out").exists()


def test_max_side_zero_means_none_as_in_serve(ckpt: Path, images: Path, tmp_path: Path) -> None:
    """``--max-side 0`` is the default (no max-side; the training-size rule), as ``cinet serve --max-side 0``."""
    src = images / "big.jpg"
    for name, extra in (("default", []), ("zero", ["--max-side", "0"])):
        argv = [
            "predict",
            "--checkpoint",
            str(ckpt),
            str(src),
            "--out",
            str(tmp_path / name),
            "--no-progress",
        ]
        assert main([*argv, *extra]) == 0
    a = np.asarray(Image.open(tmp_path / "default" / "big_depth.png"))
    b = np.asarray(Image.open(tmp_path / "zero" / "big_depth.png"))
    assert a.shape == (80, 112)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("value", ["nan", "inf", "-1"])
def test_export_tolerance_must_be_finite(
    ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], value: str
) -> None:
    """``--tolerance nan`` passed every parity check (``worst > nan`` is false): refused before any work."""
    out = tmp_path / "out" / "m.onnx"
    assert main(["export", "--checkpoint", str(ckpt), "--onnx", str(out), "--tolerance", value]) == 2
    assert _stderr_line(capsys).startswith(f"error: --tolerance: must be a finite number >= 0, got {value}")
    assert not (tmp_path / "out").exists()
