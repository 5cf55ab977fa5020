"""``precision: auto`` resolves per machine (issue #27): both CPU kinds, CUDA with and without bf16, explicit values."""

from __future__ import annotations

import pytest

from cinet.utils.precision import cpu_features, resolve_precision
from cpu_kinds import EPYC_ZEN4, NO_BF16, XEON_AMX


@pytest.mark.parametrize(
    ("features", "expected"),
    [(XEON_AMX, "bf16-mixed"), (EPYC_ZEN4, "bf16-mixed"), (NO_BF16, "32-true")],
    ids=["xeon-amx", "epyc-avx512bf16", "avx2-only"],
)
def test_auto_on_cpu_follows_the_bf16_units(features, expected):
    choice = resolve_precision("auto", "cpu", features=features)
    assert choice.precision == expected
    assert choice.reason.startswith("auto: " + expected)
    if expected == "bf16-mixed":
        assert ("amx_bf16" in choice.reason) == features["amx_bf16"]


@pytest.mark.parametrize(("bf16", "expected"), [(True, "bf16-mixed"), (False, "32-true")])
def test_auto_on_cuda_follows_the_device(bf16, expected):
    for accelerator in ("gpu", "cuda"):
        assert resolve_precision("auto", accelerator, cuda_bf16=bf16).precision == expected


def test_auto_on_other_accelerators_is_float32():
    assert resolve_precision("auto", "mps", features=XEON_AMX).precision == "32-true"


@pytest.mark.parametrize(
    ("value", "expected"),
    [("32", "32-true"), ("bf16-mixed", "bf16-mixed"), ("16-mixed", "16-mixed")],
)
def test_explicit_values_are_kept(value, expected):
    choice = resolve_precision(value, "cpu", features=NO_BF16)
    assert choice.precision == expected
    assert "set in the config" in choice.reason


def test_cpu_features_reads_this_machine():
    feats = cpu_features()
    assert set(feats) >= {"amx_bf16", "amx_int8", "avx512_bf16", "avx512_vnni", "avx512_f", "cpu_name"}
    assert all(isinstance(feats[k], bool) for k in feats if k != "cpu_name")
    # AMX implies AVX-512 on every CPU that has it
    assert not feats["amx_bf16"] or feats["avx512_f"]


def test_cpu_features_falls_back_to_proc_cpuinfo(monkeypatch, tmp_path):
    import builtins

    import torch

    monkeypatch.setattr(torch._C._cpu, "_get_cpu_capability", lambda: {}, raising=False)
    fake = tmp_path / "cpuinfo"
    fake.write_text("processor\t: 0\nflags\t\t: fpu sse avx512f avx512_bf16 avx512_vnni\n")
    real_open = builtins.open
    monkeypatch.setattr(
        builtins, "open", lambda p, *a, **k: real_open(fake if p == "/proc/cpuinfo" else p, *a, **k)
    )
    feats = cpu_features()
    assert feats["avx512_bf16"] and feats["avx512_vnni"] and feats["avx512_f"] and not feats["amx_bf16"]
    assert resolve_precision("auto", "cpu", features=feats).precision == "bf16-mixed"


@pytest.mark.parametrize(
    ("speedup", "expected"),
    [(0.01, "32-true"), (1.09, "32-true"), (1.1, "bf16-mixed"), (1.6, "bf16-mixed")],
    ids=["slow-reference-path", "below-threshold", "at-threshold", "zen4"],
)
def test_auto_on_a_cpu_with_bf16_units_needs_a_measured_speedup(speedup, expected):
    # the flags say bf16; the measured convolution step decides (an EPYC ran bf16 convolutions 100x slower)
    from cinet.utils.precision import MIN_BF16_SPEEDUP

    assert MIN_BF16_SPEEDUP == 1.1
    for kind in (EPYC_ZEN4, XEON_AMX):
        choice = resolve_precision("auto", "cpu", features=kind, bf16_speedup=speedup)
        assert choice.precision == expected
        assert f"{speedup:.2f}x" in choice.reason and "avx512_bf16" in choice.reason


def test_the_speedup_is_asked_only_where_the_flags_show_bf16_units():
    def never() -> float:
        raise AssertionError("measured on a CPU without bf16 units")

    assert resolve_precision("auto", "cpu", features=NO_BF16, bf16_speedup=never).precision == "32-true"
    assert (
        resolve_precision("auto", "cpu", features=EPYC_ZEN4, bf16_speedup=lambda: 0.5).precision == "32-true"
    )


def test_this_machine_is_measured(monkeypatch):
    from cinet.utils import precision

    monkeypatch.setattr(precision, "cpu_features", lambda: dict(EPYC_ZEN4, cpu_name="stand-in"))
    monkeypatch.setattr(precision, "cpu_bf16_speedup", lambda: 0.02)
    choice = resolve_precision("auto", "cpu")
    assert choice.precision == "32-true" and "0.02x" in choice.reason
    monkeypatch.setattr(precision, "cpu_bf16_speedup", lambda: 1.7)
    assert resolve_precision("auto", "cpu").precision == "bf16-mixed"


def test_the_bf16_probe_measures_once_and_leaves_no_trace(monkeypatch):
    import torch

    from cinet.utils import precision

    monkeypatch.delenv(precision.BF16_SPEEDUP_ENV, raising=False)
    precision.cpu_bf16_speedup.cache_clear()
    rng, threads = torch.random.get_rng_state(), torch.get_num_threads()
    speedup = precision.cpu_bf16_speedup(repeats=2)
    assert 0.0 < speedup < float("inf")
    assert torch.equal(torch.random.get_rng_state(), rng)  # the global generator is not drawn from
    assert torch.get_num_threads() == threads  # the probe's one thread is given back
    assert float(precision.os.environ[precision.BF16_SPEEDUP_ENV]) == pytest.approx(speedup, rel=1e-3)
    precision.cpu_bf16_speedup.cache_clear()
    monkeypatch.setenv(precision.BF16_SPEEDUP_ENV, "0.25")  # what a DDP worker inherits: read, not measured
    assert precision.cpu_bf16_speedup() == 0.25
    precision.cpu_bf16_speedup.cache_clear()
