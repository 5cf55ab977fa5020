"""Total training loss (paper Eq. 13) with the three-stage schedule of Sec. 4.2.

``L = L_att + alpha * L_depth + beta * L_con + gamma * L_seg`` with ``L_depth = L_berhu + lam L_pair + mu L_norm``.

Active terms by training stage:

========  ====================================================================================
stage 1   L_depth + L_seg (the SUM uses the ideal map)
stage 2   + L_att (only when ``use_attention`` and the model's attention is learned, not given)
stage 3   + L_con (only when ``use_consistency``)
========  ====================================================================================

Inactive terms are returned as zeros so that every step logs the same keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from cinet.losses.attention import AttentionLoss
from cinet.losses.consistency import ConsistencyLoss
from cinet.losses.depth import depth_loss
from cinet.losses.segmentation import WeightedCrossEntropy

if TYPE_CHECKING:
    from cinet.models.outputs import CINetOutput

__all__ = ["LOSS_KEYS", "LossWeights", "TotalLoss"]

LOSS_KEYS = ("berhu", "pair", "normal", "depth", "seg", "att", "con", "total")


@dataclass(frozen=True)
class LossWeights:
    """Weights of Eq. 11 and Eq. 13 (defaults: paper Sec. 4.2).

    Attributes:
        alpha: Weight of L_depth in the total.
        beta: Weight of L_con in the total.
        gamma: Weight of L_seg in the total.
        lam: Weight of L_pair in L_depth.
        mu: Weight of L_norm in L_depth.
    """

    alpha: float = 1.0
    beta: float = 5.0
    gamma: float = 0.3
    lam: float = 1.0
    mu: float = 5.0


class TotalLoss(nn.Module):
    """All training losses of CI-Net (Eq. 3–13) behind one call.

    Args:
        num_classes: Number of segmentation classes C.
        use_attention: The variant has a SUM whose map is supervised by L_att.
        use_consistency: The variant uses L_con (owns the learned sigmas, see :class:`ConsistencyLoss`).
        weights: Loss weights (paper defaults).
        num_pairs: Pixel pairs per image of L_pair.
        ignore_index: Ignored label value.
        num_feature_maps: Number of (depth, seg) feature-map pairs used by L_con.
        attention_impl: ``naive | tiled | triton | auto`` for L_att.
        class_weights: Optional fixed [C] class weights of L_seg; default: per-batch weights (Eq. 12).
    """

    def __init__(
        self,
        num_classes: int,
        *,
        use_attention: bool,
        use_consistency: bool,
        weights: LossWeights | None = None,
        num_pairs: int = 500,
        ignore_index: int = 255,
        num_feature_maps: int = 3,
        attention_impl: str = "auto",
        class_weights: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.use_attention = use_attention
        self.use_consistency = use_consistency
        self.weights = weights if weights is not None else LossWeights()
        self.num_pairs = num_pairs
        self.ignore_index = ignore_index
        self.seg_loss = WeightedCrossEntropy(num_classes, ignore_index, class_weights)
        self.att_loss = AttentionLoss(ignore_index, attention_impl) if use_attention else None
        self.con_loss = (
            ConsistencyLoss(num_feature_maps, ignore_index=ignore_index) if use_consistency else None
        )
        self.generator: torch.Generator | None = None  # optional, for reproducible pair sampling

    def active_terms(self, stage: int, attention_given: bool = False) -> set[str]:
        """Names of the top-level terms (``depth``, ``seg``, ``att``, ``con``) active at ``stage``."""
        if stage not in (1, 2, 3):
            raise ValueError(f"stage must be 1, 2 or 3, got {stage!r}")
        terms = {"depth", "seg"}
        if stage >= 2 and self.use_attention and not attention_given:
            terms.add("att")
        if stage >= 3 and self.use_consistency:
            terms.add("con")
        return terms

    def forward(self, out: CINetOutput, batch: dict, stage: int = 3) -> dict[str, torch.Tensor]:
        """Compute every term of Eq. 13.

        Args:
            out: Model output (``depth`` [B,1,H,W], ``seg_logits`` [B,C,H,W], ``attention``, features).
            batch: ``depth`` [B,1,H,W] metres (0 = invalid), ``labels`` [B,H,W] long (``ignore_index`` ignored).
            stage: Training stage 1, 2 or 3.

        Returns:
            ``{"berhu", "pair", "normal", "depth", "seg", "att", "con", "total"}`` scalar tensors; inactive terms
            are zeros (no gradient). ``total`` is the weighted sum of the active terms.
        """
        if self.use_attention and stage >= 2 and out.attention is None:
            raise ValueError(
                "use_attention=True but the model output has no attention state (variant without SUM?)"
            )
        given = out.attention is None or out.attention.given
        active = self.active_terms(stage, attention_given=given)
        w = self.weights
        target, labels = batch["depth"], batch["labels"]
        device = out.depth.device
        zero = torch.zeros((), device=device)

        depth, parts = depth_loss(
            out.depth,
            target,
            lam=w.lam,
            mu=w.mu,
            num_pairs=self.num_pairs,
            generator=self.generator,
            return_terms=True,
        )
        seg = self.seg_loss(out.seg_logits, labels)
        att = zero
        if "att" in active:
            assert self.att_loss is not None and out.attention is not None
            att = self.att_loss(out.attention, labels)
        con = zero
        if "con" in active:
            assert self.con_loss is not None
            con = self.con_loss(out.depth_features, out.seg_features, labels)

        total = w.alpha * depth + w.gamma * seg
        if "att" in active:
            total = total + att
        if "con" in active:
            total = total + w.beta * con
        return {
            "berhu": parts["berhu"],
            "pair": parts["pair"],
            "normal": parts["normal"],
            "depth": depth,
            "seg": seg,
            "att": att,
            "con": con,
            "total": total,
        }

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, use_attention={self.use_attention}, "
            f"use_consistency={self.use_consistency}, weights={self.weights}, num_pairs={self.num_pairs}"
        )
