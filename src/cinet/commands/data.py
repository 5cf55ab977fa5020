"""``cinet data`` — dataset tools.

``cinet data preview NAME [--root R] [--split S] [--num N] [--out DIR] [key=value ...]`` writes a grid PNG
(one row per sample: RGB | coloured depth | coloured labels in the dataset palette, void black) and prints
its path. ``key=value`` options are dataset options (values parsed as YAML: ``size=[120,160]``, ``holes=true``).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from cinet.errors import ConfigError, DataError


class _OptionsParser(argparse.ArgumentParser):
    """Collects ``key=value`` words anywhere on the line (after ``--out X`` too) into ``options``."""

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[no-untyped-def,override]
        ns, extras = super().parse_known_args(args, namespace)
        kv = [e for e in extras if "=" in e and not e.startswith("-")]
        if kv:
            ns.options = list(getattr(ns, "options", None) or []) + kv
        return ns, [e for e in extras if e not in kv]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the ``data`` subcommands (no torch import here)."""
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION", parser_class=_OptionsParser)
    p = sub.add_parser("preview", help="write a grid PNG of RGB / depth / labels for a few samples")
    p.add_argument("name", help="dataset: synthetic | folder | nyuv2 | sunrgbd | cityscapes")
    p.add_argument("--root", default=None, help="dataset folder (not needed for synthetic)")
    p.add_argument("--split", default="train", help="split (default: train)")
    p.add_argument("--num", type=int, default=4, help="number of samples (default: 4)")
    p.add_argument("--out", default="preview", help="output folder (default: ./preview)")
    p.add_argument("options", nargs="*", metavar="key=value", help="dataset options")


def parse_options(items: list[str]) -> dict[str, Any]:
    """``["a=1", "b=[2,3]"]`` -> ``{"a": 1, "b": [2, 3]}`` (values parsed as YAML)."""
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"{item}: expected key=value")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            out[key.strip()] = value
    return out


def run(args: argparse.Namespace) -> int:
    """Run ``cinet data ACTION``."""
    if getattr(args, "data_command", None) != "preview":
        raise ConfigError("cinet data: choose an action (preview)")
    path = preview(
        args.name, root=args.root, split=args.split, num=args.num, out=args.out, **parse_options(args.options)
    )
    print(path)
    return 0


def preview(
    name: str,
    *,
    root: str | None = None,
    split: str = "train",
    num: int = 4,
    out: str | Path = "preview",
    **options: Any,
) -> Path:
    """Write ``<out>/<name>_<split>_preview.png`` for the first ``num`` samples and return its path."""
    import io

    import numpy as np
    from PIL import Image

    from cinet.data import load_dataset, to_uint8_image
    from cinet.inference.visualize import colorize_depth, colorize_labels
    from cinet.utils.io import atomic_write_bytes, check_writable_dir

    if num < 1:
        raise ConfigError(f"--num: must be >= 1, got {num}")
    check_writable_dir(out)
    ds = load_dataset(name, root, split, **options)
    if len(ds) == 0:
        raise DataError(f"{name}/{split}: no samples to preview")
    rows = []
    for i in range(min(num, len(ds))):
        s = ds[i]
        rgb = to_uint8_image(s["image"], ds.info)
        dep, _ = colorize_depth(s["depth"][0].numpy(), 0.0, ds.info.depth_cap, "turbo")
        lab = colorize_labels(s["labels"].numpy(), ds.info.palette, ds.info.void_color)
        sep = np.full((rgb.shape[0], 4, 3), 255, np.uint8)
        rows.append(np.concatenate([rgb, sep, dep, sep, lab], axis=1))
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 4), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    grid = np.concatenate(rows, axis=0)
    path = Path(out) / f"{name}_{split}_preview.png"
    buf = io.BytesIO()
    Image.fromarray(grid).save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())
    return path
