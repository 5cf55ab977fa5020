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
