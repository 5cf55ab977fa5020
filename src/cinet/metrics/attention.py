"""How well the learned SUM attention matches the ideal map ``A = M M^T`` (paper Eq. 1, 3, 4; Fig. 7), measured.

The paper shows (Fig. 7) that the supervised map captures "which pixels belong together"; this metric says how
much, on a whole test set, without the ``N x N`` map in memory. With ``A~_ij = sigmoid(q_i . k_j)`` (Eq. 1) and
``A_ij = 1`` when pixels i and j (labels downsampled to the feature grid, :func:`cinet.ops.resize_map`)
have the same class, else 0 (Eq. 3), over the pairs whose two pixels are labelled:

* ``att_bce``: the binary cross entropy of Eq. 4 (L_att), pooled over all valid pairs of the set (lower is
  better; ``ln 2 = 0.693`` for a map that says 0.5 everywhere);
* ``att_auc``: the area under the ROC curve of ``A~`` as a detector of same-class pairs, i.e. the probability
  that a random same-class pair gets a higher attention than a random different-class pair (ties count
  half; 0.5 = chance, 1 = the ideal map's ranking). Computed from two histograms of the logits ``q_i . k_j``
  (``bins`` equal bins on ``[-limit, limit]``, outer values in the end bins), one for same-class and one for
  different-class pairs; pairs in one bin count as ties, so the value differs from the exact AUC by at most
  half the fraction of (positive, negative) pairs sharing a bin.

Both are filled query-tile by query-tile (``tile`` rows of the map at a time: memory ``B x tile x N``), and the
states are sums, so DDP synchronisation is exact. Sets without a labelled pair give NaN. (A histogram, not
torchmetrics' ``BinaryAUROC``: its binned form keeps one comparison per threshold and element, which at
``N^2`` pairs per image costs ``bins`` times more.)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
import torchmetrics

from cinet.ops.autocast import float32_region

__all__ = ["ATTENTION_KEYS", "AttentionAgreement"]

#: The keys :meth:`AttentionAgreement.compute` returns.
ATTENTION_KEYS: tuple[str, ...] = ("att_bce", "att_auc")


class AttentionAgreement(torchmetrics.Metric):
    """Attention BCE (Eq. 4) and pair AUC of the learned SUM map against ``M M^T``, accumulated over a set.

    Args:
        ignore_index: Label of unlabelled pixels (their pairs are left out).
        bins: Histogram bins of the logits for the AUC.
        limit: Logits are binned on ``[-limit, limit]`` (``sigmoid(16) = 1 - 1.1e-7``).
        tile: Query rows processed at once.
    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    bce_sum: torch.Tensor
    pairs: torch.Tensor
    pos_hist: torch.Tensor
    neg_hist: torch.Tensor

    def __init__(
        self, ignore_index: int = 255, bins: int = 4096, limit: float = 16.0, tile: int = 256, **kwargs
    ) -> None:
        super().__init__(**kwargs)
        if bins < 2 or limit <= 0 or tile < 1:
            raise ValueError(f"bins must be >= 2, limit > 0, tile >= 1 (got {bins}, {limit}, {tile})")
        self.ignore_index = ignore_index
        self.bins = int(bins)
        self.limit = float(limit)
        self.tile = int(tile)
        self.add_state("bce_sum", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("pairs", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("pos_hist", torch.zeros(self.bins, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("neg_hist", torch.zeros(self.bins, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, query: torch.Tensor, key: torch.Tensor, labels: torch.Tensor) -> None:
        """Add a batch: ``query``/``key`` ``[B, N, D]`` (the SUM's Q and K, ``AttentionState``), ``labels``
        ``[B, N]`` or ``[B, h, w]`` at the feature grid (``h * w = N``)."""
        b, n, _ = query.shape
        flat = labels.reshape(b, -1).to(query.device)
        if flat.shape[1] != n or key.shape[:2] != query.shape[:2]:
            raise ValueError(
                f"query {tuple(query.shape)}, key {tuple(key.shape)} and labels {tuple(labels.shape)} do not match"
            )
        # float32 throughout, also inside a bf16 autocast region (validation under bf16-mixed): a bf16 logit of 16
        # gave the bin index 4095 * (1 + 2^-8) -> 4096, one past the last bin
        with float32_region(query.device.type):
            self._update(query.float(), key.float(), flat)

    def _update(self, q: torch.Tensor, k: torch.Tensor, flat: torch.Tensor) -> None:
        n = q.shape[1]
        valid = flat != self.ignore_index  # [B,N]
        scale = (self.bins - 1) / (2 * self.limit)
        for start in range(0, n, self.tile):
            stop = min(n, start + self.tile)
            logits = torch.bmm(q[:, start:stop], k.transpose(1, 2))  # [B,t,N]
            same = flat[:, start:stop, None] == flat[:, None, :]  # [B,t,N]
            pair = valid[:, start:stop, None] & valid[:, None, :]
            if not bool(pair.any()):
                continue
            x = logits[pair]
            target = same[pair]
            bce = F.binary_cross_entropy_with_logits(x, target.to(x.dtype), reduction="sum")
            self.bce_sum += bce.double()
            self.pairs += float(x.numel())
            idx = (
                ((x.clamp(-self.limit, self.limit) + self.limit) * scale)
                .round()
                .long()
                .clamp_(0, self.bins - 1)
            )
            self.pos_hist += torch.bincount(idx[target], minlength=self.bins).double()
            self.neg_hist += torch.bincount(idx[~target], minlength=self.bins).double()

    def compute(self) -> dict[str, float]:
        """``{"att_bce": float, "att_auc": float}`` (NaN without labelled pairs; AUC NaN without both kinds)."""
        bce = float(self.bce_sum / self.pairs) if float(self.pairs) > 0 else math.nan
        pos, neg = self.pos_hist, self.neg_hist
        n_pos, n_neg = float(pos.sum()), float(neg.sum())
        if n_pos > 0 and n_neg > 0:
            below = torch.cumsum(neg, 0) - neg  # negatives in lower bins
            auc = float(((below + 0.5 * neg) * pos).sum() / (n_pos * n_neg))
        else:
            auc = math.nan
        return {"att_bce": bce, "att_auc": auc}
