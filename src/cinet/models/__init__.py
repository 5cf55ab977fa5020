"""CI-Net model: dilated ResNet encoder, SUM (Eq. 1–2), FSM / LSU sharing (Eq. 5–6), two task branches."""

from cinet.models.cinet import CINet
from cinet.models.factory import VARIANTS, VariantSpec, build_model, variant_spec
from cinet.models.outputs import AttentionState, CINetOutput

__all__ = ["VARIANTS", "AttentionState", "CINet", "CINetOutput", "VariantSpec", "build_model", "variant_spec"]
