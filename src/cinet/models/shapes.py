"""Degenerate feature maps: how many values each normalisation layer sees in training, for an input size.

Batch normalisation in training needs more than one value per channel (``batch x h x w > 1``), instance
normalisation more than one spatial element (``h x w > 1``); PyTorch raises ``ValueError: Expected more than 1
value per channel when training`` otherwise. The smallest maps of CI-Net are inside the sharing modules (the
FSM's context path halves its 1/8 map twice, Sec. 3.3), but which layer is smallest depends on the variant and
the encoder: the sizes are therefore found by running the architecture itself on the ``meta`` device (shapes
only: nothing is allocated or computed), never from a hard-coded stride.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from cinet.models.sum import set_attention_impl

#: Normalisation layers that need more than one value per channel in training.
BATCH_NORMS = (nn.modules.batchnorm._BatchNorm,)
INSTANCE_NORMS = (nn.modules.instancenorm._InstanceNorm,)
#: Largest side :func:`smallest_training_side` searches (pixels).
MAX_SEARCH_SIDE = 4096


def meta_copy(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` on the ``meta`` device (shapes only), with the naive attention path.

    Eval mode: the shapes are those of training, without PyTorch's one-value check; naive attention: the
    memory-bounded paths need a real device, and the shapes are the same.
    """
    meta = model if next(model.parameters(), torch.empty(0)).is_meta else copy.deepcopy(model).to("meta")
    return set_attention_impl(meta.eval(), "naive")


def has_instance_norm(model: nn.Module) -> bool:
    """Whether ``model`` holds an instance norm (whose statistics a larger batch does not help)."""
    return any(isinstance(m, INSTANCE_NORMS) for m in model.modules())


def training_norm_values(
    model: nn.Module, batch: int, height: int, width: int
) -> list[tuple[str, int, tuple]]:
    """Values per channel each normalisation layer of ``model`` normalises over in training.

    Args:
        model: A network taking ``[B,3,H,W]`` images (a :class:`~cinet.models.CINet`); it is copied to the
            ``meta`` device unless it is there already (:func:`meta_copy`; the original is not touched).
        batch: Images per training step (per device).
        height: Input rows.
        width: Input columns.

    Returns:
        ``(layer name, values per channel, map size (h, w))`` for every batch / instance norm, in call order:
        ``batch * h * w`` for batch norm, ``h * w`` for instance norm (statistics per sample).
    """
    meta = meta_copy(model)
    found: list[tuple[str, int, tuple]] = []
    hooks = []
    for name, module in meta.named_modules():
        if isinstance(module, BATCH_NORMS + INSTANCE_NORMS):

            def record(mod: nn.Module, args: tuple, name: str = name) -> None:
                spatial = tuple(int(s) for s in args[0].shape[2:])
                n = 1
                for s in spatial:
                    n *= s
                values = n if isinstance(mod, INSTANCE_NORMS) else int(args[0].shape[0]) * n
                found.append((name, values, spatial))

            hooks.append(module.register_forward_pre_hook(record))
    try:
        with torch.no_grad():
            meta(torch.empty(batch, 3, height, width, device="meta"))
    finally:
        for h in hooks:
            h.remove()
    return found


def degenerate_norm(model: nn.Module, batch: int, height: int, width: int) -> tuple[str, int, tuple] | None:
    """The first normalisation layer that would see a single value per channel in training, or None."""
    return next((entry for entry in training_norm_values(model, batch, height, width) if entry[1] <= 1), None)


def smallest_training_side(model: nn.Module, batch: int, multiple: int = 8) -> int | None:
    """Smallest square input side (a multiple of ``multiple``) whose training forward has no degenerate map.

    One forward at :data:`MAX_SEARCH_SIDE` gives each layer's reduction ``S = side / map side``; the layers
    shrink with ``ceil`` (stride-2 convolutions with padding, ``ceil_mode`` pooling), so the smallest side is
    the smallest multiple of ``multiple`` above ``max S`` (batch norm with one image; with more images any map
    of at least one cell works). It is then checked with one more forward, and found by binary search in the
    rare case the reductions do not follow that rule.

    Returns:
        The side in pixels, or None when even :data:`MAX_SEARCH_SIDE` is degenerate.
    """
    meta = meta_copy(model)
    big = MAX_SEARCH_SIDE
    entries = training_norm_values(meta, batch, big, big)
    if any(values <= 1 for _, values, _ in entries):
        return None
    reductions = [big / max(min(size) if size else 1, 1) for _, _, size in entries]
    one_cell_ok = batch > 1 and not has_instance_norm(meta)
    side = multiple if one_cell_ok else (int(max(reductions, default=1.0)) // multiple + 1) * multiple
    if degenerate_norm(meta, batch, side, side) is None and (
        side == multiple or degenerate_norm(meta, batch, side - multiple, side - multiple) is not None
    ):
        return side
    lo, hi = 1, big // multiple
    while lo < hi:  # the map sizes grow with the input side: binary search
        mid = (lo + hi) // 2
        if degenerate_norm(meta, batch, mid * multiple, mid * multiple) is None:
            hi = mid
        else:
            lo = mid + 1
    return lo * multiple
