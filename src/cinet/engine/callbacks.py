"""Lightning plumbing: atomic checkpoint writes, the rolling ``last.ckpt``, TensorBoard image grids."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.pytorch.callbacks import TQDMProgressBar

from cinet.utils.io import atomic_save

log = logging.getLogger(__name__)

__all__ = ["AtomicCheckpointIO", "RollingCheckpoint", "StageProgressBar", "visual_grid"]


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
    the end of training. A resumed run continues from it (``ckpt_path``).

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
        trainer.save_checkpoint(self.path)
        self._last_saved_step = trainer.global_step
        log.debug("saved %s at step %d", self.path, trainer.global_step)

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
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
    mean: Sequence[float] = (0.485, 0.456, 0.406),
    std: Sequence[float] = (0.229, 0.224, 0.225),
) -> np.ndarray:
    """One row per image: input | GT depth | predicted depth | GT labels | predicted labels (HxWx3 uint8).

    Depth uses one colour range per row (from the ground truth, so GT and prediction are comparable);
    invalid ground truth and ignored labels are black.
    """
    from cinet.inference.visualize import colorize_depth, colorize_labels

    if palette is None:
        rng = np.random.default_rng(0)
        palette = rng.integers(0, 256, size=(256, 3)).tolist()
    rows = []
    for i in range(images.shape[0]):
        m = torch.as_tensor(mean).view(3, 1, 1)
        s = torch.as_tensor(std).view(3, 1, 1)
        rgb = _to_uint8((images[i].float() * s + m).clamp(0, 1).permute(1, 2, 0).numpy())
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
