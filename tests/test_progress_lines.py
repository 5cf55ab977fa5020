"""Training progress when stderr is not a terminal (a log file, CI, a cluster job): plain lines (issue 25, item 9)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cinet.cli import main
from cinet.engine.callbacks import read_losses

ROOT = Path(__file__).resolve().parents[1]
SMOKE = str(ROOT / "configs" / "smoke.yaml")
LINE = re.compile(
    r"^stage 1 epoch (\d+)/2 step (\d+)/8: total (\d+\.\d{4})( [a-z]+ \d+\.\d{4})* \| "
    r"\d+\.\d\d steps/s, \d+\.\d images/s, eta \d+(s|m\d\ds)$"
)


def test_a_plain_line_every_n_steps_and_at_each_epoch_end(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "run"
    args = [
        "train", "--config", SMOKE, "--run-dir", str(run_dir), "stage=1", "train.stages.0.epochs=2",
        "train.val_every=0", "train.log_every=3", "trainer.progress_bar=true",
    ]  # fmt: skip
    assert main(args) == 0  # 16 images, batch 4: 4 steps per epoch, 8 in all
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("stage ")]
    assert len(lines) == 4, err  # steps 3, 4 (epoch end), 6, 8 (both)
    matches = [LINE.match(line) for line in lines]
    assert all(matches), lines
    assert [(int(m[1]), int(m[2])) for m in matches] == [(1, 3), (1, 4), (2, 6), (2, 8)]  # type: ignore[index]
    # the total of a line is the mean of the steps since the previous line, as losses.csv has them
    totals = [r["total"] for r in read_losses(run_dir / "stage1" / "losses.csv")]
    expected = [sum(totals[0:3]) / 3, totals[3], sum(totals[4:6]) / 2, sum(totals[6:8]) / 2]
    assert [float(m[3]) for m in matches] == pytest.approx(expected, abs=6e-5)  # type: ignore[index]
    assert " att " not in lines[0]  # a term inactive in stage 1 (always 0) is left out


def test_no_lines_without_progress(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = [
        "train", "--config", SMOKE, "--run-dir", str(tmp_path / "run"), "stage=1", "train.val_every=0",
        "trainer.progress_bar=false",
    ]  # fmt: skip
    assert main(args) == 0
    assert not [line for line in capsys.readouterr().err.splitlines() if line.startswith("stage ")]
