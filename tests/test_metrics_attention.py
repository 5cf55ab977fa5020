"""Attention agreement of the SUM map with the ideal map M M^T (att BCE, pair AUC), against naive references."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from cinet.metrics.attention import AttentionAgreement


def naive(
    query: torch.Tensor, key: torch.Tensor, labels: torch.Tensor, ignore: int = 255
) -> dict[str, float]:
    """Materialise the N x N maps; exact AUC by comparing every (same-class, different-class) pair of pairs."""
    flat = labels.reshape(labels.shape[0], -1)
    logits = torch.bmm(query.double(), key.double().transpose(1, 2))
    valid = flat != ignore
    pair = valid[:, :, None] & valid[:, None, :]
    same = flat[:, :, None] == flat[:, None, :]
    x, t = logits[pair], same[pair]
    bce = float(F.binary_cross_entropy_with_logits(x, t.double()))
    diff = x[t][:, None] - x[~t][None, :]
    auc = float(((diff > 0).double() + 0.5 * (diff == 0).double()).mean())
    return {"att_bce": bce, "att_auc": auc}


def test_hand_computed_three_pixels() -> None:
    # logits_ij = q_i (k = 1): rows 2, 1, -1; labels 0, 0, 1 -> positives 2,2,1,1,-1; negatives 2,1,-1,-1
    q = torch.tensor([[[2.0], [1.0], [-1.0]]])
    k = torch.ones(1, 3, 1)
    m = AttentionAgreement()
    m.update(q, k, torch.tensor([[0, 0, 1]]))
    out = m.compute()
    assert out["att_auc"] == pytest.approx(13 / 20)  # (3.5 + 3.5 + 2.5 + 2.5 + 1) / 20, ties count half

    def sp(x: float) -> float:
        return math.log1p(math.exp(x))

    bce = (2 * (sp(2) - 2) + sp(2)) + (2 * (sp(1) - 1) + sp(1)) + (2 * sp(-1) + (sp(-1) + 1))
    assert out["att_bce"] == pytest.approx(bce / 9)


@pytest.mark.parametrize("tile", [1, 7, 1000])
def test_matches_naive_reference_over_batches_and_tiles(tile: int) -> None:
    g = torch.Generator().manual_seed(0)
    m = AttentionAgreement(tile=tile)
    qs, ks, ls = [], [], []
    for n in (30, 30):  # two batches of two images, 30 pixels each, 4 classes, some ignored
        q, k = torch.randn(2, n, 5, generator=g), torch.randn(2, n, 5, generator=g)
        labels = torch.randint(0, 4, (2, n), generator=g)
        labels[torch.rand(2, n, generator=g) < 0.2] = 255
        m.update(q, k, labels)
        qs.append(q), ks.append(k), ls.append(labels)
    out = m.compute()
    want = naive(torch.cat(qs), torch.cat(ks), torch.cat(ls))
    assert out["att_bce"] == pytest.approx(want["att_bce"], rel=1e-6)
    assert out["att_auc"] == pytest.approx(want["att_auc"], abs=2e-3)  # histogram ties: bins of 32/4095
    assert 0.3 < want["att_auc"] < 0.7  # random maps: near chance


def test_ideal_map_ranks_perfectly_and_empty_is_nan() -> None:
    labels = torch.tensor([[0, 1, 1, 2, 0, 255]])
    onehot = F.one_hot(labels.clamp(max=2), 3).float() * 4.0  # logits 16 for same class, 0 otherwise
    m = AttentionAgreement()
    m.update(onehot, onehot, labels)
    assert m.compute()["att_auc"] == pytest.approx(1.0)
    empty = AttentionAgreement()
    empty.update(onehot, onehot, torch.full_like(labels, 255))
    out = empty.compute()
    assert math.isnan(out["att_bce"]) and math.isnan(out["att_auc"])
    with pytest.raises(ValueError, match="do not match"):
        m.update(onehot, onehot, labels[:, :4])


def test_bf16_autocast_gives_the_float32_result() -> None:
    # validation under trainer.precision=bf16-mixed: a logit at the limit (q.k = 16) made the bf16 bin index
    # 4095 round to 4096 and bincount return 4097 bins (a new user's crash); the metric now runs in float32
    q = torch.full((1, 4, 1), 4.0)
    labels = torch.tensor([[0, 0, 1, 1]])
    reference = AttentionAgreement()
    reference.update(q, q, labels)
    under_bf16 = AttentionAgreement()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_bf16.update(q.bfloat16(), q.bfloat16(), labels)
    assert under_bf16.compute() == reference.compute()
    assert under_bf16.pos_hist.shape == (4096,)
    assert torch.equal(under_bf16.pos_hist, reference.pos_hist)
