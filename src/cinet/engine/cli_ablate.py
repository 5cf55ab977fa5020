"""``cinet ablate --config FILE [--variants baseline,sum,...] [--run-dir DIR] [key=value ...]``.

Trains and evaluates each variant with the same config, seed, data and schedule (``model.variant=X`` is the
only difference), one after the other, in ``RUN_DIR/<variant>/``; then writes ``RUN_DIR/ablation.md`` (paper
Tables 1–2 layout) and ``RUN_DIR/ablation.json``. A variant whose ``metrics.json`` exists is not trained again
(so an interrupted ablation continues where it stopped).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

DEFAULT_VARIANTS = ("baseline", "sum", "fsm", "sum_fsm", "cinet", "lsu")

#: Paper names of the rows.
ROW_NAMES = {
    "baseline": "baseline",
    "sum": "baseline + SUM",
    "fsm": "baseline + FSM",
    "lsu": "baseline + LSU",
    "sum_fsm": "baseline + SUM + FSM",
    "cinet": "CI-Net (SUM + FSM + L_con)",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the options of ``cinet ablate`` (cheap: no torch import)."""
    parser.add_argument("--config", "-c", help="YAML config shared by every variant")
    parser.add_argument(
        "--variants",
        default=",".join(DEFAULT_VARIANTS),
        help=f"comma-separated variants (default {','.join(DEFAULT_VARIANTS)})",
    )
    parser.add_argument("--run-dir", help="output folder (default runs/ablate-<config>-<time>)")
    parser.add_argument(
        "--seeds",
        default=None,
        help="comma-separated seeds (default: train.seed); with several, the table shows the mean and a "
        "second table the standard deviation over seeds",
    )
    parser.add_argument(
        "overrides", nargs="*", metavar="key=value", help="config overrides for every variant"
    )


