"""Shared pytest configuration: deterministic, small, CPU-only by default."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import torch

os.environ.setdefault("CINET_NO_NETWORK", "1")  # tests never download anything


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(autouse=True, scope="session")
def _float32_inference() -> Iterator[None]:
    """``--runtime auto`` resolves as on a CPU / GPU without bf16 units, on every machine: the inference tests
    compare with float32 references (tests/test_runtime.py passes each kind explicitly). Session scope: before
    any module-scoped predictor is built."""
    from cinet.inference import runtime

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(runtime, "machine_cpu_features", lambda: {})
        mp.setattr(runtime, "machine_cuda_bf16", lambda device: False)
        # never measured: a test that stands in a bf16 CPU's flags gets the AMD EPYC Zen 4's measured 1.6x
        mp.setattr(runtime, "machine_bf16_speedup", lambda: 1.6)
        yield


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip ``gpu`` tests when no CUDA device is present (they are also deselected by default)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
