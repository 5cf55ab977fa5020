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
    [("32", "32-true"), ("64", "64-true"), ("bf16-mixed", "bf16-mixed"), ("16-mixed", "16-mixed")],
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
