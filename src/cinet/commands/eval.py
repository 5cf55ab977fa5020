"""``cinet eval --checkpoint CKPT [--config FILE] [--split test] [--protocol NAME] [--flip] [--out DIR] [key=value ...]``."""

from __future__ import annotations

import argparse
from pathlib import Path

from cinet.checks.outputs import check_not_an_input, check_output_file, check_writable_dir
from cinet.commands.common import PathArgument, quiet_lightning
from cinet.config import parse_overrides
from cinet.engine.distributed import global_rank
from cinet.engine.rundir import write_metrics
from cinet.errors import ConfigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the options of ``cinet eval`` (cheap: no torch import)."""
    parser.add_argument(
        "--checkpoint", required=True, action=PathArgument, help="cinet checkpoint (e.g. RUN_DIR/last.ckpt)"
    )
    parser.add_argument(
        "--config", "-c", action=PathArgument, help="YAML applied over the checkpoint's stored config"
    )
    parser.add_argument("--split", help="split to evaluate (default: data.test_split)")
    parser.add_argument(
        "--out",
        action=PathArgument,
        help="folder for metrics.json (default: eval/ beside the checkpoint: the training run's own metrics.json, "
        "which the model card publishes, is never replaced by default)",
    )
    parser.add_argument(
        "--protocol",
        choices=("dataset", "paper", "mtl"),
        help="named evaluation protocol: paper (Eigen crop, 1e-3..10 m, per-image mean), mtl (the multi-task "
        "literature: no crop, no cap, pooled, mIoU over all 40 classes) or dataset (the dataset's own with "
        "train.eval.*; default: the checkpoint's train.eval.protocol)",
    )
    parser.add_argument(
        "--flip", action="store_true", help="average each prediction with that of the mirrored image"
    )
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="config overrides, e.g. train.eval.reduction=pooled data.root=/data/nyu",
    )


#: ``train.eval`` keys a named protocol fixes (an override of one of them next to ``--protocol`` is refused).
PRESET_KEYS = ("reduction", "crop", "min_depth", "max_depth", "miou")


def protocol_overrides(overrides: list[str] | tuple[str, ...], protocol: str | None, flip: bool) -> list[str]:
    """``overrides`` plus ``train.eval.protocol`` / ``train.eval.flip`` for ``--protocol`` / ``--flip``.

    Raises:
        ConfigError: A named protocol next to an override of a field it fixes (one of them would be ignored).
    """

    out = list(overrides)
    if protocol is not None:
        if protocol != "dataset":
            for key, _ in parse_overrides(out):
                parts = key.split(".")
                if parts[:2] == ["train", "eval"] and len(parts) > 2 and parts[2] in PRESET_KEYS:
                    raise ConfigError(
                        f"{key}: fixed by --protocol {protocol}; use --protocol dataset to set it yourself"
                    )
        out.append(f"train.eval.protocol={protocol}")
    if flip:
        out.append("train.eval.flip=true")
    return out


def run(args: argparse.Namespace) -> int:
    """Print the metrics table with its protocol line; write ``metrics.json`` atomically."""
    from cinet.build.training import evaluate_checkpoint
    from cinet.metrics import format_table

    quiet_lightning(getattr(args, "verbose", 0))
    # not the checkpoint's own folder: its metrics.json is the training's, published by `export --pretrained`;
    # an evaluation under other settings (another dataset root, a depth scale) replaced it unseen
    out_dir = Path(args.out) if args.out else Path(args.checkpoint).parent / "eval"
    check_writable_dir(out_dir)  # before the evaluation
    check_not_an_input([out_dir / "metrics.json"], {"--checkpoint": args.checkpoint, "--config": args.config})
    check_output_file(out_dir / "metrics.json", "cinet eval", kind="json")  # never a user's file
    overrides = protocol_overrides(args.overrides, args.protocol, args.flip)
    metrics, protocol, cfg = evaluate_checkpoint(
        args.checkpoint, config=args.config, overrides=overrides, split=args.split
    )
    if global_rank() != 0:
        return 0
    split = args.split or cfg.data.test_split
    path = out_dir / "metrics.json"
    write_metrics(
        path,
        metrics,
        protocol,
        {"checkpoint": str(args.checkpoint), "split": split, "variant": cfg.model.variant},
    )
    print(format_table({cfg.model.variant: metrics}, protocol))
    print(f"metrics: {path}")
    return 0
