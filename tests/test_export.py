"""ONNX export: checker, metadata, parity with PyTorch (fixed and dynamic sizes), ``predict --onnx``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from PIL import Image

from cinet.cli import main
from cinet.inference.export import OnnxRunner, export_onnx, onnx_parity
from cinet.inference.predictor import Predictor
from inference_fixtures import save_tiny_checkpoint, synthetic_image, tiny_info, tiny_model


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("onnx")
    model, _ = tiny_model()
    info = tiny_info()
    return {
        "fixed": export_onnx(model, folder / "fixed.onnx", height=40, width=56, dataset_info=info),
        "dynamic": export_onnx(
            model, folder / "dyn.onnx", height=40, width=56, dynamic=True, dataset_info=info
        ),
    }


def test_fixed_export_is_valid_and_matches(exported: dict[str, Path]) -> None:
    proto = onnx.load(str(exported["fixed"]))
    onnx.checker.check_model(proto)
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["cinet.dataset"])["name"] == "toy"
    assert json.loads(meta["cinet.model"])["variant"] == "cinet"
    assert meta["cinet.exporter"] in ("dynamo", "torchscript")
    runner = OnnxRunner(exported["fixed"])
    assert runner.fixed_size == (40, 56)
    diff = onnx_parity(tiny_model()[0], exported["fixed"], height=40, width=56)
    print(f"fixed-size ONNX parity: max |diff| = {diff:.3g}")
    assert diff < 1e-4


@pytest.mark.parametrize(("h", "w", "b"), [(40, 56, 1), (37, 53, 2), (64, 24, 1)])
def test_dynamic_export_matches_at_other_sizes(exported: dict[str, Path], h: int, w: int, b: int) -> None:
    assert OnnxRunner(exported["dynamic"]).fixed_size is None
    diff = onnx_parity(tiny_model()[0], exported["dynamic"], height=h, width=w, batch=b)
    print(f"dynamic ONNX parity at {b}x3x{h}x{w}: max |diff| = {diff:.3g}")
    assert diff < 1e-4


def test_parity_check_can_fail(exported: dict[str, Path]) -> None:
    other, _ = tiny_model()
    with torch.no_grad():
        other.seg_head.conv.bias.add_(0.01)  # a slightly different model must not pass
    assert onnx_parity(other, exported["fixed"], height=40, width=56) > 1e-3


def test_predict_through_onnx_equals_torch(exported: dict[str, Path], tmp_path: Path) -> None:
    model, _ = tiny_model()
    torch_pred = Predictor(model, tiny_info()).predict(synthetic_image(37, 53, 9))
    onnx_pred = Predictor.from_onnx(exported["dynamic"]).predict(synthetic_image(37, 53, 9))
    np.testing.assert_allclose(onnx_pred.depth, torch_pred.depth, atol=1e-4)
    assert (onnx_pred.labels == torch_pred.labels).mean() > 0.99
    fixed = Predictor.from_onnx(exported["fixed"]).predict(synthetic_image(80, 112, 9))  # resized to 40x56
    assert fixed.geometry.padded == (40, 56) and fixed.depth.shape == (80, 112)


def test_cli_export_and_predict_onnx(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = save_tiny_checkpoint(tmp_path / "tiny.ckpt")
    out = tmp_path / "model.onnx"
    rc = main(["export", "--checkpoint", str(ckpt), "--onnx", str(out), "--height", "40", "--width", "56"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "max |difference|" in printed
    diffs = [float(line.rsplit("=", 1)[1]) for line in printed.splitlines() if "max |difference|" in line]
    assert diffs and max(diffs) < 1e-4
    img = tmp_path / "room.png"
    Image.fromarray(synthetic_image(40, 56, 1)).save(img)
    rc = main(["predict", "--onnx", str(out), str(img), "--out", str(tmp_path / "pred"), "--no-progress"])
    assert rc == 0
    assert Image.open(tmp_path / "pred" / "room_depth.png").size == (56, 40)
    rc = main(
        ["predict", "--onnx", str(out), str(img), "--out", str(tmp_path / "pred"), "--attention", "1,1"]
    )
    assert rc == 2
    assert "PyTorch checkpoint" in capsys.readouterr().err


@pytest.mark.parametrize("given", [["--height", "480"], ["--width", "64"], ["--height", "0", "--width", "0"]])
def test_fixed_size_needs_both_sides(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], given: list[str]
) -> None:
    """``--height`` alone made a 480x128 file (the width taken from the training size: every image squashed)."""
    ck = save_tiny_checkpoint(tmp_path / "tiny.ckpt")
    out = tmp_path / "m.onnx"
    assert main(["export", "--checkpoint", str(ck), "--onnx", str(out), *given]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and ("--height" in err[0] or "--width" in err[0]), err
    assert not out.exists()
