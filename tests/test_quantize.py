"""INT8 quantization of an exported CI-Net: float groups, closeness to float32, the accuracy check and its
refusal, ``cinet export --quantize int8`` and ``predict --onnx`` on the INT8 file."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
from PIL import Image

from cinet.cli import main
from cinet.inference import quantize
from cinet.inference.export import OnnxRunner, export_onnx
from cinet.inference.predictor import Predictor
from cinet.inference.quantize import (
    FLOAT_GROUPS,
    QuantizationAccuracyError,
    accuracy_report,
    check_accuracy,
    float_group_nodes,
    int8_paths,
    parse_keep_float,
    quantize_int8,
)
from inference_fixtures import synthetic_image, tiny_info, tiny_model

SIZE = (40, 56)


@pytest.fixture(scope="module")
def fp32_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model, _ = tiny_model()
    path = tmp_path_factory.mktemp("int8") / "tiny.onnx"
    # TorchScript exporter: about 5x quicker than the dynamo one here (the latter is tested in test_export.py)
    info = tiny_info()
    return export_onnx(model, path, height=SIZE[0], width=SIZE[1], dataset_info=info, exporter="torchscript")


def _inputs(path: Path, seeds: range) -> list[np.ndarray]:
    """Normalised network inputs of synthetic rooms, made exactly as ``cinet predict`` makes them."""
    predictor = Predictor.from_onnx(path)
    return [predictor.prepare(synthetic_image(*SIZE, s))[1].unsqueeze(0).numpy() for s in seeds]


INTEGER_MATMULS = {"MatMulIntegerToFloat", "QLinearMatMul", "MatMulInteger"}


def _optimized_ops(path: Path, tmp_path: Path) -> Counter[str]:
    """Op types of the graph onnxruntime actually runs (after its QDQ fusions) for an ONNX file."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return Counter(n.op_type for n in onnx.load(opts.optimized_model_filepath).graph.node)


def test_float_groups_are_found_by_structure(fp32_file: Path) -> None:
    proto = onnx.load(str(fp32_file))
    groups = float_group_nodes(proto, FLOAT_GROUPS)
    ops = {n.name: n.op_type for n in proto.graph.node}
    attention = Counter(ops[n] for n in groups["attention"])  # Q, K, V convs, Q K^T, sigmoid, A V, 1/N
    assert (attention["Conv"], attention["MatMul"], attention["Sigmoid"], attention["Add"]) == (3, 2, 1, 0)
    weights = {t.name: t.dims for t in proto.graph.initializer}
    convs = [n for n in proto.graph.node if n.name in groups["attention"] and n.op_type == "Conv"]
    assert all(list(weights[n.input[1]][2:]) == [1, 1] for n in convs)  # the SUM's 1x1 convs
    for head in ("depth_head", "seg_head", "stem"):
        assert len(groups[head]) == 1 and ops[groups[head][0]] == "Conv", head
    assert len({groups["depth_head"][0], groups["seg_head"][0], groups["stem"][0]}) == 3
    # the segmentation head's conv is the node that writes the graph output
    assert any(n.name == groups["seg_head"][0] and "seg_logits" in n.output for n in proto.graph.node)
    with pytest.raises(ValueError, match="unknown float group"):
        float_group_nodes(proto, ["decoder"])


def test_parse_keep_float() -> None:
    assert parse_keep_float(None) == quantize.DEFAULT_KEEP_FLOAT
    assert parse_keep_float("none") == ()
    assert parse_keep_float("depth_head, attention,depth_head") == ("depth_head", "attention")
    with pytest.raises(quantize.InputError, match="--keep-float: unknown group 'sum'"):
        parse_keep_float("sum")


