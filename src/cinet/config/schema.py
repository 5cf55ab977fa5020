"""The configuration schema: one dataclass per section of a run config, with its defaults and value rules.

:class:`Config` is the root (``model``, ``data``, ``loss``, ``train``, ``trainer``, ``stage``, ``init_from``).
The attribute docstrings are the reference of every key; :func:`validate` holds the rules between values
(choices, ranges, the stage list). Reading YAML and ``key=value`` overrides is :mod:`cinet.config.loader`;
keys of older files are moved by :mod:`cinet.config.legacy`.

Modules never read this config: the build layer (:mod:`cinet.build`) turns it into constructor arguments.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from cinet.errors import ConfigError
from cinet.recipe import SCHEDULES, STAGES, VARIANTS, LossWeights

__all__ = [
    "PAPER_STAGES",
    "AugmentConfig",
    "Config",
    "DataConfig",
    "EvalConfig",
    "LossConfig",
    "ModelConfig",
    "StageConfig",
    "TrainConfig",
    "TrainerConfig",
    "validate",
]


@dataclass
class ModelConfig:
    """Arguments of :func:`cinet.models.build_model` (``num_classes`` comes from the dataset).

    Attributes:
        variant: A row of :data:`cinet.recipe.VARIANTS`: ``baseline | sum | fsm | lsu | sum_fsm | cinet``
            (paper Tables 1–2), ``sum_unsup`` (Fig. 7 without L_att), ``depth_only | seg_only`` (Δm).
        encoder: ``resnet18 | resnet34 | resnet50 | resnet101`` (dilated, output stride 8) or
            ``timm:<timm model name>`` (any timm backbone, :mod:`cinet.models.timm_encoder`).
        encoder_weights: ``null`` (random init), ``imagenet`` (torchvision's / timm's weights, needs network
            or cache), the path of a local state dict of the encoder's architecture, or packaged weights by
            short name (``efficientnet-lite0`` for ``timm:tf_efficientnet_lite0``, offline;
            :mod:`cinet.models.weight_maps`).
        channels: Channels after the 3x3 reduction at 1/8 resolution (SUM, first sharing stage).
        qk_channels: Channels of the SUM's Q and K.
        decoder_channels: Output channels of the three upsampling blocks.
        attention_norm: ``n`` (divide A~V by N) or ``none``.
        attention_impl: ``naive | tiled | triton | auto``.
        depth_init: Initial depth (bias of the depth head) in metres.
        zero_init_sharing: FSM/LSU allocation convs start at zero (identity at init; docs/architecture.md).
        zero_init_sum: The SUM's value projection starts at zero (identity at init; docs/architecture.md).
    """

    variant: str = "cinet"
    encoder: str = "resnet101"
    encoder_weights: str | None = None
    channels: int = 512
    qk_channels: int = 64
    decoder_channels: list[int] = field(default_factory=lambda: [256, 128, 64])
    attention_norm: str = "n"
    attention_impl: str = "auto"
    depth_init: float = 3.0
    zero_init_sharing: bool = True
    zero_init_sum: bool = True


@dataclass
class AugmentConfig:
    """Training augmentation (paper Sec. 4.2: rotation, scaling, crop, flip, colour jitter).

    Attributes:
        enabled: False: only the crop / resize, no random augmentation.
        rotation: Maximum rotation in degrees (uniform in ``[-rotation, rotation]``).
        scale: Range of the random zoom factor ``s`` (depth is divided by ``s``).
        flip: Random horizontal flip.
        color_jitter: Strength of brightness / contrast / saturation jitter (0 = off).
    """

    enabled: bool = True
    rotation: float = 5.0
    scale: list[float] = field(default_factory=lambda: [1.0, 1.5])
    flip: bool = True
    color_jitter: float = 0.4


@dataclass
class DataConfig:
    """Dataset, splits, sizes and loader settings.

    Attributes:
        name: Dataset name for :func:`cinet.data.load_dataset` (``synthetic``, ``nyuv2``, ``nyud_mt``,
            ``nyuv2_mtan``, ``sunrgbd``, ``cityscapes``, ``folder``).
        root: Dataset folder (unused by ``synthetic``).
        options: Extra keyword arguments of the dataset (e.g. ``{size: [96, 128], holes: true}``).
        length: Number of training samples of the synthetic dataset (``null``: its default).
        eval_length: Number of val/test samples of the synthetic dataset (``null``: its default).
        image_size: Resize every sample to ``(H, W)`` before augmentation (``null``: native size).
        crop_size: Random training crop ``(H, W)`` (``null``: no crop).
        eval_size: Network input size at evaluation; predictions are resized back to the ground truth
            (``null``: evaluate at the native / ``image_size`` resolution, the default policy).
        batch_size: Training batch size per device.
        eval_batch_size: Evaluation batch size per device.
        num_workers: DataLoader worker processes.
        augment: Training augmentation.
        train_split: Split used for training.
        val_split: Split used for validation during training (``null``: no validation).
        test_split: Split evaluated at the end of training (``metrics.json``).
        cache: Keep decoded samples in memory (before augmentation); for small datasets.
    """

    name: str = "synthetic"
    root: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    length: int | None = None
    eval_length: int | None = None
    image_size: list[int] | None = None
    crop_size: list[int] | None = None
    eval_size: list[int] | None = None
    batch_size: int = 8
    eval_batch_size: int = 4
    num_workers: int = 2
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    train_split: str = "train"
    val_split: str | None = "val"
    test_split: str = "test"
    cache: bool = False


@dataclass
class LossConfig(LossWeights):
    """Loss weights and options (paper Sec. 3.4, Eq. 9–13; defaults: Sec. 4.2).

    The weights ``alpha`` (L_depth), ``beta`` (L_con), ``gamma`` (L_seg), ``lam`` (L_pair inside L_depth) and
    ``mu`` (L_norm inside L_depth) are the fields of :class:`cinet.recipe.LossWeights`, with its defaults.

    Attributes:
        num_pairs: Pixel pairs per image of L_pair.
        class_weights: ``batch`` (Eq. 12 weights from each batch), ``dataset`` (Eq. 12 weights from the
            whole training split, computed once) or ``none`` (plain cross entropy).
    """

    num_pairs: int = 500
    class_weights: str = "batch"


@dataclass
class StageConfig:
    """One training stage (paper Sec. 4.2).

    Attributes:
        stage: 1 (ideal attention map, L_depth + L_seg), 2 (+ learned map and L_att), 3 (all losses).
        epochs: Number of epochs (``-1``: no epoch limit, with ``max_steps``).
        max_steps: Stop after this many optimizer steps (``-1``: run all ``epochs``).
        lr: Learning rate of the new layers (the encoder gets ``lr * train.encoder_lr_mult``).
        poly_power: Poly decay ``lr * (1 - step / total) ** power`` per step; 0 = constant.
    """

    stage: int = 1
    epochs: int = 1
    max_steps: int = -1
    lr: float = 6e-4
    poly_power: float = 0.0


#: The paper's NYU-v2 schedule (Sec. 4.2).
PAPER_STAGES: tuple[tuple[int, int, float, float], ...] = (
    (1, 300, 6e-4, 0.0),
    (2, 200, 2e-4, 0.0),
    (3, 200, 2e-4, 0.9),
)


def _paper_stages() -> list[StageConfig]:
    return [StageConfig(stage=s, epochs=e, lr=lr, poly_power=p) for s, e, lr, p in PAPER_STAGES]


@dataclass
class EvalConfig:
    """Evaluation protocol (overrides of the dataset's common protocol, see :class:`cinet.metrics.EvalProtocol`).

    Attributes:
        reduction: ``per_image`` (mean of per-image metrics) or ``pooled`` (over all valid pixels).
        crop: ``default`` (the dataset's protocol, e.g. NYU's Eigen crop), ``none``, ``eigen`` or
            ``[top, bottom, left, right]``.
        max_depth: Depth cap in metres (``null``: the dataset's).
        min_depth: Smallest valid depth in metres (``null``: the dataset's).
        miou: mIoU over the classes ``present`` in ground truth or prediction, or over ``all`` classes.
        protocol: ``dataset`` (the dataset's protocol with the keys above) or a named protocol that fixes
            crop, depth range, reduction and mIoU averaging (``paper``, ``mtl``:
            :data:`cinet.metrics.protocols.PRESETS`; the keys above are then not used).
        flip: Average the predictions of the image and its horizontal mirror (test-time augmentation).
    """

    reduction: str = "per_image"
    crop: Any = "default"
    max_depth: float | None = None
    min_depth: float | None = None
    miou: str = "present"
    protocol: str = "dataset"
    flip: bool = False


@dataclass
class TrainConfig:
    """Optimiser, schedule, logging and checkpointing settings.

    Attributes:
        seed: Global seed (model init, data order, augmentation).
        stages: The stages to run, in order (default: the paper's three NYU stages).
        schedule: What each stage trains (:data:`cinet.recipe.SCHEDULES`): ``paper`` (default; ideal
            map in stage 1), ``learned`` (the SUM learns its map from stage 1, with L_att) or ``handover``
            (stage 2 mixes the ideal and the learned map, the ideal weight falling from 1 to 0).
        handover_epochs: Epochs of stage 2 over which ``handover`` moves from the ideal to the learned map.
        momentum: SGD momentum.
        weight_decay: SGD weight decay.
        encoder_lr_mult: Learning-rate factor of the pretrained encoder.
        sharing_lr_mult: Learning-rate factor of the sharing modules (FSM / LSU; the paper's value is 1: they
            are new layers).
        grad_clip: Clip the gradient norm to this value (0 = off).
        log_every: Log training scalars every N steps (and, when stderr is not a terminal, write a progress line).
        val_every: Validate every N epochs (0 = never during training).
        checkpoint_every: Save ``stageN/last.ckpt`` every N steps (0 = at the end of every epoch only).
        limit_train_batches: Lightning's limit (fraction or count) per epoch.
        limit_val_batches: Lightning's limit for validation.
        limit_test_batches: Lightning's limit for the final evaluation.
        max_nonfinite: Consecutive non-finite steps (skipped) tolerated before training stops.
        num_vis: Images in the TensorBoard grid at each validation (0 = none).
        eval: Evaluation protocol.
    """

    seed: int = 0
    stages: list[StageConfig] = field(default_factory=_paper_stages)
    schedule: str = "paper"
    handover_epochs: float = 2.0
    momentum: float = 0.9
    weight_decay: float = 5e-4
    encoder_lr_mult: float = 0.1
    sharing_lr_mult: float = 1.0
    grad_clip: float = 0.0
    log_every: int = 10
    val_every: int = 1
    checkpoint_every: int = 0
    limit_train_batches: int | float = 1.0
    limit_val_batches: int | float = 1.0
    limit_test_batches: int | float = 1.0
    max_nonfinite: int = 10
    num_vis: int = 4
    eval: EvalConfig = field(default_factory=EvalConfig)


@dataclass
class TrainerConfig:
    """Hardware and precision: how Lightning's Trainer runs (``trainer.*`` keys).

    Attributes:
        precision: ``auto`` (default: training in bf16 autocast where this machine's matrix units run it
            faster, float32 elsewhere, :func:`cinet.utils.precision.resolve_precision`; test evaluation in
            float32), ``32``, ``bf16-mixed`` or ``16-mixed``.
        accelerator: Lightning accelerator (``auto``, ``cpu``, ``gpu``).
        devices: Lightning devices (``auto``, a count, or a list like ``[0,1]`` as a string).
        num_nodes: Number of nodes (SLURM / torchrun set the rest).
        strategy: Lightning strategy (``auto``, ``ddp``, ``ddp_spawn``, ...).
        channels_last: Model and inputs in channels-last memory format.
        deterministic: ``torch.use_deterministic_algorithms`` via Lightning.
        progress_bar: Show progress: Lightning's bar on a terminal, plain lines (step, losses, speed) otherwise.
        profiler: ``none`` (default), or one of Lightning's profilers, each stage's report written to
            ``RUN_DIR/profile/fit-stage<N>.txt``: ``simple`` (wall time per training hook: the step, the data
            fetch, validation, checkpointing), ``advanced`` (cProfile per hook), ``pytorch`` (``torch.profiler``
            operator table of a few steps, and a Chrome trace).
    """

    precision: str = "auto"
    accelerator: str = "auto"
    devices: str = "auto"
    num_nodes: int = 1
    strategy: str = "auto"
    channels_last: bool = False
    deterministic: bool = False
    progress_bar: bool = True
    profiler: str = "none"


@dataclass
class Config:
    """A full run configuration.

    Attributes:
        name: Run name (used for the default run directory ``runs/<name>-<time>``).
        model: Model settings.
        data: Data settings.
        loss: Loss settings.
        train: Optimiser / schedule / logging settings.
        trainer: Hardware, precision and distribution (Lightning Trainer).
        stage: Run only this stage (1, 2 or 3) of ``train.stages`` (``null``: all).
        init_from: Checkpoint whose model weights initialise the first stage that runs (``null``: the
            previous stage's checkpoint in the run directory, or the encoder weights).
    """

    name: str = "cinet"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    stage: int | None = None
    init_from: str | None = None


# ------------------------------------------------------------------------------------------------ value rules

#: Keys whose value must be one of a fixed list.
CHOICES: dict[str, tuple[str, ...]] = {
    # not "bf16-true" / "64-true": Lightning casts the weights but not cinet's batches (a dtype-mismatch traceback)
    "trainer.precision": ("auto", "32", "32-true", "bf16-mixed", "16-mixed"),
    "train.eval.reduction": ("per_image", "pooled"),
    "train.eval.miou": ("present", "all"),
    "train.eval.protocol": ("dataset", "paper", "mtl"),  # cinet.metrics.protocols.PROTOCOL_NAMES
    "loss.class_weights": ("batch", "dataset", "none"),
    "train.schedule": tuple(SCHEDULES),
    "model.variant": tuple(VARIANTS),
    "trainer.profiler": ("none", "simple", "advanced", "pytorch"),  # cinet.build.builders.PROFILERS
}


#: Lower bounds of numeric keys: key (``*`` for any list index) -> ``(bound, strict)``: the value must be
#: ``> bound`` (strict) or ``>= bound``. Every float of the config must also be finite (NaN, inf are refused).
#: The model's sizes (``model.channels``, ``model.depth_init``, ...) are checked by the model's builder, which
#: names the key too (:func:`cinet.build.builders.build_model`, before a run directory is created).
MINIMUMS: dict[str, tuple[float, bool]] = {
    "data.length": (0, False),
    "data.eval_length": (0, False),
    "data.batch_size": (1, False),
    "data.eval_batch_size": (1, False),
    "data.num_workers": (0, False),  # torch's DataLoader
    "data.augment.rotation": (0.0, False),
    "data.augment.color_jitter": (0.0, False),  # torchvision's ColorJitter
    **{f"loss.{k}": (0.0, False) for k in ("alpha", "beta", "gamma", "lam", "mu")},
    "loss.num_pairs": (0, False),
    "train.stages.*.lr": (0.0, True),
    "train.stages.*.poly_power": (0.0, False),
    "train.seed": (0, False),  # numpy / Lightning seeds: 0 .. 2**32 - 1
    "train.handover_epochs": (0.0, False),
    "train.momentum": (0.0, False),  # torch.optim.SGD
    "train.weight_decay": (0.0, False),  # torch.optim.SGD
    "train.encoder_lr_mult": (0.0, False),
    "train.sharing_lr_mult": (0.0, False),
    "train.grad_clip": (0.0, False),
    "train.log_every": (1, False),
    "train.val_every": (0, False),
    "train.checkpoint_every": (0, False),
    "train.limit_train_batches": (0, False),  # Lightning: a fraction in [0, 1] or a count
    "train.limit_val_batches": (0, False),
    "train.limit_test_batches": (0, False),
    "train.max_nonfinite": (0, False),
    "train.num_vis": (0, False),
    "train.eval.max_depth": (0.0, True),
    "train.eval.min_depth": (0.0, True),  # the log metrics need depth > 0
    "trainer.num_nodes": (1, False),
}

#: Largest ``train.seed``: the data module seeds numpy with ``train.seed + 1000 * stage`` (< 2**32).
MAX_SEED = 2**31 - 1

#: Keys that name a file or folder (or ``null``): an empty string would silently mean the current folder.
PATH_KEYS = ("data.root", "init_from", "model.encoder_weights")


def _numbers(obj: Any, key: str) -> Iterator[tuple[str, int | float]]:
    """Every number (not bool) of ``obj`` with its dotted key: through dataclasses, lists and dicts."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for f in dataclasses.fields(obj):
            yield from _numbers(getattr(obj, f.name), f"{key}.{f.name}" if key else f.name)
    elif isinstance(obj, list | tuple):
        for i, item in enumerate(obj):
            yield from _numbers(item, f"{key}.{i}")
    elif isinstance(obj, Mapping):
        for k, item in obj.items():
            yield from _numbers(item, f"{key}.{k}")
    elif isinstance(obj, int | float) and not isinstance(obj, bool):
        yield key, obj


def _rule(key: str) -> str:
    """The :data:`MINIMUMS` key of a dotted key (list indices -> ``*``)."""
    return ".".join("*" if part.isdigit() else part for part in key.split("."))


def _number_problem(key: str, value: int | float) -> str | None:
    """What is wrong with the number ``value`` of ``key`` (None: nothing): not finite, below its minimum."""
    if isinstance(value, float) and not math.isfinite(value):
        return f"must be a finite number, got {value}"
    rule = MINIMUMS.get(_rule(key))
    if rule is not None:
        bound, strict = rule
        if value < bound or (strict and value == bound):
            return f"must be {'>' if strict else '>='} {bound:g}, got {value!r}"
    if key == "train.seed" and value > MAX_SEED:
        return f"must be in 0..{MAX_SEED}, got {value}"
    if key.startswith("train.limit_") and isinstance(value, float) and value > 1 and not value.is_integer():
        return f"a fraction must be in [0, 1] (or a count of batches), got {value!r}"  # Lightning's rule
    return None


def validate(cfg: Config, source: str | None = None, sources: Mapping[str, str | None] | None = None) -> None:
    """Check the rules between values that the types alone do not express.

    Every number of the config (every field of the dataclasses, the ``train.stages`` list, ``data.options``)
    must be finite, and at least its :data:`MINIMUMS` bound; then the choices (:data:`CHOICES`), the stage list,
    sizes and depth ranges are checked.

    Args:
        cfg: The merged config.
        source: File name for the messages (None: no file).
        sources: Dotted key -> where its value was set (a file of the ``defaults`` chain, the checkpoint's
            config, ``command-line override``); a message about a key names its source, else ``source``.

    Raises:
        ConfigError: One line naming the key (and ``source``) of the first value that breaks a rule.
    """
    where = f"{source}: " if source else ""

    def at(key: str) -> str:
        known = sources or {}
        holders = [k for k in known if key == k or key.startswith(k + ".")]  # the key, or a value holding it
        parts = [k for k in known if k.startswith(key + ".")]  # else the last-set part of it
        found = max(holders, key=len) if holders else (parts[-1] if parts else None)
        if found is None:
            return where
        src = known[found]
        return f"{src}: " if src else ""

    def fail(key: str, what: str) -> ConfigError:
        return ConfigError(f"{at(key)}config key '{key}': {what}")

    for key, choices in CHOICES.items():
        obj: Any = cfg
        for p in key.split("."):
            obj = getattr(obj, p)
        if obj not in choices:
            raise fail(key, f"{obj!r} is not one of {', '.join(choices)}")
    for key, value in _numbers(cfg, ""):
        problem = _number_problem(key, value)
        if problem is not None:
            raise fail(key, problem)
    for key in PATH_KEYS:
        obj = cfg
        for p in key.split("."):
            obj = getattr(obj, p)
        if isinstance(obj, str) and not obj.strip():
            raise fail(key, "empty path (null for none)")
    if not cfg.train.stages:
        raise fail("train.stages", "at least one stage is needed")
    seen = set()
    for i, st in enumerate(cfg.train.stages):
        if st.stage not in STAGES:
            raise fail(f"train.stages.{i}.stage", f"must be 1, 2 or 3, got {st.stage}")
        if st.stage in seen:
            raise fail(f"train.stages.{i}.stage", f"stage {st.stage} listed twice")
        seen.add(st.stage)
        if st.max_steps < -1 or st.max_steps == 0:
            raise fail(f"train.stages.{i}.max_steps", f"must be >= 1 (or -1: all epochs), got {st.max_steps}")
        if st.epochs < 1 and not (st.epochs == -1 and st.max_steps > 0):
            raise fail(
                f"train.stages.{i}.epochs",
                f"must be >= 1 (or -1 with max_steps > 0: no epoch limit), got {st.epochs}",
            )
    if cfg.stage is not None and cfg.stage not in seen:
        raise fail("stage", f"stage {cfg.stage} is not in train.stages ({sorted(seen)})")
    for key in ("image_size", "crop_size", "eval_size"):
        v = getattr(cfg.data, key)
        if v is not None and (len(v) != 2 or min(v) < 8):
            raise fail(f"data.{key}", f"expected [H, W] (>= 8), got {v}")
    scale = cfg.data.augment.scale
    if len(scale) != 2 or not 0 < scale[0] <= scale[1]:
        raise fail("data.augment.scale", f"expected [min, max] > 0, got {scale}")
    ev = cfg.train.eval
    if ev.min_depth is not None and ev.max_depth is not None and ev.max_depth <= ev.min_depth:
        raise fail(
            "train.eval.max_depth", f"must be > train.eval.min_depth ({ev.min_depth:g}), got {ev.max_depth:g}"
        )
