"""Named evaluation protocols: the paper's and the multi-task literature's, so a number is compared like with like.

A preset fixes every field that decides a depth or segmentation number (crop, valid depth range, how the
depth errors are averaged, how mIoU is averaged) and, where the field agrees on it, the class count. It is
selected with ``train.eval.protocol`` (``cinet eval --protocol NAME``, ``cinet ablate --protocol NAME``);
``dataset`` (the default) is the dataset's own protocol (:meth:`cinet.metrics.EvalProtocol.for_info`) with
the ``train.eval.*`` overrides.

``paper``
    What cinet computes for NYUv2 and what the CI-Net paper's depth table (Table 3) follows (BTS / AdaBins
    convention, paper Sec. 4.1): Eigen crop ``[45:471, 41:601]`` at 480x640 (scaled at other sizes),
    ``0.001 < gt < 10`` m, predictions clamped to that range, metrics per image then averaged over images;
    mIoU over the classes present in the ground truth or the prediction. Any class count (the paper does not
    state 13 or 40 — the other methods of its Table 4 appear with 40-class numbers; the count used is
    recorded).

``mtl``
    The multi-task dense-prediction literature on NYUD-v2 (ASTMT, MTI-Net / Multi-Task-Learning-PyTorch,
    ATRC, InvPT, TaskPrompter, MLoRE, MTMamba), as their ``evaluation/eval_depth.py`` and ``eval_semseg.py``
    compute it: no crop, no cap, valid depth ``gt != 0`` (``gt > 1e-9`` here), predictions clamped below at
    ``1e-9``, squared errors pooled over all valid pixels of the set (``rmse = sqrt(sum / n_valid)``);
    40 classes with the background ignored, one confusion matrix over the set, mIoU the mean of
    ``tp / max(tp + fp + fn, 1e-8)`` over all 40 classes (a class absent from ground truth and prediction
    counts as 0); each image at its own size (480x640), no flip.

Test-time flip averaging (``train.eval.flip``, ``--flip``) is a separate switch: none of these sources
flips, and it is recorded with every result.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PRESETS", "PROTOCOL_NAMES", "ProtocolPreset"]


@dataclass(frozen=True)
class ProtocolPreset:
    """The fields a named protocol fixes.

    Attributes:
        name: The preset's name (``paper``, ``mtl``).
        crop: ``"eigen"`` or ``None`` (no crop).
        min_depth: Valid ground truth is ``> min_depth`` metres; predictions are clamped to it.
        max_depth: Valid ground truth is ``< max_depth`` metres (predictions clamped), or ``None``: no cap.
        reduction: ``"per_image"`` or ``"pooled"`` (see :class:`cinet.metrics.DepthMetrics`).
        miou_over: ``"present"`` or ``"all"`` (see :func:`cinet.metrics.seg_scores`).
        num_classes: The class count the protocol's numbers are for, or ``None`` (any, recorded).
        source: Where the definition comes from.
    """

    name: str
    crop: str | None
    min_depth: float
    max_depth: float | None
    reduction: str
    miou_over: str
    num_classes: int | None
    source: str


PRESETS: dict[str, ProtocolPreset] = {
    "paper": ProtocolPreset(
        name="paper",
        crop="eigen",
        min_depth=1e-3,
        max_depth=10.0,
        reduction="per_image",
        miou_over="present",
        num_classes=None,
        source="CI-Net Sec. 4.1 / Table 3; Eigen crop and 1e-3..10 m of BTS bts_eval.py and AdaBins evaluate.py",
    ),
    "mtl": ProtocolPreset(
        name="mtl",
        crop=None,
        min_depth=1e-9,
        max_depth=None,
        reduction="pooled",
        miou_over="all",
        num_classes=40,
        source=(
            "Multi-Task-Learning-PyTorch evaluation/eval_depth.py (DepthMeter: gt != 0, pred clamped at 1e-9, "
            "pooled) and eval_semseg.py (SemsegMeter: 40 classes, background ignored, mean over all classes); "
            "the same meters in ATRC, InvPT / TaskPrompter, MLoRE, MTMamba"
        ),
    ),
}

#: Values of ``train.eval.protocol``: ``dataset`` (the dataset's own protocol and ``train.eval.*``) or a preset.
PROTOCOL_NAMES: tuple[str, ...] = ("dataset", *PRESETS)
