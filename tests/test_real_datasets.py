"""The real NYUv2, SUN RGB-D and Cityscapes loaders on the real datasets (``data`` marker).

Each test skips unless ``$CINET_DATA_ROOT/<name>`` exists, laid out as the loaders expect:

* ``$CINET_DATA_ROOT/nyuv2/``: ``nyu_depth_v2_labeled.mat`` (MATLAB v7.3) and ``splits.mat`` (795 / 654);
* ``$CINET_DATA_ROOT/sunrgbd/``: ``SUNRGBD/<sensor>/<subset>/<sequence>/`` (``image/*.jpg``, ``depth_bfx/*.png``,
  ``intrinsics.txt``, ``label/label.png`` or ``label/label.npy`` with the 37 classes) plus a split list
  (``train.txt`` / ``test.txt``, ``SUNRGBDtoolbox/traintestSUNRGBD/allsplit.mat`` or the Handa lists), 5285 / 5050;
* ``$CINET_DATA_ROOT/cityscapes/``: ``leftImg8bit/``, ``disparity/``, ``camera/``, ``gtFine/`` (train 2975, val 500).

Run with ``CINET_DATA_ROOT=/data pytest -m data tests/test_real_datasets.py``.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from cinet.build.builders import build_protocol
from cinet.cli import main
from cinet.config import load_config
from cinet.data import load_dataset
from cinet.data.base import BaseDataset
from cinet.metrics import DEPTH_KEYS, METRIC_KEYS, DepthMetrics, SegMetrics, format_table

pytestmark = pytest.mark.data

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
IGNORE = 255


@dataclass(frozen=True)
class Spec:
    """What a real dataset must look like through its loader."""

    name: str
    eval_split: str
    n_train: int
    n_eval: int
    classes: tuple[int, ...]  # allowed ``info.num_classes``
    image_size: tuple[int, int]  # smoke-sized network input of the training test


SPECS = {
    "nyuv2": Spec("nyuv2", "test", 795, 654, (40, 13), (120, 160)),
    "sunrgbd": Spec("sunrgbd", "test", 5285, 5050, (37,), (120, 160)),
    "cityscapes": Spec("cityscapes", "val", 2975, 500, (19,), (128, 256)),
}


def dataset_root(name: str) -> Path:
    """``$CINET_DATA_ROOT/<name>``, or skip the test with the reason."""
    base = os.environ.get("CINET_DATA_ROOT")
    if not base:
        pytest.skip(f"CINET_DATA_ROOT is not set (needs the real {name} dataset)")
    root = Path(base).expanduser() / name
    if not root.is_dir():
        pytest.skip(f"{root} not found (the real {name} dataset)")
    return root


def check_sample(sample: dict[str, Any], ds: BaseDataset) -> None:
    """The sample contract of :mod:`cinet.data.base` on one sample of ``ds``."""
    info = ds.info
    image, depth, labels = sample["image"], sample["depth"], sample["labels"]
    ref = sample["meta"].get("id")
    assert image.dtype == torch.float32 and image.ndim == 3 and image.shape[0] == 3, ref
    h, w = image.shape[-2:]
    assert h >= 8 and w >= 8, ref
    assert torch.isfinite(image).all(), ref
    # normalised: undoing (x - mean) / std gives 0..1 values on the uint8 grid of the decoded file
    mean = torch.tensor(info.mean).view(3, 1, 1)
    std = torch.tensor(info.std).view(3, 1, 1)
    raw = image * std + mean
    assert raw.min() >= -1e-4 and raw.max() <= 1 + 1e-4, ref
    assert (raw * 255 - (raw * 255).round()).abs().max() < 1e-3, f"{ref}: image not normalised from uint8"
    assert depth.dtype == torch.float32 and tuple(depth.shape) == (1, h, w), ref
    assert torch.isfinite(depth).all() and depth.min() >= 0, f"{ref}: depth must be metres, 0 = invalid"
    assert depth.max() <= info.depth_cap + 1e-4, f"{ref}: depth {float(depth.max())} above {info.depth_cap}"
    assert (depth > 0).float().mean() > 0.05, f"{ref}: almost no valid depth"
    assert labels.dtype == torch.int64 and tuple(labels.shape) == (h, w), ref
    values = labels.unique()
    assert (((values >= 0) & (values < info.num_classes)) | (values == IGNORE)).all(), (ref, values)
    assert (labels != IGNORE).any(), f"{ref}: every pixel ignored"
    assert sample["meta"]["orig_size"] == (h, w) and isinstance(ref, str), ref


def trivial_eval(name: str, root: Path, ds: BaseDataset, indices: list[int]) -> dict[str, Any]:
    """The metrics ``cinet eval`` computes, with the dataset config's protocol, for a constant predictor."""
    cfg = load_config(CONFIGS / f"{name}.yaml", [f"data.root={root}"])
    protocol = build_protocol(cfg, ds.info)
    depth_metric = DepthMetrics(reduction=protocol.reduction, **protocol.depth_kwargs())
    seg_metric = SegMetrics(ds.info.num_classes, ignore_index=protocol.ignore_index)
    const = ds.info.depth_cap / 4
    for i in indices:  # one at a time: SUN RGB-D mixes image sizes
        s = ds[i]
        gt = s["depth"][None]  # [1,1,H,W]
        depth_metric.update(torch.full_like(gt, const), gt)
        seg_metric.update(torch.zeros_like(s["labels"])[None], s["labels"][None])
    metrics = {**depth_metric.compute(), **seg_metric.compute()}
    format_table({"trivial": metrics}, protocol)  # what `cinet eval` prints
    return metrics


