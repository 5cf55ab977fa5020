"""The inference runtime (issue #27 item 4): the per-machine ``auto`` choice for both CPU kinds (the capability
probe stood in for), the first-batch parity check against eager float32 and its fall-back, the runtimes by
name through the Predictor and ``cinet predict``."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from cinet.cli import main
from cinet.errors import InputError
from cinet.inference import predictor as predictor_module
from cinet.inference.predictor import Predictor
from cinet.inference.runtime import RUNTIMES, Agreement, agreement, resolve_runtime
from cpu_kinds import EPYC_ZEN4, NO_BF16, XEON_AMX
from inference_fixtures import save_tiny_checkpoint, synthetic_image, tiny_info, tiny_model

CPU = torch.device("cpu")


@pytest.mark.parametrize(
    ("features", "expected"),
    [(XEON_AMX, "eager-bf16"), (EPYC_ZEN4, "eager-bf16"), (NO_BF16, "eager-fp32")],
    ids=["xeon-amx", "epyc-zen4", "no-bf16"],
)
def test_auto_on_each_cpu_kind(features: dict[str, bool], expected: str) -> None:
    choice = resolve_runtime("auto", CPU, features=features)
    assert choice.runtime == expected
    assert choice.reason.startswith(f"auto: {expected}")


@pytest.mark.parametrize(("bf16", "expected"), [(True, "eager-bf16"), (False, "eager-fp32")])
def test_auto_on_cuda(bf16: bool, expected: str) -> None:
    assert resolve_runtime("auto", torch.device("cuda"), cuda_bf16=bf16).runtime == expected


@pytest.mark.parametrize("name", ["eager-fp32", "eager-bf16", "onnx-fp32"])
def test_named_runtime_of_a_pytorch_model_is_kept(name: str) -> None:
    assert resolve_runtime(name, CPU, features=XEON_AMX).runtime == name


@pytest.mark.parametrize("kind", ["onnx-fp32", "onnx-int8"])
def test_an_onnx_file_runs_as_what_it_is(kind: str) -> None:
    assert resolve_runtime("auto", CPU, onnx_kind=kind, features=XEON_AMX).runtime == kind
    assert resolve_runtime(kind, CPU, onnx_kind=kind).runtime == kind


@pytest.mark.parametrize(
    ("runtime", "onnx_kind", "message"),
    [
        (
            "onnx-int8",
            None,
            r"--runtime: onnx-int8 runs an INT8 file: make it with 'cinet export --quantize int8'",
        ),
        ("eager-bf16", "onnx-fp32", r"--runtime: eager-bf16 needs a PyTorch model"),
        ("onnx-int8", "onnx-fp32", r"--runtime: onnx-int8 asked for, but the ONNX file is onnx-fp32"),
        ("fp16", None, r"--runtime: unknown runtime 'fp16'; valid: auto, eager-fp32"),
    ],
)
def test_impossible_runtime_is_one_line(runtime: str, onnx_kind: str | None, message: str) -> None:
    with pytest.raises(InputError, match=message):
        resolve_runtime(runtime, CPU, onnx_kind=onnx_kind, where="--runtime")


@pytest.mark.parametrize(
    ("runtime", "source", "message"),
    [
        ("onnx-int8", ["--checkpoint", "missing.ckpt"], "--runtime: onnx-int8 runs an INT8 file"),
        ("eager-bf16", ["--onnx", "missing.onnx"], "--runtime: eager-bf16 needs a PyTorch model"),
    ],
)
def test_cli_refuses_the_runtime_before_loading(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], runtime: str, source: list[str], message: str
) -> None:
    """The model files do not exist: the runtime is refused first, by the option's name, nothing written."""
    image = tmp_path / "a.png"
    from PIL import Image

    Image.fromarray(synthetic_image(40, 56)).save(image)
    out = tmp_path / "out"
    rc = main(["predict", *source, str(image), "--out", str(out), "--runtime", runtime])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and message in err[0], err
    assert not out.exists()


def test_the_other_precision_of_an_onnx_file_is_named() -> None:
    from cinet.inference.runtime import RuntimeChoiceError

    with pytest.raises(
        RuntimeChoiceError, match=r"^runtime: onnx-fp32 asked for, but the ONNX file is onnx-int8"
    ):
        resolve_runtime("onnx-fp32", CPU, onnx_kind="onnx-int8")


