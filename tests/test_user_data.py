"""A user's own data in the first hour (issue 14): the documented recipe, sanity checks, names on pictures.

Every test goes through the ``cinet`` command line, as a user would, on folder datasets the test writes.
"""

from __future__ import annotations

import json
import logging
import re
import shlex
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from cinet.cli import main
from inference_fixtures import save_tiny_checkpoint, synthetic_image

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ["wall", "floor", "chair"]
# appended to the recipe's `cinet train` line: the same run, small enough for a unit test
FAST = [
    "data.image_size=[32,40]",
    "data.crop_size=[32,40]",
    "data.batch_size=2",
    "data.eval_batch_size=2",
    "data.num_workers=0",
    "model.channels=16",
    "model.qk_channels=8",
    "model.decoder_channels=[8,8,8]",
    "model.attention_impl=naive",
    "train.stages.0.epochs=1",
    "train.stages.1.epochs=1",
    "train.stages.2.epochs=1",
    "train.val_every=1",
    "train.num_vis=0",
    "trainer.accelerator=cpu",
]


def write_mydata(
    root: Path,
    n: int = 4,
    size: tuple[int, int] = (48, 64),
    depth_per_metre: float = 1000.0,
    colour_labels: bool = False,
    sizes: dict[int, tuple[int, int]] | None = None,
) -> Path:
    """``root/{rgb,depth,labels}/img{i}.png`` + ``classes.yaml``: depth 1-4 m, labels 0..2 and 255."""
    for sub in ("rgb", "depth", "labels"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        h, w = (sizes or {}).get(i, size)
        Image.fromarray(synthetic_image(h, w, i)).save(root / "rgb" / f"img{i}.jpg")
        metres = 1.0 + 3.0 * np.linspace(0, 1, w)[None, :].repeat(h, 0)
        Image.fromarray(np.round(metres * depth_per_metre).astype(np.uint16)).save(
            root / "depth" / f"img{i}.png"
        )
        labels = np.zeros((h, w), np.uint8)
        labels[h // 2 :] = 1
        labels[h // 3 : h // 2, w // 3 : w // 2] = 2
        labels[:2] = 255
        if colour_labels:
            palette = np.array([[200, 0, 0], [0, 200, 0], [0, 0, 200]], np.uint8)
            Image.fromarray(palette[np.minimum(labels, 2)]).save(root / "labels" / f"img{i}.png")
        else:
            Image.fromarray(labels).save(root / "labels" / f"img{i}.png")
        rng.random()
    (root / "classes.yaml").write_text(yaml.safe_dump({"names": CLASSES}))
    return root


def recipe_lines() -> list[list[str]]:
    """The ``cinet`` commands of the recipe block of docs/data.md."""
    text = (ROOT / "docs" / "data.md").read_text(encoding="utf-8")
    block = re.search(r"<!-- recipe:[^>]*-->\s*```bash\n(.*?)```", text, re.S)
    assert block, "docs/data.md has no recipe block"
    lines = [shlex.split(line, comments=True) for line in block.group(1).splitlines() if line.strip()]
    assert len(lines) == 3 and all(words[0] == "cinet" for words in lines), lines
    return [words[1:] for words in lines]


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 1, err
    return err[0]


# ----------------------------------------------------------------------------------------------- the recipe


def test_recipe_from_docs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], caplog
) -> None:
    """docs/data.md's three lines, run on files written here (train with FAST overrides appended)."""
    work = tmp_path / "work"
    write_mydata(work / "mydata")
    (work / "configs").mkdir()
    shutil.copy(ROOT / "configs" / "folder.yaml", work / "configs" / "folder.yaml")
    monkeypatch.chdir(work)
    preview, train, predict = recipe_lines()

    assert main(preview) == 0
    assert (work / "preview" / "folder_train_preview.png").is_file()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main([*train, *FAST]) == 0
    out = capsys.readouterr()
    # non-interactive output: no progress bar, no Lightning logging-interval warning
    assert "it/s]" not in out.err and "Epoch 0" not in out.err
    assert not [w for w in caught if "logging interval" in str(w.message)], [str(w.message) for w in caught]
    run = work / "runs" / "mydata"
    metrics = json.loads((run / "metrics.json").read_text())
    assert list(metrics["per_class_iou"]) == CLASSES  # keyed by the names of classes.yaml
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["data"]["root"] == str(work / "mydata")  # stored absolute
    from cinet.checkpoint import read_checkpoint

    assert read_checkpoint(run / "last.ckpt")["cinet"]["train_size"] == [32, 40]

    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert main(predict) == 0
    # 48x64 photos, trained at 32x40: scaled to the training size, and said once per image size
    notes = [r.getMessage() for r in caplog.records if "training resolution" in r.getMessage()]
    assert len(notes) == 1 and "64x48 is far from the training resolution 40x32" in notes[0], notes
    assert "sees it at 40x30" in notes[0]  # sizes are WxH, as PIL and the memory check
    assert Image.open(work / "predictions" / "img0_labels.png").size == (64, 48)

    # from another folder: the stored absolute root still works; once the data moved, data.root= is named
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main(["eval", "--checkpoint", str(run / "last.ckpt"), "--out", str(elsewhere / "m")]) == 0
    (work / "mydata").rename(work / "moved")
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(run / "last.ckpt"), "--out", str(elsewhere / "m")]) == 2
    line = one_error_line(capsys)
    assert str(work / "mydata") in line and "data.root=PATH" in line and "overrides the stored path" in line
    assert (
        main(["eval", "--checkpoint", str(run), "--out", str(elsewhere / "m"), f"data.root={work / 'moved'}"])
        == 2
    )
    assert one_error_line(capsys) == f"error: {run}: is a directory; did you mean {run / 'last.ckpt'}?"

    # --resume says where it continues
    state = json.loads((run / "state.json").read_text())
    state.update(completed=[1, 2], evaluated=False)
    (run / "state.json").write_text(json.dumps(state))
    (work / "moved").rename(work / "mydata")
    assert main(["train", "--resume", str(run)]) == 0
    printed = capsys.readouterr().out
    assert re.search(
        rf"resuming {re.escape(str(run))}: stage 3 at step \d+ \(epoch \d+\) from .*stage3/last.ckpt "
        r"\(stages done: 1, 2\)",
        printed,
    ), printed


