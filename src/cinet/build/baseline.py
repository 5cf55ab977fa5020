"""Trivial baseline: the mean training depth everywhere and the majority training class everywhere.

Any trained model should beat it on every metric; ``make demo`` prints both side by side.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from cinet.build.builders import build_protocol, encoder_normalization
from cinet.build.data import build_dataset
from cinet.config import Config
from cinet.metrics import DepthMetrics, SegMetrics

__all__ = ["fit_trivial_baseline", "trivial_baseline_metrics"]


def _plain(cfg: Config) -> Any:
    """The data config without random augmentation (baseline statistics come from the raw training set)."""
    return dataclasses.replace(
        cfg.data, augment=dataclasses.replace(cfg.data.augment, enabled=False), crop_size=None
    )


def fit_trivial_baseline(cfg: Config) -> tuple[float, int]:
    """``(mean valid depth, majority class)`` over the training split (no augmentation)."""
    mean, std = encoder_normalization(cfg)  # only depth and labels are read
    ds = build_dataset(_plain(cfg), cfg.data.train_split, train=False, mean=mean, std=std)
    info = ds.info
    depth_sum, depth_n = 0.0, 0
    counts = torch.zeros(info.num_classes, dtype=torch.float64)
    for i in range(len(ds)):
        s = ds[i]
        d = s["depth"]
        valid = d > 0
        depth_sum += float(d[valid].double().sum())
        depth_n += int(valid.sum())
        lab = s["labels"]
        lab = lab[lab != info.ignore_index]
        counts += torch.bincount(lab.flatten(), minlength=info.num_classes).double()
    mean_depth = depth_sum / max(depth_n, 1)
    return mean_depth, int(counts.argmax())


def trivial_baseline_metrics(cfg: Config, split: str | None = None) -> dict[str, Any]:
    """Metrics of the trivial baseline on ``split`` (default ``data.test_split``) under ``cfg``'s protocol."""
    mean_depth, majority = fit_trivial_baseline(cfg)
    mean, std = encoder_normalization(cfg)  # only depth and labels are read
    ds = build_dataset(cfg.data, split or cfg.data.test_split, train=False, mean=mean, std=std)
    info = ds.info
    protocol = build_protocol(cfg, info)
    dm = DepthMetrics(reduction=protocol.reduction, **protocol.depth_kwargs())
    sm = SegMetrics(info.num_classes, ignore_index=info.ignore_index)
    for i in range(len(ds)):
        s = ds[i]
        gt = s["depth"][None]
        dm.update(torch.full_like(gt, mean_depth), gt)
        labels = s["labels"][None]
        sm.update(torch.full_like(labels, majority), labels)
    out: dict[str, Any] = {}
    for src in (dm.compute(), sm.compute()):
        for k, v in src.items():
            out[k] = v.tolist() if isinstance(v, torch.Tensor) else v
    out["mean_depth"] = mean_depth
    out["majority_class"] = majority
    return out
