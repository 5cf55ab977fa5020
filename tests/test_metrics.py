"""Evaluation metrics against values worked out by hand (paper Sec. 4.1)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from cinet.data import dataset_info
from cinet.metrics import (
    DEPTH_KEYS,
    METRIC_KEYS,
    DepthMetrics,
    EvalProtocol,
    SegMetrics,
    depth_metrics,
    format_table,
    metrics_json,
    resolve_crop,
)

NAN = math.nan
LN2, LN125, LN10 = math.log(2.0), math.log(1.25), math.log(10.0)


def t(x) -> torch.Tensor:
    return torch.tensor(x, dtype=torch.float32)


def assert_metrics(got: dict[str, float], want: dict[str, float]) -> None:
    assert set(got) == set(want)
    for k, v in want.items():
        assert got[k] == pytest.approx(v, rel=1e-6, abs=1e-9), k


# ---------------------------------------------------------------- depth_metrics, one image


def test_depth_metrics_2x2_by_hand():
    # gt d = [1, 1, 2, 4], pred d~ = [1, 2, 3, 4]
    # ratio max(d/d~, d~/d) = [1, 2, 1.5, 1]
    #   delta1 (< 1.25): 2/4; delta2 (< 1.5625): 3/4; delta3 (< 1.953125): 3/4 (2 is not < 1.953)
    # d - d~ = [0, -1, -1, 0] -> sq = [0, 1, 1, 0] -> rms = sqrt(2/4)
    # ln d - ln d~ = [0, -ln2, -ln1.5, 0] -> rms_log = sqrt((ln2^2 + ln1.5^2) / 4)
    # |d - d~| / d = [0, 1, 0.5, 0] -> abs_rel = 1.5/4; (d - d~)^2 / d = [0, 1, 0.5, 0] -> sq_rel = 1.5/4
    got = depth_metrics(t([[1.0, 2.0], [3.0, 4.0]]), t([[1.0, 1.0], [2.0, 4.0]]))
    assert_metrics(
        got,
        {
            "delta1": 0.5,
            "delta2": 0.75,
            "delta3": 0.75,
            "rms": math.sqrt(0.5),
            "rms_log": math.sqrt((LN2**2 + math.log(1.5) ** 2) / 4),
            "abs_rel": 0.375,
            "sq_rel": 0.375,
        },
    )
    # [1, H, W] gives the same
    assert_metrics(depth_metrics(t([[[1.0, 2.0], [3.0, 4.0]]]), t([[[1.0, 1.0], [2.0, 4.0]]])), got)


GT_3X3 = [[2.0, 0.0, NAN], [2.0, 4.0, 12.0], [1.0, 1.0, 1.0]]
PRED_3X3 = [[2.0, 5.0, 5.0], [1.0, 5.0, 5.0], [1.0, 0.5, 20.0]]


def test_depth_metrics_3x3_invalid_cap_and_clamp():
    # max_depth = 10: gt 0 and NaN are invalid, gt 12 is beyond the cap -> 6 valid pixels.
    # Prediction 20 is clamped to 10.  Valid (d, d~): (2,2) (2,1) (4,5) (1,1) (1,0.5) (1,10)
    # ratio = [1, 2, 1.25, 1, 2, 10]
    #   delta1 (< 1.25, strict: 1.25 fails): 2/6; delta2 (< 1.5625): 3/6; delta3 (< 1.953): 3/6
    # sq = [0, 1, 1, 0, 0.25, 81] = 83.25 -> rms = sqrt(83.25/6)
    # log diff^2 = [0, ln2^2, ln1.25^2, 0, ln2^2, ln10^2]
    # abs_rel terms = [0, 1/2, 1/4, 0, 1/2, 9] = 10.25; sq_rel terms = [0, 1/2, 1/4, 0, 1/4, 81] = 82
    got = depth_metrics(t(PRED_3X3), t(GT_3X3), max_depth=10.0)
    assert_metrics(
        got,
        {
            "delta1": 2 / 6,
            "delta2": 3 / 6,
            "delta3": 3 / 6,
            "rms": math.sqrt(83.25 / 6),
            "rms_log": math.sqrt((2 * LN2**2 + LN125**2 + LN10**2) / 6),
            "abs_rel": 10.25 / 6,
            "sq_rel": 82 / 6,
        },
    )


def test_depth_metrics_no_cap_keeps_far_pixels_and_unclamped_pred():
    # No max_depth: gt 12 (pred 5) is now valid and pred 20 is not clamped -> 7 valid pixels.
    # (d, d~): (2,2) (2,1) (4,5) (12,5) (1,1) (1,0.5) (1,20); ratios [1, 2, 1.25, 2.4, 1, 2, 20]
    # delta1 = 2/7, delta2 = 3/7 (2.4, 2, 20 fail), delta3 = 3/7
    # sq = [0, 1, 1, 49, 0, 0.25, 361] = 412.25 -> rms = sqrt(412.25/7)
    # abs_rel = [0, 1/2, 1/4, 7/12, 0, 1/2, 19] ; sq_rel = [0, 1/2, 1/4, 49/12, 0, 1/4, 361]
    got = depth_metrics(t(PRED_3X3), t(GT_3X3))
    assert got["delta1"] == pytest.approx(2 / 7)
    assert got["delta2"] == pytest.approx(3 / 7)
    assert got["rms"] == pytest.approx(math.sqrt(412.25 / 7))
    assert got["abs_rel"] == pytest.approx((0.5 + 0.25 + 7 / 12 + 0.5 + 19) / 7)
    assert got["sq_rel"] == pytest.approx((0.5 + 0.25 + 49 / 12 + 0.25 + 361) / 7)


def test_depth_metrics_cap_is_strict_and_valid_mask_applies():
    # gt = [1, 10, 1, 1], max_depth = 10 -> gt 10 is invalid (gt < max, strict).
    # valid mask drops pixel 3.  Left: (1, 1) and (1, 2): sq = [0, 1] -> rms = sqrt(1/2), delta1 = 1/2
    gt = t([[1.0, 10.0], [1.0, 1.0]])
    pred = t([[1.0, 3.0], [2.0, 7.0]])
    valid = torch.tensor([[True, True], [True, False]])
    got = depth_metrics(pred, gt, valid, max_depth=10.0)
    assert got["rms"] == pytest.approx(math.sqrt(0.5))
    assert got["delta1"] == pytest.approx(0.5)
    assert got["abs_rel"] == pytest.approx(0.5)


def test_depth_metrics_prediction_clamped_to_min_depth():
    # pred 0 and NaN at valid pixels become min_depth = 0.5: (d, d~) = (1, 0.5), (1, 0.5), (1, 1)
    # sq = [0.25, 0.25, 0] -> rms = sqrt(0.5/3); ratios [2, 2, 1] -> delta1 = 1/3
    got = depth_metrics(t([[0.0, NAN, 1.0]]), t([[1.0, 1.0, 1.0]]), min_depth=0.5)
    assert got["rms"] == pytest.approx(math.sqrt(0.5 / 3))
    assert got["delta1"] == pytest.approx(1 / 3)
    assert got["rms_log"] == pytest.approx(math.sqrt(2 * LN2**2 / 3))


def test_depth_metrics_no_valid_pixel_is_nan():
    got = depth_metrics(t([[1.0, 2.0]]), t([[0.0, NAN]]))
    assert set(got) == set(DEPTH_KEYS)
    assert all(math.isnan(v) for v in got.values())


def test_tuple_crop_by_hand():
    # crop (0, 2, 1, 3) keeps rows 0-1, cols 1-2 of the 3x3 case: gt [0, NaN; 4, 12], max 10
    # -> only (4, 5) is valid: rms = 1, abs_rel = 1/4, ratio 1.25 -> delta1 = 0, delta2 = 1
    got = depth_metrics(t(PRED_3X3), t(GT_3X3), max_depth=10.0, crop=(0, 2, 1, 3))
    assert got["rms"] == pytest.approx(1.0)
    assert got["abs_rel"] == pytest.approx(0.25)
    assert got["delta1"] == 0.0
    assert got["delta2"] == 1.0


def test_eigen_crop_bounds():
    assert resolve_crop("eigen", 480, 640) == (45, 471, 41, 601)
    # 240x320: 45/2 = 22.5 -> 23, 471/2 = 235.5 -> 236, 41/2 = 20.5 -> 21, 601/2 = 300.5 -> 301 (half up)
    assert resolve_crop("eigen", 240, 320) == (23, 236, 21, 301)
    assert resolve_crop(None, 10, 10) == (None, None, None, None)
    with pytest.raises(ValueError):
        resolve_crop("garg", 480, 640)


def test_eigen_crop_excludes_border_pixels():
    # gt = 1 everywhere; pred = 1 inside [45:471, 41:601], 2 outside.
    # inside 426 * 560 = 238560 of 480 * 640 = 307200 pixels -> outside 68640.
    gt = torch.ones(480, 640)
    pred = torch.full((480, 640), 2.0)
    pred[45:471, 41:601] = 1.0
    cropped = depth_metrics(pred, gt, crop="eigen", max_depth=10.0)
    assert cropped["rms"] == 0.0 and cropped["delta1"] == 1.0
    full = depth_metrics(pred, gt, max_depth=10.0)
    # outside pixels: sq err 1, abs rel 1, ratio 2 -> rms = sqrt(68640/307200), delta1 = 238560/307200
    assert full["rms"] == pytest.approx(math.sqrt(68640 / 307200))
    assert full["delta1"] == pytest.approx(238560 / 307200)
    # one row/col outside the window still excluded: pred = 2 only at row 44 -> cropped stays perfect
    pred2 = torch.ones(480, 640)
    pred2[44, :] = 2.0
    pred2[:, 601] = 2.0
    assert depth_metrics(pred2, gt, crop="eigen")["rms"] == 0.0


# ---------------------------------------------------------------- DepthMetrics over a set

# Image A: one valid pixel (2, 4) (others gt 0); image B: four valid pixels with zero error.
GT_A, PRED_A = [[2.0, 0.0], [0.0, 0.0]], [[4.0, 1.0], [1.0, 1.0]]
GT_B, PRED_B = [[1.0, 2.0], [3.0, 4.0]], [[1.0, 2.0], [3.0, 4.0]]
# A: ratio 2 -> delta 0,0,0 (2 is not < 1.25^3 = 1.953); sq 4 -> rms 2; rms_log ln2; abs_rel 2/2 = 1; sq_rel 4/2 = 2.  B: all perfect.
PER_IMAGE = {  # mean over the two images
    "delta1": 0.5,
    "delta2": 0.5,
    "delta3": 0.5,
    "rms": 1.0,
    "rms_log": LN2 / 2,
    "abs_rel": 0.5,
    "sq_rel": 1.0,
}
POOLED = {  # five valid pixels counted once each
    "delta1": 4 / 5,
    "delta2": 4 / 5,
    "delta3": 4 / 5,
    "rms": math.sqrt(4 / 5),
    "rms_log": math.sqrt(LN2**2 / 5),
    "abs_rel": 1 / 5,
    "sq_rel": 2 / 5,
}


def batch(*imgs) -> torch.Tensor:
    return torch.stack([t(i) for i in imgs]).unsqueeze(1)  # [B, 1, H, W]


@pytest.mark.parametrize(("reduction", "want"), [("per_image", PER_IMAGE), ("pooled", POOLED)])
def test_depth_set_per_image_vs_pooled(reduction, want):
    one = DepthMetrics(reduction=reduction)
    one.update(batch(PRED_A, PRED_B), batch(GT_A, GT_B))
    assert_metrics(one.compute(), want)

    # two batches, plus an image without any valid pixel (skipped, counted)
    two = DepthMetrics(reduction=reduction)
    two.update(batch(PRED_A), batch(GT_A))
    two.update(batch(PRED_B, PRED_B), batch(GT_B, [[0.0, NAN], [0.0, 0.0]]))
    assert_metrics(two.compute(), want)
    assert two.num_images == 2 and two.num_skipped == 1


def test_depth_set_per_image_mean_of_depth_metrics():
    m = DepthMetrics()
    m.update(batch(PRED_3X3, PRED_3X3), batch(GT_3X3, GT_3X3), valid=torch.ones(2, 1, 3, 3, dtype=torch.bool))
    assert_metrics(m.compute(), depth_metrics(t(PRED_3X3), t(GT_3X3)))


def test_depth_set_options_and_errors():
    m = DepthMetrics(max_depth=10.0, crop=(0, 2, 1, 3))
    m.update(batch(PRED_3X3), batch(GT_3X3))
    assert m.compute()["rms"] == pytest.approx(1.0)  # same single pixel as test_tuple_crop_by_hand
    with pytest.warns(UserWarning, match="before the ``update``"):
        assert all(math.isnan(v) for v in DepthMetrics().compute().values())
    with pytest.raises(ValueError):
        DepthMetrics(reduction="mean")
    with pytest.raises(ValueError):
        m.update(torch.ones(1, 1, 2, 2), torch.ones(1, 1, 2, 3))


@pytest.mark.parametrize("reduction", ["per_image", "pooled"])
def test_depth_state_merge_equals_single(reduction):
    full = DepthMetrics(reduction=reduction)
    full.update(batch(PRED_A, PRED_B), batch(GT_A, GT_B))
    a, b = DepthMetrics(reduction=reduction), DepthMetrics(reduction=reduction)
    a.update(batch(PRED_A), batch(GT_A))
    b.update(batch(PRED_B), batch(GT_B))
    a.merge_state(b)
    assert_metrics(a.compute(), full.compute())
    # simulate the DDP "sum" reduction by adding the states of two replicas by hand
    c, d, summed = (DepthMetrics(reduction=reduction) for _ in range(3))
    c.update(batch(PRED_A), batch(GT_A))
    d.update(batch(PRED_B), batch(GT_B))
    for name, fx in summed._reductions.items():
        assert fx is not None  # every state is a reduced sum tensor
        setattr(summed, name, getattr(c, name) + getattr(d, name))
    summed._update_count = 1
    assert_metrics(summed.compute(), full.compute())


# ---------------------------------------------------------------- SegMetrics

# num_classes 4; target / pred (2x3), one ignored pixel (255, where pred = 0 must not count)
SEG_T = [[0, 0, 1], [1, 255, 2]]
SEG_P = [[0, 1, 1], [1, 0, 0]]
# counted (t, p): (0,0) (0,1) (1,1) (1,1) (2,0)
# confusion (rows t): row0 = [1, 1, 0, 0], row1 = [0, 2, 0, 0], row2 = [1, 0, 0, 0], row3 = 0
# pAcc = trace / total = 3 / 5
# IoU0 = 1 / (2 + 2 - 1) = 1/3; IoU1 = 2 / (2 + 3 - 2) = 2/3; IoU2 = 0 / (1 + 0 - 0) = 0; IoU3 undefined
# mIoU over classes 0, 1, 2 = (1/3 + 2/3 + 0) / 3 = 1/3
SEG_IOU = [1 / 3, 2 / 3, 0.0]


def labels(x) -> torch.Tensor:
    return torch.tensor(x, dtype=torch.int64).unsqueeze(0)


def check_seg(got: dict) -> None:
    assert got["pixel_acc"] == pytest.approx(3 / 5)
    assert got["miou"] == pytest.approx(1 / 3)
    assert got["per_class_iou"][:3] == pytest.approx(SEG_IOU)
    assert math.isnan(got["per_class_iou"][3])


def test_seg_by_hand_ignore_and_absent_class():
    m = SegMetrics(num_classes=4)
    m.update(labels(SEG_P), labels(SEG_T))
    check_seg(m.compute())
    assert int(m.confmat.sum()) == 5  # the 255 pixel is not counted


def test_seg_scores_input_and_pred_only_class():
    # logits [B, C, H, W] (one-hot) and [B, 1, H, W] labels give the same matrix
    m = SegMetrics(num_classes=4)
    scores = torch.nn.functional.one_hot(labels(SEG_P), 4).permute(0, 3, 1, 2).float()
    m.update(scores, labels(SEG_T).unsqueeze(1))
    check_seg(m.compute())
    # a class only in the prediction counts with IoU 0: t = [0, 0], p = [0, 1]
    # IoU0 = 1 / (2 + 1 - 1) = 1/2, IoU1 = 0 / (0 + 1) = 0, class 2 absent -> mIoU = 1/4, pAcc = 1/2
    m2 = SegMetrics(num_classes=3)
    m2.update(torch.tensor([[0, 1]]), torch.tensor([[0, 0]]))
    got = m2.compute()
    assert got["miou"] == pytest.approx(0.25)
    assert got["pixel_acc"] == pytest.approx(0.5)


def test_seg_out_of_range_labels_raise():
    m = SegMetrics(num_classes=4)
    with pytest.raises(ValueError, match="outside"):
        m.update(labels([[0, 1]]), labels([[0, 4]]))
    with pytest.raises(ValueError, match="outside"):
        m.update(labels([[0, 4]]), labels([[0, 1]]))
    with pytest.raises(ValueError):
        m.update(labels([[0, 1]]), labels([[-1, 1]]))
    assert int(m.confmat.sum()) == 0


def test_seg_state_merge_equals_single():
    full = SegMetrics(num_classes=4)
    full.update(labels(SEG_P), labels(SEG_T))
    a, b = SegMetrics(num_classes=4), SegMetrics(num_classes=4)
    a.update(labels(SEG_P[:1]), labels(SEG_T[:1]))
    b.update(labels(SEG_P[1:]), labels(SEG_T[1:]))
    a.merge_state(b)
    assert torch.equal(a.confmat, full.confmat)
    check_seg(a.compute())


# ---------------------------------------------------------------- report


def test_protocol_table_and_json():
    proto = EvalProtocol.for_info(dataset_info("nyuv2"))
    assert proto.crop == "eigen" and proto.max_depth == 10.0 and proto.reduction == "per_image"
    line = proto.describe()
    assert "\n" not in line and "nyuv2" in line and "45:471" in line and "10 m" in line and "255" in line
    assert DepthMetrics(**proto.depth_kwargs()).max_depth == 10.0

    rows = {"ours": {**POOLED, "pixel_acc": 0.6, "miou": 1 / 3}, "depth only": PER_IMAGE}
    table = format_table(rows, proto)
    header = next(ln for ln in table.splitlines() if ln.startswith("| Method"))
    assert (
        header.index("δ1 ↑") < header.index("rms ↓") < header.index("sq rel ↓") < header.index("mIoU (%) ↑")
    )
    assert "abs rel ↓" in header and "pAcc (%) ↑" in header
    assert "| ours | 0.800 | 0.800 | 0.800 | 0.894 | 0.310 | 0.200 | 0.400 | 60.000 | 33.333 |" in table
    assert "| depth only | 0.500 |" in table and table.rstrip().endswith("| – | – |")

    js = metrics_json({**POOLED, "miou": NAN, "per_class_iou": [0.5, NAN]}, proto)
    assert list(js)[:8] == [*METRIC_KEYS[:7], "miou"]
    assert js["miou"] is None and js["per_class_iou"] == [0.5, None]
    assert js["protocol"]["crop"] == "eigen" and js["protocol"]["description"] == line
    json.dumps(js, allow_nan=False)
