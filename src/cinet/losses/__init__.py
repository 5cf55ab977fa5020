"""Training losses of CI-Net (paper Sec. 3.4, Eq. 3–13): pure functions on tensors plus thin modules.

See ``docs/losses.md`` for the map from the paper's equations to these functions and the documented choices.
"""

from cinet.losses.attention import (
    AttentionLoss,
    attention_loss,
    attention_loss_qk,
    check_labels,
    ideal_attention_map,
)
from cinet.losses.consistency import ConsistencyLoss, consistency_loss, feature_similarity
from cinet.losses.depth import berhu_loss, depth_loss, normal_loss, pair_loss, valid_depth_mask
from cinet.losses.segmentation import (
    WeightedCrossEntropy,
    class_weights_from_labels,
    dataset_class_weights,
    weighted_cross_entropy,
)
from cinet.losses.total import LOSS_KEYS, LossWeights, TotalLoss

__all__ = [
    "LOSS_KEYS",
    "AttentionLoss",
    "ConsistencyLoss",
    "LossWeights",
    "TotalLoss",
    "WeightedCrossEntropy",
    "attention_loss",
    "attention_loss_qk",
    "berhu_loss",
    "check_labels",
    "class_weights_from_labels",
    "consistency_loss",
    "dataset_class_weights",
    "depth_loss",
    "feature_similarity",
    "ideal_attention_map",
    "normal_loss",
    "pair_loss",
    "valid_depth_mask",
    "weighted_cross_entropy",
]
