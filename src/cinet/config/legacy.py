"""Migration of older config layouts: keys that moved keep working in YAML files and in stored checkpoints.

Each migration takes the raw mapping (before the schema checks it) and returns it in today's layout, so an
old checkpoint's stored config (``checkpoint["cinet"]["config"]``) and an old YAML file load unchanged.
"""

from __future__ import annotations

from typing import Any

__all__ = ["LEGACY_TRAINER_KEYS", "migrate_legacy"]

#: Keys that lived under ``train`` before the ``trainer`` section existed (configs and checkpoints of that time).
LEGACY_TRAINER_KEYS = (
    "precision",
    "accelerator",
    "devices",
    "num_nodes",
    "strategy",
    "channels_last",
    "deterministic",
    "progress_bar",
)


def migrate_legacy(data: dict[str, Any]) -> dict[str, Any]:
    """Move ``train.<hardware key>`` of older configs / checkpoints to ``trainer.<key>``.

    Args:
        data: A config mapping as read from YAML or from ``checkpoint["cinet"]["config"]``.

    Returns:
        ``data`` itself when nothing is to move, else a copy with the keys moved (a key already under
        ``trainer`` wins over the old one).
    """
    train = data.get("train")
    if not isinstance(train, dict) or not any(k in train for k in LEGACY_TRAINER_KEYS):
        return data
    data = dict(data)
    train = dict(train)
    trainer = dict(data.get("trainer") or {})
    for key in LEGACY_TRAINER_KEYS:
        if key in train:
            trainer.setdefault(key, train.pop(key))
    data["train"], data["trainer"] = train, trainer
    return data
