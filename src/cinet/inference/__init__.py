"""Inference: predictions on any image, visualisations, point clouds, the paper's figures and ONNX export.

* :mod:`~cinet.inference.predictor`: :class:`~cinet.inference.predictor.Predictor` and its
  :class:`~cinet.inference.predictor.Prediction` (also ``cinet.Predictor``)
* :mod:`~cinet.inference.visualize` (16-bit depth PNG, overlays, panels; colour maps: :mod:`cinet.utils.colors`)
* :mod:`~cinet.inference.pointcloud` (back-projection, PLY)
* :mod:`~cinet.inference.figures` (Fig. 7 attention maps, Fig. 8 / Eq. 14 shared features)
* :mod:`~cinet.inference.export` (ONNX export, onnxruntime runner), :mod:`~cinet.inference.quantize` (INT8)
* :mod:`~cinet.inference.hub` (Hugging Face Hub model folders), :mod:`~cinet.inference.files` /
  :mod:`~cinet.inference.page` (the files and web page of ``cinet predict`` / ``serve``)

Import the submodule you use; this package itself imports nothing (``cinet --help`` reads
:data:`IMAGE_EXTENSIONS` from it without torch).
"""

from __future__ import annotations

# File types the tools read as images (folders and uploads are filtered by these; Pillow decodes them).
IMAGE_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pnm", ".gif"}
)
