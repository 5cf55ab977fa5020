"""Builders and the training / evaluation driver (the only code that reads :class:`cinet.config.Config`).

Run directory layout::

    RUN_DIR/
      config.yaml          merged config (+ git revision)
      state.json           which stages are complete, whether the final evaluation ran
      stage1/last.ckpt     rolling checkpoint of stage 1 (final weights once the stage is complete)
      stage1/config.yaml   config that trained the stage
      stage1/losses.csv    one row per optimizer step: step, epoch, batch, skipped, loss terms (exact floats)
      stage2/ stage3/      same
      last.ckpt            copy of the final stage's checkpoint
      tb/stageN/           TensorBoard logs (loss terms, lr, val metrics, image grid)
      metrics.json         final model on the test split (METRIC_KEYS + protocol)

Distributed runs (``trainer.devices``, ``trainer.num_nodes``, ``trainer.strategy=ddp``): Lightning launches or detects
the processes (torchrun, SLURM); only global rank 0 writes the run directory's files.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

from cinet.config import Config, StageConfig, config_to_dict, git_revision, save_config
from cinet.errors import CheckpointError, ConfigError

log = logging.getLogger(__name__)

STATE_FILE = "state.json"
LOSS_LOG = "losses.csv"
RUN_DIR_ENV = "CINET_RUN_DIR"

__all__ = [
    "build_datamodule",
    "build_loss",
    "build_model",
    "build_module",
    "build_protocol",
    "evaluate_module",
    "global_rank",
    "load_weights",
    "read_state",
    "stage_plan",
    "train",
    "write_metrics",
]


# ------------------------------------------------------------------------------------------------ ranks


def global_rank() -> int:
    """Global rank from the launcher's environment (0 when not distributed)."""
    for key in ("RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"):
        if key in os.environ:
            try:
                rank = int(os.environ[key])
            except ValueError:
                continue
            if key == "SLURM_PROCID" and "SLURM_NTASKS" in os.environ and os.environ["SLURM_NTASKS"] == "1":
                return 0
            return rank
    node = int(os.environ.get("NODE_RANK", os.environ.get("GROUP_RANK", "0")) or 0)
    local = int(os.environ.get("LOCAL_RANK", "0") or 0)
    if node == 0:
        return local
    return -1 if local else 1  # some non-zero rank


def _barrier() -> None:
    import torch

    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


# ------------------------------------------------------------------------------------------------ builders


def build_model(cfg: Config, num_classes: int, ignore_index: int = 255) -> Any:
    """The network of ``cfg.model``."""
    from cinet.models import build_model as _build

    m = cfg.model
    return _build(
        variant=m.variant,
        encoder=m.encoder,
        num_classes=num_classes,
        encoder_weights=m.encoder_weights,
        channels=m.channels,
        qk_channels=m.qk_channels,
        decoder_channels=list(m.decoder_channels),
        attention_norm=m.attention_norm,
        attention_impl=m.attention_impl,
        depth_init=m.depth_init,
        ignore_index=ignore_index,
        zero_init_sharing=m.zero_init_sharing,
        zero_init_sum=m.zero_init_sum,
    )


def check_feature_maps(cfg: Config, num_classes: int, native_size: Any = None) -> None:
    """Refuse a training input so small that a normalisation layer would see one value per channel.

    The model of ``cfg`` is built on the ``meta`` device (no memory, no compute) and its layers' map sizes
    found for the training input (``data.crop_size``, else ``data.image_size``, else ``native_size()``, the
    size of a training sample) at ``data.batch_size`` (:mod:`cinet.models.shapes`). With two or more images
    per step and no instance norm, every map of at least one cell works and nothing is built.

    Raises:
        ConfigError: One line naming ``data.crop_size`` (or ``data.image_size``) and ``data.batch_size``, the
            layer, and the smallest square size that trains at this batch size.
    """
    import torch

    from cinet.models.shapes import degenerate_norm, has_instance_norm, smallest_training_side

    batch = cfg.data.batch_size
    meta_cfg = dataclasses.replace(
        cfg, model=dataclasses.replace(cfg.model, encoder_weights=None, attention_impl="naive")
    )
    with torch.device("meta"):
        model = build_model(meta_cfg, num_classes)
    if batch > 1 and not has_instance_norm(model):
        return
    key = "data.crop_size" if cfg.data.crop_size else "data.image_size"
    size = cfg.data.crop_size or cfg.data.image_size or (native_size() if native_size is not None else None)
    if size is None:
        return
    h, w = int(size[0]), int(size[1])
    bad = degenerate_norm(model, batch, h, w)
    if bad is None:
        return
    name, _, cells = bad
    side = smallest_training_side(model, batch)
    fix = f"use {key} of at least [{side}, {side}]" if side else f"use a larger {key}"
    if not has_instance_norm(model) and batch == 1:
        fix += " or data.batch_size >= 2"
    raise ConfigError(
        f"{key}: a {h}x{w} input with data.batch_size {batch} reduces the map of {name} to "
        f"{'x'.join(map(str, cells))}, one value per channel for its normalisation in training "
        f"(model.variant {cfg.model.variant}, model.encoder {cfg.model.encoder}); {fix}"
    )


