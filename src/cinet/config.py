"""Typed run configuration: dataclasses loaded from YAML plus ``key=value`` overrides.

The schema is a tree of dataclasses (:class:`Config` at the root). A YAML file may name a base file with
``defaults: base.yaml`` (or a list of them, relative to the file), which is loaded first and then updated by
the file's own keys. Overrides use dotted keys (``model.channels=64``, ``train.stages.0.epochs=2``,
``data.crop_size=[64,80]``); values are parsed as YAML.

Every mistake is a :class:`~cinet.errors.ConfigError` with one line naming the key (and the file)::

    unknown config key 'model.chanels' (did you mean 'model.channels'?)
    config key 'train.seed': expected int, got 'abc'

Modules never read this config: the builders in :mod:`cinet.engine` turn it into constructor arguments.
"""

from __future__ import annotations

import dataclasses
import difflib
import subprocess
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cinet.errors import ConfigError

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
    "config_to_dict",
    "git_revision",
    "load_config",
    "parse_overrides",
    "save_config",
]


@dataclass
class ModelConfig:
    """Arguments of :func:`cinet.models.build_model` (``num_classes`` comes from the dataset).

    Attributes:
        variant: A row of :data:`cinet.models.VARIANTS`: ``baseline | sum | fsm | lsu | sum_fsm | cinet``
            (paper Tables 1–2), ``sum_unsup`` (Fig. 7 without L_att), ``depth_only | seg_only`` (Δm).
        encoder: ``resnet18 | resnet34 | resnet50 | resnet101`` (dilated, output stride 8).
        encoder_weights: ``null`` (random init), ``imagenet`` (torchvision weights, needs network or cache)
            or the path of a torchvision ResNet state dict.
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
        name: Dataset name for :func:`cinet.data.load_dataset` (``synthetic``, ``nyuv2``, ``sunrgbd``,
            ``cityscapes``, ``folder``).
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
class LossConfig:
    """Loss weights and options (paper Sec. 3.4, Eq. 9–13; defaults: Sec. 4.2).

    Attributes:
        alpha: Weight of L_depth.
        beta: Weight of L_con.
        gamma: Weight of L_seg.
        lam: Weight of L_pair inside L_depth.
        mu: Weight of L_norm inside L_depth.
        num_pairs: Pixel pairs per image of L_pair.
        class_weights: ``batch`` (Eq. 12 weights from each batch), ``dataset`` (Eq. 12 weights from the
            whole training split, computed once) or ``none`` (plain cross entropy).
    """

    alpha: float = 1.0
    beta: float = 5.0
    gamma: float = 0.3
    lam: float = 1.0
    mu: float = 5.0
    num_pairs: int = 500
    class_weights: str = "batch"


@dataclass
class StageConfig:
    """One training stage (paper Sec. 4.2).

    Attributes:
        stage: 1 (ideal attention map, L_depth + L_seg), 2 (+ learned map and L_att), 3 (all losses).
        epochs: Number of epochs.
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
    """

    reduction: str = "per_image"
    crop: Any = "default"
    max_depth: float | None = None
    min_depth: float | None = None


@dataclass
class TrainConfig:
    """Optimiser, schedule, logging and checkpointing settings.

    Attributes:
        seed: Global seed (model init, data order, augmentation).
        stages: The stages to run, in order (default: the paper's three NYU stages).
        schedule: What each stage trains (:data:`cinet.engine.stages.SCHEDULES`): ``paper`` (default; ideal
            map in stage 1), ``learned`` (the SUM learns its map from stage 1, with L_att) or ``handover``
            (stage 2 mixes the ideal and the learned map, the ideal weight falling from 1 to 0).
        handover_epochs: Epochs of stage 2 over which ``handover`` moves from the ideal to the learned map.
        momentum: SGD momentum.
        weight_decay: SGD weight decay.
        encoder_lr_mult: Learning-rate factor of the pretrained encoder.
        grad_clip: Clip the gradient norm to this value (0 = off).
        log_every: Log training scalars every N steps.
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
        precision: ``32``, ``bf16-mixed`` or ``16-mixed``.
        accelerator: Lightning accelerator (``auto``, ``cpu``, ``gpu``).
        devices: Lightning devices (``auto``, a count, or a list like ``[0,1]`` as a string).
        num_nodes: Number of nodes (SLURM / torchrun set the rest).
        strategy: Lightning strategy (``auto``, ``ddp``, ``ddp_spawn``, ...).
        channels_last: Model and inputs in channels-last memory format.
        deterministic: ``torch.use_deterministic_algorithms`` via Lightning.
        progress_bar: Show Lightning's progress bar.
    """

    precision: str = "32"
    accelerator: str = "auto"
    devices: str = "auto"
    num_nodes: int = 1
    strategy: str = "auto"
    channels_last: bool = False
    deterministic: bool = False
    progress_bar: bool = True


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


# ------------------------------------------------------------------------------------------------ validation

_CHOICES: dict[str, tuple[str, ...]] = {
    "trainer.precision": ("32", "32-true", "bf16-mixed", "16-mixed", "bf16-true", "64", "64-true"),
    "train.eval.reduction": ("per_image", "pooled"),
    "loss.class_weights": ("batch", "dataset", "none"),
    "train.schedule": ("paper", "learned", "handover"),
}


def _type_hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _did_you_mean(key: str, candidates: list[str], prefix: str) -> str:
    close = difflib.get_close_matches(key, candidates, n=1, cutoff=0.6)
    return f" (did you mean '{prefix}{close[0]}'?)" if close else ""


def _unknown_key(prefix: str, key: str, cls: type, source: str | None) -> ConfigError:
    names = [f.name for f in dataclasses.fields(cls)]
    hint = _did_you_mean(str(key), names, prefix)
    where = f"{source}: " if source else ""
    return ConfigError(f"{where}unknown config key '{prefix}{key}'{hint}")


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        (arg,) = typing.get_args(tp) or (Any,)
        return f"list of {_type_name(arg)}"
    if origin is dict:
        return "mapping"
    if tp is type(None):
        return "null"
    if tp is Any:
        return "any"
    return getattr(tp, "__name__", str(tp))


def _bad_type(key: str, tp: Any, value: Any, source: str | None) -> ConfigError:
    where = f"{source}: " if source else ""
    return ConfigError(f"{where}config key '{key}': expected {_type_name(tp)}, got {value!r}")


def _coerce(key: str, tp: Any, value: Any, source: str | None) -> Any:
    """Check ``value`` against the annotation ``tp`` and convert it (int -> float, number -> str, ...)."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        args = typing.get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise _bad_type(key, tp, value, source)
        # exact type first (so that 1 stays an int in ``int | float``), then conversions
        for arg in args:
            if arg is not type(None) and _exact(arg, value):
                return _coerce(key, arg, value, source)
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(key, arg, value, source)
            except ConfigError:
                continue
        raise _bad_type(key, tp, value, source)
    if value is None:
        raise _bad_type(key, tp, value, source)
    if origin is list:
        (arg,) = typing.get_args(tp) or (Any,)
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise _bad_type(key, tp, value, source)
        return [_coerce(f"{key}.{i}", arg, v, source) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise _bad_type(key, tp, value, source)
        return dict(value)
    if _is_dataclass_type(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise _bad_type(key, tp, value, source)
        obj = tp()
        _update_dataclass(obj, value, f"{key}.", source)
        return obj
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _bad_type(key, tp, value, source)
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise _bad_type(key, tp, value, source)
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)  # YAML 1.1 reads "6e-4" as a string
            except ValueError:
                pass
        raise _bad_type(key, tp, value, source)
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        raise _bad_type(key, tp, value, source)
    return value


def _exact(tp: Any, value: Any) -> bool:
    if tp is Any:
        return True
    origin = typing.get_origin(tp)
    if origin is list:
        return isinstance(value, list)
    if origin is dict:
        return isinstance(value, dict)
    if tp is float:
        return isinstance(value, float)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(tp, type) and isinstance(value, tp)


#: Fields of :class:`DataConfig` that belong to one dataset: a later layer (YAML file, override) that names
#: another dataset starts them from their defaults, so that settings of the dataset stored in a checkpoint or
#: run directory never leak into the new one (``data.options.size`` of ``synthetic`` is no ``nyuv2`` option).
DATASET_KEYS = ("root", "options", "length", "eval_length")


def _switch_dataset(data: DataConfig, name: Any) -> None:
    """Reset the :data:`DATASET_KEYS` of ``data`` when ``name`` names another dataset than ``data.name``."""
    if name == data.name:
        return
    fresh = DataConfig()
    for key in DATASET_KEYS:
        setattr(data, key, getattr(fresh, key))


def _update_dataclass(obj: Any, values: dict[str, Any], prefix: str, source: str | None) -> None:
    """Recursively update dataclass ``obj`` from a nested dict, checking keys and types."""
    if not isinstance(values, dict):
        raise _bad_type(prefix.rstrip("."), type(obj), values, source)
    if isinstance(obj, DataConfig) and "name" in values:
        _switch_dataset(obj, values["name"])  # before the layer's own dataset keys are applied
    hints = _type_hints(type(obj))
    for key, value in values.items():
        if key not in hints:
            raise _unknown_key(prefix, key, type(obj), source)
        _assign(obj, key, hints[key], value, prefix, source)


def _assign(obj: Any, key: str, tp: Any, value: Any, prefix: str, source: str | None) -> None:
    """Set field ``key`` of dataclass ``obj``: merge a dict into a nested dataclass, else coerce and set."""
    current = getattr(obj, key)
    if _is_dataclass_type(tp) and isinstance(value, dict) and current is not None:
        _update_dataclass(current, value, f"{prefix}{key}.", source)
    else:
        setattr(obj, key, _coerce(f"{prefix}{key}", tp, value, source))


def _set_dotted(cfg: Config, key: str, value: Any, source: str | None = None) -> None:
    """Set one dotted key (list items by index: ``train.stages.0.lr``)."""
    parts = key.split(".")
    obj: Any = cfg
    prefix = ""
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(obj, list):
            try:
                idx = int(part)
                _ = obj[idx]
            except (ValueError, IndexError):
                where = f"{source}: " if source else ""
                raise ConfigError(
                    f"{where}config key '{prefix}{part}': list index out of range (has {len(obj)} entries)"
                ) from None
            if last:
                item_tp = type(obj[idx])
                obj[idx] = _coerce(f"{prefix}{part}", item_tp, value, source)
                return
            obj = obj[idx]
        elif dataclasses.is_dataclass(obj):
            hints = _type_hints(type(obj))
            if part not in hints:
                raise _unknown_key(prefix, part, type(obj), source)
            if last:
                if isinstance(obj, DataConfig) and part == "name":
                    _switch_dataset(obj, value)
                _assign(obj, part, hints[part], value, prefix, source)
                return
            nxt = getattr(obj, part)
            if nxt is None or isinstance(nxt, dict):
                # options dicts (free-form) and unset optionals: write the rest of the key as nested dict
                if typing.get_origin(hints[part]) is dict or isinstance(nxt, dict):
                    target = nxt if nxt is not None else {}
                    d = target
                    for p in parts[i + 1 : -1]:
                        d = d.setdefault(p, {})
                    d[parts[-1]] = value
                    setattr(obj, part, target)
                    return
                raise ConfigError(f"config key '{prefix}{part}' is null; set it as a whole")
            obj = nxt
        else:
            raise ConfigError(f"config key '{prefix.rstrip('.')}' has no sub-key '{part}'")
        prefix += part + "."


def _validate(cfg: Config, source: str | None = None) -> None:
    where = f"{source}: " if source else ""
    for key, choices in _CHOICES.items():
        obj: Any = cfg
        for p in key.split("."):
            obj = getattr(obj, p)
        if obj not in choices:
            raise ConfigError(f"{where}config key '{key}': {obj!r} is not one of {', '.join(choices)}")
    if not cfg.train.stages:
        raise ConfigError(f"{where}config key 'train.stages': at least one stage is needed")
    seen = set()
    for i, st in enumerate(cfg.train.stages):
        if st.stage not in (1, 2, 3):
            raise ConfigError(
                f"{where}config key 'train.stages.{i}.stage': must be 1, 2 or 3, got {st.stage}"
            )
        if st.stage in seen:
            raise ConfigError(f"{where}config key 'train.stages.{i}.stage': stage {st.stage} listed twice")
        seen.add(st.stage)
        if st.epochs < 1 and st.max_steps <= 0:
            raise ConfigError(f"{where}config key 'train.stages.{i}.epochs': must be >= 1, got {st.epochs}")
        if st.lr <= 0:
            raise ConfigError(f"{where}config key 'train.stages.{i}.lr': must be > 0, got {st.lr}")
        if st.poly_power < 0:
            raise ConfigError(f"{where}config key 'train.stages.{i}.poly_power': must be >= 0")
    if cfg.stage is not None and cfg.stage not in seen:
        raise ConfigError(
            f"{where}config key 'stage': stage {cfg.stage} is not in train.stages ({sorted(seen)})"
        )
    for key in ("image_size", "crop_size", "eval_size"):
        v = getattr(cfg.data, key)
        if v is not None and (len(v) != 2 or min(v) < 8):
            raise ConfigError(f"{where}config key 'data.{key}': expected [H, W] (>= 8), got {v}")
    if len(cfg.data.augment.scale) != 2 or not 0 < cfg.data.augment.scale[0] <= cfg.data.augment.scale[1]:
        raise ConfigError(
            f"{where}config key 'data.augment.scale': expected [min, max] > 0, got {cfg.data.augment.scale}"
        )
    if cfg.data.batch_size < 1 or cfg.data.eval_batch_size < 1:
        raise ConfigError(f"{where}config key 'data.batch_size': must be >= 1")
    if cfg.train.max_nonfinite < 0:
        raise ConfigError(f"{where}config key 'train.max_nonfinite': must be >= 0")


# ------------------------------------------------------------------------------------------------ loading


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> list[tuple[dict[str, Any], str]]:
    """The YAML mappings of ``path`` and its ``defaults`` chain, base first, with their file names."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    if path.resolve() in seen:
        raise ConfigError(f"{path}: circular 'defaults'")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        loc = f" (line {mark.line + 1})" if mark is not None else ""
        raise ConfigError(f"{path}: invalid YAML{loc}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    out: list[tuple[dict[str, Any], str]] = []
    defaults = data.pop("defaults", None)
    if defaults is not None:
        for base in [defaults] if isinstance(defaults, str) else list(defaults):
            out.extend(_read_yaml(path.parent / str(base), (*seen, path.resolve())))
    out.append((data, str(path)))
    return out


def parse_overrides(overrides: list[str] | tuple[str, ...]) -> list[tuple[str, Any]]:
    """``["a.b=1", "c=[1,2]"]`` -> ``[("a.b", 1), ("c", [1, 2])]`` (values parsed as YAML)."""
    out = []
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key=value")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key:
            raise ConfigError(f"override {item!r}: empty key")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        out.append((key, value))
    return out


#: Keys that lived under ``train`` before the ``trainer`` section existed (configs and checkpoints of that time).
_LEGACY_TRAINER_KEYS = (
    "precision",
    "accelerator",
    "devices",
    "num_nodes",
    "strategy",
    "channels_last",
    "deterministic",
    "progress_bar",
)


def _migrate_legacy(data: dict[str, Any]) -> dict[str, Any]:
    """Move ``train.<hardware key>`` of older configs / checkpoints to ``trainer.<key>`` (a copy)."""
    train = data.get("train")
    if not isinstance(train, dict) or not any(k in train for k in _LEGACY_TRAINER_KEYS):
        return data
    data = dict(data)
    train = dict(train)
    trainer = dict(data.get("trainer") or {})
    for key in _LEGACY_TRAINER_KEYS:
        if key in train:
            trainer.setdefault(key, train.pop(key))
    data["train"], data["trainer"] = train, trainer
    return data


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    *,
    base: dict[str, Any] | None = None,
) -> Config:
    """Build a :class:`Config`: defaults <- ``base`` dict <- YAML file (with its defaults chain) <- overrides.

    A layer that names another dataset (``data.name``) drops the earlier layers' :data:`DATASET_KEYS`
    (root, options, lengths), so a stored config (checkpoint, run directory) can be pointed at another dataset.

    Args:
        path: YAML file, or None for the built-in defaults.
        overrides: ``key=value`` strings.
        base: A config dict applied first (e.g. the one stored in a checkpoint).

    Returns:
        The validated config.

    Raises:
        ConfigError: Missing file, invalid YAML, unknown key, wrong type or inconsistent values.
    """
    cfg = Config()
    if base:
        _update_dataclass(cfg, _migrate_legacy(dict(base)), "", "checkpoint config")
    if path is not None:
        for data, source in _read_yaml(Path(path)):
            data = _migrate_legacy(data)
            if "train" in data and isinstance(data["train"], dict) and "stages" in data["train"]:
                # a stage list replaces the default list as a whole
                cfg.train.stages = []
            _update_dataclass(cfg, data, "", source)
    parsed = parse_overrides(list(overrides))
    # a dataset switch first: the overrides given with it (data.root=...) belong to the new dataset
    parsed.sort(key=lambda kv: kv[0] not in ("data", "data.name"))
    for key, value in parsed:
        _set_dotted(cfg, key, value)
    _validate(cfg, str(path) if path is not None else None)
    return cfg


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """Plain nested dict (YAML / JSON / checkpoint ready)."""
    return dataclasses.asdict(cfg)


def git_revision(repo: str | Path | None = None) -> str | None:
    """``git describe --always --dirty`` of the source tree (None when not a git checkout)."""
    where = Path(repo) if repo is not None else Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--abbrev=12"],
            cwd=where,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def save_config(path: str | Path, cfg: Config, git_rev: str | None = None) -> None:
    """Write the merged config as YAML (atomically), with the git revision in a ``git`` comment and key.

    The file loads back with :func:`load_config` (the ``git`` line is a comment).
    """
    from cinet.utils.io import atomic_write_text

    text = yaml.safe_dump(config_to_dict(cfg), sort_keys=False, default_flow_style=None)
    header = f"# cinet run config (merged)\n# git: {git_rev or 'unknown'}\n"
    atomic_write_text(path, header + text)


def read_saved_git(path: str | Path) -> str | None:
    """The git revision recorded by :func:`save_config` in ``path`` (None if absent)."""
    for line in Path(path).read_text(encoding="utf-8").splitlines()[:5]:
        if line.startswith("# git: "):
            rev = line[len("# git: ") :].strip()
            return None if rev == "unknown" else rev
    return None
