"""Semantic segmentation metrics (CI-Net paper, Sec. 4.1: pixel accuracy and mean IoU).

One confusion matrix ``M`` (rows = ground truth, columns = prediction) is accumulated over the whole set;
pixels whose ground truth is ``ignore_index`` are left out. Then

* ``pixel_acc`` (pAcc) = ``trace(M) / sum(M)``,
* ``IoU_c`` = ``M[c, c] / (sum_j M[c, j] + sum_i M[i, c] - M[c, c])`` (TP / (TP + FP + FN)),
* ``miou`` = mean of ``IoU_c`` over the classes with a nonzero union, i.e. the classes present in the
  ground truth or in the prediction; a class absent from both has an undefined IoU (NaN in
  ``per_class_iou``) and is left out of the mean (``miou_over="present"``, the default);
* with ``miou_over="all"`` (the multi-task literature: ``eval_semseg.py`` of ASTMT / Multi-Task-Learning-PyTorch,
  ATRC, InvPT: ``tp / max(tp + fp + fn, 1e-8)`` for every class, then the mean over all ``C`` classes) a class
  absent from both counts as IoU 0 and the mean is over all ``C`` classes.

All values are fractions in ``[0, 1]`` (the report shows pAcc/mIoU in %).
"""

from __future__ import annotations

import math

import torch
import torchmetrics

from cinet.errors import CinetError

__all__ = ["MIOU_OVER", "LabelRangeError", "SegMetrics", "confusion_matrix", "seg_scores"]


class LabelRangeError(CinetError, ValueError):
    """A label outside ``[0, num_classes)`` that is not ``ignore_index``."""


def _labels(x: torch.Tensor, num_classes: int, name: str, like_ndim: int | None = None) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if (
        like_ndim is not None
        and x.is_floating_point()
        and x.ndim == like_ndim + 1
        and x.shape[1] == num_classes
    ):
        x = x.argmax(dim=1)  # logits / probabilities [B, C, H, W] -> labels
    if x.ndim == 4 and x.shape[1] == 1:
        x = x[:, 0]
    if x.is_floating_point() and not bool((x == x.round()).all()):
        raise ValueError(f"{name} must hold integer class labels (or [B, C, H, W] scores for pred)")
    return x.long()


def confusion_matrix(
    pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int | None = 255
) -> torch.Tensor:
    """Confusion matrix ``[C, C]`` (int64, rows = target, cols = pred) of one batch.

    Args:
        pred: Predicted labels ``[B, H, W]`` / ``[B, 1, H, W]``, or scores ``[B, C, H, W]`` (argmax taken).
        target: Ground-truth labels ``[B, H, W]`` or ``[B, 1, H, W]``; ``ignore_index`` pixels are skipped.
        num_classes: Number of classes ``C``.
        ignore_index: Label to skip in ``target`` (``None``: nothing ignored).

    Raises:
        LabelRangeError: (a ``ValueError``) a target label ``>= num_classes`` or ``< 0`` that is not
            ``ignore_index``, or a prediction outside ``[0, num_classes)`` on a counted pixel.
        ValueError: Shapes that do not match.
    """
    t = _labels(target, num_classes, "target")
    p = _labels(pred, num_classes, "pred", like_ndim=t.ndim).to(t.device)
    if p.shape != t.shape:
        raise ValueError(f"pred and target shapes differ: {tuple(pred.shape)} vs {tuple(target.shape)}")
    keep = t != ignore_index if ignore_index is not None else torch.ones_like(t, dtype=torch.bool)
    t, p = t[keep], p[keep]
    bad_t = (t < 0) | (t >= num_classes)
    if bool(bad_t.any()):
        bad = sorted(set(t[bad_t].unique().tolist()))[:5]
        raise LabelRangeError(
            f"target labels {bad} outside [0, {num_classes}) and not ignore_index={ignore_index}"
        )
    bad_p = (p < 0) | (p >= num_classes)
    if bool(bad_p.any()):
        bad = sorted(set(p[bad_p].unique().tolist()))[:5]
        raise LabelRangeError(f"predicted labels {bad} outside [0, {num_classes})")
    return torch.bincount(t * num_classes + p, minlength=num_classes * num_classes).reshape(
        num_classes, num_classes
    )


