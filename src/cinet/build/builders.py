"""Builders: the only code that reads :class:`cinet.config.Config`; each turns one section into objects.

``build_model`` (``model.*``), ``build_loss`` / ``build_class_weights`` (``loss.*``), ``build_protocol``
(``train.eval.*`` over the dataset's protocol), ``build_recipe`` (``model.variant`` x ``train.schedule`` x the
stage: :func:`cinet.recipe.stage_recipe`), ``build_datamodule`` (``data.*``), ``build_module`` (one stage's
LightningModule) and ``trainer_kwargs`` / ``build_trainer`` / ``build_test_trainer`` (``trainer.*`` and the
recipe's DDP setting). Modules receive plain arguments; none of them sees the config. A library
:class:`ValueError` whose message starts with an argument's name becomes a :class:`ConfigError` naming the
config key (:func:`config_key`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.profilers import AdvancedProfiler, PyTorchProfiler, SimpleProfiler

from cinet.build.data import build_dataset, make_datamodule
from cinet.config import Config, ModelConfig, StageConfig, config_to_dict
from cinet.engine.callbacks import AtomicCheckpointIO, ProgressLines, StageProgressBar
from cinet.engine.distributed import dist_info
from cinet.engine.module import CINetModule, Optimisation
from cinet.errors import ConfigError, first_line
from cinet.losses import TotalLoss, dataset_class_weights
from cinet.metrics import EvalProtocol
from cinet.metrics.protocols import PRESETS
from cinet.models import build_model as _build
from cinet.models.encoder import check_encoder_weights as _check
from cinet.models.encoder import encoder_normalization as _normalization
from cinet.recipe import LossWeights, StageRecipe, stage_recipe, variant
from cinet.utils.precision import resolve_precision

__all__ = [
    "build_class_weights",
    "build_datamodule",
    "build_loss",
    "build_model",
    "build_module",
    "build_protocol",
    "build_recipe",
    "build_test_trainer",
    "build_trainer",
    "check_trainer_hardware",
    "config_key",
    "trainer_kwargs",
]

#: Library argument name -> config key, for the errors of the model builder and the recipe table.
MODEL_KEYS: dict[str, str] = {
    **{f.name: f"model.{f.name}" for f in dataclasses.fields(ModelConfig)},
    "num_classes": "model.num_classes",
}
RECIPE_KEYS: dict[str, str] = {
    "variant": "model.variant",
    "schedule": "train.schedule",
    "stage": "train.stages",
}


@contextlib.contextmanager
def config_key(keys: Mapping[str, str]) -> Iterator[None]:
    """Turn a library ``ValueError("<argument>: <what>")`` into ``ConfigError("<config key>: <what>")``.

    Args:
        keys: Argument name -> config key; errors about other arguments (or without one) pass unchanged.

    Raises:
        ConfigError: One line naming the config key of the argument the library refused.
    """
    try:
        yield
    except ValueError as exc:
        argument, sep, what = str(exc).partition(": ")
        if sep and argument in keys:
            raise ConfigError(f"{keys[argument]}: {what}") from exc
        raise


def build_model(cfg: Config, num_classes: int, ignore_index: int = 255) -> Any:
    """The network of ``cfg.model``."""
    arguments = dataclasses.asdict(cfg.model)  # ModelConfig's fields are build_model's arguments
    with config_key(MODEL_KEYS):
        return _build(**arguments, num_classes=num_classes, ignore_index=ignore_index)


def check_encoder_weights(cfg: Config) -> None:
    """Pre-flight check of ``model.encoder_weights`` (a local file or packaged short name) for ``model.encoder``,
    without building the model (:func:`cinet.models.encoder.check_encoder_weights`)."""
    with config_key(MODEL_KEYS):
        _check(cfg.model.encoder, cfg.model.encoder_weights)


def encoder_normalization(cfg: Config) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Input ``(mean, std)`` of ``model.encoder`` (:func:`cinet.models.encoder.encoder_normalization`), the
    normalisation of a new model's training data."""
    with config_key(MODEL_KEYS):
        return _normalization(cfg.model.encoder)


