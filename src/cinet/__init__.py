"""cinet: CI-Net — joint monocular depth estimation and semantic segmentation with contextual interaction.

Reference: the CI-Net paper (SUM with a supervised attention map, FSM / LSU feature sharing between the
depth and segmentation branches, and a consistency loss). See ``docs/architecture.md`` for the map from
the paper's equations to this package.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["Predictor", "__version__"]


def __getattr__(name: str) -> Any:  # lazy: importing cinet must stay cheap
    if name == "Predictor":
        from cinet.inference.predictor import Predictor

        return Predictor
    raise AttributeError(f"module 'cinet' has no attribute {name!r}")
