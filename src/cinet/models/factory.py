"""Named variants of the paper's ablations (Tables 1–2) and the model builder.

| variant    | SUM        | sharing | L_con | tasks      | paper                                      |
|------------|------------|---------|-------|------------|--------------------------------------------|
| baseline   | no         | none    | no    | depth, seg | Table 1, baseline                          |
| sum        | supervised | none    | no    | depth, seg | Table 1, baseline + SUM                    |
| sum_unsup  | learned    | none    | no    | depth, seg | Fig. 7, SUM without L_att nor ideal map    |
| fsm        | no         | fsm     | no    | depth, seg | Table 1/2, baseline + FSM                  |
| lsu        | no         | lsu     | no    | depth, seg | Table 2, baseline + LSU                    |
| sum_fsm    | supervised | fsm     | no    | depth, seg | Table 1, baseline + SUM + FSM              |
| cinet      | supervised | fsm     | yes   | depth, seg | Table 1, CI-Net                            |
| depth_only | no         | none    | no    | depth      | single-task reference of Δm (not in paper) |
| seg_only   | no         | none    | no    | seg        | single-task reference of Δm (not in paper) |

"supervised": the SUM is fed the ideal map A = M M^T in stage 1 and its learned map is trained with L_att
(Eq. 3–4); "learned": the SUM learns its map from the task losses alone (the "without L_att" maps of the
paper's Fig. 7). Variants are rows of :data:`VARIANTS`; the model has one code path. ``consistency`` and
``attention_supervision`` are read by the loss builder and the training schedule, not by the network.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from cinet.errors import ConfigError
from cinet.models.cinet import SHARING, CINet
from cinet.models.encoder import check_encoder_name
from cinet.models.sum import ATTENTION_NORMS
from cinet.ops import ATTENTION_IMPLS

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class VariantSpec:
    """One ablation variant.

    Attributes:
        use_sum: Scene-understanding module after the encoder (Sec. 3.2).
        sharing: ``none | fsm | lsu`` before each upsampling block (Sec. 3.3).
        consistency: Train with the consistency loss L_con (Eq. 7).
        attention_supervision: With a SUM: ideal map in stage 1 and L_att (Eq. 3–4) on the learned map.
        tasks: Branches of the network (``("depth", "seg")``, or one for the single-task baselines).
    """

    use_sum: bool
    sharing: str
    consistency: bool
    attention_supervision: bool = True
    tasks: tuple[str, ...] = ("depth", "seg")

    @property
    def supervised_attention(self) -> bool:
        """The variant has a SUM whose map is supervised (ideal map in stage 1, L_att)."""
        return self.use_sum and self.attention_supervision

    @property
    def loss_terms(self) -> frozenset[str]:
        """Top-level terms of Eq. 13 this variant can train: ``depth``, ``seg``, ``att``, ``con``."""
        terms = set(self.tasks)
        if self.supervised_attention:
            terms.add("att")
        if self.consistency:
            terms.add("con")
        return frozenset(terms)


VARIANTS: dict[str, VariantSpec] = {
    "baseline": VariantSpec(use_sum=False, sharing="none", consistency=False),
    "sum": VariantSpec(use_sum=True, sharing="none", consistency=False),
    "sum_unsup": VariantSpec(use_sum=True, sharing="none", consistency=False, attention_supervision=False),
    "fsm": VariantSpec(use_sum=False, sharing="fsm", consistency=False),
    "lsu": VariantSpec(use_sum=False, sharing="lsu", consistency=False),
    "sum_fsm": VariantSpec(use_sum=True, sharing="fsm", consistency=False),
    "cinet": VariantSpec(use_sum=True, sharing="fsm", consistency=True),
    "depth_only": VariantSpec(use_sum=False, sharing="none", consistency=False, tasks=("depth",)),
    "seg_only": VariantSpec(use_sum=False, sharing="none", consistency=False, tasks=("seg",)),
}


def variant_spec(name: str) -> VariantSpec:
    """The :class:`VariantSpec` of a variant name; unknown name -> :class:`ConfigError` listing valid ones."""
    if name not in VARIANTS:
        raise ConfigError(f"model.variant: unknown variant {name!r}; valid: {', '.join(VARIANTS)}")
    return VARIANTS[name]


def build_model(
    *,
    variant: str = "cinet",
    encoder: str = "resnet50",
    num_classes: int,
    encoder_weights: str | Path | None = None,
    channels: int = 512,
    qk_channels: int = 64,
    decoder_channels: tuple[int, ...] | list[int] = (256, 128, 64),
    attention_norm: str = "n",
    attention_impl: str = "auto",
    depth_init: float = 3.0,
    ignore_index: int = 255,
    zero_init_sharing: bool = True,
    zero_init_sum: bool = True,
) -> CINet:
    """Build a :class:`CINet` for a named variant.

    Args:
        variant: Row of :data:`VARIANTS` (``baseline | sum | sum_unsup | fsm | lsu | sum_fsm | cinet |
            depth_only | seg_only``).
        encoder: ``resnet18 | resnet34 | resnet50 | resnet101`` (dilated, output stride 8; the paper's) or
            ``timm:<timm model name>`` (any timm backbone, :mod:`cinet.models.timm_encoder`).
        num_classes: Number of segmentation classes.
        encoder_weights: ``None`` (random), ``"imagenet"`` (torchvision's / timm's weights, needs network or
            their cache), the path of a local state dict of the encoder's architecture, or packaged weights by
            short name (``efficientnet-lite0`` for ``timm:tf_efficientnet_lite0``).
        channels: Channels at the encoder's stride after the 3x3 reduction (SUM, first sharing stage).
        qk_channels: Channels of Q and K of the SUM.
        decoder_channels: Output channels of the last three upsampling blocks of each branch.
        attention_norm: ``n`` (divide A~V by N, default) or ``none`` (Eq. 2 as written).
        attention_impl: ``naive | tiled | triton | auto``.
        depth_init: Initial depth prediction in metres (bias of the depth head).
        ignore_index: Label value ignored in the ideal attention map.
        zero_init_sharing: FSM/LSU allocation convs start at zero (the module is the identity at init).
        zero_init_sum: The SUM's value projection starts at zero (the SUM is the identity at init).

    Returns:
        The model; ``model.build_kwargs`` holds these arguments (plain types) for the checkpoint payload.

    Raises:
        ConfigError: Unknown variant / encoder / attention option, or an invalid size.
    """
    spec = variant_spec(variant)
    check_encoder_name(encoder)
    if attention_norm not in ATTENTION_NORMS:
        raise ConfigError(f"model.attention_norm: {attention_norm!r} not in {', '.join(ATTENTION_NORMS)}")
    if attention_impl not in ATTENTION_IMPLS:
        raise ConfigError(f"model.attention_impl: {attention_impl!r} not in {', '.join(ATTENTION_IMPLS)}")
    if spec.sharing not in SHARING:  # table sanity
        raise ConfigError(f"model.variant: {variant!r} has unknown sharing {spec.sharing!r}")
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ConfigError(f"model.num_classes: must be a positive integer, got {num_classes!r}")
    decoder_channels = tuple(int(c) for c in decoder_channels)
    if len(decoder_channels) != 3 or min(decoder_channels) < 1:
        raise ConfigError(f"model.decoder_channels: need 3 positive entries, got {list(decoder_channels)}")
    if channels < 1 or qk_channels < 1:
        raise ConfigError(
            f"model.channels / model.qk_channels: must be positive, got {channels}, {qk_channels}"
        )
    if depth_init <= 0:
        raise ConfigError(f"model.depth_init: must be > 0 metres, got {depth_init}")
    model = CINet(
        num_classes,
        encoder=encoder,
        encoder_weights=str(encoder_weights) if encoder_weights is not None else None,
        use_sum=spec.use_sum,
        sharing=spec.sharing,
        channels=channels,
        qk_channels=qk_channels,
        decoder_channels=decoder_channels,
        attention_norm=attention_norm,
        attention_impl=attention_impl,
        depth_init=depth_init,
        ignore_index=ignore_index,
        variant=variant,
        tasks=spec.tasks,
        zero_init_sharing=zero_init_sharing,
        zero_init_sum=zero_init_sum,
    )
    model.build_kwargs = {
        "variant": variant,
        "encoder": encoder,
        "num_classes": num_classes,
        "encoder_weights": str(encoder_weights) if encoder_weights is not None else None,
        "channels": channels,
        "qk_channels": qk_channels,
        "decoder_channels": list(decoder_channels),
        "attention_norm": attention_norm,
        "attention_impl": attention_impl,
        "depth_init": depth_init,
        "ignore_index": ignore_index,
        "zero_init_sharing": zero_init_sharing,
        "zero_init_sum": zero_init_sum,
    }
    logger.debug(
        "built %s (%s) with %d parameters", variant, encoder, sum(p.numel() for p in model.parameters())
    )
    return model
