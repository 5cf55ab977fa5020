"""Public bug reports of this field, tried on cinet (issue 13): one test (or more) per failure and its kind.

Each section is one kind of ``docs/reliability.md`` ("Reported failures and their kinds"); the first test of a
section is the reported case, at the command line where the user met it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cinet.cli import main
from inference_fixtures import save_tiny_checkpoint, synthetic_image

ROOT = Path(__file__).resolve().parents[1]
SMOKE = str(ROOT / "configs" / "smoke.yaml")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.ckpt")


def _save(path: Path, height: int, width: int, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(synthetic_image(height, width, seed)).save(path)
    return path


def _one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 1, err
    return err[0]


# ------------------------------------------------------------------ 1. non-ASCII names


def test_non_ascii_names_predict_ply(ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from cinet.inference.pointcloud import read_ply

    a = _save(tmp_path / "in" / "café_ü.png", 40, 56, 1)
    b = _save(tmp_path / "in" / "plain.png", 40, 56, 2)
    out = tmp_path / "out"
    rc = main(
        ["predict", "--checkpoint", str(ckpt), str(a), str(b), "--out", str(out), "--ply", "--no-progress"]
    )
    assert rc == 0
    for stem in ("café_ü", "plain"):
        cloud = read_ply(out / f"{stem}.ply")
        assert len(cloud) == 40 * 56 == 2240
    head = (out / "café_ü.ply").read_bytes().split(b"end_header\n")[0]
    assert b"comment cinet caf\\xe9_\\xfc.png\n" in head  # ASCII header, the name escaped
    assert "café_ü.png" in capsys.readouterr().out


def test_ply_header_stays_ascii_one_line_per_comment() -> None:
    from cinet.inference.pointcloud import PLY_DTYPE, ply_bytes

    points = np.zeros(2, dtype=PLY_DTYPE)
    data = ply_bytes(points, binary=False, comments=["日本\nelement vertex 99", "tab\there", "back\\slash"])
    head = data.split(b"end_header\n")[0].decode("ascii").splitlines()
    assert head[2:5] == [
        "comment \\u65e5\\u672c\\nelement vertex 99",
        "comment tab\\there",
        "comment back\\\\slash",
    ]
    assert [line for line in head if line.startswith("element")] == ["element vertex 2"]


def test_text_files_are_utf8_whatever_the_locale(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    code = (
        "import json, sys; from cinet.config import load_config, save_config;"
        "from cinet.utils.io import atomic_write_json, atomic_write_text;"
        f"cfg = load_config({SMOKE!r}, ['data.root=/donn\\u00e9es/\\u00f1yu']);"  # argv would be ASCII
        "save_config(sys.argv[1] + '/config.yaml', cfg);"
        "atomic_write_json(sys.argv[1] + '/m.json', {'root': cfg.data.root});"
        "atomic_write_text(sys.argv[1] + '/a.md', cfg.data.root)"
    )
    # an ASCII locale, neither coerced to UTF-8 (PEP 538) nor in UTF-8 mode (PEP 540)
    env = {**os.environ, "LC_ALL": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True, env=env, timeout=120)
    from cinet.config import load_config

    assert load_config(tmp_path / "config.yaml").data.root == "/données/ñyu"
    assert json.loads((tmp_path / "m.json").read_text(encoding="utf-8"))["root"] == "/données/ñyu"
    assert (tmp_path / "a.md").read_text(encoding="utf-8") == "/données/ñyu"


def test_png_text_chunk_with_non_latin1_value(tmp_path: Path) -> None:
    from cinet.inference.visualize import save_png

    save_png(tmp_path / "x.png", np.zeros((4, 4), np.uint8), {"classes": "mesa,año,日本"})
    with Image.open(tmp_path / "x.png") as img:
        assert img.text["classes"] == "mesa,año,日本"


def test_panel_caption_with_a_non_latin1_name_and_a_bitmap_font(monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import ImageFont

    from cinet.inference.visualize import make_panel

    bitmap = ImageFont.load_default_imagefont  # what Pillow without FreeType gives
    monkeypatch.setattr(ImageFont, "load_default", lambda size=None: bitmap())
    tile = np.zeros((16, 24, 3), np.uint8)
    panel = make_panel([tile, tile], ["input", "segmentation (salón 日本)"])
    assert panel.shape[1] >= 48 and panel.dtype == np.uint8


# ------------------------------------------------------------------ 2. output name collisions


def test_same_stems_in_one_predict_call(
    ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = _save(tmp_path / "a" / "room.png", 40, 56, 1)
    b = _save(tmp_path / "b" / "room.png", 44, 60, 2)
    c = _save(tmp_path / "c" / "room_2.png", 24, 32, 3)
    out = tmp_path / "out"
    rc = main(
        ["predict", "--checkpoint", str(ckpt), str(a), str(b), str(c), "--out", str(out), "--no-progress"]
    )
    assert rc == 0
    files = sorted(p.name for p in out.iterdir())
    assert len(files) == 18
    assert "wrote 18 files for 3 image(s)" in capsys.readouterr().out
    sizes = {}
    for stem in ("room", "room_2", "room_3"):
        with Image.open(out / f"{stem}_depth.png") as img:
            sizes[stem] = img.size
    assert sizes == {"room": (56, 40), "room_3": (60, 44), "room_2": (32, 24)}  # b -> room_3, c keeps room_2


def test_allocate_stems_never_reuses_a_name() -> None:
    from cinet.utils.io import allocate_stems

    assert allocate_stems(["room", "room", "room_2"]) == ["room", "room_3", "room_2"]
    assert allocate_stems(["room_2", "room", "room"]) == ["room_2", "room", "room_3"]
    assert allocate_stems(["Room", "room"]) == ["Room", "room_2"]  # case-insensitive file systems
    # an output file of one input may not be the output of another input: x + "_a_b" == x_a + "_b"
    assert allocate_stems(["x", "x_a"], ("_a_b", "_b")) == ["x", "x_a_2"]
    stems = ["s"] * 5 + ["s_3", "s_2"]
    got = allocate_stems(stems)
    assert len(set(got)) == len(got) and got[5:] == ["s_3", "s_2"]


def test_ablate_refuses_a_variant_listed_twice(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["ablate", "--config", SMOKE, "--variants", "sum,sum", "--run-dir", str(tmp_path / "abl")])
    assert rc == 2
    assert "--variants: 'sum' listed twice" in _one_error_line(capsys)
    assert not (tmp_path / "abl").exists()


# ------------------------------------------------------------------ 6. stored settings merged with new ones


def _synthetic_checkpoint(path: Path) -> Path:
    from cinet.checkpoint import save_model_checkpoint
    from cinet.config import config_to_dict, load_config
    from cinet.data.synthetic import synthetic_info
    from inference_fixtures import tiny_model

    cfg = load_config(SMOKE)
    info = synthetic_info()
    model, kwargs = tiny_model("cinet", num_classes=info.num_classes)
    return save_model_checkpoint(path, model, kwargs, info, config=config_to_dict(cfg))


def test_eval_other_dataset_by_override(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ck = _synthetic_checkpoint(tmp_path / "synthetic.ckpt")
    missing = tmp_path / "data" / "nyu"
    rc = main(["eval", "--checkpoint", str(ck), "data.name=nyuv2", f"data.root={missing}"])
    assert rc == 2
    line = _one_error_line(capsys)
    assert str(missing) in line and "not found" in line, line
    assert "data.size" not in line and "option" not in line


@pytest.mark.parametrize(
    ("layers", "expected"),
    [
        # override order does not matter: data.root belongs to the dataset named with it
        ((None, ["data.root=/d/nyu", "data.name=nyuv2"]), ("nyuv2", "/d/nyu", {}, None)),
        ((None, ["data.name=nyuv2"]), ("nyuv2", None, {}, None)),
        # the same dataset again keeps its stored settings
        ((None, ["data.name=synthetic"]), ("synthetic", "/old", {"size": [64, 80]}, 16)),
        # a whole data mapping, and a YAML file (eval --config, resume --config)
        (
            (None, ["data={name: folder, root: /f, options: {num_classes: 3}}"]),
            ("folder", "/f", {"num_classes": 3}, None),
        ),
        (("data:\n  name: folder\n  root: /g\n", []), ("folder", "/g", {}, None)),
        (("data:\n  root: /h\n", []), ("synthetic", "/h", {"size": [64, 80]}, 16)),
    ],
)
def test_switching_dataset_drops_the_stored_dataset_settings(
    tmp_path: Path, layers: tuple[str | None, list[str]], expected: tuple
) -> None:
    from cinet.config import config_to_dict, load_config

    stored = config_to_dict(load_config(SMOKE, ["data.root=/old"]))
    yaml_text, overrides = layers
    path = None
    if yaml_text is not None:
        path = tmp_path / "new.yaml"
        path.write_text(yaml_text, encoding="utf-8")
    cfg = load_config(path, overrides, base=stored)
    assert (cfg.data.name, cfg.data.root, cfg.data.options, cfg.data.length) == expected
    assert cfg.data.crop_size == [48, 64]  # not a dataset setting: kept


def test_resume_with_a_dataset_override_drops_stored_options(tmp_path: Path) -> None:
    from cinet.config import load_config, save_config

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    save_config(run_dir / "config.yaml", load_config(SMOKE))
    # what `cinet train --resume RUN data.name=folder data.root=...` loads
    cfg = load_config(run_dir / "config.yaml", ["data.root=/x", "data.name=folder"])
    assert (cfg.data.name, cfg.data.root, cfg.data.options, cfg.data.length) == ("folder", "/x", {}, None)


# ------------------------------------------------------------------ 3. attention path and memory at inference


def _no_naive_attention(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    sa = importlib.import_module(
        "cinet.ops.sigmoid_attention"
    )  # the module, not the function cinet.ops exports

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the naive B x N x N attention ran at inference on a large map")

    monkeypatch.setattr(sa, "sigmoid_attention_naive", refuse)


def test_naive_trained_checkpoint_predicts_large_maps_memory_bounded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ck = save_tiny_checkpoint(tmp_path / "naive.ckpt", attention_impl="naive")
    img = _save(tmp_path / "wide.png", 256, 264, 1)  # 32 x 33 = 1056 SUM positions: tiled from 1024 on
    _no_naive_attention(monkeypatch)
    rc = main(["predict", "--checkpoint", str(ck), str(img), "--out", str(tmp_path / "out"), "--no-progress"])
    assert rc == 0
    assert (tmp_path / "out" / "wide_depth.png").is_file()


def test_predictor_attention_is_a_runtime_choice() -> None:
    import torch

    from cinet.inference.predictor import Predictor
    from cinet.models.sum import SceneUnderstandingModule
    from inference_fixtures import tiny_info, tiny_model

    model, _ = tiny_model("cinet", attention_impl="naive")
    x = synthetic_image(64, 72, 5)
    ref = Predictor(model, tiny_info(), attention_impl=None).predict(x)
    assert {m.attention_impl for m in model.modules() if isinstance(m, SceneUnderstandingModule)} == {"naive"}
    tiled = Predictor(model, tiny_info(), attention_impl="tiled").predict(x)
    np.testing.assert_allclose(tiled.depth, ref.depth, rtol=1e-4, atol=1e-5)
    Predictor(model, tiny_info())
    assert {m.attention_impl for m in model.modules() if isinstance(m, SceneUnderstandingModule)} == {"auto"}
    assert torch.is_tensor(next(model.parameters()))


def test_eval_of_naive_checkpoint_uses_memory_bounded_attention(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ck = _synthetic_checkpoint(tmp_path / "synthetic.ckpt")  # smoke config: attention_impl naive
    _no_naive_attention(monkeypatch)
    # data.eval_size: the network sees the 256x256 map (without it, the one preprocessing would scale the image
    # to the checkpoint's training size, a small map)
    sizes = [
        "data.options.size=[256,256]",
        "data.eval_size=[256,256]",
        "data.eval_length=1",
        "data.eval_batch_size=1",
    ]
    rc = main(["eval", "--checkpoint", str(ck), "--out", str(tmp_path / "ev"), *sizes])
    assert rc == 0
    assert (tmp_path / "ev" / "metrics.json").is_file()


def test_eval_refuses_model_overrides(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ck = _synthetic_checkpoint(tmp_path / "synthetic.ckpt")
    rc = main(["eval", "--checkpoint", str(ck), "--out", str(tmp_path / "ev"), "model.channels=64"])
    assert rc == 2
    line = _one_error_line(capsys)
    assert line.startswith("error: model.channels: ") and "ignored" in line
    assert not (tmp_path / "ev" / "metrics.json").exists()


def test_photo_too_large_for_memory_is_refused_naming_max_side(
    ckpt: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import re

    import cinet.checks.memory as memory
    import cinet.inference.predictor as predictor_module

    photo = tmp_path / "in" / "photo.jpg"
    photo.parent.mkdir()
    Image.new("RGB", (4000, 3000), (120, 90, 60)).save(photo, quality=80)
    monkeypatch.setattr(memory, "available_bytes", lambda device: 2**31)  # a 2 GiB machine
    out = tmp_path / "out"
    rc = main(["predict", "--checkpoint", str(ckpt), str(photo), "--out", str(out), "--no-progress"])
    assert rc == 2
    line = _one_error_line(capsys)
    assert str(photo) in line and "4000x3000" in line
    side = int(re.search(r"--max-side (\d+)", line).group(1))
    assert not out.exists()  # refused before the output folder is made
    assert "more than 90% of the 2.0 GiB free" in line
    # the side it names passes the check again once the run holds the decoded photo (the second check, per batch,
    # before the forward pass: the real 8000x6000 run was refused there with the first suggestion), one step
    # larger would not (2 GiB keeps both above MEMORY_CHECK_MIN_PIXELS, below which nothing is checked)
    loaded = memory.LOADED_BYTES_PER_PIXEL * 4000 * 3000
    monkeypatch.setattr(memory, "available_bytes", lambda device: 2**31 - loaded)
    p = predictor_module.Predictor.from_checkpoint(ckpt, max_side=side)
    p.check_fits(3000, 4000, name="photo")
    budget = memory.SUGGEST_MARGIN * (2**31 - loaded)
    assert p.forward_bytes(3000, 4000) <= memory.MEMORY_FRACTION * budget
    p.max_side = side + 8
    assert p.forward_bytes(3000, 4000) > memory.MEMORY_FRACTION * budget


def test_memory_refusal_inside_a_batch_names_the_file(ckpt: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The check that runs again per batch (memory can shrink after the up-front check) names the file too."""
    import cinet.checks.memory as memory
    import cinet.inference.predictor as predictor_module

    p = predictor_module.Predictor.from_checkpoint(ckpt, keep_size=True)
    monkeypatch.setattr(memory, "available_bytes", lambda device: 2**20)
    image = np.zeros((1100, 1000, 3), np.uint8)  # > MEMORY_CHECK_MIN_PIXELS, so it is checked
    with pytest.raises(predictor_module.InputError, match=r"^/data/room\.jpg: a 1000x1100 image needs"):
        p.predict_batch([image], names=["/data/room.jpg"])
    with pytest.raises(predictor_module.InputError, match=r"^<image 0>: "):
        p.predict_batch([image])


