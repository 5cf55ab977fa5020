"""CI-Net model: dilated ResNet encoder, SUM (Eq. 1–2), FSM / LSU sharing (Eq. 5–6), two task branches.

The variants of Tables 1–2 are rows of :data:`cinet.recipe.VARIANTS`; :func:`build_model` reads their
architecture columns.
"""

from cinet.models.cinet import CINet
from cinet.models.factory import build_model
from cinet.models.outputs import AttentionState, CINetOutput

__all__ = ["AttentionState", "CINet", "CINetOutput", "build_model"]
