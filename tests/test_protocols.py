"""Named evaluation protocols (``paper``, ``mtl``), flip averaging and the protocol record of ``metrics.json``.

The metric values are checked against numbers worked out by hand (small arrays) and, through ``cinet eval``,
against an independent numpy re-implementation of each protocol's evaluation code (BTS / AdaBins per-image
metrics in the Eigen crop; MTI-Net's ``DepthMeter`` / ``SemsegMeter``) applied to the model's own outputs.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from cinet.build.builders import build_protocol
from cinet.cli import main
from cinet.config import load_config
from cinet.data import dataset_info
from cinet.errors import ConfigError
from cinet.metrics import DepthMetrics, seg_scores
from cinet.metrics.protocols import PRESETS, PROTOCOL_NAMES

# ------------------------------------------------------------------------------------------------ units


def test_schema_choices_match_presets() -> None:
    from cinet.config.schema import CHOICES

    assert CHOICES["train.eval.protocol"] == PROTOCOL_NAMES


def test_miou_over_all_counts_absent_classes_as_zero() -> None:
    # 3 classes, class 2 absent from target and prediction; class 0: tp 2, fp 1, fn 0 -> 2/3; class 1: 1/2
    cm = torch.tensor([[2, 0, 0], [1, 1, 0], [0, 0, 0]])
    present = seg_scores(cm)
    assert present["miou"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert math.isnan(present["per_class_iou"][2])
    every = seg_scores(cm, "all")
    assert every["miou"] == pytest.approx((2 / 3 + 1 / 2 + 0) / 3)
    assert every["per_class_iou"] == pytest.approx([2 / 3, 1 / 2, 0.0])
    assert every["pixel_acc"] == present["pixel_acc"] == pytest.approx(3 / 4)
    with pytest.raises(ValueError, match="miou_over"):
        seg_scores(cm, "some")


def test_mtl_depth_is_pooled_uncapped_and_ignores_zero() -> None:
    p = PRESETS["mtl"]
    m = DepthMetrics(min_depth=p.min_depth, max_depth=p.max_depth, crop=p.crop, reduction=p.reduction)
    gt1 = torch.tensor([[[[1.0, 2.0], [0.0, 20.0]]]])  # 0 = invalid; 20 m is kept (no cap)
    pr1 = torch.tensor([[[[2.0, 2.0], [5.0, 16.0]]]])
    gt2 = torch.tensor([[[[4.0]]]])
    pr2 = torch.tensor([[[[1.0]]]])
    m.update(pr1, gt1)
    m.update(pr2, gt2)
    out = m.compute()
    # pooled over the 4 valid pixels: squared errors 1, 0, 16, 9 -> sqrt(26 / 4)
    assert float(out["rms"]) == pytest.approx(math.sqrt(26 / 4))
    assert float(out["abs_rel"]) == pytest.approx((1 / 1 + 0 + 4 / 20 + 3 / 4) / 4)
    logs = [math.log(1 / 2) ** 2, 0.0, math.log(20 / 16) ** 2, math.log(4) ** 2]
    assert float(out["rms_log"]) == pytest.approx(math.sqrt(sum(logs) / 4))


def test_paper_depth_is_per_image_capped() -> None:
    p = PRESETS["paper"]
    m = DepthMetrics(min_depth=p.min_depth, max_depth=p.max_depth, crop=None, reduction=p.reduction)
    gt1 = torch.tensor([[[[1.0, 2.0], [0.0, 20.0]]]])  # 0 and 20 m (>= 10) are left out
    pr1 = torch.tensor([[[[2.0, 2.0], [5.0, 16.0]]]])
    m.update(pr1, gt1)
    m.update(torch.tensor([[[[1.0]]]]), torch.tensor([[[[4.0]]]]))
    # per image: sqrt((1 + 0) / 2) and sqrt(9), then the mean over the 2 images
    assert float(m.compute()["rms"]) == pytest.approx((math.sqrt(1 / 2) + 3.0) / 2)


def test_build_protocol_records_every_field() -> None:
    cfg = load_config("smoke", ["train.eval.protocol=paper", "train.eval.flip=true", "train.seed=7"])
    proto = build_protocol(cfg, dataset_info("synthetic"), split="val")
    d = proto.to_dict()
    assert d["name"] == "paper" and d["crop"] == "eigen" and d["max_depth"] == 10.0
    assert d["reduction"] == "per_image" and d["miou_over"] == "present" and d["flip"] is True
    assert d["num_classes"] == 13 and d["split"] == "val" and d["seeds"] == [7]
    for key in ("image_size", "input_size", "checkpoint_sha256", "min_depth", "ignore_index"):
        assert key in d
    assert "protocol paper" in d["description"] and "flip averaged" in d["description"]
    # protocol "dataset": the train.eval keys one by one, mIoU averaging included
    cfg = load_config("smoke", ["train.eval.miou=all", "train.eval.reduction=pooled", "train.eval.crop=none"])
    proto = build_protocol(cfg, dataset_info("synthetic"))
    assert (proto.name, proto.miou_over, proto.reduction, proto.crop, proto.flip) == (
        "dataset",
        "all",
        "pooled",
        None,
        False,
    )
    # the mtl numbers are 40-class numbers: a 13-class dataset is refused in one line
    cfg = load_config("smoke", ["train.eval.protocol=mtl"])
    with pytest.raises(ConfigError, match=r"train\.eval\.protocol: 'mtl' reports 40 classes"):
        build_protocol(cfg, dataset_info("synthetic"))


def test_preset_next_to_a_field_override_is_refused(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    code = main(
        ["eval", "--checkpoint", str(tmp_path / "x.ckpt"), "--protocol", "mtl", "train.eval.crop=eigen"]
    )
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "train.eval.crop: fixed by --protocol mtl" in err[0]


# ------------------------------------------------------------------------------- cinet eval on a fixture

H, W = 24, 32


@pytest.fixture(scope="module")
def nyud_fixture(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A 2-image ``nyud_mt`` val set (40 classes, background and zero depth) and a tiny 40-class checkpoint."""
    from cinet.checkpoint import save_model_checkpoint
    from cinet.data.nyud_mt import nyud_mt_info
    from inference_fixtures import synthetic_image, tiny_model

    root = tmp_path_factory.mktemp("nyud") / "NYUDv2"
    for sub in ("images", "segmentation", "depth", "gt_sets"):
        (root / sub).mkdir(parents=True)
    (root / "gt_sets" / "val.txt").write_text("a\nb\n")
    rng = np.random.default_rng(0)
    for k, name in enumerate("ab"):
        Image.fromarray(synthetic_image(H, W, seed=k)).save(root / "images" / f"{name}.png")
        seg = rng.integers(0, 6, (H, W)).astype(np.uint8)  # 0 = background (ignored), 1..5
        Image.fromarray(seg, mode="L").save(root / "segmentation" / f"{name}.png")
        depth = rng.uniform(0.5, 14.0, (H, W)).astype(np.float32)  # some above the 10 m cap
        depth[rng.random((H, W)) < 0.1] = 0.0
        np.save(root / "depth" / f"{name}.npy", depth)
    model, kwargs = tiny_model(num_classes=40)
    ckpt = save_model_checkpoint(root.parent / "tiny.ckpt", model, kwargs, nyud_mt_info())
    return root, ckpt


