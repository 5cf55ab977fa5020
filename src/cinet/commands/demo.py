"""``make demo``: train the three stages on CPU, evaluate, compare with a trivial baseline, predict images.

Run as ``python -m cinet.commands.demo [--config demo] [--run-dir runs/demo]``. The demo replaces its
own previous run directory, and refuses any other folder (:func:`check_demo_dir`).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from PIL import Image

from cinet.build.baseline import trivial_baseline_metrics
from cinet.build.builders import build_protocol
from cinet.build.data import build_dataset, dataset_info_from_config
from cinet.build.training import train
from cinet.commands.common import PathArgument, quiet_lightning
from cinet.config import load_config
from cinet.data.base import to_uint8_image
from cinet.engine.rundir import RUN_ENTRIES, foreign_entries
from cinet.errors import CinetError, InputError
from cinet.inference.files import FileOptions, prediction_files
from cinet.inference.predictor import Predictor
from cinet.metrics import format_table
from cinet.metrics.report import HIGHER_IS_BETTER, METRIC_KEYS
from cinet.models.encoder import encoder_normalization
from cinet.utils import signals
from cinet.utils.io import atomic_save, atomic_write_json


def metrics_not_better(model: dict[str, Any], baseline: dict[str, Any]) -> list[str]:
    """The metrics (of ``METRIC_KEYS``, in that order) on which ``model`` is not strictly better than ``baseline``.

    Better is higher for δ1–δ3, pAcc and mIoU and lower for the error metrics (``HIGHER_IS_BETTER``); a tie
    counts as not better. An empty list: the model beats the baseline on every metric.
    """
    worse = []
    for k in METRIC_KEYS:
        m, b = float(model[k]), float(baseline[k])
        if not (m > b if HIGHER_IS_BETTER[k] else m < b):
            worse.append(k)
    return worse


#: What a ``make demo`` run directory holds (``cinet.build.training.train``'s files, then the demo's own); a
#: folder with anything else is not replaced.
DEMO_ENTRIES = RUN_ENTRIES | {"demo.json", "inputs", "predictions"}


def check_demo_dir(run_dir: Path, config_name: str) -> None:
    """Refuse to replace ``run_dir`` unless it is absent, empty, or a previous demo run of this config.

    A previous run: every entry is one the demo writes (:data:`DEMO_ENTRIES`, ``stage<N>`` folders, hidden
    temporaries) and its ``config.yaml``, when present, is of the config named ``config_name``.

    Raises:
        InputError: ``run_dir`` is a file, holds something the demo did not write, or another config's run.
    """
    if not run_dir.exists():
        return
    if not run_dir.is_dir():
        raise InputError(f"{run_dir}: is a file, not a folder (the demo's run directory)")
    foreign = foreign_entries(run_dir, DEMO_ENTRIES)
    if foreign:
        shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        raise InputError(
            f"{run_dir}: not a previous demo run (it holds {shown}); the demo replaces its own run directory "
            "only: choose another DEMO_DIR / --run-dir, or remove this folder"
        )
    saved = run_dir / "config.yaml"
    if saved.is_file():
        try:
            name = (yaml.safe_load(saved.read_text(encoding="utf-8")) or {}).get("name")
        except (yaml.YAMLError, OSError, AttributeError, UnicodeDecodeError):
            name = None
        if name != config_name:
            raise InputError(
                f"{run_dir}: holds a run of config {name!r}, not of the demo's {config_name!r}; the demo "
                "replaces its own run directory only: choose another DEMO_DIR / --run-dir, or remove this folder"
            )


def process_age_s() -> float | None:
    """Seconds since this process started (Linux ``/proc/self/stat``; None elsewhere or when unreadable)."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22 of proc(5): start time after boot
        return max(0.0, time.clock_gettime(time.CLOCK_BOOTTIME) - started)
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def format_times(times: dict[str, float]) -> str:
    """``"start_up 4.1 s, checks 0.3 s, stage1 55.0 s, ..."``: the demo's wall time per phase, in order."""
    return ", ".join(f"{name} {seconds:.1f} s" for name, seconds in times.items())


def write_inputs(cfg: Any, out_dir: Path, count: int) -> list[Path]:
    """The first ``count`` test images as PNG files (inputs for ``cinet predict``)."""

    mean, std = encoder_normalization(cfg.model.encoder)  # normalised and undone again: any pair round-trips
    ds = build_dataset(cfg.data, cfg.data.test_split, train=False, mean=mean, std=std)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(min(count, len(ds))):
        p = out_dir / f"test_{i:03d}.png"
        image = Image.fromarray(to_uint8_image(ds[i]["image"], ds.info))
        atomic_save(p, lambda fh, image=image: image.save(fh, format="PNG"))
        paths.append(p)
    return paths


