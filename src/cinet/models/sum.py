"""Scene-Understanding Module, SUM (paper Sec. 3.2, Eq. 1–3).

Like a non-local block: 1x1 convs map X [B,C,h,w] to Q, K (``qk_channels``) and V (C); with N = h*w,

    A~ = sigmoid(Q K^T)              [B,N,N]   (Eq. 1)
    Y  = A~ V * scale + X            [B,N,C]   (Eq. 2)

Notes on fidelity:

* The paper's Fig. 2 draws a softmax, but Eq. 1 and the BCE attention loss of Eq. 4 (targets 0/1 per pair)
  need an element-wise sigmoid: sigmoid is used.
* Eq. 2 has no normalisation. ``A~ V`` sums N terms, so its scale grows with the feature size (N = 4800 at
  480x640); by default (``normalize="n"``) the product is divided by N, as the paper's reference [15] does.
  ``normalize="none"`` gives Eq. 2 literally.
* Stage 1 of training replaces A~ by the ideal map A = M M^T built from the labels (Eq. 3); this is the
  ``ideal_labels`` mode (computed as M (M^T V), never N x N). An explicit ``attention_map`` [B,N,N] is also
  accepted (tests, analysis). ``ideal_weight`` w < 1 mixes the two maps, ``w A + (1 - w) A~`` (the optional
  gradual hand-over from stage 1 to stage 2; not in the paper, which switches at once).
* Initialisation (the paper is silent): ``zero_init_value=True`` starts the value projection V at zero, so
  the SUM is exactly the identity at step 0 (the models' default, ``model.zero_init_sum``); ``False`` keeps
  PyTorch's init, so at step 0 the SUM adds ``0.5 mean_n(V)`` (A~ ~ 1/2 everywhere) to every position. The
  choice is measured in ``docs/results.md`` and recorded in ``docs/architecture.md``.

The N x N product goes through :func:`cinet.ops.sigmoid_attention`, which picks the naive or a
memory-efficient implementation (``attention_impl``).
"""

from __future__ import annotations

import torch
from torch import nn

from cinet.models.outputs import AttentionState
from cinet.ops import check_attention_impl, ideal_attention_apply, sigmoid_attention

ATTENTION_NORMS = ("n", "none")


def check_attention_norm(norm: str) -> str:
    """``norm`` if it is one of :data:`ATTENTION_NORMS` (the one check of that value).

    Raises:
        ValueError: ``"attention_norm: ..."`` naming the valid values.
    """
    if norm not in ATTENTION_NORMS:
        raise ValueError(f"attention_norm: {norm!r} not in {', '.join(ATTENTION_NORMS)}")
    return norm


#: The attention path of inference (predict, eval, Predictor, benchmarks), whatever a checkpoint was trained
#: with: ``auto`` is naive for small maps and memory-bounded (tiled; Triton on CUDA) from
#: ``$CINET_ATTENTION_TILED_MIN_N`` positions on. The path changes how A~ V is computed, not its value.
INFERENCE_ATTENTION_IMPL = "auto"


def set_attention_impl(model: nn.Module, impl: str = INFERENCE_ATTENTION_IMPL) -> nn.Module:
    """Set the attention path of every SUM in ``model`` (in place) and return ``model``.

    How the attention is computed is a runtime choice, not a property of the trained weights: a checkpoint
    trained with ``naive`` predicts identically (to float rounding) with ``tiled``, without the B x N x N map.

    Args:
        model: Any module (a :class:`~cinet.models.CINet`); modules other than the SUM are left alone.
        impl: ``naive | tiled | triton | auto``.

    Raises:
        ValueError: Unknown ``impl``.
    """
    check_attention_impl(impl)
    for m in model.modules():
        if isinstance(m, SceneUnderstandingModule):
            m.attention_impl = impl
    return model