def test_auto_on_cuda_asks_the_device_in_use(monkeypatch: pytest.MonkeyPatch) -> None:
    from cinet.inference import runtime

    asked = []
    monkeypatch.setattr(runtime, "machine_cuda_bf16", lambda device: asked.append(device) or False)
    assert resolve_runtime("auto", torch.device("cuda:1")).runtime == "eager-fp32"
    assert asked == [torch.device("cuda:1")]


def test_runtime_names() -> None:
    assert RUNTIMES == ("auto", "eager-fp32", "eager-bf16", "onnx-fp32", "onnx-int8")


def test_agreement_by_hand() -> None:
    ref_depth = torch.tensor([1.0, 2.0, 4.0, 0.0]).view(1, 1, 2, 2)  # the 0 (no reference depth) is left out
    depth = torch.tensor([1.01, 2.0, 3.96, 7.0]).view(1, 1, 2, 2)
    ref_logits = torch.zeros(1, 3, 2, 2)
    ref_logits[:, 0] = 1.0  # class 0 everywhere
    logits = ref_logits.clone()
    logits[0, 2, 1, 1] = 5.0  # one of 4 pixels becomes class 2
    agr = agreement(depth, logits, ref_depth, ref_logits)
    assert agr.depth_rel_diff == pytest.approx((0.01 + 0.0 + 0.01) / 3)
    assert agr.label_disagreement == pytest.approx(0.25)
    assert not agr.accepted
    assert Agreement(0.01, 0.01).accepted and not Agreement(0.0101, 0.0).accepted
    assert not Agreement(math.nan, 0.0).accepted


def _predict(pred: Predictor, seed: int = 0) -> np.ndarray:
    return pred.predict_batch(
        [synthetic_image(40, 56, seed), synthetic_image(40, 56, seed + 1)], batch_size=2
    )


def test_bf16_checked_on_the_first_batch_and_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    model, _ = tiny_model()
    ref = _predict(Predictor(model, tiny_info(), runtime="eager-fp32"))
    pred = Predictor(model, tiny_info(), runtime="eager-bf16")
    calls = []
    monkeypatch.setattr(predictor_module, "agreement", lambda *a: calls.append(a) or Agreement(0.0, 0.0))
    out = _predict(pred) + _predict(pred)
    assert pred.runtime == "eager-bf16" and len(calls) == 1  # the first batch only
    gap = max(float(np.abs(o.depth - r.depth).max()) for o, r in zip(out, ref * 2))
    assert 0.0 < gap < 0.05 * float(ref[0].depth.max())  # bf16 ran: close to float32, not equal


