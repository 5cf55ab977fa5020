"""Multi-task comparison: the multi-task performance Δm and a seed-noise significance test.

Δm (Maninis et al., CVPR 2019, "Attentive single-tasking of multiple tasks"; Vandenhende et al., TPAMI 2021,
"Multi-task learning for dense prediction tasks: a survey", Sec. 5) is the mean relative gain of a multi-task
model m over the single-task networks b, with the sign flipped for metrics where lower is better::

    Δm = 100 / T * Σ_i (-1)^{l_i} (M_{m,i} - M_{b,i}) / M_{b,i}       (percent; l_i = 1: lower is better)

over the T metrics used; the NYUD-v2 convention of both papers (one metric per task) is rms for depth and
mIoU for segmentation (:data:`DELTA_M_KEYS`). Δm > 0: the multi-task model beats the single-task ones.

A difference of two rows of an ablation is called larger than the noise when Welch's unequal-variance t-test
on the per-seed values gives p < 0.05 (:func:`welch_p_value`; needs at least 2 seeds per row, 3+ advised).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence

from cinet.metrics.report import HIGHER_IS_BETTER

__all__ = ["DELTA_M_KEYS", "delta_m", "welch_p_value"]

#: Metrics of Δm: one per task, as in Vandenhende et al. (NYUD-v2: depth rms, segmentation mIoU).
DELTA_M_KEYS = ("rms", "miou")


def delta_m(
    multi: Mapping[str, float | None],
    single: Mapping[str, float | None],
    keys: Sequence[str] = DELTA_M_KEYS,
) -> float:
    """Multi-task performance Δm of ``multi`` relative to the single-task results ``single``, in percent.

    Args:
        multi: Metrics of the multi-task model (``METRIC_KEYS`` names; fractions as stored in metrics.json).
        single: Metrics of the single-task networks (depth metrics from the depth-only network, segmentation
            metrics from the segmentation-only one), same names.
        keys: Metrics to average (default :data:`DELTA_M_KEYS`).

    Returns:
        Δm in percent (positive = better than single-task); NaN when a metric is missing or a single-task
        value is 0.
    """
    gains = []
    for k in keys:
        m, b = multi.get(k), single.get(k)
        if m is None or b is None or not math.isfinite(m) or not math.isfinite(b) or b == 0:
            return math.nan
        sign = 1.0 if HIGHER_IS_BETTER[k] else -1.0
        gains.append(sign * (m - b) / b)
    return 100.0 * sum(gains) / len(gains) if gains else math.nan


def welch_p_value(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided p-value of Welch's t-test that samples ``a`` and ``b`` have the same mean.

    Args:
        a: Per-seed values of one row (at least 2).
        b: Per-seed values of the other row (at least 2).

    Returns:
        The p-value (``scipy.stats.ttest_ind(a, b, equal_var=False)``); NaN with fewer than 2 values on a
        side; 0 when both sides are constant and differ, 1 when they are constant and equal.
    """
    from scipy import stats

    if len(a) < 2 or len(b) < 2:
        return math.nan
    if max(a) == min(a) and max(b) == min(b):  # no spread: the t statistic is undefined
        return 1.0 if a[0] == b[0] else 0.0
    with warnings.catch_warnings():  # a constant side is fine for Welch's test; scipy warns about precision
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(stats.ttest_ind(list(a), list(b), equal_var=False).pvalue)
