"""The training recipe in one table: variant x stage -> attention map, active loss terms, what trains, DDP.

Torch-free and self-contained (it imports nothing of cinet), so the CLI's parsers, ``cinet ablate``'s tables,
the config schema, the model builder, the loss, the engine and the benches all read the same rows.

**Variants** (paper Tables 1–2; rows of :data:`VARIANTS`, the network has one code path):

| variant    | SUM        | sharing | L_con | tasks      | paper                                      |
|------------|------------|---------|-------|------------|--------------------------------------------|
| baseline   | no         | none    | no    | depth, seg | Table 1, baseline                          |
| sum        | supervised | none    | no    | depth, seg | Table 1, baseline + SUM                    |
| sum_unsup  | learned    | none    | no    | depth, seg | Fig. 7, SUM without L_att nor ideal map    |
| fsm        | no         | fsm     | no    | depth, seg | Table 1/2, baseline + FSM                  |
| lsu        | no         | lsu     | no    | depth, seg | Table 2, baseline + LSU                    |
| sum_fsm    | supervised | fsm     | no    | depth, seg | Table 1, baseline + SUM + FSM              |
| cinet      | supervised | fsm     | yes   | depth, seg | Table 1, CI-Net                            |
| depth_only | no         | none    | no    | depth      | single-task reference of Δm (not in paper) |
| seg_only   | no         | none    | no    | seg        | single-task reference of Δm (not in paper) |

"supervised": the SUM is fed the ideal map A = M M^T in stage 1 and its learned map is trained with L_att
(Eq. 3–4); "learned": the SUM learns its map from the task losses alone (the "without L_att" maps of the
paper's Fig. 7). The architecture columns (``use_sum``, ``sharing``, ``tasks``) are read by
:func:`cinet.models.build_model`; the training columns (``attention_supervision``, ``consistency``) by
:func:`stage_recipe`.

**Stages** (paper Sec. 4.2; rows of :data:`SCHEDULES`; the epochs and learning rates are config values,
``train.stages``):

========  ===========  ====================================  ==========================================
schedule  stage        SUM attention map                     scheduled terms
========  ===========  ====================================  ==========================================
paper     1            ideal A = M M^T (Eq. 3)               depth, seg
paper     2            learned A~ (Eq. 1)                    depth, seg, att
paper     3            learned                               depth, seg, att, con
learned   1, 2, 3      learned from the start                stage 1 also trains att
handover  1            ideal                                 depth, seg
handover  2            ``w A + (1 - w) A~``, w: 1 -> 0 over  depth, seg, att
                       the first ``handover_epochs``
handover  3            learned                               depth, seg, att, con
========  ===========  ====================================  ==========================================

``paper`` is the default and the paper's schedule; ``learned`` and ``handover`` exist to measure what the
stage-1 ideal map and its abrupt switch cost (``docs/results.md``).

**A run's stage** is one :class:`StageRecipe` (:func:`stage_recipe`): the stage's scheduled terms intersected
with the variant's (a variant without a SUM has no ``att`` term and takes no ideal map, one without L_con has
no ``con`` term, a single-task baseline has one task term). Every network parameter trains in every stage
(with the ideal map alone the SUM's Q/K projections get no gradient, which DDP must be told:
:attr:`StageRecipe.ddp_find_unused`); the learned sigmas of L_con train only where ``con`` is active
(:attr:`StageRecipe.trains_loss_parameters`).

Library code raises :class:`ValueError` here; the build layer (:mod:`cinet.build`) names the config key.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "ATTENTION_SOURCES",
    "DEPTH_PARTS",
    "LOSS_KEYS",
    "SCHEDULES",
    "STAGES",
    "TERMS",
    "VARIANTS",
    "LossWeights",
    "StageRecipe",
    "StageRow",
    "Variant",
    "stage_recipe",
    "variant",
]

#: The top-level terms of Eq. 13 that a stage can switch on (the one spelling of their names).
TERMS: tuple[str, ...] = ("depth", "seg", "att", "con")
#: The parts of L_depth (Eq. 11), reported beside the terms.
DEPTH_PARTS: tuple[str, ...] = ("berhu", "pair", "normal")
#: Every key the total loss returns: the total, the terms, the parts of L_depth (logged every step).
LOSS_KEYS: tuple[str, ...] = ("total", "depth", *DEPTH_PARTS, "seg", "att", "con")
#: The stages of the paper's schedule (Sec. 4.2).
STAGES: tuple[int, ...] = (1, 2, 3)
#: How the SUM's attention map is obtained in a stage.
ATTENTION_SOURCES: tuple[str, ...] = ("ideal", "learned", "handover")


@dataclass
class LossWeights:
    """Weights of Eq. 11 and Eq. 13 (defaults: paper Sec. 4.2); the config's ``loss.*`` weights are these fields
    (:class:`cinet.config.schema.LossConfig` extends this class).

    Attributes:
        alpha: Weight of L_depth in the total.
        beta: Weight of L_con in the total.
        gamma: Weight of L_seg in the total.
        lam: Weight of L_pair in L_depth.
        mu: Weight of L_norm in L_depth.
    """

    alpha: float = 1.0
    beta: float = 5.0
    gamma: float = 0.3
    lam: float = 1.0
    mu: float = 5.0


# ------------------------------------------------------------------------------------------------ variants


@dataclass(frozen=True)
class Variant:
    """One ablation variant (a row of :data:`VARIANTS`).

    Attributes:
        use_sum: Scene-understanding module after the encoder (Sec. 3.2).
        sharing: ``none | fsm | lsu`` before each upsampling block (Sec. 3.3).
        consistency: Train with the consistency loss L_con (Eq. 7).
        attention_supervision: With a SUM: ideal map in stage 1 and L_att (Eq. 3–4) on the learned map.
        tasks: Branches of the network (``("depth", "seg")``, or one for the single-task baselines).
        title: The row's name in tables (``cinet ablate``).
    """

    use_sum: bool
    sharing: str
    consistency: bool
    attention_supervision: bool = True
    tasks: tuple[str, ...] = ("depth", "seg")
    title: str = ""

    @property
    def supervised_attention(self) -> bool:
        """The variant has a SUM whose map is supervised (ideal map in stage 1, L_att)."""
        return self.use_sum and self.attention_supervision

    @property
    def loss_terms(self) -> frozenset[str]:
        """Top-level terms of Eq. 13 this variant can train: ``depth``, ``seg``, ``att``, ``con``."""
        terms = set(self.tasks)
        if self.supervised_attention:
            terms.add("att")
        if self.consistency:
            terms.add("con")
        return frozenset(terms)


VARIANTS: dict[str, Variant] = {
    "baseline": Variant(use_sum=False, sharing="none", consistency=False, title="baseline"),
    "sum": Variant(use_sum=True, sharing="none", consistency=False, title="baseline + SUM"),
    "sum_unsup": Variant(
        use_sum=True,
        sharing="none",
        consistency=False,
        attention_supervision=False,
        title="baseline + SUM without L_att (no ideal map)",
    ),
    "fsm": Variant(use_sum=False, sharing="fsm", consistency=False, title="baseline + FSM"),
    "lsu": Variant(use_sum=False, sharing="lsu", consistency=False, title="baseline + LSU"),
    "sum_fsm": Variant(use_sum=True, sharing="fsm", consistency=False, title="baseline + SUM + FSM"),
    "cinet": Variant(use_sum=True, sharing="fsm", consistency=True, title="CI-Net (SUM + FSM + L_con)"),
    "depth_only": Variant(
        use_sum=False, sharing="none", consistency=False, tasks=("depth",), title="depth only (single task)"
    ),
    "seg_only": Variant(
        use_sum=False,
        sharing="none",
        consistency=False,
        tasks=("seg",),
        title="segmentation only (single task)",
    ),
}


def variant(name: str) -> Variant:
    """The :class:`Variant` row of ``name``.

    Raises:
        ValueError: ``"variant: unknown variant ..."`` listing the valid names.
    """
    if name not in VARIANTS:
        raise ValueError(f"variant: unknown variant {name!r}; valid: {', '.join(VARIANTS)}")
    return VARIANTS[name]


# ------------------------------------------------------------------------------------------------ stages


@dataclass(frozen=True)
class StageRow:
    """One stage of a schedule (a row of :data:`SCHEDULES`), before the variant is known.

    Attributes:
        stage: 1, 2 or 3.
        attention: ``ideal`` (A = M M^T from the labels, Eq. 3), ``learned`` (A~, Eq. 1) or ``handover``
            (``w A + (1 - w) A~`` with w falling linearly from 1 to 0 over the first ``handover_epochs``).
        terms: Scheduled top-level terms of Eq. 13.
    """

    stage: int
    attention: str
    terms: frozenset[str]


def _row(stage: int, attention: str, *terms: str) -> StageRow:
    return StageRow(stage=stage, attention=attention, terms=frozenset(terms))


#: Schedule name -> its three stages (index = stage - 1).
SCHEDULES: dict[str, tuple[StageRow, StageRow, StageRow]] = {
    "paper": (
        _row(1, "ideal", "depth", "seg"),
        _row(2, "learned", "depth", "seg", "att"),
        _row(3, "learned", "depth", "seg", "att", "con"),
    ),
    "learned": (
        _row(1, "learned", "depth", "seg", "att"),
        _row(2, "learned", "depth", "seg", "att"),
        _row(3, "learned", "depth", "seg", "att", "con"),
    ),
    "handover": (
        _row(1, "ideal", "depth", "seg"),
        _row(2, "handover", "depth", "seg", "att"),
        _row(3, "learned", "depth", "seg", "att", "con"),
    ),
}


@dataclass(frozen=True)
class StageRecipe:
    """What one stage of one variant trains: the variant's row x the stage's row.

    Attributes:
        variant: Variant name (a key of :data:`VARIANTS`).
        stage: 1, 2 or 3.
        attention: The map the SUM uses: ``ideal``, ``learned`` or ``handover``; ``learned`` for a SUM
            without supervision (``sum_unsup``) and for variants without a SUM.
        terms: Active top-level terms of Eq. 13 (scheduled terms the variant has).
        tasks: The variant's branches (the metrics a model without one branch leaves empty).
        trains_loss_parameters: The learned sigmas of L_con train in this stage.
        ddp_find_unused: Some network parameters get no gradient (the SUM's Q/K under the ideal map alone).
        handover_epochs: Length of the ideal -> learned hand-over in epochs (``handover`` only).
    """

    variant: str
    stage: int
    attention: str
    terms: frozenset[str]
    tasks: tuple[str, ...] = ("depth", "seg")
    trains_loss_parameters: bool = False
    ddp_find_unused: bool = False
    handover_epochs: float = 2.0

    @property
    def uses_ideal_map(self) -> bool:
        """The SUM is fed the ideal map (alone or mixed) in this stage."""
        return self.attention in ("ideal", "handover")

    def ideal_weight(self, step: int, steps_per_epoch: int) -> float:
        """Weight w of the ideal map at optimizer ``step`` of this stage (1 = ideal map alone, 0 = learned).

        Args:
            step: Optimizer step within the stage (0-based).
            steps_per_epoch: Optimizer steps per epoch.

        Returns:
            1.0 for ``ideal``, 0.0 for ``learned``, ``max(0, 1 - step / (handover_epochs * steps_per_epoch))``
            for ``handover``.
        """
        if self.attention == "ideal":
            return 1.0
        if self.attention == "learned":
            return 0.0
        length = max(self.handover_epochs * max(steps_per_epoch, 1), 1e-9)
        return max(0.0, 1.0 - step / length)


def stage_recipe(
    variant_name: str | Variant, stage: int, schedule: str = "paper", *, handover_epochs: float = 2.0
) -> StageRecipe:
    """The :class:`StageRecipe` of ``variant_name`` in ``stage`` of ``schedule``.

    Args:
        variant_name: A key of :data:`VARIANTS`, or a :class:`Variant` row of one's own (named ``custom``).
        stage: 1, 2 or 3.
        schedule: A key of :data:`SCHEDULES` (``paper`` default).
        handover_epochs: Length of the hand-over (``handover`` schedule, stage 2).

    Raises:
        ValueError: Unknown variant, schedule or stage (the message starts with the argument's name).
    """
    spec = variant_name if isinstance(variant_name, Variant) else variant(variant_name)
    name = "custom" if isinstance(variant_name, Variant) else variant_name
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule: unknown schedule {schedule!r}; valid: {', '.join(SCHEDULES)}")
    if stage not in STAGES:
        raise ValueError(f"stage: must be 1, 2 or 3, got {stage!r}")
    row = SCHEDULES[schedule][stage - 1]
    terms = row.terms & spec.loss_terms
    attention = row.attention if spec.supervised_attention else "learned"
    return StageRecipe(
        variant=name,
        stage=stage,
        attention=attention,
        terms=terms,
        tasks=spec.tasks,
        trains_loss_parameters="con" in terms,
        ddp_find_unused=spec.use_sum and attention == "ideal",
        handover_epochs=float(handover_epochs),
    )
