"""``cinet data`` — dataset tools.

``cinet data preview NAME [--root R] [--split S] [--num N] [--out DIR] [key=value ...]`` writes a grid PNG
(titled columns RGB | depth | labels, one row per sample; depth coloured over the dataset's range with a colour
bar and the observed range below; labels in the dataset palette, void black, with a legend of the classes
present) and prints its path. It warns when the depth looks like the wrong unit (:mod:`cinet.checks.depth`).
``key=value`` options are dataset options (values parsed as YAML: ``size=[120,160]``, ``depth_scale=5000``).

The folder format for your own data is described in ``docs/data.md``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from cinet.checks.files import header_sizes_of
from cinet.checks.outputs import check_output_file, check_writable_dir
from cinet.commands.common import PathArgument
from cinet.errors import ConfigError, DataError
from cinet.inference import visualize
from cinet.utils import colors
from cinet.utils.io import atomic_write_bytes

DOCS_HINT = (
    "Your own data (folder layout, depth units and depth_scale, label ids, 255 = ignore, classes.yaml, "
    "a recipe from photos to a training run): docs/data.md"
)


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
    parser.epilog = DOCS_HINT
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION", parser_class=_OptionsParser)
    p = sub.add_parser(
        "preview", help="write a grid PNG of RGB / depth / labels for a few samples", epilog=DOCS_HINT
    )
    p.add_argument(
        "name", help="dataset: synthetic | folder | nyuv2 | nyud_mt | nyuv2_mtan | sunrgbd | cityscapes"
    )
    p.add_argument(
        "--root", default=None, action=PathArgument, help="dataset folder (not needed for synthetic)"
    )
    p.add_argument("--split", default="train", help="split (default: train)")
    p.add_argument("--num", type=int, default=4, help="number of samples (default: 4)")
    p.add_argument("--out", default="preview", action=PathArgument, help="output folder (default: ./preview)")
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
    """Write ``<out>/<name>_<split>_preview.png`` for the first ``num`` samples and return its path.

    Columns are titled (RGB, depth with its colour range, labels with the dataset name); under the depth column
    a colour bar from 0 to the dataset's ``depth_cap`` and the observed depth range; right of the labels a legend
    of the classes present. A depth that looks like the wrong unit logs one warning naming ``depth_scale``.
    """
    import io

    import numpy as np
    from PIL import Image

    from cinet.build.data import dataset_keys, depth_setting
    from cinet.checks.depth import warn_depth_unit
    from cinet.checks.memory import check_preview_memory
    from cinet.data import load_dataset
    from cinet.data.base import to_uint8_image

    if num < 1:
        raise ConfigError(f"--num: must be >= 1, got {num}")
    if name == "synthetic" and root is not None:  # it would be ignored: the synthetic world is rendered
        raise ConfigError("--root: the synthetic dataset is rendered and reads no folder; drop --root")
    check_writable_dir(out)
    check_output_file(Path(out) / f"{name}_{split}_preview.png", "cinet data preview")  # not a folder
    with dataset_keys(name, options):  # a bad option: one line naming it
        ds = load_dataset(name, root, split, **options)
    if len(ds) == 0:
        raise DataError(f"{name}/{split}: no samples to preview")
    sizes = header_sizes_of(ds)  # folder datasets: from the headers, before any sample is decoded
    if sizes is not None:
        check_preview_memory(sizes[: max(num, 8)])
    info = ds.info
    setting = depth_setting(name, key="depth_scale=N")  # the option as typed on this command line
    summary = warn_depth_unit(ds, str(root) if root else f"{name}/{split}", setting, num=max(num, 8))
    rows, present = [], []
    for i in range(min(num, len(ds))):
        s = ds[i]
        rgb = to_uint8_image(s["image"], info)
        dep, _ = colors.colorize_depth(s["depth"][0].numpy(), 0.0, info.depth_cap, "turbo")
        labels = s["labels"].numpy()
        present += [c for c in visualize.present_classes(labels, info.num_classes) if c not in present]
        lab = colors.colorize_labels(labels, info.palette, info.void_color)
        rows.append((rgb, dep, lab))
    widths = [max(r[k].shape[1] for r in rows) for k in range(3)]
    sep = 4

    def cell(tile: Any, k: int) -> Any:
        return np.pad(tile, ((0, 0), (0, widths[k] - tile.shape[1]), (0, 0)), constant_values=255)

    lines = []
    for rgb, dep, lab in rows:
        h = rgb.shape[0]
        gap = np.full((h, sep, 3), 255, np.uint8)
        lines.append(np.concatenate([cell(rgb, 0), gap, cell(dep, 1), gap, cell(lab, 2)], axis=1))
        lines.append(np.full((sep, lines[-1].shape[1], 3), 255, np.uint8))
    body = np.concatenate(lines, axis=0)
    title_h = max(12, min(20, rows[0][0].shape[0] // 8))
    titles = [
        "RGB",
        f"depth 0-{info.depth_cap:g} m (turbo)",
        f"labels ({info.name}, {info.num_classes} classes)",
    ]
    head = np.concatenate(
        [
            visualize._caption(titles[0], widths[0], title_h),
            np.full((title_h, sep, 3), 255, np.uint8),
            visualize._caption(titles[1], widths[1], title_h),
            np.full((title_h, sep, 3), 255, np.uint8),
            visualize._caption(titles[2], widths[2], title_h),
        ],
        axis=1,
    )
    observed = summary.describe() if summary is not None else "depth not read"
    bar = visualize.colorbar(0.0, info.depth_cap, widths[1])
    note = visualize._caption(observed, body.shape[1], title_h)
    foot = np.full((bar.shape[0], body.shape[1], 3), 255, np.uint8)
    x0 = widths[0] + sep
    foot[:, x0 : x0 + widths[1]] = bar
    grid = np.concatenate([head, body, foot, note], axis=0)
    key = visualize.legend(present, info.class_names, info.palette, grid.shape[0])
    grid = np.concatenate([grid, np.full((grid.shape[0], sep, 3), 255, np.uint8), key], axis=1)
    path = Path(out) / f"{name}_{split}_preview.png"
    buf = io.BytesIO()
    Image.fromarray(grid).save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())
    return path
