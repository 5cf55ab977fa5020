"""Weights that travel: checkpoint -> save_pretrained folder -> from_pretrained / cinet predict --pretrained.

Offline only: a local folder, and the same folder laid out as a Hugging Face Hub cache entry
(``models--user--name/refs/main`` + ``snapshots/<commit>/``) read with ``HF_HUB_OFFLINE=1``; the upload is
checked against a stand-in for ``HfApi``. No test reaches the network.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import huggingface_hub
import numpy as np
import pytest
from PIL import Image

from cinet import Predictor
from cinet.cli import main
from cinet.errors import CheckpointError, InputError
from cinet.inference import hub
from inference_fixtures import save_tiny_checkpoint, synthetic_image

METRICS = {
    "delta1": 0.5,
    "rms": 1.25,
    "miou": 0.25,
    "att_auc": 0.75,
    "protocol": {
        "dataset": "toy",
        "name": "mtl",
        "crop": None,
        "min_depth": 1e-9,
        "max_depth": None,
        "reduction": "pooled",
        "miou_over": "all",
        "flip": False,
        "num_classes": 5,
        "split": "val",
        "seeds": [0, 1, 2],
        "image_size": None,
        "input_size": None,
        "checkpoint_sha256": "ab" * 32,
        "ignore_index": 255,
        "description": "toy | ...",
    },
}


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = save_tiny_checkpoint(tmp_path_factory.mktemp("hub") / "run" / "last.ckpt")
    (path.parent / "metrics.json").write_text(json.dumps(METRICS))  # picked up from beside the checkpoint
    return path


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("imgs")
    Image.fromarray(synthetic_image(40, 56, seed=1)).save(d / "room.png")
    Image.fromarray(synthetic_image(50, 36, seed=2)).save(d / "tall.png")
    return d


def test_folder_layout_config_and_card(ckpt: Path, tmp_path: Path) -> None:
    folder = hub.save_pretrained(ckpt, tmp_path / "model")
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    config = json.loads((folder / "config.json").read_text())
    assert config["model"]["variant"] == "cinet" and config["model"]["num_classes"] == 5
    assert config["dataset"]["class_names"] == [f"class{i}" for i in range(5)]
    assert config["metrics"] == METRICS
    assert config["source_sha256"] == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    from safetensors.torch import load_file

    from cinet.checkpoint import load_model

    net, _ = load_model(ckpt)
    stored = load_file(str(folder / "model.safetensors"))
    assert stored.keys() == net.state_dict().keys()  # the network's own keys: build_model(**config["model"])
    card = (folder / "README.md").read_text()
    assert card.startswith("---\n") and "library_name: cinet" in card
    assert "| these weights |" in card and "1.250" in card and "att AUC" in card  # the metrics
    assert "protocol mtl" in card and "pooled over pixels" in card  # with their protocol line
    for field in ("split", "num_classes", "seeds", "flip", "miou_over", "checkpoint_sha256"):
        assert f"| {field} |" in card, field
    assert config["source_sha256"] in card and "Predictor.from_pretrained" in card
    assert not list(tmp_path.glob(".model.*"))  # the temporary build folder is gone


def test_round_trip_predict_identical(ckpt: Path, images: Path, tmp_path: Path) -> None:
    folder = tmp_path / "model"
    assert main(["export", "--checkpoint", str(ckpt), "--pretrained", str(folder)]) == 0
    a = Predictor.from_checkpoint(ckpt)
    b = Predictor.from_pretrained(folder)
    img = synthetic_image(40, 56, seed=3)
    pa, pb = a.predict(img, return_probs=True), b.predict(img, return_probs=True)
    assert np.array_equal(pa.depth, pb.depth) and np.array_equal(pa.labels, pb.labels)
    assert np.array_equal(pa.probs, pb.probs)
    out_c, out_p = tmp_path / "c", tmp_path / "p"
    common = [str(images), "--no-progress", "--ply", "--intrinsics", "50,48,27.5,19.5"]  # one is a tall photo
    assert main(["predict", "--checkpoint", str(ckpt), *common, "--out", str(out_c)]) == 0
    assert main(["predict", "--pretrained", str(folder), *common, "--out", str(out_p)]) == 0
    files = sorted(p.name for p in out_c.iterdir())
    assert files == sorted(p.name for p in out_p.iterdir()) and len(files) >= 14
    for name in files:
        assert (out_c / name).read_bytes() == (out_p / name).read_bytes(), name


def test_serve_loads_the_folder(ckpt: Path, tmp_path: Path) -> None:
    from cinet.cli import build_parser
    from cinet.commands import serve

    folder = hub.save_pretrained(ckpt, tmp_path / "model")
    args = build_parser().parse_args(["serve", "--pretrained", str(folder), "--max-side", "0"])
    served = serve.load_predictor(args)
    direct = Predictor.from_checkpoint(ckpt, max_side=None)
    img = synthetic_image(40, 56, seed=5)
    assert np.array_equal(served.predict(img).depth, direct.predict(img).depth)
    assert served.model_kwargs["variant"] == "cinet"


def _fake_cache(folder: Path, cache: Path, repo_id: str) -> str:
    """The hub cache layout of ``repo_id`` at one commit, holding the files of ``folder``."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    entry = cache / f"models--{repo_id.replace('/', '--')}"
    (entry / "refs").mkdir(parents=True)
    (entry / "refs" / "main").write_text(commit)
    shutil.copytree(folder, entry / "snapshots" / commit)
    return commit


