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
        "baseline,sum,depth_only,seg_only",
        "--row",
        "sum_handover: model.variant=sum train.schedule=handover train.handover_epochs=0.5",
        "--run-dir",
        str(run_dir),
        "--protocol",
        "paper",
        "--flip",
        "train.stages.0.epochs=1",
    ]
    assert main(args) == 0
    md = (run_dir / "ablation.md").read_text()
    # every protocol field travels with the table (named protocol, flip, classes, split, seeds)
    assert "protocol paper" in md and "flip averaged" in md and "13 classes" in md and "seeds 0" in md
    assert "| baseline |" in md and "| baseline + SUM |" in md and "| sum_handover |" in md
    assert "| depth only (single task) |" in md and "| segmentation only (single task) |" in md
    assert "δ1 ↑" in md and "rms ↓" in md and "mIoU (%) ↑" in md and "Δm (%) ↑" in md
    assert "Hardware:" in md and "wall time" in md and "Protocol: synthetic" in md
    assert "Training loss per term" in md and "Gradient norm per part" in md
    data = json.loads((run_dir / "ablation.json").read_text())
    assert list(data["results"]) == ["baseline", "sum", "depth_only", "seg_only", "sum_handover"]
    proto = data["protocol"]
    assert proto["name"] == "paper" and proto["crop"] == "eigen" and proto["flip"] is True
    assert proto["seeds"] == [0] and proto["split"] == "test" and proto["num_classes"] == 13
    row_proto = json.loads((run_dir / "sum" / "metrics.json").read_text())["protocol"]
    assert (
        row_proto["name"] == "paper"
        and row_proto["flip"] is True
        and len(row_proto["checkpoint_sha256"]) == 64
    )
    for v in ("baseline", "sum", "sum_handover"):
        assert (run_dir / v / "metrics.json").is_file()
        cfg = (run_dir / v / "config.yaml").read_text()
        assert f"variant: {v.split('_')[0]}" in cfg and "seed: 0" in cfg
        assert data["results"][v]["metrics"]["delta1"] > 0
        assert data["comparison"][v]["delta_m"] is not None
    assert "schedule: handover" in (run_dir / "sum_handover" / "config.yaml").read_text()
    results = data["results"]
    assert results["depth_only"]["metrics"]["miou"] is None and results["depth_only"]["metrics"]["rms"] > 0
    assert results["seg_only"]["metrics"]["rms"] is None and results["seg_only"]["metrics"]["miou"] > 0
    assert results["baseline"]["metrics"] != results["sum"]["metrics"]
    # the attention agreement with M M^T: a column for the rows with a learned SUM map, – for the others
    assert "att BCE ↓" in md and "att AUC ↑" in md
    assert 0.0 <= results["sum"]["metrics"]["att_auc"] <= 1.0 and results["sum"]["metrics"]["att_bce"] > 0
    assert results["baseline"]["metrics"]["att_auc"] is None
    # diagnostics: per-term training losses by stage (att only where the SUM learns its map) and grad norms
    loss = results["sum"]["diagnostics"]["loss"]
    assert "att" not in loss["s1"] and loss["s2"]["att"] > 0 and loss["s1"]["depth"] > 0
    assert "att" not in results["baseline"]["diagnostics"]["loss"]["s2"]
    assert "seg" not in results["depth_only"]["diagnostics"]["loss"]["s3"]
    grads = results["sum"]["diagnostics"]["grad_norm"]
    assert grads["s2"]["sum"] > 0 and grads["s2"]["encoder"] > 0 and "sharing" not in grads["s2"]
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


def _fake(values: dict[str, list[float]]) -> dict:
    from cinet.commands.ablate import _combine

    n = len(next(iter(values.values())))
    runs = [{"metrics": {k: v[i] for k, v in values.items()}, "wall_s": 1.0} for i in range(n)]
    return _combine(runs)


def test_compare_rows_significance_and_delta_m() -> None:
    from cinet.commands.ablate import compare_rows, format_results

    results = {
        "baseline": _fake({"rms": [0.70, 0.71, 0.72], "miou": [0.20, 0.21, 0.19]}),
        # rms clearly lower (better) than the baseline; mIoU within the noise
        "cinet": _fake({"rms": [0.60, 0.61, 0.59], "miou": [0.21, 0.19, 0.20]}),
        "depth_only": _fake({"rms": [0.65, 0.65, 0.65], "miou": [None, None, None]}),
        "seg_only": _fake({"rms": [None, None, None], "miou": [0.25, 0.25, 0.25]}),
    }
    comparison = compare_rows(results)
    assert comparison["cinet"]["p"]["rms"] < 0.05 and comparison["cinet"]["p"]["miou"] > 0.05
    assert comparison["baseline"]["p"] == {}
    # Δm of cinet: rms 0.60 vs 0.65 (+7.692 %), mIoU 0.20 vs 0.25 (-20 %) -> mean -6.154 %
    assert comparison["cinet"]["delta_m"] == pytest.approx((0.05 / 0.65 - 0.05 / 0.25) / 2 * 100)
    assert comparison["depth_only"]["delta_m"] is None and comparison["seg_only"]["delta_m"] is None
    table = format_results(results, comparison)
    assert "| CI-Net (SUM + FSM + L_con) | " in table and "0.600 ± 0.010 (+)" in table
    assert "20.000 ± 1.000 |" in table  # mIoU in %, no mark: within the noise
    assert "Δm (%) ↑" in table and "-6.15" in table


def test_parse_rows() -> None:
    from cinet.commands.ablate import parse_rows
    from cinet.errors import ConfigError

    rows = parse_rows("baseline,cinet", ["cinet_learned: model.variant=cinet train.schedule=learned"])
    assert rows == {
        "baseline": ["model.variant=baseline"],
        "cinet": ["model.variant=cinet"],
        "cinet_learned": ["model.variant=cinet", "train.schedule=learned"],
    }
    with pytest.raises(ConfigError, match=r"--row 'a b: x=1'"):
        parse_rows("", ["a b: x=1"])
    with pytest.raises(ConfigError, match="given twice"):
        parse_rows("cinet", ["cinet: model.variant=cinet"])


def test_ablate_checks_every_rows_encoder_weights_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """A missing weights file in the last row stops the ablation before the first row trains."""
    run_dir = tmp_path / "abl"
    missing = tmp_path / "missing.pth"
    rc = main(
        [
            "ablate",
            "--config",
            str(ROOT / "configs" / "smoke.yaml"),
            "--variants",
            "baseline",
            "--row",
            f"pretrained: model.encoder_weights={missing}",
            "--run-dir",
            str(run_dir),
        ]
    )
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert str(missing) in err and "encoder weights file not found" in err
    assert not run_dir.exists()


def test_ablate_checks_every_rows_folder_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A later row's folder holding the user's files was refused only after the earlier rows had trained."""
    import cinet.build.training

    monkeypatch.setattr(
        cinet.build.training, "train", lambda *a, **k: pytest.fail("trained before the check")
    )
    run_dir = tmp_path / "abl"
    (run_dir / "sum").mkdir(parents=True)
    (run_dir / "sum" / "notes.txt").write_text("mine")
    argv = ["ablate", "--config", str(ROOT / "configs" / "smoke.yaml"), "--variants", "baseline,sum"]
    rc = main([*argv, "--run-dir", str(run_dir)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert err.startswith(f"error: {run_dir / 'sum'}: exists and is not a cinet run directory (row 'sum'")
    assert sorted(p.name for p in run_dir.rglob("*")) == ["notes.txt", "sum"]
