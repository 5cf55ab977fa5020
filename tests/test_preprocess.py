"""One preprocessing for evaluation and prediction (``cinet/preprocess.py``, issue 15 item 4).

``cinet eval`` and ``cinet predict`` run the same checkpoint on the same real NYUv2 image and must give the
same depth and labels: the metrics ``cinet eval`` writes equal the metrics of the files ``cinet predict`` writes.
The image is the test-split sample 000464 without its white frame (470x627: not a multiple of 8, so padding
matters), with and without a stored ``data.eval_size``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cinet.cli import main
from cinet.preprocess import Geometry, plan_geometry, to_network, training_side
from inference_fixtures import tiny_model

ROOT = Path(__file__).resolve().parents[1]
NYU_SAMPLES = Path(__file__).parents[2] / "shared" / "data" / "nyu_samples"
FRAME = (5, 475, 6, 633)  # rows / columns inside NYUv2's white frame (nyu_samples/README.md)


def test_plan_geometry_policy() -> None:
    # native size, padded to a multiple of 8
    assert plan_geometry(470, 627) == Geometry((470, 627), (470, 627), (472, 632))
    # a fixed input size wins over everything
    assert plan_geometry(470, 627, input_size=(240, 320), max_side=100).scaled == (240, 320)
    # max_side only scales down
    assert plan_geometry(100, 200, max_side=100).scaled == (50, 100)
    assert plan_geometry(40, 60, max_side=100).scaled == (40, 60)
    # the training-size rule: > 1.5x away on the longer side -> scaled to the training longer side (both ways)
    assert training_side(480, 640, (96, 128)) == 128 and training_side(150, 190, (96, 128)) is None
    assert plan_geometry(480, 640, train_size=(96, 128)) == Geometry((480, 640), (96, 128), (96, 128))
    assert plan_geometry(30, 40, train_size=(96, 128)).scaled == (96, 128)
    assert plan_geometry(480, 640, train_size=(96, 128), keep_size=True).scaled == (480, 640)
    # max_side is a cap after the training-size rule, never a replacement of it (issue 25)
    assert plan_geometry(480, 640, train_size=(96, 128), max_side=320).scaled == (96, 128)
    assert plan_geometry(480, 640, train_size=(96, 128), max_side=100).scaled == (75, 100)
    assert plan_geometry(480, 640, train_size=(96, 128), max_side=320, keep_size=True).scaled == (240, 320)
    assert plan_geometry(480, 640, train_size=(400, 600), max_side=1024).scaled == (
        480,
        640,
    )  # near: own size
    assert plan_geometry(37, 53, mode="resize") == Geometry((37, 53), (40, 56), (40, 56))


def test_to_network_and_restore_round_trip() -> None:
    x = torch.arange(2 * 3 * 5 * 7, dtype=torch.float32).view(2, 3, 5, 7)
    g = plan_geometry(5, 7)
    y = to_network(x, g)
    assert y.shape == (2, 3, 8, 8)
    torch.testing.assert_close(y[..., :5, :7], x)  # content untouched, padding by reflection
    torch.testing.assert_close(y[..., 5, :7], x[..., 3, :7])
    torch.testing.assert_close(g.restore(y), x)


def _nyu_folder(root: Path) -> Path:
    from cinet.data.info import load_meta

    for sub in ("rgb", "depth", "labels"):
        (root / sub).mkdir(parents=True)
    t, b, left, r = FRAME
    for src, sub in (
        ("000464.png", "rgb"),
        ("depth_gt_000464.png", "depth"),
        ("segm_gt_000464.png", "labels"),
    ):
        arr = np.asarray(Image.open(NYU_SAMPLES / src))[t:b, left:r]
        Image.fromarray(arr).save(root / sub / "000464.png")
    (root / "classes.yaml").write_text(json.dumps({"names": load_meta("nyuv2")["classes40"]}))
    return root / "rgb" / "000464.png"


def _checkpoint(path: Path, data_root: Path, eval_size: list[int] | None) -> Path:
    from cinet.checkpoint import save_model_checkpoint
    from cinet.config import config_to_dict, load_config
    from cinet.data import dataset_info

    overrides = [
        "data.name=folder",
        f"data.root={data_root}",
        "data.options={depth_scale: 5000}",
        "data.eval_batch_size=1",
        "data.num_workers=0",
        "train.eval.crop=none",
    ]
    if eval_size:
        overrides.append(f"data.eval_size=[{eval_size[0]},{eval_size[1]}]")
    cfg = load_config(ROOT / "configs" / "smoke.yaml", overrides)
    info = dataset_info("folder", root=data_root, depth_scale=5000)
    model, kwargs = tiny_model("cinet", num_classes=40)
    return save_model_checkpoint(path, model, kwargs, info, config_to_dict(cfg), train_size=(470, 627))


@pytest.mark.skipif(not NYU_SAMPLES.is_dir(), reason="shared/data/nyu_samples not present")
@pytest.mark.parametrize("eval_size", [None, [240, 320]], ids=["native", "eval_size"])
def test_eval_and_predict_agree_on_a_real_nyu_image(tmp_path: Path, eval_size: list[int] | None) -> None:
    from cinet.metrics import confusion_matrix, depth_metrics, seg_scores

    image = _nyu_folder(tmp_path / "nyu")
    ckpt = _checkpoint(tmp_path / "tiny.ckpt", tmp_path / "nyu", eval_size)
    assert main(["eval", "--checkpoint", str(ckpt), "--out", str(tmp_path / "eval")]) == 0
    evaluated = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    out = tmp_path / "pred"
    assert main(["predict", "--checkpoint", str(ckpt), str(image), "--out", str(out), "--no-progress"]) == 0

    depth = np.asarray(Image.open(out / "000464_depth.png")).astype(np.float32) / 1000.0
    labels = np.asarray(Image.open(out / "000464_labels.png")).astype(np.int64)
    gt_depth = np.asarray(Image.open(tmp_path / "nyu" / "depth" / "000464.png")).astype(np.float32) / 5000.0
    gt_labels = np.asarray(Image.open(tmp_path / "nyu" / "labels" / "000464.png")).astype(np.int64)
    assert depth.shape == gt_depth.shape == (470, 627)
    proto = evaluated["protocol"]
    ours = depth_metrics(
        torch.from_numpy(depth),
        torch.from_numpy(gt_depth),
        min_depth=proto["min_depth"],
        max_depth=proto["max_depth"],
    )
    ours |= seg_scores(
        confusion_matrix(torch.from_numpy(labels)[None], torch.from_numpy(gt_labels)[None], 40)
    )
    # labels: the same argmax -> identical segmentation scores
    assert ours["miou"] == pytest.approx(evaluated["miou"], abs=1e-9)
    assert ours["pixel_acc"] == pytest.approx(evaluated["pixel_acc"], abs=1e-9)
    # depth: equal up to the millimetre rounding of the depth PNG
    for key in ("abs_rel", "rms", "delta1"):
        assert ours[key] == pytest.approx(evaluated[key], abs=2e-3), key
    # per-class results are keyed by class name (classes.yaml)
    assert list(evaluated["per_class_iou"])[:3] == ["wall", "floor", "cabinet"]


@pytest.mark.skipif(not NYU_SAMPLES.is_dir(), reason="shared/data/nyu_samples not present")
def test_module_and_predictor_tensors_agree(tmp_path: Path) -> None:
    """The tensors behind the two commands agree to float precision (no file rounding in between)."""
    from cinet.data import load_dataset
    from cinet.engine.module import CINetModule
    from cinet.inference.predictor import Predictor
    from cinet.metrics import EvalProtocol
    from cinet.recipe import stage_recipe

    image = _nyu_folder(tmp_path / "nyu")
    ds = load_dataset("folder", tmp_path / "nyu", "test", depth_scale=5000)
    model, _ = tiny_model("cinet", num_classes=40)
    module = CINetModule(
        model,
        torch.nn.Module(),
        stage_recipe("cinet", 3),
        protocol=EvalProtocol(dataset="nyu", num_classes=40),
        payload={"train_size": [470, 627]},
        mean=(0.5,) * 3,
        std=(0.5,) * 3,
    ).eval()
    depth, logits = module.predict_batch(ds[0]["image"][None])
    pred = Predictor(model, ds.info, train_size=(470, 627)).predict(image)
    np.testing.assert_allclose(pred.depth, depth[0, 0].numpy(), rtol=1e-5, atol=1e-5)
    assert (pred.labels == logits[0].argmax(0).numpy()).mean() > 0.999
