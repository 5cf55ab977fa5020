"""Evaluation metrics (paper Sec. 4.1): depth (δ1-3, rms, rms log, abs rel, sq rel) and segmentation
(pAcc, mIoU), plus the report helpers that print them with the protocol used."""

from cinet.metrics.depth import DEPTH_KEYS, EIGEN_CROP, DepthMetrics, depth_metrics, resolve_crop
from cinet.metrics.report import (
    HIGHER_IS_BETTER,
    METRIC_KEYS,
    EvalProtocol,
    format_table,
    metrics_json,
)
from cinet.metrics.segmentation import LabelRangeError, SegMetrics, confusion_matrix, seg_scores

__all__ = [
    "DEPTH_KEYS",
    "EIGEN_CROP",
    "HIGHER_IS_BETTER",
    "METRIC_KEYS",
    "DepthMetrics",
    "EvalProtocol",
    "LabelRangeError",
    "SegMetrics",
    "confusion_matrix",
    "depth_metrics",
    "format_table",
    "metrics_json",
    "resolve_crop",
    "seg_scores",
]
