"""The model builder: a :class:`CINet` from a variant name of the recipe table and plain arguments.

The variants (paper Tables 1–2) are rows of :data:`cinet.recipe.VARIANTS`; this builder reads their
architecture columns (``use_sum``, ``sharing``, ``tasks``). What a variant trains (L_att, L_con, the ideal
map) is training policy, read from the same table by :func:`cinet.recipe.stage_recipe`, not by the network.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

from cinet.models.cinet import CINet
from cinet.models.decoder import DEPTH_OFFSET
from cinet.models.encoder import check_encoder_name
from cinet.models.sum import check_attention_norm
from cinet.ops import check_attention_impl
from cinet.recipe import variant as variant_row

logger = logging.getLogger(__name__)


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
        variant: Row of :data:`cinet.recipe.VARIANTS` (``baseline | sum | sum_unsup | fsm | lsu | sum_fsm | cinet |
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
        ValueError: Unknown variant / encoder / attention option, encoder weights that cannot be used, or an
            invalid size; the message starts with the argument's name (the build layer prefixes ``model.``).
        CheckpointError: A local encoder weights file that is missing, unreadable or of another architecture.
    """
    arguments = dict(locals())  # the call's arguments, before any other name is bound
    spec = variant_row(variant)
    check_encoder_name(encoder)
    check_attention_norm(attention_norm)
    check_attention_impl(attention_impl)
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes: must be a positive integer, got {num_classes!r}")
    decoder_channels = tuple(int(c) for c in decoder_channels)  # checked by CINet
    for name, value in (("channels", channels), ("qk_channels", qk_channels)):
        if value < 1:
            raise ValueError(f"{name}: must be positive, got {value}")
    if not (math.isfinite(depth_init) and depth_init > DEPTH_OFFSET):
        raise ValueError(f"depth_init: must be a finite number > {DEPTH_OFFSET:g} metres, got {depth_init!r}")
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
        **arguments,
        "encoder_weights": str(encoder_weights) if encoder_weights is not None else None,
        "decoder_channels": list(decoder_channels),
    }  # plain types, for the checkpoint payload
    logger.debug(
        "built %s (%s) with %d parameters", variant, encoder, sum(p.numel() for p in model.parameters())
    )
    return model