def test_a_runtime_that_disagrees_falls_back_to_fp32(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    model, _ = tiny_model()
    ref = _predict(Predictor(model, tiny_info(), runtime="eager-fp32"))
    pred = Predictor(model, tiny_info(), runtime="eager-bf16")
    monkeypatch.setattr(predictor_module, "agreement", lambda *a: Agreement(0.02, 0.0))
    with caplog.at_level(logging.WARNING, logger="cinet.inference.predictor"):
        out = _predict(pred)
    assert pred.runtime == "eager-fp32"
    assert (
        "runtime eager-bf16 differs from eager-fp32 on the first batch (depth 2.00 % mean relative"
        in caplog.text
    )
    for o, r in zip(out, ref):  # the fall-back batch is the float32 result itself
        np.testing.assert_array_equal(o.depth, r.depth)
        np.testing.assert_array_equal(o.labels, r.labels)


def test_onnx_fp32_of_a_pytorch_model_matches_eager(tmp_path: Path) -> None:
    model, _ = tiny_model()
    ref = _predict(Predictor(model, tiny_info(), runtime="eager-fp32"))
    pred = Predictor(model, tiny_info(), runtime="onnx-fp32", train_size=(40, 56))
    out = _predict(pred)
    assert pred.runtime == "onnx-fp32"  # passed its first-batch check
    for o, r in zip(out, ref):
        np.testing.assert_allclose(o.depth, r.depth, rtol=1e-3, atol=1e-3)
        assert (o.labels == r.labels).mean() > 0.99


def test_predict_runtime_option(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = save_tiny_checkpoint(tmp_path / "tiny.ckpt")
    from PIL import Image

    image = tmp_path / "in" / "a.png"
    image.parent.mkdir()
    Image.fromarray(synthetic_image(40, 56)).save(image)
    out = tmp_path / "out"
    rc = main(["predict", "--checkpoint", str(ckpt), str(image), "--out", str(out), "--runtime", "onnx-int8"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "--runtime: onnx-int8 runs an INT8 file" in err[0]
    assert not out.exists()  # refused before anything was written
    rc = main(
        ["predict", "--checkpoint", str(ckpt), str(image), "--out", str(out), "--runtime", "eager-bf16"]
    )
    assert rc == 0 and (out / "a_depth.png").is_file()
    assert "runtime eager-bf16" in capsys.readouterr().out


def test_auto_falls_back_quietly(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """``auto`` on a bf16 CPU tries eager-bf16; a failed check is an info line (the user asked for nothing)."""
    from cinet.inference import runtime

    monkeypatch.setattr(runtime, "machine_cpu_features", lambda: EPYC_ZEN4)
    model, _ = tiny_model()
    pred = Predictor(model, tiny_info())
    assert pred.runtime == "eager-bf16"
    monkeypatch.setattr(predictor_module, "agreement", lambda *a: Agreement(0.0, 0.02))
    with caplog.at_level(logging.INFO, logger="cinet.inference.predictor"):
        _predict(pred)
    assert pred.runtime == "eager-fp32"
    records = [r for r in caplog.records if "differs from eager-fp32" in r.getMessage()]
    assert len(records) == 1 and records[0].levelno == logging.INFO


def test_bf16_keeps_the_raw_output_in_float32(monkeypatch: pytest.MonkeyPatch) -> None:
    """``--attention`` / ``--features`` under eager-bf16: the whole output, checked, in float32 tensors."""
    model, _ = tiny_model()
    pred = Predictor(model, tiny_info(), runtime="eager-bf16")
    monkeypatch.setattr(predictor_module, "agreement", lambda *a: Agreement(0.0, 0.0))
    out = pred.predict_batch([synthetic_image(40, 56)], return_output=True)[0].output
    assert pred.runtime == "eager-bf16"
    assert out.attention.query.dtype == torch.float32 and out.shared_features[0][0].dtype == torch.float32


def test_onnx_runtime_switches_to_eager_for_the_raw_output(caplog: pytest.LogCaptureFixture) -> None:
    model, _ = tiny_model()
    pred = Predictor(model, tiny_info(), runtime="onnx-fp32")
    onnx_dir = Path(pred._onnx_dir.name)
    with caplog.at_level(logging.WARNING, logger="cinet.inference.predictor"):
        out = pred.predict_batch([synthetic_image(40, 56)], return_output=True)[0].output
    assert out is not None and pred.runtime == "eager-fp32"
    assert "need the PyTorch model: runtime eager-fp32, not onnx-fp32" in caplog.text
    assert not onnx_dir.exists()  # the exported file is released


def test_onnx_runtime_memory_estimate_counts_the_naive_attention() -> None:
    model, _ = tiny_model()
    eager = Predictor(model, tiny_info(), runtime="eager-fp32")
    onnx = Predictor(model, tiny_info(), runtime="onnx-fp32")
    n = (480 // 8) * (640 // 8)
    assert onnx.forward_bytes(480, 640) >= 2 * 4 * n * n > eager.forward_bytes(480, 640)


def test_auto_runtime_on_this_machine_reads_the_measured_speedup(monkeypatch):
    from cinet.inference import runtime
    from cpu_kinds import EPYC_ZEN4

    monkeypatch.setattr(runtime, "machine_cpu_features", lambda: EPYC_ZEN4)
    monkeypatch.setattr(runtime, "machine_bf16_speedup", lambda: 0.01)  # bf16 convolutions on a slow path
    choice = resolve_runtime("auto", CPU)
    assert choice.runtime == "eager-fp32" and "0.01x" in choice.reason
    monkeypatch.setattr(runtime, "machine_bf16_speedup", lambda: 1.6)
    assert resolve_runtime("auto", CPU).runtime == "eager-bf16"
