"""The LightningModule of CI-Net: one training stage of the paper's schedule (Sec. 4.2).

What a stage means (attention map, active loss terms, what trains) is its :class:`cinet.recipe.StageRecipe`,
passed whole (the recipe table: the stage's row intersected with the variant's): variants without SUM have no
L_att and take no ideal map (their stages 1 and 2 differ only in the learning rate and length; the same epochs
for every variant keeps an ablation fair), variants without L_con train the same losses in stage 3 as in
stage 2. The module never reads the config: :func:`cinet.build.builders.build_module` builds it.

Diagnostics: every step, the gradient norm of each part of the network (``encoder``, ``sum``, ``sharing``,
``depth``, ``seg``: :meth:`cinet.models.CINet.diagnostic_groups`) is logged to TensorBoard (``grad_norm/*``)
and written to ``losses.csv`` with the loss terms.

Optimiser: SGD (momentum 0.9, weight decay 5e-4) with three groups: ``encoder`` (pretrained backbone,
``lr * encoder_lr_mult``), ``new`` (every other layer, ``lr``) and ``loss`` (learned sigmas of L_con, ``lr``,
no weight decay). The learning rate is updated every step.

A step whose gradients are not finite is skipped (no parameter update, :attr:`CINetModule.skipped_step`) with a
warning; after ``max_nonfinite`` skipped steps in a row training stops with :class:`NonFiniteLossError`; the last
checkpoint written before (good weights) is kept.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cinet.checkpoint import CheckpointPayload
from cinet.engine.callbacks import visual_grid
from cinet.errors import CinetError
from cinet.metrics import DepthMetrics, EvalProtocol, SegMetrics
from cinet.metrics.attention import ATTENTION_KEYS, AttentionAgreement
from cinet.models.cinet import build_kwargs_of
from cinet.models.sum import INFERENCE_ATTENTION_IMPL
from cinet.ops import resize_map, use_attention_impl
from cinet.preprocess import Geometry, InputSpec, fit
from cinet.recipe import TERMS, StageRecipe

log = logging.getLogger(__name__)

__all__ = ["CINetModule", "NonFiniteLossError", "Optimisation", "PolyLR"]


class NonFiniteLossError(CinetError):
    """Too many consecutive steps with non-finite loss or gradients."""


class PolyLR:
    """``(1 - step / total) ** power`` (LambdaLR factor; ``power = 0``: constant). Picklable."""

    def __init__(self, total_steps: int, power: float):
        self.total_steps = int(total_steps)
        self.power = float(power)

    def __call__(self, step: int) -> float:
        if self.power == 0 or step <= 0:
            return 1.0
        return max(1.0 - step / max(self.total_steps, 1), 0.0) ** self.power


@dataclass(frozen=True)
class Optimisation:
    """The optimiser of one stage (SGD, paper Sec. 4.2) and its non-finite-step guard.

    Attributes:
        lr: Learning rate of the new layers.
        poly_power: Poly decay power per step (0 = constant).
        momentum: SGD momentum.
        weight_decay: SGD weight decay.
        encoder_lr_mult: Learning-rate factor of the encoder.
        sharing_lr_mult: Learning-rate factor of the sharing modules (FSM / LSU).
        max_nonfinite: Consecutive non-finite steps tolerated.
    """

    lr: float = 2e-4
    poly_power: float = 0.0
    momentum: float = 0.9
    weight_decay: float = 5e-4
    encoder_lr_mult: float = 0.1
    sharing_lr_mult: float = 1.0
    max_nonfinite: int = 10


class CINetModule(L.LightningModule):
    """Model + loss + one stage of the recipe.

    Args:
        model: The CI-Net (``cinet.models.build_model``; its ``diagnostic_groups`` name the gradient norms,
            ``model.build_kwargs`` goes into checkpoints).
        loss: The :class:`cinet.losses.TotalLoss` of the variant.
        recipe: What this stage trains (:func:`cinet.recipe.stage_recipe`): attention map, active loss terms,
            whether L_con's sigmas train, the variant's tasks.
        protocol: How evaluation is done and reported (:class:`cinet.metrics.EvalProtocol`: class count,
            ignored label, depth range and crop, reduction, mIoU averaging, flip, network input size).
        optim: The optimiser settings (:class:`Optimisation`).
        channels_last: Channels-last model and inputs.
        payload: What its checkpoints carry besides the weights and the model's build arguments (dataset
            info, config, git, train_size): a :class:`cinet.checkpoint.CheckpointPayload` or its fields.
        palette: Class colours for the TensorBoard images.
        mean: The model's input normalisation mean (RGB, 0..1): with ``std``, ``eval_size`` and the payload's
            ``train_size`` it makes the module's :class:`cinet.preprocess.InputSpec` (evaluation's fit, the
            pictures of the inputs).
        std: The input normalisation std.
        num_vis: Images in the validation grid (0: none).
    """

    def __init__(
        self,
        model: nn.Module,
        loss: nn.Module,
        recipe: StageRecipe,
        *,
        protocol: EvalProtocol,
        optim: Optimisation = Optimisation(),
        channels_last: bool = False,
        payload: CheckpointPayload | dict[str, Any] | None = None,
        palette: list[list[int]] | None = None,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        num_vis: int = 4,
    ) -> None:
        super().__init__()
        self.model = model
        self.loss = loss
        self.recipe = recipe
        self.stage = recipe.stage
        self.optim = optim
        self.protocol = protocol
        if protocol.num_classes is None:
            raise ValueError("protocol.num_classes: the evaluated class count is needed")
        self.num_classes = int(protocol.num_classes)
        self.ignore_index = 255 if protocol.ignore_index is None else int(protocol.ignore_index)
        self.eval_size = tuple(protocol.input_size) if protocol.input_size else None
        self.eval_flip = bool(protocol.flip)
        self.channels_last = channels_last
        if not isinstance(payload, CheckpointPayload):
            payload = CheckpointPayload(**(payload or {}))
        self.payload = payload
        self.palette = palette
        self.input_spec = InputSpec(mean, std, train_size=payload.train_size, eval_size=self.eval_size)
        self.num_vis = num_vis
        dkw = {**protocol.depth_kwargs(), "reduction": protocol.reduction}
        miou_over, ignore_index, num_classes = protocol.miou_over, self.ignore_index, self.num_classes
        self.val_depth = DepthMetrics(**dkw)
        self.val_seg = SegMetrics(num_classes, ignore_index=ignore_index, miou_over=miou_over)
        self.test_depth = DepthMetrics(**dkw)
        self.test_seg = SegMetrics(num_classes, ignore_index=ignore_index, miou_over=miou_over)
        self.val_att = AttentionAgreement(ignore_index=ignore_index)  # the SUM's map against M M^T (Eq. 3-4)
        self.test_att = AttentionAgreement(ignore_index=ignore_index)
        self.nonfinite_streak = 0
        self.nonfinite_total = 0
        self.test_results: dict[str, Any] = {}
        self.last_terms: dict[str, torch.Tensor] = {}  # loss terms of the latest training step
        self.skipped_step = False  # the latest optimizer step was skipped (non-finite); read by the loss log
        # parameters of loss terms inactive in this stage get no gradient (keeps DDP's reducer happy)
        for p in loss.parameters():
            p.requires_grad_(recipe.trains_loss_parameters)
        self._grad_groups = {k: v for k, v in model.diagnostic_groups().items() if v}

    # ------------------------------------------------------------------------------------------ helpers

    def _images(self, batch: dict[str, Any]) -> torch.Tensor:
        images = batch["image"]
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return images

    def forward(self, images: torch.Tensor, ideal_labels: torch.Tensor | None = None) -> Any:
        return self.model(images, ideal_labels=ideal_labels)

    def setup(self, stage: str) -> None:
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)

    # ------------------------------------------------------------------------------------------ training

    def ideal_weight(self) -> float:
        """Weight of the ideal map at the current step (0 when the SUM learns its own map)."""
        if not self.recipe.uses_ideal_map:
            return 0.0
        steps_per_epoch = 1
        if self._trainer is not None:
            n = self.trainer.num_training_batches
            steps_per_epoch = (
                int(n) if isinstance(n, int) or (isinstance(n, float) and math.isfinite(n)) else 1
            )
        return self.recipe.ideal_weight(self.global_step, steps_per_epoch)

    def compute_losses(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """One training forward: the model on ``batch["image"]`` (with the stage's attention map) and the loss
        terms of Eq. 13 active in this stage for this variant (``"total"`` plus one entry per term).

        The whole step of a stage, without logging or the optimizer: ``training_step`` and
        ``cinet bench train-step`` / ``bench encoders`` run exactly this.

        Args:
            batch: ``image`` [B,3,H,W] (normalised), ``depth`` [B,1,H,W] metres (0 = invalid), ``labels``
                [B,H,W] (255 = ignore).
        """
        weight = self.ideal_weight()
        ideal = batch["labels"] if weight > 0 else None
        out = self.model(self._images(batch), ideal_labels=ideal, ideal_weight=weight if weight > 0 else 1.0)
        return self.loss(out, batch, self.recipe.terms)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        terms = self.compute_losses(batch)
        self.last_terms = {k: v.detach() for k, v in terms.items()}  # read by the loss log (no sync here)
        weight = self.ideal_weight()
        bs = batch["image"].shape[0]
        if self.recipe.attention == "handover":
            self.log("train/ideal_weight", weight, on_step=True, on_epoch=False, batch_size=bs)
        for name, value in terms.items():
            self.log(
                f"train/{name}",
                value.detach(),
                on_step=True,
                on_epoch=False,
                prog_bar=name == "total" or name in TERMS,  # the total and the top-level terms of Eq. 13
                batch_size=bs,
            )
        opt = self.optimizers(use_pl_optimizer=False) if self._trainer is not None else None
        if opt is not None:
            for group in opt.param_groups:
                self.log(
                    f"lr/{group.get('name', 'group')}",
                    group["lr"],
                    on_step=True,
                    on_epoch=False,
                    batch_size=bs,
                )
        return terms["total"]

    def configure_optimizers(self) -> dict[str, Any]:
        o = self.optim
        groups = self.model.parameter_groups()
        loss_params = [p for p in self.loss.parameters() if p.requires_grad]
        param_groups = [
            {"params": groups["encoder"], "lr": o.lr * o.encoder_lr_mult, "name": "encoder"},
            {"params": groups["new"], "lr": o.lr, "name": "new"},
        ]
        if groups["sharing"]:
            param_groups.append(
                {"params": groups["sharing"], "lr": o.lr * o.sharing_lr_mult, "name": "sharing"}
            )
        if loss_params:
            param_groups.append({"params": loss_params, "lr": o.lr, "weight_decay": 0.0, "name": "loss"})
        optimizer = torch.optim.SGD(param_groups, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
        # The total step count is set in on_train_start: asking Lightning for it here
        # (estimated_stepping_batches) would build the train loader before a resumed run restores its position.
        self._poly = PolyLR(0, o.poly_power)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, self._poly)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1},
        }

    def on_train_start(self) -> None:
        poly = getattr(self, "_poly", None)
        if poly is not None:
            poly.total_steps = max(int(self.trainer.estimated_stepping_batches), 1)

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Gradient norm of each part of the network (TensorBoard ``grad_norm/*`` and ``losses.csv``)."""
        norms: dict[str, torch.Tensor] = {}
        for name, params in self._grad_groups.items():
            grads = [p.grad for p in params if p.grad is not None]
            if grads:
                norms[name] = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads))).detach()
        for name, value in norms.items():
            self.last_terms[f"grad_{name}"] = value
            self.log(f"grad_norm/{name}", value, on_step=True, on_epoch=False, batch_size=1)

    def _grads_finite(self, optimizer: torch.optim.Optimizer) -> bool:
        grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        if not grads:
            return True
        norms = torch._foreach_norm(grads)
        return bool(torch.isfinite(torch.stack(norms)).all())

    def optimizer_step(
        self,
        epoch: int,
        batch_idx: int,
        optimizer: Any,
        optimizer_closure: Callable[[], Any] | None = None,
    ) -> None:
        """Run the step unless the loss or a gradient is NaN/inf (then skip the update and warn)."""
        scaler_handles_inf = str(self.trainer.precision) == "16-mixed"
        raw_optimizer = getattr(optimizer, "optimizer", optimizer)

        def closure() -> Any:
            loss = optimizer_closure() if optimizer_closure is not None else None
            finite = loss is None or bool(torch.isfinite(loss.detach()).all())
            if not scaler_handles_inf:
                finite = finite and self._grads_finite(raw_optimizer)
            self.skipped_step = not finite
            if not finite and not scaler_handles_inf:
                raw_optimizer.zero_grad(set_to_none=True)  # SGD skips params without grad: no update
            return loss

        optimizer.step(closure=closure)
        if self.skipped_step:
            self.nonfinite_streak += 1
            self.nonfinite_total += 1
            log.warning(
                "non-finite loss/gradients at step %d (stage %d): update skipped (%d in a row, limit %d)",
                self.global_step,
                self.stage,
                self.nonfinite_streak,
                self.optim.max_nonfinite,
            )
            if self.nonfinite_streak > self.optim.max_nonfinite:
                raise NonFiniteLossError(
                    f"training stopped at stage {self.stage}, step {self.global_step}: {self.nonfinite_streak} "
                    "consecutive non-finite losses/gradients (train.max_nonfinite); the last checkpoint "
                    "written before is kept — lower the learning rate or check the data"
                )
        else:
            self.nonfinite_streak = 0

    # ------------------------------------------------------------------------------------------ evaluation

    @torch.no_grad()
    def predict_batch(self, images: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Depth [B,1,H,W] (metres) and seg logits [B,C,H,W] at the input resolution of ``images`` [B,3,H,W]
        (None for the task a single-task model does not have).

        The one preprocessing of :mod:`cinet.preprocess` (the same as ``cinet predict``): resized to
        ``eval_size`` when set (else scaled to the training size ``payload.train_size`` when far from it),
        padded to a multiple of the output stride, outputs cropped and resized back. The SUM runs the
        inference attention path (:data:`cinet.models.sum.INFERENCE_ATTENTION_IMPL`). With ``eval_flip`` the
        mirrored image is predicted too and mirrored back: depth is the mean of the two maps, the returned
        scores are the log of the mean of the two softmax distributions (same argmax rule as logits).
        """
        depth, logits, _ = self._predict(images)
        return depth, logits

    @torch.no_grad()
    def _predict(self, images: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, tuple]:
        """:meth:`predict_batch` plus ``(AttentionState or None, Geometry)`` of the unmirrored pass."""
        depth, logits, attention = self._predict_once(images)
        if not self.eval_flip:
            return depth, logits, attention
        depth_f, logits_f, _ = self._predict_once(images.flip(-1))
        if depth is not None and depth_f is not None:
            depth = (depth + depth_f.flip(-1)) / 2
        if logits is not None and logits_f is not None:
            probs = (logits.softmax(1) + logits_f.flip(-1).softmax(1)) / 2
            logits = probs.clamp_min(torch.finfo(probs.dtype).tiny).log()
        return depth, logits, attention

    @torch.no_grad()
    def _predict_once(self, images: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, tuple]:
        spec = self.input_spec
        x, geometry = fit(images, input_size=spec.eval_size, train_size=spec.train_size)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with use_attention_impl(
            INFERENCE_ATTENTION_IMPL
        ):  # memory-bounded for large maps, whatever training uses
            out = self.model(x)

        def at_input_size(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else geometry.restore(t.float())

        return at_input_size(out.depth), at_input_size(out.seg_logits), (out.attention, geometry)

    def _labels_on_grid(
        self, labels: torch.Tensor, geometry: Geometry, size: tuple[int, int]
    ) -> torch.Tensor:
        """Labels ``[B,H,W]`` on the SUM's feature grid ``size``: resized by the nearest pixel centre
        (:func:`cinet.ops.resize_map`, the grid of the image's resize) and padded (ignore) as the image was
        for the network (:func:`cinet.preprocess.to_network`), then downsampled as in training (the same
        rule)."""

        lab = resize_map(labels, tuple(geometry.scaled))
        pad_h, pad_w = geometry.padded[0] - geometry.scaled[0], geometry.padded[1] - geometry.scaled[1]
        if pad_h or pad_w:
            lab = F.pad(lab, (0, pad_w, 0, pad_h), value=self.ignore_index)
        return resize_map(lab, tuple(size))

    def _eval_step(
        self,
        batch: dict[str, Any],
        depth_m: DepthMetrics,
        seg_m: SegMetrics,
        att_m: AttentionAgreement | None = None,
    ) -> tuple:
        """Update the metrics with one batch; a single-task model leaves the other task's metric empty, a model
        without a learned SUM map the attention agreement."""
        depth, logits, (attention, geometry) = self._predict(self._images(batch))
        pred_labels = logits.argmax(1) if logits is not None else None
        if depth is not None:
            depth_m.update(depth, batch["depth"])
        if pred_labels is not None:
            seg_m.update(pred_labels, batch["labels"])
        if att_m is not None and attention is not None and not attention.given:
            grid = self._labels_on_grid(batch["labels"], geometry, attention.size)
            att_m.update(attention.query, attention.key, grid)
        return depth, pred_labels

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        depth, pred_labels = self._eval_step(batch, self.val_depth, self.val_seg, self.val_att)
        if batch_idx == 0 and self.num_vis > 0 and depth is not None and pred_labels is not None:
            self._log_images(batch, depth, pred_labels)

    def on_validation_epoch_end(self) -> None:
        metrics = self._compute(self.val_depth, self.val_seg, self.recipe.tasks, self.val_att)
        for key, value in metrics.items():
            if isinstance(value, float) and math.isfinite(value):
                self.log(f"val/{key}", value, prog_bar=key in ("delta1", "rms", "miou"), sync_dist=True)

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch, self.test_depth, self.test_seg, self.test_att)

    def on_test_epoch_end(self) -> None:
        self.test_results = self._compute(self.test_depth, self.test_seg, self.recipe.tasks, self.test_att)
        for key, value in self.test_results.items():
            if isinstance(value, float) and math.isfinite(value):
                self.log(f"test/{key}", value, sync_dist=True)

    @staticmethod
    def _compute(
        depth_m: DepthMetrics,
        seg_m: SegMetrics,
        tasks: tuple[str, ...] = ("depth", "seg"),
        att_m: AttentionAgreement | None = None,
    ) -> dict[str, Any]:
        """Synchronised (torchmetrics) metrics as plain floats (``None`` for a task the model lacks, and for the
        attention agreement ``att_bce`` / ``att_auc`` of a model without a learned SUM map); resets them."""
        out: dict[str, Any] = {}
        if att_m is not None:
            with att_m.sync_context():  # the pair count over all ranks
                measured = float(att_m.pairs) > 0
            scores = att_m.compute() if measured else dict.fromkeys(ATTENTION_KEYS)
            out.update({k: (v if v is None or math.isfinite(v) else None) for k, v in scores.items()})
            att_m.reset()
        d = depth_m.compute()
        s = seg_m.compute()
        for task, src in (("depth", d), ("seg", s)):
            for k, v in src.items():
                if isinstance(v, torch.Tensor):
                    v = v.tolist() if v.ndim else float(v)
                out[k] = v if task in tasks else None
        n_images = getattr(depth_m, "n_images", None)
        if n_images is not None:
            with depth_m.sync_context():  # the count over all ranks (compute() restores local states)
                out["num_images"] = int(depth_m.n_images) + int(depth_m.n_skipped)
        depth_m.reset()
        seg_m.reset()
        return out

    def _log_images(self, batch: dict[str, Any], depth: torch.Tensor, pred_labels: torch.Tensor) -> None:
        logger = self.logger
        experiment = getattr(logger, "experiment", None) if logger is not None else None
        if experiment is None or not hasattr(experiment, "add_image") or self.global_rank != 0:
            return
        grid = visual_grid(
            batch["image"][: self.num_vis].detach().cpu(),
            batch["depth"][: self.num_vis].detach().cpu(),
            depth[: self.num_vis].detach().cpu(),
            batch["labels"][: self.num_vis].detach().cpu(),
            pred_labels[: self.num_vis].detach().cpu(),
            palette=self.palette,
            spec=self.input_spec,
        )
        experiment.add_image(f"val/stage{self.stage}", grid, self.global_step, dataformats="HWC")

    # ------------------------------------------------------------------------------------------ checkpoints

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        payload = dataclasses.replace(
            self.payload,
            model=build_kwargs_of(self.model),
            stage=self.stage,
            nonfinite_skipped=self.nonfinite_total,
        )
        payload.put(checkpoint)
        np_state = np.random.get_state()
        checkpoint["rng"] = {
            "torch": torch.random.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": [
                np_state[0],
                np_state[1].tolist(),
                int(np_state[2]),
                int(np_state[3]),
                float(np_state[4]),
            ],
            "python": random.getstate(),
        }
        generator = getattr(self.loss, "generator", None)  # L_pair's own generator, when one is set
        if generator is not None:
            checkpoint["rng"]["loss_generator"] = generator.get_state()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # the count of skipped updates continues (a resumed run reports the whole stage's count)
        self.nonfinite_total = CheckpointPayload.of(checkpoint, strict=False).nonfinite_skipped
        rng = checkpoint.get("rng")
        if not rng:
            return
        torch.random.set_rng_state(rng["torch"])
        if rng.get("cuda") and torch.cuda.is_available() and len(rng["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(rng["cuda"])
        n = rng.get("numpy")
        if n:
            np.random.set_state((n[0], np.asarray(n[1], dtype=np.uint32), n[2], n[3], n[4]))
        if rng.get("python"):
            py = rng["python"]
            random.setstate((py[0], tuple(py[1]), py[2]))
        generator = getattr(self.loss, "generator", None)
        if generator is not None and rng.get("loss_generator") is not None:
            generator.set_state(rng["loss_generator"])