def test_from_a_faked_hub_cache_offline(
    ckpt: Path, images: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = hub.save_pretrained(ckpt, tmp_path / "model")
    cache = tmp_path / "hf-cache"
    _fake_cache(folder, cache, "someone/cinet-tiny")
    a = Predictor.from_checkpoint(ckpt)
    b = Predictor.from_pretrained("someone/cinet-tiny", cache_dir=cache)
    img = synthetic_image(40, 56, seed=4)
    assert np.array_equal(a.predict(img).depth, b.predict(img).depth)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))  # as HF_HUB_CACHE=... would
    out = tmp_path / "out"
    args = ["predict", "--pretrained", "someone/cinet-tiny", str(images / "room.png"), "--out", str(out)]
    assert main([*args, "--no-progress"]) == 0
    assert (out / "room_depth.png").is_file()


def test_not_cached_offline_and_bad_folders_are_one_line(
    ckpt: Path, images: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    with pytest.raises(CheckpointError, match=r"someone/absent: cannot get config\.json"):
        Predictor.from_pretrained("someone/absent", cache_dir=tmp_path / "empty-cache")
    img = str(images / "room.png")
    assert (
        main(["predict", "--pretrained", str(tmp_path / "nowhere"), img, "--out", str(tmp_path / "o")]) == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nowhere" in err[0]
    # weights that do not fit the model config.json describes: one line naming the weights file
    folder = hub.save_pretrained(ckpt, tmp_path / "model")
    config = json.loads((folder / "config.json").read_text())
    config["model"]["num_classes"] = 7
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"model\.safetensors: weights do not fit .*num_classes=7"):
        Predictor.from_pretrained(folder)


def test_existing_folder_is_never_overwritten(
    ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="exists and is not an empty folder"):
        hub.save_pretrained(ckpt, folder)
    assert main(["export", "--checkpoint", str(ckpt), "--pretrained", str(folder)]) == 2
    assert [p.name for p in folder.iterdir()] == ["notes.txt"] and (
        folder / "notes.txt"
    ).read_text() == "mine"
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    empty = tmp_path / "empty"
    empty.mkdir()
    assert (hub.save_pretrained(ckpt, empty, metrics={}) / "config.json").is_file()  # an empty one is filled
    card = (empty / "README.md").read_text()
    assert "No evaluation was recorded" in card


def test_push_to_hub_uploads_the_folder(ckpt: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict = {}

    def create_repo(self, repo_id, **kwargs):
        seen["created"] = repo_id

    def upload_folder(self, *, repo_id, folder_path, **kwargs):
        seen["repo"] = repo_id
        seen["files"] = sorted(p.name for p in Path(folder_path).iterdir())
        seen["config"] = json.loads((Path(folder_path) / "config.json").read_text())
        return "https://hub.invalid/commit/1"

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    assert hub.push_to_hub(ckpt, "someone/cinet-tiny") == "https://hub.invalid/commit/1"
    assert seen["created"] == seen["repo"] == "someone/cinet-tiny"
    assert seen["files"] == ["README.md", "config.json", "model.safetensors"]
    assert seen["config"]["metrics"]["protocol"]["name"] == "mtl"

    def fail(self, *, repo_id, folder_path, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", fail)
    with pytest.raises(Exception, match=r"someone/cinet-tiny: upload failed \(OSError: no network\)"):
        hub.push_to_hub(ckpt, "someone/cinet-tiny")
