"""The training and evaluation driver behind ``cinet train`` / ``eval`` / ``ablate`` and ``make demo``.

:func:`train` runs the stages of a config one after the other into a run directory (:mod:`cinet.engine.rundir`),
each stage starting from the previous stage's weights, resumable at the step where it stopped; then it evaluates
the final model (:func:`evaluate_module`). Everything it trains or evaluates comes from
:mod:`cinet.build.builders`.

Distributed runs (``trainer.devices``, ``trainer.num_nodes``, ``trainer.strategy=ddp``): Lightning launches or detects
the processes (torchrun, SLURM); only global rank 0 writes the run directory's files.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.loggers import TensorBoardLogger

from cinet.build import builders
from cinet.build.data import build_dataset, dataset_info_from_config, depth_setting
from cinet.checkpoint import check_fits, load_model, load_weights, read_checkpoint
from cinet.checks.data import check_training_data
from cinet.checks.depth import warn_depth_unit
from cinet.checks.labels import check_classes
from cinet.checks.model import check_eval_memory, check_feature_maps
from cinet.checks.outputs import check_run_dir, check_writable_dir
from cinet.config import Config, StageConfig, git_revision, load_config, parse_overrides, save_config
from cinet.engine import rundir
from cinet.engine.callbacks import LossLog, RollingCheckpoint
from cinet.engine.distributed import barrier, global_rank
from cinet.errors import CheckpointError, CinetError, ConfigError
from cinet.metrics.report import per_class_by_name
from cinet.utils import signals
from cinet.utils.io import atomic_write_json, file_sha256
from cinet.utils.precision import cpu_features, resolve_precision

log = logging.getLogger(__name__)

#: Written into the run directory: the requested and the resolved trainer.precision, and why.
PRECISION_FILE = "precision.json"

__all__ = ["evaluate_module", "stage_plan", "train"]


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


def evaluate_module(
    module: Any, cfg: Config, *, split: str | None = None, trainer: Any = None
) -> dict[str, Any]:
    """Metrics of ``module`` on ``split`` (default ``data.test_split``) with ``cfg``'s protocol (all ranks).

    Returns:
        The test metrics of :class:`cinet.engine.module.CINetModule`: ``METRIC_KEYS`` (depth errors in
        metres, δ and segmentation scores as fractions), the other outputs of the depth and segmentation
        metrics (``per_class_iou`` a dict keyed by class name, from the dataset info in ``module.payload``, in
        id order) and ``num_images``; plain Python numbers.
    """
    # the module's own input normalisation (a checkpoint's stored one), not the config encoder's default
    dm = builders.build_datamodule(
        cfg, test_split=split, normalization=(module.input_spec.mean, module.input_spec.std)
    )
    if trainer is None:
        trainer = builders.build_test_trainer(cfg)
    trainer.test(module, datamodule=dm, verbose=False)
    results = dict(module.test_results)
    names = module.payload.class_names
    if (
        names
        and isinstance(results.get("per_class_iou"), list)
        and len(names) == len(results["per_class_iou"])
    ):
        results["per_class_iou"] = per_class_by_name(results["per_class_iou"], names)  # keyed by class name
    return results


def evaluate_checkpoint(
    checkpoint: str | Path,
    *,
    config: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    split: str | None = None,
) -> tuple[dict[str, Any], Any, Any]:
    """Evaluate a checkpoint: ``(metrics, protocol, config)``.

    The model is rebuilt from the checkpoint's stored build arguments; data and protocol come from its stored
    config, updated by ``config`` and ``overrides``. The protocol records every field that decides the numbers
    (:class:`cinet.metrics.EvalProtocol`), the checkpoint's SHA-256 included. ``cinet eval``'s driver, beside
    :func:`train`.

    Raises:
        ConfigError: A ``model.*`` override (the model is the checkpoint's), a bad key or value.
        CheckpointError: The checkpoint is unreadable, of another class count or other classes.
        DataError / InputError: The dataset is missing or does not fit in memory at its evaluation size.
    """
    for key, _ in parse_overrides(list(overrides)):
        if key.split(".")[0] == "model":  # evaluation's attention path is always the inference one
            raise ConfigError(
                f"{key}: the model is rebuilt from the arguments stored in {checkpoint}; "
                "this override would be ignored"
            )
    model, payload = load_model(checkpoint)  # one read; format, build arguments and weights checked
    cfg = load_config(config, list(overrides), base=payload.config or None)
    builders.check_trainer_hardware(cfg)
    split = split or cfg.data.test_split
    mean, std = model.input_mean, model.input_std  # the checkpoint's stored normalisation (load_model)
    dataset = build_dataset(cfg.data, split, train=False, mean=mean, std=std)  # a missing root is named first
    info = dataset_info_from_config(cfg.data)
    trained_classes = int(model.build_kwargs.get("num_classes", info.num_classes))
    check_classes(checkpoint, trained_classes, payload.class_names, info, cfg.data.name)
    # the check of cinet train and data preview: a wrong depth unit makes every metric void
    warn_depth_unit(dataset, f"{cfg.data.name}/{split}", depth_setting(cfg.data.name))
    cfg.model.variant = model.build_kwargs.get("variant", cfg.model.variant)
    check_eval_memory(cfg, dataset, info.num_classes, payload.train_size, lambda: model)
    module = builders.build_module(
        cfg, info, StageConfig(stage=3), model=model, train_size=payload.train_size
    )
    metrics = evaluate_module(module, cfg, split=split)
    protocol = dataclasses.replace(
        builders.build_protocol(cfg, info, split=split), checkpoint_sha256=file_sha256(checkpoint)
    )
    return metrics, protocol, cfg


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
        ``{"metrics": {...} or None, "run_dir": str, "checkpoint": str, "wall_s": float, "stages": [...],
        "times_s": {...}}``: ``times_s`` is this call's wall time in seconds per phase, in order: ``checks``
        (everything before the first stage), ``stage<N>`` per stage trained (model, trainer, data, the fit with
        its validation, the checkpoint), ``evaluation`` (the test split).
    """
    t0 = time.time()
    run_dir = Path(run_dir)
    # check what can fail before anything is written (cinet.checks): output folder, dataset (every split, batch
    # size, first batches, depth unit), evaluation protocol, feature maps, encoder weights, evaluation memory,
    # init_from
    check_writable_dir(run_dir, "run directory")
    check_run_dir(run_dir, resume=resume, overwrite=overwrite, stage=cfg.stage)
    builders.check_trainer_hardware(cfg)  # trainer.devices / accelerator / strategy, parsed by Lightning
    if cfg.data.root is not None:  # stored absolute: the run can be evaluated from another folder
        cfg.data.root = str(Path(cfg.data.root).expanduser().resolve())
    preflight = builders.build_datamodule(cfg)
    train_size = check_training_data(preflight, validate=cfg.train.val_every > 0)  # a missing root first
    info = dataset_info_from_config(cfg.data)
    builders.build_protocol(cfg, info)  # the evaluation's depth range and crop (built again by each stage)
    train_set = preflight.dataset("train")
    check_feature_maps(
        cfg, info.num_classes, builders.build_model, lambda: tuple(train_set[0]["image"].shape[-2:])
    )
    builders.check_encoder_weights(cfg)  # a local / packaged file: read and checked key by key
    no_download = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, encoder_weights=None))
    evaluated = ["test", *(["val"] if cfg.train.val_every > 0 and cfg.data.val_split is not None else [])]
    for which in evaluated:  # the validation / test forward at data.eval_size (cinet eval's check)
        check_eval_memory(
            cfg,
            preflight.dataset(which),
            info.num_classes,
            train_size,
            lambda: builders.build_model(no_download, info.num_classes, info.ignore_index),
        )
    train_batches = builders.train_batches_per_epoch(cfg, len(train_set))
    del preflight
    if cfg.init_from and not resume:
        load_weights(builders.build_module(cfg, info, stage_plan(cfg)[0]), cfg.init_from)
    os.environ[rundir.RUN_DIR_ENV] = str(run_dir)  # DDP children re-run the command: same run dir
    created = not run_dir.exists()
    state = rundir.prepare_run_dir(
        run_dir,
        stages=[s.stage for s in cfg.train.stages],
        stage=cfg.stage,
        resume=resume,
        overwrite=overwrite,
        write_config=lambda path: save_config(path, cfg, git_revision()),
    )
    try:
        return _train_stages(
            cfg, run_dir, state, info, train_size, train_batches, resume, callbacks, evaluate, t0
        )
    except CinetError:
        # a data error found during the first steps (a file whose header was fine): the run directory this call
        # created holds no checkpoint yet: remove it, so that the same command runs again after the fix
        if created and global_rank() == 0 and not list(run_dir.glob("stage*/last.ckpt")):
            shutil.rmtree(run_dir, ignore_errors=True)
        raise