def predict_files(checkpoint: Path, images: list[Path], out_dir: Path) -> list[Path]:
    """The files ``cinet predict --checkpoint CHECKPOINT IMAGES --out OUT_DIR`` writes, through the library
    (:class:`cinet.Predictor`, :func:`cinet.inference.files.prediction_files`, default options)."""

    predictor = Predictor.from_checkpoint(checkpoint)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for path, pred in zip(images, predictor.predict_batch(images, batch_size=1)):
        files = prediction_files(
            pred,
            path.stem,
            predictor.info,
            FileOptions(),
            source=str(path),
            model_source=str(predictor.source),
        )
        written += files.write(out_dir)
        print(f"{path} -> {out_dir / path.stem}_*.png ({len(files.pngs)} files)", flush=True)
    return written


def main(argv: list[str] | None = None) -> int:
    """Entry point (see module docstring). SIGINT / SIGTERM stop it with one line and exit 130 / 143."""

    with signals.handle_signals():
        try:
            return _demo(argv)
        except signals.Interrupted as exc:
            print(str(exc), file=sys.stderr)
            return exc.exit_code


def _demo(argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cinet.commands.demo", description=__doc__)
    parser.add_argument(
        "--config", default="demo", action=PathArgument, help="config file or bundled name (default: demo)"
    )
    parser.add_argument("--run-dir", default="runs/demo", action=PathArgument)
    parser.add_argument("--images", type=int, default=4, help="test images to predict")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    try:
        args = parser.parse_args(argv)
    except CinetError as exc:  # an empty path (PathArgument)
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    quiet_lightning(0)
    t0 = time.time()
    age = process_age_s()  # the interpreter and the imports, before main ran
    start_up = {} if age is None else {"start_up": round(age, 2)}
    run_dir = Path(args.run_dir)
    try:
        cfg = load_config(args.config, args.overrides)
        print(
            f"[demo] training {cfg.model.variant} ({cfg.model.encoder}, random init) on synthetic rooms, "
            f"stages {[(s.stage, s.epochs) for s in cfg.train.stages]} -> {run_dir}",
            flush=True,
        )
        check_demo_dir(run_dir, cfg.name)  # replaces its own previous run, never another folder
        result = train(cfg, run_dir, overwrite=True)
        times = {**start_up, **result["times_s"]}
        print("[demo] trivial baseline (mean train depth, majority train class) ...", flush=True)
        t = time.time()
        base = trivial_baseline_metrics(cfg)
        times["trivial_baseline"] = round(time.time() - t, 2)
        t = time.time()
        inputs = write_inputs(cfg, run_dir / "inputs", args.images)
        pred_dir = run_dir / "predictions"
        print(f"[demo] predicting {len(inputs)} test images (as cinet predict) -> {pred_dir}", flush=True)
        try:
            predict_files(run_dir / "last.ckpt", inputs, pred_dir)
        except CinetError as exc:  # the run's metrics stand without the pictures
            print(f"[demo] predict failed: {exc}", file=sys.stderr)
        times["prediction"] = round(time.time() - t, 2)
    except CinetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    metrics = result["metrics"]
    protocol = build_protocol(cfg, dataset_info_from_config(cfg.data))
    worse = metrics_not_better(metrics, base)
    wall = time.time() - t0
    atomic_write_json(
        run_dir / "demo.json",
        {
            "model": {k: metrics[k] for k in METRIC_KEYS},
            "trivial_baseline": {k: base[k] for k in METRIC_KEYS},
            "beats_baseline_on_every_metric": not worse,
            "not_better": worse,
            "wall_s": wall,
            "time_s": times,
        },
    )
    print()
    print(format_table({"trivial baseline": base, f"{cfg.model.variant} (demo)": metrics}, protocol))
    if worse:
        print(f"[demo] NOT better than the trivial baseline on: {', '.join(worse)}")
    else:
        print(f"[demo] beats the trivial baseline on all {len(METRIC_KEYS)} metrics")
    print(f"[demo] wall time {wall:.0f} s ({format_times(times)})")
    profile = ", profile/" if (run_dir / "profile").is_dir() else ""
    print(f"[demo] outputs: {run_dir}/  (last.ckpt, metrics.json, demo.json, predictions/, tb/{profile})")
    print(f"[demo] tensorboard --logdir {run_dir / 'tb'}")
    print(json.dumps({"wall_s": round(wall, 1), "beats_baseline": not worse}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
