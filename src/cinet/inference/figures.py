"""The paper's analysis figures for any image.

* Fig. 7 — the SUM attention map of one pixel: row ``i`` of ``A~ = sigmoid(Q K^T)`` (Eq. 1), where ``i`` is the
  feature-grid cell (output stride 8) holding the pixel. :func:`attention_map` returns it at the feature size;
  :func:`attention_figure` upsamples it and lays it over the image.
* Fig. 8 — the allocated features ``F_d``, ``F_s`` of each sharing stage (Eq. 14: what the FSM or the LSU adds
  to the depth and the segmentation branch), summed over channels and normalised to 0–1.
  :func:`shared_feature_maps` returns them at each stage's feature size; :func:`feature_figures` at image size.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from cinet.errors import InputError
from cinet.inference.predictor import ImageLike, Prediction, Predictor
from cinet.inference.visualize import heatmap_overlay


def _check_output(prediction: Prediction, source: str) -> None:
    if prediction.output is None:
        raise InputError(
            f"{source}: no raw model output; predict with return_output=True (PyTorch checkpoint)"
        )


def _variant(predictor: Predictor) -> str:
    return str(predictor.model_kwargs.get("variant", getattr(predictor.model, "variant", "?")))


def attention_map_of(prediction: Prediction, x: float, y: float, *, source: str = "<model>") -> np.ndarray:
    """The SUM attention row of image pixel ``(x, y)`` from a prediction made with ``return_output=True``.

    Args:
        prediction: Result of :meth:`Predictor.predict` with ``return_output=True``.
        x: Column of the pixel in the input image (0-based).
        y: Row of the pixel in the input image (0-based).
        source: Name used in error messages.

    Returns:
        ``[h, w]`` float32 in (0, 1): ``sigmoid(q_i . k_j)`` for every feature cell j (Eq. 1), at the feature
        size of the network input (which includes any padding at the bottom / right).

    Raises:
        InputError: The model has no SUM, or (x, y) lies outside the image.
    """
    _check_output(prediction, source)
    att = prediction.output.attention
    if att is None:
        raise InputError(f"{source}: the model has no SUM (scene-understanding module), so no attention map")
    h_img, w_img = prediction.geometry.orig
    if not (0 <= x < w_img and 0 <= y < h_img):
        raise InputError(f"--attention: pixel ({x}, {y}) is outside the {w_img}x{h_img} image")
    col, row = prediction.geometry.feature_cell(x, y, att.size)
    return att.row(row * att.size[1] + col)[0].float().cpu().numpy()


def attention_map(predictor: Predictor, image: ImageLike, x: float, y: float) -> np.ndarray:
    """The raw SUM attention map (Fig. 7) of pixel ``(x, y)`` of ``image``, at the feature size ``[h, w]``.

    Raises:
        InputError: The model has no SUM (variants ``baseline``, ``fsm``, ``lsu``) or is an ONNX file.
    """
    predictor.require_output_features("attention")
    if not predictor.has_attention:
        raise InputError(
            f"{predictor.source}: variant {_variant(predictor)!r} has no SUM, so no attention map "
            "(use sum, sum_fsm or cinet)"
        )
    return attention_map_of(predictor.predict(image, return_output=True), x, y, source=predictor.source)


def upsample_to_image(prediction: Prediction, fmap: np.ndarray) -> np.ndarray:
    """A map over the network input at any resolution -> image size (crop padding, bilinear)."""
    t = torch.from_numpy(np.ascontiguousarray(fmap, dtype=np.float32))[None, None]
    return prediction.geometry.restore(t)[0, 0].numpy()


def attention_figure(
    prediction: Prediction, x: float, y: float, *, normalize: bool = True, source: str = "<model>"
) -> tuple[np.ndarray, np.ndarray]:
    """Fig. 7 for one pixel: ``(overlay HxWx3 uint8, raw map [h, w])``.

    The map is upsampled (bilinear) to the image, optionally min–max normalised for display (``normalize``;
    otherwise the sigmoid values 0..1 are shown as they are) and drawn with ``jet`` over the image; the query
    pixel is marked with a cross.
    """
    raw = attention_map_of(prediction, x, y, source=source)
    heat = upsample_to_image(prediction, raw)
    if normalize:
        lo, hi = float(heat.min()), float(heat.max())
        heat = (heat - lo) / (hi - lo) if hi > lo else np.zeros_like(heat)
    return heatmap_overlay(prediction.image, np.clip(heat, 0.0, 1.0), marker=(x, y)), raw


def _normalise01(t: torch.Tensor) -> torch.Tensor:
    lo, hi = t.min(), t.max()
    return (t - lo) / (hi - lo) if float(hi - lo) > 0 else torch.zeros_like(t)


def _channel_sums(prediction: Prediction, source: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
    _check_output(prediction, source)
    stages = prediction.output.shared_features
    if not stages:
        raise InputError(
            f"{source}: the model has no feature-sharing module (FSM / LSU), so no Eq. 14 features"
        )
    out = []
    for f_d, f_s in stages:
        rows, cols = prediction.geometry.content_cells(tuple(f_d.shape[-2:]))
        out.append((f_d[0].float().sum(0)[:rows, :cols], f_s[0].float().sum(0)[:rows, :cols]))
    return out


def shared_feature_maps(
    prediction: Prediction, *, source: str = "<model>"
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Fig. 8: per sharing stage (coarse to fine), ``(F_d, F_s)`` of Eq. 14 summed over channels, in 0–1.

    Each map is at its stage's feature size, cropped to the image content (padding removed), then min–max
    normalised.

    Raises:
        InputError: The model has no sharing module (variants ``baseline`` and ``sum``).
    """
    return [
        (_normalise01(d).cpu().numpy(), _normalise01(s).cpu().numpy())
        for d, s in _channel_sums(prediction, source)
    ]


def feature_figures(
    prediction: Prediction, *, source: str = "<model>"
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Fig. 8 at image size: per stage ``(F_d, F_s)`` as ``HxW`` uint8 greyscale (0 = black = 0, 255 = 1).

    The channel sums are upsampled (bilinear) to the image, then min–max normalised.
    """
    h, w = prediction.geometry.orig
    figures = []
    for maps in _channel_sums(prediction, source):
        pair = []
        for m in maps:
            t = F.interpolate(m[None, None], size=(h, w), mode="bilinear", align_corners=False)[0, 0]
            t = _normalise01(t).cpu().numpy()
            pair.append(np.clip(np.rint(t * 255.0), 0, 255).astype(np.uint8))
        figures.append((pair[0], pair[1]))
    return figures