def test_int8_is_close_to_fp32_and_keeps_the_float_groups(fp32_file: Path, tmp_path: Path) -> None:
    calib = _inputs(fp32_file, range(4))
    held_out = _inputs(fp32_file, range(10, 13))  # not the calibration images
    out = tmp_path / "tiny.int8.onnx"
    info = quantize_int8(fp32_file, out, calib, keep_float=("attention",), calibration_source="synthetic")
    assert info["calibration"] == {"source": "synthetic", "images": 4}
    proto = onnx.load(str(out))
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["cinet.quantization"])["keep_float"] == ["attention"]
    assert json.loads(meta["cinet.dataset"])["name"] == "toy"  # the float file's metadata is kept
    # What onnxruntime runs: integer convs (QLinearConv) except the SUM's Q, K, V convs, and a float attention
    ops = _optimized_ops(out, tmp_path)
    n_conv = sum(n.op_type == "Conv" for n in onnx.load(str(fp32_file)).graph.node)
    assert ops["Conv"] == 3 and ops["QLinearConv"] == n_conv - 3
    assert not INTEGER_MATMULS & set(ops) and ops["FusedMatMul"] + ops["MatMul"] == 2

    fp32, int8 = OnnxRunner(fp32_file), OnnxRunner(out)
    for x in held_out:
        d0, s0 = fp32.run_numpy(x)
        d1, s1 = int8.run_numpy(x)
        rel = np.abs(d1 - d0) / d0
        print(
            f"depth rel err mean {rel.mean():.2e} max {rel.max():.2e}, logits max |diff| {np.abs(s1 - s0).max():.3g}"
        )
        # 8-bit activations round each quantized tensor to 1/255 of its calibrated range (<= 0.2% of the
        # range per tensor); through the ~20 quantized layers of a path that adds up to tenths of a percent
        # (measured 0.15% mean / 0.4% max on depth, 4% of the logit range), never to tens of percent.
        assert 0 < rel.mean() < 0.01 and rel.max() < 0.03  # > 0: the file really computes in INT8
        assert np.abs(s1 - s0).max() < 0.1 * (s0.max() - s0.min())
        assert (s0.argmax(1) == s1.argmax(1)).mean() >= 0.95

    quantize_int8(fp32_file, out, calib, keep_float=())  # nothing kept float: an integer attention product
    ops = _optimized_ops(out, tmp_path)
    assert INTEGER_MATMULS & set(ops) and ops["QLinearConv"] == n_conv


def test_accuracy_report_thresholds() -> None:
    fp32 = {"delta1": 0.75, "miou": 0.5, "rms": 1.0}
    ok = accuracy_report(
        fp32, {"delta1": 0.7421875, "miou": 0.4921875, "rms": 1.125}
    )  # drops 0.0078, 0.78 pt
    assert ok["accepted"] and ok["reasons"] == []
    assert ok["delta1_drop"] == 0.0078125 and ok["miou_drop_points"] == 0.78125
    assert ok["difference"]["rms"] == 0.125
    check_accuracy(ok, "m.int8.onnx")  # does not raise
    bad_delta = accuracy_report(fp32, {"delta1": 0.73, "miou": 0.5})
    assert not bad_delta["accepted"] and "δ1 drops by 0.0200" in bad_delta["reasons"][0]
    bad_miou = accuracy_report(fp32, {"delta1": 0.75, "miou": 0.48}, max_miou_drop=1.5)
    assert not bad_miou["accepted"] and "mIoU drops by 2.00 points" in bad_miou["reasons"][0]
    assert accuracy_report(fp32, {"delta1": 0.6, "miou": 0.4}, max_delta1_drop=0.2, max_miou_drop=10)[
        "accepted"
    ]
    assert not accuracy_report(fp32, {"delta1": math.nan, "miou": 0.5})["accepted"]  # NaN never passes
    with pytest.raises(QuantizationAccuracyError, match=r"^m.int8.onnx: INT8 model refused: δ1 drops"):
        check_accuracy(bad_delta, "m.int8.onnx")


def _tiny_onnx_bytes() -> bytes:
    """A valid one-node ONNX model (``y = x``): what an earlier export left, as far as the output checks go."""
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])
    return helper.make_model(graph).SerializeToString()


def _synthetic_checkpoint(path: Path) -> Path:
    """The tiny model for the synthetic dataset (13 classes) at 40x56, with a run config naming it."""
    from cinet.checkpoint import save_model_checkpoint
    from cinet.data.synthetic import synthetic_info

    model, kwargs = tiny_model(num_classes=13)
    config = {"data": {"name": "synthetic", "options": {"size": list(SIZE)}, "length": 6, "eval_length": 4}}
    return save_model_checkpoint(path, model, kwargs, synthetic_info(SIZE), config=config)


