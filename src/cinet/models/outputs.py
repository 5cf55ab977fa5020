"""Output containers of the CI-Net model (shared contract between models, losses, engine and inference)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class AttentionState:
    """What the SUM exposes for the attention loss (Eq. 4) and the attention figure (Fig. 7).

    The B x N x N map is never stored here: ``query``/``key`` are enough to compute the loss (naive or tiled)
    and any row of the map on demand.

    Attributes:
        query: Q [B,N,D] (N = h*w row-major at feature resolution, D = C_qk).
        key: K [B,N,D].
        size: Feature-map size (h, w).
        given: True when the map was supplied from outside (ideal map of stage 1), i.e. not learned.
    """

    query: torch.Tensor
    key: torch.Tensor
    size: tuple[int, int]
    given: bool = False

    def logits(self) -> torch.Tensor:
        """Materialise the pre-sigmoid map ``Q K^T`` [B,N,N] (memory heavy; figures and tests only)."""
        return torch.bmm(self.query, self.key.transpose(1, 2))

    def row(self, index: int) -> torch.Tensor:
        """Attention of one position against all others, ``sigmoid(q_i . K^T)`` as [B,h,w]."""
        logits = torch.einsum("bd,bnd->bn", self.query[:, index], self.key)
        return torch.sigmoid(logits).view(-1, *self.size)


@dataclass
class CINetOutput:
    """Result of ``CINet.forward``.

    Attributes:
        depth: [B,1,H,W] metric depth in metres (> 0), at the input resolution; ``None`` for the
            segmentation-only baseline.
        seg_logits: [B,C,H,W] class logits at the input resolution; ``None`` for the depth-only baseline.
        attention: SUM state (None for variants without SUM).
        depth_features: Depth-branch features after each sharing stage (f_d^{t+1} of Eq. 5/6), i.e. the inputs
            of the three upsampling blocks (list, coarse to fine: 1/8, 1/4, 1/2); for variants without sharing,
            the branch features at the same points. The consistency loss (Eq. 7) uses them.
        seg_features: Segmentation-branch features, same layout as ``depth_features``.
        shared_features: Per sharing stage, the allocated features (F_d, F_s) of Eq. 14 (FSM or LSU) used
            by the paper's Fig. 8; empty for variants without sharing.
    """

    depth: torch.Tensor | None
    seg_logits: torch.Tensor | None
    attention: AttentionState | None = None
    depth_features: list[torch.Tensor] = field(default_factory=list)
    seg_features: list[torch.Tensor] = field(default_factory=list)
    shared_features: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)
