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


# ------------------------------------------------------------------ outputs: checked before any work, never a user's file


def _one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


def test_onnx_never_replaces_a_file_that_is_not_onnx(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--onnx notes.onnx`` replaced the user's text file with the export."""
    import cinet.checkpoint

    ck = save_tiny_checkpoint(tmp_path / "tiny.ckpt")
    notes = tmp_path / "notes.onnx"
    notes.write_text("my notes\n")
    monkeypatch.setattr(
        cinet.checkpoint, "load_model", lambda *a, **k: pytest.fail("loaded before the check")
    )
    assert main(["export", "--checkpoint", str(ck), "--onnx", str(notes)]) == 2
    line = _one_error_line(capsys)
    assert line.startswith(f"error: {notes}: exists and is not an ONNX model") and "--onnx" in line
    assert notes.read_text() == "my notes\n"


def test_an_earlier_onnx_export_may_be_replaced(exported: dict[str, Path], tmp_path: Path) -> None:
    from cinet.checks.outputs import check_output_file, is_onnx_model

    check_output_file(exported["fixed"], "--onnx", kind="onnx")  # no error: a new export replaces it
    assert is_onnx_model(exported["dynamic"])
    for name, data in (("empty", b""), ("text", b"hello"), ("header", b"\x08\x07")):  # no graph
        (tmp_path / name).write_bytes(data)
        assert not is_onnx_model(tmp_path / name), name


def test_onnx_under_a_file_says_the_file_is_not_a_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """It said ``output folder is not writable (File exists)`` (``predict`` says what is wrong)."""
    ck = save_tiny_checkpoint(tmp_path / "tiny.ckpt")
    blocker = tmp_path / "file.txt"
    blocker.write_text("mine")
    assert main(["export", "--checkpoint", str(ck), "--onnx", str(blocker / "x.onnx")]) == 2
    line = _one_error_line(capsys)
    assert line == f"error: {blocker / 'x.onnx'}: cannot be written ({blocker} is a file, not a folder)"
    assert blocker.read_text() == "mine"


def test_pretrained_on_a_file_says_it_is_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """It said ``exists and is not an empty folder``."""
    ck = save_tiny_checkpoint(tmp_path / "tiny.ckpt")
    plain = tmp_path / "plain.txt"
    plain.write_text("mine")
    assert main(["export", "--checkpoint", str(ck), "--pretrained", str(plain)]) == 2
    line = _one_error_line(capsys)
    assert line.startswith(f"error: {plain}: is a file, not a folder") and "--pretrained" in line
    assert plain.read_text() == "mine"


def test_pretrained_on_a_read_only_file_system_is_refused_first(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import os
    import types

    from cinet.inference import hub

    ck = save_tiny_checkpoint(tmp_path / "tiny.ckpt")
    monkeypatch.setattr(
        hub, "_from_checkpoint", lambda *a: pytest.fail("read the checkpoint before the check")
    )
    monkeypatch.setattr(os, "access", lambda *a, **k: False)
    monkeypatch.setattr(os, "statvfs", lambda p: types.SimpleNamespace(f_flag=os.ST_RDONLY))
    assert main(["export", "--checkpoint", str(ck), "--pretrained", str(tmp_path / "pre")]) == 2
    line = _one_error_line(capsys)
    assert (
        line
        == f"error: {tmp_path / 'pre'}: --pretrained folder cannot be created (read-only file system at {tmp_path})"
    )


def test_every_output_is_checked_before_the_model_folder_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--pretrained DIR --onnx BAD`` wrote DIR, then refused the ONNX output."""
    ck = save_tiny_checkpoint(tmp_path / "tiny.ckpt")
    folder = tmp_path / "pre"
    onnx_dir = tmp_path / "m.onnx"
    onnx_dir.mkdir()
    assert (
        main(["export", "--checkpoint", str(ck), "--pretrained", str(folder), "--onnx", str(onnx_dir)]) == 2
    )
    assert _one_error_line(capsys) == f"error: {onnx_dir}: is a folder, not a file (--onnx)"
    assert not folder.exists()
