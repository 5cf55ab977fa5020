"""Labels of a dataset: label range and class count, checked once before any work (the depth unit:
:mod:`cinet.checks.depth`).

* Label range: every label map of a split whose dataset can decode them cheaply (the folder dataset,
  :meth:`~cinet.data.folder.FolderDataset.check_labels`) is checked before training (:func:`check_split_labels`);
  every other sample is checked by its reader as it is loaded (:func:`cinet.data.base.check_label_file`, on the
  CPU, in the loader's workers). The losses then assume valid labels: nothing of this kind runs in the training
  step (no device synchronisation; :class:`cinet.losses.TotalLoss` is built with ``validate_labels=False``).
* Class count: a checkpoint evaluated on a dataset of another class count, or of other classes in the same count
  (:func:`check_classes`, ``cinet eval``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cinet.checkpoint import class_name_differences
from cinet.data import DatasetInfo
from cinet.errors import CheckpointError

__all__ = ["check_classes", "check_split_labels"]


def check_split_labels(dataset: Any) -> None:
    """Decode every label map of a split whose dataset can check them cheaply (the folder dataset) and check
    its ids (``0..C-1``, 255 = ignore), so that a bad label anywhere is named before the run directory exists.

    Raises:
        DataError: The first bad label file (named, with its sample).
    """
    check = getattr(getattr(dataset, "dataset", dataset), "check_labels", None)
    if check is not None:
        check()


def check_classes(
    checkpoint: str | Path,
    trained_classes: int,
    trained_names: list[str] | None,
    info: DatasetInfo,
    dataset: str,
) -> None:
    """Refuse to evaluate a checkpoint on a dataset of another class count, or of other classes in the same
    count (the scores would be computed, and named, for the wrong classes).

    Args:
        checkpoint: The checkpoint file, first in the message.
        trained_classes: The class count the model was built with.
        trained_names: The checkpoint's class names in id order (None when not stored).
        info: The dataset's description.
        dataset: The dataset's name (``data.name``).

    Raises:
        CheckpointError: One line naming the checkpoint and what differs.
    """
    if trained_classes != info.num_classes:
        raise CheckpointError(
            f"{checkpoint}: trained for {trained_classes} classes, dataset {dataset!r} has {info.num_classes}"
        )
    differ = class_name_differences(trained_names, list(info.class_names))
    if differ:
        raise CheckpointError(
            f"{checkpoint}: trained on other classes than dataset {dataset!r} ({differ}); evaluate on the "
            "dataset it was trained on, or give the dataset the checkpoint's class names in id order"
        )
