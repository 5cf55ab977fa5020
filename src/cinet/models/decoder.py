"""Task-branch building blocks: upsampling blocks and the depth / segmentation heads (paper Sec. 3.1)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from cinet.ops.autocast import float32_region


def conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int = 3) -> nn.Sequential:
    """``conv (no bias) -> BN -> ReLU`` with "same" padding."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class UpsampleBlock(nn.Module):
    """x2 bilinear upsampling to an explicit size, then ``num_convs`` 3x3 conv-BN-ReLU (the first changes C).

    Upsampling goes to the size given at call time (the encoder's size at that stride), not by a factor, so odd
    input sizes come back exactly.

    Args:
        in_channels: Input channels.
        out_channels: Output channels (the branch halves them: 512 -> 256 -> 128 -> 64).
        num_convs: Number of 3x3 conv-BN-ReLU after the upsampling.
    """

    def __init__(self, in_channels: int, out_channels: int, num_convs: int = 2) -> None:
        super().__init__()
        layers = [conv_bn_relu(in_channels, out_channels)]
        layers += [conv_bn_relu(out_channels, out_channels) for _ in range(num_convs - 1)]
        self.convs = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """[B,Cin,h,w] -> [B,Cout,*size]."""
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return self.convs(x)


#: The depth head's smallest prediction in metres (``softplus(...) + DEPTH_OFFSET``).
DEPTH_OFFSET = 1e-3


class DepthHead(nn.Module):
    """Depth in metres: ``softplus(conv3x3(x)) + min_depth`` (positive everywhere).

    The bias is initialised so that the initial prediction is about ``depth_init`` metres (the typical depth of
    the data set), which makes the first steps of the scale-dependent BerHu loss (Eq. 8) well behaved.

    Args:
        in_channels: Input channels.
        depth_init: Initial prediction in metres (> ``min_depth``).
        min_depth: Small positive offset in metres.
    """

    def __init__(self, in_channels: int, depth_init: float = 3.0, min_depth: float = DEPTH_OFFSET) -> None:
        super().__init__()
        if not (math.isfinite(depth_init) and depth_init > min_depth):
            raise ValueError(
                f"depth_init: must be a finite number > {min_depth:g} metres, got {depth_init!r}"
            )
        self.min_depth = min_depth
        self.conv = nn.Conv2d(in_channels, 1, 3, padding=1)
        x = depth_init - min_depth  # softplus^-1(x) = x + log(1 - exp(-x)): no overflow for a large x
        nn.init.constant_(self.conv.bias, x + math.log(-math.expm1(-x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B,Cin,H,W] -> depth [B,1,H,W] float32 (> 0).

        The convolution runs in float32 also inside a bf16 autocast region: a bf16 output steps by 2^-7 between 2 and
        4 (1.6 cm at 3 m), coarser than most neighbouring-pixel differences the pair and normal losses (Eq. 9, 10)
        compare: with the head in bf16, training in bf16 cost δ1 0.013 (3 seeds, paired); with it in float32, every
        metric is within the seed noise (docs/results.md, "bf16 vs float32").
        """
        with float32_region(x.device.type):
            return F.softplus(self.conv(x.float())) + self.min_depth


class SegHead(nn.Module):
    """Class logits: 3x3 conv to ``num_classes`` channels.

    Args:
        in_channels: Input channels.
        num_classes: Number of classes.
    """

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, num_classes, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B,Cin,H,W] -> logits [B,num_classes,H,W]."""
        return self.conv(x)
