"""``cinet ablate --config FILE [--variants baseline,sum,...] [--row NAME:OVERRIDES ...] [--seeds 0,1,2] [key=value ...]``.

Trains and evaluates each variant with the same config, seed, data and schedule (``model.variant=X`` is the
only difference), one after the other, in ``RUN_DIR/<variant>/`` (``RUN_DIR/<variant>/seed<N>/`` with
``--seeds``); ``--row`` adds rows that differ by any overrides (e.g. a training schedule or an initialisation).
Then writes ``RUN_DIR/ablation.md`` (paper Tables 1–2 layout) and ``RUN_DIR/ablation.json``:

* the test metrics, with several seeds as mean ± standard deviation, each difference from the baseline row
  that is larger than the seed noise marked (+) better or (−) worse (Welch's t-test, p < 0.05, per metric);
* Δm (Maninis et al. 2019; Vandenhende et al. 2021) of every joint row against the single-task rows
  ``depth_only`` and ``seg_only`` when both are in the table;
* the training loss per term at the end of each stage (mean of the last steps) and at the start of stage 2,
  and the mean gradient norm of each part of the network per stage (from each run's ``stageN/losses.csv``).

A row whose ``metrics.json`` exists is not trained again (so an interrupted ablation continues where it
stopped, and several ``cinet ablate`` processes with disjoint rows can share one run directory; a last call
with every row then writes the whole table).
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import time
from pathlib import Path
from typing import Any

from cinet.checks.outputs import check_output_file, check_writable_dir
from cinet.commands.common import PathArgument, quiet_lightning
from cinet.commands.eval import protocol_overrides
from cinet.config import config_to_dict, git_revision, load_config, read_saved_git
from cinet.config.schema import MAX_SEED
from cinet.engine.distributed import global_rank
from cinet.engine.rundir import is_run_dir
from cinet.errors import ConfigError
from cinet.recipe import TERMS, VARIANTS
from cinet.utils.io import atomic_write_json, atomic_write_text

#: Variants run by default: every row of the recipe table (paper Tables 1–2 and the single-task references).
DEFAULT_VARIANTS = tuple(VARIANTS)
#: Paper names of the rows (the recipe table's titles).
ROW_NAMES = {name: row.title for name, row in VARIANTS.items()}

#: Steps averaged for the training-loss diagnostics (the last ones of each stage, the first ones of stage 2).
LOSS_WINDOW = 20
#: Metrics whose difference from the baseline is tested (Welch's t-test) and marked.
TESTED_METRICS = (
    "delta1", "delta2", "delta3", "rms", "rms_log", "abs_rel", "sq_rel", "pixel_acc", "miou", "att_bce", "att_auc"
)  # fmt: skip
SIGNIFICANCE = 0.05


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the options of ``cinet ablate`` (cheap: no torch import)."""
    parser.add_argument("--config", "-c", action=PathArgument, help="YAML config shared by every variant")
    parser.add_argument(
        "--variants",
        default=",".join(DEFAULT_VARIANTS),
        help=f"comma-separated variants (default {','.join(DEFAULT_VARIANTS)}); '' for none",
    )
    parser.add_argument(
        "--row",
        action="append",
        default=[],
        metavar="NAME:OVERRIDES",
        help="an extra row: a name, a colon and space-separated key=value overrides, e.g. "
        "'cinet_learned: model.variant=cinet train.schedule=learned' (repeatable)",
    )
    parser.add_argument(
        "--run-dir", action=PathArgument, help="output folder (default runs/ablate-<config>-<time>)"
    )
    parser.add_argument(
        "--seeds",
        default=None,
        help="comma-separated seeds (default: train.seed); with several, the table shows mean ± standard "
        "deviation and marks differences from the baseline larger than the noise (Welch, p < 0.05)",
    )
    parser.add_argument(
        "--protocol",
        choices=("dataset", "paper", "mtl"),
        help="named evaluation protocol of every row (see cinet eval --help; default: train.eval.protocol)",
    )
    parser.add_argument(
        "--flip", action="store_true", help="evaluate with test-time flip averaging (train.eval.flip)"
    )
    parser.add_argument(
        "overrides", nargs="*", metavar="key=value", help="config overrides for every variant"
    )


