"""Evaluation metrics (paper Sec. 4.1): depth (δ1-3, rms, rms log, abs rel, sq rel) and segmentation
(pAcc, mIoU), plus the report helpers that print them with the protocol used."""

from cinet.metrics.depth import DEPTH_KEYS, EIGEN_CROP, DepthMetrics, depth_metrics, resolve_crop
from cinet.metrics.multitask import DELTA_M_KEYS, delta_m, welch_p_value
from cinet.metrics.report import (
    DATASET_DEFAULTS,
    HIGHER_IS_BETTER,
    METRIC_KEYS,
    EvalProtocol,
    format_table,
    metrics_json,
)
from cinet.metrics.segmentation import LabelRangeError, SegMetrics, confusion_matrix, seg_scores

__all__ = [
    "DATASET_DEFAULTS",
    "DELTA_M_KEYS",
    "DEPTH_KEYS",
    "EIGEN_CROP",
    "HIGHER_IS_BETTER",
    "METRIC_KEYS",
    "DepthMetrics",
    "EvalProtocol",
    "LabelRangeError",
    "SegMetrics",
    "confusion_matrix",
    "delta_m",
    "depth_metrics",
    "format_table",
    "metrics_json",
    "resolve_crop",
    "seg_scores",
    "welch_p_value",
]