def build_loss(cfg: Config, info: Any, class_weights: Any = None) -> Any:
    """The :class:`cinet.losses.TotalLoss` of the variant."""
    from cinet.losses import LossWeights, TotalLoss
    from cinet.models import variant_spec

    spec = variant_spec(cfg.model.variant)
    lc = cfg.loss
    return TotalLoss(
        info.num_classes,
        use_attention=spec.supervised_attention,
        use_consistency=spec.consistency,
        weights=LossWeights(alpha=lc.alpha, beta=lc.beta, gamma=lc.gamma, lam=lc.lam, mu=lc.mu),
        num_pairs=lc.num_pairs,
        ignore_index=info.ignore_index,
        attention_impl=cfg.model.attention_impl,
        class_weights=class_weights,
    )


def _class_weights(cfg: Config, datamodule: Any, info: Any) -> Any:
    """Fixed class weights of L_seg for ``loss.class_weights``: None (per batch), uniform or whole-dataset."""
    import torch

    mode = cfg.loss.class_weights
    if mode == "batch":
        return None
    if mode == "none":
        return torch.ones(info.num_classes)
    # "dataset": Eq. 12 weights from the untransformed training labels
    from cinet.engine.datamodule import build_dataset

    ds = build_dataset(
        dataclasses.replace(cfg.data, augment=dataclasses.replace(cfg.data.augment, enabled=False)),
        cfg.data.train_split,
        train=False,
    )
    counts = torch.zeros(info.num_classes, dtype=torch.float64)
    for i in range(len(ds)):
        labels = ds[i]["labels"]
        valid = labels[labels != info.ignore_index]
        counts += torch.bincount(valid.flatten(), minlength=info.num_classes).double()
    total = counts.sum().clamp(min=1)
    return ((total - counts) / total).float()


def build_protocol(cfg: Config, info: Any) -> Any:
    """The :class:`cinet.metrics.EvalProtocol` of ``cfg.train.eval`` on dataset ``info``."""
    from cinet.metrics import DATASET_DEFAULTS, EvalProtocol

    ev = cfg.train.eval
    defaults = dict(DATASET_DEFAULTS.get(info.name, {}))
    crop: Any = ev.crop
    if crop == "default":
        crop = defaults.get("crop")
        if crop is None and info.eval_crop is not None and info.reference_size is not None:
            crop = "eigen" if info.name == "nyuv2" else None
    elif crop in ("none", None):
        crop = None
    max_depth = ev.max_depth if ev.max_depth is not None else defaults.get("max_depth", info.depth_cap)
    min_depth = ev.min_depth if ev.min_depth is not None else defaults.get("min_depth", info.min_depth)
    size = cfg.data.image_size
    if size is None and info.name == "synthetic":
        size = cfg.data.options.get("size", (240, 320))
        if isinstance(size, int):
            size = (size, size)
    if size is None:
        size = defaults.get("image_size")
    return EvalProtocol(
        dataset=info.name,
        crop=crop,
        min_depth=float(min_depth),
        max_depth=None if max_depth is None else float(max_depth),
        reduction=ev.reduction,
        ignore_index=info.ignore_index,
        image_size=tuple(size) if size is not None else None,
    )


def build_datamodule(cfg: Config, stage: int = 0, test_split: str | None = None) -> Any:
    """The data module (data order seeded by ``train.seed`` and the stage)."""
    from cinet.engine.datamodule import CINetDataModule

    return CINetDataModule(cfg.data, seed=cfg.train.seed + 1000 * stage, test_split=test_split)


