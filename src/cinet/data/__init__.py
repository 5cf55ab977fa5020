"""Datasets: a built-in synthetic RGB-D-semantic world, user folders, NYUv2 (official, multi-task and MTAN
formats), SUN RGB-D and Cityscapes.

Every dataset returns the same sample dict (see :mod:`cinet.data.base`)::

    image float [3,H,W] (normalised), depth float [1,H,W] metres (0 = invalid),
    labels long [H,W] (0-based train ids, 255 = ignore), meta dict (id, intrinsics, orig_size)

and has ``.info`` (:class:`DatasetInfo`). Use :func:`load_dataset` to build one, :func:`dataset_info` to get
its description without reading files, :func:`collate` as the DataLoader ``collate_fn``.

Bad arguments raise :class:`ValueError` (:class:`TypeError` for an option of the wrong type) whose message
starts with the argument's name (``name: unknown dataset ...``, ``size: ...``, ``split: unknown split ...``);
the build layer names the config key (:mod:`cinet.build.data`). Missing or broken files raise
:class:`cinet.errors.DataError` naming the file.
"""

from __future__ import annotations

import importlib
import inspect
from typing import TYPE_CHECKING, Any

from cinet.data.info import DatasetInfo, load_meta, scale_intrinsics

if TYPE_CHECKING:
    from cinet.data.base import BaseDataset

# torch-dependent names are imported on first use, so ``import cinet.commands.data`` (the CLI parser) stays cheap
_LAZY = {
    name: "cinet.data.base"
    for name in ("BaseDataset", "collate", "denormalize", "normalize_image", "to_uint8_image")
}

# name -> (module, class)
DATASETS: dict[str, tuple[str, str]] = {
    "synthetic": ("cinet.data.synthetic", "SyntheticDataset"),
    "folder": ("cinet.data.folder", "FolderDataset"),
    "nyuv2": ("cinet.data.nyuv2", "NYUv2Dataset"),
    "sunrgbd": ("cinet.data.sunrgbd", "SUNRGBDDataset"),
    "cityscapes": ("cinet.data.cityscapes", "CityscapesDataset"),
    "nyud_mt": ("cinet.data.nyud_mt", "NYUDMTDataset"),
    "nyuv2_mtan": ("cinet.data.nyuv2_mtan", "NYUv2MTANDataset"),
}

__all__ = [
    "DATASETS",
    "BaseDataset",
    "DatasetInfo",
    "collate",
    "dataset_class",
    "dataset_info",
    "denormalize",
    "load_dataset",
    "load_meta",
    "normalize_image",
    "scale_intrinsics",
    "to_uint8_image",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'cinet.data' has no attribute {name!r}")


def dataset_class(name: str) -> type:
    """The dataset class registered under ``name``.

    Raises:
        ValueError: ``name: unknown dataset ...``.
    """
    if name not in DATASETS:
        raise ValueError(f"name: unknown dataset {name!r} (choose from {', '.join(DATASETS)})")
    module, cls = DATASETS[name]
    return getattr(importlib.import_module(module), cls)


def _type_fits(value: Any, hint: Any) -> bool | None:
    """Whether ``value`` (as YAML or an override gives it) fits the annotation ``hint``; None: not checkable."""
    import types
    import typing

    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        verdicts = [_type_fits(value, arg) for arg in typing.get_args(hint)]
        return True if any(v is True for v in verdicts) else (None if None in verdicts else False)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            return False
        args = [a for a in typing.get_args(hint) if a is not Ellipsis]
        if not args:
            return True
        if origin is tuple and Ellipsis not in typing.get_args(hint) and len(args) != len(value):
            return False
        verdicts = [_type_fits(v, args[0] if len(args) == 1 else a) for v, a in zip(value, args * len(value))]
        return None if None in verdicts else all(verdicts)
    return None


def _describe(hint: Any) -> str:
    words = {float: "a number", int: "an integer", bool: "true or false", str: "a string"}
    if hint in words:
        return words[hint]
    return str(hint).replace("typing.", "").replace("NoneType", "null")


def _check_option_types(name: str, cls: type, options: dict[str, Any]) -> None:
    """A :class:`TypeError` ``<option>: ...`` for an option value of the wrong type (checked against
    ``cls.__init__``'s hints)."""
    import typing

    try:
        hints = typing.get_type_hints(cls.__init__)
    except Exception:  # unresolvable annotations: leave the checks to the class
        return
    for key, value in options.items():
        if key in hints and _type_fits(value, hints[key]) is False:
            raise TypeError(
                f"{key}: {value!r} is not a valid value for dataset {name!r} (expected {_describe(hints[key])})"
            )


def _check_options(name: str, cls: type, options: dict[str, Any]) -> None:
    _check_option_types(name, cls, {k: v for k, v in options.items() if k in cls.OPTIONS})
    unknown = sorted(set(options) - set(cls.OPTIONS))
    if unknown:
        allowed = ", ".join(cls.OPTIONS) or "none"
        key = unknown[0]
        hint = ""
        if ":" in key:  # YAML reads "{num_classes:40}" as the one key "num_classes:40"
            k, _, v = key.partition(":")
            hint = f"; YAML needs a space after the colon: write {{{k}: {v}}}"
        raise ValueError(f"{key}: unknown option for dataset {name!r} (options: {allowed}){hint}")


def load_dataset(
    name: str, root: Any = None, split: str = "train", *, transform: Any = None, **options: Any
) -> BaseDataset:
    """Build a dataset.

    Args:
        name: ``synthetic`` | ``folder`` | ``nyuv2`` | ``sunrgbd`` | ``cityscapes`` | ``nyud_mt`` (the
            multi-task format of ATRC / MTI-Net / InvPT) | ``nyuv2_mtan`` (the ``.npy`` format of MTAN / LibMTL).
        root: Dataset folder (ignored by ``synthetic``).
        split: Split name (``train``/``test``; ``val`` where the dataset has one).
        transform: Joint transform on the sample dict (e.g. :func:`cinet.data.transforms.build_transforms`).
        **options: Dataset-specific options (each class lists them in ``OPTIONS``).

    Raises:
        ValueError: Unknown dataset name, split or option, a bad option value (the message starts with the
            argument's name: ``name``, ``split``, the option's).
        TypeError: An option value of the wrong type (``<option>: ...``).
        DataError: Missing or broken files.
    """
    cls = dataset_class(name)
    _check_options(name, cls, options)
    if name == "synthetic":
        return cls(split, transform=transform, **options)
    return cls(root, split, transform=transform, **options)


def dataset_info(name: str, **options: Any) -> DatasetInfo:
    """The :class:`DatasetInfo` of dataset ``name`` with ``options``, without reading dataset files.

    Raises:
        ValueError / TypeError: As :func:`load_dataset`.
    """
    cls = dataset_class(name)
    root = options.pop("root", None)
    options = {k: v for k, v in options.items() if k not in ("split", "transform")}
    _check_options(name, cls, options)
    make = cls.make_info
    params = inspect.signature(make).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    if root is not None and (takes_any or "root" in params):
        options["root"] = root
    return make(**{k: v for k, v in options.items() if takes_any or k in params})
