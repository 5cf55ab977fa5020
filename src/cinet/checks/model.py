"""What the configured model needs from its input, checked before any work: feature maps that a normalisation
layer can train on, and an evaluation forward that fits in memory.

* :func:`check_feature_maps` (``cinet train``, before the run directory): builds the configured model on the
  ``meta`` device (no memory, no compute) and refuses a training input whose maps would leave a normalisation
  layer one value per channel (:mod:`cinet.models.shapes`).
* :func:`check_eval_memory` (``cinet eval``; ``cinet train`` for its validation and test): the memory check of
  ``cinet predict`` (:mod:`cinet.checks.memory`) for ``data.eval_size`` / ``data.eval_batch_size``.

Both read the config and name its keys (:class:`ConfigError`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch

from cinet.checks import memory
from cinet.checks.files import largest_image_size
from cinet.config import Config
from cinet.errors import ConfigError
from cinet.models.shapes import degenerate_norm, has_instance_norm, smallest_training_side
from cinet.preprocess import plan_geometry

__all__ = ["check_eval_memory", "check_feature_maps"]


def check_feature_maps(
    cfg: Config, num_classes: int, build_model: Callable[[Config, int], Any], native_size: Any = None
) -> None:
    """Refuse a training input so small that a normalisation layer would see one value per channel.

    ``build_model(cfg, num_classes)`` is the build layer's model builder, passed in (``checks`` sits below
    ``build``: the build layer's driver calls the checks).

    The model of ``cfg`` is built on the ``meta`` device (no memory, no compute) and its layers' map sizes
    found for the training input (``data.crop_size``, else ``data.image_size``, else ``native_size()``, the
    size of a training sample) at ``data.batch_size`` (:mod:`cinet.models.shapes`). With two or more images
    per step and no instance norm, every map of at least one cell works and nothing is built.

    Raises:
        ConfigError: One line naming ``data.crop_size`` (or ``data.image_size``) and ``data.batch_size``, the
            layer, and the smallest square size that trains at this batch size.
    """
    batch = cfg.data.batch_size
    meta_cfg = dataclasses.replace(
        cfg, model=dataclasses.replace(cfg.model, encoder_weights=None, attention_impl="naive")
    )
    with torch.device("meta"):
        model = build_model(meta_cfg, num_classes)
    if batch > 1 and not has_instance_norm(model):
        return
    key = "data.crop_size" if cfg.data.crop_size else "data.image_size"
    size = cfg.data.crop_size or cfg.data.image_size or (native_size() if native_size is not None else None)
    if size is None:
        return
    h, w = int(size[0]), int(size[1])
    problem = training_size_problem(
        model, batch, h, w, size_key=key, batch_key="data.batch_size", square="[{side}, {side}]"
    )
    if problem is not None:
        raise ConfigError(
            f"{key}: {problem} (model.variant {cfg.model.variant}, model.encoder {cfg.model.encoder})"
        )


def training_size_problem(
    model: Any, batch: int, height: int, width: int, *, size_key: str, batch_key: str, square: str
) -> str | None:
    """Why a training step of ``model`` on ``batch`` images of ``height`` x ``width`` pixels cannot run, or None.

    PyTorch's batch norm refuses (``ValueError: Expected more than 1 value per channel``) a map of one value per
    channel in training: one image whose deepest map is 1x1 (an input of <= 32 px at output stride 32).

    Args:
        model: The network (any device; it is copied to ``meta``).
        batch: Images per step.
        height: Input height in pixels.
        width: Input width in pixels.
        size_key: How the caller names the input size (``data.crop_size``, ``--height/--width``).
        batch_key: How the caller names the batch size (``data.batch_size``, ``--batch-size``).
        square: How the caller writes a square size, with ``{side}`` (``"[{side}, {side}]"``).

    Returns:
        One sentence naming the layer, its map and the fix (the smallest square side that trains, a batch of
        2), or None when every normalisation sees more than one value per channel.
    """
    bad = degenerate_norm(model, batch, height, width)
    if bad is None:
        return None
    name, _, cells = bad
    side = smallest_training_side(model, batch, multiple=1)  # training crops are not padded: any side
    fix = (
        f"the smallest square {size_key} that trains is {square.format(side=side)}"
        if side
        else f"use a larger {size_key}"
    )
    if not has_instance_norm(model) and batch == 1:
        fix += f" or {batch_key} >= 2"
    return (
        f"a {width}x{height} (WxH) input with {batch_key} {batch} reduces the map of {name} to "
        f"{'x'.join(map(str, cells))}, one value per channel for its normalisation in training; {fix}"
    )


def check_eval_memory(
    cfg: Config,
    dataset: Any,
    num_classes: int,
    train_size: tuple[int, int] | None,
    model: Callable[[], Any],
) -> None:
    """Refuse, before the evaluation, a ``data.eval_size`` / ``data.eval_batch_size`` whose forward pass cannot
    fit in the free memory (the check ``cinet predict`` makes, :func:`cinet.checks.memory.check_image_fits`).

    Used by ``cinet eval`` and by ``cinet train`` (for its validation and test, before the run directory).
    ``model`` is called only when the input is large enough to be checked. The network input comes from the
    largest sample (datasets that read sizes from file headers, :func:`cinet.checks.files.largest_image_size`),
    else the first sample's size, and the evaluation's preprocessing (``eval_size``, else the training-size rule); the estimate is the forward's activation peak per network-input pixel
    (:func:`cinet.checks.memory.measure_bytes_per_pixel`, fake tensors) times the batch's pixels, plus
    the full-size outputs. Small inputs (up to ``MEMORY_CHECK_MIN_PIXELS``) are not checked.

    Raises:
        ConfigError: One line naming ``data.eval_size`` and ``data.eval_batch_size``, the memory needed and free.
    """
    if len(dataset) == 0:
        return
    height, width = largest_image_size(dataset)
    eval_size = tuple(cfg.data.eval_size) if cfg.data.eval_size else None
    ph, pw = plan_geometry(height, width, input_size=eval_size, train_size=train_size).padded
    batch = int(cfg.data.eval_batch_size)
    if max(ph * pw, height * width) * batch <= memory.MEMORY_CHECK_MIN_PIXELS:
        return
    cuda = cfg.trainer.accelerator in ("gpu", "cuda") or (
        cfg.trainer.accelerator == "auto" and torch.cuda.is_available()
    )
    device = torch.device("cuda" if cuda else "cpu")
    free = memory.available_bytes(device)
    outputs = memory.output_bytes(height, width, (ph, pw), batch, num_classes)
    need = int(memory.measure_bytes_per_pixel(model(), device) * batch * ph * pw) + outputs
    if free is None or need <= memory.MEMORY_FRACTION * free:
        return
    gib = 2.0**30
    size = f"{list(eval_size)}" if eval_size else f"null (network input {pw}x{ph})"
    raise ConfigError(
        f"data.eval_size: {size} with data.eval_batch_size {batch} needs about {need / gib:.1f} GiB to evaluate "
        f"{width}x{height} images on {device}, more than {memory.MEMORY_FRACTION:.0%} of the {free / gib:.1f} GiB "
        "free; "
        "lower data.eval_size or data.eval_batch_size"
    )