def build_module(
    cfg: Config,
    info: Any,
    stage_cfg: StageConfig,
    *,
    model: Any = None,
    class_weights: Any = None,
    git: str | None = None,
) -> Any:
    """The :class:`cinet.engine.module.CINetModule` for one stage (a fresh model unless ``model`` is given)."""
    from cinet.engine.module import CINetModule

    if model is None:
        model = build_model(cfg, info.num_classes, info.ignore_index)
    protocol = build_protocol(cfg, info)
    dkw = protocol.depth_kwargs()
    dkw["reduction"] = protocol.reduction
    return CINetModule(
        model,
        build_loss(cfg, info, class_weights),
        stage=stage_cfg.stage,
        schedule=cfg.train.schedule,
        handover_epochs=cfg.train.handover_epochs,
        lr=stage_cfg.lr,
        poly_power=stage_cfg.poly_power,
        momentum=cfg.train.momentum,
        weight_decay=cfg.train.weight_decay,
        encoder_lr_mult=cfg.train.encoder_lr_mult,
        num_classes=info.num_classes,
        ignore_index=info.ignore_index,
        depth_metric_kwargs=dkw,
        eval_size=tuple(cfg.data.eval_size) if cfg.data.eval_size else None,
        channels_last=cfg.trainer.channels_last,
        max_nonfinite=cfg.train.max_nonfinite,
        payload={"dataset": dataclasses.asdict(info), "config": config_to_dict(cfg), "git": git},
        palette=[list(c) for c in info.palette],
        mean=tuple(info.mean),
        std=tuple(info.std),
        num_vis=cfg.train.num_vis,
    )


def load_weights(module: Any, path: str | Path) -> None:
    """Initialise ``module.model`` (and the loss's learned parameters, if stored) from a checkpoint."""
    from cinet.checkpoint import model_state_dict, read_checkpoint

    ckpt = read_checkpoint(path)
    state = model_state_dict(ckpt)
    check_fits(module.model, ckpt, path)
    module.model.load_state_dict(state)
    loss_state = {k[len("loss.") :]: v for k, v in ckpt["state_dict"].items() if k.startswith("loss.")}
    if loss_state:
        module.loss.load_state_dict(loss_state, strict=False)
    log.info("initialised weights from %s", path)


def check_fits(model: Any, ckpt: dict[str, Any], path: str | Path) -> None:
    """Raise :class:`CheckpointError` naming ``path`` when the checkpoint's weights do not fit ``model``.

    The message says what differs (variant, class count, encoder / channel widths), read from the weights.
    """
    from cinet.checkpoint import describe_mismatch, model_state_dict

    state = model_state_dict(ckpt)
    kwargs = dict(getattr(model, "build_kwargs", {}))
    if not state:
        raise CheckpointError(f"{path}: state_dict holds no 'model.*' weights")
    own = model.state_dict()
    diff = describe_mismatch(state, own, kwargs)
    if diff is not None:
        stored = (ckpt.get("cinet") or {}).get("model") or {}
        counts = {
            "unexpected": sum(k not in own for k in state),
            "missing": sum(k not in state for k in own),
            "of another shape": sum(
                k in own and tuple(v.shape) != tuple(own[k].shape) for k, v in state.items()
            ),
        }
        count_text = ", ".join(f"{n} {what}" for what, n in counts.items() if n)
        raise CheckpointError(
            f"{path}: weights do not fit model.variant={kwargs.get('variant')!r} encoder={kwargs.get('encoder')!r} "
            f"num_classes={kwargs.get('num_classes')} (checkpoint: variant={stored.get('variant')!r}, "
            f"encoder={stored.get('encoder')!r}, num_classes={stored.get('num_classes')}): {diff} "
            f"({count_text} parameters)"
        )


