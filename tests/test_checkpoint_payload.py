"""The typed checkpoint payload (issue #24 item 5), the one input spec (item 3) and the layering of item 6: the
payload is read and written in ``cinet.checkpoint`` only, older checkpoints are migrated there once, and the
engine and inference do not import each other."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

from cinet.checkpoint import CheckpointPayload, load_model, read_checkpoint, save_model_checkpoint
from cinet.errors import CheckpointError
from cinet.preprocess import InputSpec
from inference_fixtures import tiny_info, tiny_model

SRC = Path(__file__).resolve().parents[1] / "src" / "cinet"


def test_payload_round_trip_keeps_the_stored_layout(tmp_path: Path) -> None:
    model, kwargs = tiny_model()
    path = save_model_checkpoint(
        tmp_path / "m.ckpt", model, kwargs, tiny_info(), train_size=(96, 128), git="abc"
    )
    stored = read_checkpoint(path)["cinet"]
    assert set(stored) == {"format", "model", "dataset", "config", "git", "train_size"}
    assert stored["format"] == 1 and stored["train_size"] == [96, 128] and stored["git"] == "abc"
    payload = CheckpointPayload.from_dict(stored)
    assert payload.to_dict() == stored
    assert payload.train_size == (96, 128) and payload.class_names == list(tiny_info().class_names)
    _, loaded = load_model(path)
    assert loaded == payload


def test_training_fields_are_written_only_for_a_stage() -> None:
    payload = CheckpointPayload(model={"variant": "cinet"}, stage=2, nonfinite_skipped=3)
    assert payload.to_dict()["stage"] == 2 and payload.to_dict()["nonfinite_skipped"] == 3
    assert CheckpointPayload.from_dict(payload.to_dict()) == payload


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"data": {"name": "nyuv2", "image_size": [240, 320]}}, (240, 320)),
        ({"data": {"name": "folder", "image_size": 64}}, (64, 64)),
        ({"data": {"name": "synthetic", "options": {"size": [48, 64]}}}, (48, 64)),
        ({"data": {"name": "synthetic"}}, (240, 320)),  # the synthetic render size before train_size existed
        ({"data": {"name": "folder"}}, None),
        ({}, None),
    ],
)
def test_old_checkpoints_without_train_size_are_migrated_once(config: dict, expected: tuple | None) -> None:
    old = {"format": 1, "model": {"variant": "cinet"}, "dataset": {}, "config": config}  # no train_size key
    assert CheckpointPayload.from_dict(old).train_size == expected


def test_a_stored_train_size_wins_over_the_config() -> None:
    stored = {
        "format": 1,
        "model": {},
        "config": {"data": {"image_size": [240, 320]}},
        "train_size": [12, 16],
    }
    assert CheckpointPayload.from_dict(stored).train_size == (12, 16)


def test_bad_payloads_are_refused_naming_the_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no 'model' entry"):
        CheckpointPayload.from_dict({"format": 1})
    with pytest.raises(ValueError, match="format 2 is not supported"):
        CheckpointPayload.from_dict({"format": 2, "model": {}})
    path = tmp_path / "bad.ckpt"
    torch.save({"state_dict": {}, "cinet": {"format": 7, "model": {}}}, path)
    with pytest.raises(
        CheckpointError, match=r"bad\.ckpt: checkpoint format 7 is not supported \(expected 1\)"
    ):
        load_model(path)


def test_the_input_spec_comes_from_the_payload() -> None:
    payload = CheckpointPayload(
        model={},
        dataset={"mean": [102.0, 127.5, 153.0], "std": [51.0, 63.75, 76.5]},  # the 0..255 scale
        config={"data": {"eval_size": [40, 56]}},
        train_size=(12, 16),
    )
    spec = payload.input_spec()
    assert spec.mean == pytest.approx((0.4, 0.5, 0.6)) and spec.std == pytest.approx((0.2, 0.25, 0.3))
    assert (spec.train_size, spec.eval_size) == ((12, 16), (40, 56))
    assert spec.plan(480, 640).scaled == (40, 56)  # the eval size, as cinet eval fits it
    with pytest.raises(ValueError, match="no input mean/std"):
        CheckpointPayload(model={}).input_spec()
    assert CheckpointPayload(model={}).input_spec(fallback=((0.5,) * 3, (0.5,) * 3)).mean == (0.5, 0.5, 0.5)


def test_input_spec_normalises_and_undoes_it() -> None:
    spec = InputSpec((0.4, 0.5, 0.6), (0.2, 0.25, 0.3))
    raw = torch.rand(2, 3, 5, 7)
    x = spec.normalize(raw)
    torch.testing.assert_close(x[:, 1], (raw[:, 1] - 0.5) / 0.25)
    torch.testing.assert_close(spec.denormalize(x), raw)
    rgb = (torch.rand(5, 7, 3) * 255).to(torch.uint8)
    torch.testing.assert_close(
        spec.normalize_uint8(rgb), spec.normalize(rgb.permute(2, 0, 1)[None].float() / 255)
    )
    with pytest.raises(ValueError, match="3 values"):
        InputSpec((0.5, 0.5), (0.5, 0.5))
    with pytest.raises(ValueError, match="std must be positive"):
        InputSpec((0.5,) * 3, (0.5, 0.0, 0.5))


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


def _importers(folder: str, prefixes: tuple[str, ...]) -> list[str]:
    files = sorted((SRC / folder).rglob("*.py")) if (SRC / folder).is_dir() else [SRC / folder]
    return [
        f"{f.relative_to(SRC)}: {m}" for f in files for m in sorted(_imports(f)) if m.startswith(prefixes)
    ]


def test_engine_and_inference_do_not_import_each_other() -> None:
    assert _importers("inference", ("cinet.engine", "cinet.commands", "cinet.config", "cinet.cli")) == []
    assert _importers("engine", ("cinet.inference",)) == []
    for name in ("checkpoint.py", "preprocess.py", "utils"):
        assert _importers(name, ("cinet.engine", "cinet.inference", "cinet.commands", "cinet.config")) == []


def _payload_reads(path: Path) -> list[str]:
    """``x["cinet"]`` / ``x.get("cinet")`` and ``payload[...]`` / ``payload.get(...)`` in the code of ``path``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Subscript):
            key = node.slice
            if isinstance(key, ast.Constant) and key.value == "cinet":
                found.append(f'line {node.lineno}: ["cinet"]')
            elif isinstance(node.value, ast.Name) and node.value.id == "payload":
                found.append(f"line {node.lineno}: payload[...]")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get":
            owner, args = node.func.value, node.args
            if args and isinstance(args[0], ast.Constant) and args[0].value == "cinet":
                found.append(f'line {node.lineno}: .get("cinet")')
            elif isinstance(owner, ast.Name) and owner.id == "payload":
                found.append(f"line {node.lineno}: payload.get(...)")
    return found


def test_the_payload_is_read_by_key_only_in_checkpoint_py() -> None:
    """Outside ``cinet/checkpoint.py`` no code indexes ``checkpoint["cinet"]`` or a payload dict by key."""
    offenders = [
        f"{f.relative_to(SRC)} {hit}"
        for f in sorted(SRC.rglob("*.py"))
        if f != SRC / "checkpoint.py"
        for hit in _payload_reads(f)
    ]
    assert offenders == []
    assert _payload_reads(SRC / "checkpoint.py")  # the one reader


def test_predict_and_serve_share_their_options_and_defaults() -> None:
    from cinet.cli import build_parser
    from cinet.commands.common import MODEL_DEFAULTS

    parser = build_parser()
    predict = vars(parser.parse_args(["predict", "--checkpoint", "m.ckpt", "x.png", "--out", "o"]))
    serve = vars(parser.parse_args(["serve", "--checkpoint", "m.ckpt"]))
    for key, value in MODEL_DEFAULTS.items():
        assert predict[key] == serve[key] == value, key