#: ``miou_over`` values: classes present in ground truth or prediction, or all classes (absent = IoU 0).
MIOU_OVER: tuple[str, ...] = ("present", "all")


def seg_scores(confmat: torch.Tensor, miou_over: str = "present") -> dict[str, float | list[float]]:
    """``pixel_acc``, ``miou`` and ``per_class_iou`` from a confusion matrix (rows = target).

    Args:
        confmat: ``[C, C]`` counts, rows = target, columns = prediction.
        miou_over: ``"present"``: ``per_class_iou[c]`` is NaN for a class absent from both target and
            prediction and ``miou`` averages the others; ``"all"``: such a class has IoU 0 and ``miou`` is the
            mean over all ``C`` classes (the multi-task literature's ``eval_semseg``).

    Returns NaN for ``pixel_acc``/``miou`` when the matrix is empty.

    Raises:
        ValueError: Unknown ``miou_over``.
    """
    if miou_over not in MIOU_OVER:
        raise ValueError(f"miou_over must be one of {MIOU_OVER}, got {miou_over!r}")
    cm = confmat.to(torch.float64)
    total = cm.sum()
    tp = cm.diagonal()
    union = cm.sum(dim=0) + cm.sum(dim=1) - tp
    present = union > 0
    absent = torch.full_like(tp, math.nan if miou_over == "present" else 0.0)
    iou = torch.where(present, tp / union.clamp(min=1), absent)
    pixel_acc = float(tp.sum() / total) if total > 0 else math.nan
    if miou_over == "all":
        miou = float(iou.mean()) if total > 0 else math.nan
    else:
        miou = float(iou[present].mean()) if bool(present.any()) else math.nan
    return {"pixel_acc": pixel_acc, "miou": miou, "per_class_iou": [float(v) for v in iou.tolist()]}


class SegMetrics(torchmetrics.Metric):
    """pAcc and mIoU from one confusion matrix accumulated over the whole set.

    The single state ``confmat`` ``[C, C]`` (int64, rows = target, cols = prediction) is reduced with
    ``"sum"``, so DDP synchronisation and :meth:`merge_state` are exact.

    Args:
        num_classes: Number of classes (labels ``0 .. num_classes - 1``).
        ignore_index: Target label left out (default 255); ``None`` to count every pixel.
        miou_over: ``"present"`` (default) or ``"all"`` (see :func:`seg_scores`).
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    confmat: torch.Tensor

    def __init__(
        self, num_classes: int, ignore_index: int | None = 255, miou_over: str = "present", **kwargs
    ) -> None:
        super().__init__(**kwargs)
        if miou_over not in MIOU_OVER:
            raise ValueError(f"miou_over must be one of {MIOU_OVER}, got {miou_over!r}")
        self.miou_over = miou_over
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if ignore_index is not None and 0 <= ignore_index < num_classes:
            raise ValueError(f"ignore_index={ignore_index} collides with a class in [0, {num_classes})")
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self.add_state(
            "confmat", torch.zeros(num_classes, num_classes, dtype=torch.int64), dist_reduce_fx="sum"
        )

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch: ``pred`` labels ``[B, H, W]`` (or scores ``[B, C, H, W]``), ``target`` ``[B, H, W]``."""
        cm = confusion_matrix(pred, target, self.num_classes, self.ignore_index)
        self.confmat += cm.to(self.confmat.device)

    def compute(self) -> dict[str, float | list[float]]:
        """``{"pixel_acc": float, "miou": float, "per_class_iou": list[float]}`` (fractions)."""
        return seg_scores(self.confmat, self.miou_over)
