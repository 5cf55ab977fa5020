"""Benchmarks run at tiny sizes and print valid JSON with the expected keys (no timing assertions)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cinet import cli
from cinet.errors import CinetError
from cinet.recipe import VARIANTS

REPO = Path(__file__).resolve().parents[1]


def _run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> dict:
    assert cli.main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_bench_cli_module_does_not_import_torch() -> None:
    code = (
        "import argparse, sys; import cinet.commands.bench as c; p = argparse.ArgumentParser(); "
        "c.add_arguments(p); print('torch' in sys.modules)"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == "False"


def assert_peak_fractions(result: dict, entries: list[dict], dtypes: set[str]) -> None:
    """Every row says its compute dtype and its fraction of this run's matmul peak of that dtype (issue #27)."""
    peak = result["peak_flops_per_s"]
    assert {e["dtype"] for e in entries} == dtypes and "matmul" in result["peak_method"]
    for e in entries:
        name = {"float32": "fp32", "bfloat16": "bf16"}.get(e["dtype"], e["dtype"])
        assert peak[name] > 0
        assert e["fraction_of_peak"] == float(f"{e['achieved_flops_per_s'] / peak[name]:.3g}") > 0


def test_attention_bench_tiny(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out_file = tmp_path / "attention.json"
    result = _run_cli(
        [
            "bench",
            "attention",
            "--tiny",
            "--repeat",
            "1",
            "--warmup",
            "0",
            "--device",
            "cpu",
            "--out",
            str(out_file),
        ],
        capsys,
    )
    assert json.loads(out_file.read_text()) == result
    assert result["benchmark"] == "attention"
    assert "ru_maxrss" in result["memory_method"]
    (row,) = result["results"]
    assert (row["B"], row["N"], row["C"], row["D"]) == (2, 300, 32, 16)
    for impl in ("naive", "tiled"):
        assert row[impl]["impl"] == impl
        assert row[impl]["resolved_impl"] == impl
        peak = row[impl]["peak_bytes"]  # growth of the peak RSS: 0 when the heap is reused
        assert isinstance(peak, int) and row[impl]["peak_mib"] == round(peak / 2**20, 1)
        assert row[impl]["median_s"] > 0
        assert row[impl]["tensor_peak_bytes"] > 0
    assert_peak_fractions(result, [row["naive"], row["tiled"]], {"float32"})
    assert row["memory_ratio_naive_over_tiled"] == round(
        row["naive"]["peak_bytes"] / max(row["tiled"]["peak_bytes"], 1), 2
    )
    assert row["time_ratio_naive_over_tiled"] > 0
    assert row["min_time_ratio_naive_over_tiled"] > 0
    assert row["tensor_memory_ratio_naive_over_tiled"] > 1  # the naive path does hold B x N x N maps


def test_attention_bench_skips_naive_that_does_not_fit(monkeypatch: pytest.MonkeyPatch) -> None:
    from cinet.bench import attention

    monkeypatch.setattr(attention, "available_ram_bytes", lambda: 1000)
    monkeypatch.setattr(
        attention, "_measure_fresh", lambda impl, *a: {"impl": impl, "peak_bytes": 1, "median_s": 1.0}
    )
    result = attention.run_attention("1x32768x512x64", device="cpu", repeat=1, warmup=0)
    (row,) = result["results"]
    assert "skipped" in row["naive"]
    assert row["tiled"]["impl"] == "tiled"
    assert "memory_ratio_naive_over_tiled" not in row
    assert row["estimated_naive_bytes"] > 32 * 2**30


def test_attention_step_flops_by_hand() -> None:
    from cinet.bench.attention import step_flops

    # forward: QK^T (2*1*10*10*4 = 800) + sigmoid(.)V (2*1*10*10*3 = 600) + BCE's QK^T (800) = 2200; x3 with
    # the backward (two gradient products per product) = 6600
    assert step_flops(1, 10, 3, 4) == 6600
    assert step_flops(2, 10, 3, 4) == 2 * 6600


def test_attention_measure_in_bfloat16() -> None:
    import torch

    from cinet.bench import attention

    for impl in ("naive", "tiled"):
        row = attention.measure(impl, 1, 64, 8, 8, torch.device("cpu"), 1, 0, None, "bfloat16")
        assert row["impl"] == impl and row["median_s"] > 0
        assert row["tflops"] == float(f"{attention.step_flops(1, 64, 8, 8) / row['median_s'] / 1e12:.4g}")
    x = attention._inputs(1, 4, 2, 2, torch.device("cpu"), torch.bfloat16)
    assert {x[k].dtype for k in ("q", "k", "v", "g")} == {torch.bfloat16}


@pytest.mark.parametrize(
    ("option", "value", "names"),
    [
        ("--dtypes", "float32,float8", "'float8'"),
        ("--sizes", "8x4800x512", "'8x4800x512'"),
        ("--sizes", "8xax1x1", "BxNxCxD"),
        ("--repeat", "0", "must be >= 1, got 0"),  # reported "median of 0 runs"
        ("--warmup", "-1", "must be >= 0, got -1"),
        ("--tile", "0", "must be >= 1, got 0"),
    ],
)
def test_attention_bench_bad_option_is_one_line(
    option: str, value: str, names: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["bench", "attention", "--device", "cpu", option, value]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    (line,) = captured.err.strip().splitlines()
    assert line.startswith(f"error: {option}: ") and names in line


@pytest.mark.parametrize(
    ("bench", "option", "value"),
    [
        ("train-step", "--batch-size", "0"),  # a torch traceback
        ("train-step", "--height", "-5"),
        ("train-step", "--profile", "-1"),
        ("inference", "--num-calib", "0"),
        ("inference", "--channels", "0"),
        ("encoders", "--num-classes", "0"),
        ("encoders", "--width", "0"),
    ],
)
def test_bench_count_below_its_minimum_is_one_line(
    bench: str, option: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["bench", bench, "--tiny", option, value]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"error: {option}: must be >= ") and line.endswith(f"got {value}")


@pytest.mark.parametrize(("bench", "row"), [("train-step", ""), ("encoders", "encoder resnet18: ")])
def test_bench_training_input_too_small_is_one_line(
    bench: str, row: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """One 24x24 image reduces the deepest map to 1x1 (batch norm's traceback, mid-run): refused first."""
    argv = ["bench", bench, "--tiny", "--batch-size", "1", "--height", "24", "--width", "24"]
    assert cli.main([*argv, *(["--encoders", "resnet18"] if bench == "encoders" else [])]) == 2
    captured = capsys.readouterr()
    (line,) = captured.err.strip().splitlines()
    assert captured.out == ""
    assert line.startswith(f"error: --height/--width: {row}a 24x24 (WxH) input with --batch-size 1 reduces")
    assert line.endswith(
        "the smallest square input that trains is --height 33 --width 33 or --batch-size >= 2"
    )


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (
            ["train-step", "--modes", "fp32,bogus"],
            "--modes: unknown 'bogus'; choose among fp32, bf16, channels_last",
        ),
        (
            ["inference", "--modes", "eager,eager_bf16"],
            "--modes: unknown 'eager_bf16'; choose among eager, onnxruntime",
        ),
        (
            ["inference", "--modes", "eager"],
            "--modes: 'onnxruntime' is required (the reference of the ratios)",
        ),
        (
            ["inference", "--device", "cuda"],
            "--device: the inference benchmark runs on the CPU only (cpu), got 'cuda'",
        ),
        (
            ["encoders", "--device", "abc"],
            "--device: the encoders benchmark runs on the CPU only (cpu), got 'abc'",
        ),
        (["encoders", "--flops-size", "abc"], "--flops-size: 'abc' must be HxW in pixels, e.g. 480x640"),
        (
            ["attention", "--impls", "naive,bogus"],
            "--impls: unknown 'bogus'; choose among naive, tiled, triton",
        ),
    ],
    ids=lambda v: v if isinstance(v, str) else " ".join(v),
)
def test_bench_bad_choice_is_one_line(argv: list[str], line: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Each was a ValueError traceback (or, for --impls, a row per size that failed in its worker, exit 0)."""
    assert cli.main(["bench", argv[0], "--tiny", *argv[1:]]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    (err,) = captured.err.strip().splitlines()
    assert err.startswith(f"error: {line}"), err


def test_parse_choices_keeps_order_and_drops_repeats() -> None:
    from cinet.bench.common import parse_choices, parse_hw

    assert parse_choices(" bf16, fp32,bf16 ", ("fp32", "bf16"), "fp32") == ["bf16", "fp32"]
    assert parse_choices("", ("fp32", "bf16"), "fp32") == ["fp32"]  # blank: the default
    assert parse_hw("240X320", "--size") == (240, 320)
    for bad in ("0x5", "5", "5x", "axb", "1x2x3", "-1x4"):
        with pytest.raises(CinetError, match="--size: "):
            parse_hw(bad, "--size")


def test_parse_sizes_rejects_bad_input() -> None:
    from cinet.bench.attention import parse_sizes

    assert parse_sizes("8x4800x512x64, 1x10x2x3") == [(8, 4800, 512, 64), (1, 10, 2, 3)]
    with pytest.raises(ValueError, match="BxNxCxD"):
        parse_sizes("8x4800x512")


def test_train_step_bench_tiny(capsys: pytest.CaptureFixture[str]) -> None:
    argv = "bench train-step --tiny --height 32 --width 40 --modes fp32,bf16_channels_last --repeat 1 --warmup 0 --profile 5"
    result = _run_cli(
        [*argv.split(), "--device", "cpu"],
        capsys,
    )
    assert result["benchmark"] == "train-step"
    assert result["settings"]["encoder"] == "resnet18"
    assert result["flops_per_image"]["train_step"] > result["flops_per_image"]["forward"] > 0
    assert [r["mode"] for r in result["rows"]] == ["fp32", "bf16_channels_last"]
    for row in result["rows"]:
        assert "error" not in row, row
        assert row["images_per_s"] > 0
        assert row["achieved_flops_per_s"] > 0
    assert result["rows"][1]["bf16"] and result["rows"][1]["channels_last"]
    assert_peak_fractions(result, result["rows"], {"fp32", "bf16"})
    top = result["rows"][0]["profile_top_ops"]
    assert len(top) == 5 and all(t["op"] for t in top)
    self_s = [t["self_s"] for t in top]
    assert self_s == sorted(self_s, reverse=True) and self_s[0] > 0  # the most expensive ops, first
    assert sum(t["percent"] for t in top) <= 100.0 + 1e-6


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_train_step_and_encoders_bench_run_every_variant(
    variant: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The benches run the engine's step (CINetModule.compute_losses), so every row of the variant table trains
    its own terms (0.1's own loss crashed for 8 of the 9 variants)."""
    argv = f"bench train-step --tiny --variant {variant} --height 32 --width 40 --modes fp32 --repeat 1 --warmup 0"
    result = _run_cli([*argv.split(), "--device", "cpu"], capsys)
    (row,) = result["rows"]
    assert "error" not in row and row["images_per_s"] > 0, row
    assert result["settings"]["variant"] == variant
    argv = f"bench encoders --tiny --encoders resnet18 --variant {variant} --height 32 --width 40 --repeat 1 --warmup 0"
    (row,) = _run_cli(argv.split(), capsys)["rows"]
    assert row["train_img_s"] > 0 and row["infer_img_s"] > 0


def test_bench_step_is_the_engines_step() -> None:
    """The bench trains the stage-3 terms of the variant (the recipe tables), not a loss of its own."""
    import torch

    from cinet.bench.train_step import build_step_module, synthetic_batch
    from cinet.recipe import TERMS

    settings = {"encoder": "resnet18", "num_classes": 13, "channels": 32, "qk_channels": 16,
                "decoder_channels": (32, 16, 16), "attention_impl": "auto", "batch_size": 1, "height": 32,
                "width": 40}  # fmt: skip
    batch = synthetic_batch(settings, torch.device("cpu"))
    for variant, active in (("baseline", {"depth", "seg"}), ("cinet", set(TERMS)), ("seg_only", {"seg"})):
        module = build_step_module({**settings, "variant": variant})
        assert set(module.recipe.terms) == active
        terms = module.compute_losses(batch)
        for name in TERMS:  # inactive terms are exactly zero, active ones are not
            assert (float(terms[name]) != 0.0) == (name in active), (variant, name)


def test_inference_bench_tiny(capsys: pytest.CaptureFixture[str]) -> None:
    result = _run_cli(
        ["bench", "inference", "--tiny", "--height", "32", "--width", "40", "--repeat", "1", "--warmup", "0",
         "--modes", "eager,onnxruntime,int8,bf16", "--num-calib", "1"],
        capsys,
    )  # fmt: skip
    assert result["benchmark"] == "inference"
    rows = {r["runtime"]: r for r in result["rows"]}
    assert list(rows) == ["pytorch-eager", "pytorch-eager-bf16", "onnxruntime", "int8"]
    assert all(r["images_per_s"] > 0 for r in result["rows"])
    assert result["max_abs_output_diff"] < 1e-2  # both ran the same network
    assert result["speedup_onnxruntime_over_eager"] > 0 and result["speedup_int8_over_onnxruntime"] > 0
    assert rows["int8"]["keep_float"] == ["attention"] and rows["int8"]["onnx_bytes"] < result["onnx_bytes"]
    for low_precision in ("int8", "pytorch-eager-bf16"):  # compared with float32 eager: close, not equal
        assert 0 < rows[low_precision]["depth_mean_rel_diff"] < 0.05
        assert 0.5 < rows[low_precision]["label_agreement"] <= 1
    assert_peak_fractions(result, result["rows"], {"fp32", "bf16", "int8"})


@pytest.mark.parametrize(
    "script", ["attention", "train_step", "inference", "encoders", "single_class_batches"]
)
def test_bench_scripts_show_help(script: str) -> None:
    res = subprocess.run(
        [sys.executable, str(REPO / "bench" / f"{script}.py"), "--help"], capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr
    assert "--tiny" in res.stdout


def test_encoders_bench_tiny(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("timm")
    argv = (
        "bench encoders --tiny --encoders resnet18,timm:test_vit --height 32 --width 40 --repeat 1 --warmup 0"
    )
    result = _run_cli(argv.split(), capsys)
    assert result["benchmark"] == "encoders" and result["settings"]["flops_size"] == "480x640"
    rows = {r["encoder"]: r for r in result["rows"]}
    assert list(rows) == ["resnet18", "timm:test_vit"]
    assert rows["resnet18"]["output_stride"] == 8 and rows["timm:test_vit"]["output_stride"] == 16
    assert rows["timm:test_vit"]["stages"] == 4 and rows["timm:test_vit"]["mean"] == [0.5, 0.5, 0.5]
    assert rows["resnet18"]["infer_vs_first"] == 1.0 and rows["resnet18"]["train_vs_first"] == 1.0
    for r in rows.values():
        assert r["gflops_480x640"] > 0 and r["infer_img_s"] > 0 and r["train_img_s"] > 0
        assert 0 < r["encoder_params_m"] < r["params_m"]
    assert_peak_fractions(result, result["rows"], {"fp32"})
    # a stride-16 encoder does less work at 1/16 than the dilated ResNet-18 at 1/8
    assert rows["timm:test_vit"]["gflops_480x640"] < rows["resnet18"]["gflops_480x640"]


def test_model_settings_from_a_config_with_options_on_top() -> None:
    # --config takes the model, batch and image size of a config; an option given on the command line wins
    import argparse

    import torch

    from cinet.bench.train_step import model_settings, settings_config

    def args(**given: object) -> argparse.Namespace:
        names = ("config", "encoder", "variant", "batch_size", "height", "width", "channels", "num_classes")
        return argparse.Namespace(tiny=False, attention_impl=None, **{n: given.get(n) for n in names})

    cpu = torch.device("cpu")
    demo = model_settings(args(config="demo"), cpu)
    assert demo == {
        "config": "demo",
        "variant": "cinet",
        "encoder": "resnet18",
        "num_classes": 13,
        "channels": 64,
        "qk_channels": 16,
        "decoder_channels": (64, 32, 16),
        "attention_impl": "naive",
        "batch_size": 8,
        "height": 96,
        "width": 128,
    }
    mixed = model_settings(args(config="demo", variant="baseline", batch_size=2, height=64), cpu)
    assert (mixed["variant"], mixed["batch_size"], mixed["height"], mixed["width"]) == (
        "baseline",
        2,
        64,
        128,
    )
    plain = model_settings(args(), cpu)
    assert (plain["config"], plain["encoder"], plain["batch_size"], plain["height"]) == (
        None,
        "resnet101",
        1,
        480,
    )
    cfg = settings_config(demo)  # the config's other model fields are kept, the weights are not loaded
    assert cfg.model.decoder_channels == [64, 32, 16] and cfg.model.encoder_weights is None


def test_bench_config_not_found_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["bench", "train-step", "--config", "no_such_config", "--tiny"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no_such_config" in err[0]


# ------------------------------------------------- files and options checked before any measurement (a run of minutes)


@pytest.fixture
def no_bench(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if a benchmark starts: every refusal below comes before it."""
    import cinet.bench.inference
    import cinet.bench.train_step

    def fail(*args: object, **kwargs: object) -> None:
        pytest.fail("the benchmark ran before the check")

    monkeypatch.setattr(cinet.bench.train_step, "run_train_step", fail)
    monkeypatch.setattr(cinet.bench.inference, "run_inference", fail)


def _refused(capsys: pytest.CaptureFixture[str], argv: list[str], *needles: str) -> str:
    assert cli.main(argv) == 2
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert captured.out == "" and len(lines) == 1 and lines[0].startswith("error: "), captured
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


@pytest.mark.parametrize("case", ["read-only", "file in the way", "folder", "user's file"])
def test_bench_out_is_checked_before_running(
    case: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    no_bench: None,
) -> None:
    """``--out <read-only>/b.json`` ran the whole benchmark, then failed on a hidden temporary file's name."""
    import os
    import types

    out = tmp_path / "b.json"
    needle = {"read-only": "read-only file system", "folder": "is a folder, not a file (--out)",
              "file in the way": "is a file, not a folder", "user's file": "is not a JSON object"}[case]  # fmt: skip
    if case == "read-only":
        monkeypatch.setattr(os, "access", lambda *a, **k: False)
        monkeypatch.setattr(os, "statvfs", lambda p: types.SimpleNamespace(f_flag=os.ST_RDONLY))
    elif case == "folder":
        out.mkdir()
    elif case == "file in the way":
        (tmp_path / "notes.txt").write_text("mine")
        out = tmp_path / "notes.txt" / "b.json"
    else:
        out.write_text("mine")
    before = sorted(p.name for p in tmp_path.iterdir())
    _refused(
        capsys, ["bench", "train-step", "--tiny", "--device", "cpu", "--out", str(out)], str(out), needle
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    if case == "user's file":
        assert out.read_text() == "mine"


def test_bench_out_may_replace_an_earlier_bench_json(tmp_path: Path) -> None:
    import argparse

    from cinet.commands.bench import check_outputs

    out = tmp_path / "b.json"
    out.write_text(json.dumps({"benchmark": "train-step", "rows": []}))
    check_outputs(argparse.Namespace(benchmark="train-step", out=str(out)))  # no error


@pytest.mark.parametrize(
    ("given", "needle"),
    [
        (["--onnx", "NOTES"], "exists and is not an ONNX model (--onnx"),
        (["--num-calib", "0"], "--num-calib: must be >= 1"),
        (["--int8-keep-float", "bogus"], "--int8-keep-float: unknown group 'bogus'"),
    ],
)
def test_inference_bench_options_are_checked_before_running(
    given: list[str], needle: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], no_bench: None
) -> None:
    notes = tmp_path / "notes.onnx"
    notes.write_text("mine")
    given = [str(notes) if g == "NOTES" else g for g in given]
    _refused(capsys, ["bench", "inference", "--tiny", "--modes", "onnxruntime,int8", *given], needle)
    assert notes.read_text() == "mine"
