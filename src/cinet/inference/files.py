"""The files of one prediction — names, formats and conventions shared by ``cinet predict`` and ``cinet serve``.

:func:`prediction_files` turns a :class:`~cinet.inference.predictor.Prediction` into the files ``cinet predict``
writes for it (``<stem>_depth.png`` uint16 millimetres, ``_depth_color.png``, ``_labels.png``,
``_seg_color.png``, ``_overlay.png``, ``_panel.png``; optionally ``_attention_X_Y.png`` (Fig. 7),
``_features_stageK_{d,s}.png`` (Fig. 8 / Eq. 14) and ``<stem>.ply``; every PNG carries the text entry
``Software=cinet`` and the PLY a ``comment cinet`` header line, so that a later run may replace them and nothing
else: :func:`cinet.checks.outputs.check_own_outputs`), and
:meth:`PredictionFiles.write` writes them, each atomically. The web page of ``cinet serve`` shows and offers the
very same arrays and files, so both commands stay one prediction path.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cinet.checks.outputs import CINET_PLY_COMMENT, CINET_PNG_MARK
from cinet.data.info import DatasetInfo
from cinet.errors import InputError
from cinet.inference import figures, pointcloud, visualize
from cinet.inference.pointcloud import Intrinsics
from cinet.inference.predictor import Prediction
from cinet.utils import colors

DEPTH_PNG_NOTE = "millimetre (uint16); 0 = invalid; 65535 = 65.535 m or more"
ATTENTION_NOTE = "Fig. 7: SUM attention row, min-max scaled"
FEATURES_NOTE = "Fig. 8 / Eq. 14: allocated features summed over channels, normalised 0-1"


@dataclass(frozen=True)
class FileOptions:
    """What to write for a prediction and how (the output options of ``cinet predict``).

    Attributes:
        cmap: Depth colour map (a matplotlib name, e.g. ``turbo``).
        depth_range: ``(min, max)`` metres shown by the colour map; None = the image's valid range.
        alpha: Opacity of the segmentation overlay, 0..1.
        attention_points: Image pixels ``(x column, y row)`` whose SUM attention map (Fig. 7) is written.
        features: Also write the FSM / LSU allocated features of Eq. 14 (Fig. 8).
        ply: Also write the point cloud ``<stem>.ply``.
        ply_binary: Binary little-endian PLY (else ASCII).
        ply_stride: Keep every N-th row and column in the PLY.
        intrinsics: ``(fx, fy, cx, cy)`` at the image size; None = the dataset's, scaled to the image.
    """

    cmap: str = colors.DEFAULT_DEPTH_CMAP
    depth_range: tuple[float, float] | None = None
    alpha: float = 0.5
    attention_points: Sequence[tuple[float, float]] = ()
    features: bool = False
    ply: bool = False
    ply_binary: bool = True
    ply_stride: int = 1
    intrinsics: Intrinsics | None = None


@dataclass
class PredictionFiles:
    """The files of one prediction, in memory.

    Attributes:
        pngs: File name -> ``(array, PNG tEXt entries)``; arrays are ``HxWx3`` uint8, ``HxW`` uint8 (labels,
            features) or ``HxW`` uint16 (depth), in the order ``cinet predict`` writes them.
        depth_range: ``(min, max)`` metres of the depth colour map.
        ply_name: ``<stem>.ply`` when a point cloud was asked for, else None.
        cloud: The point cloud (:data:`~cinet.inference.pointcloud.PLY_DTYPE`), or None.
        ply_comments: PLY header comments (source file, intrinsics).
        ply_binary: Write the PLY as binary little-endian (else ASCII).
    """

    pngs: dict[str, tuple[np.ndarray, dict[str, str] | None]]
    depth_range: tuple[float, float]
    ply_name: str | None = None
    cloud: np.ndarray | None = None
    ply_comments: list[str] = field(default_factory=list)
    ply_binary: bool = True

    def array(self, suffix: str) -> np.ndarray:
        """The array of the PNG whose name ends with ``suffix`` (e.g. ``_depth_color.png``)."""
        for name, (arr, _) in self.pngs.items():
            if name.endswith(suffix):
                return arr
        raise KeyError(suffix)

    def write(self, out: str | Path) -> list[Path]:
        """Write every file into the folder ``out`` (each atomically); returns the paths in order."""
        out = Path(out)
        written = [visualize.save_png(out / name, arr, text) for name, (arr, text) in self.pngs.items()]
        if self.ply_name is not None and self.cloud is not None:
            written.append(
                pointcloud.write_ply(
                    out / self.ply_name, self.cloud, binary=self.ply_binary, comments=self.ply_comments
                )
            )
        return written


#: Caption of the legend column of the panel (the legend is at least as wide as it).
LEGEND_CAPTION = "classes"


def prediction_files(
    pred: Prediction,
    stem: str,
    info: DatasetInfo,
    options: FileOptions,
    *,
    source: str,
    model_source: str = "<model>",
) -> PredictionFiles:
    """Everything ``cinet predict`` writes for one prediction, as arrays (nothing is written here).

    Args:
        pred: The prediction (made with ``return_output=True`` when ``options`` asks for attention maps or
            features).
        stem: Output file stem (the input file's stem).
        info: The model's dataset description (palette, class names, intrinsics).
        options: What to produce.
        source: The input file, named in error messages; its name is recorded in the PLY header.
        model_source: The checkpoint / ONNX file, for error messages.

    Returns:
        The files, in memory; :meth:`PredictionFiles.write` writes them.

    Raises:
        InputError: An attention pixel outside the image, a model without the SUM / sharing module when those
            are asked for, or a point cloud without intrinsics.
    """
    h, w = pred.depth.shape
    for x, y in options.attention_points:
        if not (0 <= x < w and 0 <= y < h):
            raise InputError(f"{source}: --attention pixel ({x:g}, {y:g}) is outside the {w}x{h} image")

    vmin, vmax = options.depth_range if options.depth_range else (None, None)
    depth_rgb, (lo, hi) = colors.colorize_depth(pred.depth, vmin, vmax, options.cmap)
    seg_rgb = colors.colorize_labels(pred.labels, info.palette, info.void_color)
    key = visualize.legend(
        visualize.present_classes(pred.labels, info.num_classes),
        info.class_names,
        info.palette,
        h,
        min_width=visualize.caption_width(LEGEND_CAPTION, visualize.caption_height(h)),  # its panel caption
    )  # class names of the classes present, most frequent first
    range_text = {"depth_range_m": f"{lo:.4f},{hi:.4f}", "colormap": options.cmap}
    pngs: dict[str, tuple[np.ndarray, dict[str, str] | None]] = {
        f"{stem}_depth.png": (visualize.depth_to_uint16(pred.depth), {"depth_unit": DEPTH_PNG_NOTE}),
        f"{stem}_depth_color.png": (depth_rgb, range_text),
        f"{stem}_labels.png": (pred.labels, {"classes": ",".join(info.class_names)}),
        f"{stem}_seg_color.png": (seg_rgb, None),
        f"{stem}_overlay.png": (
            np.concatenate([visualize.overlay(pred.image, seg_rgb, options.alpha), key], axis=1),
            {"legend": "classes present, most frequent first"},
        ),
        f"{stem}_panel.png": (
            visualize.make_panel(
                [pred.image, depth_rgb, seg_rgb, key],
                [
                    "input",
                    f"depth {lo:.2f}-{hi:.2f} m ({options.cmap})",
                    f"segmentation ({info.name})",
                    LEGEND_CAPTION,
                ],
            ),
            range_text,
        ),
    }
    for x, y in options.attention_points:
        fig, _ = figures.attention_figure(pred, x, y, source=model_source)
        pngs[f"{stem}_attention_{x:g}_{y:g}.png"] = (fig, {"figure": ATTENTION_NOTE})
    if options.features:
        for k, (f_d, f_s) in enumerate(figures.feature_figures(pred, source=model_source), start=1):
            pngs[f"{stem}_features_stage{k}_d.png"] = (f_d, {"figure": FEATURES_NOTE})
            pngs[f"{stem}_features_stage{k}_s.png"] = (f_s, {"figure": FEATURES_NOTE})

    key, value = CINET_PNG_MARK  # every PNG is marked as cinet's: a later run may replace it, nothing else
    pngs = {name: (arr, {**(text or {}), key: value}) for name, (arr, text) in pngs.items()}
    files = PredictionFiles(pngs=pngs, depth_range=(lo, hi), ply_binary=options.ply_binary)
    if options.ply:
        intr = options.intrinsics or info.intrinsics_for(w, h)
        if intr is None:
            raise InputError(f"{model_source}: {info.intrinsics_note(w, h)}; pass --intrinsics fx,fy,cx,cy")
        files.ply_name = f"{stem}.ply"
        files.cloud = pointcloud.point_cloud(
            pred.depth, pred.image, pred.labels, intr, stride=options.ply_stride
        )
        files.ply_comments = [
            f"{CINET_PLY_COMMENT} {Path(source).name}",  # marks the file as cinet's (see pngs above)
            "intrinsics fx,fy,cx,cy = " + ",".join(f"{v:.6g}" for v in intr),
        ]
    return files
