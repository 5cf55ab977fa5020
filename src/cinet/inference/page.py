"""What the web page of ``cinet serve`` shows for one image, built from the code of ``cinet predict``.

:func:`predict_page` runs the :class:`~cinet.inference.predictor.Predictor` once, writes the files
``cinet predict`` writes for the image (:func:`cinet.inference.files.prediction_files`, with the PLY) into a
folder for the downloads, and returns the views of the page: the input, the coloured depth with its colour bar
in metres, the segmentation overlay with the legend of the classes present, the point clouds of the 3D viewer
(coloured by image and by class), and a prediction that keeps only what :func:`attention_view` needs to draw
the SUM attention map of any pixel (Fig. 7). Nothing here imports Gradio.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cinet.errors import InputError
from cinet.inference import figures, pointcloud, visualize
from cinet.inference.files import FileOptions, prediction_files
from cinet.inference.predictor import Prediction, Predictor
from cinet.models.outputs import CINetOutput
from cinet.preprocess import Geometry, training_side
from cinet.utils import colors

VIEWER_COLOURINGS = ("image", "class")
DEFAULT_VIEWER_POINTS = 150_000


@dataclass(frozen=True)
class LegendEntry:
    """One class present in a segmentation: id, name, palette colour and share of the image's pixels (0..1)."""

    class_id: int
    name: str
    color: tuple[int, int, int]
    share: float


@dataclass
class PageResult:
    """The page's views of one image (all arrays ``HxWx3`` uint8 at the image size unless stated).

    Attributes:
        stem: The download files' stem (the uploaded file's stem).
        image: The input image.
        depth_view: The coloured depth (``<stem>_depth_color.png``) with :func:`visualize.depth_colorbar` below
            it (``(H + bar) x W x 3``).
        overlay: The segmentation overlay (``<stem>_overlay.png``).
        depth_range: ``(min, max)`` metres of the colour map.
        legend: The classes present, most frequent first.
        downloads: The files written, in ``cinet predict``'s order (PNGs, then ``<stem>.ply``).
        viewer: Colouring (``image`` / ``class``) -> a PLY for the 3D viewer (subsampled, y up; see
            :func:`viewer_cloud`); empty when no intrinsics are known (no point cloud).
        prediction: The prediction, its raw output reduced to the SUM attention (None without a SUM).
        network: What the network saw, one line: ``network input 128x96 (scaled from 640x480 to the training
            size)`` (sizes WxH).
        notes: Lines the page shows next to the result (e.g. why there is no point cloud).
    """

    stem: str
    image: np.ndarray
    depth_view: np.ndarray
    overlay: np.ndarray
    depth_range: tuple[float, float]
    legend: list[LegendEntry]
    downloads: list[Path]
    viewer: dict[str, Path]
    prediction: Prediction
    network: str = ""
    notes: list[str] = dataclasses.field(default_factory=list)


def network_line(geometry: Geometry, train_size: tuple[int, int] | None, max_side: int | None) -> str:
    """One line saying at which size the network saw an image and why (sizes WxH, as the page shows them).

    Args:
        geometry: The image's :class:`cinet.preprocess.Geometry`.
        train_size: ``(H, W)`` the checkpoint was trained at, or None.
        max_side: The predictor's cap on the longer side, or None.
    """
    (h, w), (sh, sw) = geometry.orig, geometry.scaled
    line = f"network input {sw}×{sh}"
    if (sh, sw) == (h, w):
        return line + " (the image's own size)"
    why = []
    if train_size is not None and training_side(h, w, train_size) is not None:
        why.append(f"the training size {int(train_size[1])}×{int(train_size[0])}")
    if max_side is not None and max(sh, sw) == max_side:
        why.append(f"--max-side {max_side}")
    reason = f" to {' and '.join(why)}" if why else ""
    return f"{line} (scaled from {w}×{h}{reason}; results at {w}×{h})"


def keep_attention_only(pred: Prediction) -> Prediction:
    """A copy of ``pred`` whose raw output keeps only the SUM attention (query / key), nothing else.

    A page session holds its last prediction for clicks on pixels; the decoder features and the full-size
    logits of the raw output are not needed for that.
    """

    out = pred.output
    if out is None or out.attention is None:
        return dataclasses.replace(pred, output=None, probs=None)
    empty = out.depth.new_zeros((1, 0, 1, 1))
    slim = CINetOutput(depth=empty, seg_logits=empty, attention=out.attention)
    return dataclasses.replace(pred, output=slim, probs=None)


