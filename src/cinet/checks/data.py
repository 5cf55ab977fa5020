"""The data checks of ``cinet train`` before the run directory exists: every split, the batch size, headers and
sizes, label ids, the depth unit and the first batch of each split.

:func:`check_training_data` composes the checks of :mod:`cinet.checks.files`, :mod:`cinet.checks.labels` and :mod:`cinet.checks.depth` for
one :class:`cinet.engine.datamodule.CINetDataModule`; a problem is one line naming the file or the setting.
"""

from __future__ import annotations

from typing import Any

from cinet.checks.depth import warn_depth_unit
from cinet.checks.files import check_split_sizes
from cinet.checks.labels import check_split_labels
from cinet.data.base import collate
from cinet.engine.datamodule import _seeded
from cinet.errors import ConfigError

__all__ = ["EVAL_SIZE_HINT", "TRAIN_SIZE_HINT", "check_batch_size", "check_training_data"]

#: The end of the error for a training / evaluation batch of samples that differ in size (the settings to change).
TRAIN_SIZE_HINT = "set data.image_size or data.crop_size"
EVAL_SIZE_HINT = "set data.image_size (every split) or data.eval_batch_size=1"


def check_batch_size(batch_size: int, train_size: int) -> None:
    """Raise :class:`ConfigError` naming ``data.batch_size`` when it exceeds the training set."""
    if train_size < batch_size:
        raise ConfigError(
            f"data.batch_size: {batch_size} is larger than the training set ({train_size} samples); "
            f"set data.batch_size={max(1, train_size)} or smaller"
        )


def check_training_data(dm: Any, *, validate: bool = True) -> tuple[int, int]:
    """Every data check that can run before training; returns ``(H, W)`` of the training images.

    Builds the training, test and (``validate``) validation splits of ``dm`` (a missing split names its
    ``data.*_split`` setting), warns once when the depth of the training split looks like the wrong unit
    (:func:`cinet.checks.depth.warn_depth_unit`), checks the batch size against the training set, every label
    map and every header of the splits whose dataset can read them cheaply
    (:func:`cinet.checks.labels.check_split_labels`, :func:`cinet.checks.files.check_split_sizes`), and loads
    the first batch of each split through its transform and collate (colour label PNGs, labels out of range,
    sizes that differ within a batch fail here). The global RNG states are restored afterwards.

    Args:
        dm: A :class:`cinet.engine.datamodule.CINetDataModule`.
        validate: Check the validation split too.

    Raises:
        ConfigError / DataError: The first problem found, naming the file or setting.
    """
    cfg = dm.settings  # DataSettings: batch sizes, sizes, where the data is (filled by the build layer)
    splits = ["train", *(["val"] if validate and cfg.validate else []), "test"]
    for which in splits:
        dm.dataset(which)
    train = dm.dataset("train")
    warn_depth_unit(
        train, cfg.source, cfg.depth_setting
    )  # first: a later error may come from the same mistake
    check_batch_size(cfg.batch_size, len(train))
    for which in splits:
        check_split_labels(dm.dataset(which))  # every label map's ids, not only the first batch's
        check_split_sizes(
            dm.dataset(which),
            which,
            cfg.batch_size if which == "train" else cfg.eval_batch_size,
            bool(cfg.image_size or (which == "train" and cfg.crop_size)),
            cfg.train_size_hint if which == "train" else cfg.eval_size_hint,
        )
    with _seeded(dm.seed):
        for which in splits:
            ds = dm.dataset(which)
            n = min(len(ds), cfg.batch_size if which == "train" else cfg.eval_batch_size)
            hint = cfg.train_size_hint if which == "train" else cfg.eval_size_hint
            collate([ds[i] for i in range(n)], size_hint=hint)
    if cfg.image_size:
        return int(cfg.image_size[0]), int(cfg.image_size[1])
    base = getattr(train, "dataset", train)
    with base.sample_context(0):
        h, w = base._load(0)["image"].shape[:2]
    return int(h), int(w)
