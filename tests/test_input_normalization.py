"""Input normalisation from the checkpoint (issue #23, kind 3): every path that runs a trained model on dataset
images (eval, export's INT8 calibration and accuracy check) normalises with the mean / std stored in the
checkpoint, never with a default. The checkpoint here stores (0.4, 0.5, 0.6) / (0.2, 0.25, 0.3), which no
encoder uses, so a default (ImageNet) anywhere shows. Expected inputs are made from the raw pixels by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from cinet.build import data as build_data
from cinet.checkpoint import CheckpointPayload, load_model, save_model_checkpoint
from cinet.data import load_dataset
from cinet.data.base import denormalize
from cinet.inference import quantize
from inference_fixtures import tiny_info, tiny_model

SIZE = (40, 56)
STORED_MEAN, STORED_STD = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)


def synthetic_checkpoint(path: Path) -> Path:
    from dataclasses import replace

    from cinet.data.synthetic.dataset import synthetic_info

    model, kwargs = tiny_model(num_classes=13)
    info = replace(synthetic_info(SIZE), mean=STORED_MEAN, std=STORED_STD)
    config = {"data": {"name": "synthetic", "options": {"size": list(SIZE)}, "length": 2, "eval_length": 2}}
    return save_model_checkpoint(path, model, kwargs, info, config=config)


def raw_images(split: str, length: int) -> list[torch.Tensor]:
    """The dataset's images in 0..1, undone from whatever the dataset normalised them with."""
    ds = load_dataset("synthetic", split=split, size=list(SIZE), length=length)
    return [denormalize(ds[i]["image"], ds.info.mean, ds.info.std) for i in range(length)]


def by_hand(raw: torch.Tensor) -> torch.Tensor:
    m = torch.tensor(STORED_MEAN).view(3, 1, 1)
    s = torch.tensor(STORED_STD).view(3, 1, 1)
    return (raw - m) / s


def test_the_stored_normalisation_is_read_once_and_wins_over_the_encoder(tmp_path: Path) -> None:
    ckpt = synthetic_checkpoint(tmp_path / "m.ckpt")
    model, payload = load_model(ckpt)
    assert payload.normalization == (STORED_MEAN, STORED_STD)
    assert (model.input_mean, model.input_std) == (STORED_MEAN, STORED_STD)
    assert CheckpointPayload(
        dataset={"mean": [102.0, 127.5, 153.0], "std": [51.0, 63.75, 76.5]}
    ).normalization == (
        pytest.approx(STORED_MEAN),
        pytest.approx(STORED_STD),
    )  # the 0..255 scale
    assert CheckpointPayload(dataset={}).normalization is None


def test_int8_calibration_and_accuracy_check_use_the_checkpoint_normalisation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cinet.cli import main

    seen: dict[str, list[np.ndarray]] = {}

    def capture_quantize(fp32_path, int8_path, inputs, **kwargs):
        seen["calibration"] = [np.asarray(x) for x in inputs]
        Path(int8_path).write_bytes(Path(fp32_path).read_bytes())  # the float model stands in for INT8
        return {"keep_float": []}

    def capture_compare(runners, samples, **kwargs):
        seen["held_out"] = [s["image"].numpy() for s in samples]
        return {"fp32": {"delta1": 0.5, "miou": 0.2}, "int8": {"delta1": 0.5, "miou": 0.2}}

    monkeypatch.setattr(quantize, "quantize_int8", capture_quantize)
    monkeypatch.setattr(quantize, "compare_accuracy", capture_compare)
    ckpt = synthetic_checkpoint(tmp_path / "m.ckpt")
    args = ["export", "--checkpoint", str(ckpt), "--onnx", str(tmp_path / "m.onnx"), "--quantize", "int8"]
    args += ["--exporter", "torchscript", "--num-calib", "2", "--num-eval", "2", "--no-check"]
    assert main(args) == 0
    for key, split, n in (("calibration", "train", 2), ("held_out", "test", 2)):
        got = seen[key]
        assert len(got) == n
        for x, raw in zip(got, raw_images(split, n)):
            np.testing.assert_allclose(x.reshape(3, *SIZE), by_hand(raw).numpy(), rtol=0, atol=1e-5)


