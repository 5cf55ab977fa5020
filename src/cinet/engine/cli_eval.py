"""``cinet eval --checkpoint CKPT [--config FILE] [--split test] [--out DIR] [key=value ...]``."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the options of ``cinet eval`` (cheap: no torch import)."""
    parser.add_argument("--checkpoint", required=True, help="cinet checkpoint (e.g. RUN_DIR/last.ckpt)")
    parser.add_argument("--config", "-c", help="YAML applied over the checkpoint's stored config")
    parser.add_argument("--split", help="split to evaluate (default: data.test_split)")
    parser.add_argument("--out", help="folder for metrics.json (default: next to the checkpoint)")
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="config overrides, e.g. train.eval.reduction=pooled data.root=/data/nyu",
    )


def quiet_lightning(verbose: int) -> None:
    """Keep Lightning's info chatter out of the terminal unless ``-v`` was given."""
    import warnings

    import lightning  # noqa: F401  (sets its loggers' levels on import: import first, then override)

    warnings.filterwarnings("ignore", message=r".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=r".*`srun` command is available.*")
    if verbose <= 0:
        for name in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning"):
            logging.getLogger(name).setLevel(logging.WARNING)


def evaluate_checkpoint(
    checkpoint: str | Path,
    *,
    config: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    split: str | None = None,
) -> tuple[dict[str, Any], Any, Any]:
    """Evaluate a checkpoint: ``(metrics, protocol, config)``.

    The model is rebuilt from the checkpoint's stored build arguments; data and protocol come from its stored
    config, updated by ``config`` and ``overrides``.
    """
    from cinet.checkpoint import read_checkpoint
    from cinet.config import StageConfig, load_config, parse_overrides
    from cinet.engine.datamodule import dataset_info
    from cinet.engine.runner import build_module, build_protocol, evaluate_module, load_weights
    from cinet.errors import CheckpointError, ConfigError
    from cinet.models import build_model

    for key, _ in parse_overrides(list(overrides)):
        if key.split(".")[0] == "model":  # evaluation's attention path is always the inference one
            raise ConfigError(
                f"{key}: the model is rebuilt from the arguments stored in {checkpoint}; "
                "this override would be ignored"
            )
    ckpt = read_checkpoint(checkpoint)
    payload = ckpt["cinet"]
    del ckpt
    cfg = load_config(config, list(overrides), base=payload.get("config") or None)
    split = split or cfg.data.test_split
    kwargs = dict(payload.get("model") or {})
    if not kwargs:
        raise CheckpointError(f"{checkpoint}: no model arguments stored in checkpoint['cinet']['model']")
    kwargs["encoder_weights"] = None  # the checkpoint holds the trained weights
    try:
        model = build_model(**kwargs)
    except (TypeError, ValueError, KeyError) as exc:
        raise CheckpointError(f"{checkpoint}: cannot build the model it describes ({exc})") from None
    info = dataset_info(cfg.data)
    trained_classes = int(kwargs.get("num_classes", info.num_classes))
    if trained_classes != info.num_classes:
        raise CheckpointError(
            f"{checkpoint}: trained for {trained_classes} classes, dataset {cfg.data.name!r} has {info.num_classes}"
        )
    cfg.model.variant = kwargs.get("variant", cfg.model.variant)
    module = build_module(cfg, info, StageConfig(stage=3), model=model)
    load_weights(module, checkpoint)
    module.eval()
    metrics = evaluate_module(module, cfg, split=split)
    return metrics, build_protocol(cfg, info), cfg


def run(args: argparse.Namespace) -> int:
    """Print the metrics table with its protocol line; write ``metrics.json`` atomically."""
    from cinet.engine.runner import global_rank, write_metrics
    from cinet.metrics import format_table
    from cinet.utils.io import check_writable_dir

    quiet_lightning(getattr(args, "verbose", 0))
    check_writable_dir(Path(args.out) if args.out else Path(args.checkpoint).parent)  # before the evaluation
    metrics, protocol, cfg = evaluate_checkpoint(
        args.checkpoint, config=args.config, overrides=args.overrides, split=args.split
    )
    if global_rank() != 0:
        return 0
    out_dir = Path(args.out) if args.out else Path(args.checkpoint).parent
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
