"""The training stages of the paper (Sec. 4.2) as one table, and the optional schedules beside it.

A stage is one row of :data:`SCHEDULES`: which attention map the SUM uses and which top-level loss terms of
Eq. 13 are scheduled. What a run actually trains is that row intersected with the variant
(:class:`cinet.models.factory.VariantSpec`): a variant without a SUM has no ``att`` term and takes no ideal
map, one without L_con has no ``con`` term, a single-task baseline has one task term. The epochs and learning
rate of each stage are config values (``train.stages``), not part of the table.

========  ===========  ====================================  ==========================================
schedule  stage        SUM attention map                     scheduled terms
========  ===========  ====================================  ==========================================
paper     1            ideal A = M M^T (Eq. 3)               depth, seg
paper     2            learned A~ (Eq. 1)                    depth, seg, att
paper     3            learned                               depth, seg, att, con
learned   1, 2, 3      learned from the start                stage 1 also trains att
handover  1            ideal                                 depth, seg
handover  2            ``w A + (1 - w) A~``, w: 1 -> 0 over  depth, seg, att
                       the first ``train.handover_epochs``
handover  3            learned                               depth, seg, att, con
========  ===========  ====================================  ==========================================

``paper`` is the default and the paper's schedule; ``learned`` and ``handover`` exist to measure what the
stage-1 ideal map and its abrupt switch cost (``docs/results.md``).

What trains: every network parameter in every stage (with the ideal map the SUM's Q/K projections get no
gradient, which DDP must be told: :meth:`StageSpec.ddp_find_unused`); the learned sigmas of L_con only in a
stage where ``con`` is active (:meth:`StageSpec.trains_loss_parameters`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from cinet.errors import ConfigError

if TYPE_CHECKING:
    from cinet.models.factory import VariantSpec

__all__ = ["ATTENTION_SOURCES", "SCHEDULES", "StageSpec", "stage_spec"]

#: How the SUM's attention map is obtained in a stage.
ATTENTION_SOURCES = ("ideal", "learned", "handover")


@dataclass(frozen=True)
class StageSpec:
    """One training stage.

    Attributes:
        stage: 1, 2 or 3.
        attention: ``ideal`` (A = M M^T from the labels, Eq. 3), ``learned`` (A~, Eq. 1) or ``handover``
            (``w A + (1 - w) A~`` with w falling linearly from 1 to 0 over the first ``handover_epochs``).
        loss_terms: Scheduled top-level terms of Eq. 13 (``depth``, ``seg``, ``att``, ``con``).
    """

    stage: int
    attention: str
    loss_terms: frozenset[str]

    def active_terms(self, variant: VariantSpec) -> frozenset[str]:
        """The terms trained in this stage by ``variant`` (scheduled terms the variant has)."""
        return self.loss_terms & variant.loss_terms

    def uses_ideal_map(self, variant: VariantSpec) -> bool:
        """The SUM is fed the ideal map (alone or mixed) in this stage."""
        return variant.supervised_attention and self.attention in ("ideal", "handover")

    def ideal_weight(self, step: int, steps_per_epoch: int, handover_epochs: float) -> float:
        """Weight w of the ideal map at optimizer ``step`` of this stage (1 = ideal map alone, 0 = learned).

        Args:
            step: Optimizer step within the stage (0-based).
            steps_per_epoch: Optimizer steps per epoch.
            handover_epochs: Length of the hand-over in epochs (``handover`` only).

        Returns:
            1.0 for ``ideal``, 0.0 for ``learned``, ``max(0, 1 - step / (handover_epochs * steps_per_epoch))``
            for ``handover``.
        """
        if self.attention == "ideal":
            return 1.0
        if self.attention == "learned":
            return 0.0
        length = max(handover_epochs * max(steps_per_epoch, 1), 1e-9)
        return max(0.0, 1.0 - step / length)

    def trains_loss_parameters(self, variant: VariantSpec) -> bool:
        """The learned sigmas of L_con train in this stage."""
        return "con" in self.active_terms(variant)

    def ddp_find_unused(self, variant: VariantSpec) -> bool:
        """Some network parameters get no gradient (the SUM's Q/K under the ideal map alone)."""
        return variant.use_sum and self.attention == "ideal" and variant.supervised_attention


def _stage(stage: int, attention: str, *terms: str) -> StageSpec:
    return StageSpec(stage=stage, attention=attention, loss_terms=frozenset(terms))


#: Schedule name -> its three stages (index = stage - 1).
SCHEDULES: dict[str, tuple[StageSpec, StageSpec, StageSpec]] = {
    "paper": (
        _stage(1, "ideal", "depth", "seg"),
        _stage(2, "learned", "depth", "seg", "att"),
        _stage(3, "learned", "depth", "seg", "att", "con"),
    ),
    "learned": (
        _stage(1, "learned", "depth", "seg", "att"),
        _stage(2, "learned", "depth", "seg", "att"),
        _stage(3, "learned", "depth", "seg", "att", "con"),
    ),
    "handover": (
        _stage(1, "ideal", "depth", "seg"),
        _stage(2, "handover", "depth", "seg", "att"),
        _stage(3, "learned", "depth", "seg", "att", "con"),
    ),
}


def stage_spec(schedule: str, stage: int) -> StageSpec:
    """The :class:`StageSpec` of ``stage`` (1–3) in ``schedule``.

    Raises:
        ConfigError: Unknown schedule (names ``train.schedule``) or stage.
    """
    if schedule not in SCHEDULES:
        raise ConfigError(f"train.schedule: unknown schedule {schedule!r}; valid: {', '.join(SCHEDULES)}")
    if stage not in (1, 2, 3):
        raise ConfigError(f"train.stages: stage must be 1, 2 or 3, got {stage!r}")
    return SCHEDULES[schedule][stage - 1]
