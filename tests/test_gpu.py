"""CUDA checks (``gpu`` marker; ``conftest.py`` skips them without a GPU).

* every model variant trains a step under bf16 autocast in channels-last memory format;
* the tiled and Triton attention paths equal the naive one in fp32 (values and gradients) at the SUM sizes
  of real images (N = 1000, 4800; D = 64, C = 128), beyond what ``test_ops_attention.py`` covers on CUDA
  (Triton at D = 16, C = 32 and N <= 1000; tiled values at N = 1000);
* a smoke training run on the GPU through the CLI in bf16-mixed writes ``metrics.json``;
* ``Predictor`` on CUDA gives the depth of the CPU.

Each check is a helper taking the device, so its logic also runs on CPU (``device="cpu"``) during development.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from cinet.cli import main
from cinet.config import load_config
from cinet.inference.predictor import Predictor
from cinet.metrics import METRIC_KEYS
from cinet.models import build_model
from cinet.ops import attention_bce, resolve_impl, sigmoid_attention, triton_kernels
from cinet.recipe import VARIANTS
from inference_fixtures import synthetic_image, tiny_info, tiny_model

pytestmark = pytest.mark.gpu

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "configs" / "smoke.yaml"
IGNORE = 255
NUM_CLASSES = 13


# ---------------------------------------------------------------------------- (a) variants, bf16, channels-last


def variant_step(variant: str, device: str, dtype: torch.dtype = torch.bfloat16) -> None:
    """Forward + backward of a tiny ``variant`` under autocast(``dtype``) in channels-last; finite, depth > 0."""
    torch.manual_seed(0)
    model = build_model(
        variant=variant,
        encoder="resnet18",
        num_classes=NUM_CLASSES,
        channels=32,
        qk_channels=8,
        decoder_channels=(16, 8, 8),
    )
    model = model.to(device, memory_format=torch.channels_last).train()
    images = torch.randn(2, 3, 64, 80, device=device).contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, NUM_CLASSES, (2, 64, 80), device=device)
    labels[:, :8] = IGNORE
    with torch.autocast(device_type=torch.device(device).type, dtype=dtype):
        out = model(images)
        if VARIANTS[variant].use_sum:  # training stage 1: the ideal map from the labels
            ideal = model(images, ideal_labels=labels)
            assert torch.isfinite(ideal.depth.float()).all() and (ideal.depth.float() > 0).all()
    depth, logits = out.depth.float(), out.seg_logits.float()
    assert depth.shape == (2, 1, 64, 80) and logits.shape == (2, NUM_CLASSES, 64, 80)
    assert torch.isfinite(depth).all() and torch.isfinite(logits).all()
    assert (depth > 0).all(), f"{variant}: depth must be > 0"
    loss = depth.log().mean() + torch.nn.functional.cross_entropy(logits, labels, ignore_index=IGNORE)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert sum(g is not None for g in grads) > 0.9 * len(grads), f"{variant}: parameters without gradient"
    for name, p in model.named_parameters():
        if p.grad is not None:
            assert torch.isfinite(p.grad).all(), f"{variant}: non-finite gradient of {name}"


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_variant_bf16_channels_last_forward_backward(variant: str) -> None:
    variant_step(variant, "cuda")


# ---------------------------------------------------------------------------- (b) attention parity at real N


def attention_parity(impl: str, n: int, device: str, b: int = 2, d: int = 64, c: int = 128) -> None:
    """``impl`` equals ``naive`` in fp32 for the SUM product and the attention BCE, values and gradients."""
    assert resolve_impl(impl, torch.device(device), n, dtype=torch.float32, head_dim=d) == impl
    g = torch.Generator().manual_seed(n)
    q = torch.randn(b, n, d, generator=g) / d**0.5
    k = torch.randn(b, n, d, generator=g)
    v = torch.randn(b, n, c, generator=g)
    w = torch.randn(b, n, c, generator=g)
    labels = torch.randint(0, 6, (b, n), generator=g)
    labels[torch.rand(b, n, generator=g) < 0.2] = IGNORE
    labels[0, : n // 10] = IGNORE  # a block of ignored pixels too
    w, labels = w.to(device), labels.to(device)

    results = {}
    for path in ("naive", impl):
        xs = [t.to(device).requires_grad_() for t in (q, k, v)]
        y = sigmoid_attention(*xs, scale=1.0 / n, impl=path)
        loss = attention_bce(xs[0], xs[1], labels, ignore_index=IGNORE, impl=path)
        assert y.dtype == torch.float32 and loss.dtype == torch.float32
        grads = torch.autograd.grad((y * w).sum() + loss, xs)
        results[path] = [y.detach(), loss.detach(), *grads]
    names = ("Y", "L_att", "dQ", "dK", "dV")
    for name, got, ref in zip(names, results[impl], results["naive"]):
        assert torch.isfinite(got).all(), f"{impl} {name}: non-finite"
        atol = 1e-5 * float(ref.abs().max()) + 1e-12  # fp32 sums in another order near zero
        torch.testing.assert_close(got, ref, rtol=1e-4, atol=atol, msg=lambda m, nm=name: f"{impl} {nm}: {m}")


@pytest.mark.parametrize("n", [1000, 4800])
@pytest.mark.parametrize("impl", ["tiled", "triton"])
def test_attention_paths_match_naive_fp32(impl: str, n: int, monkeypatch: pytest.MonkeyPatch) -> None:
    if impl == "triton" and not triton_kernels.HAS_TRITON:
        pytest.skip("Triton is not installed")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)  # the compiled kernels, not the interpreter
    old = torch.backends.cuda.matmul.fp32_precision
    torch.backends.cuda.matmul.fp32_precision = "ieee"  # the naive reference in true fp32, not TF32
    try:
        attention_parity(impl, n, "cuda")
    finally:
        torch.backends.cuda.matmul.fp32_precision = old


# ---------------------------------------------------------------------------- (c) smoke training on the GPU


def smoke_train(run_dir: Path, accelerator: str, precision: str, attention_impl: str) -> dict:
    """``cinet train --config configs/smoke.yaml`` on ``accelerator``; returns metrics.json."""
    overrides = [
        f"trainer.accelerator={accelerator}",
        "trainer.devices=1",
        f"trainer.precision={precision}",
        f"model.attention_impl={attention_impl}",
    ]
    assert main(["train", "--config", str(SMOKE), "--run-dir", str(run_dir), *overrides]) == 0
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for key in METRIC_KEYS:
        assert metrics[key] is not None and math.isfinite(metrics[key]), key
    assert 0.0 <= metrics["delta1"] <= 1.0 and metrics["rms"] > 0
    assert (run_dir / "last.ckpt").is_file()
    saved = load_config(run_dir / "config.yaml").trainer  # hardware keys live in the trainer section
    assert (saved.accelerator, saved.precision) == (accelerator, precision)
    return metrics


@pytest.mark.parametrize("attention_impl", ["naive", "auto"])  # auto: the Triton kernels on CUDA
def test_smoke_train_on_gpu_bf16(attention_impl: str, tmp_path: Path) -> None:
    smoke_train(tmp_path / "run", "gpu", "bf16-mixed", attention_impl)


# ---------------------------------------------------------------------------- (d) Predictor CUDA vs CPU


def predictor_depths(device: str, sizes: tuple[tuple[int, int], ...]) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(depth, labels)`` of a tiny model's :class:`Predictor` on ``device`` for synthetic images."""
    model, _ = tiny_model()  # seeded: the same weights on every call
    predictor = Predictor(model, tiny_info(), device=device)
    out = []
    for i, (h, w) in enumerate(sizes):
        pred = predictor.predict(synthetic_image(h, w, seed=i))
        assert pred.depth.shape == (h, w) and pred.depth.dtype == np.float32
        out.append((pred.depth, pred.labels))
    return out


def test_predictor_cuda_matches_cpu() -> None:
    sizes = ((40, 56), (37, 53), (96, 128))  # odd sizes are padded to multiples of 8
    cpu = predictor_depths("cpu", sizes)
    with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):  # cuDNN's default TF32 is ~1e-3 off
        gpu = predictor_depths("cuda", sizes)
    for (d_cpu, l_cpu), (d_gpu, l_gpu) in zip(cpu, gpu):
        assert np.isfinite(d_gpu).all() and (d_gpu > 0).all()
        np.testing.assert_allclose(d_gpu, d_cpu, rtol=0, atol=1e-3)
        assert (l_gpu == l_cpu).mean() > 0.99  # argmax may flip where two logits tie
