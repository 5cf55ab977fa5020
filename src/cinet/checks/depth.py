"""The depth unit of a dataset: one warning line when its depth looks like the wrong unit.

From the sample scan of :mod:`cinet.data.sanity` (all invalid, mostly outside the dataset's range, a median too
small for a scene, whole-unit steps); run by ``cinet train`` before the run directory exists, ``cinet eval`` and
``cinet data preview``. A warning, not an error: a dataset can be right and still look odd. Logged as
``cinet.checks.depth``.
"""

from __future__ import annotations

import logging
from typing import Any

from cinet.data.sanity import DepthSummary, depth_summary, depth_warning

logger = logging.getLogger(__name__)

__all__ = ["warn_depth_unit"]


def warn_depth_unit(dataset: Any, where: str, setting: str, num: int = 8) -> DepthSummary | None:
    """Log one warning when the raw depth of ``num`` samples looks like the wrong unit; return the summary.

    Args:
        dataset: The dataset (or a wrapper with ``.dataset``).
        where: What was read (dataset root or name), first in the line.
        setting: The setting to check (:func:`cinet.build.data.depth_setting`).
        num: Samples read, spread evenly over the dataset.

    Returns:
        The :class:`cinet.data.sanity.DepthSummary` (None for a dataset without raw depth or samples).
    """
    summary = depth_summary(dataset, num=num)
    line = depth_warning(summary, where, setting)
    if line is not None:  # a warning: a later error may come from the same mistake
        logger.warning("%s", line)
    return summary