def _trainer_kwargs(cfg: Config, stage_cfg: StageConfig) -> dict[str, Any]:
    from cinet.engine.stages import stage_spec
    from cinet.models import variant_spec

    t, hw = cfg.train, cfg.trainer
    strategy: Any = hw.strategy
    # e.g. stage 1 feeds the ideal map: the SUM's Q/K projections get no gradient, which DDP must be told
    unused = stage_spec(t.schedule, stage_cfg.stage).ddp_find_unused(variant_spec(cfg.model.variant))
    if unused and strategy in ("ddp", "ddp_spawn", "ddp_fork", "ddp_notebook"):
        strategy = f"{strategy}_find_unused_parameters_true"
    devices: Any = hw.devices
    if isinstance(devices, str) and devices.strip().lstrip("-").isdigit():
        devices = int(devices)
    precision: Any = hw.precision
    if precision in ("32", "64"):
        precision = f"{precision}-true"
    kwargs: dict[str, Any] = {
        "accelerator": hw.accelerator,
        "devices": devices,
        "num_nodes": hw.num_nodes,
        "strategy": strategy,
        "precision": precision,
        "max_epochs": stage_cfg.epochs,
        "max_steps": stage_cfg.max_steps,
        "log_every_n_steps": max(1, t.log_every),
        "limit_train_batches": t.limit_train_batches,
        "limit_test_batches": t.limit_test_batches,
        "enable_checkpointing": False,
        "enable_progress_bar": hw.progress_bar,
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
        "use_distributed_sampler": False,
        "deterministic": hw.deterministic,
        "gradient_clip_val": t.grad_clip if t.grad_clip > 0 else None,
    }
    if t.val_every > 0 and cfg.data.val_split is not None:
        kwargs["check_val_every_n_epoch"] = t.val_every
        kwargs["limit_val_batches"] = t.limit_val_batches
    else:
        kwargs["limit_val_batches"] = 0
    return kwargs


def _make_trainer(cfg: Config, stage_cfg: StageConfig, *, logger: Any, callbacks: list) -> Any:
    import lightning as L

    from cinet.engine.callbacks import AtomicCheckpointIO, StageProgressBar

    if cfg.trainer.progress_bar:
        callbacks = [*callbacks, StageProgressBar()]
    return L.Trainer(
        logger=logger,
        callbacks=callbacks,
        plugins=[AtomicCheckpointIO()],
        **_trainer_kwargs(cfg, stage_cfg),
    )


def evaluate_module(
    module: Any, cfg: Config, *, split: str | None = None, trainer: Any = None
) -> dict[str, Any]:
    """Metrics of ``module`` on ``split`` (default ``data.test_split``) with ``cfg``'s protocol (all ranks)."""
    import lightning as L

    dm = build_datamodule(cfg, test_split=split)
    if trainer is None:
        kw = _trainer_kwargs(cfg, StageConfig(stage=3))
        keep = (
            "accelerator",
            "devices",
            "num_nodes",
            "strategy",
            "precision",
            "limit_test_batches",
            "enable_progress_bar",
        )
        trainer = L.Trainer(
            logger=False,
            enable_checkpointing=False,
            enable_model_summary=False,
            use_distributed_sampler=False,
            **{k: kw[k] for k in keep},
        )
    trainer.test(module, datamodule=dm, verbose=False)
    return dict(module.test_results)


def write_metrics(
    path: str | Path, metrics: dict[str, Any], protocol: Any, extra: dict[str, Any] | None = None
) -> dict:
    """``metrics.json`` (atomic): ``METRIC_KEYS`` + other entries + ``protocol``."""
    from cinet.metrics import metrics_json
    from cinet.utils.io import atomic_write_json

    data = metrics_json(metrics, protocol)
    if extra:
        data.update(extra)
    atomic_write_json(path, data)
    return data


# ------------------------------------------------------------------------------------------------ run dir


def read_state(run_dir: str | Path) -> dict[str, Any]:
    """``state.json`` of a run directory (empty state when absent)."""
    p = Path(run_dir) / STATE_FILE
    if not p.is_file():
        return {"completed": [], "evaluated": False}
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{p}: unreadable run state ({exc})") from None


