"""Shared pytest configuration: deterministic, small, CPU-only by default."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("CINET_NO_NETWORK", "1")  # tests never download anything


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _float32_inference(monkeypatch: pytest.MonkeyPatch) -> None:
    """``--runtime auto`` resolves as on a CPU without bf16 units, on every machine: the inference tests compare
    with float32 references (tests/test_runtime.py passes each CPU kind explicitly)."""
    from cinet.inference import runtime

    monkeypatch.setattr(runtime, "machine_cpu_features", lambda: {})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip ``gpu`` tests when no CUDA device is present (they are also deselected by default)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