def parse_seeds(text: str) -> list[int]:
    """``--seeds`` ``"0,1,2"`` -> ``[0, 1, 2]``.

    Raises:
        ConfigError: Not comma-separated integers, one outside ``0..MAX_SEED`` (``train.seed``'s range) or a seed
            given twice (its runs would share a folder); the message names ``--seeds``.
    """
    try:
        seeds = [int(x) for x in text.split(",")]  # "" and "1,,2" fail here
    except ValueError:
        raise ConfigError(f"--seeds: expected comma-separated integers, got {text!r}") from None
    bad = [s for s in seeds if not 0 <= s <= MAX_SEED]
    if bad:
        raise ConfigError(f"--seeds: {bad[0]} is not a seed (0..{MAX_SEED})")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds: a seed is listed twice in {text!r}")
    return seeds


def parse_rows(variants: str, extra: list[str]) -> dict[str, list[str]]:
    """Row name -> its overrides: one row per variant, then the ``--row NAME:OVERRIDES`` rows.

    Raises:
        ConfigError: Unknown variant, a malformed or duplicate row name (names ``--variants`` / ``--row``).
    """

    rows: dict[str, list[str]] = {}
    for v in (x.strip() for x in variants.split(",")):
        if not v:
            continue
        if v not in VARIANTS:
            raise ConfigError(f"--variants: unknown variant {v!r}; valid: {', '.join(VARIANTS)}")
        if v in rows:  # one run directory per row: a repeat would train into the same one
            raise ConfigError(f"--variants: {v!r} listed twice")
        rows[v] = [f"model.variant={v}"]
    for text in extra:
        name, sep, overrides = text.partition(":")
        name = name.strip()
        if not sep or not name or not name.replace("_", "").replace("-", "").isalnum():
            raise ConfigError(
                f"--row {text!r}: expected NAME:key=value ... with a name of letters, digits, '_' or '-'"
            )
        if name in rows:
            raise ConfigError(f"--row {text!r}: row {name!r} given twice")
        rows[name] = shlex.split(overrides)
    if not rows:
        raise ConfigError("--variants / --row: no row to run")
    return rows


def training_diagnostics(run_dir: Path) -> dict[str, Any]:
    """Training-loss and gradient-norm summaries of one run, from its ``stageN/losses.csv``.

    Returns:
        ``{"loss": {"s1": {term: mean of the last LOSS_WINDOW steps}, "s2_start": {term: mean of the first
        LOSS_WINDOW steps of stage 2}, ...}, "grad_norm": {"s1": {group: mean over the stage}, ...}}``;
        terms that were not active (all zero) are left out.
    """
    from cinet.engine.callbacks import read_losses
    from cinet.models.cinet import DIAGNOSTIC_GROUPS

    def mean(rows: list[dict[str, float]], key: str) -> float | None:
        values = [r[key] for r in rows if key in r and math.isfinite(r[key])]
        return sum(values) / len(values) if values else None

    loss: dict[str, dict[str, float]] = {}
    grad: dict[str, dict[str, float]] = {}
    for csv in sorted(run_dir.glob("stage*/losses.csv")):
        stage = csv.parent.name.replace("stage", "s")
        rows = [r for r in read_losses(csv) if not r.get("skipped")]
        if not rows:
            continue
        windows = {stage: rows[-LOSS_WINDOW:]}
        if stage == "s2":
            windows["s2_start"] = rows[:LOSS_WINDOW]
        for name, window in windows.items():
            values = {t: mean(window, t) for t in TERMS}
            loss[name] = {t: v for t, v in values.items() if v is not None and v != 0.0}
        grads = {g: mean(rows, f"grad_{g}") for g in DIAGNOSTIC_GROUPS}
        grad[stage] = {g: v for g, v in grads.items() if v is not None}
    return {"loss": loss, "grad_norm": grad}


