"""Builders: dataset facts and the evaluation protocol come from the dataset's info, never from a built dataset."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from cinet.build.builders import build_protocol
from cinet.build.data import build_dataset, dataset_info_from_config, make_datamodule
from cinet.config import load_config
from cinet.data import DATASETS, dataset_class
from cinet.data.info import IMAGENET_MEAN, IMAGENET_STD

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "configs" / "smoke.yaml"


@pytest.fixture
def no_dataset_built(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every registered dataset class refuses to be built (reading the info must not build one)."""

    def refuse(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError(f"{type(self).__name__} was built")

    for name in DATASETS:
        monkeypatch.setattr(dataset_class(name), "__init__", refuse)


def test_info_from_config_equals_the_built_dataset_info(tmp_path: Path) -> None:
    cfg = load_config(SMOKE, ["data.options.size=[40,56]"])
    built = build_dataset(cfg.data, cfg.data.test_split, train=False, mean=(0.5,) * 3, std=(0.5,) * 3).info
    assert dataset_info_from_config(cfg.data) == dataclasses.replace(
        built, mean=IMAGENET_MEAN, std=IMAGENET_STD
    )
    assert built.mean == built.std == (0.5, 0.5, 0.5)  # the dataset records the normalisation it applies
    assert built.protocol_size == (40, 56)


def test_reading_the_info_builds_no_dataset(no_dataset_built: None, tmp_path: Path) -> None:
    missing = tmp_path / "no_such_folder"  # no file is listed or read
    cfg = load_config(None, ["data.name=nyuv2", f"data.root={missing}", "data.options.classes=13"])
    info = dataset_info_from_config(cfg.data)
    assert (info.name, info.num_classes, info.protocol_crop, info.protocol_size) == (
        "nyuv2",
        13,
        "eigen",
        (480, 640),
    )
    assert make_datamodule(cfg.data, mean=IMAGENET_MEAN, std=IMAGENET_STD).info == info


@pytest.mark.parametrize(
    ("overrides", "crop", "max_depth", "size"),
    [
        (["data.name=nyuv2"], "eigen", 10.0, (480, 640)),  # meta/nyuv2.json: Eigen crop at 480x640, 10 m
        (["data.name=sunrgbd"], None, 8.0, None),  # SUN RGB-D toolbox cap
        (["data.name=cityscapes"], None, 80.0, None),  # project choice, meta/cityscapes.json
        (["data.name=synthetic", "data.options.size=[24,32]"], None, 10.0, (24, 32)),  # its render size
        (["data.name=nyuv2", "train.eval.crop=none", "train.eval.max_depth=5"], None, 5.0, (480, 640)),
        (["data.name=nyuv2", "data.image_size=[240,320]"], "eigen", 10.0, (240, 320)),  # a resize
    ],
)
def test_protocol_comes_from_the_dataset_info(
    no_dataset_built: None, overrides: list[str], crop: str | None, max_depth: float, size: tuple | None
) -> None:
    cfg = load_config(None, overrides)
    protocol = build_protocol(cfg, dataset_info_from_config(cfg.data))
    assert (protocol.crop, protocol.max_depth, protocol.min_depth, protocol.image_size) == (
        crop,
        max_depth,
        1e-3,
        size,
    )
    assert protocol.dataset == cfg.data.name and protocol.reduction == "per_image"


def test_a_split_has_its_own_length_whatever_its_transform() -> None:
    """Issue 25: the synthetic training split built without augmentation (INT8 calibration, eval --split train)
    had data.eval_length samples instead of data.length."""
    from cinet.build.data import build_dataset
    from cinet.config import load_config

    cfg = load_config(ROOT / "configs" / "smoke.yaml", ["data.length=6", "data.eval_length=2"])
    norm = {"mean": IMAGENET_MEAN, "std": IMAGENET_STD}
    assert len(build_dataset(cfg.data, "train", train=False, **norm)) == 6
    assert len(build_dataset(cfg.data, "train", train=True, **norm)) == 6
    assert len(build_dataset(cfg.data, "test", train=False, **norm)) == 2


def test_profiler_table_matches_the_config_choices(tmp_path: Path) -> None:
    from lightning.pytorch.profilers import SimpleProfiler

    from cinet.build.builders import PROFILERS, build_profiler
    from cinet.config.schema import CHOICES

    assert set(CHOICES["trainer.profiler"]) == {"none", *PROFILERS}
    assert build_profiler("none", tmp_path, 1) is None
    profiler = build_profiler("simple", tmp_path, 2)
    assert isinstance(profiler, SimpleProfiler)
    assert (profiler.dirpath, profiler.filename) == (str(tmp_path), "stage2")


def test_demo_phase_times() -> None:
    import subprocess
    import sys

    from cinet.commands.demo import format_times, process_age_s

    assert format_times({"start_up": 3.04, "stage1": 50.0}) == "start_up 3.0 s, stage1 50.0 s"
    if sys.platform.startswith(
        "linux"
    ):  # a fresh process that waits 1 s, then imports the demo: 1 s < age < 60 s
        code = "import time; time.sleep(1.0); from cinet.commands.demo import process_age_s; print(process_age_s())"
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        assert 1.0 < float(out) < 60.0
    else:
        assert process_age_s() is None