def build_loss(cfg: Config, info: Any, class_weights: Any = None, num_feature_maps: int = 3) -> Any:
    """The :class:`cinet.losses.TotalLoss` of the variant (``num_feature_maps``: the model's ``num_stages``)."""
    with config_key(RECIPE_KEYS):
        spec = variant(cfg.model.variant)
    lc = cfg.loss
    return TotalLoss(
        info.num_classes,
        use_attention=spec.supervised_attention,
        use_consistency=spec.consistency,
        weights=LossWeights(**{f.name: getattr(lc, f.name) for f in dataclasses.fields(LossWeights)}),
        num_pairs=lc.num_pairs,
        ignore_index=info.ignore_index,
        attention_impl=cfg.model.attention_impl,
        class_weights=class_weights,
        validate_labels=False,  # checked before training and as each sample is read (cinet.checks.labels)
        num_feature_maps=num_feature_maps,
    )


def build_class_weights(cfg: Config, info: Any) -> Any:
    """Fixed class weights of L_seg for ``loss.class_weights`` (Eq. 12).

    Returns:
        None for ``batch`` (the loss computes Eq. 12 weights per batch), ones ``[num_classes]`` for ``none``,
        or for ``dataset`` the Eq. 12 weights ``(total - count_c) / total`` float ``[num_classes]`` from the
        untransformed labels of the whole training split.
    """
    mode = cfg.loss.class_weights
    if mode == "batch":
        return None
    if mode == "none":
        return torch.ones(info.num_classes)
    # "dataset": Eq. 12 weights from the untransformed training labels
    mean, std = encoder_normalization(cfg)  # only the labels are read here
    ds = build_dataset(
        dataclasses.replace(cfg.data, augment=dataclasses.replace(cfg.data.augment, enabled=False)),
        cfg.data.train_split,
        train=False,
        mean=mean,
        std=std,
    )
    labels = (ds[i]["labels"] for i in range(len(ds)))
    return dataset_class_weights(labels, info.num_classes, info.ignore_index)  # the one Eq. 12 code


def build_protocol(cfg: Config, info: Any, split: str | None = None) -> Any:
    """The :class:`cinet.metrics.EvalProtocol` of dataset ``info`` with the overrides of ``cfg.train.eval``.

    ``train.eval.protocol`` names a preset (:data:`cinet.metrics.protocols.PRESETS`) that fixes crop, depth
    range, reduction and mIoU averaging; with ``dataset`` (default) ``train.eval.crop: default`` keeps the
    dataset's crop (``none`` removes it), ``max_depth`` / ``min_depth`` replace the dataset's when set,
    ``reduction`` and ``miou`` apply. ``data.image_size`` (a resize) replaces the protocol's image size. The
    record also holds the class count, ``split`` (default ``data.test_split``), the network input size
    (``data.eval_size``), ``train.eval.flip`` and the training seed.

    Raises:
        ConfigError: A preset whose numbers are for another class count than the dataset's; a
            ``train.eval.min_depth`` / ``max_depth`` that leaves no depth range with the dataset's other bound;
            a ``train.eval.crop`` the metrics refuse.
    """
    ev = cfg.train.eval
    overrides: dict[str, Any] = {}
    if ev.protocol in PRESETS:
        preset = PRESETS[ev.protocol]
        if preset.num_classes is not None and preset.num_classes != info.num_classes:
            raise ConfigError(
                f"train.eval.protocol: {preset.name!r} reports {preset.num_classes} classes, dataset "
                f"{info.name!r} has {info.num_classes} (data.options.classes, or another protocol)"
            )
        overrides.update(
            name=preset.name,
            crop=preset.crop,
            min_depth=preset.min_depth,
            max_depth=preset.max_depth,
            reduction=preset.reduction,
            miou_over=preset.miou_over,
        )
    else:
        overrides.update(reduction=ev.reduction, miou_over=ev.miou)
        if ev.crop != "default":
            overrides["crop"] = None if ev.crop in ("none", None) else ev.crop
        if ev.max_depth is not None:
            overrides["max_depth"] = float(ev.max_depth)
        if ev.min_depth is not None:
            overrides["min_depth"] = float(ev.min_depth)
        low = overrides.get("min_depth", float(info.min_depth))
        high = overrides.get("max_depth", info.depth_cap)
        if high is not None and high <= low:  # both set: the config's own check named them
            key = "train.eval.min_depth" if "min_depth" in overrides else "train.eval.max_depth"
            raise ConfigError(
                f"{key}: no depth is both > {low:g} and < {high:g} m (dataset {info.name!r} evaluates "
                f"{float(info.min_depth):g}..{info.depth_cap:g} m)"
            )
    if cfg.data.image_size is not None:
        overrides["image_size"] = tuple(cfg.data.image_size)
    overrides.update(
        flip=bool(ev.flip),
        num_classes=int(info.num_classes),
        split=split or cfg.data.test_split,
        input_size=tuple(cfg.data.eval_size) if cfg.data.eval_size else None,
        seeds=(int(cfg.train.seed),),
    )
    try:
        return EvalProtocol.for_info(info, **overrides)
    except ValueError as exc:  # the metrics' check of a crop of the config
        if ev.protocol in PRESETS or "crop" not in overrides or "crop" not in str(exc):
            raise
        raise ConfigError(f"train.eval.crop: {first_line(exc)}") from exc


