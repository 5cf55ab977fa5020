"""CI-Net assembly (paper Sec. 3.1, Fig. 1).

    images [B,3,H,W]
      -> encoder at output stride s                 encoder.py (dilated ResNet, s = 8) / timm_encoder.py
      -> 3x3 conv-BN-ReLU to ``channels``           (C = 512 by default)
      -> SUM (optional)                             sum.py, Eq. 1–2
      -> two branches (depth, segmentation); before each upsampling block a sharing stage (FSM Eq. 5,
         LSU Eq. 6, or none) exchanges features between the branches                 fsm.py, decoder.py
      -> heads at the input resolution: depth [B,1,H,W] metres (> 0), seg logits [B,K,H,W]

The paper's encoder (s = 8) has three upsampling blocks (1/8 -> 1/4 -> 1/2 -> 1/1) with ``decoder_channels``
outputs. An encoder at a coarser stride (a ViT at 16, Swin at 32) gets ``log2(s) - 3`` more blocks in front,
each with its own sharing module, that keep C channels (1/32 -> 1/16 -> 1/8 at C), so the last three blocks are
the paper's. The blocks go back to the exact sizes the encoder reports for each stride and then to the input
size, so any input size works (e.g. 97 x 131).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from cinet.errors import CinetError
from cinet.models.decoder import DepthHead, SegHead, UpsampleBlock, conv_bn_relu
from cinet.models.encoder import build_encoder
from cinet.models.fsm import FeatureSharingModule, LateralSharingUnit
from cinet.models.outputs import AttentionState, CINetOutput
from cinet.models.sum import SceneUnderstandingModule
from cinet.ops import resize_map

SHARING = ("none", "fsm", "lsu")
TASKS = ("depth", "seg")
#: Parts of the network reported by :meth:`CINet.diagnostic_groups` (gradient-norm diagnostics).
DIAGNOSTIC_GROUPS = ("encoder", "sum", "sharing", "depth", "seg")


def build_kwargs_of(model: nn.Module) -> dict[str, Any]:
    """The :func:`cinet.models.build_model` arguments that rebuild ``model`` (a copy; plain types, the checkpoint
    payload's ``model`` entry); ``{}`` for a module not made by ``build_model``."""
    return dict(model.build_kwargs) if isinstance(model, CINet) else {}


def require_joint(model: nn.Module, source: str) -> None:
    """Refuse a single-task baseline where both outputs are needed (predict, export, serve).

    Raises:
        CinetError: One line naming ``source`` and the variant (``depth_only`` / ``seg_only`` are the Δm
            references of the ablation; ``cinet eval`` evaluates them).
    """

    tasks = tuple(getattr(model, "tasks", TASKS))
    if len(tasks) < len(TASKS):
        raise CinetError(
            f"{source}: variant {getattr(model, 'variant', '?')!r} is a single-task baseline ({tasks[0]} only); "
            "predict/export need a joint model (cinet eval evaluates it)"
        )


class CINet(nn.Module):
    """Joint depth estimation and semantic segmentation network with contextual interaction.

    Args:
        num_classes: Number of segmentation classes K.
        encoder: ``resnet18 | resnet34 | resnet50 | resnet101`` or ``timm:<timm model name>`` (see
            :func:`cinet.models.encoder.build_encoder`).
        encoder_weights: ``None``, ``"imagenet"``, a local state-dict path of the encoder's architecture or a
            packaged short name (``efficientnet-lite0``; :func:`cinet.models.encoder.build_encoder`).
        use_sum: Insert the SUM after the channel reduction.
        sharing: ``none | fsm | lsu``: module before each upsampling block.
        channels: Channels C at the encoder's stride (SUM, first sharing stage, extra upsampling blocks).
        qk_channels: Channels of Q and K in the SUM.
        decoder_channels: Output channels of the last three upsampling blocks (to 1/4, 1/2, 1/1).
        attention_norm: ``n`` (A~V / N) or ``none`` (Eq. 2 as written); see :mod:`cinet.models.sum`.
        attention_impl: ``naive | tiled | triton | auto``.
        depth_init: Initial depth prediction in metres.
        ignore_index: Ignored label value of ``ideal_labels``.
        variant: Name recorded for checkpoint checks (the factory passes the table name).
        tasks: Branches to build: ``("depth", "seg")`` (joint, the paper) or one of them (single-task
            baselines: the other output is ``None``; no sharing possible).
        zero_init_sharing: FSM/LSU allocations start at zero (identity at init; see :mod:`cinet.models.fsm`).
        zero_init_sum: The SUM's value projection starts at zero (identity at init; see :mod:`cinet.models.sum`).

    Attributes:
        variant, encoder_name, num_classes, use_sum, sharing: The configuration, for checkpoint checks.
        num_stages: Number of upsampling blocks (= sharing stages), ``ceil(log2(output stride))``: 3 for the
            ResNets, 4 for a ViT at stride 16, 5 for Swin.
        input_mean, input_std: Input normalisation of the encoder (RGB, 0..1 scale) the images need.
        build_kwargs: Keyword arguments of :func:`cinet.models.build_model` that rebuild this model (empty when
            constructed directly).
        normalization_from_checkpoint: ``input_mean`` / ``input_std`` are the ones a checkpoint recorded
            (set by :func:`cinet.checkpoint.load_model`): :class:`cinet.Predictor` then uses them over its
            dataset description's.
    """

    def __init__(
        self,
        num_classes: int,
        encoder: str = "resnet50",
        encoder_weights: str | None = None,
        use_sum: bool = True,
        sharing: str = "fsm",
        channels: int = 512,
        qk_channels: int = 64,
        decoder_channels: tuple[int, ...] = (256, 128, 64),
        attention_norm: str = "n",
        attention_impl: str = "auto",
        depth_init: float = 3.0,
        ignore_index: int = 255,
        variant: str = "custom",
        tasks: tuple[str, ...] = TASKS,
        zero_init_sharing: bool = True,
        zero_init_sum: bool = True,
    ) -> None:
        super().__init__()
        if sharing not in SHARING:
            raise ValueError(f"sharing must be one of {SHARING}, got {sharing!r}")
        tasks = tuple(tasks)
        if not tasks or any(t not in TASKS for t in tasks) or len(set(tasks)) != len(tasks):
            raise ValueError(f"tasks must be a non-empty subset of {TASKS}, got {tasks!r}")
        if len(tasks) == 1 and sharing != "none":
            raise ValueError(f"sharing {sharing!r} needs both branches, got tasks={tasks!r}")
        decoder_channels = tuple(int(c) for c in decoder_channels)
        if len(decoder_channels) != 3 or min(decoder_channels) < 1:
            raise ValueError(
                "decoder_channels: need 3 positive entries (1/8 -> 1/4 -> 1/2 -> 1/1), "
                f"got {list(decoder_channels)}"
            )
        self.variant = variant
        self.encoder_name = encoder
        self.num_classes = num_classes
        self.use_sum = use_sum
        self.sharing = sharing
        self.tasks = tasks
        self.ignore_index = ignore_index
        self.build_kwargs: dict[str, Any] = {}  # set by cinet.models.build_model (checkpoint payload)
        self.normalization_from_checkpoint = False  # set by cinet.checkpoint.load_model

        self.encoder = build_encoder(encoder, weights=encoder_weights)
        self.input_mean: tuple[float, float, float] = tuple(self.encoder.mean)  # type: ignore[assignment]
        self.input_std: tuple[float, float, float] = tuple(self.encoder.std)  # type: ignore[assignment]
        self.num_stages = max(3, math.ceil(math.log2(self.encoder.output_stride)))
        self.reduce = conv_bn_relu(self.encoder.out_channels, channels)
        self.sum = (
            SceneUnderstandingModule(
                channels, qk_channels, attention_norm, attention_impl, ignore_index, zero_init_sum
            )
            if use_sum
            else None
        )
        extra = self.num_stages - 3  # blocks in front of the paper's three (coarser encoders), C -> C
        # inputs of the blocks, e.g. 512, 256, 128 (s = 8) or 512, 512, 256, 128 (s = 16)
        stage_channels = (*(channels,) * (extra + 1), *decoder_channels[:-1])
        out_channels = (*(channels,) * extra, *decoder_channels)
        if sharing == "fsm":
            self.share = nn.ModuleList(FeatureSharingModule(c, zero_init_sharing) for c in stage_channels)
        elif sharing == "lsu":
            self.share = nn.ModuleList(LateralSharingUnit(c, zero_init_sharing) for c in stage_channels)
        else:
            self.share = None
        blocks = zip(stage_channels, out_channels)
        self.depth_blocks = (
            nn.ModuleList(UpsampleBlock(cin, cout) for cin, cout in blocks) if "depth" in tasks else None
        )
        blocks = zip(stage_channels, out_channels)
        self.seg_blocks = (
            nn.ModuleList(UpsampleBlock(cin, cout) for cin, cout in blocks) if "seg" in tasks else None
        )
        self.depth_head = DepthHead(decoder_channels[-1], depth_init=depth_init) if "depth" in tasks else None
        self.seg_head = SegHead(decoder_channels[-1], num_classes) if "seg" in tasks else None

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """The optimiser's groups, a partition of ``parameters()``: ``{"encoder": backbone (pretrained,
        ``train.encoder_lr_mult``), "sharing": FSM / LSU (``train.sharing_lr_mult``; empty without), "new": all
        others}``."""
        enc = list(self.encoder.parameters())
        share = list(self.share.parameters()) if self.share is not None else []
        taken = {id(p) for p in (*enc, *share)}
        return {"encoder": enc, "sharing": share, "new": [p for p in self.parameters() if id(p) not in taken]}

    def diagnostic_groups(self) -> dict[str, list[nn.Parameter]]:
        """Parameters by part of the network, for gradient-norm diagnostics (a partition of ``parameters()``).

        Returns:
            ``{"encoder": backbone + 3x3 reduction, "sum": SUM, "sharing": FSM/LSU, "depth": depth branch
            (upsampling blocks + head), "seg": segmentation branch}``; parts the variant lacks are empty lists.
        """

        def params(*modules: nn.Module | None) -> list[nn.Parameter]:
            return [p for m in modules if m is not None for p in m.parameters()]

        return {
            "encoder": params(self.encoder, self.reduce),
            "sum": params(self.sum),
            "sharing": params(self.share),
            "depth": params(self.depth_blocks, self.depth_head),
            "seg": params(self.seg_blocks, self.seg_head),
        }

    def forward(
        self,
        images: torch.Tensor,
        *,
        ideal_labels: torch.Tensor | None = None,
        attention_map: torch.Tensor | None = None,
        ideal_weight: float = 1.0,
    ) -> CINetOutput:
        """Predict depth and segmentation.

        Args:
            images: Normalised images [B,3,H,W] (any H, W).
            ideal_labels: Optional labels [B,H,W] (full or feature resolution, ``ignore_index`` = ignore): the
                SUM uses the ideal map A = M M^T (Eq. 3) instead of its learned map (training stage 1).
                Nearest-downsampled to the feature size with :func:`cinet.ops.resize_map`. Ignored by
                variants without SUM.
            attention_map: Optional explicit attention map [B,N,N] (N = h*w at the encoder's stride, 1/8 for
                the ResNets), values in [0, 1].
                Ignored by variants without SUM.
            ideal_weight: Weight of the ideal map in ``w A + (1 - w) A~`` when ``ideal_labels`` is given
                (1 = the ideal map alone; see :class:`SceneUnderstandingModule`).

        Returns:
            :class:`CINetOutput`; ``depth_features`` / ``seg_features`` hold each branch's features after each
            sharing stage (f^{t+1}, coarse to fine: 1/8, 1/4, 1/2 for the ResNets; ``num_stages`` maps), the
            inputs of the upsampling blocks. A single-task model returns ``None`` for the other output and no
            features for it.
        """
        in_size = (images.shape[-2], images.shape[-1])
        # [B,Cenc,hs,ws] at output stride s, and the sizes fine to coarse [(h2,w2),(h4,w4),...,(hs,ws)]
        x, enc_sizes = self.encoder(images)
        x = self.reduce(x)  # [B,C,hs,ws]
        attention: AttentionState | None = None
        if self.sum is not None:
            labels = None
            if ideal_labels is not None:
                if ideal_labels.dim() == 4:
                    ideal_labels = ideal_labels.squeeze(1)
                labels = resize_map(ideal_labels, (x.shape[-2], x.shape[-1]))  # [B,hs,ws]
            x, attention = self.sum(
                x,
                ideal_labels=labels,
                attention_map=attention_map,
                num_classes=self.num_classes,
                ideal_weight=ideal_weight,
            )

        targets = [*reversed(enc_sizes[:-1]), in_size]  # s = 8: 1/4, 1/2, 1/1
        f_d, f_s = x, x
        depth_features: list[torch.Tensor] = []
        seg_features: list[torch.Tensor] = []
        shared: list[tuple[torch.Tensor, torch.Tensor]] = []
        for i, size in enumerate(targets):
            if self.share is not None:
                f_d, f_s, alloc = self.share[i](f_d, f_s)
                shared.append(alloc)
            if self.depth_blocks is not None:
                depth_features.append(f_d)
                f_d = self.depth_blocks[i](f_d, size)
            if self.seg_blocks is not None:
                seg_features.append(f_s)
                f_s = self.seg_blocks[i](f_s, size)
        return CINetOutput(
            depth=self.depth_head(f_d) if self.depth_head is not None else None,
            seg_logits=self.seg_head(f_s) if self.seg_head is not None else None,
            attention=attention,
            depth_features=depth_features,
            seg_features=seg_features,
            shared_features=shared,
        )
