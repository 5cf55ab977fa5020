"""The CPU kinds the project runs on, as :func:`cinet.utils.precision.cpu_features` reports them: the stand-ins
of the capability probe in the tests of every per-CPU choice (training precision, inference runtime)."""

from __future__ import annotations

#: Intel Xeon (Sapphire Rapids and newer): AMX-BF16 / AMX-INT8 and AVX-512 BF16 / VNNI.
XEON_AMX = {"amx_bf16": True, "amx_int8": True, "avx512_bf16": True, "avx512_vnni": True, "avx512_f": True}
#: AMD EPYC Zen 4: AVX-512 BF16 / VNNI, no AMX.
EPYC_ZEN4 = {"amx_bf16": False, "amx_int8": False, "avx512_bf16": True, "avx512_vnni": True, "avx512_f": True}
#: An AVX2-only CPU: no bf16 matrix units (bf16 is emulated).
NO_BF16 = {
    "amx_bf16": False,
    "amx_int8": False,
    "avx512_bf16": False,
    "avx512_vnni": False,
    "avx512_f": False,
}