def viewer_cloud(
    pred: Prediction,
    palette: list[list[int]],
    intrinsics: tuple[float, float, float, float],
    colouring: str = "image",
    max_points: int = DEFAULT_VIEWER_POINTS,
) -> np.ndarray:
    """The point cloud of the 3D viewer: at most ``max_points`` points, y up, coloured by image or by class.

    The points of :func:`cinet.inference.pointcloud.point_cloud` (camera frame of ``cinet predict``'s PLY: x
    right, y down, z forward, metres) become ``(x, -y, -z)``: y up, the scene in front of a viewer looking down
    -z, as 3D viewers (glTF, Babylon.js) expect. Every ``stride``-th row and column is kept, with the smallest
    stride that gives at most ``max_points`` points.

    Args:
        pred: The prediction (depth, image, labels).
        palette: The dataset palette (class colours, ``[r, g, b]`` 0..255 per class).
        intrinsics: ``(fx, fy, cx, cy)`` at the image size.
        colouring: ``image`` (the photo's colours) or ``class`` (the palette colour of the predicted class).
        max_points: Upper bound on the number of points (>= 1).

    Returns:
        A :data:`~cinet.inference.pointcloud.PLY_DTYPE` array.

    Raises:
        ValueError: An unknown ``colouring`` or ``max_points`` < 1.
    """
    if colouring not in VIEWER_COLOURINGS:
        raise ValueError(f"colouring must be one of {VIEWER_COLOURINGS}, got {colouring!r}")
    if max_points < 1:
        raise ValueError(f"max_points must be >= 1, got {max_points}")
    valid = np.isfinite(pred.depth) & (pred.depth > 0)
    stride = max(1, math.floor(math.sqrt(int(valid.sum()) / max_points)))
    while int(valid[::stride, ::stride].sum()) > max_points:
        stride += 1
    rgb = pred.image if colouring == "image" else colors.colorize_labels(pred.labels, palette)
    cloud = pointcloud.point_cloud(pred.depth, rgb, pred.labels, intrinsics, stride=stride)
    cloud["y"] = -cloud["y"]
    cloud["z"] = -cloud["z"]
    return cloud


def predict_page(
    predictor: Predictor,
    path: str | Path,
    out_dir: str | Path,
    options: FileOptions,
    *,
    name: str | None = None,
    max_viewer_points: int = DEFAULT_VIEWER_POINTS,
) -> PageResult:
    """Predict one image file and build the page's views; the downloads are written into ``out_dir``.

    Args:
        predictor: The model.
        path: The image file (any format Pillow reads).
        out_dir: An existing folder for the download files (``cinet predict``'s files for this image).
        options: The file options; the PLY is written whenever intrinsics are known (``options.intrinsics``,
            else the dataset's): without them the page has no point cloud and ``notes`` says why.
        name: The name shown in messages and used for the files' stem (default: ``path``'s name), e.g. the
            original name of an upload stored under a temporary path.
        max_viewer_points: Upper bound on the points of the 3D viewer's clouds.

    Returns:
        The :class:`PageResult`.

    Raises:
        InputError: One line naming ``name``: not an image, corrupt, truncated, too large (Pillow's
            decompression-bomb limit).
    """
    path = Path(path)
    name = name or path.name
    stem = Path(name).stem or "image"
    try:
        pred = predictor.predict(path, return_output=predictor.has_attention)
    except InputError as exc:
        raise InputError(str(exc).replace(str(path), name)) from exc
    h, w = pred.depth.shape
    intr = options.intrinsics or predictor.info.intrinsics_for(w, h)
    notes = []
    if intr is None:  # e.g. a checkpoint of the own-data recipe: everything but the point cloud
        notes.append(
            f"no 3D points: {predictor.info.intrinsics_note(w, h)}; start cinet serve with --intrinsics "
            "fx,fy,cx,cy (pixels, at the photo's size) for them"
        )
    options = dataclasses.replace(options, ply=intr is not None, attention_points=(), features=False)
    files = prediction_files(pred, stem, predictor.info, options, source=name, model_source=predictor.source)
    out_dir = Path(out_dir)
    downloads = files.write(out_dir)
    viewer = {}
    for colouring in VIEWER_COLOURINGS if intr is not None else ():
        cloud = viewer_cloud(pred, predictor.info.palette, intr, colouring, max_viewer_points)
        viewer[colouring] = pointcloud.write_ply(out_dir / f"{stem}_view_{colouring}.ply", cloud)
    lo, hi = files.depth_range
    depth_rgb = files.array("_depth_color.png")
    bar = visualize.depth_colorbar(lo, hi, depth_rgb.shape[1], options.cmap)
    legend = [
        LegendEntry(c, predictor.info.class_names[c], tuple(predictor.info.palette[c]), share)
        for c, share in visualize.class_shares(pred.labels, predictor.info.num_classes)
    ]
    return PageResult(
        stem=stem,
        image=pred.image,
        depth_view=np.concatenate([depth_rgb, bar], axis=0),
        overlay=files.array("_overlay.png"),
        depth_range=(lo, hi),
        legend=legend,
        downloads=downloads,
        viewer=viewer,
        prediction=keep_attention_only(pred),
        network=network_line(pred.geometry, predictor.train_size, predictor.max_side),
        notes=notes,
    )


def attention_view(pred: Prediction, x: float, y: float, *, source: str = "<model>") -> np.ndarray:
    """The SUM attention map (Fig. 7) of image pixel ``(x, y)`` over the image, as ``cinet predict
    --attention X,Y`` draws it (:func:`cinet.inference.figures.attention_figure`): ``HxWx3`` uint8.

    Raises:
        InputError: No SUM attention in ``pred`` (ONNX, or a variant without the SUM), or a pixel outside the
            image.
    """
    return figures.attention_figure(pred, x, y, source=source)[0]