# ----------------------------------------------------------------------------------------------- depth scale


def test_wrong_depth_scale_is_named(tmp_path: Path, caplog, capsys: pytest.CaptureFixture[str]) -> None:
    root = write_mydata(tmp_path / "mm")  # millimetre PNGs
    out = tmp_path / "preview"
    with caplog.at_level(logging.WARNING):
        assert (
            main(["data", "preview", "folder", "--root", str(root), "--out", str(out), "depth_scale=1"]) == 0
        )
    records = [r for r in caplog.records if "depth_scale" in r.getMessage()]
    assert [r.name for r in records] == ["cinet.checks.depth"]  # what the terminal shows before the message
    lines = [r.getMessage() for r in records]
    assert "100% of valid depth is outside the dataset's range 0.001-10 m" in lines[0]
    assert (
        "(observed 1000-4000 m (1st-99th percentile, median 2500 m) in 4 samples); check depth_scale=N (depth PNG "
        "units per metre: 1000 = millimetres, 5000 = NYU exports)" in lines[0]
    ), lines[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING):  # the right scale: no warning
        assert main(["data", "preview", "folder", "--root", str(root), "--out", str(out)]) == 0
    assert not [r for r in caplog.records if "depth_scale" in r.getMessage()]
    # all-invalid depth is named too
    for p in (root / "depth").iterdir():
        Image.fromarray(np.zeros((48, 64), np.uint16)).save(p)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert main(["data", "preview", "folder", "--root", str(root), "--out", str(out)]) == 0
    assert [
        r for r in caplog.records if "no valid depth" in r.getMessage() and "depth_scale" in r.getMessage()
    ]