def hardware() -> dict[str, Any]:
    """A short description of the machine (CPU, threads, GPU)."""
    import os

    import torch

    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    if torch.cuda.is_available():
        info["gpu"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info


def write_ablation(
    run_dir: Path, results: dict[str, dict[str, Any]], protocol: Any, meta: dict[str, Any]
) -> None:
    """``ablation.md`` and ``ablation.json`` (atomic writes)."""
    from cinet.metrics import format_table
    from cinet.utils.io import atomic_write_json, atomic_write_text

    rows = {ROW_NAMES.get(v, v): r["metrics"] for v, r in results.items()}
    hw = meta["hardware"]
    lines = [
        "# Ablation",
        "",
        f"- Config: `{meta['config']}`"
        + (f" with `{' '.join(meta['overrides'])}`" if meta["overrides"] else ""),
        f"- Command: `{meta['command']}`",
        f"- Code: git `{meta['git']}`; seeds {meta['seeds']}; stages (stage, epochs, lr) {meta['stages']}",
        f"- Hardware: {hw.get('cpu')} ({hw.get('cpu_count')} CPUs, torch threads {hw.get('torch_threads')})"
        + (f", GPU {', '.join(hw['gpu'])}" if hw.get("gpu") else "")
        + f"; torch {hw.get('torch')}",
        f"- Total wall time: {meta['wall_s']:.0f} s "
        + "("
        + ", ".join(f"{v} {r['wall_s']:.0f} s" for v, r in results.items())
        + ")",
        "",
        format_table(rows, protocol),
    ]
    stds = {ROW_NAMES.get(v, v): r["std"] for v, r in results.items() if r.get("std")}
    if stds:
        n = len(meta["seeds"])
        lines += [f"Standard deviation over the {n} seeds (same units):", "", format_table(stds)]
    atomic_write_text(run_dir / "ablation.md", "\n".join(lines))
    atomic_write_json(
        run_dir / "ablation.json", {"meta": meta, "protocol": protocol.to_dict(), "results": results}
    )


def _run_variant(args: argparse.Namespace, variant: str, seed: int, vdir: Path) -> dict[str, Any]:
    """Train + evaluate one variant / seed into ``vdir`` (reusing a finished run)."""
    from cinet.config import load_config, read_saved_git
    from cinet.engine.runner import train

    metrics_file = vdir / "metrics.json"
    if metrics_file.is_file():
        data = json.loads(metrics_file.read_text(encoding="utf-8"))
        state_file = vdir / "state.json"
        state = json.loads(state_file.read_text(encoding="utf-8")) if state_file.is_file() else {}
        print(f"[ablate] {variant} (seed {seed}): done before ({metrics_file})", flush=True)
        return {
            "metrics": {k: x for k, x in data.items() if k != "protocol"},
            "wall_s": float(sum(state.get("wall_s", {}).values())),
            "run_dir": str(vdir),
            "git": read_saved_git(vdir / "config.yaml") if (vdir / "config.yaml").is_file() else None,
        }
    cfg = load_config(args.config, [*args.overrides, f"model.variant={variant}", f"train.seed={seed}"])
    print(f"[ablate] training {variant} (seed {seed}) -> {vdir}", flush=True)
    resume = (vdir / "state.json").is_file()
    res = train(cfg, vdir, resume=resume, overwrite=not resume)
    git = read_saved_git(vdir / "config.yaml") if (vdir / "config.yaml").is_file() else None
    return {"metrics": res["metrics"], "wall_s": res["wall_s"], "run_dir": str(vdir), "git": git}


def _combine(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean (and, for several runs, standard deviation) of the metrics over seeds."""
    import statistics

    from cinet.metrics import METRIC_KEYS

    if len(runs) == 1:
        return runs[0]
    mean: dict[str, Any] = {}
    std: dict[str, Any] = {}
    for k in METRIC_KEYS:
        values = [float(r["metrics"][k]) for r in runs if r["metrics"].get(k) is not None]
        if values:
            mean[k] = statistics.fmean(values)
            std[k] = statistics.stdev(values) if len(values) > 1 else 0.0
    return {
        "metrics": mean,
        "std": std,
        "wall_s": sum(r["wall_s"] for r in runs),
        "runs": runs,
    }


def run(args: argparse.Namespace) -> int:
    """Train + evaluate every variant, then write and print the table."""

    from cinet.config import config_to_dict, git_revision, load_config
    from cinet.engine.cli_eval import quiet_lightning
    from cinet.engine.datamodule import dataset_info
    from cinet.engine.runner import build_protocol, global_rank
    from cinet.errors import ConfigError
    from cinet.models import VARIANTS

    quiet_lightning(getattr(args, "verbose", 0))
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    for v in variants:
        if v not in VARIANTS:
            raise ConfigError(f"--variants: unknown variant {v!r}; valid: {', '.join(VARIANTS)}")
        if variants.count(v) > 1:  # one run directory per variant: a repeat would train into the same one
            raise ConfigError(f"--variants: {v!r} listed twice")
    base = load_config(args.config, args.overrides)
    stem = Path(args.config).stem if args.config else base.name
    run_dir = (
        Path(args.run_dir)
        if args.run_dir
        else Path("runs") / f"ablate-{stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    )
    seeds = [int(x) for x in args.seeds.split(",")] if args.seeds else [base.train.seed]
    t0 = time.time()
    per_variant: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    for seed in seeds:  # seed-major: a cut-short run still has every variant of the first seeds
        for v in variants:
            vdir = run_dir / v / f"seed{seed}" if args.seeds else run_dir / v
            per_variant[v].append(_run_variant(args, v, seed, vdir))
    results = {v: _combine(runs) for v, runs in per_variant.items()}
    if global_rank() != 0:
        return 0
    protocol = build_protocol(base, dataset_info(base.data))
    meta = {
        "config": args.config,
        "overrides": list(args.overrides),
        "variants": variants,
        "command": f"cinet ablate --config {args.config} --variants {','.join(variants)}"
        + (f" --seeds {args.seeds}" if args.seeds else "")
        + f" --run-dir {run_dir}"
        + "".join(f" {o}" for o in args.overrides),
        # the revisions that trained the runs (recorded in each run's config.yaml)
        "git": ", ".join(sorted({str(r.get("git")) for rs in per_variant.values() for r in rs}))
        or git_revision(),
        "seeds": seeds,
        "stages": [(s.stage, s.epochs, s.lr) for s in base.train.stages],
        "wall_s": sum(r["wall_s"] for r in results.values()),
        "session_wall_s": time.time() - t0,
        "hardware": hardware(),
        "config_dict": config_to_dict(base),
    }
    write_ablation(run_dir, results, protocol, meta)
    print((run_dir / "ablation.md").read_text(encoding="utf-8"))
    print(f"ablation: {run_dir / 'ablation.md'} and {run_dir / 'ablation.json'}")
    return 0
