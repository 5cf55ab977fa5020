"""Inference: predictions on any image, visualisations, point clouds, the paper's figures and ONNX export.

* :class:`~cinet.inference.predictor.Predictor` / :class:`~cinet.inference.predictor.Prediction`
* :mod:`~cinet.inference.visualize` (16-bit depth PNG, colour maps, palettes, overlays, panels)
* :mod:`~cinet.inference.pointcloud` (back-projection, PLY)
* :mod:`~cinet.inference.figures` (Fig. 7 attention maps, Fig. 8 / Eq. 14 shared features)
* :mod:`~cinet.inference.export` (ONNX export, onnxruntime runner)

Submodules import torch; this package itself stays cheap (names resolve lazily).
"""

from __future__ import annotations

import importlib
from typing import Any

# File types the tools read as images (folders and uploads are filtered by these; Pillow decodes them).
IMAGE_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pnm", ".gif"}
)

_EXPORTS = {
    "Predictor": "cinet.inference.predictor",
    "Prediction": "cinet.inference.predictor",
    "load_image": "cinet.inference.predictor",
    "attention_map": "cinet.inference.figures",
    "shared_feature_maps": "cinet.inference.figures",
    "export_onnx": "cinet.inference.export",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'cinet.inference' has no attribute {name!r}")
