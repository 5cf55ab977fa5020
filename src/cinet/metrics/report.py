"""Metric tables and JSON in the paper's layout, with the evaluation protocol stated.

Column order follows the paper's tables: ``δ1 δ2 δ3`` (higher is better), ``rms rms_log abs_rel sq_rel``
(lower is better), then ``pAcc mIoU`` (higher is better, shown in %).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from cinet.metrics.depth import EIGEN_CROP, EIGEN_CROP_SIZE, resolve_crop

__all__ = [
    "EXTRA_KEYS",
    "HIGHER_IS_BETTER",
    "METRIC_KEYS",
    "METRIC_LABELS",
    "PERCENT_KEYS",
    "EvalProtocol",
    "format_table",
    "metrics_json",
    "per_class_by_name",
]

METRIC_KEYS: tuple[str, ...] = (
    "delta1",
    "delta2",
    "delta3",
    "rms",
    "rms_log",
    "abs_rel",
    "sq_rel",
    "pixel_acc",
    "miou",
)

#: Columns shown after ``METRIC_KEYS`` when a row has them: the SUM's attention agreement with ``M M^T``
#: (:mod:`cinet.metrics.attention`; only variants with a learned SUM map have them).
EXTRA_KEYS: tuple[str, ...] = ("att_bce", "att_auc")

#: True: higher is better (↑); False: lower is better (↓).
HIGHER_IS_BETTER: dict[str, bool] = {
    "att_bce": False,
    "att_auc": True,
    "delta1": True,
    "delta2": True,
    "delta3": True,
    "rms": False,
    "rms_log": False,
    "abs_rel": False,
    "sq_rel": False,
    "pixel_acc": True,
    "miou": True,
}

METRIC_LABELS: dict[str, str] = {
    "delta1": "δ1",
    "delta2": "δ2",
    "delta3": "δ3",
    "rms": "rms",
    "rms_log": "rms log",
    "abs_rel": "abs rel",
    "sq_rel": "sq rel",
    "pixel_acc": "pAcc (%)",
    "miou": "mIoU (%)",
    "att_bce": "att BCE",
    "att_auc": "att AUC",
}

#: Stored as fractions, shown in % by :func:`format_table`.
PERCENT_KEYS: frozenset[str] = frozenset({"pixel_acc", "miou"})


def _arrow(key: str) -> str:
    return "↑" if HIGHER_IS_BETTER[key] else "↓"


@dataclass(frozen=True)
class EvalProtocol:
    """How the numbers were obtained; stated next to every table and in ``metrics.json``.

    Attributes:
        dataset: Dataset name (``nyuv2``, ``sunrgbd``, ``cityscapes``, ``synthetic``, ...).
        crop: ``None``, ``"eigen"`` or ``(top, bottom, left, right)`` slice bounds.
        min_depth: Valid ground truth is ``> min_depth`` (predictions clamped to it).
        max_depth: Valid ground truth is ``< max_depth`` (predictions clamped to it); ``None``: no cap.
        reduction: ``"per_image"`` (mean of per-image depth metrics) or ``"pooled"`` (over all pixels).
        ignore_index: Segmentation label left out of the confusion matrix.
        image_size: ``(H, W)`` at which metrics are computed; ``None`` if not fixed/known (each image at its
            own size).
        name: The named protocol (``paper``, ``mtl``: :data:`cinet.metrics.protocols.PRESETS`) or ``dataset``
            (the dataset's own, with ``train.eval.*`` overrides).
        miou_over: mIoU over the classes ``present`` in ground truth or prediction, or over ``all`` classes.
        flip: Test-time horizontal-flip averaging (depth averaged, class probabilities averaged).
        num_classes: Number of classes evaluated (e.g. 13 or 40 on NYUv2).
        split: The split evaluated (e.g. ``test``, 654 images on NYUv2).
        input_size: ``(H, W)`` of the network input (``data.eval_size``), or ``None``: the image's own size
            (scaled to the training size when far from it, :mod:`cinet.preprocess`).
        seeds: The training seeds behind the number (one per run averaged).
        checkpoint_sha256: SHA-256 of the checkpoint file evaluated (``None``: several, or not from a file).
    """

    dataset: str
    crop: str | tuple[int | None, ...] | None = None
    min_depth: float = 1e-3
    max_depth: float | None = None
    reduction: str = "per_image"
    ignore_index: int | None = 255
    image_size: tuple[int, int] | None = field(default=None)
    name: str = "dataset"
    miou_over: str = "present"
    flip: bool = False
    num_classes: int | None = None
    split: str | None = None
    input_size: tuple[int, int] | None = None
    seeds: tuple[int, ...] | None = None
    checkpoint_sha256: str | None = None

    def __post_init__(self) -> None:
        if self.reduction not in ("per_image", "pooled"):
            raise ValueError(f"reduction must be 'per_image' or 'pooled', got {self.reduction!r}")
        if self.miou_over not in ("present", "all"):
            raise ValueError(f"miou_over must be 'present' or 'all', got {self.miou_over!r}")
        for key in ("input_size", "seeds"):
            value = getattr(self, key)
            if value is not None:
                object.__setattr__(self, key, tuple(int(v) for v in value))
        if self.crop is not None and not isinstance(self.crop, str):
            object.__setattr__(self, "crop", tuple(self.crop))
        if self.image_size is not None:
            object.__setattr__(self, "image_size", tuple(int(v) for v in self.image_size))
        if self.crop is not None:
            h, w = self.image_size if self.image_size is not None else EIGEN_CROP_SIZE
            resolve_crop(self.crop, h, w)  # validates

    @classmethod
    def for_info(cls, info: Any, **overrides: Any) -> EvalProtocol:
        """The common protocol of a dataset, read from its :class:`cinet.data.DatasetInfo`, with ``overrides``.

        The facts come from the dataset's ``meta/*.json`` through ``info``: NYUv2 Eigen crop at 480x640 and
        10 m, SUN RGB-D 8 m (toolbox), Cityscapes 80 m (a project choice: the paper states no cap), minimum
        depth 1e-3 m.

        Args:
            info: The dataset's info (``name``, ``protocol_crop``, ``protocol_size``, ``min_depth``,
                ``depth_cap``, ``ignore_index``).
            **overrides: Fields of :class:`EvalProtocol` that replace the dataset's (``reduction``, ``crop``...).
        """
        kwargs: dict[str, Any] = {
            "crop": info.protocol_crop,
            "min_depth": float(info.min_depth),
            "max_depth": None if info.depth_cap is None else float(info.depth_cap),
            "ignore_index": info.ignore_index,
            "image_size": info.protocol_size,
        }
        kwargs.update(overrides)
        return cls(dataset=info.name, **kwargs)

    def depth_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for :class:`~cinet.metrics.DepthMetrics` / :func:`~cinet.metrics.depth_metrics`."""
        kw: dict[str, Any] = {"min_depth": self.min_depth, "max_depth": self.max_depth, "crop": self.crop}
        return kw

    def _crop_text(self) -> str:
        if self.crop is None:
            return "no crop"
        if isinstance(self.crop, str):
            t, b, lf, rt = EIGEN_CROP
            text = f"Eigen crop [{t}:{b}, {lf}:{rt}]@{EIGEN_CROP_SIZE[0]}x{EIGEN_CROP_SIZE[1]}"
            if self.image_size is not None and tuple(self.image_size) != EIGEN_CROP_SIZE:
                t, b, lf, rt = resolve_crop(self.crop, *self.image_size)
                text += f" (scaled: [{t}:{b}, {lf}:{rt}])"
            return text
        t, b, lf, rt = ("" if v is None else v for v in self.crop)
        return f"crop [{t}:{b}, {lf}:{rt}]"

    def describe(self) -> str:
        """One line, e.g. ``nyuv2 @640x480 | depth: Eigen crop ..., 0.001 < gt < 10 m, ... | seg: ignore 255``.

        The size is width x height, as every size in cinet's messages (``image_size`` is ``(H, W)``).
        """
        size = f" @{self.image_size[1]}x{self.image_size[0]}" if self.image_size is not None else ""
        cap = (
            f"{self.min_depth:g} < gt < {self.max_depth:g} m"
            if self.max_depth is not None
            else (f"gt > {self.min_depth:g} m, no cap")
        )
        red = "per-image mean" if self.reduction == "per_image" else "pooled over pixels"
        ign = f"ignore {self.ignore_index}" if self.ignore_index is not None else "no ignore label"
        over = "classes in gt or pred" if self.miou_over == "present" else "all classes (absent = 0)"
        classes = f", {self.num_classes} classes" if self.num_classes is not None else ""
        run = [f"protocol {self.name}"]
        if self.split is not None:
            run.append(f"split {self.split}")
        if self.input_size is not None:
            run.append(f"input {self.input_size[0]}x{self.input_size[1]}")
        run.append("flip averaged" if self.flip else "no flip")
        if self.seeds is not None:
            run.append(f"seeds {','.join(map(str, self.seeds))}")
        if self.checkpoint_sha256:
            run.append(f"ckpt sha256 {self.checkpoint_sha256[:12]}")
        return (
            f"{self.dataset}{size} | depth: {self._crop_text()}, {cap}, preds clamped, {red} "
            f"| seg: one confusion matrix{classes}, {ign}, mIoU over {over} | {', '.join(run)}"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of the fields plus ``description``."""
        d = asdict(self)
        for k in ("crop", "image_size", "input_size", "seeds"):
            if isinstance(d[k], tuple):
                d[k] = list(d[k])
        d["description"] = self.describe()
        return d


def _fmt(key: str, value: Any) -> str:
    if value is None:
        return "–"
    v = float(value)
    if math.isnan(v):
        return "–"
    if key in PERCENT_KEYS:
        v *= 100.0
    return f"{v:.3f}"


def format_table(rows: Mapping[str, Mapping[str, Any]], protocol: EvalProtocol | None = None) -> str:
    """Markdown table, one row per entry of ``rows`` (name -> metrics dict), paper column order.

    Only the metric columns present in at least one row are shown (all nine if none is). Values have
    3 decimals; pAcc and mIoU are shown in %; a missing or NaN value is ``–``. The attention-agreement columns
    (``EXTRA_KEYS``) follow when a row has them. The protocol line
    (:meth:`EvalProtocol.describe`) is written above the table when given.
    """
    keys = [k for k in METRIC_KEYS if any(k in r for r in rows.values())] or list(METRIC_KEYS)
    keys += [k for k in EXTRA_KEYS if any(r.get(k) is not None for r in rows.values())]
    header = "| Method | " + " | ".join(f"{METRIC_LABELS[k]} {_arrow(k)}" for k in keys) + " |"
    align = "|:--|" + "|".join("--:" for _ in keys) + "|"
    lines = []
    if protocol is not None:
        lines += [f"Protocol: {protocol.describe()}", ""]
    lines += [header, align]
    for name, metrics in rows.items():
        lines.append(f"| {name} | " + " | ".join(_fmt(k, metrics.get(k)) for k in keys) + " |")
    return "\n".join(lines) + "\n"


def per_class_by_name(values: Any, class_names: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Per-class results (one value per train id) keyed by class name, in id order.

    A name that occurs twice gets its id appended (``"chair (7)"``) so no entry is lost. Values are kept as
    given (NaN for a class absent from ground truth and prediction); a list of another length than
    ``class_names`` raises ``ValueError``.
    """
    values = list(values)
    if len(values) != len(class_names):
        raise ValueError(f"{len(values)} per-class values for {len(class_names)} class names")
    counts: dict[str, int] = {}
    for n in class_names:
        counts[n] = counts.get(n, 0) + 1
    return {(n if counts[n] == 1 else f"{n} ({i})"): v for i, (n, v) in enumerate(zip(class_names, values))}


def _json_value(v: Any) -> Any:
    if isinstance(v, Mapping):
        return {str(k): _json_value(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_json_value(x) for x in v]
    if hasattr(v, "item") and getattr(v, "ndim", 1) == 0:
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None  # strict JSON has no NaN/inf
    return v


def metrics_json(metrics: Mapping[str, Any], protocol: EvalProtocol) -> dict[str, Any]:
    """JSON-ready dict: the ``METRIC_KEYS`` found in ``metrics`` (fractions, NaN -> null), any other
    entries of ``metrics`` (e.g. ``per_class_iou``, counts), and ``protocol`` (:meth:`EvalProtocol.to_dict`).
    """
    out: dict[str, Any] = {k: _json_value(metrics[k]) for k in METRIC_KEYS if k in metrics}
    for k, v in metrics.items():
        if k not in out and k != "protocol":
            out[k] = _json_value(v)
    out["protocol"] = protocol.to_dict()
    return out