# ------------------------------------------------------------------ 4. one image reader


def _folder(root: Path, rgb: Image.Image, rgb_name: str, depth: np.ndarray, labels: np.ndarray) -> Path:
    for sub in ("rgb", "depth", "labels"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    rgb.save(root / "rgb" / rgb_name)
    stem = Path(rgb_name).stem
    Image.fromarray(depth).save(root / "depth" / f"{stem}.png")
    Image.fromarray(labels).save(root / "labels" / f"{stem}.png")
    return root


def test_16bit_greyscale_is_the_same_gradient_in_training_and_predict(tmp_path: Path) -> None:
    from cinet.data.folder import FolderDataset
    from cinet.inference.predictor import load_image

    grad = np.linspace(500, 54500, 80).reshape(8, 10).astype(np.uint16)
    root = _folder(
        tmp_path / "ds",
        Image.fromarray(grad),
        "ir.png",
        np.full((8, 10), 1500, np.uint16),
        np.zeros((8, 10), np.uint8),
    )
    expected = np.repeat(np.rint(grad / 257.0).astype(np.uint8)[:, :, None], 3, axis=2)
    train_image = FolderDataset(root, num_classes=2)._load(0)["image"]
    np.testing.assert_array_equal(train_image, expected)  # was 255 everywhere (PIL's convert clips)
    np.testing.assert_array_equal(load_image(root / "rgb" / "ir.png"), expected)
    assert train_image.min() == 2 and train_image.max() == 212


@pytest.mark.parametrize(
    ("mode", "make", "rgb00"),
    [
        ("1", lambda: Image.new("1", (3, 2), 1), (255, 255, 255)),
        ("L", lambda: Image.new("L", (3, 2), 77), (77, 77, 77)),
        ("LA", lambda: Image.new("LA", (3, 2), (77, 10)), (77, 77, 77)),
        ("P", lambda: _palette("P"), (10, 20, 30)),
        ("PA", lambda: _palette("PA"), (10, 20, 30)),
        ("RGBA", lambda: Image.new("RGBA", (3, 2), (1, 2, 3, 0)), (1, 2, 3)),
        ("CMYK", lambda: Image.new("CMYK", (3, 2), (0, 255, 255, 0)), (255, 0, 0)),
        ("I;16", lambda: Image.fromarray(np.full((2, 3), 65535, np.uint16)), (255, 255, 255)),
        ("I", lambda: Image.fromarray(np.full((2, 3), 25700, np.int32)), (100, 100, 100)),
        ("F", lambda: Image.fromarray(np.full((2, 3), 0.5, np.float32)), (128, 128, 128)),
    ],
)
def test_every_mode_reads_the_same_for_datasets_and_predict(
    tmp_path: Path, mode: str, make: object, rgb00: tuple[int, int, int]
) -> None:
    from cinet.data.base import pil_to_rgb, read_rgb
    from cinet.inference.predictor import load_image

    img = make()  # type: ignore[operator]
    assert img.mode == mode
    arr = pil_to_rgb(img)
    assert arr.shape == (2, 3, 3) and arr.dtype == np.uint8
    assert tuple(int(v) for v in arr[0, 0]) == rgb00
    path = tmp_path / "x.tif"
    try:
        img.save(path)
    except (OSError, ValueError, KeyError):
        return  # no file format for this mode here: the in-memory conversion is the shared part
    np.testing.assert_array_equal(read_rgb(path), load_image(path))


def _palette(mode: str) -> Image.Image:
    img = Image.new("P", (3, 2), 1)
    img.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    return img if mode == "P" else img.convert("PA")


def _exif_jpeg(path: Path, width: int, height: int, orientation: int) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(synthetic_image(height, width, 7)).save(path, exif=exif.tobytes(), quality=95)


def test_exif_turned_photo_with_maps_is_refused_naming_the_file_and_predict_turns_it(tmp_path: Path) -> None:
    from cinet.data.folder import FolderDataset
    from cinet.errors import DataError
    from cinet.inference.predictor import load_image

    root = tmp_path / "ds"
    for sub in ("rgb", "depth", "labels"):
        (root / sub).mkdir(parents=True)
    _exif_jpeg(root / "rgb" / "cam.jpg", 10, 8, orientation=6)  # stored 10 wide, 8 high; shown 8 x 10
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(np.full((8, 10), 1500, np.uint16)).save(root / "depth" / "cam.png", exif=exif.tobytes())
    Image.fromarray(np.zeros((8, 10), np.uint8)).save(root / "labels" / "cam.png")
    ds = FolderDataset(root, num_classes=2)
    assert load_image(root / "rgb" / "cam.jpg").shape == (10, 8, 3)  # predict: turned by its EXIF orientation
    with pytest.raises(DataError) as err:
        ds[0]
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(str(root / "rgb" / "cam.jpg"))
    assert "EXIF orientation 6" in msg


# ------------------------------------------------------------------ 5. degenerate feature maps


def test_batch_one_small_crop_is_refused_before_the_run_dir(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "run"
    rc = main(
        ["train", "--config", SMOKE, "--run-dir", str(run_dir), "data.batch_size=1", "data.crop_size=[32,32]"]
    )
    assert rc == 2
    line = _one_error_line(capsys)
    assert line.startswith("error: data.crop_size: a 32x32 (WxH) input with data.batch_size 1 ")
    # the smallest square crop, exactly (training crops are not padded to a multiple of 8: 33..39 train too)
    assert "the smallest square data.crop_size that trains is [33, 33] or data.batch_size >= 2" in line
    assert not run_dir.exists()


def _variants() -> list[str]:
    from cinet.recipe import VARIANTS

    return list(VARIANTS)


@pytest.mark.parametrize("variant", _variants())
def test_smallest_training_side_is_what_pytorch_accepts(variant: str) -> None:
    import torch

    from cinet.models import build_model
    from cinet.models.shapes import smallest_training_side
    from cinet.recipe import VARIANTS

    model = build_model(variant=variant, encoder="resnet18", num_classes=3, channels=8, qk_channels=4,
                        decoder_channels=[8, 8, 8]).train()  # fmt: skip
    side = smallest_training_side(model, batch=1)
    assert side == (40 if VARIANTS[variant].sharing == "fsm" else 16)  # FSM context: 1/32; else 1/8
    model(torch.rand(1, 3, side, side))  # trains
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        model(torch.rand(1, 3, side - 8, side - 8))
    assert smallest_training_side(model, batch=2) == 8  # two images: any map of one cell
    exact = smallest_training_side(model, batch=1, multiple=1)  # what `cinet train` names
    assert exact == (33 if VARIANTS[variant].sharing == "fsm" else 9)
    model(torch.rand(1, 3, exact, exact))
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        model(torch.rand(1, 3, exact - 1, exact - 1))


@pytest.mark.parametrize("encoder", ["resnet34", "resnet50", "resnet101"])
def test_every_encoder_has_its_smallest_side_computed(encoder: str) -> None:
    import torch

    from cinet.models.shapes import smallest_training_side

    with torch.device("meta"):
        from cinet.models import build_model

        model = build_model(variant="cinet", encoder=encoder, num_classes=3, channels=8, qk_channels=4)
    assert smallest_training_side(model, batch=1) == 40


@pytest.mark.parametrize("variant", _variants())
def test_tiny_inputs_evaluate_for_every_variant(variant: str) -> None:
    import torch

    from inference_fixtures import tiny_model

    model, _ = tiny_model(variant)  # eval mode: the BatchNorms use their running statistics
    with torch.no_grad():
        out = model(torch.rand(1, 3, 8, 8))  # the smallest network input (output stride 8): 1x1 maps
    for t in (out.depth, out.seg_logits):
        assert t is None or (t.shape[-2:] == (8, 8) and torch.isfinite(t).all())


# ------------------------------------------------------------------ the same kinds, found by a second trial


def test_predict_into_the_input_folder_never_overwrites_an_input(ckpt: Path, tmp_path: Path) -> None:
    """Kind 2: ``room_depth.png`` and ``room_overlay.png`` are inputs in the output folder; ``room.png``'s
    outputs must not take their names (they were overwritten, then read back as images)."""
    folder = tmp_path / "in"
    folder.mkdir()
    _save(folder / "room.png", 30, 40, 1)
    _save(folder / "room_depth.png", 24, 36, 2)
    _save(folder / "room_overlay.png", 20, 28, 3)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert (
        main(["predict", "--checkpoint", str(ckpt), str(folder), "--out", str(folder), "--no-progress"]) == 0
    )
    for name, data in before.items():
        assert (folder / name).read_bytes() == data, f"input {name} was overwritten"
    depth_files = sorted(p.name for p in folder.glob("*_depth.png") if p.name not in before)
    assert depth_files == ["room_2_depth.png", "room_depth_depth.png", "room_overlay_depth.png"]
    assert Image.open(folder / "room_2_depth.png").size == (40, 30)
    assert Image.open(folder / "room_depth_depth.png").size == (36, 24)
    assert Image.open(folder / "room_overlay_depth.png").size == (28, 20)
    assert len(list(folder.iterdir())) == 3 + 18


def test_allocate_stems_keeps_off_reserved_names() -> None:
    from cinet.utils.io import allocate_stems

    assert allocate_stems(
        ["room", "room_depth"], ["_depth.png", "_overlay.png"], reserved=["ROOM_DEPTH.png"]
    ) == [
        "room_2",
        "room_depth",
    ]


def test_export_onto_the_checkpoint_is_refused(ckpt: Path, tmp_path: Path, capsys) -> None:
    """Kind 2 in ``export``: ``--onnx`` naming the checkpoint itself would replace it."""
    copy = tmp_path / "model.onnx"  # a checkpoint that happens to be named .onnx
    copy.write_bytes(ckpt.read_bytes())
    rc = main(["export", "--checkpoint", str(copy), "--onnx", str(copy)])
    assert rc == 2
    line = _one_error_line(capsys)
    assert (
        line
        == f"error: {copy}: is the file given with --checkpoint; writing there would replace it (choose another path)"
    )
    assert copy.read_bytes() == ckpt.read_bytes()


def test_images_above_pils_bomb_limit_are_read(ckpt: Path, tmp_path: Path, monkeypatch) -> None:
    """Kind 3: PIL refuses images above ``MAX_IMAGE_PIXELS`` (179 MP) as "decompression bombs"; cinet's own
    memory check decides instead. Shown here with the limit lowered below a 40x56 image."""
    import warnings

    from cinet.data.base import read_rgb
    from cinet.inference.predictor import Predictor

    photo = _save(tmp_path / "photo.png", 40, 56)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)  # 2240 pixels: over twice the limit -> error
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and no DecompressionBombWarning either
        assert read_rgb(photo).shape == (40, 56, 3)
        assert Predictor.from_checkpoint(ckpt).predict(photo).depth.shape == (40, 56)
    assert Image.MAX_IMAGE_PIXELS == 500  # the limit is restored
    out = tmp_path / "out"
    assert main(["predict", "--checkpoint", str(ckpt), str(photo), "--out", str(out), "--no-progress"]) == 0
    monkeypatch.undo()
    assert Image.open(out / "photo_depth.png").size == (56, 40)


def test_a_photo_whose_results_alone_do_not_fit_says_to_downscale(
    ckpt: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    """Kind 3: scaled to the training size the network input is small, but the results come back at the image
    size: a photo whose full-size results exceed the memory is refused up front, and no --max-side is offered
    (none would help). Sizes: WxH."""
    import cinet.checks.memory as memory

    photo = tmp_path / "photo.jpg"
    Image.new("RGB", (4000, 3000), (120, 90, 60)).save(photo, quality=80)
    monkeypatch.setattr(memory, "available_bytes", lambda device: 2**28)  # 256 MiB free
    rc = main(
        ["predict", "--checkpoint", str(ckpt), str(photo), "--out", str(tmp_path / "out"), "--no-progress"]
    )
    assert rc == 2
    line = _one_error_line(capsys)
    assert line.startswith(f"error: {photo}: a 4000x3000 image needs about ")
    assert line.endswith(
        "at any --max-side (the results come back at the image size): downscale the file first"
    )
    assert not (tmp_path / "out").exists()


def test_eval_refuses_an_eval_size_that_cannot_fit(tmp_path: Path, monkeypatch, capsys) -> None:
    """Kind 3 in ``eval``: the memory check of predict, naming data.eval_size / data.eval_batch_size."""
    import cinet.checks.memory as memory

    ck = _synthetic_checkpoint(tmp_path / "synthetic.ckpt")
    monkeypatch.setattr(memory, "available_bytes", lambda device: 2**28)  # 256 MiB free
    out = tmp_path / "ev"
    rc = main(["eval", "--checkpoint", str(ck), "data.eval_size=[2048,2048]", "--out", str(out)])
    assert rc == 2
    line = _one_error_line(capsys)
    assert line.startswith("error: data.eval_size: [2048, 2048] with data.eval_batch_size ")
    assert line.endswith("lower data.eval_size or data.eval_batch_size")
    assert not (out / "metrics.json").exists()
    # and training, for its validation and test, before the run directory exists
    run = tmp_path / "run"
    assert main(["train", "--config", SMOKE, "--run-dir", str(run), "data.eval_size=[2048,2048]"]) == 2
    assert _one_error_line(capsys).startswith(
        "error: data.eval_size: [2048, 2048] with data.eval_batch_size "
    )
    assert not run.exists()


def test_a_later_samples_size_clash_is_refused_before_the_run_dir(tmp_path: Path, capsys) -> None:
    """Kind 4: every sample's header is checked before training (it was found at its batch, mid-run)."""
    root = tmp_path / "ds"
    for sub in ("rgb", "depth", "labels"):
        (root / sub).mkdir(parents=True)
    for i in range(3):
        _save(root / "rgb" / f"a{i}.png", 32, 40, i)
    _exif_jpeg(root / "rgb" / "z.jpg", 40, 32, orientation=6)  # sorts last; shown 32 wide, 40 high
    for stem in ("a0", "a1", "a2", "z"):
        Image.fromarray(np.full((32, 40), 1500, np.uint16)).save(root / "depth" / f"{stem}.png")
        Image.fromarray(np.zeros((32, 40), np.uint8)).save(root / "labels" / f"{stem}.png")
    run = tmp_path / "run"
    rc = main(
        ["train", "--config", SMOKE, "--run-dir", str(run), "data.name=folder", f"data.root={root}",
         "data.options={num_classes: 2}", "data.image_size=null", "data.crop_size=[16,16]", "data.batch_size=2"]
    )  # fmt: skip
    assert rc == 2 and not run.exists()
    line = _one_error_line(capsys)
    assert line.startswith(f"error: {root / 'rgb' / 'z.jpg'}: ") and "EXIF orientation 6" in line


def test_eval_on_a_folder_without_root_names_the_root(tmp_path: Path, capsys) -> None:
    """Kind 6: the missing root is named first (it was a key that does not exist, ``data.num_classes``)."""
    ck = _synthetic_checkpoint(tmp_path / "synthetic.ckpt")
    assert main(["eval", "--checkpoint", str(ck), "data.name=folder"]) == 2
    line = _one_error_line(capsys)
    assert line.startswith("error: data.root: not set"), line


def test_a_bad_override_is_blamed_on_the_command_line_not_the_file(tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    assert main(["train", "--config", SMOKE, "--run-dir", str(run), "data.crop_size=[1,1]"]) == 2
    line = _one_error_line(capsys)
    assert (
        line
        == "error: command-line override: config key 'data.crop_size': expected [H, W] (>= 8), got [1, 1]"
    )
    assert not run.exists()
    assert main(["train", "--config", SMOKE, "--run-dir", str(run), "data.eval_size=[4,4]"]) == 2
    assert _one_error_line(capsys).startswith("error: command-line override: config key 'data.eval_size'")


def test_eval_memory_check_sees_the_largest_sample_of_a_folder(tmp_path: Path, monkeypatch, capsys) -> None:
    """Kind 3: a large image that is not the first sample is found from the headers (the check looked at the
    first sample only)."""
    import cinet.checks.memory as memory
    from cinet.data.synthetic import synthetic_info

    root = tmp_path / "ds"
    for sub in ("rgb", "depth", "labels"):
        (root / sub).mkdir(parents=True)
    for stem, (h, w) in (("a", (32, 40)), ("b", (32, 40)), ("z", (1200, 1400))):
        _save(root / "rgb" / f"{stem}.png", h, w)
        Image.fromarray(np.full((h, w), 1500, np.uint16)).save(root / "depth" / f"{stem}.png")
        Image.fromarray(np.zeros((h, w), np.uint8)).save(root / "labels" / f"{stem}.png")
    ck = _synthetic_checkpoint(tmp_path / "synthetic.ckpt")
    monkeypatch.setattr(memory, "available_bytes", lambda device: 2**27)  # 128 MiB free
    n = synthetic_info().num_classes
    rc = main(
        ["eval", "--checkpoint", str(ck), "data.name=folder", f"data.root={root}",
         f"data.options={{num_classes: {n}}}", "data.eval_batch_size=1", "--out", str(tmp_path / "ev")]
    )  # fmt: skip
    assert rc == 2
    line = _one_error_line(capsys)
    assert line.startswith("error: data.eval_size: null (network input ") and "1400x1200 images" in line


def test_inputs_through_links_and_skipped_inputs_are_never_overwritten(ckpt: Path, tmp_path: Path) -> None:
    """Kind 2, third trial: an input given through a link whose file sits in the output folder, and an input
    skipped by --skip-bad, keep their names (outputs of another input took them)."""
    folder, links = tmp_path / "p", tmp_path / "links"
    folder.mkdir()
    links.mkdir()
    _save(folder / "room.png", 30, 40, 1)
    _save(folder / "room_depth.png", 24, 36, 2)
    (links / "room_depth.png").symlink_to(folder / "room_depth.png")
    (folder / "room_panel.png").write_bytes(b"not an image")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    args = ["predict", "--checkpoint", str(ckpt), str(folder / "room.png"), str(links / "room_depth.png")]
    assert (
        main([*args, str(folder / "room_panel.png"), "--out", str(folder), "--skip-bad", "--no-progress"])
        == 0
    )
    for name, data in before.items():
        assert (folder / name).read_bytes() == data, f"input {name} was overwritten"
    assert (folder / "room_2_depth.png").is_file()


def test_export_int8_refuses_an_output_that_is_a_calibration_image(
    ckpt: Path, tmp_path: Path, capsys
) -> None:
    calib = tmp_path / "cal"
    calib.mkdir()
    image = _save(calib / "im1.png", 32, 40)
    data = image.read_bytes()
    rc = main(["export", "--checkpoint", str(ckpt), "--onnx", str(image), "--quantize", "int8",
               "--calibration-images", str(calib)])  # fmt: skip
    assert rc == 2
    assert _one_error_line(capsys).startswith(f"error: {image}: is the file given with --calibration-images")
    assert image.read_bytes() == data


def test_data_preview_refuses_an_image_too_large_for_memory(tmp_path: Path, monkeypatch, capsys) -> None:
    """Kind 3 in ``data preview``: a 20000x15000 folder image peaked at 20.6 GB; now refused from its header."""
    import cinet.checks.memory as memory

    root = tmp_path / "ds"
    for sub in ("rgb", "depth", "labels"):
        (root / sub).mkdir(parents=True)
    for stem, (h, w) in (("a", (32, 40)), ("b", (200, 300))):
        _save(root / "rgb" / f"{stem}.png", h, w)
        Image.fromarray(np.full((h, w), 1500, np.uint16)).save(root / "depth" / f"{stem}.png")
        Image.fromarray(np.zeros((h, w), np.uint8)).save(root / "labels" / f"{stem}.png")
    monkeypatch.setattr(memory, "available_bytes", lambda device: 2**22)  # 4 MiB free
    out = tmp_path / "prev"
    rc = main(["data", "preview", "folder", "--root", str(root), "--out", str(out), "num_classes=2"])
    assert rc == 2
    line = _one_error_line(capsys)
    assert line.startswith(f"error: {root / 'rgb' / 'b.png'}: a 300x200 image needs about ")
    assert line.endswith("downscale the file")
    assert not any(out.glob("*.png")) if out.exists() else True
