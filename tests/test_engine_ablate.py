"""``cinet ablate`` on two variants at smoke size: same seed/data, table + JSON, continues where it stopped."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cinet.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_ablate_two_variants(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run_dir = tmp_path / "abl"
    args = [
        "ablate",
        "--config",
        str(ROOT / "configs" / "smoke.yaml"),
        "--variants",
        "baseline,sum",
        "--run-dir",
        str(run_dir),
        "train.stages.0.epochs=1",
    ]
    assert main(args) == 0
    md = (run_dir / "ablation.md").read_text()
    assert "| baseline |" in md and "| baseline + SUM |" in md
    assert "δ1 ↑" in md and "rms ↓" in md and "mIoU (%) ↑" in md
    assert "Hardware:" in md and "wall time" in md and "Protocol: synthetic" in md
    data = json.loads((run_dir / "ablation.json").read_text())
    assert list(data["results"]) == ["baseline", "sum"]
    for v in ("baseline", "sum"):
        assert (run_dir / v / "metrics.json").is_file()
        cfg = (run_dir / v / "config.yaml").read_text()
        assert f"variant: {v}" in cfg and "seed: 0" in cfg
        assert data["results"][v]["metrics"]["delta1"] > 0
    assert data["results"]["baseline"]["metrics"] != data["results"]["sum"]["metrics"]
    out = capsys.readouterr().out
    assert "ablation.md" in out
    # a second call reuses finished variants instead of training them again
    mtime = (run_dir / "sum" / "last.ckpt").stat().st_mtime_ns
    assert main(args) == 0
    assert (run_dir / "sum" / "last.ckpt").stat().st_mtime_ns == mtime
    assert "done before" in capsys.readouterr().out


def test_ablate_unknown_variant(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rc = main(
        [
            "ablate",
            "--config",
            str(ROOT / "configs" / "smoke.yaml"),
            "--variants",
            "baseline,nope",
            "--run-dir",
            str(tmp_path / "x"),
        ]
    )
    assert rc == 2
    assert "unknown variant 'nope'" in capsys.readouterr().err


def test_combine_seeds_mean_and_std() -> None:
    from cinet.commands.ablate import _combine
    from cinet.metrics import METRIC_KEYS

    a = {"metrics": dict.fromkeys(METRIC_KEYS, 1.0), "wall_s": 2.0}
    b = {"metrics": dict.fromkeys(METRIC_KEYS, 3.0), "wall_s": 4.0}
    out = _combine([a, b])
    assert out["metrics"]["rms"] == 2.0 and out["std"]["rms"] == pytest.approx(2**0.5)
    assert out["wall_s"] == 6.0 and out["runs"] == [a, b]
    assert _combine([a]) is a
