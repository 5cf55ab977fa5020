"""Total loss (Eq. 13): term activation by stage and variant, weighted sum."""

from __future__ import annotations

import pytest
import torch

from cinet.losses import (
    LOSS_KEYS,
    LossWeights,
    TotalLoss,
    attention_loss_qk,
    depth_loss,
    weighted_cross_entropy,
)
from cinet.models.outputs import AttentionState, CINetOutput
from cinet.ops import resize_map
from cinet.recipe import Variant, stage_recipe

C = 3


def make_output(given: bool = False, with_attention: bool = True) -> CINetOutput:
    b, h, w = 2, 8, 8
    attention = None
    if with_attention:
        q = torch.randn(b, 16, 4, requires_grad=True)
        k = torch.randn(b, 16, 4, requires_grad=True)
        attention = AttentionState(query=q, key=k, size=(4, 4), given=given)
    sizes = [(2, 2), (4, 4), (8, 8)]
    return CINetOutput(
        depth=(torch.rand(b, 1, h, w) + 0.5).requires_grad_(),
        seg_logits=torch.randn(b, C, h, w, requires_grad=True),
        attention=attention,
        depth_features=[torch.randn(b, 4, *s, requires_grad=True) for s in sizes],
        seg_features=[torch.randn(b, 4, *s, requires_grad=True) for s in sizes],
    )


def make_batch() -> dict:
    depth = torch.rand(2, 1, 8, 8) * 5
    depth[0, 0, :2] = 0.0  # invalid rows
    labels = torch.randint(0, C, (2, 8, 8))
    labels[1, 3:5, 3:5] = 255
    return {"depth": depth, "labels": labels}


def expected_total(t: dict, w: LossWeights, att: bool, con: bool) -> float:
    total = w.alpha * t["depth"] + w.gamma * t["seg"]
    if att:
        total = total + t["att"]
    if con:
        total = total + w.beta * t["con"]
    return float(total.detach())


@pytest.mark.parametrize("stage", [1, 2, 3])
@pytest.mark.parametrize("use_attention", [True, False])
@pytest.mark.parametrize("use_consistency", [True, False])
def test_terms_by_stage_and_variant(stage: int, use_attention: bool, use_consistency: bool) -> None:
    loss = TotalLoss(C, use_attention=use_attention, use_consistency=use_consistency, num_pairs=50)
    variant = Variant(use_sum=use_attention, sharing="none", consistency=use_consistency)
    active = stage_recipe(variant, stage, "paper").terms
    out, batch = make_output(), make_batch()
    terms = loss(out, batch, active)
    assert tuple(terms) == LOSS_KEYS
    att_on = use_attention and stage >= 2
    con_on = use_consistency and stage == 3
    assert (terms["att"].item() > 0) == att_on
    assert (terms["con"].item() > 0) == con_on
    for name in ("berhu", "pair", "normal", "depth", "seg"):
        assert terms[name].item() > 0 and torch.isfinite(terms[name])
    w = LossWeights()
    assert terms["total"].item() == pytest.approx(expected_total(terms, w, att_on, con_on), rel=1e-6)
    terms["total"].backward()
    assert out.depth.grad is not None and out.seg_logits.grad is not None
    assert (out.attention.query.grad is not None) == att_on
    assert (out.depth_features[0].grad is not None) == con_on
    if con_on:
        assert loss.con_loss.log_sigma_d.grad.abs().sum() > 0


def test_given_attention_is_not_supervised() -> None:
    loss = TotalLoss(C, use_attention=True, use_consistency=False, num_pairs=20)
    terms = loss(make_output(given=True), make_batch(), ("depth", "seg", "att"))
    assert terms["att"].item() == 0.0


def test_terms_equal_the_pure_functions_and_custom_weights() -> None:
    w = LossWeights(alpha=2.0, beta=3.0, gamma=0.5, lam=0.5, mu=2.0)
    loss = TotalLoss(C, use_attention=True, use_consistency=True, weights=w, num_pairs=30)
    out, batch = make_output(), make_batch()
    loss.generator = torch.Generator().manual_seed(7)
    terms = loss(out, batch)
    d, parts = depth_loss(
        out.depth, batch["depth"], lam=0.5, mu=2.0, num_pairs=30,
        generator=torch.Generator().manual_seed(7), return_terms=True,
    )  # fmt: skip
    assert terms["depth"].item() == pytest.approx(d.item(), rel=1e-6)
    assert terms["depth"].item() == pytest.approx(
        (parts["berhu"] + 0.5 * parts["pair"] + 2.0 * parts["normal"]).item(), rel=1e-6
    )
    assert terms["seg"].item() == pytest.approx(
        weighted_cross_entropy(out.seg_logits, batch["labels"], C).item()
    )
    small = resize_map(batch["labels"], (4, 4))
    att = attention_loss_qk(out.attention.query, out.attention.key, small)
    assert terms["att"].item() == pytest.approx(att.item(), rel=1e-6)
    assert terms["total"].item() == pytest.approx(expected_total(terms, w, True, True), rel=1e-6)


def test_errors() -> None:
    loss = TotalLoss(C, use_attention=True, use_consistency=False)
    with pytest.raises(ValueError, match="unknown loss terms"):
        loss(make_output(), make_batch(), ("depth", "stage4"))
    with pytest.raises(ValueError, match="term 'att' needs"):
        loss(make_output(with_attention=False), make_batch(), ("depth", "seg", "att"))
    with pytest.raises(ValueError, match="term 'con' needs"):
        loss(make_output(), make_batch(), ("depth", "con"))
    # without 'att' the attention state is not needed
    assert loss(make_output(with_attention=False), make_batch(), ("depth", "seg"))["att"].item() == 0.0
    bad = make_batch()
    bad["labels"][0, 0, 0] = 9
    with pytest.raises(ValueError, match="label value 9"):
        loss(make_output(), bad, ("depth", "seg"))


def test_single_task_outputs() -> None:
    """A single-task model has None for the other output: only its own term, the other is zero."""
    loss = TotalLoss(C, use_attention=False, use_consistency=False, num_pairs=20)
    out, batch = make_output(with_attention=False), make_batch()
    depth_only = CINetOutput(depth=out.depth, seg_logits=None)
    terms = loss(depth_only, batch, ("depth",))
    assert terms["seg"].item() == 0.0 and terms["total"].item() == pytest.approx(terms["depth"].item())
    seg_only = CINetOutput(depth=None, seg_logits=out.seg_logits)
    terms = loss(seg_only, batch, ("seg",))
    assert terms["depth"].item() == 0.0
    assert terms["total"].item() == pytest.approx(LossWeights().gamma * terms["seg"].item())
    with pytest.raises(ValueError, match="no seg output"):
        loss(depth_only, batch, ("depth", "seg"))


def test_fixed_class_weights_buffer() -> None:
    w = torch.tensor([1.0, 2.0, 3.0])
    loss = TotalLoss(C, use_attention=False, use_consistency=False, class_weights=w)
    assert torch.equal(loss.state_dict()["seg_loss.class_weights"], w)
    out, batch = make_output(), make_batch()
    expected = weighted_cross_entropy(out.seg_logits, batch["labels"], C, weights=w)
    assert loss(out, batch, ("depth", "seg"))["seg"].item() == pytest.approx(expected.item())