def _write_state(run_dir: Path, state: dict[str, Any]) -> None:
    from cinet.utils.io import atomic_write_json

    if global_rank() == 0:
        state["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        atomic_write_json(run_dir / STATE_FILE, state)


def default_run_dir(cfg: Config, config_path: str | Path | None) -> Path:
    """``runs/<name>-<job id or time>`` (stable across the processes of one distributed job)."""
    if os.environ.get(RUN_DIR_ENV) and "LOCAL_RANK" in os.environ:  # a process of a launched DDP job
        return Path(os.environ[RUN_DIR_ENV])
    stem = Path(config_path).stem if config_path else cfg.name
    job = os.environ.get("SLURM_JOB_ID") or os.environ.get("TORCHELASTIC_RUN_ID")
    if not job or job == "none":
        job = time.strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{stem}-{job}"


def stage_plan(cfg: Config) -> list[StageConfig]:
    """The stages this invocation trains, in order (``stage=N`` picks one)."""
    stages = list(cfg.train.stages)
    if cfg.stage is not None:
        stages = [s for s in stages if s.stage == cfg.stage]
    return stages


def _previous_stage(cfg: Config, stage: int) -> int | None:
    order = [s.stage for s in cfg.train.stages]
    i = order.index(stage)
    return order[i - 1] if i > 0 else None


def _looks_like_run_dir(path: Path) -> bool:
    return (path / STATE_FILE).is_file() or (path / "config.yaml").is_file()


def prepare_run_dir(cfg: Config, run_dir: Path, *, resume: bool, overwrite: bool) -> dict[str, Any]:
    """Create / check the run directory (rank 0 writes) and return its state."""
    rank0 = global_rank() == 0
    exists = run_dir.exists() and any(run_dir.iterdir())
    if resume:
        if not _looks_like_run_dir(run_dir):
            raise ConfigError(f"{run_dir}: not a cinet run directory (no {STATE_FILE}); nothing to resume")
        return read_state(run_dir)
    if cfg.stage is not None and _looks_like_run_dir(run_dir):
        # one stage into an existing run (e.g. stage=2 after stage 1)
        stage_dir = run_dir / f"stage{cfg.stage}"
        if (stage_dir / "last.ckpt").exists() and not overwrite:
            raise ConfigError(
                f"{stage_dir}: stage {cfg.stage} already has a checkpoint (use --resume {run_dir} or --overwrite)"
            )
        if rank0 and overwrite and stage_dir.exists():
            shutil.rmtree(stage_dir)
        state = read_state(run_dir)
        state["completed"] = [s for s in state.get("completed", []) if s != cfg.stage]
        state["evaluated"] = False
        return state
    if exists and rank0:
        if not overwrite:
            raise ConfigError(
                f"{run_dir}: run directory exists (use --resume {run_dir} to continue it, or --overwrite)"
            )
        if not _looks_like_run_dir(run_dir):
            raise ConfigError(f"{run_dir}: exists and is not a cinet run directory; refusing to overwrite it")
        shutil.rmtree(run_dir)
    state = {"stages": [s.stage for s in cfg.train.stages], "completed": [], "evaluated": False}
    if rank0:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(run_dir / "config.yaml", cfg, git_revision())
    return state


def _copy_atomic(src: Path, dst: Path) -> None:
    from cinet.utils.io import atomic_save

    with open(src, "rb") as fh_in:
        atomic_save(dst, lambda fh: shutil.copyfileobj(fh_in, fh, length=16 << 20))


def _remove_stale_temporaries(run_dir: Path) -> None:
    """Delete ``.NAME.XXXX.tmp`` files left by a process killed while writing (see :mod:`cinet.utils.io`)."""
    if global_rank() != 0 or not run_dir.is_dir():
        return
    for folder in [run_dir, *sorted(p for p in run_dir.glob("stage*") if p.is_dir())]:
        for tmp in folder.glob(".*.tmp"):
            log.info("removing %s (left by an interrupted write)", tmp)
            tmp.unlink(missing_ok=True)


# ------------------------------------------------------------------------------------------------ training


def train(
    cfg: Config,
    run_dir: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    callbacks: list | None = None,
    evaluate: bool = True,
) -> dict[str, Any]:
    """Train the stages of ``cfg`` into ``run_dir``, then evaluate the final model on the test split.

    Args:
        cfg: The run config.
        run_dir: Run directory (created; must not exist unless ``resume`` / ``overwrite`` / ``stage=N``).
        resume: Continue an interrupted run at the stage and step where it stopped.
        overwrite: Replace an existing run directory.
        callbacks: Extra Lightning callbacks (tests, tools).
        evaluate: Evaluate the final model and write ``metrics.json``.

    Returns:
        ``{"metrics": {...} or None, "run_dir": str, "checkpoint": str, "wall_s": float, "stages": [...]}``.
    """
    import lightning as L
    from lightning.pytorch.loggers import TensorBoardLogger

    from cinet.engine.callbacks import LossLog, RollingCheckpoint
    from cinet.utils.io import check_writable_dir

    t0 = time.time()
    run_dir = Path(run_dir)
    # check what can fail before anything is written: output folder, dataset (both splits), init_from
    check_writable_dir(run_dir, "run directory")
    preflight = build_datamodule(cfg)
    info = preflight.info
    train_set = preflight.dataset("train")
    check_feature_maps(cfg, info.num_classes, lambda: tuple(train_set[0]["image"].shape[-2:]))
    del preflight
    if cfg.init_from and not resume:
        load_weights(build_module(cfg, info, stage_plan(cfg)[0]), cfg.init_from)
    os.environ[RUN_DIR_ENV] = str(run_dir)  # DDP children re-run the command: same run dir
    state = prepare_run_dir(cfg, run_dir, resume=resume, overwrite=overwrite)
    if resume:
        _remove_stale_temporaries(run_dir)
    git = git_revision()
    plan = stage_plan(cfg)
    completed = set(state.get("completed", []))
    state.setdefault("stages", [s.stage for s in cfg.train.stages])
    state.setdefault("wall_s", {})
    class_weights = _class_weights(cfg, None, info)
    module = None
    final_ckpt: Path | None = None
    first = True
    for st in plan:
        stage_dir = run_dir / f"stage{st.stage}"
        last = stage_dir / "last.ckpt"
        if st.stage in completed:
            log.info("stage %d already complete, skipping", st.stage)
            final_ckpt = last
            first = False
            continue
        L.seed_everything(cfg.train.seed, workers=False, verbose=False)
        module = build_module(cfg, info, st, class_weights=class_weights, git=git)
        ckpt_path = None
        if resume and last.is_file():
            from cinet.checkpoint import read_checkpoint

            check_fits(module.model, read_checkpoint(last), last)  # truncated, or overrides changed the model
            ckpt_path = str(last)
            log.info("stage %d: resuming from %s", st.stage, last)
        else:
            prev = _previous_stage(cfg, st.stage)
            prev_ckpt = run_dir / f"stage{prev}" / "last.ckpt" if prev is not None else None
            if first and cfg.init_from:
                load_weights(module, cfg.init_from)
            elif prev_ckpt is not None and prev_ckpt.is_file():
                load_weights(module, prev_ckpt)
            elif prev is not None:
                raise ConfigError(
                    f"stage {st.stage} starts from the weights of stage {prev}: none found at {prev_ckpt}; "
                    "give init_from=CKPT or run the earlier stages first"
                )
        if global_rank() == 0:
            stage_dir.mkdir(parents=True, exist_ok=True)
            save_config(stage_dir / "config.yaml", cfg, git)
        state["current"] = st.stage
        _write_state(run_dir, state)
        logger = TensorBoardLogger(
            save_dir=str(run_dir), name="tb", version=f"stage{st.stage}", default_hp_metric=False
        )
        # the loss row of a step is written before the checkpoint of that step (see LossLog)
        cbs = [
            LossLog(stage_dir / LOSS_LOG),
            RollingCheckpoint(last, cfg.train.checkpoint_every),
            *(callbacks or []),
        ]
        trainer = _make_trainer(cfg, st, logger=logger, callbacks=cbs)
        dm = build_datamodule(cfg, stage=st.stage)
        ts = time.time()
        try:
            trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)
        except SystemExit:  # Lightning turns Ctrl-C into sys.exit(1) after its graceful shutdown
            if not trainer.interrupted:
                raise
        if trainer.interrupted:
            log.warning("interrupted: %s is kept; continue with: cinet train --resume %s", last, run_dir)
            raise KeyboardInterrupt
        trainer.save_checkpoint(last)
        state["wall_s"][str(st.stage)] = round(state["wall_s"].get(str(st.stage), 0.0) + time.time() - ts, 2)
        completed.add(st.stage)
        state["completed"] = sorted(completed)
        state["current"] = None
        _write_state(run_dir, state)
        final_ckpt = last
        first = False

    if final_ckpt is None or not final_ckpt.is_file():
        raise CheckpointError(f"{run_dir}: no stage checkpoint found")
    top = run_dir / "last.ckpt"
    if global_rank() == 0:
        _copy_atomic(final_ckpt, top)
    _barrier()

    metrics = None
    if evaluate:
        if module is None:  # everything was done already except (maybe) the evaluation
            last_stage = next(s for s in cfg.train.stages if final_ckpt.parent.name == f"stage{s.stage}")
            module = build_module(cfg, info, last_stage, class_weights=class_weights, git=git)
            load_weights(module, final_ckpt)
        metrics = evaluate_module(module, cfg)
        protocol = build_protocol(cfg, info)
        if global_rank() == 0:
            write_metrics(
                run_dir / "metrics.json",
                metrics,
                protocol,
                {"checkpoint": str(top), "split": cfg.data.test_split, "variant": cfg.model.variant},
            )
        state["evaluated"] = True
        _write_state(run_dir, state)
    wall = time.time() - t0
    return {
        "metrics": metrics,
        "run_dir": str(run_dir),
        "checkpoint": str(top),
        "wall_s": wall,
        "stages": [s.stage for s in plan],
    }
