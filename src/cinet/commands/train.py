"""``cinet train --config FILE [--run-dir DIR] [--resume RUN_DIR] [--overwrite] [key=value ...]``."""

from __future__ import annotations

import argparse
from pathlib import Path

from cinet.commands.common import PathArgument, quiet_lightning
from cinet.config import load_config
from cinet.config.loader import bundled_configs
from cinet.engine.distributed import global_rank
from cinet.engine.rundir import default_run_dir, read_state
from cinet.errors import ConfigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the options of ``cinet train`` (cheap: no torch import)."""

    parser.add_argument(
        "--config",
        "-c",
        action=PathArgument,
        help=f"YAML config file, or a bundled config by name ({', '.join(bundled_configs())}); default: built-in "
        "defaults",
    )
    parser.add_argument("--run-dir", action=PathArgument, help="run directory (default runs/<config>-<time>)")
    parser.add_argument(
        "--resume",
        metavar="RUN_DIR",
        action=PathArgument,
        help="continue an interrupted run where it stopped",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="config overrides, e.g. train.stages.0.epochs=2 stage=2 init_from=CKPT",
    )


def run(args: argparse.Namespace) -> int:
    """Train, evaluate, print the metrics table and where the outputs are."""

    quiet_lightning(getattr(args, "verbose", 0))

    if args.resume:
        run_dir = Path(args.resume)
        saved = run_dir / "config.yaml"
        if not saved.is_file():
            raise ConfigError(f"{run_dir}: not a cinet run directory (no config.yaml); nothing to resume")
        if args.config:
            raise ConfigError("--resume uses the run's own config.yaml; give changes as key=value overrides")
        cfg = load_config(saved, args.overrides)
    else:
        cfg = load_config(args.config, args.overrides)

        run_dir = Path(args.run_dir) if args.run_dir else default_run_dir(cfg.name, args.config)

    from cinet.build.builders import build_protocol
    from cinet.build.training import train

    if args.resume and global_rank() == 0:
        print(resume_point(cfg, run_dir), flush=True)
    result = train(cfg, run_dir, resume=bool(args.resume), overwrite=args.overwrite)
    if global_rank() == 0:
        from cinet.metrics import format_table

        if result["metrics"] is not None:
            from cinet.build.data import dataset_info_from_config

            protocol = build_protocol(cfg, dataset_info_from_config(cfg.data))
            print(format_table({cfg.model.variant: result["metrics"]}, protocol))
        print(f"run directory: {result['run_dir']}")
        print(f"checkpoint:    {result['checkpoint']}")
        print(f"metrics:       {Path(result['run_dir']) / 'metrics.json'}")
        print(f"tensorboard:   tensorboard --logdir {Path(result['run_dir']) / 'tb'}")
        print(f"wall time:     {result['wall_s']:.1f} s")
    return 0


def resume_point(cfg: object, run_dir: Path) -> str:
    """One line saying where ``cinet train --resume RUN_DIR`` continues: stage, step and checkpoint."""
    from cinet.build.training import stage_plan
    from cinet.checkpoint import read_checkpoint

    state = read_state(run_dir)
    done = [int(s) for s in state.get("completed", [])]
    todo = [st.stage for st in stage_plan(cfg) if st.stage not in done]  # type: ignore[arg-type]
    done_text = f"stages done: {', '.join(map(str, done))}" if done else "no stage done yet"
    if not todo:
        what = "the final evaluation" if not state.get("evaluated") else "nothing left to train"
        return f"resuming {run_dir}: {done_text}; {what}"
    stage = todo[0]
    last = run_dir / f"stage{stage}" / "last.ckpt"
    if not last.is_file():
        return f"resuming {run_dir}: stage {stage} from its start ({done_text})"
    ckpt = read_checkpoint(last)
    step, epoch = int(ckpt.get("global_step", 0)), int(ckpt.get("epoch", 0))
    return f"resuming {run_dir}: stage {stage} at step {step} (epoch {epoch}) from {last} ({done_text})"
