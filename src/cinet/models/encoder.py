"""Encoders: the paper's dilated ResNet at output stride 8 (Sec. 3.1), or any timm backbone.

:func:`build_encoder` picks the encoder of a ``model.encoder`` name: ``resnet18 | resnet34 | resnet50 |
resnet101`` (the torchvision ResNets below, the paper's configuration and the default) or ``timm:<name>``
(:class:`cinet.models.timm_encoder.TimmEncoder`). Every encoder returns ``(features, sizes)`` and has
``out_channels``, ``output_stride`` and the input normalisation ``mean`` / ``std`` it was pretrained with.

The last two residual stages of a torchvision ResNet keep the resolution of ``layer2`` (1/8 of the input) and
use dilation 2 (``layer3``) and 4 (``layer4``) instead of stride 2, "reducing the detailed information loss"
of the usual 1/32 output.

* ResNet-50/101 (Bottleneck): torchvision's ``replace_stride_with_dilation=[False, True, True]``.
* ResNet-18/34 (BasicBlock rejects ``dilation > 1``): the torchvision model is built and then dilated by hand,
  following torchvision's Bottleneck convention: stride 1 in the first block (``conv1`` and the downsample
  conv), the first block of a dilated stage keeps the previous stage's dilation (1 in ``layer3``, 2 in
  ``layer4``), the other blocks use the stage's dilation (2, 4) on both 3x3 convs, with ``padding = dilation``.

Dilation changes no weight shape, so torchvision ImageNet state dicts load directly.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
import torchvision
from torch import nn
from torchvision.models import resnet as tv_resnet

from cinet.data.info import IMAGENET_MEAN, IMAGENET_STD
from cinet.errors import CheckpointError, describe, where
from cinet.models.timm_encoder import (
    TIMM_PREFIX,
    TimmEncoder,
    check_state_keys,
    check_timm_name,
    timm_model_name,
    timm_normalization,
    timm_weights_state,
)
from cinet.models.weight_maps import PACKAGED_WEIGHTS, packaged_weights_path

logger = logging.getLogger(__name__)

ENCODERS: dict[str, tuple[str, str]] = {
    # name: (torchvision builder, weights enum)
    "resnet18": ("resnet18", "ResNet18_Weights"),
    "resnet34": ("resnet34", "ResNet34_Weights"),
    "resnet50": ("resnet50", "ResNet50_Weights"),
    "resnet101": ("resnet101", "ResNet101_Weights"),
}


def _dilate_basic_layer(layer: nn.Sequential, dilation: int, previous_dilation: int) -> None:
    """Turn a stride-2 stage of BasicBlocks into a stride-1 stage with dilation (torchvision convention)."""
    for i, block in enumerate(layer):
        d = previous_dilation if i == 0 else dilation
        if i == 0:
            block.conv1.stride = (1, 1)
            block.stride = 1
            if block.downsample is not None:
                block.downsample[0].stride = (1, 1)
        for conv in (block.conv1, block.conv2):
            conv.dilation = (d, d)
            conv.padding = (d, d)


class DilatedResNet(nn.Module):
    """torchvision ResNet trunk (no avgpool/fc) with output stride 8.

    Submodule names equal torchvision's (``conv1``, ``bn1``, ``layer1``..``layer4``), so its state dicts load
    as they are.

    Args:
        name: ``resnet18 | resnet34 | resnet50 | resnet101``.
        weights: ``None`` (random init), ``"imagenet"`` (torchvision's ``IMAGENET1K_V1`` through its weights
            API and torch hub's cache), or the path of a local torchvision ResNet state dict (``fc.*`` ignored).

    Attributes:
        out_channels: Channels of the 1/8 output (512 for 18/34, 2048 for 50/101).
        output_stride: 8.
        mean, std: ImageNet's normalisation (torchvision's ``IMAGENET1K_V1`` transforms).
    """

    output_stride = 8
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __init__(self, name: str = "resnet50", weights: str | Path | None = None) -> None:
        super().__init__()
        if name not in ENCODERS:
            raise ValueError(f"encoder: unknown encoder {name!r}; valid: {', '.join(ENCODERS)}")
        self.name = name
        builder = getattr(torchvision.models, ENCODERS[name][0])
        if name in ("resnet50", "resnet101"):
            net = builder(weights=None, replace_stride_with_dilation=[False, True, True])
        else:
            net = builder(weights=None)
            _dilate_basic_layer(net.layer3, dilation=2, previous_dilation=1)
            _dilate_basic_layer(net.layer4, dilation=4, previous_dilation=2)
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        self.out_channels: int = net.fc.in_features
        if weights is not None:
            self.load_pretrained(weights)

    def load_pretrained(self, weights: str | Path) -> None:
        """Load ``"imagenet"`` or a local torchvision state-dict file into the trunk (strict, ``fc.*`` ignored).

        Raises:
            ValueError: ``"imagenet"`` requested but the weights cannot be fetched (offline, no cache).
            CheckpointError: Local file missing/unreadable, or a missing, unexpected or mismatched key.
        """
        if isinstance(weights, str) and weights == "imagenet":
            state, source = self._imagenet_state_dict(), f"torchvision {ENCODERS[self.name][1]}.IMAGENET1K_V1"
        else:
            state, source = read_resnet_state_dict(weights), str(weights)
        self._load_checked(state, source)
        logger.info("loaded %s encoder weights from %s", self.name, source)

    def _imagenet_state_dict(self) -> dict[str, torch.Tensor]:
        enum = getattr(tv_resnet, ENCODERS[self.name][1]).IMAGENET1K_V1
        cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(enum.url).name
        hint = f"download {enum.url} elsewhere and pass its path as encoder_weights"
        if os.environ.get("CINET_NO_NETWORK") and not cached.is_file():
            raise ValueError(f"encoder_weights: imagenet not in cache {cached} and network disabled; {hint}")
        try:
            return enum.get_state_dict(progress=False)
        except Exception as exc:
            raise ValueError(
                f"encoder_weights: imagenet: cannot fetch {enum.url} ({type(exc).__name__}); {hint}"
            ) from exc

    def _load_checked(self, state: dict[str, torch.Tensor], source: str) -> None:
        state = self.check_state(state, source)
        self.load_state_dict(state, strict=False)

    def check_state(self, state: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
        """``state`` without the classifier (``fc.*``), checked key by key against this trunk.

        Raises:
            CheckpointError: A missing, unexpected or mismatched key (one line naming ``source``).
        """
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        check_state_keys(state, self.state_dict(), self.name, source)
        return state

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[tuple[int, int]]]:
        """Encode images.

        Args:
            x: Images [B,3,H,W].

        Returns:
            Features [B,out_channels,h8,w8] and the spatial sizes after each stride-2 op,
            ``[(h2, w2), (h4, w4), (h8, w8)]`` (exact sizes for odd inputs; the decoder upsamples to them).
        """
        sizes: list[tuple[int, int]] = []
        x = self.relu(self.bn1(self.conv1(x)))  # [B,64,H/2,W/2]
        sizes.append((x.shape[-2], x.shape[-1]))
        x = self.maxpool(x)  # [B,64,H/4,W/4]
        sizes.append((x.shape[-2], x.shape[-1]))
        x = self.layer1(x)
        x = self.layer2(x)  # [B,C2,H/8,W/8]
        sizes.append((x.shape[-2], x.shape[-1]))
        x = self.layer3(x)  # dilation 2, still 1/8
        x = self.layer4(x)  # dilation 4, still 1/8
        return x, sizes


def read_resnet_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a local torchvision ResNet state dict (a ``state_dict`` wrapper is unwrapped).

    Raises:
        CheckpointError: The file is missing, unreadable or not a dict of tensors (one line naming it).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(where(path, "encoder weights file not found"))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(where(path, f"cannot read encoder weights ({describe(exc)})")) from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(where(path, "not a ResNet state dict (expected a dict of tensors)"))
    return state


def is_timm_encoder(name: str) -> bool:
    """``True`` for a ``timm:<name>`` encoder."""
    return isinstance(name, str) and name.startswith(TIMM_PREFIX)


def check_encoder_name(name: str) -> None:
    """Raise :class:`ValueError` (``"encoder: ..."``) for a name that is neither a ResNet nor a timm model."""
    if is_timm_encoder(name):
        check_timm_name(timm_model_name(name))
    elif name not in ENCODERS:
        raise ValueError(
            f"encoder: unknown encoder {name!r}; valid: {', '.join(ENCODERS)} or timm:<timm model name>"
        )


def encoder_normalization(name: str) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """Input ``(mean, std)`` (RGB, 0..1 scale) an encoder expects, without building it.

    ImageNet's for the torchvision ResNets; the pretrained config's for timm models
    (:func:`cinet.models.timm_encoder.timm_normalization`).

    Raises:
        ValueError: Unknown encoder.
    """
    check_encoder_name(name)
    if is_timm_encoder(name):
        return timm_normalization(timm_model_name(name))
    return IMAGENET_MEAN, IMAGENET_STD


def check_encoder_weights(name: str, weights: str | Path | None) -> None:
    """Check an encoder's local or packaged weights without building it (a run's pre-flight check).

    ``None`` and ``"imagenet"`` pass (the latter is fetched when the encoder is built). A file is read and
    checked key by key against the architecture, built on the meta device (no memory, no weights).

    Args:
        name: ``model.encoder``.
        weights: ``model.encoder_weights``: ``None``, ``"imagenet"``, a local file or a packaged short name
            (:data:`cinet.models.weight_maps.PACKAGED_WEIGHTS`).

    Raises:
        ValueError: Unknown encoder; packaged weights of another architecture or not installed.
        CheckpointError: A file that is missing, unreadable or of another architecture.
    """
    check_encoder_name(name)
    if weights is None or str(weights) == "imagenet":
        return
    if is_timm_encoder(name):
        timm_weights_state(timm_model_name(name), weights)
        return
    if str(weights) in PACKAGED_WEIGHTS:
        packaged_weights_path(str(weights), name)  # raises: packaged weights are timm architectures
    with torch.device("meta"):
        trunk = DilatedResNet(name)
    trunk.check_state(read_resnet_state_dict(weights), str(weights))


def build_encoder(name: str, weights: str | Path | None = None) -> nn.Module:
    """The encoder of a ``model.encoder`` name (see the module docstring).

    Args:
        name: ``resnet18 | resnet34 | resnet50 | resnet101`` or ``timm:<timm model name>``.
        weights: ``None``, ``"imagenet"``, a local state-dict path of that architecture, or the short name of
            packaged weights (``efficientnet-lite0`` for ``timm:tf_efficientnet_lite0``).

    Returns:
        A :class:`DilatedResNet` or :class:`cinet.models.timm_encoder.TimmEncoder`.

    Raises:
        ValueError: Unknown encoder, ``imagenet`` weights that cannot be fetched, packaged weights of
            another architecture or whose package is not installed.
        CheckpointError: A local weights file that is missing, unreadable or of another architecture.
    """
    check_encoder_name(name)
    if is_timm_encoder(name):
        return TimmEncoder(name, weights=weights)
    if weights is not None and str(weights) in PACKAGED_WEIGHTS:
        packaged_weights_path(str(weights), name)  # raises: packaged weights are timm architectures
    return DilatedResNet(name, weights=weights)