def test_wrong_depth_scale_warned_by_train_before_the_run(tmp_path: Path, caplog, capsys) -> None:
    root = write_mydata(tmp_path / "mm", n=2)
    run = tmp_path / "run"
    args = [
        "train",
        "--config",
        str(ROOT / "configs" / "folder.yaml"),
        "--run-dir",
        str(run),
        f"data.root={root}",
    ]
    with caplog.at_level(logging.WARNING):  # the batch size check stops it; the depth line came first
        assert main([*args, *FAST, "data.options={depth_scale: 1}", "data.batch_size=3"]) == 2
    assert [r for r in caplog.records if "data.options.depth_scale" in r.getMessage()]
    assert "data.batch_size: 3 is larger than the training set (2 samples)" in one_error_line(capsys)
    assert not run.exists()


def test_preview_titles_colour_bar_and_legend(tmp_path: Path) -> None:
    from cinet.utils.colors import colormap_lut

    root = write_mydata(tmp_path / "d", n=2)
    assert main(["data", "preview", "folder", "--root", str(root), "--out", str(tmp_path), "--num", "2"]) == 0
    grid = np.asarray(Image.open(tmp_path / "folder_train_preview.png"))
    h, w = 48, 64
    assert grid.shape[0] > 2 * h + 20  # a title row, two sample rows, a colour bar and the observed range
    title = grid[:10, :w]
    assert (title < 100).any()  # text above the RGB column
    lut = colormap_lut("turbo")
    bar_rows = [
        r
        for r in range(grid.shape[0])
        if (grid[r] == lut[0]).all(axis=1).any() and (grid[r] == lut[-1]).all(axis=1).any()
    ]
    assert bar_rows, "no colour bar"
    # the legend shows the palette colour of each class present (the default colours of ids 0, 1, 2: the first
    # three of matplotlib's category colours, tab:blue, tab:orange, tab:green)
    for colour in ([31, 119, 180], [255, 127, 14], [44, 160, 44]):
        assert (grid[:, 3 * w + 12 :] == colour).all(axis=2).any(), colour


# ----------------------------------------------------------------------------------------------- before the run dir


def _train(tmp_path: Path, root: Path, *extra: str) -> tuple[int, Path]:
    run = tmp_path / "run"
    cfg = str(ROOT / "configs" / "folder.yaml")
    rc = main(["train", "--config", cfg, "--run-dir", str(run), f"data.root={root}", *FAST, *extra])
    return rc, run


def test_batch_size_larger_than_training_set(tmp_path: Path, capsys) -> None:
    rc, run = _train(tmp_path, write_mydata(tmp_path / "d", n=3), "data.batch_size=4")
    assert rc == 2 and not run.exists()
    assert one_error_line(capsys).endswith(
        "larger than the training set (3 samples); set data.batch_size=3 or smaller"
    )


def test_missing_validation_split_names_the_setting(tmp_path: Path, capsys) -> None:
    root = write_mydata(tmp_path / "d")
    (root / "train.txt").write_text("img0\nimg1\n")
    (root / "test.txt").write_text("img2\nimg3\n")
    rc, run = _train(tmp_path, root)
    assert rc == 2 and not run.exists()
    line = one_error_line(capsys)
    assert "val.txt: split list not found" in line and "data.val_split='val'" in line
    assert "data.val_split=null" in line


def test_colour_label_pngs_are_refused_before_the_run(tmp_path: Path, capsys) -> None:
    rc, run = _train(tmp_path, write_mydata(tmp_path / "d", colour_labels=True))
    assert rc == 2 and not run.exists()
    line = one_error_line(capsys)
    assert "labels/img0.png" in line and "got mode 'RGB'" in line and "not colours" in line


