"""The stage table (paper Sec. 4.2) and the optional schedules: terms, attention map, what trains, DDP."""

from __future__ import annotations

import pytest
import torch

from cinet.engine.stages import SCHEDULES, stage_spec
from cinet.errors import ConfigError
from cinet.models import VARIANTS, build_model, variant_spec


def test_paper_schedule_by_variant() -> None:
    cinet, base, unsup = variant_spec("cinet"), variant_spec("baseline"), variant_spec("sum_unsup")
    s1, s2, s3 = SCHEDULES["paper"]
    assert s1.active_terms(cinet) == {"depth", "seg"} and s1.uses_ideal_map(cinet)
    assert s2.active_terms(cinet) == {"depth", "seg", "att"} and not s2.uses_ideal_map(cinet)
    assert s3.active_terms(cinet) == {"depth", "seg", "att", "con"}
    assert s3.active_terms(variant_spec("sum_fsm")) == {"depth", "seg", "att"}
    assert all(s.active_terms(base) == {"depth", "seg"} for s in (s1, s2, s3))
    # the unsupervised SUM never sees the ideal map nor L_att
    assert all(
        s.active_terms(unsup) == {"depth", "seg"} and not s.uses_ideal_map(unsup) for s in (s1, s2, s3)
    )
    assert all(s.active_terms(variant_spec("depth_only")) == {"depth"} for s in (s1, s2, s3))
    assert all(s.active_terms(variant_spec("seg_only")) == {"seg"} for s in (s1, s2, s3))
    # what trains: L_con's sigmas only in stage 3 of cinet; DDP told about Q/K without gradient in stage 1
    assert [s.trains_loss_parameters(cinet) for s in (s1, s2, s3)] == [False, False, True]
    assert [s.ddp_find_unused(cinet) for s in (s1, s2, s3)] == [True, False, False]
    assert not s1.ddp_find_unused(base) and not s1.ddp_find_unused(unsup)


def test_learned_and_handover_schedules() -> None:
    cinet = variant_spec("cinet")
    l1 = stage_spec("learned", 1)
    assert l1.active_terms(cinet) == {"depth", "seg", "att"} and not l1.uses_ideal_map(cinet)
    assert not l1.ddp_find_unused(cinet)
    h2 = stage_spec("handover", 2)
    assert h2.uses_ideal_map(cinet) and h2.active_terms(cinet) == {"depth", "seg", "att"}
    # w falls linearly from 1 to 0 over handover_epochs * steps_per_epoch steps, then stays 0
    assert [h2.ideal_weight(s, 10, 2.0) for s in (0, 5, 10, 20, 30)] == [1.0, 0.75, 0.5, 0.0, 0.0]
    assert stage_spec("paper", 1).ideal_weight(7, 10, 2.0) == 1.0
    assert stage_spec("paper", 2).ideal_weight(0, 10, 2.0) == 0.0


def test_unknown_schedule_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"train\.schedule: unknown schedule 'x'"):
        stage_spec("x", 1)


def test_handover_mixes_the_two_maps() -> None:
    """w A + (1 - w) A~: the output at w = 0.25 is the same mix of the ideal-map and the learned-map outputs."""
    model = build_model(
        variant="sum", encoder="resnet18", num_classes=4, channels=16, qk_channels=4,
        decoder_channels=(8, 8, 8), zero_init_sum=False,
    ).eval()  # fmt: skip
    x = torch.randn(1, 3, 32, 40)
    labels = torch.randint(0, 4, (1, 32, 40))
    feats = {}
    model.sum.register_forward_hook(lambda m, i, o: feats.__setitem__("y", o[0]))
    with torch.no_grad():
        model(x, ideal_labels=labels)
        ideal = feats["y"].clone()
        model(x)
        learned = feats["y"].clone()
        out = model(x, ideal_labels=labels, ideal_weight=0.25)
    torch.testing.assert_close(feats["y"], 0.25 * ideal + 0.75 * learned, rtol=1e-5, atol=1e-6)
    assert not out.attention.given  # part of the map is learned: L_att applies


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_variant_has_a_stage_row(variant: str) -> None:
    spec = variant_spec(variant)
    for schedule in SCHEDULES:
        for stage in (1, 2, 3):
            terms = stage_spec(schedule, stage).active_terms(spec)
            assert terms and terms <= spec.loss_terms