def test_cli_export_int8_then_predict(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = _synthetic_checkpoint(tmp_path / "tiny.ckpt")
    out = tmp_path / "m.onnx"
    args = [
        "export",
        "--checkpoint",
        str(ckpt),
        "--onnx",
        str(out),
        "--quantize",
        "int8",
        "--exporter",
        "torchscript",
    ]
    args += ["--num-calib", "2", "--num-eval", "2", "--max-delta1-drop", "1", "--max-miou-drop", "100"]
    assert main(args) == 0  # thresholds wide open: a random tiny model's metrics are not the point here
    printed = capsys.readouterr().out
    assert "| float32 |" in printed and "| int8 |" in printed and "δ1 drop" in printed
    int8, report_path = int8_paths(out)
    assert out.is_file() and int8.is_file() and report_path.name == "m.int8.accuracy.json"
    report = json.loads(report_path.read_text())
    assert report["accepted"] and report["evaluation"] == {"split": "synthetic/test", "images": 2}
    # the training split has data.length (6) images, also when built without augmentation (issue 25: it said
    # "2 of 4", data.eval_length)
    assert report["calibration"] == "synthetic/train (2 of 6 images)"
    assert set(report["fp32"]) >= {"delta1", "abs_rel", "rms", "miou", "pixel_acc"}
    assert report["delta1_drop"] == pytest.approx(report["fp32"]["delta1"] - report["int8"]["delta1"])

    img = tmp_path / "room.png"
    Image.fromarray(synthetic_image(50, 70, 3)).save(img)
    rc = main(["predict", "--onnx", str(int8), str(img), "--out", str(tmp_path / "pred"), "--no-progress"])
    assert rc == 0
    assert Image.open(tmp_path / "pred" / "room_depth.png").size == (70, 50)
    pred = Predictor.from_onnx(int8).predict(synthetic_image(50, 70, 3))
    assert pred.depth.shape == (50, 70) and np.isfinite(pred.depth).all() and pred.labels.max() < 13


def test_cli_refuses_int8_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    ckpt = _synthetic_checkpoint(tmp_path / "tiny.ckpt")
    out = tmp_path / "m.onnx"
    older = _tiny_onnx_bytes()  # an older export: an ONNX model may be replaced, it is kept when refused
    out.write_bytes(older)

    def worse(runners, samples, **kwargs):  # the INT8 model loses 2 points of δ1 on the held-out images
        assert set(runners) == {"fp32", "int8"} and len(list(samples)) == 2
        return {"fp32": {"delta1": 0.80, "miou": 0.40}, "int8": {"delta1": 0.78, "miou": 0.40}}

    monkeypatch.setattr(quantize, "compare_accuracy", worse)
    args = ["export", "--checkpoint", str(ckpt), "--onnx", str(out), "--quantize", "int8", "--no-check"]
    args += ["--exporter", "torchscript"]
    assert main([*args, "--num-calib", "2", "--num-eval", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {int8_paths(out)[0]}: INT8 model refused: δ1 drops")
    assert out.read_bytes() == older  # nothing overwritten, nothing left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "tiny.ckpt"]

    # calibrating on the held-out split is refused before anything is written
    assert main([*args, "--calibration-images", "test"]) == 2
    assert "also the held-out evaluation split" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "tiny.ckpt"]


def test_calibration_images_shared_with_the_held_out_split_are_counted(tmp_path: Path) -> None:
    """Issue 25: a folder dataset without split lists uses every image for every split: the INT8 accuracy was
    checked on its calibration images without a word. ``shared_images`` counts them (the report says so)."""
    from cinet.data import load_dataset

    root = tmp_path / "data"
    for sub in ("rgb", "depth", "labels"):
        (root / sub).mkdir(parents=True)
    for i in range(3):
        Image.fromarray(synthetic_image(16, 16, i)).save(root / "rgb" / f"{i}.png")
        Image.fromarray(np.full((16, 16), 1000, np.uint16)).save(root / "depth" / f"{i}.png")
        Image.fromarray(np.zeros((16, 16), np.uint8)).save(root / "labels" / f"{i}.png")
    opts = {"num_classes": 2}
    train, test = (load_dataset("folder", root, s, **opts) for s in ("train", "test"))
    assert quantize.shared_images(train, test) == 3  # no split lists: the same three images
    (root / "train.txt").write_text("0\n1\n")
    (root / "test.txt").write_text("2\n")
    train, test = (load_dataset("folder", root, s, **opts) for s in ("train", "test"))
    assert quantize.shared_images(train, test) == 0
    assert quantize.shared_images(range(3), test) == 0  # a dataset that does not list its files


# ---------------------------------------------- checked before the float32 export (it and its parity check: ~20 s)

INT8_ARGS = ["--quantize", "int8", "--exporter", "torchscript", "--no-check"]


@pytest.fixture
def no_export(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if the float32 export starts: every refusal below comes before it."""
    from cinet.commands import export as export_cmd

    monkeypatch.setattr(
        export_cmd, "_export_checked", lambda *a, **k: pytest.fail("exported before the check")
    )


def _refused(capsys: pytest.CaptureFixture[str], argv: list[str], *needles: str) -> str:
    assert main(argv) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


@pytest.mark.parametrize(
    ("given", "needle"),
    [
        (["--num-calib", "0"], "--num-calib: need at least 1 calibration image, got 0"),
        (["--num-eval", "0"], "--num-eval: need at least 1 held-out image, got 0"),
    ],
)
def test_int8_counts_are_checked_before_exporting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_export: None, given: list[str], needle: str
) -> None:
    ckpt = _synthetic_checkpoint(tmp_path / "tiny.ckpt")
    _refused(
        capsys,
        ["export", "--checkpoint", str(ckpt), "--onnx", str(tmp_path / "m.onnx"), *INT8_ARGS, *given],
        needle,
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.ckpt"]


@pytest.mark.parametrize("kind", ["empty folder", "file"])
def test_calibration_folder_is_checked_before_exporting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_export: None, kind: str
) -> None:
    ckpt = _synthetic_checkpoint(tmp_path / "tiny.ckpt")
    calib = tmp_path / "calib"
    if kind == "file":
        calib.write_text("not a folder")
    else:
        calib.mkdir()
        (calib / "notes.txt").write_text("no images here")
    argv = ["export", "--checkpoint", str(ckpt), "--onnx", str(tmp_path / "m.onnx"), *INT8_ARGS]
    needle = "no images" if kind == "empty folder" else "is a file, not a folder"
    _refused(capsys, [*argv, "--calibration-images", str(calib)], "--calibration-images", str(calib), needle)
    assert not (tmp_path / "m.onnx").exists()


def test_int8_data_is_built_before_exporting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_export: None
) -> None:
    """A dataset that cannot be read (here: a folder dataset whose root is missing) fails in seconds."""
    ckpt = _synthetic_checkpoint(tmp_path / "tiny.ckpt")
    missing = tmp_path / "nowhere"
    config = tmp_path / "data.yaml"
    config.write_text(f"data:\n  name: folder\n  root: {missing}\n  options: {{num_classes: 13}}\n")
    argv = ["export", "--checkpoint", str(ckpt), "--onnx", str(tmp_path / "m.onnx"), *INT8_ARGS]
    _refused(capsys, [*argv, "--config", str(config)], str(missing))
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.parametrize("which", ["int8", "report"])
def test_int8_outputs_never_replace_a_users_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_export: None, which: str
) -> None:
    """``m.int8.onnx`` / ``m.int8.accuracy.json`` are replaced only when they are what cinet writes there."""
    ckpt = _synthetic_checkpoint(tmp_path / "tiny.ckpt")
    out = tmp_path / "m.onnx"
    target = int8_paths(out)[0 if which == "int8" else 1]
    target.write_text("my notes\n")
    found = "an ONNX model" if which == "int8" else "a JSON object with 'accepted'"
    _refused(
        capsys, ["export", "--checkpoint", str(ckpt), "--onnx", str(out), *INT8_ARGS], str(target), found
    )
    assert target.read_text() == "my notes\n" and not out.exists()