def test_eval_normalises_with_the_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cinet.build.training import evaluate_checkpoint

    built: list[tuple] = []
    real = build_data.build_dataset

    def spy(cfg, split, *, train, mean, std):
        built.append((split, tuple(mean), tuple(std)))
        return real(cfg, split, train=train, mean=mean, std=std)

    monkeypatch.setattr(build_data, "build_dataset", spy)
    ckpt = synthetic_checkpoint(tmp_path / "m.ckpt")
    metrics, _, _ = evaluate_checkpoint(ckpt, overrides=["trainer.accelerator=cpu"])
    assert metrics["num_images"] == 2
    assert built and all(b[1:] == (STORED_MEAN, STORED_STD) for b in built), built


def test_tiny_info_is_not_an_encoder_normalisation() -> None:
    """The fixture's stored values must differ from every encoder default, or the tests above prove nothing."""
    from cinet.models.encoder import encoder_normalization

    assert tiny_info().mean == STORED_MEAN
    for name in ("resnet18", "timm:test_vit", "timm:resnet10t"):
        assert encoder_normalization(name)[0] != STORED_MEAN


def test_int8_float32_row_equals_cinet_eval_of_the_same_checkpoint(tmp_path: Path) -> None:
    """The accuracy check runs the float32 export exactly as ``cinet eval`` runs the checkpoint: the checkpoint's
    normalisation and the one fit policy (training-size rule, padding to a multiple of 8, outputs restored).
    Images of 44x60 (not multiples of 8) from a model trained at 12x16 (far: scaled down to 16 wide, then padded)."""
    import json
    from dataclasses import replace

    from cinet.build.training import evaluate_checkpoint
    from cinet.cli import main
    from cinet.data.synthetic.dataset import synthetic_info

    model, kwargs = tiny_model(num_classes=13)
    info = replace(synthetic_info((44, 60)), mean=STORED_MEAN, std=STORED_STD)
    config = {"data": {"name": "synthetic", "options": {"size": [44, 60]}, "length": 2, "eval_length": 3}}
    ckpt = save_model_checkpoint(tmp_path / "m.ckpt", model, kwargs, info, config=config, train_size=(12, 16))
    out = tmp_path / "m.onnx"
    args = ["export", "--checkpoint", str(ckpt), "--onnx", str(out), "--quantize", "int8", "--exporter",
            "torchscript", "--num-calib", "2", "--num-eval", "3", "--max-delta1-drop", "1", "--max-miou-drop", "100"]  # fmt: skip
    assert main(args) == 0
    fp32 = json.loads((tmp_path / "m.int8.accuracy.json").read_text())["fp32"]
    metrics, _, _ = evaluate_checkpoint(ckpt, overrides=["trainer.accelerator=cpu"])
    assert fp32["num_images"] == metrics["num_images"] == 3
    for key in ("delta1", "abs_rel", "rms", "miou", "pixel_acc"):
        assert fp32[key] == pytest.approx(metrics[key], rel=1e-3, abs=1e-3), key


def test_predictor_from_checkpoint_normalises_with_the_checkpoint(tmp_path: Path) -> None:
    """``cinet predict`` / ``serve``: the network input of a photo is ``(rgb / 255 - mean) / std`` with the stored
    values (computed here by hand)."""
    from cinet.inference.predictor import Predictor
    from inference_fixtures import synthetic_image

    ckpt = synthetic_checkpoint(tmp_path / "m.ckpt")
    predictor = Predictor.from_checkpoint(ckpt)
    rgb = synthetic_image(*SIZE, 5)
    x = predictor.prepare(rgb)[1]  # [3,H,W] at 40x56: a multiple of 8, no training size stored: as is
    expected = by_hand(torch.from_numpy(rgb).permute(2, 0, 1).float() / 255.0)
    torch.testing.assert_close(x[:, : SIZE[0], : SIZE[1]], expected, rtol=0, atol=1e-5)


def test_predictor_of_a_model_uses_the_models_normalisation(tmp_path: Path) -> None:
    """``Predictor(model, info)`` with an info of other statistics (e.g. ``dataset_info(...)``'s ImageNet
    default): the model's own mean/std, what it was trained with, win."""
    from cinet.data import dataset_info
    from cinet.inference.predictor import Predictor
    from inference_fixtures import synthetic_image

    model, _ = load_model(synthetic_checkpoint(tmp_path / "m.ckpt"))
    predictor = Predictor(model, dataset_info("synthetic", size=list(SIZE)))
    assert (predictor.info.mean, predictor.info.std) == (STORED_MEAN, STORED_STD)
    rgb = synthetic_image(*SIZE, 5)
    expected = by_hand(torch.from_numpy(rgb).permute(2, 0, 1).float() / 255.0)
    torch.testing.assert_close(predictor.prepare(rgb)[1], expected, rtol=0, atol=1e-5)
