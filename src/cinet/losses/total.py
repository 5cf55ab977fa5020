"""Total training loss (paper Eq. 13).

``L = L_att + alpha * L_depth + beta * L_con + gamma * L_seg`` with ``L_depth = L_berhu + lam L_pair + mu L_norm``.

The caller says which top-level terms (``depth``, ``seg``, ``att``, ``con``) are active: the recipe table
(:func:`cinet.recipe.stage_recipe`, the stage intersected with the variant). Inactive terms are returned as
zeros so that every step logs the same keys. The term names (:data:`cinet.recipe.TERMS`,
:data:`cinet.recipe.LOSS_KEYS`) and the weights (:class:`cinet.recipe.LossWeights`) are defined in the recipe
table, once; they are re-exported here.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING

import torch
from torch import nn

from cinet.losses.attention import AttentionLoss
from cinet.losses.consistency import ConsistencyLoss
from cinet.losses.depth import depth_loss
from cinet.losses.segmentation import WeightedCrossEntropy
from cinet.recipe import LOSS_KEYS, TERMS, LossWeights

if TYPE_CHECKING:
    from cinet.models.outputs import CINetOutput

__all__ = ["LOSS_KEYS", "TERMS", "LossWeights", "TotalLoss"]


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
        validate_labels: Check the labels' range in L_seg (a device synchronisation per step). The engine
            builds the loss with ``False``: the labels were checked once before training and by the data readers
            as each sample is read (:mod:`cinet.checks.labels`), so the loss assumes valid labels (class ids in
            [0, C) or ``ignore_index``).
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
        validate_labels: bool = True,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.use_attention = use_attention
        self.use_consistency = use_consistency
        self.weights = weights if weights is not None else LossWeights()
        self.num_pairs = num_pairs
        self.ignore_index = ignore_index
        self.seg_loss = WeightedCrossEntropy(num_classes, ignore_index, class_weights, validate_labels)
        self.att_loss = AttentionLoss(ignore_index, attention_impl) if use_attention else None
        self.con_loss = (
            ConsistencyLoss(num_feature_maps, ignore_index=ignore_index) if use_consistency else None
        )
        self.generator: torch.Generator | None = None  # optional, for reproducible pair sampling

    def forward(
        self, out: CINetOutput, batch: dict, terms: Collection[str] = TERMS
    ) -> dict[str, torch.Tensor]:
        """Compute the active terms of Eq. 13.

        Args:
            out: Model output (``depth`` [B,1,H,W], ``seg_logits`` [B,C,H,W], ``attention``, features; a
                single-task model has ``None`` for the other output).
            batch: ``depth`` [B,1,H,W] metres (0 = invalid), ``labels`` [B,H,W] long (``ignore_index`` ignored).
            terms: Active top-level terms, a subset of :data:`TERMS` (from the stage table and the variant).
                ``att`` is skipped when the map was given (the ideal map alone: nothing to supervise).

        Returns:
            ``{"total", "depth", "berhu", "pair", "normal", "seg", "att", "con"}`` scalar tensors; inactive
            terms are zeros (no gradient). ``total`` is the weighted sum of the active terms.

        Raises:
            ValueError: An unknown term, or an active term whose input or module is missing (e.g. ``att`` for
                a model without SUM, ``con`` for a loss built without ``use_consistency``).
        """
        active = set(terms)
        unknown = active - set(TERMS)
        if unknown:
            raise ValueError(f"unknown loss terms {sorted(unknown)}; valid: {TERMS}")
        if "att" in active:
            if self.att_loss is None or out.attention is None:
                raise ValueError("term 'att' needs use_attention=True and a model with a SUM")
            if out.attention.given:
                active.discard("att")
        if "con" in active and self.con_loss is None:
            raise ValueError("term 'con' needs use_consistency=True")
        for term, value in (("depth", out.depth), ("seg", out.seg_logits)):
            if term in active and value is None:
                raise ValueError(f"term {term!r} is active but the model has no {term} output")
        w = self.weights
        target, labels = batch["depth"], batch["labels"]
        device = target.device
        zero = torch.zeros((), device=device)

        depth, parts = zero, {"berhu": zero, "pair": zero, "normal": zero}
        if "depth" in active:
            depth, parts = depth_loss(
                out.depth,
                target,
                lam=w.lam,
                mu=w.mu,
                num_pairs=self.num_pairs,
                generator=self.generator,
                return_terms=True,
            )
        seg = self.seg_loss(out.seg_logits, labels) if "seg" in active else zero
        att = zero
        if "att" in active:
            assert self.att_loss is not None and out.attention is not None
            att = self.att_loss(out.attention, labels)
        con = zero
        if "con" in active:
            assert self.con_loss is not None
            con = self.con_loss(out.depth_features, out.seg_features, labels)

        total = zero
        if "depth" in active:
            total = total + w.alpha * depth
        if "seg" in active:
            total = total + w.gamma * seg
        if "att" in active:
            total = total + att
        if "con" in active:
            total = total + w.beta * con
        return {
            "total": total,
            "depth": depth,
            "berhu": parts["berhu"],
            "pair": parts["pair"],
            "normal": parts["normal"],
            "seg": seg,
            "att": att,
            "con": con,
        }

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, use_attention={self.use_attention}, "
            f"use_consistency={self.use_consistency}, weights={self.weights}, num_pairs={self.num_pairs}"
        )
