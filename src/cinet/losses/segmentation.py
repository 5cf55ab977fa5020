"""Class-weighted cross entropy L_seg (paper Eq. 12).

Class weights ``w_c = (N_total - N_c) / N_total`` where ``N_c`` is the number of valid pixels of class c and
``N_total`` the number of valid pixels (``ignore_index`` excluded). By default they are computed from the labels of
the current batch; fixed weights (e.g. over a whole training set with :func:`dataset_class_weights`) can be given.

Normalisation follows PyTorch's weighted ``cross_entropy(reduction="mean")``: ``sum_i w_{y_i} nll_i / sum_i w_{y_i}``
over the valid pixels i. Unlike PyTorch, a batch with no valid pixel (or all weights 0) gives 0 with a gradient
path instead of NaN.

Labels of one class only: Eq. 12 gives that class ``w = 0``, so the normalised loss is ``0 / 0``. Any positive
weight of the one class gives the same value, the plain cross entropy (the weight cancels), so the weights are
ones there: the limit of Eq. 12, not a silent zero loss. Measured (docs/losses.md): 0 % of batches at batch 8 with
full 96x128 crops of the synthetic rooms, but 20 % at batch 1 with 32x32 crops and 2.3 % at batch 1 / 64x64 or
batch 2 / 32x32, each of which trained no segmentation before.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from cinet.losses.attention import check_labels
from cinet.ops.autocast import float32_region, upcast_half

__all__ = [
    "WeightedCrossEntropy",
    "class_weights_from_labels",
    "dataset_class_weights",
    "weighted_cross_entropy",
]


def _class_counts(
    labels: torch.Tensor, num_classes: int, ignore_index: int, validate: bool = True
) -> torch.Tensor:
    """[C] int64 number of pixels of each class (ignore excluded); ``validate``: checks the labels first."""
    if validate:
        check_labels(labels, num_classes, ignore_index)
    flat = labels.reshape(-1)
    flat = flat[flat != ignore_index].long()
    return torch.bincount(flat, minlength=num_classes)[:num_classes]


def _weights_from_counts(counts: torch.Tensor) -> torch.Tensor:
    total = counts.sum()
    if int((counts > 0).sum()) <= 1:  # no valid pixel, or one class: Eq. 12's 0/0, whose limit is plain CE
        return torch.ones(counts.shape, dtype=torch.float32, device=counts.device)
    return (total - counts).to(torch.float32) / total.to(torch.float32)


def class_weights_from_labels(
    labels: torch.Tensor, num_classes: int, ignore_index: int = 255
) -> torch.Tensor:
    """Class weights of Eq. 12 from a label tensor: ``w_c = (N_total - N_c) / N_total``.

    Args:
        labels: Integer labels of any shape (typically [B,H,W]).
        num_classes: Number of classes C.
        ignore_index: Label excluded from the counts.

    Returns:
        [C] float32 weights in [0, 1]; all ones when there is no valid pixel or a single class (Eq. 12 would
        give the one class weight 0 and the normalised loss 0/0; any positive weight gives plain cross entropy).

    Raises:
        ValueError: A label is outside [0, C) and is not ``ignore_index``.
    """
    return _weights_from_counts(_class_counts(labels, num_classes, ignore_index))


def dataset_class_weights(
    label_iter: Iterable[torch.Tensor], num_classes: int, ignore_index: int = 255
) -> torch.Tensor:
    """Class weights of Eq. 12 with the counts accumulated over an iterable of label tensors (e.g. a dataset).

    Args:
        label_iter: Iterable of integer label tensors (any shapes).
        num_classes: Number of classes C.
        ignore_index: Label excluded from the counts.

    Returns:
        [C] float32 weights on the CPU.
    """
    counts = torch.zeros(num_classes, dtype=torch.int64)
    for labels in label_iter:
        counts += _class_counts(torch.as_tensor(labels), num_classes, ignore_index).cpu()
    return _weights_from_counts(counts)


def weighted_cross_entropy(
    logits: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    ignore_index: int = 255,
    weights: torch.Tensor | None = None,
    validate_labels: bool = True,
) -> torch.Tensor:
    """Class-weighted cross entropy L_seg (Eq. 12).

    ``sum_i w_{y_i} * nll_i / sum_i w_{y_i}`` over valid pixels i (PyTorch's weighted-mean convention), computed in
    float32 (autocast disabled).

    Args:
        logits: [B,C,H,W] class logits.
        labels: [B,H,W] integer labels (``ignore_index`` excluded).
        num_classes: Number of classes C (must equal ``logits.shape[1]``).
        ignore_index: Ignored label.
        weights: Optional fixed [C] class weights; default: :func:`class_weights_from_labels` of this batch.
        validate_labels: Check that every label is a class id or ``ignore_index`` (a device synchronisation).
            Training turns it off: its labels were checked once, before any work and by the data readers
            (:mod:`cinet.checks.labels`), and the loss assumes valid labels (an id >= C would otherwise fail
            inside the indexing below, on the CPU with an ``IndexError``, on CUDA with a device-side assert).

    Returns:
        Scalar loss; 0 with a gradient path when no pixel is valid (or every valid pixel has weight 0).

    Raises:
        ValueError: Shapes disagree, or a label is outside [0, C) and is not ``ignore_index``.
    """
    if logits.dim() != 4 or logits.shape[1] != num_classes:
        raise ValueError(f"logits must be [B,{num_classes},H,W], got {tuple(logits.shape)}")
    if labels.shape != (logits.shape[0], *logits.shape[2:]):
        raise ValueError(f"labels {tuple(labels.shape)} do not match logits {tuple(logits.shape)}")
    if weights is None:
        weights = _weights_from_counts(_class_counts(labels, num_classes, ignore_index, validate_labels))
    else:
        if validate_labels:
            check_labels(labels, num_classes, ignore_index)
        if weights.shape != (num_classes,):
            raise ValueError(f"class weights must have shape ({num_classes},), got {tuple(weights.shape)}")
    with float32_region(logits.device.type):
        x = upcast_half(logits)
        valid = labels != ignore_index  # [B,H,W]
        safe = torch.where(valid, labels, torch.zeros_like(labels)).long()  # [B,H,W]
        nll = F.cross_entropy(x, safe, reduction="none")  # [B,H,W]
        w = weights.to(device=x.device, dtype=x.dtype)[safe] * valid.to(x.dtype)  # [B,H,W]
        return (w * nll).sum() / w.sum().clamp_min(torch.finfo(x.dtype).tiny)


class WeightedCrossEntropy(nn.Module):
    """Module form of :func:`weighted_cross_entropy`.

    Args:
        num_classes: Number of classes C.
        ignore_index: Ignored label.
        class_weights: Optional fixed [C] weights (stored as a buffer); default: per-batch weights.
        validate_labels: See :func:`weighted_cross_entropy` (off in training: the data checks ran).
    """

    class_weights: torch.Tensor | None

    def __init__(
        self,
        num_classes: int,
        ignore_index: int = 255,
        class_weights: torch.Tensor | None = None,
        validate_labels: bool = True,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.validate_labels = validate_labels
        if class_weights is not None:
            class_weights = torch.as_tensor(class_weights, dtype=torch.float32)
        self.register_buffer("class_weights", class_weights)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Loss of logits [B,C,H,W] against labels [B,H,W]."""
        return weighted_cross_entropy(
            logits, labels, self.num_classes, self.ignore_index, self.class_weights, self.validate_labels
        )

    def extra_repr(self) -> str:
        fixed = "fixed" if self.class_weights is not None else "per-batch"
        return f"num_classes={self.num_classes}, ignore_index={self.ignore_index}, weights={fixed}"