def _mean_nested(items: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Element-wise mean of ``{a: {b: float}}`` dicts (keys missing in some items averaged over the rest)."""
    out: dict[str, dict[str, float]] = {}
    for a in dict.fromkeys(k for it in items for k in it):
        keys = dict.fromkeys(k for it in items for k in it.get(a, {}))
        out[a] = {}
        for b in keys:
            values = [it[a][b] for it in items if b in it.get(a, {})]
            out[a][b] = sum(values) / len(values)
    return out


def _combine(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean (and, for several runs, standard deviation) of the metrics over seeds."""
    import statistics

    from cinet.metrics import METRIC_KEYS
    from cinet.metrics.report import EXTRA_KEYS

    if len(runs) == 1:
        return runs[0]
    mean: dict[str, Any] = {}
    std: dict[str, Any] = {}
    for k in (*METRIC_KEYS, *EXTRA_KEYS):
        values = [float(r["metrics"][k]) for r in runs if r["metrics"].get(k) is not None]
        if values:
            mean[k] = statistics.fmean(values)
            std[k] = statistics.stdev(values) if len(values) > 1 else 0.0
    out = {
        "metrics": mean,
        "std": std,
        "wall_s": sum(r["wall_s"] for r in runs),
        "runs": runs,
    }
    diags = [r["diagnostics"] for r in runs if r.get("diagnostics")]
    if diags:
        out["diagnostics"] = {
            "loss": _mean_nested([d["loss"] for d in diags]),
            "grad_norm": _mean_nested([d["grad_norm"] for d in diags]),
        }
    return out


def compare_rows(
    results: dict[str, dict[str, Any]], reference: str = "baseline"
) -> dict[str, dict[str, Any]]:
    """Per row: Welch p-value of each metric against ``reference`` and Δm against the single-task rows.

    Returns:
        ``{row: {"p": {metric: p}, "delta_m": float | None}}``; ``p`` only with 2+ seeds on both sides,
        ``delta_m`` only when ``depth_only`` and ``seg_only`` are rows (and for joint rows).
    """
    from cinet.metrics import delta_m, welch_p_value

    def per_seed(row: dict[str, Any], key: str) -> list[float]:
        runs = row.get("runs") or [row]
        return [float(r["metrics"][key]) for r in runs if r["metrics"].get(key) is not None]

    single: dict[str, Any] | None = None
    if "depth_only" in results and "seg_only" in results:
        from cinet.metrics.depth import DEPTH_KEYS

        d, sg = results["depth_only"]["metrics"], results["seg_only"]["metrics"]
        single = {k: (d.get(k) if k in DEPTH_KEYS else sg.get(k)) for k in set(d) | set(sg)}
    out: dict[str, dict[str, Any]] = {}
    ref = results.get(reference)
    for name, row in results.items():
        entry: dict[str, Any] = {"p": {}, "delta_m": None}
        if ref is not None and name != reference:
            for k in TESTED_METRICS:
                a, b = per_seed(row, k), per_seed(ref, k)
                if len(a) >= 2 and len(b) >= 2:
                    entry["p"][k] = welch_p_value(a, b)
        joint = all(row["metrics"].get(k) is not None for k in ("rms", "miou"))
        if single is not None and joint and name not in ("depth_only", "seg_only"):
            value = delta_m(row["metrics"], single)
            entry["delta_m"] = value if math.isfinite(value) else None
        out[name] = entry
    return out


def _cell(key: str, row: dict[str, Any], ref: dict[str, Any] | None, p: float | None) -> str:
    from cinet.metrics.report import HIGHER_IS_BETTER, PERCENT_KEYS

    value = row["metrics"].get(key)
    if value is None or not math.isfinite(float(value)):
        return "–"
    scale = 100.0 if key in PERCENT_KEYS else 1.0
    text = f"{float(value) * scale:.3f}"
    std = (row.get("std") or {}).get(key)
    if std is not None:
        text += f" ± {float(std) * scale:.3f}"
    if p is not None and math.isfinite(p) and p < SIGNIFICANCE and ref is not None:
        better = (float(value) > float(ref["metrics"][key])) == HIGHER_IS_BETTER[key]
        text += " (+)" if better else " (−)"
    return text


def format_results(
    results: dict[str, dict[str, Any]], comparison: dict[str, dict[str, Any]], reference: str = "baseline"
) -> str:
    """The metric table (mean ± std, significance marks, Δm) as Markdown."""
    from cinet.metrics import METRIC_KEYS
    from cinet.metrics.report import EXTRA_KEYS, METRIC_LABELS, _arrow

    has_dm = any(c["delta_m"] is not None for c in comparison.values())
    keys = [*METRIC_KEYS] + [  # the SUM's attention agreement (att BCE, att AUC) when a row has a learned map
        k for k in EXTRA_KEYS if any(r["metrics"].get(k) is not None for r in results.values())
    ]
    cols = [f"{METRIC_LABELS[k]} {_arrow(k)}" for k in keys] + (["Δm (%) ↑"] if has_dm else [])
    lines = ["| Method | " + " | ".join(cols) + " |", "|:--|" + "|".join("--:" for _ in cols) + "|"]
    ref = results.get(reference)
    for name, row in results.items():
        cells = [_cell(k, row, ref, comparison[name]["p"].get(k)) for k in keys]
        if has_dm:
            dm = comparison[name]["delta_m"]
            cells.append("–" if dm is None else f"{dm:+.2f}")
        lines.append(f"| {ROW_NAMES.get(name, name)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def format_diagnostics(results: dict[str, dict[str, Any]]) -> str:
    """Training-loss (per term, per stage) and gradient-norm (per part, per stage) tables as Markdown."""
    from cinet.models.cinet import DIAGNOSTIC_GROUPS

    windows = ("s1", "s2_start", "s2", "s3")
    lines = [
        f"Training loss per term (mean of the last {LOSS_WINDOW} steps of each stage; s2 start: the first "
        f"{LOSS_WINDOW} steps of stage 2; mean over seeds; – = term not trained):",
        "",
        "| Method | " + " | ".join(f"{w} {t}" for w in windows for t in TERMS) + " |",
        "|:--|" + "|".join("--:" for _ in windows for _ in TERMS) + "|",
    ]
    for name, row in results.items():
        loss = (row.get("diagnostics") or {}).get("loss", {})
        cells = []
        for w in windows:
            for t in TERMS:
                v = loss.get(w, {}).get(t)
                cells.append("–" if v is None else f"{v:.3f}")
        lines.append(f"| {ROW_NAMES.get(name, name)} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Gradient norm per part of the network (mean over the steps of stage 1 / 2 / 3; mean over seeds):",
        "",
        "| Method | " + " | ".join(DIAGNOSTIC_GROUPS) + " |",
        "|:--|" + "|".join("--:" for _ in DIAGNOSTIC_GROUPS) + "|",
    ]
    for name, row in results.items():
        grad = (row.get("diagnostics") or {}).get("grad_norm", {})
        cells = []
        for g in DIAGNOSTIC_GROUPS:
            values = [grad.get(s, {}).get(g) for s in ("s1", "s2", "s3")]
            cells.append("–" if all(v is None for v in values) else "/".join(
                "–" if v is None else f"{v:.3g}" for v in values
            ))  # fmt: skip
        lines.append(f"| {ROW_NAMES.get(name, name)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_ablation(
    run_dir: Path, results: dict[str, dict[str, Any]], protocol: Any, meta: dict[str, Any]
) -> None:
    """``ablation.md`` and ``ablation.json`` (atomic writes)."""

    comparison = compare_rows(results)
    hw = meta["hardware"]
    n = len(meta["seeds"])
    lines = [
        "# Ablation",
        "",
        f"- Config: `{meta['config']}`"
        + (f" with `{' '.join(meta['overrides'])}`" if meta["overrides"] else ""),
        f"- Command: `{meta['command']}`",
        f"- Code: git `{meta['git']}`; seeds {meta['seeds']}; stages (stage, epochs, lr) {meta['stages']}",
        f"- Hardware: {hw.get('cpu')} ({hw.get('cpu_count')} CPUs, torch threads {hw.get('torch_threads')})"
        + (f", GPU {hw['gpu']}" if hw.get("gpu") else "")
        + f"; torch {hw.get('torch')}",
        f"- Total wall time: {meta['wall_s']:.0f} s "
        + "("
        + ", ".join(f"{v} {r['wall_s']:.0f} s" for v, r in results.items())
        + ")",
        "- Rows beyond the variants: "
        + (
            ", ".join(
                f"`{k}`: `{' '.join(v)}`" for k, v in meta.get("rows", {}).items() if k not in ROW_NAMES
            )
            or "none"
        ),
        "",
        f"Protocol: {protocol.describe()}",
        "",
    ]
    if n > 1:
        lines += [
            f"Mean ± standard deviation over {n} seeds. (+) / (−): better / worse than the baseline by more than "
            f"the seed noise (Welch's t-test on the per-seed values, p < {SIGNIFICANCE}).",
            "",
        ]
    if any(c["delta_m"] is not None for c in comparison.values()):
        lines += [
            "Δm: mean relative gain in rms and mIoU over the single-task rows, in % (Maninis et al. 2019; "
            "Vandenhende et al. 2021).",
            "",
        ]
    lines += [format_results(results, comparison), format_diagnostics(results)]
    atomic_write_text(run_dir / "ablation.md", "\n".join(lines))
    atomic_write_json(
        run_dir / "ablation.json",
        {"meta": meta, "protocol": protocol.to_dict(), "results": results, "comparison": comparison},
    )


def _run_row(
    args: argparse.Namespace, name: str, overrides: list[str], seed: int, vdir: Path
) -> dict[str, Any]:
    """Train + evaluate one row / seed into ``vdir`` (reusing a finished run)."""
    from cinet.build.training import train

    metrics_file = vdir / "metrics.json"
    if metrics_file.is_file():
        data = json.loads(metrics_file.read_text(encoding="utf-8"))
        state_file = vdir / "state.json"
        state = json.loads(state_file.read_text(encoding="utf-8")) if state_file.is_file() else {}
        print(f"[ablate] {name} (seed {seed}): done before ({metrics_file})", flush=True)
        return {
            "metrics": {k: x for k, x in data.items() if k != "protocol"},
            "wall_s": float(sum(state.get("wall_s", {}).values())),
            "run_dir": str(vdir),
            "git": read_saved_git(vdir / "config.yaml") if (vdir / "config.yaml").is_file() else None,
            "diagnostics": training_diagnostics(vdir),
        }
    cfg = load_config(args.config, [*args.overrides, *overrides, f"train.seed={seed}"])
    print(f"[ablate] training {name} (seed {seed}) -> {vdir}", flush=True)
    resume = (vdir / "state.json").is_file()
    res = train(cfg, vdir, resume=resume, overwrite=not resume)
    git = read_saved_git(vdir / "config.yaml") if (vdir / "config.yaml").is_file() else None
    return {
        "metrics": res["metrics"],
        "wall_s": res["wall_s"],
        "run_dir": str(vdir),
        "git": git,
        "diagnostics": training_diagnostics(vdir),
    }


def check_ablation_dirs(run_dir: Path, row_dirs: dict[tuple[str, int], Path]) -> None:
    """Refuse, before any row trains, a folder that a later row or the final table could not use.

    Every row's run directory can be created, and an existing one is a finished row (reused), a cinet run
    directory (resumed or retrained) or empty; ``ablation.md`` / ``ablation.json`` can be written (an existing
    ``ablation.json`` is one of ``cinet ablate``'s).

    Raises:
        InputError: Naming the folder or file.
        ConfigError: A row's folder holds files ``cinet train`` did not write.
    """
    check_writable_dir(run_dir, "run directory")
    for (name, seed), vdir in row_dirs.items():
        if (vdir / "metrics.json").is_file():
            continue  # finished before: reused, nothing written there
        check_writable_dir(vdir, f"run directory of row {name!r} (seed {seed})")
        if vdir.is_dir() and any(vdir.iterdir()) and not is_run_dir(vdir):
            raise ConfigError(
                f"{vdir}: exists and is not a cinet run directory (row {name!r} trains there); "
                "move it away or choose another --run-dir"
            )
    check_output_file(run_dir / "ablation.md", "cinet ablate")
    check_output_file(run_dir / "ablation.json", "cinet ablate", kind="json", keys=("results",))


def run(args: argparse.Namespace) -> int:
    """Train + evaluate every row, then write and print the table."""

    from cinet.bench.common import hardware
    from cinet.build.builders import build_protocol, check_encoder_weights
    from cinet.build.data import dataset_info_from_config

    quiet_lightning(getattr(args, "verbose", 0))

    args.overrides = protocol_overrides(
        list(args.overrides), getattr(args, "protocol", None), bool(getattr(args, "flip", False))
    )
    rows = parse_rows(args.variants, list(getattr(args, "row", []) or []))
    if args.seeds is not None:  # "" too: an unset shell variable ran the config's seed alone, unseen
        parse_seeds(args.seeds)  # before any config is read
    base = load_config(args.config, args.overrides)
    # every row's config (and its encoder weights file) is valid before anything trains
    for overrides in rows.values():
        check_encoder_weights(load_config(args.config, [*args.overrides, *overrides]))
    stem = Path(args.config).stem if args.config else base.name
    run_dir = (
        Path(args.run_dir)
        if args.run_dir
        else Path("runs") / f"ablate-{stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    )
    seeds = parse_seeds(args.seeds) if args.seeds is not None else [base.train.seed]
    row_dirs = {
        (name, seed): run_dir / name / f"seed{seed}" if args.seeds else run_dir / name
        for seed in seeds
        for name in rows
    }
    check_ablation_dirs(run_dir, row_dirs)  # before the first row trains (a later row failed hours in)
    t0 = time.time()
    per_row: dict[str, list[dict[str, Any]]] = {r: [] for r in rows}
    for seed in seeds:  # seed-major: a cut-short run still has every row of the first seeds
        for name, overrides in rows.items():
            per_row[name].append(_run_row(args, name, overrides, seed, row_dirs[name, seed]))
    results = {r: _combine(runs) for r, runs in per_row.items()}
    if global_rank() != 0:
        return 0
    import dataclasses

    protocol = dataclasses.replace(  # every field that decides the numbers, the seeds averaged included
        build_protocol(base, dataset_info_from_config(base.data)), seeds=tuple(seeds)
    )
    variants = [r for r in rows if r in ROW_NAMES]
    meta = {
        "config": args.config,
        "overrides": list(args.overrides),
        "variants": variants,
        "rows": rows,
        "command": f"cinet ablate --config {args.config} --variants {','.join(variants)}"
        + "".join(
            f" --row {shlex.quote(name + ': ' + ' '.join(o))}"
            for name, o in rows.items()
            if name not in ROW_NAMES
        )
        + (f" --seeds {args.seeds}" if args.seeds else "")
        + f" --run-dir {run_dir}"
        + "".join(f" {o}" for o in args.overrides),
        # the revisions that trained the runs (recorded in each run's config.yaml)
        "git": ", ".join(sorted({str(r.get("git")) for rs in per_row.values() for r in rs}))
        or git_revision(),
        "seeds": seeds,
        "stages": [(s.stage, s.epochs, s.lr) for s in base.train.stages],
        "wall_s": sum(r["wall_s"] for r in results.values()),
        "session_wall_s": time.time() - t0,
        "hardware": hardware(),  # the machine: every GPU it has
        "config_dict": config_to_dict(base),
    }
    write_ablation(run_dir, results, protocol, meta)
    print((run_dir / "ablation.md").read_text(encoding="utf-8"))
    print(f"ablation: {run_dir / 'ablation.md'} and {run_dir / 'ablation.json'}")
    return 0
