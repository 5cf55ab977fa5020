"""Any timm backbone as the CI-Net encoder (``model.encoder: timm:<name>``).

The paper's encoder is a dilated ResNet-101 at output stride 8 (:mod:`cinet.models.encoder`). This module puts
any of timm's feature extractors in its place (``timm.create_model(name, features_only=True)``); only the last
(deepest) feature map feeds CI-Net, as the ResNet's ``layer4`` does.

How the backbone is built (first of these that timm accepts for the architecture):

1. ``output_stride=8``: CNNs that support dilation (ResNet / ResNet-D, ConvNeXt, EfficientNet, MobileNet,
   RegNet, ...) run at output stride 8 like the paper's ResNet.
2. ``dynamic_img_size=True, dynamic_img_pad=True``: ViT-family models (native stride, e.g. 16) with position
   embeddings interpolated to the input size.
3. ``strict_img_size=False``: Swin-family models (native stride 32, channels-last feature maps).
4. Native: any other feature extractor at its own stride.

The output stride ``s`` is ``feature_info.reduction()`` of the last feature map; the decoder adds the
upsampling stages it needs (:class:`cinet.models.CINet`). Inputs are zero-padded at the bottom / right to a
multiple of ``s`` (zero = the mean colour after normalisation) and the features cropped back to
``ceil(H/s) x ceil(W/s)``, so any input size works and the features stay aligned with the image.

Input normalisation comes from the architecture's pretrained config (``pretrained_cfg`` mean / std, e.g.
ImageNet's for ResNets and ConvNeXt, 0.5 / 0.5 for the AugReg ViTs): :func:`timm_normalization`.

Weights: ``"imagenet"`` is timm's own pretrained weights (Hugging Face hub / timm's cache, needs the network
once); a local file is a state dict of the same timm architecture (``.safetensors``, ``.pth``, ``.bin``; read
with ``timm.models.load_state_dict``, so ``state_dict`` / ``model`` wrappers and a ``module.`` prefix are
accepted). A file in the ``efficientnet_pytorch`` layout is renamed to timm's EfficientNet names first
(:mod:`cinet.models.weight_maps`), and a short name such as ``efficientnet-lite0`` finds the file of an
installed package (``timm:tf_efficientnet_lite0``, ImageNet-1k, offline). The state dict is checked key by key
against the architecture (classifier keys ignored) and any mismatch is one
:class:`~cinet.errors.CheckpointError` line; then timm loads it through ``pretrained_cfg_overlay`` (timm's
per-architecture filter runs as for its own weights).
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cinet.data.info import IMAGENET_MEAN, IMAGENET_STD
from cinet.errors import CheckpointError, describe, where
from cinet.models.weight_maps import (
    PACKAGED_WEIGHTS,
    efficientnet_pytorch_to_timm,
    is_efficientnet_pytorch_state,
    packaged_weights_path,
)

logger = logging.getLogger(__name__)

TIMM_PREFIX = "timm:"

# Ways of building the feature extractor, tried in order (see the module docstring).
BUILD_MODES: tuple[tuple[str, dict[str, Any]], ...] = (
    ("dilated", {"output_stride": 8}),
    ("dynamic", {"dynamic_img_size": True, "dynamic_img_pad": True}),
    ("flexible", {"strict_img_size": False}),
    ("native", {}),
)
# Keys a state dict may lack (written before BN tracked its step count).
_OPTIONAL_SUFFIXES = ("num_batches_tracked",)


def timm_model_name(encoder: str) -> str:
    """``"timm:convnext_tiny"`` -> ``"convnext_tiny"`` (a pretrained tag such as ``.fb_in22k`` is kept)."""
    return encoder[len(TIMM_PREFIX) :] if encoder.startswith(TIMM_PREFIX) else encoder


def check_timm_name(name: str) -> None:
    """Raise :class:`ValueError` (``"encoder: ..."``) when timm has no architecture ``name``.

    The message lists up to five timm names that start like the given one (``timm.list_models``).
    """
    import timm

    if name and timm.is_model(name):
        return
    stem = name.split(".")[0].split("_")[0]  # "convnext_nano2" -> "convnext"
    close = timm.list_models(f"{stem}*")[:5] if stem else []
    hint = f"; similar: {', '.join(close)}" if close else "; see timm.list_models()"
    raise ValueError(f"encoder: timm has no model {name!r}{hint}")


def timm_normalization(name: str) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """Input ``(mean, std)`` (RGB, 0..1 scale) of a timm architecture's pretrained config.

    Source: ``timm.models.get_pretrained_cfg(name)`` (the default pretrained tag unless ``name`` has one);
    ImageNet's mean / std when the architecture has no pretrained config.

    Raises:
        ValueError: Unknown timm model.
    """
    from timm.models import get_pretrained_cfg

    check_timm_name(name)
    cfg = get_pretrained_cfg(name)
    mean = getattr(cfg, "mean", None) or IMAGENET_MEAN
    std = getattr(cfg, "std", None) or IMAGENET_STD
    if len(mean) != 3 or len(std) != 3:  # greyscale pretrained configs: not for RGB input
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)  # type: ignore[return-value]


class _DropUnusedKeyWarning(logging.Filter):
    """Drops timm's "Unexpected keys ... found while loading pretrained weights" for a feature extractor given a
    full state dict that :func:`check_timm_state_dict` has already checked: the keys of the layers after the last
    feature map (e.g. an EfficientNet's ``conv_head`` / ``bn2``) are expected to go unused."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Unexpected keys (")


@contextlib.contextmanager
def _quiet_unused_keys() -> Iterator[None]:
    timm_builder = logging.getLogger("timm.models._builder")
    quiet = _DropUnusedKeyWarning()
    timm_builder.addFilter(quiet)
    try:
        yield
    finally:
        timm_builder.removeFilter(quiet)


def _create(name: str, mode_kwargs: dict[str, Any], **kwargs: Any) -> nn.Module:
    import timm

    return timm.create_model(name, features_only=True, out_indices=(-1,), **mode_kwargs, **kwargs)


def _build_features(name: str, **kwargs: Any) -> tuple[nn.Module, str]:
    """The timm feature extractor of the first build mode the architecture accepts, and that mode's name."""
    errors: list[str] = []
    for mode, mode_kwargs in BUILD_MODES:
        try:
            return _create(name, mode_kwargs, **kwargs), mode
        except (TypeError, AssertionError, ValueError, NotImplementedError) as exc:
            if not mode_kwargs:
                raise
            # An architecture that rejects the option raises before any weight is loaded.
            errors.append(f"{mode}: {describe(exc, 120)}")
    raise ValueError(f"encoder: cannot build timm:{name} ({' | '.join(errors)})")  # pragma: no cover


def read_timm_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a local timm state dict (``.safetensors`` or a torch file; ``state_dict`` / ``model`` unwrapped).

    Raises:
        CheckpointError: The file is missing, unreadable or not a dict of tensors (one line naming it).
    """
    from timm.models import load_state_dict

    p = Path(path)
    if not p.is_file():
        raise CheckpointError(where(p, "encoder weights file not found"))
    try:
        state = load_state_dict(str(p), use_ema=False)
    except Exception as exc:
        raise CheckpointError(where(p, f"cannot read encoder weights ({describe(exc, 160)})")) from exc
    if (
        not isinstance(state, dict)
        or not state
        or not all(isinstance(v, torch.Tensor) for v in state.values())
    ):
        raise CheckpointError(where(p, "not a timm state dict (expected a dict of tensors)"))
    return dict(state)


def _classifier_prefixes(cfg: dict[str, Any]) -> tuple[str, ...]:
    heads = cfg.get("classifier") or ()
    heads = (heads,) if isinstance(heads, str) else tuple(heads)
    return tuple(f"{h}." for h in heads)


def check_timm_state_dict(name: str, state: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """Check a state dict against timm architecture ``name``; returns it without the classifier keys.

    The reference is the full timm model built on the meta device (no memory, no weights). A state dict in the
    ``efficientnet_pytorch`` layout (``_conv_stem``, ``_blocks.<i>``, ...) is first renamed to timm's names by
    :func:`cinet.models.weight_maps.efficientnet_pytorch_to_timm`, with the blocks per stage of ``name``.
    Classifier keys (``pretrained_cfg["classifier"]``) are optional and dropped: CI-Net does not use the head.

    Raises:
        CheckpointError: One line: the first missing key, unexpected key or key of another shape; an
            efficientnet_pytorch key with no timm name, or such weights for an architecture that is not a timm
            EfficientNet.
    """
    import timm

    with torch.device("meta"):
        full = timm.create_model(name, pretrained=False)
    if is_efficientnet_pytorch_state(state):
        blocks = getattr(full, "blocks", None)
        if not isinstance(blocks, nn.Sequential) or not all(isinstance(b, nn.Sequential) for b in blocks):
            raise CheckpointError(
                where(source, f"efficientnet_pytorch-style weights fit timm's EfficientNets, not timm:{name}")
            )
        state = efficientnet_pytorch_to_timm(state, [len(b) for b in blocks], source)
    heads = _classifier_prefixes(dict(full.pretrained_cfg))
    own = {k: v for k, v in full.state_dict().items() if not k.startswith(heads)}
    state = {k: v for k, v in state.items() if not k.startswith(heads)}
    check_state_keys(state, own, f"timm:{name}", source)
    return state


def check_state_keys(
    state: dict[str, torch.Tensor], own: dict[str, torch.Tensor], label: str, source: str
) -> None:
    """Check that encoder weights ``state`` fit the encoder's own state dict ``own`` key by key.

    Raises:
        CheckpointError: One line naming ``source`` and the first missing, misshaped or unexpected key
            (``num_batches_tracked`` may be missing).
    """
    for key, ref in own.items():
        if key not in state:
            if key.endswith(_OPTIONAL_SUFFIXES):
                continue
            raise CheckpointError(where(source, f"missing key {key!r} for {label}"))
        if tuple(state[key].shape) != tuple(ref.shape):
            raise CheckpointError(
                where(
                    source,
                    f"key {key!r} has shape {tuple(state[key].shape)} but {label} expects {tuple(ref.shape)}",
                )
            )
    unexpected = [k for k in state if k not in own]
    if unexpected:
        raise CheckpointError(where(source, f"unexpected key {unexpected[0]!r} for {label}"))


def timm_weights_state(name: str, weights: str | Path) -> dict[str, torch.Tensor]:
    """The checked state dict of local weights for timm architecture ``name`` (classifier keys dropped).

    Args:
        name: timm model name (``tf_efficientnet_lite0``).
        weights: A local state-dict file, or the short name of packaged weights
            (:data:`cinet.models.weight_maps.PACKAGED_WEIGHTS`, e.g. ``efficientnet-lite0``).

    Raises:
        ValueError: Packaged weights of another architecture, or their package is not installed.
        CheckpointError: The file is missing, unreadable or does not fit ``name`` key by key.
    """
    if str(weights) in PACKAGED_WEIGHTS:
        weights = packaged_weights_path(str(weights), TIMM_PREFIX + name)
    return check_timm_state_dict(name, read_timm_state_dict(weights), str(weights))


class TimmEncoder(nn.Module):
    """A timm feature extractor as the CI-Net encoder (see the module docstring).

    Args:
        encoder: ``"timm:<name>"`` or ``"<name>"`` of a timm architecture (e.g. ``timm:convnext_tiny``).
        weights: ``None`` (random init), ``"imagenet"`` (timm's pretrained weights; network or timm's cache),
            the path of a local state dict of the same architecture (timm's names, or efficientnet_pytorch's for
            an EfficientNet), or the short name of packaged weights (``efficientnet-lite0`` for
            ``timm:tf_efficientnet_lite0``; :mod:`cinet.models.weight_maps`).

    Attributes:
        name: The timm model name.
        build_mode: ``dilated | dynamic | flexible | native`` (:data:`BUILD_MODES`).
        output_stride: Reduction of the feature map (8 for dilated CNNs, 16 for ViT-B/16, 32 for Swin, ...).
        out_channels: Channels of the feature map.
        mean, std: Input normalisation of the architecture (:func:`timm_normalization`).

    Raises:
        ValueError: Unknown timm model, an output stride below 8, ``imagenet`` weights that cannot be
            fetched, packaged weights of another architecture or whose package is not installed.
        CheckpointError: A local weights file that is missing, unreadable or of another architecture.
    """

    def __init__(self, encoder: str, weights: str | Path | None = None) -> None:
        super().__init__()
        name = timm_model_name(encoder)
        check_timm_name(name)
        self.name = name
        self.mean, self.std = timm_normalization(name)
        load_kwargs: dict[str, Any] = {}
        if weights is not None and str(weights) == "imagenet":
            load_kwargs = {"pretrained": True}
        elif weights is not None:
            state = timm_weights_state(name, weights)
            load_kwargs = {
                "pretrained": True,
                "pretrained_cfg_overlay": {"state_dict": state},
                "pretrained_strict": False,  # classifier keys dropped; every other key checked above
            }
        checked = "pretrained_cfg_overlay" in load_kwargs  # a local state dict, checked key by key above
        try:
            with _quiet_unused_keys() if checked else contextlib.nullcontext():
                self.body, self.build_mode = _build_features(name, **load_kwargs)
        except CheckpointError:
            raise
        except Exception as exc:
            if load_kwargs.get("pretrained") and "pretrained_cfg_overlay" not in load_kwargs:
                raise ValueError(
                    f"encoder_weights: imagenet: cannot fetch timm's weights of {name} "
                    f"({describe(exc, 160)}); download them elsewhere and pass the file as "
                    "encoder_weights"
                ) from exc
            raise
        info = self.body.feature_info
        self.output_stride: int = int(info.reduction()[-1])
        self.out_channels: int = int(info.channels()[-1])
        if self.output_stride < 8:
            raise ValueError(
                f"encoder: timm:{name} has output stride {self.output_stride}; CI-Net needs >= 8"
            )
        fmt = getattr(self.body, "output_fmt", "NCHW")
        self.channels_last_output = str(getattr(fmt, "value", fmt)) == "NHWC"
        if weights is not None:
            logger.info("loaded timm:%s encoder weights from %s", name, weights)
        logger.debug("timm:%s built in %s mode, output stride %d", name, self.build_mode, self.output_stride)

    def stage_sizes(self, height: int, width: int) -> list[tuple[int, int]]:
        """Spatial sizes at the strides of the upsampling targets, fine to coarse.

        ``[(ceil(H/r), ceil(W/r)) for r = s/2^(n-1) .. s/2, s]`` with ``n = ceil(log2 s)`` entries: for s = 8,
        the sizes at strides 2, 4, 8 (the layout of :meth:`DilatedResNet.forward`); a stride that is not a
        power of two (patch 14) gives fractional strides in between.
        """
        s = self.output_stride
        n = max(3, math.ceil(math.log2(s)))
        # ceil division written with non-negative operands only: ONNX integer Div truncates toward zero, so
        # -(-a // b) would export as floor, not ceil.
        return [((height * 2**j + s - 1) // s, (width * 2**j + s - 1) // s) for j in range(n - 1, -1, -1)]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[tuple[int, int]]]:
        """Encode images.

        Args:
            x: Normalised images [B,3,H,W] (any H, W).

        Returns:
            Features [B,out_channels,ceil(H/s),ceil(W/s)] and :meth:`stage_sizes` (the last entry is the feature
            size).
        """
        h, w = x.shape[-2], x.shape[-1]
        s = self.output_stride
        pad_h, pad_w = (s - h % s) % s, (s - w % s) % s  # non-negative operands (see stage_sizes)
        # always pad (a no-op at multiples of s), never branch on the size: torch.export would keep only the branch
        # of its sample, so a file traced at a multiple of s would skip the padding at every other size
        x = F.pad(x, (0, pad_w, 0, pad_h))
        feat = self.body(x)[-1]
        if self.channels_last_output:
            feat = feat.permute(0, 3, 1, 2)
        sizes = self.stage_sizes(h, w)
        fh, fw = sizes[-1]
        return feat[..., :fh, :fw], sizes