def test_mixed_sizes_in_an_eval_split_name_what_helps(tmp_path: Path, capsys) -> None:
    root = write_mydata(tmp_path / "d", sizes={1: (40, 64)})
    # training crops to one size; evaluation batches of 2 hold a 48x64 and a 40x64 image
    rc, run = _train(tmp_path, root, "data.image_size=null", "data.crop_size=[32,40]")
    assert rc == 2 and not run.exists()
    line = one_error_line(capsys)
    assert (
        "images of the val split differ in size (64x48, 64x40) and one batch of data.eval_batch_size=2"
        in line
    )
    assert line.endswith("set data.image_size (every split) or data.eval_batch_size=1")


def test_yaml_option_without_space_gets_a_hint(tmp_path: Path, capsys) -> None:
    rc, run = _train(tmp_path, write_mydata(tmp_path / "d"), "data.options={num_classes:40}")
    assert rc == 2 and not run.exists()
    line = one_error_line(capsys)
    assert "data.options.num_classes:40: unknown option" in line
    assert "YAML needs a space after the colon: write {num_classes: 40}" in line


# ----------------------------------------------------------------------------------------------- predict, export


def test_predict_scales_far_images_to_the_training_size(tmp_path: Path, caplog) -> None:
    from cinet.checkpoint import save_model_checkpoint
    from inference_fixtures import tiny_info, tiny_model

    model, kwargs = tiny_model()
    ckpt = save_model_checkpoint(tmp_path / "t.ckpt", model, kwargs, tiny_info(), train_size=(40, 56))
    img = tmp_path / "big.png"
    Image.fromarray(synthetic_image(120, 168, 1)).save(img)
    with caplog.at_level(logging.WARNING):
        assert (
            main(
                [
                    "predict",
                    "--checkpoint",
                    str(ckpt),
                    str(img),
                    "--out",
                    str(tmp_path / "a"),
                    "--no-progress",
                ]
            )
            == 0
        )
    said = [r.getMessage() for r in caplog.records if "training resolution" in r.getMessage()]
    assert said == [
        f"{ckpt}: image 168x120 is far from the training resolution 56x40: the network sees it at "
        "56x40, results are at 168x120 (--keep-size to run it at its own size)"
    ]
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        args = ["predict", "--checkpoint", str(ckpt), str(img), "--out", str(tmp_path / "b"), "--keep-size"]
        assert main([*args, "--no-progress"]) == 0
    said = [r.getMessage() for r in caplog.records if "training resolution" in r.getMessage()]
    assert len(said) == 1 and "kept at its size (--keep-size)" in said[0]
    a = np.asarray(Image.open(tmp_path / "a" / "big_depth.png"))
    b = np.asarray(Image.open(tmp_path / "b" / "big_depth.png"))
    assert a.shape == b.shape == (120, 168) and not np.array_equal(a, b)


def test_export_is_dynamic_by_default(tmp_path: Path, capsys, caplog) -> None:
    from cinet.inference.export import OnnxRunner

    ckpt = save_tiny_checkpoint(tmp_path / "t.ckpt")
    assert main(["export", "--checkpoint", str(ckpt), "--onnx", str(tmp_path / "d.onnx"), "--no-check"]) == 0
    assert "(dynamic: any batch and size;" in capsys.readouterr().out
    assert OnnxRunner(tmp_path / "d.onnx").fixed_size is None
    args = [
        "export",
        "--checkpoint",
        str(ckpt),
        "--onnx",
        str(tmp_path / "f.onnx"),
        "--height",
        "40",
        "--width",
        "56",
    ]
    assert main([*args, "--no-check"]) == 0
    assert (
        "fixed input 56x40 (WxH): 'cinet predict --onnx' resizes every image to it" in capsys.readouterr().out
    )
    img = tmp_path / "room.png"
    Image.fromarray(synthetic_image(40, 56, 1)).save(img)
    with caplog.at_level(logging.WARNING):
        args = ["predict", "--onnx", str(tmp_path / "f.onnx"), str(img), "--out", str(tmp_path / "p")]
        assert main([*args, "--no-progress"]) == 0
    assert [
        r
        for r in caplog.records
        if "fixed-size ONNX model: every image is resized to 56x40" in r.getMessage()
    ]


