"""``cinet data preview``: writes a grid PNG and prints its path; bad input exits 2 with one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cinet.cli import main


def test_preview_synthetic(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(
        ["data", "preview", "synthetic", "--num", "2", "--out", str(tmp_path), "size=[24,32]", "seed=5"]
    )
    assert rc == 0
    out = Path(capsys.readouterr().out.strip())
    assert out == tmp_path / "synthetic_train_preview.png" and out.is_file()
    grid = np.asarray(Image.open(out))
    # a 12-pixel title row, two rows of 24 + 4, a colour bar (8) with its labels (12), the observed range (12);
    # RGB | depth | labels columns of 32 + 4, then a legend column
    title = 12
    assert grid.shape[0] == title + 2 * (24 + 4) + 8 + 12 + title
    assert grid.shape[1] >= 3 * 32 + 3 * 4 + 40 and grid.shape[2] == 3  # without the legend: 3 * 32 + 2 * 4
    # third panel of the first row uses the dataset palette (floor / wall colours of NYU13)
    labels_panel = grid[title : title + 24, 2 * 36 : 2 * 36 + 32].reshape(-1, 3)
    colours = {tuple(c) for c in labels_panel}
    assert (222, 241, 23) in colours or (249, 139, 0) in colours


def test_preview_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "preview", "nyuv2", "--root", str(tmp_path / "none"), "--out", str(tmp_path)]) == 2
    assert f"{tmp_path / 'none'}: NYUv2 root not found" in capsys.readouterr().err
    assert main(["data", "preview", "synthetic", "colour=red", "--out", str(tmp_path)]) == 2
    assert "data.options.colour: unknown option" in capsys.readouterr().err
    # a folder for the rendered dataset would be ignored
    assert main(["data", "preview", "synthetic", "--root", str(tmp_path), "--out", str(tmp_path)]) == 2
    assert "error: --root: the synthetic dataset is rendered and reads no folder" in capsys.readouterr().err
    assert not list(tmp_path.glob("*.png"))


def test_cli_module_does_not_import_torch() -> None:
    import subprocess
    import sys

    code = "import sys, cinet.commands.data, cinet.data; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