def _train_stages(
    cfg: Config,
    run_dir: Path,
    state: dict[str, Any],
    info: Any,
    train_size: tuple[int, int],
    train_batches: int,
    resume: bool,
    callbacks: list | None,
    evaluate: bool,
    t0: float,
) -> dict[str, Any]:
    """The stages of :func:`train` after the checks, in the prepared run directory."""
    times: dict[str, float] = {"checks": round(time.time() - t0, 2)}  # this call's wall time per phase
    if resume:
        rundir.remove_stale_temporaries(run_dir)
    if global_rank() == 0:  # trainer.precision=auto: what this machine resolved it to, said and kept
        choice = resolve_precision(cfg.trainer.precision, cfg.trainer.accelerator)
        print(f"precision: {choice.reason}", flush=True)
        record = {"requested": cfg.trainer.precision, "precision": choice.precision, "reason": choice.reason}
        atomic_write_json(run_dir / PRECISION_FILE, {**record, "cpu": cpu_features()["cpu_name"]})
    git = git_revision()
    plan = stage_plan(cfg)
    completed = set(state.get("completed", []))
    state.setdefault("stages", [s.stage for s in cfg.train.stages])
    state.setdefault("wall_s", {})
    class_weights = builders.build_class_weights(cfg, info)
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
        t_stage = time.time()
        L.seed_everything(cfg.train.seed, workers=False, verbose=False)
        module = builders.build_module(
            cfg, info, st, class_weights=class_weights, git=git, train_size=train_size
        )
        ckpt_path = None
        if resume and last.is_file():
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
        rundir.write_state(run_dir, state)
        logger = TensorBoardLogger(
            save_dir=str(run_dir), name="tb", version=f"stage{st.stage}", default_hp_metric=False
        )
        # the loss row of a step is written before the checkpoint of that step (see LossLog)
        cbs = [
            LossLog(stage_dir / rundir.LOSS_LOG),
            RollingCheckpoint(last, cfg.train.checkpoint_every),
            *(callbacks or []),
        ]
        trainer = builders.build_trainer(
            cfg,
            st,
            logger=logger,
            callbacks=cbs,
            train_batches=train_batches,
            profile_dir=run_dir / "profile",
        )
        dm = builders.build_datamodule(cfg, stage=st.stage)
        ts = time.time()
        try:
            trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)
        except SystemExit:  # Lightning turns Ctrl-C into sys.exit(1) after its graceful shutdown
            if not trainer.interrupted and signals.received() is None:
                raise
        except BaseException:
            if signals.received() is None:
                raise
        if trainer.interrupted or signals.received() is not None:
            signum = signals.received() or signal.SIGINT
            kept = f"{last} is kept" if last.is_file() else "no checkpoint of this stage yet"
            raise signals.Interrupted(signum, f"{kept}; continue with: cinet train --resume {run_dir}")
        trainer.save_checkpoint(last)
        times[f"stage{st.stage}"] = round(time.time() - t_stage, 2)
        state["wall_s"][str(st.stage)] = round(state["wall_s"].get(str(st.stage), 0.0) + time.time() - ts, 2)
        completed.add(st.stage)
        state["completed"] = sorted(completed)
        state["current"] = None
        rundir.write_state(run_dir, state)
        final_ckpt = last
        first = False

    if final_ckpt is None or not final_ckpt.is_file():
        raise CheckpointError(f"{run_dir}: no stage checkpoint found")
    top = run_dir / "last.ckpt"
    if global_rank() == 0:
        rundir.copy_atomic(final_ckpt, top)
    barrier()

    metrics = None
    if evaluate:
        t_eval = time.time()
        if module is None:  # everything was done already except (maybe) the evaluation
            last_stage = next(s for s in cfg.train.stages if final_ckpt.parent.name == f"stage{s.stage}")
            module = builders.build_module(
                cfg, info, last_stage, class_weights=class_weights, git=git, train_size=train_size
            )
            load_weights(module, final_ckpt)
        metrics = evaluate_module(module, cfg)
        protocol = builders.build_protocol(cfg, info)
        if global_rank() == 0:
            rundir.write_metrics(
                run_dir / "metrics.json",
                metrics,
                protocol,
                {"checkpoint": str(top), "split": cfg.data.test_split, "variant": cfg.model.variant},
            )
        state["evaluated"] = True
        rundir.write_state(run_dir, state)
        times["evaluation"] = round(time.time() - t_eval, 2)
    wall = time.time() - t0
    return {
        "metrics": metrics,
        "run_dir": str(run_dir),
        "checkpoint": str(top),
        "wall_s": wall,
        "stages": [s.stage for s in plan],
        "times_s": times,
    }
