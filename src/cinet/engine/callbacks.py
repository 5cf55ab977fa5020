"""Lightning plumbing: atomic checkpoint writes, the rolling ``last.ckpt``, the per-step loss log, image grids."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.pytorch.callbacks import TQDMProgressBar

from cinet.losses.total import LOSS_KEYS
from cinet.models.cinet import DIAGNOSTIC_GROUPS
from cinet.preprocess import InputSpec
from cinet.utils.colors import colorize_depth, colorize_labels
from cinet.utils.io import atomic_save, atomic_write_text

log = logging.getLogger(__name__)

__all__ = [
    "AtomicCheckpointIO",
    "LossLog",
    "ProgressLines",
    "RollingCheckpoint",
    "StageProgressBar",
    "read_losses",
    "visual_grid",
]


class AtomicCheckpointIO(TorchCheckpointIO):
    """``torch.save`` into a temporary file next to the target, then ``os.replace``: never a torn file."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None
    ) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO does not take storage_options")
        atomic_save(path, lambda fh: torch.save(checkpoint, fh))


class RollingCheckpoint(L.Callback):
    """Keep ``path`` (``stageN/last.ckpt``) up to date: every ``every_n_steps`` steps, at every epoch end and at
    the end of training. A resumed run continues from it (``ckpt_path``). The step that ends an epoch is saved
    by the epoch end only (never at its batch end: see :meth:`on_train_batch_end`).

    Args:
        path: Checkpoint file.
        every_n_steps: Also save every N optimizer steps (0: epoch ends only).
    """

    def __init__(self, path: str | Path, every_n_steps: int = 0):
        self.path = str(path)
        self.every_n_steps = int(every_n_steps)
        self._last_saved_step = -1

    def _save(self, trainer: L.Trainer) -> None:
        if trainer.global_step == self._last_saved_step or trainer.sanity_checking:
            return
        if getattr(trainer.lightning_module, "nonfinite_streak", 0) > 0:
            return  # keep the checkpoint of the last good step while updates are being skipped
        trainer.save_checkpoint(self.path)
        self._last_saved_step = trainer.global_step
        log.debug("saved %s at step %d", self.path, trainer.global_step)

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        if trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            # the epoch-end save follows. Lightning (2.6) resumed from a checkpoint of the last batch's end does
            # not count the next epoch as started, so the next checkpoint looks like an epoch boundary and a
            # resume from it repeats that epoch's first batches (issue 25)
            return
        if self.every_n_steps > 0 and trainer.global_step % self.every_n_steps == 0:
            self._save(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._save(trainer)

    def state_dict(self) -> dict[str, Any]:
        return {"path": self.path}


class StageProgressBar(TQDMProgressBar):
    """Lightning's TQDM bar titled ``stage N epoch E``, showing the loss terms without the ``train/`` prefix."""

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        return {k.removeprefix("train/"): v for k, v in metrics.items()}

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_start(trainer, pl_module)
        stage = getattr(pl_module, "stage", "?")
        self.train_progress_bar.set_description(f"stage {stage} epoch {trainer.current_epoch}")


def _duration(seconds: float) -> str:
    """``1h02m``, ``3m05s`` or ``42s``."""
    s = round(max(0.0, seconds))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


class ProgressLines(L.Callback):
    """Plain progress lines for a log file, CI output or a cluster job (where the progress bar is off).

    One line every ``every_n_steps`` optimizer steps and at the end of every epoch (rank 0 only)::

        stage 1 epoch 3/20 step 40/160: total 2.8834 depth 1.9040 seg 2.0871 | 1.52 steps/s, 6.1 images/s, eta 1m19s

    The loss terms are the means over the steps since the previous line (terms that are exactly 0 in every step,
    i.e. inactive in this stage, are left out); the speed is measured over the same steps; the ETA is the
    remaining steps of the stage at that speed.

    Args:
        every_n_steps: Steps between two lines (the epoch-end line is always written).
        stream: Where to write (default: ``sys.stderr`` at the time of writing).
    """

    def __init__(self, every_n_steps: int = 10, stream: Any = None):
        self.every_n_steps = max(1, int(every_n_steps))
        self.stream = stream
        self._reset()

    def _reset(self) -> None:
        self._sums: dict[str, torch.Tensor] = {}
        self._steps = 0
        self._images = 0
        self._t0 = time.monotonic()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._reset()
        self._last_line_step = trainer.global_step

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if trainer.global_rank != 0:
            return
        for k, v in (getattr(pl_module, "last_terms", None) or {}).items():
            v = v.detach().float()
            self._sums[k] = self._sums[k] + v if k in self._sums else v
        self._steps += 1
        image = batch.get("image") if isinstance(batch, dict) else None
        self._images += int(image.shape[0]) if image is not None else 0
        if trainer.global_step % self.every_n_steps == 0:
            self._line(trainer, pl_module)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_rank == 0 and self._steps:
            self._line(trainer, pl_module)

    def _line(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        elapsed = max(time.monotonic() - self._t0, 1e-9)
        names = [k for k in LOSS_KEYS if k in self._sums]
        means = (torch.stack([self._sums[k] for k in names]) / self._steps).tolist() if names else []
        terms = " ".join(f"{k} {m:.4f}" for k, m in zip(names, means) if k == "total" or m != 0.0)
        steps_per_s = self._steps / elapsed
        total = trainer.estimated_stepping_batches
        step = trainer.global_step
        where = f"stage {getattr(pl_module, 'stage', '?')} epoch {trainer.current_epoch + 1}"
        if trainer.max_epochs and trainer.max_epochs > 0:
            where += f"/{trainer.max_epochs}"
        where += f" step {step}"
        eta = ""
        if isinstance(total, int | float) and total != float("inf") and total > 0:
            where += f"/{int(total)}"
            eta = f", eta {_duration((int(total) - step) / steps_per_s)}"
        speed = f"{steps_per_s:.2f} steps/s, {self._images / elapsed:.1f} images/s{eta}"
        print(f"{where}: {terms} | {speed}", file=self.stream or sys.stderr, flush=True)
        self._reset()


class LossLog(L.Callback):
    """Append one CSV row per optimizer step to ``path`` (``stageN/losses.csv``), written and flushed at once.

    Columns: ``step`` (global step after the update), ``epoch``, ``batch`` (index in the epoch), ``skipped``
    (1: non-finite loss, no update), then the loss terms (``repr`` of the float: exact). Must run before
    :class:`RollingCheckpoint` in the callback list, so that a checkpoint never holds a step whose row is not
    written. When training (re)starts, the file is rewritten atomically with only its complete rows up to the
    restored step: a resumed run continues it without gaps or duplicates. Only global rank 0 writes (its own
    batch's losses).

    Args:
        path: CSV file.
    """

    TERMS = (*LOSS_KEYS, *(f"grad_{g}" for g in DIAGNOSTIC_GROUPS))
    HEADER = ",".join(("step", "epoch", "batch", "skipped", *TERMS))

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._fh: Any = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_rank != 0:
            return
        start = trainer.global_step  # 0, or the step restored from the checkpoint
        keep = [self.HEADER]
        if self.path.is_file():
            complete = self.path.read_text(encoding="utf-8").split("\n")[1:-1]  # the last piece may be torn
            for line in complete:
                step = line.split(",", 1)[0]
                if step.isdigit() and int(step) <= start and line.count(",") == self.HEADER.count(","):
                    keep.append(line)
        atomic_write_text(self.path, "\n".join(keep) + "\n")
        self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - open for the whole stage

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self._fh is None:
            return
        terms = getattr(pl_module, "last_terms", None) or {}
        skipped = int(bool(pl_module.skipped_step))  # CINetModule.skipped_step
        names = [k for k in self.TERMS if k in terms]
        floats = torch.stack([terms[k].float() for k in names]).tolist() if names else []  # one device sync
        found = dict(zip(names, floats))
        values = [repr(found[k]) if k in found else "" for k in self.TERMS]
        row = [str(trainer.global_step), str(trainer.current_epoch), str(batch_idx), str(skipped)]
        self._fh.write(",".join(row + values) + "\n")
        self._fh.flush()

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def read_losses(path: str | Path) -> list[dict[str, float]]:
    """The rows of a :class:`LossLog` CSV as dicts of floats (``nan`` kept; empty cells left out)."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    names = lines[0].split(",")
    rows = []
    for line in lines[1:]:
        rows.append({k: float(v) for k, v in zip(names, line.split(",")) if v != ""})
    return rows


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)


def visual_grid(
    images: torch.Tensor,
    gt_depth: torch.Tensor,
    pred_depth: torch.Tensor,
    gt_labels: torch.Tensor,
    pred_labels: torch.Tensor,
    *,
    palette: Sequence[Sequence[int]] | None = None,
    spec: InputSpec,
) -> np.ndarray:
    """One row per image: input | GT depth | predicted depth | GT labels | predicted labels (HxWx3 uint8).

    The inputs (normalised) are undone with ``spec`` (:meth:`cinet.preprocess.InputSpec.denormalize`). Depth
    uses one colour range per row (from the ground truth, so GT and prediction are comparable); invalid ground
    truth and ignored labels are black.
    """
    if palette is None:
        rng = np.random.default_rng(0)
        palette = rng.integers(0, 256, size=(256, 3)).tolist()
    rows = []
    for i in range(images.shape[0]):
        rgb = _to_uint8(spec.denormalize(images[i].float()).permute(1, 2, 0).numpy())
        gt = gt_depth[i, 0].float().numpy()
        valid = gt[gt > 0]
        vmin = float(valid.min()) if valid.size else None
        vmax = float(valid.max()) if valid.size else None
        gt_rgb, (lo, hi) = colorize_depth(gt, vmin, vmax)
        pred_rgb, _ = colorize_depth(pred_depth[i, 0].float().numpy(), lo, hi)
        gl = colorize_labels(gt_labels[i].numpy(), palette)
        pl = colorize_labels(pred_labels[i].numpy(), palette)
        rows.append(np.concatenate([rgb, gt_rgb, pred_rgb, gl, pl], axis=1))
    return np.concatenate(rows, axis=0)
