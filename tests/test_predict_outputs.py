"""``cinet predict`` never replaces a file it did not write (session 9, fault 1): the user's own
``<stem>_depth.png`` (or any other output name) in ``--out`` stops the command before the model runs, with one
line naming the file; a second run into the same folder replaces cinet's own files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cinet.checks.outputs import is_cinet_file
from cinet.cli import main
from inference_fixtures import INTRINSICS, save_tiny_checkpoint, synthetic_image

SUFFIXES = ("_depth.png", "_depth_color.png", "_labels.png", "_seg_color.png", "_overlay.png", "_panel.png")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.ckpt")


@pytest.fixture()
def photo(tmp_path: Path) -> Path:
    folder = tmp_path / "img"
    folder.mkdir()
    path = folder / "000464.png"
    Image.fromarray(synthetic_image(40, 56, 1)).save(path)
    return path


def _predict(ckpt: Path, photo: Path, out: Path, *extra: str) -> int:
    return main(
        ["predict", "--checkpoint", str(ckpt), str(photo), "--out", str(out), "--no-progress", *extra]
    )


def _stderr_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.mark.parametrize("suffix", ["_depth.png", "_panel.png"])
def test_users_text_file_at_an_output_name_is_refused_and_kept(
    ckpt: Path, photo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], suffix: str
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    mine = out / f"000464{suffix}"
    mine.write_text("keep")
    assert _predict(ckpt, photo, out) == 2
    line = _stderr_line(capsys)
    assert line == (
        f"error: {mine}: exists and was not written by cinet predict (nothing written); "
        "move it or choose another --out"
    )
    assert _snapshot(out) == {mine.name: b"keep"}  # nothing written, the user's file as it was


def test_users_own_png_and_folder_are_refused(
    ckpt: Path, photo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    mine = out / "000464_seg_color.png"
    Image.fromarray(synthetic_image(40, 56, 9)).save(mine)  # a real PNG, but not cinet's
    before = mine.read_bytes()
    assert _predict(ckpt, photo, out) == 2
    assert str(mine) in _stderr_line(capsys)
    assert _snapshot(out) == {mine.name: before}
    mine.unlink()
    (out / "000464_overlay.png").mkdir()  # a folder where a file goes
    assert _predict(ckpt, photo, out) == 2
    assert "000464_overlay.png: is a folder and was not written by cinet predict" in _stderr_line(capsys)
    assert _snapshot(out) == {}


def test_rerun_replaces_cinets_own_files_and_they_are_marked(
    ckpt: Path, photo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    args = ("--ply", "--intrinsics", ",".join(map(str, INTRINSICS)))
    assert _predict(ckpt, photo, out, *args) == 0
    for suffix in SUFFIXES:
        with Image.open(out / f"000464{suffix}") as im:
            assert im.info.get("Software") == "cinet", suffix
    assert b"\ncomment cinet 000464.png\n" in (out / "000464.ply").read_bytes()[:2000]
    assert all(is_cinet_file(p) for p in out.iterdir())
    first = _snapshot(out)
    assert _predict(ckpt, photo, out, *args) == 0  # the same --out again: cinet's own files are replaced
    assert _snapshot(out) == first
    capsys.readouterr()


def test_users_ply_is_refused_with_ply(
    ckpt: Path, photo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert _predict(ckpt, photo, out) == 0  # cinet's PNGs, no PLY yet
    capsys.readouterr()
    mine = out / "000464.ply"
    mine.write_bytes(b"ply\nformat ascii 1.0\ncomment scanned by me\nelement vertex 0\nend_header\n")
    before = _snapshot(out)
    args = ("--ply", "--intrinsics", ",".join(map(str, INTRINSICS)))
    assert _predict(ckpt, photo, out, *args) == 2
    assert f"error: {mine}: exists and was not written by cinet predict" in _stderr_line(capsys)
    assert _snapshot(out) == before


def test_is_cinet_file_on_other_files(tmp_path: Path) -> None:
    text = tmp_path / "a.png"
    text.write_text("keep")
    plain = tmp_path / "b.png"
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(plain)
    other = tmp_path / "c.txt"
    other.write_text("cinet")
    assert not any(is_cinet_file(p) for p in (text, plain, other, tmp_path, tmp_path / "missing.png"))
