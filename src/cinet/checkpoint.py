"""Checkpoint contract shared by the engine (writer) and inference (reader).

A cinet checkpoint is a Lightning checkpoint (a ``torch.save`` dict) that, next to Lightning's own keys,
holds ``checkpoint["cinet"]`` — plain Python types only, so that ``torch.load(weights_only=True)`` reads it:

    {
      "format": 1,
      "model": {...},     # keyword arguments of cinet.models.build_model (variant, encoder, num_classes, ...)
      "dataset": {...},   # dataclasses.asdict(cinet.data.DatasetInfo): classes, palette, intrinsics, mean/std
      "config": {...},    # the merged run config (optional)
      "git": "<rev>",     # revision of the code that wrote it (optional)
    }

Model weights are ``checkpoint["state_dict"]`` with keys prefixed ``model.`` (the LightningModule attribute).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

CHECKPOINT_FORMAT = 1
STATE_PREFIX = "model."


def cinet_payload(
    model_kwargs: dict[str, Any],
    dataset_info: dict[str, Any] | None = None,
    config: dict[str, Any] | None = None,
    git: str | None = None,
) -> dict[str, Any]:
    """The ``checkpoint["cinet"]`` entry (see module docstring)."""
    return {
        "format": CHECKPOINT_FORMAT,
        "model": dict(model_kwargs),
        "dataset": dict(dataset_info or {}),
        "config": dict(config or {}),
        "git": git,
    }


def model_state_dict(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """The model's own state dict (``model.`` prefix removed) from a loaded checkpoint dict."""
    state = checkpoint["state_dict"]
    return {k[len(STATE_PREFIX) :]: v for k, v in state.items() if k.startswith(STATE_PREFIX)}


def read_checkpoint(path: str | Path, map_location: str = "cpu") -> dict[str, Any]:
    """Load a checkpoint file safely (``weights_only=True``); raises CheckpointError with the path on failure."""
    import torch

    from cinet.errors import CheckpointError

    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p}: checkpoint not found")
    try:
        ckpt = torch.load(p, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated / not a checkpoint
        raise CheckpointError(f"{p}: cannot read checkpoint ({type(exc).__name__}: {str(exc).splitlines()[0]})") from exc
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "cinet" not in ckpt:
        raise CheckpointError(f"{p}: not a cinet checkpoint (missing 'state_dict' or 'cinet' entry)")
    return ckpt