def _reference_outputs(root: Path, ckpt: Path, flip: bool) -> list[tuple[np.ndarray, ...]]:
    """(pred depth, pred labels, gt depth, gt labels 1..40 raw) per image, from the model directly."""
    from cinet.checkpoint import load_model
    from cinet.data.info import IMAGENET_MEAN, IMAGENET_STD

    model, _ = load_model(ckpt)
    model.eval()
    out = []
    for name in "ab":
        rgb = np.asarray(Image.open(root / "images" / f"{name}.png").convert("RGB"), np.float32) / 255
        x = (
            torch.from_numpy(rgb).permute(2, 0, 1) - torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
        ) / torch.tensor(IMAGENET_STD).view(3, 1, 1)
        with torch.no_grad():
            o = model(x[None])
            depth, probs = o.depth[0, 0], o.seg_logits[0].softmax(0)
            if flip:
                of = model(x[None].flip(-1))
                depth = (depth + of.depth[0, 0].flip(-1)) / 2
                probs = (probs + of.seg_logits[0].softmax(0).flip(-1)) / 2
        gt = np.load(root / "depth" / f"{name}.npy")
        raw = np.asarray(Image.open(root / "segmentation" / f"{name}.png"))
        out.append((depth.numpy(), probs.argmax(0).numpy(), gt, raw, o.attention))
    return out


def _attention_reference(items) -> dict[str, float]:
    """L_att (Eq. 4) pooled over the labelled pairs of both images, and the exact pair AUC, from N x N maps."""
    xs, ts = [], []
    for *_, raw, att in items:
        labels = torch.from_numpy(raw.astype(np.int64) - 1)
        labels[labels < 0] = 255
        # the label at each feature cell's centre (nearest-exact), the rule of docs/data.md "One pixel grid"
        grid = (
            F.interpolate(labels[None, None].float(), size=att.size, mode="nearest-exact")[0, 0]
            .long()
            .flatten()
        )
        logits = (att.query[0].double() @ att.key[0].double().T).flatten()
        valid = grid != 255
        pair = (valid[:, None] & valid[None, :]).flatten()
        same = (grid[:, None] == grid[None, :]).flatten()
        xs.append(logits[pair]), ts.append(same[pair])
    x, t = torch.cat(xs), torch.cat(ts)
    bce = float(F.binary_cross_entropy_with_logits(x, t.double()))
    diff = x[t][:, None] - x[~t][None, :]
    auc = float(((diff > 0).double() + 0.5 * (diff == 0).double()).mean())
    return {"att_bce": bce, "att_auc": auc}


