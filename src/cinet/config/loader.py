"""Reading a run config: YAML files (with their ``defaults`` chain), bundled configs, ``key=value`` overrides.

A YAML file may name a base file with ``defaults: base.yaml`` (or a list of them, relative to the file), which is
loaded first and then updated by the file's own keys. Overrides use dotted keys (``model.channels=64``,
``train.stages.0.epochs=2``, ``data.crop_size=[64,80]``); values are parsed as YAML. The configs of
``configs/`` ship inside the package (``cinet/configs/``): ``--config smoke`` finds the bundled ``smoke.yaml``.

Every mistake is a :class:`~cinet.errors.ConfigError` with one line naming the key (and the file)::

    unknown config key 'model.chanels' (did you mean 'model.channels'?)
    config key 'train.seed': expected int, got 'abc'
"""

from __future__ import annotations

import dataclasses
import difflib
import subprocess
import types
import typing
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from cinet.config.legacy import migrate_legacy
from cinet.config.schema import Config, DataConfig, validate
from cinet.errors import ConfigError
from cinet.utils.io import atomic_write_text

__all__ = [
    "bundled_configs",
    "config_to_dict",
    "git_revision",
    "load_config",
    "parse_overrides",
    "read_saved_git",
    "resolve_config_path",
    "save_config",
]


def bundled_configs() -> dict[str, Path]:
    """The configs shipped in the package: ``{name: path}`` of ``cinet/configs/*.yaml``, sorted by name."""
    folder = resources.files("cinet").joinpath("configs")
    if not folder.is_dir():
        return {}
    found = sorted(p.name for p in folder.iterdir() if p.name.endswith(".yaml"))
    return {name[: -len(".yaml")]: Path(str(folder.joinpath(name))) for name in found}


def resolve_config_path(path: str | Path) -> Path:
    """The config file ``path`` names: the file itself when it exists, else a bundled config.

    ``nyuv2`` / ``nyuv2.yaml`` (a bare name) and ``configs/nyuv2.yaml`` (the repository path of the README,
    run outside a clone) both resolve to the bundled ``cinet/configs/nyuv2.yaml`` when no such file exists.

    Raises:
        ConfigError: Neither a file nor a bundled config; the message lists the bundled names.
    """
    p = Path(path)
    if p.is_file():
        return p
    bare = len(p.parts) == 1 or (len(p.parts) == 2 and p.parts[0] == "configs")
    bundled = bundled_configs()
    if bare and p.suffix in ("", ".yaml") and p.stem in bundled:
        return bundled[p.stem]
    names = ", ".join(bundled) or "none"
    raise ConfigError(f"{p}: config file not found (bundled configs, usable by name: {names})")


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
    if origin in (typing.Union, types.UnionType):
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
    if origin in (typing.Union, types.UnionType):
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


#: While :func:`load_config` runs: dotted key -> the source that set it last (a file, or the command line), so
#: that :func:`cinet.config.schema.validate` names where a bad value came from.
_SOURCES: dict[str, str | None] | None = None


#: The source named for ``key=value`` overrides in error messages.
OVERRIDE_SOURCE = "command-line override"


def _record(key: str, source: str | None) -> None:
    if _SOURCES is not None:
        for k in [k for k in _SOURCES if k.startswith(key + ".")]:  # a whole value replaces its parts
            del _SOURCES[k]
        _SOURCES[key] = source


def _assign(obj: Any, key: str, tp: Any, value: Any, prefix: str, source: str | None) -> None:
    """Set field ``key`` of dataclass ``obj``: merge a dict into a nested dataclass, else coerce and set."""
    current = getattr(obj, key)
    if _is_dataclass_type(tp) and isinstance(value, dict) and current is not None:
        _update_dataclass(current, value, f"{prefix}{key}.", source)
    else:
        setattr(obj, key, _coerce(f"{prefix}{key}", tp, value, source))
        _record(f"{prefix}{key}", source)


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
                _record(f"{prefix}{part}", source)
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
                    _record(key, source)
                    return
                raise ConfigError(f"config key '{prefix}{part}' is null; set it as a whole")
            obj = nxt
        else:
            raise ConfigError(f"config key '{prefix.rstrip('.')}' has no sub-key '{part}'")
        prefix += part + "."


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
        path: YAML file, the name of a bundled config (``smoke``, ``nyuv2``, ... see
            :func:`resolve_config_path`), or None for the built-in defaults.
        overrides: ``key=value`` strings.
        base: A config dict applied first (e.g. the one stored in a checkpoint).

    Returns:
        The validated config.

    Raises:
        ConfigError: Missing file, invalid YAML, unknown key, wrong type or inconsistent values.
    """
    global _SOURCES
    _SOURCES = {}
    try:
        return _load_config(path, overrides, base)
    finally:
        _SOURCES = None


def _load_config(
    path: str | Path | None, overrides: list[str] | tuple[str, ...], base: dict[str, Any] | None
) -> Config:
    cfg = Config()
    if base:
        _update_dataclass(cfg, migrate_legacy(dict(base)), "", "checkpoint config")
    if path is not None:
        path = resolve_config_path(path)
        for data, source in _read_yaml(path):
            data = migrate_legacy(data)
            if "train" in data and isinstance(data["train"], dict) and "stages" in data["train"]:
                # a stage list replaces the default list as a whole
                cfg.train.stages = []
            _update_dataclass(cfg, data, "", source)
    parsed = parse_overrides(list(overrides))
    # a dataset switch first: the overrides given with it (data.root=...) belong to the new dataset
    parsed.sort(key=lambda kv: kv[0] not in ("data", "data.name"))
    for key, value in parsed:
        _set_dotted(cfg, key, value, OVERRIDE_SOURCE)
    validate(cfg, str(path) if path is not None else None, dict(_SOURCES or {}))
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
