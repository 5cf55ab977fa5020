"""Every module the paper adds starts as the identity of the path it sits on (docs/architecture.md).

At initialisation a variant with the SUM, the FSM or the LSU computes exactly what the same network without
those modules computes, given the same weights for the shared layers: FSM/LSU allocations (Eq. 5/6) and the
SUM's value projection (Eq. 2) start at zero. The default PyTorch init (``zero_init_*=False``) does not.
"""

from __future__ import annotations

import pytest
import torch

from cinet.models import build_model
from cinet.recipe import VARIANTS, variant

K = 5
TINY = {"channels": 32, "qk_channels": 8, "decoder_channels": (16, 8, 8)}


def _reference_variant(name: str) -> str:
    """The same network without SUM and sharing: the baseline, or the single-task variant itself."""
    tasks = variant(name).tasks
    return {("depth", "seg"): "baseline", ("depth",): "depth_only", ("seg",): "seg_only"}[tasks]


def _outputs(name: str, train: bool, **kw) -> tuple[torch.Tensor | None, ...]:
    torch.manual_seed(0)
    model = build_model(variant=name, encoder="resnet18", num_classes=K, **TINY, **kw)
    ref = build_model(variant=_reference_variant(name), encoder="resnet18", num_classes=K, **TINY)
    own = model.state_dict()
    ref.load_state_dict({k: own[k] for k in ref.state_dict()})  # shared layers: the same weights
    model.train(train)
    ref.train(train)
    x = torch.randn(2, 3, 33, 45, generator=torch.Generator().manual_seed(1))
    labels = torch.randint(0, K, (2, 33, 45), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        a = model(x, ideal_labels=labels if train else None)  # training stage 1 feeds the ideal map
        b = ref(x)
    return a.depth, b.depth, a.seg_logits, b.seg_logits


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_variant_is_its_reference_at_init(variant: str, train: bool) -> None:
    d, d_ref, s, s_ref = _outputs(variant, train)
    for got, want in ((d, d_ref), (s, s_ref)):
        assert (got is None) == (want is None)
        if got is not None:  # equal up to float summation order (the SUM's output has another memory layout)
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("variant", "option"),
    [("fsm", "zero_init_sharing"), ("lsu", "zero_init_sharing"), ("sum", "zero_init_sum")],
)
def test_default_pytorch_init_is_not_the_identity(variant: str, option: str) -> None:
    """The property is not automatic: with PyTorch's default init each module changes the output."""
    d, d_ref, s, s_ref = _outputs(variant, False, **{option: False})
    assert (d - d_ref).abs().max() > 1e-4 and (s - s_ref).abs().max() > 1e-4  # 10x the tolerance above


@pytest.mark.parametrize("variant", ["depth_only", "seg_only"])
def test_single_task_baselines_are_refused_by_predict_and_export(variant: str, tmp_path) -> None:
    from cinet.errors import CinetError
    from cinet.inference.export import export_onnx
    from cinet.inference.predictor import Predictor
    from inference_fixtures import tiny_info

    model = build_model(variant=variant, encoder="resnet18", num_classes=K, **TINY)
    info = tiny_info()
    with pytest.raises(CinetError, match=f"variant '{variant}' is a single-task baseline"):
        Predictor(model, info)
    with pytest.raises(CinetError, match="single-task baseline"):
        export_onnx(model, tmp_path / "m.onnx", height=32, width=32)
    assert not (tmp_path / "m.onnx").exists()