class SceneUnderstandingModule(nn.Module):
    """SUM: sigmoid self-attention with a residual connection (Eq. 1–2).

    Args:
        channels: Channels C of the input X (and of V and Y).
        qk_channels: Channels of Q and K (C_q = C_k).
        normalize: ``"n"`` multiplies ``A~ V`` by 1/N (default), ``"none"`` by 1 (paper's Eq. 2 as written).
        attention_impl: ``naive | tiled | triton | auto`` (see :mod:`cinet.ops.sigmoid_attention`).
        ignore_index: Label value excluded from the ideal map.
        zero_init_value: Start the value projection at zero (the SUM adds exactly 0 at initialisation).
    """

    def __init__(
        self,
        channels: int,
        qk_channels: int = 64,
        normalize: str = "n",
        attention_impl: str = "auto",
        ignore_index: int = 255,
        zero_init_value: bool = False,
    ) -> None:
        super().__init__()
        check_attention_norm(normalize)
        check_attention_impl(attention_impl)
        self.channels = channels
        self.qk_channels = qk_channels
        self.normalize = normalize
        self.attention_impl = attention_impl
        self.ignore_index = ignore_index
        self.query = nn.Conv2d(channels, qk_channels, 1)
        self.key = nn.Conv2d(channels, qk_channels, 1)
        self.value = nn.Conv2d(channels, channels, 1)
        if zero_init_value:
            nn.init.zeros_(self.value.weight)
            nn.init.zeros_(self.value.bias)

    def scale(self, n: int) -> float:
        """Multiplier of ``A~ V``: ``1/N`` for ``normalize="n"``, else 1."""
        return 1.0 / n if self.normalize == "n" else 1.0

    def forward(
        self,
        x: torch.Tensor,
        *,
        ideal_labels: torch.Tensor | None = None,
        attention_map: torch.Tensor | None = None,
        num_classes: int | None = None,
        ideal_weight: float = 1.0,
    ) -> tuple[torch.Tensor, AttentionState]:
        """Apply the SUM.

        Args:
            x: Features X [B,C,h,w].
            ideal_labels: Optional labels [B,h,w] at the feature size (``ignore_index`` = ignore): use the
                ideal map A = M M^T (Eq. 3) instead of A~ (stage 1 of training).
            attention_map: Optional explicit map [B,N,N] with values in [0, 1] instead of A~.
            num_classes: Classes of the one-hot M (needed with ``ideal_labels``; default: max label + 1).
            ideal_weight: With ``ideal_labels``: weight w in [0, 1] of the ideal map in ``w A + (1 - w) A~``
                (1: the ideal map alone, stage 1 of the paper; 0: the learned map alone).

        Returns:
            Y [B,C,h,w] (Eq. 2) and the :class:`AttentionState` (Q, K for the attention loss of Eq. 4).
        """
        b, c, h, w = x.shape
        n = h * w
        q = self.query(x).flatten(2).transpose(1, 2)  # [B,N,D]
        k = self.key(x).flatten(2).transpose(1, 2)  # [B,N,D]
        v = self.value(x).flatten(2).transpose(1, 2)  # [B,N,C]
        scale = self.scale(n)
        if not 0.0 <= ideal_weight <= 1.0:
            raise ValueError(f"ideal_weight must be in [0, 1], got {ideal_weight}")
        if ideal_labels is not None and ideal_weight == 0.0:
            ideal_labels = None  # the learned map alone
        given = (ideal_labels is not None and ideal_weight == 1.0) or attention_map is not None
        if ideal_labels is not None:
            labels = ideal_labels.reshape(b, n).long()  # [B,N]
            if num_classes is None:
                valid = labels[labels != self.ignore_index]
                num_classes = int(valid.max()) + 1 if valid.numel() else 1
            y = ideal_attention_apply(labels, v, num_classes, scale=scale, ignore_index=self.ignore_index)
            if ideal_weight < 1.0:  # hand-over: w A V + (1 - w) A~ V
                learned = sigmoid_attention(q, k, v, scale=scale, impl=self.attention_impl)  # [B,N,C]
                y = ideal_weight * y + (1.0 - ideal_weight) * learned
        elif attention_map is not None:
            if tuple(attention_map.shape) != (b, n, n):
                raise ValueError(
                    f"attention_map must be [B,N,N] = {(b, n, n)}, got {tuple(attention_map.shape)}"
                )
            y = torch.bmm(attention_map.to(v.dtype), v) * scale  # [B,N,C]
        else:
            y = sigmoid_attention(q, k, v, scale=scale, impl=self.attention_impl)  # [B,N,C]
        y = y.transpose(1, 2).reshape(b, c, h, w) + x  # [B,C,h,w]
        return y, AttentionState(query=q, key=k, size=(h, w), given=given)