def test_overlay_and_panel_legend_name_the_classes_present(tmp_path: Path) -> None:
    from cinet.inference import visualize
    from inference_fixtures import tiny_info

    ckpt = save_tiny_checkpoint(tmp_path / "t.ckpt")
    img = tmp_path / "room.png"
    Image.fromarray(synthetic_image(40, 56, 1)).save(img)
    assert (
        main(["predict", "--checkpoint", str(ckpt), str(img), "--out", str(tmp_path / "p"), "--no-progress"])
        == 0
    )
    labels = np.asarray(Image.open(tmp_path / "p" / "room_labels.png"))
    overlay = np.asarray(Image.open(tmp_path / "p" / "room_overlay.png"))
    info = tiny_info()
    present = visualize.present_classes(labels, info.num_classes)
    caption = visualize.caption_width("classes", visualize.caption_height(40))
    expected = visualize.legend(present, info.class_names, info.palette, 40, min_width=caption)
    np.testing.assert_array_equal(overlay[:, 56:], expected)
    absent = [c for c in range(info.num_classes) if c not in present]
    for c in present:  # each present class has its swatch; an absent one has none
        assert (overlay[:, 56:] == info.palette[c]).all(axis=2).any()
    for c in absent:
        assert not (overlay[:, 56:] == info.palette[c]).all(axis=2).any()


def test_checkpoint_directory_names_last_ckpt(tmp_path: Path, capsys) -> None:
    run = tmp_path / "runs" / "x"
    run.mkdir(parents=True)
    img = tmp_path / "room.png"
    Image.fromarray(synthetic_image(40, 56, 1)).save(img)
    assert main(["predict", "--checkpoint", str(run), str(img), "--out", str(tmp_path / "p")]) == 2
    assert one_error_line(capsys) == f"error: {run}: is a directory; did you mean {run / 'last.ckpt'}?"


def test_data_help_points_to_the_docs(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["data", "--help"])
    assert "docs/data.md" in capsys.readouterr().out
    assert (ROOT / "docs" / "data.md").is_file()
    assert "docs/data.md" in (ROOT / "README.md").read_text()


def test_panel_legend_is_as_wide_as_its_caption_at_480_rows() -> None:
    """The panel's "classes" caption (40 px font over 480 rows) was cut: the legend fits its names only."""
    from cinet.inference import visualize

    h = 480
    strip = visualize.caption_height(h)
    need = visualize.caption_width("classes", strip)
    assert need > 60  # the names' width alone (60 px minimum) would cut it
    key = visualize.legend([0, 1], ["a", "b"], [(255, 0, 0), (0, 255, 0)], h, min_width=need)
    assert key.shape == (h, need, 3)
    panel = visualize.make_panel([np.zeros((h, 64, 3), np.uint8), key], ["input", "classes"])
    caption = panel[:strip, 64:]
    dark = np.flatnonzero((caption < 128).any(axis=(0, 2)))
    assert dark.size and dark.max() < need - 1  # the whole word is inside the strip, with its margin


def test_mixed_sizes_that_no_eval_batch_mixes_pass_the_checks(tmp_path: Path) -> None:
    """Evaluation batches are consecutive samples: 48x64, 48x64 | 40x64, 40x64 at eval_batch_size 2 is fine."""
    from cinet.build.builders import build_datamodule
    from cinet.checks.data import check_training_data
    from cinet.config import load_config

    root = write_mydata(tmp_path / "d", sizes={2: (40, 64), 3: (40, 64)})
    cfg = load_config(ROOT / "configs" / "folder.yaml", [f"data.root={root}", *FAST, "data.image_size=null"])
    assert check_training_data(build_datamodule(cfg)) == (48, 64)  # the first training image
    cfg = load_config(
        ROOT / "configs" / "folder.yaml",
        [f"data.root={root}", *FAST, "data.image_size=null", "data.eval_batch_size=3"],
    )
    with pytest.raises(Exception, match="images of the val split differ in size"):
        check_training_data(build_datamodule(cfg))