def build_recipe(cfg: Config, stage: int) -> StageRecipe:
    """The :class:`cinet.recipe.StageRecipe` of ``stage`` for ``model.variant`` under ``train.schedule``."""
    with config_key(RECIPE_KEYS):
        return stage_recipe(
            cfg.model.variant, stage, cfg.train.schedule, handover_epochs=cfg.train.handover_epochs
        )


def build_datamodule(
    cfg: Config,
    stage: int = 0,
    test_split: str | None = None,
    *,
    normalization: tuple[tuple[float, ...], tuple[float, ...]] | None = None,
) -> Any:
    """The data module of ``data.*`` (:func:`cinet.build.data.make_datamodule`; data order seeded by
    ``train.seed`` and the stage).

    Images are normalised with ``normalization`` ``(mean, std)`` when given (a trained model's: evaluation
    passes the module's, :attr:`cinet.checkpoint.CheckpointPayload.normalization`), else with the mean / std of
    ``model.encoder`` (:func:`cinet.models.encoder.encoder_normalization`, training a new model).
    """
    mean, std = normalization if normalization is not None else encoder_normalization(cfg)
    return make_datamodule(
        cfg.data, seed=cfg.train.seed + 1000 * stage, test_split=test_split, mean=mean, std=std
    )


def build_module(
    cfg: Config,
    info: Any,
    stage_cfg: StageConfig,
    *,
    model: Any = None,
    class_weights: Any = None,
    git: str | None = None,
    train_size: tuple[int, int] | None = None,
) -> Any:
    """The :class:`cinet.engine.module.CINetModule` for one stage (a fresh model unless ``model`` is given).

    ``train_size`` (the ``(H, W)`` of the training images) is stored in its checkpoints (``cinet predict``
    scales images far from it, :mod:`cinet.preprocess`).

    The checkpoint's dataset entry records the model's input normalisation (its encoder's mean / std), which
    ``Predictor``, ``cinet predict`` and ``cinet export`` read.
    """
    recipe = build_recipe(cfg, stage_cfg.stage)
    if model is None:
        model = build_model(cfg, info.num_classes, info.ignore_index)
    info = dataclasses.replace(info, mean=tuple(model.input_mean), std=tuple(model.input_std))
    t = cfg.train
    return CINetModule(
        model,
        build_loss(cfg, info, class_weights, num_feature_maps=model.num_stages),
        recipe,
        protocol=build_protocol(cfg, info),
        optim=Optimisation(
            lr=stage_cfg.lr,
            poly_power=stage_cfg.poly_power,
            momentum=t.momentum,
            weight_decay=t.weight_decay,
            encoder_lr_mult=t.encoder_lr_mult,
            sharing_lr_mult=t.sharing_lr_mult,
            max_nonfinite=t.max_nonfinite,
        ),
        channels_last=cfg.trainer.channels_last,
        payload={
            "dataset": dataclasses.asdict(info),
            "config": config_to_dict(cfg),
            "git": git,
            "train_size": list(train_size) if train_size is not None else None,
        },
        palette=[list(c) for c in info.palette],
        mean=tuple(info.mean),
        std=tuple(info.std),
        num_vis=cfg.train.num_vis,
    )


def progress_bar_enabled(cfg: Config) -> bool:
    """``trainer.progress_bar`` on an interactive terminal (a bar would fill a log file or CI output)."""
    return bool(cfg.trainer.progress_bar) and sys.stderr.isatty()


