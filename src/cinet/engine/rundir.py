"""The run directory of ``cinet train``: its layout, its ``state.json`` and the files written into it.

Layout::

    RUN_DIR/
      config.yaml          merged config (+ git revision)
      state.json           which stages are complete, whether the final evaluation ran
      stage1/last.ckpt     rolling checkpoint of stage 1 (final weights once the stage is complete)
      stage1/config.yaml   config that trained the stage
      stage1/losses.csv    one row per optimizer step: step, epoch, batch, skipped, loss terms (exact floats)
      stage2/ stage3/      same
      last.ckpt            copy of the final stage's checkpoint
      tb/stageN/           TensorBoard logs (loss terms, lr, val metrics, image grid)
      metrics.json         final model on the test split (METRIC_KEYS + protocol)

Only global rank 0 writes here (see :mod:`cinet.engine.distributed`); every write is atomic
(:mod:`cinet.utils.io`), so a killed process leaves the previous file or the new one, never half of one.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cinet.engine.distributed import global_rank
from cinet.errors import ConfigError
from cinet.utils.io import atomic_save, atomic_write_json, file_sha256

log = logging.getLogger(__name__)

STATE_FILE = "state.json"
LOSS_LOG = "losses.csv"
RUN_DIR_ENV = "CINET_RUN_DIR"
#: What ``cinet train`` (and ``cinet eval``'s default output) writes at the top of a run directory, besides
#: ``stage<N>`` folders and hidden temporaries: a folder holding anything else is not a run to replace.
RUN_ENTRIES = frozenset(
    {
        "config.yaml",
        STATE_FILE,
        "precision.json",
        "last.ckpt",
        "metrics.json",
        "tb",
        "profile",
        LOSS_LOG,
        "eval",
    }
)

__all__ = [
    "LOSS_LOG",
    "RUN_DIR_ENV",
    "STATE_FILE",
    "copy_atomic",
    "default_run_dir",
    "is_run_dir",
    "prepare_run_dir",
    "read_state",
    "remove_stale_temporaries",
    "write_metrics",
    "write_state",
]


def read_state(run_dir: str | Path) -> dict[str, Any]:
    """``state.json`` of a run directory (empty state when absent).

    Raises:
        ConfigError: The file exists but cannot be read or parsed (names the file).
    """
    p = Path(run_dir) / STATE_FILE
    if not p.is_file():
        return {"completed": [], "evaluated": False}
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{p}: unreadable run state ({exc})") from None


def write_state(run_dir: Path, state: dict[str, Any]) -> None:
    """Write ``state`` (with an ``updated`` time stamp) to ``RUN_DIR/state.json`` atomically, on rank 0 only."""

    if global_rank() == 0:
        state["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        atomic_write_json(run_dir / STATE_FILE, state)


def default_run_dir(name: str, config_path: str | Path | None) -> Path:
    """``runs/<config file stem, else name>-<job id or time>`` (stable across the processes of one distributed job)."""
    if os.environ.get(RUN_DIR_ENV) and "LOCAL_RANK" in os.environ:  # a process of a launched DDP job
        return Path(os.environ[RUN_DIR_ENV])
    stem = Path(config_path).stem if config_path else name
    job = os.environ.get("SLURM_JOB_ID") or os.environ.get("TORCHELASTIC_RUN_ID")
    if not job or job == "none":
        job = time.strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{stem}-{job}"


def foreign_entries(path: Path, allowed: frozenset[str] = RUN_ENTRIES) -> list[str]:
    """Names in folder ``path`` that cinet did not write there: not in ``allowed``, not ``stage<N>``, not hidden.

    Args:
        path: An existing folder.
        allowed: The top-level names cinet writes there (default: a training run's, :data:`RUN_ENTRIES`).

    Returns:
        The foreign names, sorted (empty: a folder cinet may replace).
    """
    return sorted(
        p.name for p in path.iterdir() if p.name not in allowed and not re.fullmatch(r"stage\d+|\..*", p.name)
    )


def is_run_dir(path: Path) -> bool:
    """True when ``path`` holds a ``state.json`` or a ``config.yaml`` (a folder ``cinet train`` made)."""
    return (path / STATE_FILE).is_file() or (path / "config.yaml").is_file()


def prepare_run_dir(
    run_dir: Path,
    *,
    stages: list[int],
    stage: int | None,
    resume: bool,
    overwrite: bool,
    write_config: Callable[[Path], None],
) -> dict[str, Any]:
    """Create the run directory (rank 0 writes), empty it or one stage of it for ``overwrite``, and return its
    state. What is refused was refused before any work (:func:`cinet.checks.outputs.check_run_dir`); a folder
    that ``cinet train`` did not make is never deleted here either.

    Args:
        run_dir: The run directory.
        stages: The run's stages in order (``train.stages``).
        stage: The one stage this invocation trains into an existing run (``stage=N``), else None.
        resume: Continue the run: only read its state.
        overwrite: Replace the run (or that one stage).
        write_config: Writes the run's ``config.yaml`` to the given path (the build layer's ``save_config``).
    """
    rank0 = global_rank() == 0
    exists = run_dir.exists() and any(run_dir.iterdir())
    if resume:
        return read_state(run_dir)
    if stage is not None and is_run_dir(run_dir):
        # one stage into an existing run (e.g. stage=2 after stage 1)
        stage_dir = run_dir / f"stage{stage}"
        if rank0 and overwrite and stage_dir.exists():
            shutil.rmtree(stage_dir)
        state = read_state(run_dir)
        state["completed"] = [s for s in state.get("completed", []) if s != stage]
        state["evaluated"] = False
        return state
    if exists and rank0 and overwrite and is_run_dir(run_dir):
        shutil.rmtree(run_dir)
    state = {"stages": list(stages), "completed": [], "evaluated": False}
    if rank0:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_config(run_dir / "config.yaml")
    return state


def copy_atomic(src: Path, dst: Path) -> None:
    """Copy ``src`` to ``dst`` through a temporary file (``dst`` is the old file or the whole new one)."""

    with open(src, "rb") as fh_in:
        atomic_save(dst, lambda fh: shutil.copyfileobj(fh_in, fh, length=16 << 20))


def remove_stale_temporaries(run_dir: Path) -> None:
    """Delete ``.NAME.XXXX.tmp`` files left by a process killed while writing (see :mod:`cinet.utils.io`)."""
    if global_rank() != 0 or not run_dir.is_dir():
        return
    for folder in [run_dir, *sorted(p for p in run_dir.glob("stage*") if p.is_dir())]:
        for tmp in folder.glob(".*.tmp"):
            log.info("removing %s (left by an interrupted write)", tmp)
            tmp.unlink(missing_ok=True)


def write_metrics(
    path: str | Path, metrics: dict[str, Any], protocol: Any, extra: dict[str, Any] | None = None
) -> dict:
    """Write ``metrics.json`` atomically: ``METRIC_KEYS`` + other entries + ``protocol``; returns the dict.

    When ``extra["checkpoint"]`` names a file and the protocol records no checkpoint hash, its SHA-256 is
    recorded (``protocol.checkpoint_sha256``), so the numbers never travel without the weights they measure.
    """

    from cinet.metrics import metrics_json  # local: cinet --help loads this module, metrics loads torch

    ckpt = (extra or {}).get("checkpoint")
    if (
        dataclasses.is_dataclass(protocol)
        and getattr(protocol, "checkpoint_sha256", "") is None
        and ckpt
        and Path(ckpt).is_file()
    ):
        protocol = dataclasses.replace(protocol, checkpoint_sha256=file_sha256(ckpt))
    data = metrics_json(metrics, protocol)
    if extra:
        data.update(extra)
    atomic_write_json(path, data)
    return data
