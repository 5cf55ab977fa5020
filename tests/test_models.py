"""CI-Net network: variants, shapes, gradients, SUM modes (Eq. 1–3), FSM/LSU (Eq. 5–6), memory formats."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cinet.models import CINet, CINetOutput, build_model
from cinet.models.decoder import DepthHead, UpsampleBlock
from cinet.models.fsm import FeatureSharingModule, LateralSharingUnit
from cinet.models.sum import SceneUnderstandingModule
from cinet.ops import attention_bce, resize_map
from cinet.recipe import VARIANTS, variant

K = 5  # classes
TINY = {"channels": 32, "qk_channels": 8, "decoder_channels": (16, 8, 8)}


def tiny(variant: str = "cinet", encoder: str = "resnet18", **kw) -> CINet:
    return build_model(variant=variant, encoder=encoder, num_classes=K, **{**TINY, **kw})


def labels_like(b: int, h: int, w: int) -> torch.Tensor:
    lab = torch.randint(0, K, (b, h, w))
    lab[:, :3, :4] = 255
    return lab


def _task_loss(model: CINet, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, CINetOutput]:
    out = model(images)
    loss = torch.zeros(())
    if out.depth is not None:
        loss = loss + F.l1_loss(out.depth, torch.full_like(out.depth, 2.0))
    if out.seg_logits is not None:
        loss = loss + F.cross_entropy(out.seg_logits, labels, ignore_index=255)
    if out.attention is not None:
        att = out.attention
        small = resize_map(labels, att.size).flatten(1)
        loss = loss + attention_bce(att.query, att.key, small)
    return loss, out


def _check_forward_backward(model: CINet, images: torch.Tensor) -> None:
    b, _, h, w = images.shape
    spec = variant(model.variant)
    labels = labels_like(b, h, w)
    loss, out = _task_loss(model, images, labels)
    assert isinstance(out, CINetOutput)
    assert (out.depth is not None) == ("depth" in spec.tasks)
    assert (out.seg_logits is not None) == ("seg" in spec.tasks)
    if out.depth is not None:
        assert out.depth.shape == (b, 1, h, w) and out.depth.dtype == torch.float32
        assert (out.depth > 0).all() and torch.isfinite(out.depth).all()
        assert len(out.depth_features) == 3 and [f.shape[1] for f in out.depth_features] == [32, 16, 8]
    if out.seg_logits is not None:
        assert out.seg_logits.shape == (b, K, h, w) and torch.isfinite(out.seg_logits).all()
        assert len(out.seg_features) == 3 and [f.shape[1] for f in out.seg_features] == [32, 16, 8]
    assert (out.attention is not None) == spec.use_sum
    assert len(out.shared_features) == (0 if spec.sharing == "none" else 3)
    for (fd, fs), d_next, s_next in zip(out.shared_features, out.depth_features, out.seg_features):
        assert fd.shape == d_next.shape and fs.shape == s_next.shape

    loss.backward()
    unconnected = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not unconnected, f"parameters outside the graph: {unconnected}"
    # Modules that start as the identity (zero-initialised allocations) pass no gradient to what feeds them
    # at step 0; after one SGD step every parameter must get a non-zero gradient.
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    model.zero_grad(set_to_none=True)
    loss, _ = _task_loss(model, images, labels)
    loss.backward()
    no_grad = [
        n
        for n, p in model.named_parameters()
        if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)
    ]
    assert not no_grad, f"parameters without gradient: {no_grad}"


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_variant_resnet18_shapes_and_gradients(variant: str) -> None:
    _check_forward_backward(tiny(variant), torch.randn(2, 3, 33, 45))


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_variant_resnet50_shapes_and_gradients(variant: str) -> None:
    _check_forward_backward(tiny(variant, "resnet50"), torch.randn(2, 3, 33, 45))


def test_odd_input_size() -> None:
    model = tiny("cinet")
    _check_forward_backward(model, torch.randn(2, 3, 97, 131))
    out = model.eval()(torch.randn(1, 3, 97, 131))
    assert [tuple(f.shape[-2:]) for f in out.depth_features] == [(13, 17), (25, 33), (49, 66)]


def test_variant_table_drives_the_modules() -> None:
    assert set(VARIANTS) == {
        "baseline", "sum", "sum_unsup", "fsm", "lsu", "sum_fsm", "cinet", "depth_only", "seg_only"
    }  # fmt: skip
    assert variant("cinet").consistency and not variant("sum_fsm").consistency
    for name, spec in VARIANTS.items():
        m = tiny(name)
        assert (m.sum is not None) == spec.use_sum
        kind = {"none": type(None), "fsm": FeatureSharingModule, "lsu": LateralSharingUnit}[spec.sharing]
        assert isinstance(m.share[0] if m.share is not None else None, kind)
        assert (m.variant, m.encoder_name, m.num_classes) == (name, "resnet18", K)
        assert m.build_kwargs["variant"] == name and m.build_kwargs["num_classes"] == K
    # library errors are ValueErrors starting with the argument's name (the build layer names the config key)
    with pytest.raises(
        ValueError, match=r"^variant: .*baseline, sum, sum_unsup, fsm, lsu, sum_fsm, cinet, depth_only"
    ):
        build_model(variant="nope", num_classes=3)
    with pytest.raises(ValueError, match=r"^attention_norm: 'softmax'"):
        build_model(variant="sum", encoder="resnet18", num_classes=3, attention_norm="softmax")


def test_eval_determinism() -> None:
    model = tiny("cinet").eval()
    x = torch.randn(2, 3, 33, 45)
    with torch.no_grad():
        a, b = model(x), model(x)
    assert torch.equal(a.depth, b.depth) and torch.equal(a.seg_logits, b.seg_logits)


def test_given_attention_modes() -> None:
    model = tiny("sum", zero_init_sum=False).eval()  # a non-zero value projection: the map changes the output
    x = torch.randn(2, 3, 33, 45)
    labels = labels_like(2, 33, 45)
    with torch.no_grad():
        learned = model(x)
        ideal = model(x, ideal_labels=labels)
        h, w = learned.attention.size
        small = resize_map(labels, (h, w)).flatten(1)  # [B,N]
        m = F.one_hot(small.clamp_max(K - 1), K).float() * (small != 255).unsqueeze(-1)  # [B,N,K]
        explicit = model(x, attention_map=m @ m.transpose(1, 2))
        random_map = model(x, attention_map=torch.rand(2, h * w, h * w))
    assert not learned.attention.given and ideal.attention.given and explicit.attention.given
    assert not torch.allclose(learned.depth, ideal.depth)
    assert not torch.allclose(learned.seg_logits, ideal.seg_logits)
    assert not torch.allclose(random_map.depth, ideal.depth)
    torch.testing.assert_close(ideal.depth, explicit.depth, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ideal.seg_logits, explicit.seg_logits, rtol=1e-5, atol=1e-5)
    # labels already at the feature size give the same result
    with torch.no_grad():
        same = model(x, ideal_labels=small.view(2, h, w))
    torch.testing.assert_close(same.depth, ideal.depth)


def test_sum_matches_equations_and_normalisation() -> None:
    x = torch.randn(2, 6, 3, 5)
    sum_n = SceneUnderstandingModule(6, qk_channels=4, normalize="n")
    sum_1 = SceneUnderstandingModule(6, qk_channels=4, normalize="none")
    sum_1.load_state_dict(sum_n.state_dict())
    y_n, state = sum_n(x)
    y_1, _ = sum_1(x)
    n = 15
    # Eq. 1-2 by hand
    flat = x.flatten(2)  # [B,C,N]
    q = torch.einsum("dc,bcn->bnd", sum_n.query.weight[:, :, 0, 0], flat) + sum_n.query.bias
    k = torch.einsum("dc,bcn->bnd", sum_n.key.weight[:, :, 0, 0], flat) + sum_n.key.bias
    v = torch.einsum("dc,bcn->bnd", sum_n.value.weight[:, :, 0, 0], flat) + sum_n.value.bias
    av = torch.sigmoid(q @ k.transpose(1, 2)) @ v  # [B,N,C]
    torch.testing.assert_close(y_1, av.transpose(1, 2).reshape(2, 6, 3, 5) + x)
    torch.testing.assert_close(y_1 - x, (y_n - x) * n)
    torch.testing.assert_close(state.logits(), q @ k.transpose(1, 2))
    assert state.size == (3, 5) and not state.given


def test_fsm_and_lsu_odd_sizes_and_equations() -> None:
    f_d, f_s = torch.randn(2, 8, 7, 9), torch.randn(2, 8, 7, 9)
    fsm = FeatureSharingModule(8)
    d, s, (ad, as_) = fsm(f_d, f_s)
    assert d.shape == s.shape == f_d.shape
    torch.testing.assert_close(d, f_d + ad)
    torch.testing.assert_close(s, f_s + as_)
    lsu = LateralSharingUnit(8)
    d, s, (ad, as_) = lsu(f_d, f_s)
    torch.testing.assert_close(d, f_d + lsu.d1(f_d) + lsu.s2(f_s))
    torch.testing.assert_close(s, f_s + lsu.d2(f_d) + lsu.s1(f_s))


def test_upsample_block_and_depth_head() -> None:
    up = UpsampleBlock(8, 4)
    assert up(torch.randn(1, 8, 5, 7), (11, 13)).shape == (1, 4, 11, 13)
    head = DepthHead(4, depth_init=3.0)
    torch.nn.init.zeros_(head.conv.weight)
    torch.testing.assert_close(head(torch.randn(1, 4, 3, 3)), torch.full((1, 1, 3, 3), 3.0))


def test_depth_head_runs_in_float32_under_bf16_autocast() -> None:
    # bf16 would quantise the depth to 2^-7 steps between 2 and 4 (1.6 cm at 3 m): the head stays float32
    head = DepthHead(16, depth_init=3.0)
    x = torch.randn(2, 16, 8, 10)
    reference = head(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_bf16 = head(x.bfloat16())
    assert under_bf16.dtype == torch.float32
    torch.testing.assert_close(under_bf16, head(x.bfloat16().float()))  # only the input's rounding remains
    assert not torch.equal(reference.bfloat16().float(), reference)  # a bf16 output would have differed


def test_parameter_groups_partition() -> None:
    model = tiny("cinet")
    groups = model.parameter_groups()
    ids = [id(p) for g in groups.values() for p in g]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    assert {id(p) for p in groups["encoder"]} == {id(p) for p in model.encoder.parameters()}
    assert {id(p) for p in groups["sharing"]} == {id(p) for p in model.share.parameters()}
    assert len(groups["new"]) > 0
    assert tiny("sum").parameter_groups()["sharing"] == []


def test_channels_last_matches_contiguous() -> None:
    model = tiny("cinet").eval()
    x = torch.randn(2, 3, 33, 45)
    with torch.no_grad():
        ref = model(x)
        model = model.to(memory_format=torch.channels_last)
        out = model(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(out.depth, ref.depth, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out.seg_logits, ref.seg_logits, rtol=1e-4, atol=1e-4)


def test_autocast_bf16_cpu() -> None:
    model = tiny("cinet").eval()
    labels = labels_like(1, 33, 45)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(torch.randn(1, 3, 33, 45))
        ideal = model(torch.randn(1, 3, 33, 45), ideal_labels=labels)
    for o in (out, ideal):
        assert o.depth.dtype == torch.float32 and (o.depth > 0).all()
        assert torch.isfinite(o.seg_logits.float()).all()
