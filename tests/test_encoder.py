"""Dilated ResNet encoder: output stride 8, dilation layout, weight loading (local files only, no network)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from cinet.errors import CheckpointError
from cinet.models import build_model
from cinet.models.encoder import ENCODERS, DilatedResNet


def _convs3x3(layer: nn.Module) -> list[nn.Conv2d]:
    return [m for m in layer.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]


@pytest.mark.parametrize("name", list(ENCODERS))
def test_output_stride_8_and_dilation_layout(name: str) -> None:
    enc = DilatedResNet(name).eval()
    assert enc.out_channels == (512 if name in ("resnet18", "resnet34") else 2048)
    for layer, dil, first in ((enc.layer3, 2, 1), (enc.layer4, 4, 2)):
        convs = [m for m in layer.modules() if isinstance(m, nn.Conv2d)]
        assert all(c.stride == (1, 1) for c in convs), "no stride in the dilated stages"
        c3 = _convs3x3(layer)
        assert max(c.dilation[0] for c in c3) == dil
        assert all(c.padding == c.dilation for c in c3), "padding must equal dilation"
        # torchvision's convention: the first block keeps the previous stage's dilation.
        assert {c.dilation[0] for c in _convs3x3(layer[0])} == {first}
        assert all(c.dilation == (dil, dil) for blk in list(layer)[1:] for c in _convs3x3(blk))
    # layer1/2 untouched
    assert all(c.dilation == (1, 1) for c in _convs3x3(enc.layer2))
    with torch.no_grad():
        feats, sizes = enc(torch.randn(1, 3, 35, 50))
    assert sizes == [(18, 25), (9, 13), (5, 7)]
    assert feats.shape == (1, enc.out_channels, 5, 7)


def test_state_dict_keys_match_torchvision() -> None:
    enc = DilatedResNet("resnet18")
    tv = {
        k: v.shape for k, v in torchvision.models.resnet18().state_dict().items() if not k.startswith("fc.")
    }
    assert {k: v.shape for k, v in enc.state_dict().items()} == tv


@pytest.fixture
def resnet18_file(tmp_path: Path) -> Path:
    path = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), path)
    return path


def test_local_weights_load_and_equal_file(resnet18_file: Path) -> None:
    ref = torch.load(resnet18_file, weights_only=True)
    random_enc = DilatedResNet("resnet18")
    assert not torch.equal(random_enc.conv1.weight, ref["conv1.weight"])
    enc = DilatedResNet("resnet18", weights=resnet18_file)
    for key, value in enc.state_dict().items():
        assert torch.equal(value, ref[key]), key
    model = build_model(variant="baseline", encoder="resnet18", num_classes=3, encoder_weights=resnet18_file)
    assert torch.equal(model.encoder.layer4[1].conv2.weight, ref["layer4.1.conv2.weight"])
    assert model.build_kwargs["encoder_weights"] == str(resnet18_file)


def test_missing_num_batches_tracked_is_accepted(tmp_path: Path) -> None:
    state = {k: v for k, v in torchvision.models.resnet18().state_dict().items() if "num_batches" not in k}
    torch.save(state, tmp_path / "old.pth")
    enc = DilatedResNet("resnet18", weights=tmp_path / "old.pth")
    assert torch.equal(enc.bn1.weight, state["bn1.weight"])


def test_mismatched_weights_name_file_and_key(resnet18_file: Path) -> None:
    with pytest.raises(CheckpointError) as err:
        DilatedResNet("resnet50", weights=resnet18_file)
    msg = str(err.value)
    assert str(resnet18_file) in msg and "layer1.0.conv1.weight" in msg and "\n" not in msg


def test_unexpected_and_missing_keys(tmp_path: Path) -> None:
    state = torchvision.models.resnet18().state_dict()
    extra = dict(state, **{"head.weight": torch.zeros(1)})
    torch.save(extra, tmp_path / "extra.pth")
    with pytest.raises(CheckpointError, match=r"unexpected key 'head\.weight'"):
        DilatedResNet("resnet18", weights=tmp_path / "extra.pth")
    del state["layer2.0.bn1.weight"]
    torch.save(state, tmp_path / "missing.pth")
    with pytest.raises(CheckpointError, match=r"missing\.pth.*layer2\.0\.bn1\.weight"):
        DilatedResNet("resnet18", weights=tmp_path / "missing.pth")


def test_missing_and_corrupt_files(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"nope\.pth"):
        DilatedResNet("resnet18", weights=tmp_path / "nope.pth")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a pickle")
    with pytest.raises(CheckpointError, match=r"bad\.pth"):
        DilatedResNet("resnet18", weights=bad)


def test_imagenet_offline_without_cache_is_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CINET_NO_NETWORK", "1")
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path))
    try:
        with pytest.raises(ValueError, match=r"^encoder_weights: imagenet.*encoder_weights"):
            DilatedResNet("resnet18", weights="imagenet")
    finally:
        torch.hub.set_dir(old)


def test_unknown_encoder() -> None:
    with pytest.raises(ValueError, match="resnet18, resnet34, resnet50, resnet101"):
        DilatedResNet("vgg16")
    with pytest.raises(ValueError, match=r"^encoder: .*resnet101"):
        build_model(encoder="resnet152", num_classes=3)