def test_depth_in_whole_metres_is_named_although_inside_the_range(tmp_path: Path, caplog) -> None:
    """Issue 25: uint16 depth in whole metres (1..4) read as millimetres is 0.001-0.004 m: inside the folder
    dataset's range 0.001-10 m, so the range check was silent. The median (2.5 mm) is no scene's depth."""
    root = write_mydata(tmp_path / "metres", depth_per_metre=1.0)  # values 1, 2, 3, 4
    out = tmp_path / "preview"
    with caplog.at_level(logging.WARNING):
        assert main(["data", "preview", "folder", "--root", str(root), "--out", str(out)]) == 0
    lines = [r.getMessage() for r in caplog.records if "depth_scale" in r.getMessage()]
    assert len(lines) == 1, lines
    # values 1..4 over the columns, median 2.5 (by hand: round(1 + 3 x) for x in linspace(0, 1, 64))
    assert lines[0].startswith(f"{root}: the median valid depth is 0.0025 m, too close for a camera's view")
    assert "whole metres read as millimetres" in lines[0]


def test_coarse_depth_is_named_at_a_plausible_scale(tmp_path: Path, caplog) -> None:
    """The same files read with depth_scale=1 give 1-4 m, a plausible scene, but in 4 values 1 m apart."""
    root = write_mydata(tmp_path / "metres", depth_per_metre=1.0)
    out = tmp_path / "preview"
    with caplog.at_level(logging.WARNING):
        args = ["data", "preview", "folder", "--root", str(root), "--out", str(out), "depth_scale=1"]
        assert main(args) == 0
    lines = [r.getMessage() for r in caplog.records if "depth_scale" in r.getMessage()]
    assert len(lines) == 1, lines
    assert "depth has only 4 distinct values, in steps of 1 m around a median of 2.5 m" in lines[0], lines[0]


