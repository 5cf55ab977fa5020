"""Shared helpers of the inference tests: a tiny CI-Net saved as a checkpoint, synthetic images.

Imported by ``test_inference*.py`` and ``test_export.py`` (pytest puts ``tests/`` on ``sys.path``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

TINY = {
    "encoder": "resnet18",
    "num_classes": 5,
    "channels": 32,
    "qk_channels": 8,
    "decoder_channels": (16, 8, 8),
}
# Intrinsics at the reference size 56x40 (width, height): chosen so that hand computations are easy.
INTRINSICS = (50.0, 48.0, 27.5, 19.5)
REFERENCE_SIZE = (56, 40)


def tiny_info():
    from cinet.data.info import DatasetInfo, voc_palette

    return DatasetInfo(
        name="toy",
        num_classes=TINY["num_classes"],
        class_names=[f"class{i}" for i in range(TINY["num_classes"])],
        palette=voc_palette(TINY["num_classes"]),
        intrinsics=INTRINSICS,
        reference_size=REFERENCE_SIZE,
        mean=(0.4, 0.5, 0.6),
        std=(0.2, 0.25, 0.3),
    )


def tiny_model(variant: str = "cinet", **overrides):
    import torch

    from cinet.models import build_model

    torch.manual_seed(0)
    kwargs = {**TINY, **overrides, "variant": variant}
    model = build_model(**kwargs).eval()
    # Random BN statistics so that outputs vary over the image (a fresh model predicts nearly constant maps),
    # and the zero-initialised convs (FSM/LSU allocations, SUM value: identity at init) made non-zero, as in a
    # trained model, so that the Fig. 8 features and the SUM's contribution are not all zero.
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
        for p in model.parameters():
            if p.dim() == 4 and not p.any():
                p.normal_(0.0, 0.1)
    return model, kwargs


def save_tiny_checkpoint(path: Path, variant: str = "cinet", **overrides) -> Path:
    from cinet.checkpoint import save_model_checkpoint

    model, kwargs = tiny_model(variant, **overrides)
    return save_model_checkpoint(path, model, kwargs, tiny_info())


def synthetic_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A smooth RGB scene (gradients + a few rectangles), ``HxWx3`` uint8."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.stack([xx / max(width - 1, 1), yy / max(height - 1, 1), 0.5 + 0.0 * xx], axis=-1) * 200.0
    for _ in range(4):
        y0, x0 = rng.integers(0, max(1, height - 4)), rng.integers(0, max(1, width - 4))
        h, w = rng.integers(3, max(4, height // 2)), rng.integers(3, max(4, width // 2))
        img[y0 : y0 + h, x0 : x0 + w] = rng.integers(0, 255, 3)
    return np.clip(img, 0, 255).astype(np.uint8)
