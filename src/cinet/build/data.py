"""Datasets and the data module from ``data.*``: the only code that reads :class:`cinet.config.DataConfig`.

The data readers (:func:`cinet.data.load_dataset`, :func:`cinet.data.dataset_info` and the dataset classes) take
plain arguments and raise :class:`ValueError` / :class:`TypeError` whose message starts with the argument's name
(``size: ...``, ``split: unknown split ...``, ``name: unknown dataset ...``); :func:`dataset_keys` turns such an
error into a one-line :class:`cinet.errors.ConfigError` naming the setting (``data.size: ...``,
``data.name: ...``). A dataset option is named ``data.<option>``, as the messages always did (the setting
itself is ``data.options.<option>``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from cinet.checks.data import EVAL_SIZE_HINT, TRAIN_SIZE_HINT
from cinet.config import DataConfig
from cinet.data import DATASETS, DatasetInfo, dataset_class, dataset_info, load_dataset
from cinet.data.transforms import Compose, Resize, build_transforms
from cinet.engine.datamodule import CachedDataset, CINetDataModule, DataSettings
from cinet.errors import CinetError, ConfigError, DataError, SplitNotFoundError

__all__ = [
    "build_dataset",
    "dataset_info_from_config",
    "dataset_keys",
    "dataset_options",
    "depth_setting",
    "make_datamodule",
    "split_dataset",
]

#: ``<argument>: <what>``; a YAML key without a space after its colon reads ``num_classes:40``.
_ARGUMENT = re.compile(r"^(?P<name>[A-Za-z_]\w*)(?P<value>:\S*)?$")


@contextlib.contextmanager
def dataset_keys(
    name: str, options: Iterable[str] = (), *, length_key: str = "data.length"
) -> Iterator[None]:
    """Turn a data reader's ``ValueError`` / ``TypeError`` ``"<argument>: <what>"`` into a :class:`ConfigError`.

    ``name`` -> ``data.name``, ``root`` -> ``data.root``, ``length`` -> ``length_key`` (the synthetic split's
    ``data.length`` / ``data.eval_length``), a dataset option -> ``data.options.<option>`` (its real key); an unknown split keeps the
    dataset's name (``synthetic: unknown split 'dev' ...``: the caller names its ``data.*_split``).

    Args:
        name: The dataset's name (``data.name``).
        options: The option names given (``data.options`` keys); the dataset's own options are known too.
        length_key: The setting of the synthetic dataset's ``length``.

    Raises:
        ConfigError: One line naming the setting; errors about anything else pass unchanged.
    """
    try:
        yield
    except (ValueError, TypeError) as exc:
        argument, sep, what = str(exc).partition(": ")
        match = _ARGUMENT.match(argument) if sep else None
        if match is None:
            raise
        known = {"name", "root", "split", "length", *options}
        if name in DATASETS:
            known.update(dataset_class(name).OPTIONS)
        if argument not in known:
            raise
        if argument == "split":
            raise ConfigError(f"{name}: {what}") from exc
        key = {"name": "data.name", "root": "data.root", "length": length_key}.get(
            argument, f"data.options.{argument}"
        )
        if match["value"] and "YAML needs a space" in what:
            what += f" (or data.options.{match['name']}={match['value'][1:]})"
        raise ConfigError(f"{key}: {what}") from exc


def depth_setting(name: str, key: str = "data.options.depth_scale") -> str:
    """The setting that converts the stored depth of dataset ``name`` to metres, for the depth-unit warning.

    Args:
        name: Dataset name.
        key: How the caller's user sets the folder reader's ``depth_scale`` (the config key; ``cinet data
            preview``'s ``depth_scale=N`` option).
    """
    if name == "folder":
        return f"{key} (depth PNG units per metre: 1000 = millimetres, 5000 = NYU exports)"
    return f"the depth files of dataset {name!r}"


def dataset_options(cfg: DataConfig, *, train: bool) -> dict[str, Any]:
    """The dataset's keyword options of ``cfg``: ``data.options`` plus the synthetic ``length`` of the split.

    Args:
        cfg: Data settings.
        train: The split is the training split (``data.length``; else ``data.eval_length``), whatever
            transform it is built with.
    """
    options = dict(cfg.options)
    if cfg.name == "synthetic":
        length = cfg.length if train else cfg.eval_length
        if length is not None:
            options["length"] = length
    return options


def _keys(cfg: DataConfig, *, train: bool) -> Any:
    """:func:`dataset_keys` for the dataset of ``cfg`` (``train``: the training split's ``data.length``)."""
    length = cfg.length if train else cfg.eval_length
    length_key = "data.length" if train else "data.eval_length"
    if cfg.name != "synthetic" or length is None:
        length_key = "data.length"  # data.options.length, named as the other options
    return dataset_keys(cfg.name, cfg.options, length_key=length_key)


def build_dataset(
    cfg: DataConfig,
    split: str,
    *,
    train: bool,
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
) -> Any:
    """The dataset of ``split`` with the training or evaluation transform of ``cfg``.

    Images are normalised with ``mean`` / ``std`` (RGB, 0..1 scale): the encoder's for training
    (:func:`cinet.models.encoder.encoder_normalization`), a checkpoint's stored ones
    (:func:`cinet.checkpoint.input_normalization`) for everything that runs a trained model. There is no
    default: a forgotten argument would silently feed another encoder's statistics (issue #23). The
    dataset's ``info`` records them.

    Raises:
        ConfigError / DataError: Unknown dataset, bad options, missing files.
    """
    aug = cfg.augment
    if train:
        transform: Any = build_transforms(
            True,
            crop_size=list(cfg.crop_size) if cfg.crop_size else None,
            scale_range=list(aug.scale) if aug.enabled else None,
            rotation=aug.rotation if aug.enabled else 0.0,
            flip=aug.flip if aug.enabled else False,
            color_jitter=aug.color_jitter if aug.enabled else None,
            mean=mean,
            std=std,
        )
        if cfg.image_size:
            transform = Compose([Resize(list(cfg.image_size)), transform])
    else:
        transform = build_transforms(
            False, resize=list(cfg.image_size) if cfg.image_size else None, mean=mean, std=std
        )
    # the split's own options (the synthetic training split has data.length samples, the others
    # data.eval_length), whichever transform: the INT8 calibration builds the training split without
    # augmentation, and counted data.eval_length images of it (issue 25)
    is_train_split = split == cfg.train_split
    try:
        with _keys(cfg, train=is_train_split):
            options = dataset_options(cfg, train=is_train_split)
            ds = load_dataset(cfg.name, cfg.root, split, transform=transform, **options)
    except DataError as exc:
        if cfg.root is not None and not Path(cfg.root).expanduser().is_dir():
            raise DataError(
                f"{exc} (data.root=PATH points to the dataset: it overrides the stored path)"
            ) from None
        raise
    if tuple(ds.info.mean) != tuple(mean) or tuple(ds.info.std) != tuple(std):
        ds.info = dataclasses.replace(ds.info, mean=tuple(mean), std=tuple(std))
    if cfg.cache:
        ds = CachedDataset(ds)
    return ds


def dataset_info_from_config(cfg: DataConfig) -> DatasetInfo:
    """The :class:`cinet.data.DatasetInfo` of the configured dataset, from its class: no dataset is built.

    Equal to ``build_dataset(cfg, split, train=False).info`` for every split, without listing or reading the
    dataset's files (only a folder dataset's small ``classes.yaml``).

    Raises:
        ConfigError: Unknown dataset name or option.
    """
    with _keys(cfg, train=False):
        return dataset_info(cfg.name, root=cfg.root, **dataset_options(cfg, train=False))


def split_dataset(
    cfg: DataConfig,
    which: str,
    *,
    test_split: str | None = None,
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
) -> Any:
    """The ``train`` / ``val`` / ``test`` dataset of ``cfg`` (``test_split`` replaces ``data.test_split``).

    Raises:
        ConfigError: No split configured (``data.val_split: null``).
        ConfigError / DataError: As :func:`build_dataset`; a split the dataset lacks names its
            ``data.*_split`` setting.
    """
    split = {"train": cfg.train_split, "val": cfg.val_split, "test": test_split or cfg.test_split}[which]
    if split is None:
        raise ConfigError(f"data.{which}_split: no split configured")
    try:
        return build_dataset(cfg, split, train=which == "train", mean=mean, std=std)
    except CinetError as exc:
        if not (isinstance(exc, SplitNotFoundError) or "unknown split" in str(exc)):
            raise
        hint = f"set data.{which}_split to an existing split"
        if which == "val":
            hint += " (or data.val_split=null: no validation)"
        raise type(exc)(f"{exc}; data.{which}_split={split!r}: {hint}") from None


def make_datamodule(
    cfg: DataConfig,
    *,
    seed: int = 0,
    test_split: str | None = None,
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
) -> CINetDataModule:
    """The :class:`cinet.engine.datamodule.CINetDataModule` of ``cfg`` (images normalised with ``mean`` / ``std``).

    ``seed`` seeds the data order and augmentation; ``test_split`` replaces ``data.test_split`` for
    ``trainer.test``.
    """
    mean, std = tuple(mean), tuple(std)  # type: ignore[assignment]
    settings = DataSettings(
        batch_size=cfg.batch_size,
        eval_batch_size=cfg.eval_batch_size,
        num_workers=cfg.num_workers,
        validate=cfg.val_split is not None,
        image_size=(int(cfg.image_size[0]), int(cfg.image_size[1])) if cfg.image_size else None,
        crop_size=(int(cfg.crop_size[0]), int(cfg.crop_size[1])) if cfg.crop_size else None,
        source=str(cfg.root) if cfg.root is not None else f"{cfg.name}/{cfg.train_split}",
        depth_setting=depth_setting(cfg.name),
        train_size_hint=TRAIN_SIZE_HINT,
        eval_size_hint=EVAL_SIZE_HINT,
    )
    return CINetDataModule(
        lambda which: split_dataset(cfg, which, test_split=test_split, mean=mean, std=std),
        settings,
        lambda: dataclasses.replace(dataset_info_from_config(cfg), mean=mean, std=std),
        seed=seed,
    )