def test_eval_warns_about_the_depth_unit_and_refuses_other_class_names(
    tmp_path: Path, caplog, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 25: eval had no depth check, and a checkpoint whose class names differ from the dataset's (same
    count) was evaluated silently, ``per_class_iou`` keyed by the dataset's names."""
    import dataclasses

    from cinet.checkpoint import save_model_checkpoint
    from cinet.config import config_to_dict, load_config
    from cinet.data import dataset_info
    from inference_fixtures import tiny_model

    root = write_mydata(tmp_path / "metres", depth_per_metre=1.0)
    cfg = load_config(ROOT / "configs" / "folder.yaml", [f"data.root={root}", "data.num_workers=0"])
    info = dataset_info("folder", root=root)
    model, kwargs = tiny_model("cinet", num_classes=info.num_classes)
    good = save_model_checkpoint(tmp_path / "good.ckpt", model, kwargs, info, config_to_dict(cfg))
    with caplog.at_level(logging.WARNING):
        assert main(["eval", "--checkpoint", str(good), "--out", str(tmp_path / "ev")]) == 0
    assert [r for r in caplog.records if "too close for a camera's view" in r.getMessage()]
    capsys.readouterr()

    renamed = list(info.class_names)
    renamed[0], renamed[2] = renamed[2], renamed[0]  # the same count, ids 0 and 2 mean other classes
    other = dataclasses.replace(info, class_names=renamed)
    bad = save_model_checkpoint(tmp_path / "other.ckpt", model, kwargs, other, config_to_dict(cfg))
    out = tmp_path / "ev2"
    assert main(["eval", "--checkpoint", str(bad), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0] == (
        f"error: {bad}: trained on other classes than dataset 'folder' (2 of {len(renamed)} class ids differ: "
        f"id 0 is {renamed[0]!r} in the checkpoint, {info.class_names[0]!r} in the dataset; id 2 is "
        f"{renamed[2]!r} in the checkpoint, {info.class_names[2]!r} in the dataset); evaluate on the dataset it "
        "was trained on, or give the dataset the checkpoint's class names in id order"
    )
    assert not (out / "metrics.json").exists()


def test_class_name_differences_ignores_spelling_only() -> None:
    from cinet.checkpoint import class_name_differences

    assert class_name_differences(["Wall", "night_stand"], ["wall", "night-stand"]) is None
    assert class_name_differences(["wall", "floor"], ["wall"]) is None  # counts differ: another check
    assert class_name_differences(None, ["wall"]) is None
    assert class_name_differences(["wall", "floor"], ["class_0", "class_1"]) is None  # no names given
    assert class_name_differences(["a", "b", "c", "d", "e"], ["b", "a", "c", "e", "d"], limit=2) == (
        "4 of 5 class ids differ: id 0 is 'a' in the checkpoint, 'b' in the dataset; id 1 is 'b' in the "
        "checkpoint, 'a' in the dataset; and 2 more"
    )


def test_a_bad_label_outside_the_first_batch_is_found_before_the_run_dir(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 25: a bad label in sample 5 (the first batch is samples 0-3) was found at its batch, after the run
    directory existed (a retry needed --overwrite; an empty run directory was left)."""
    root = write_mydata(tmp_path / "data", n=6)
    bad = root / "labels" / "img5.png"
    labels = np.asarray(Image.open(bad)).copy()
    labels[10, 10] = 7  # 3 classes: ids 0..2
    Image.fromarray(labels).save(bad)
    run = tmp_path / "run"
    args = [
        "train",
        "--config",
        str(ROOT / "configs" / "folder.yaml"),
        "--run-dir",
        str(run),
        f"data.root={root}",
    ]
    assert main([*args, "data.batch_size=4", "data.num_workers=0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {bad}: label value 7 outside 0..2 (255 = ignore) [sample 5 of folder/train]"], err
    assert not run.exists()


@pytest.mark.parametrize("folder", ["depth", "labels"])
def test_a_map_of_another_format_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], folder: str
) -> None:
    """Issue 25: a JPEG depth map was reported as "depth/x.png: missing" without naming the .jpg found."""
    root = write_mydata(tmp_path / "data", n=2)
    png = root / folder / "img1.png"
    Image.open(png).convert("L").save(root / folder / "img1.jpg")
    png.unlink()
    assert main(["data", "preview", "folder", "--root", str(root), "--out", str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    why = {
        "depth": "depth maps must be 16-bit PNGs (metres x depth_scale); a JPEG is 8-bit and lossy",
        "labels": "label maps must be PNGs of class ids; a JPEG's compression changes the ids",
    }[folder]
    assert err == [f"error: {png}: missing for RGB image img1.jpg (found img1.jpg: {why})"], err


def test_a_listed_name_with_its_extension_or_another_case_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = write_mydata(tmp_path / "data", n=2)
    (root / "train.txt").write_text("img0.jpg\nIMG1\n")
    assert main(["data", "preview", "folder", "--root", str(root), "--out", str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"error: {root / 'rgb' / 'img0.jpg.png'}: RGB image listed in train.txt not found "
        "(train.txt lists file names: list stems, 'img0')"
    ], err
    (root / "train.txt").write_text("img0\nIMG1\n")
    assert main(["data", "preview", "folder", "--root", str(root), "--out", str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"error: {root / 'rgb' / 'IMG1.png'}: RGB image listed in train.txt not found "
        "(found img1.jpg: file names are case-sensitive)"
    ], err