def _mtl_reference(items) -> dict[str, float]:
    """MTI-Net's DepthMeter (gt != 0, pred clamped at 1e-9, pooled) and SemsegMeter (40 classes, bg ignored)."""
    sq = sq_log = n = 0.0
    tp, fp, fn = np.zeros(40), np.zeros(40), np.zeros(40)
    for pred, labels, gt, raw, _ in items:
        valid = gt != 0
        p = np.maximum(pred, 1e-9)
        sq += ((gt[valid] - p[valid]) ** 2).sum()
        sq_log += ((np.log(gt[valid]) - np.log(p[valid])) ** 2).sum()
        n += valid.sum()
        target = raw.astype(np.int64) - 1  # background -> -1 (ignored)
        ok = target >= 0
        for c in range(40):
            tp[c] += ((target == c) & (labels == c) & ok).sum()
            fp[c] += ((target != c) & (labels == c) & ok).sum()
            fn[c] += ((target == c) & (labels != c) & ok).sum()
    jac = tp / np.maximum(tp + fp + fn, 1e-8)
    return {"rms": math.sqrt(sq / n), "rms_log": math.sqrt(sq_log / n), "miou": float(jac.mean())}


def _paper_reference(items) -> dict[str, float]:
    """BTS / AdaBins per image: Eigen crop [45:471, 41:601]@480x640 scaled, 1e-3 < gt < 10, preds clamped."""
    rms = []
    for pred, _, gt, _, _ in items:
        t, b, lf, r = (
            math.floor(v * s + 0.5) for v, s in ((45, H / 480), (471, H / 480), (41, W / 640), (601, W / 640))
        )
        mask = np.zeros_like(gt, bool)
        mask[t:b, lf:r] = True
        valid = mask & (gt > 1e-3) & (gt < 10)
        p = np.clip(pred, 1e-3, 10)
        rms.append(math.sqrt(((gt[valid] - p[valid]) ** 2).mean()))
    return {"rms": float(np.mean(rms))}


@pytest.mark.parametrize("flip", [False, True])
def test_cinet_eval_mtl_protocol_matches_reference(nyud_fixture, tmp_path: Path, flip: bool) -> None:
    root, ckpt = nyud_fixture
    args = ["eval", "--checkpoint", str(ckpt), "--out", str(tmp_path), "--protocol", "mtl"]
    args += ["--flip"] * flip + [f"data.root={root}", "data.name=nyud_mt", "data.test_split=val"]
    assert main(args) == 0
    got = json.loads((tmp_path / "metrics.json").read_text())
    want = _mtl_reference(_reference_outputs(root, ckpt, flip))
    assert got["rms"] == pytest.approx(want["rms"], rel=1e-4)
    assert got["rms_log"] == pytest.approx(want["rms_log"], rel=1e-4)
    assert got["miou"] == pytest.approx(want["miou"], abs=1e-6)
    # the SUM's map against M M^T (unmirrored pass), without an N x N map in the evaluation
    att = _attention_reference(_reference_outputs(root, ckpt, False))
    assert got["att_bce"] == pytest.approx(att["att_bce"], rel=1e-4)
    assert got["att_auc"] == pytest.approx(att["att_auc"], abs=2e-3)
    proto = got["protocol"]
    assert proto["name"] == "mtl" and proto["crop"] is None and proto["max_depth"] is None
    assert proto["reduction"] == "pooled" and proto["miou_over"] == "all" and proto["flip"] is flip
    assert proto["num_classes"] == 40 and proto["split"] == "val" and proto["dataset"] == "nyud_mt"
    import hashlib

    assert proto["checkpoint_sha256"] == hashlib.sha256(ckpt.read_bytes()).hexdigest()


def test_cinet_eval_paper_protocol_matches_reference(nyud_fixture, tmp_path: Path) -> None:
    root, ckpt = nyud_fixture
    args = ["eval", "--checkpoint", str(ckpt), "--out", str(tmp_path), "--protocol", "paper"]
    args += [f"data.root={root}", "data.name=nyud_mt", "data.test_split=val"]
    assert main(args) == 0
    got = json.loads((tmp_path / "metrics.json").read_text())
    want = _paper_reference(_reference_outputs(root, ckpt, False))
    assert got["rms"] == pytest.approx(want["rms"], rel=1e-4)
    assert got["protocol"]["name"] == "paper" and got["protocol"]["crop"] == "eigen"
    assert got["protocol"]["max_depth"] == 10.0 and got["protocol"]["reduction"] == "per_image"
