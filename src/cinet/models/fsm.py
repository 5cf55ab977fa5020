"""Feature sharing between the depth and segmentation branches (paper Sec. 3.3).

* :class:`FeatureSharingModule` (FSM, Eq. 5): ``concat(f_d, f_s)`` goes through C(.), a small
  encoder-decoder of depthwise-separable convolutions (the "sampling" that enlarges the receptive field),
  and is allocated to each branch by its own 1x1 conv, followed by a residual add.
* :class:`LateralSharingUnit` (LSU of the paper's ref. [13], Eq. 6): element-wise sums of 1x1 convs.

Both return ``(f_d', f_s', (F_d, F_s))`` where ``F_d, F_s`` are the allocated features of Eq. 14 (what is added
to each branch), shown in the paper's Fig. 8.

Initialisation (the paper is silent; decision and measurement in ``docs/architecture.md``): with
``zero_init=True`` (default) the 1x1 convs that allocate features to the branches (C_fd, C_fs of Eq. 5; the
four convs of Eq. 6) start at zero, so each module adds exactly 0 at step 0 and the network computes what the
same network without it computes (the zero-gamma residual / zero-initialised adapter practice). Their
gradients are not zero (they see the shared features), so the allocation is learned from the first step.
With PyTorch's default init the FSM adds large random features to both branches at step 0, which cost
0.2 in δ1 on the ablation benchmark (docs/results.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class DSConv(nn.Sequential):
    """Depthwise-separable conv: depthwise 3x3 (stride s) -> BN -> ReLU -> pointwise 1x1 -> BN -> ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__(
            nn.Conv2d(in_channels, in_channels, 3, stride=stride, padding=1, groups=in_channels, bias=False),
            nn.BatchNorm2d(in_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(in_channels, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


def zero_init_(*convs: nn.Conv2d) -> None:
    """Set the weights and biases of ``convs`` to zero in place (identity-at-init residual branches)."""
    for conv in convs:
        nn.init.zeros_(conv.weight)
        if conv.bias is not None:
            nn.init.zeros_(conv.bias)


def _resize(x: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class SharedContext(nn.Module):
    """C(.) of Eq. 5: a two-level encoder-decoder of depthwise-separable convs on ``concat(f_d, f_s)``.

    ``2C -> C`` (full size) -> two stride-2 DSConvs (1/2, 1/4 of the stage size) -> two bilinear upsamplings
    to the exact sizes of the encoder side (works for odd sizes), each followed by a DSConv and an additive
    skip from the encoder side of the same size.

    Args:
        in_channels: Channels of the concatenated input (2C).
        channels: Working/output channels C.
    """

    def __init__(self, in_channels: int, channels: int) -> None:
        super().__init__()
        self.stem = DSConv(in_channels, channels)
        self.down1 = DSConv(channels, channels, stride=2)
        self.down2 = DSConv(channels, channels, stride=2)
        self.up1 = DSConv(channels, channels)
        self.up2 = DSConv(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s0 = self.stem(x)  # [B,C,h,w]
        s1 = self.down1(s0)  # [B,C,h/2,w/2]
        s2 = self.down2(s1)  # [B,C,h/4,w/4]
        u1 = self.up1(_resize(s2, s1.shape[-2:])) + s1  # [B,C,h/2,w/2]
        return self.up2(_resize(u1, s0.shape[-2:])) + s0  # [B,C,h,w]


class FeatureSharingModule(nn.Module):
    """FSM (Eq. 5): ``f_d' = f_d + C_d(C(concat(f_d, f_s)))``, ``f_s' = f_s + C_s(C(concat(f_d, f_s)))``.

    Args:
        channels: Channels C of each branch's features.
        zero_init: Start C_fd and C_fs at zero, so that the module adds exactly 0 at initialisation.
    """

    def __init__(self, channels: int, zero_init: bool = True) -> None:
        super().__init__()
        self.context = SharedContext(2 * channels, channels)
        self.to_depth = nn.Conv2d(channels, channels, 1)  # C^{1x1}_{fd}
        self.to_seg = nn.Conv2d(channels, channels, 1)  # C^{1x1}_{fs}
        if zero_init:
            zero_init_(self.to_depth, self.to_seg)

    def forward(
        self, f_d: torch.Tensor, f_s: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Share features between the branches.

        Args:
            f_d: Depth features f_d^t [B,C,h,w].
            f_s: Segmentation features f_s^t [B,C,h,w].

        Returns:
            ``f_d^{t+1}``, ``f_s^{t+1}`` (Eq. 5) and the allocated features ``(F_d, F_s)`` (Eq. 14).
        """
        shared = self.context(torch.cat([f_d, f_s], dim=1))  # [B,C,h,w]
        alloc_d = self.to_depth(shared)
        alloc_s = self.to_seg(shared)
        return f_d + alloc_d, f_s + alloc_s, (alloc_d, alloc_s)


class LateralSharingUnit(nn.Module):
    """LSU (Eq. 6): ``f_d' = f_d + C_d1(f_d) + C_s2(f_s)``, ``f_s' = f_s + C_d2(f_d) + C_s1(f_s)``.

    Args:
        channels: Channels C of each branch's features.
        zero_init: Start the four 1x1 convs at zero, so that the unit adds exactly 0 at initialisation.
    """

    def __init__(self, channels: int, zero_init: bool = True) -> None:
        super().__init__()
        self.d1 = nn.Conv2d(channels, channels, 1)  # C^{1x1}_{fd1}: depth -> depth
        self.d2 = nn.Conv2d(channels, channels, 1)  # C^{1x1}_{fd2}: depth -> seg
        self.s1 = nn.Conv2d(channels, channels, 1)  # C^{1x1}_{fs1}: seg -> seg
        self.s2 = nn.Conv2d(channels, channels, 1)  # C^{1x1}_{fs2}: seg -> depth
        if zero_init:
            zero_init_(self.d1, self.d2, self.s1, self.s2)

    def forward(
        self, f_d: torch.Tensor, f_s: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Share features between the branches (same contract as :class:`FeatureSharingModule`)."""
        alloc_d = self.d1(f_d) + self.s2(f_s)  # F_d^{LSU}
        alloc_s = self.d2(f_d) + self.s1(f_s)  # F_s^{LSU}
        return f_d + alloc_d, f_s + alloc_s, (alloc_d, alloc_s)