@pytest.mark.parametrize("name", list(SPECS))
def test_real_dataset_splits_samples_and_metrics(name: str) -> None:
    spec = SPECS[name]
    root = dataset_root(name)
    train = load_dataset(name, root, "train")
    test = load_dataset(name, root, spec.eval_split)
    assert (len(train), len(test)) == (spec.n_train, spec.n_eval)
    for ds in (train, test):
        assert ds.info.num_classes in spec.classes
        for i in (0, len(ds) // 2, len(ds) - 1):
            check_sample(ds[i], ds)
    if name == "nyuv2":  # the NYU13 mapping of the same file
        nyu13 = load_dataset(name, root, "test", classes=13)
        assert nyu13.info.num_classes == 13 and len(nyu13) == spec.n_eval
        check_sample(nyu13[0], nyu13)
    metrics = trivial_eval(name, root, test, list(range(4)))
    for key in DEPTH_KEYS:
        assert math.isfinite(metrics[key]), key
    assert 0.0 <= metrics["delta1"] <= metrics["delta2"] <= metrics["delta3"] <= 1.0
    assert metrics["rms"] > 0 and metrics["abs_rel"] > 0
    assert 0.0 <= metrics["miou"] <= metrics["pixel_acc"] <= 1.0


def smoke_overrides(name: str, root: Path) -> list[str]:
    """Smoke-sized ``key=value`` overrides of ``configs/<name>.yaml``: tiny resnet18, 2 steps per stage, CPU."""
    h, w = SPECS[name].image_size
    return [
        f"data.root={root}",
        "model.encoder=resnet18",
        "model.encoder_weights=null",
        "model.channels=32",
        "model.qk_channels=8",
        "model.decoder_channels=[32,16,8]",
        "model.attention_impl=auto",
        f"data.image_size=[{h},{w}]",
        "data.crop_size=[64,80]",
        "data.batch_size=2",
        "data.eval_batch_size=2",
        "data.num_workers=0",
        "loss.num_pairs=50",
        *(f"train.stages.{i}.max_steps=2" for i in range(3)),
        "trainer.precision=32",
        "trainer.accelerator=cpu",
        "trainer.devices=1",
        "train.val_every=0",
        "train.limit_test_batches=2",
        "train.checkpoint_every=0",
        "train.log_every=1",
        "train.num_vis=0",
        "trainer.progress_bar=false",
    ]


@pytest.mark.parametrize("name", list(SPECS))
def test_real_dataset_smoke_train(name: str, tmp_path: Path) -> None:
    root = dataset_root(name)
    run_dir = tmp_path / "run"
    args = ["train", "--config", str(CONFIGS / f"{name}.yaml"), "--run-dir", str(run_dir)]
    assert main([*args, *smoke_overrides(name, root)]) == 0
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["protocol"]["dataset"] == name
    for key in METRIC_KEYS:
        assert metrics[key] is None or math.isfinite(metrics[key]), key
    assert metrics["rms"] is not None and metrics["rms"] > 0
    assert (run_dir / "last.ckpt").is_file()