def trainer_kwargs(cfg: Config, stage_cfg: StageConfig, train_batches: int | None = None) -> dict[str, Any]:
    """Keyword arguments of ``lightning.Trainer`` for one stage (``trainer.*`` and the stage's schedule).

    ``train_batches`` (batches per epoch, when known) caps ``log_every_n_steps`` so that Lightning does not warn
    that the epoch is shorter than the logging interval.
    """
    t, hw = cfg.train, cfg.trainer
    strategy: Any = hw.strategy
    devices: Any = hw.devices
    if isinstance(devices, str) and devices.strip().lstrip("-").isdigit():
        devices = int(devices)
    # e.g. stage 1 feeds the ideal map: the SUM's Q/K projections get no gradient, which DDP must be told; under
    # ``auto`` Lightning picks plain DDP for more than one process (the default variant crashed at step 2)
    if build_recipe(cfg, stage_cfg.stage).ddp_find_unused:
        if strategy == "auto" and _auto_world_size(hw.accelerator, devices, hw.num_nodes) > 1:
            strategy = "ddp"
        if strategy in ("ddp", "ddp_spawn", "ddp_fork", "ddp_notebook"):
            strategy = f"{strategy}_find_unused_parameters_true"
    precision = resolve_precision(hw.precision, hw.accelerator).precision
    kwargs: dict[str, Any] = {
        "accelerator": hw.accelerator,
        "devices": devices,
        "num_nodes": hw.num_nodes,
        "strategy": strategy,
        "precision": precision,
        "max_epochs": stage_cfg.epochs,
        "max_steps": stage_cfg.max_steps,
        "log_every_n_steps": max(1, min(t.log_every, train_batches or t.log_every)),
        "limit_train_batches": t.limit_train_batches,
        "limit_test_batches": t.limit_test_batches,
        "enable_checkpointing": False,
        "enable_progress_bar": progress_bar_enabled(cfg),
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


#: ``trainer.profiler`` -> Lightning's profiler class (``none``: no profiler).
PROFILERS: dict[str, Any] = {
    "simple": SimpleProfiler,
    "advanced": AdvancedProfiler,
    "pytorch": PyTorchProfiler,
}


def build_profiler(name: str, dirpath: str | Path | None, stage: int) -> Any:
    """Lightning's profiler ``name`` (``trainer.profiler``) writing ``DIRPATH/fit-stage<N>.txt``; None for ``none``.

    Raises:
        ConfigError: An unknown name (the config's own check names the key first).
    """
    if name == "none":
        return None
    if name not in PROFILERS:
        raise ConfigError(f"trainer.profiler: {name!r} is not one of none, {', '.join(PROFILERS)}")
    return PROFILERS[name](dirpath=None if dirpath is None else str(dirpath), filename=f"stage{stage}")


def build_trainer(
    cfg: Config,
    stage_cfg: StageConfig,
    *,
    logger: Any,
    callbacks: list,
    train_batches: int | None = None,
    profile_dir: str | Path | None = None,
) -> Any:
    """The ``lightning.Trainer`` of one training stage (atomic checkpoint writes, optional progress).

    With ``trainer.progress_bar``: Lightning's bar on a terminal, else one plain line every ``train.log_every``
    steps and at every epoch end (:class:`cinet.engine.callbacks.ProgressLines`). With ``trainer.profiler``,
    Lightning's profiler writes its report into ``profile_dir`` (:func:`build_profiler`).
    """
    if progress_bar_enabled(cfg):
        callbacks = [*callbacks, StageProgressBar()]
    elif cfg.trainer.progress_bar:  # stderr is a file or a pipe: plain lines instead of a bar
        callbacks = [*callbacks, ProgressLines(cfg.train.log_every)]
    return L.Trainer(
        logger=logger,
        callbacks=callbacks,
        plugins=[AtomicCheckpointIO()],
        profiler=build_profiler(cfg.trainer.profiler, profile_dir, stage_cfg.stage),
        **trainer_kwargs(cfg, stage_cfg, train_batches),
    )


def train_batches_per_epoch(cfg: Config, train_len: int) -> int:
    """Optimizer steps per epoch on one device (``drop_last``; ``train.limit_train_batches`` applied)."""
    world = max(1, dist_info()[1])
    n = max(1, -(-train_len // world) // max(1, cfg.data.batch_size))
    limit = cfg.train.limit_train_batches
    if isinstance(limit, float) and limit <= 1.0:
        return max(1, int(n * limit))
    return max(1, min(n, int(limit)))


#: The ``trainer.*`` keys that Lightning's accelerator connector parses (checked by :func:`check_trainer_hardware`).
HARDWARE_KEYS = ("accelerator", "devices", "num_nodes", "strategy")


@functools.cache
def _auto_world_size(accelerator: str, devices: int | str, num_nodes: int) -> int:
    """Processes Lightning starts for these settings under ``strategy: auto`` (asked once per process: every
    stage's trainer and the preflight ask the same question)."""
    return int(_bare_trainer(accelerator, devices, num_nodes, "auto").world_size)


def _bare_trainer(accelerator: Any, devices: Any, num_nodes: int, strategy: Any) -> Any:
    """A ``lightning.Trainer`` of these hardware settings only (no logger, no callbacks; nothing launched), to
    ask Lightning what it makes of them (``world_size``, the accelerator, the cluster environment)."""
    # quiet: "GPU available: ..." is said by the real Trainer
    chatter = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    level = chatter.level
    chatter.setLevel(logging.WARNING)
    try:
        return L.Trainer(
            accelerator=accelerator,
            devices=devices,
            num_nodes=num_nodes,
            strategy=strategy,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
    finally:
        chatter.setLevel(level)


def check_trainer_hardware(cfg: Config) -> None:
    """Pre-flight check of ``trainer.accelerator`` / ``devices`` / ``num_nodes`` / ``strategy`` by Lightning itself.

    Builds a bare ``lightning.Trainer`` (no logger, no callbacks; nothing launched, nothing written) with those
    settings, so that a value Lightning refuses (``devices=abc``, ``accelerator=gpu`` without a GPU, an unknown
    strategy) stops the command before the run directory exists, with one line naming the key.

    Raises:
        ConfigError: ``trainer.<key>=<value>: <Lightning's reason>`` (the key Lightning's message names, else all
            four).
    """
    hw = cfg.trainer
    try:
        kw = trainer_kwargs(cfg, cfg.train.stages[0])
        trainer = _bare_trainer(*(kw[k] for k in HARDWARE_KEYS))
    except (TypeError, ValueError, RuntimeError, MisconfigurationException) as exc:
        named = [k for k in HARDWARE_KEYS if k in str(exc)] or list(HARDWARE_KEYS)
        settings = ", ".join(f"trainer.{k}={getattr(hw, k)!r}" for k in named)
        raise ConfigError(f"{settings}: refused by Lightning: {first_line(exc)}") from exc
    cores = os.cpu_count() or 1
    if type(trainer.accelerator).__name__ == "CPUAccelerator" and trainer.num_devices > cores:
        # one training process per device: 64 of them on 2 cores filled the memory (the kernel's OOM kill)
        raise ConfigError(
            f"trainer.devices={hw.devices!r}: {trainer.num_devices} CPU training processes on this machine's "
            f"{cores} cores; use at most {cores}"
        )
    environment = type(getattr(trainer.strategy, "cluster_environment", None)).__name__
    if hw.num_nodes > 1 and environment == "LightningEnvironment" and "NODE_RANK" not in os.environ:
        # without a launcher every node waits for the others forever (and ignores Ctrl-C)
        raise ConfigError(
            f"trainer.num_nodes={hw.num_nodes}: no multi-node launcher found; start one process per node with "
            "torchrun or srun (SLURM), or set MASTER_ADDR, MASTER_PORT and NODE_RANK on every node"
        )


def build_test_trainer(cfg: Config) -> Any:
    """A ``lightning.Trainer`` for ``trainer.test`` only: ``trainer.*`` hardware, no logger, no checkpoints.

    ``trainer.precision=auto`` evaluates in float32 (test metrics comparable across machines and equal to the
    float32 ONNX export's); an explicit precision (``bf16-mixed``, ...) is used as given.
    """
    kw = trainer_kwargs(cfg, StageConfig(stage=3))
    if cfg.trainer.precision == "auto":
        kw["precision"] = "32-true"
    keep = (
        "accelerator",
        "devices",
        "num_nodes",
        "strategy",
        "precision",
        "limit_test_batches",
        "enable_progress_bar",
    )
    return L.Trainer(
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
        **{k: kw[k] for k in keep},
    )
