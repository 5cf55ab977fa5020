"""End-to-end smoke training through the CLI: three stages, run directory, eval, stage=N, resume, refusal."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import torch

from cinet.build import training
from cinet.checkpoint import STATE_PREFIX, read_checkpoint
from cinet.cli import main
from cinet.config import load_config, read_saved_git
from cinet.metrics import METRIC_KEYS

ROOT = Path(__file__).resolve().parents[1]
SMOKE = str(ROOT / "configs" / "smoke.yaml")


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("smoke") / "run"
    assert main(["train", "--config", SMOKE, "--run-dir", str(run_dir)]) == 0
    return run_dir


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return {k: v for k, v in read_checkpoint(path)["state_dict"].items() if k.startswith(STATE_PREFIX)}


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_run_directory(smoke_run: Path) -> None:
    for n in (1, 2, 3):
        assert (smoke_run / f"stage{n}" / "last.ckpt").is_file()
        assert (smoke_run / f"stage{n}" / "config.yaml").is_file()
        assert any((smoke_run / "tb" / f"stage{n}").glob("events.out.tfevents.*"))
    assert (smoke_run / "last.ckpt").is_file()
    state = json.loads((smoke_run / "state.json").read_text())
    assert state["completed"] == [1, 2, 3] and state["evaluated"] is True
    metrics = json.loads((smoke_run / "metrics.json").read_text())
    for key in METRIC_KEYS:
        assert isinstance(metrics[key], float), key
    assert 0.0 <= metrics["delta1"] <= 1.0 and metrics["rms"] > 0
    assert metrics["protocol"]["dataset"] == "synthetic"
    assert "description" in metrics["protocol"]
    text = (smoke_run / "config.yaml").read_text()
    assert "# git: " in text
    assert read_saved_git(smoke_run / "config.yaml") is not None  # the tests run from a git checkout
    assert load_config(smoke_run / "config.yaml").model.variant == "cinet"
    assert not list(smoke_run.rglob("*.tmp"))  # atomic writes leave no temporaries
    precision = json.loads((smoke_run / "precision.json").read_text())
    assert (precision["requested"], precision["precision"]) == ("32", "32-true")  # smoke.yaml pins it


def test_tensorboard_logs(smoke_run: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(smoke_run / "tb" / "stage3"))
    ea.Reload()
    scalars = set(ea.Tags()["scalars"])
    for term in ("total", "depth", "seg", "att", "con", "berhu", "pair", "normal"):
        assert f"train/{term}" in scalars, term
    assert {"lr/encoder", "lr/new", "val/delta1", "val/miou"} <= scalars
    (tag,) = ea.Tags()[
        "images"
    ]  # input | GT depth | pred depth | GT labels | pred labels, once per validation
    image = ea.Images(tag)[0]
    assert image.width == 5 * 80 and image.height == 2 * 64


def test_checkpoint_payload(smoke_run: Path) -> None:
    ckpt = read_checkpoint(smoke_run / "last.ckpt")
    payload = ckpt["cinet"]
    assert payload["format"] == 1
    assert payload["model"]["variant"] == "cinet" and payload["model"]["num_classes"] == 13
    assert payload["dataset"]["name"] == "synthetic" and len(payload["dataset"]["palette"]) == 13
    assert payload["config"]["model"]["channels"] == 32
    assert payload["stage"] == 3
    assert any(k.startswith("model.encoder.") for k in ckpt["state_dict"])
    _assert_same(_weights(smoke_run / "last.ckpt"), _weights(smoke_run / "stage3" / "last.ckpt"))


def test_poly_lr_decays_to_zero_in_stage3(smoke_run: Path) -> None:
    ckpt = read_checkpoint(smoke_run / "stage3" / "last.ckpt")
    (sched,) = ckpt["lr_schedulers"]
    assert sched["base_lrs"][1] == pytest.approx(1e-3)
    assert sched["base_lrs"][0] == pytest.approx(1e-4)  # encoder at 0.1x
    assert max(sched["_last_lr"]) < 1e-6
    ckpt1 = read_checkpoint(smoke_run / "stage1" / "last.ckpt")
    assert ckpt1["lr_schedulers"][0]["_last_lr"][1] == pytest.approx(1e-3)  # constant in stage 1


def test_eval_keeps_the_runs_own_metrics(smoke_run: Path, tmp_path: Path) -> None:
    """By default eval wrote the run's metrics.json (the one the model card publishes): an evaluation under other
    settings replaced the training's numbers unseen. It now writes eval/metrics.json beside the checkpoint."""
    import shutil

    run = tmp_path / "run"
    run.mkdir()
    for name in ("last.ckpt", "metrics.json"):
        shutil.copy2(smoke_run / name, run / name)
    before = (run / "metrics.json").read_bytes()
    assert main(["eval", "--checkpoint", str(run / "last.ckpt"), "train.eval.reduction=pooled"]) == 0
    assert (run / "metrics.json").read_bytes() == before
    assert json.loads((run / "eval" / "metrics.json").read_text())["protocol"]["reduction"] == "pooled"


def test_eval_reproduces_training_metrics(
    smoke_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert main(["eval", "--checkpoint", str(smoke_run / "last.ckpt"), "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "Protocol: synthetic" in out and "| cinet |" in out
    got = json.loads((tmp_path / "metrics.json").read_text())
    want = json.loads((smoke_run / "metrics.json").read_text())
    for key in METRIC_KEYS:
        assert got[key] == pytest.approx(want[key], rel=1e-6), key
    # protocol override: pooled reduction changes rms, not the segmentation scores
    assert (
        main(
            [
                "eval",
                "--checkpoint",
                str(smoke_run / "last.ckpt"),
                "--out",
                str(tmp_path),
                "train.eval.reduction=pooled",
            ]
        )
        == 0
    )
    pooled = json.loads((tmp_path / "metrics.json").read_text())
    assert pooled["protocol"]["reduction"] == "pooled"
    assert pooled["miou"] == pytest.approx(want["miou"])


def test_eval_missing_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["eval", "--checkpoint", str(tmp_path / "nope.ckpt")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope.ckpt" in err[0]


def test_existing_run_dir_is_refused(smoke_run: Path, capsys: pytest.CaptureFixture) -> None:
    before = {p: p.stat().st_mtime_ns for p in smoke_run.rglob("*") if p.is_file()}
    assert main(["train", "--config", SMOKE, "--run-dir", str(smoke_run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "run directory exists" in err[0]
    after = {p: p.stat().st_mtime_ns for p in smoke_run.rglob("*") if p.is_file()}
    assert before == after


def test_single_stage_from_checkpoint(smoke_run: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "s2"
    init = smoke_run / "stage1" / "last.ckpt"
    assert main(["train", "--config", SMOKE, "--run-dir", str(run_dir), "stage=2", f"init_from={init}"]) == 0
    assert (run_dir / "stage2" / "last.ckpt").is_file()
    assert not (run_dir / "stage1").exists() and not (run_dir / "stage3").exists()
    assert json.loads((run_dir / "state.json").read_text())["completed"] == [2]
    # same seed, same data, same initial weights: identical to stage 2 of the full run
    _assert_same(_weights(run_dir / "stage2" / "last.ckpt"), _weights(smoke_run / "stage2" / "last.ckpt"))
    # stage 3 into the same run dir picks up stage 2's checkpoint
    assert main(["train", "--config", SMOKE, "--run-dir", str(run_dir), "stage=3"]) == 0
    _assert_same(_weights(run_dir / "stage3" / "last.ckpt"), _weights(smoke_run / "stage3" / "last.ckpt"))
    # a later stage without the earlier one's weights is an error
    assert main(["train", "--config", SMOKE, "--run-dir", str(tmp_path / "s3"), "stage=3"]) == 2


class _Crash(L.Callback):
    """Simulates a crash (e.g. a killed job) after a given global step of a given stage."""

    def __init__(self, stage: int, step: int):
        self.stage, self.step = stage, step

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: object) -> None:
        if pl_module.stage == self.stage and trainer.global_step == self.step:
            raise RuntimeError("simulated crash")


def test_resume_after_crash_is_exact(smoke_run: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "crash"
    cfg = load_config(SMOKE, ["train.checkpoint_every=1"])
    with pytest.raises(RuntimeError, match="simulated crash"):
        training.train(cfg, run_dir, callbacks=[_Crash(stage=2, step=2)])
    state = json.loads((run_dir / "state.json").read_text())
    assert state["completed"] == [1] and state["current"] == 2
    assert read_checkpoint(run_dir / "stage2" / "last.ckpt")["global_step"] == 2
    assert not (run_dir / "metrics.json").exists()
    assert main(["train", "--resume", str(run_dir)]) == 0
    state = json.loads((run_dir / "state.json").read_text())
    assert state["completed"] == [1, 2, 3] and state["evaluated"]
    # resumed mid-epoch with the same data order, augmentation and RNG: bit-identical to the uninterrupted run
    for n in (2, 3):
        _assert_same(
            _weights(run_dir / f"stage{n}" / "last.ckpt"), _weights(smoke_run / f"stage{n}" / "last.ckpt")
        )


def test_bf16_channels_last_single_stage(tmp_path: Path) -> None:
    run_dir = tmp_path / "bf16"
    args = ["train", "--config", SMOKE, "--run-dir", str(run_dir), "stage=1"]
    assert (
        main([*args, "trainer.precision=bf16-mixed", "trainer.channels_last=true", "train.val_every=0"]) == 0
    )
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert all(isinstance(metrics[k], float) for k in METRIC_KEYS)
    assert read_checkpoint(run_dir / "last.ckpt")["cinet"]["config"]["trainer"]["precision"] == "bf16-mixed"
    assert json.loads((run_dir / "precision.json").read_text())["precision"] == "bf16-mixed"


def test_init_from_of_another_variant_is_refused(smoke_run: Path, tmp_path: Path, capsys) -> None:
    run_dir = tmp_path / "wrong"
    init = smoke_run / "stage1" / "last.ckpt"  # a cinet checkpoint
    rc = main(
        ["train", "--config", SMOKE, "--run-dir", str(run_dir), "model.variant=baseline", f"init_from={init}"]
    )
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        len(err) == 1 and "weights do not fit model.variant='baseline'" in err[0] and "unexpected" in err[0]
    )
    assert not run_dir.exists()  # checked before anything is written


def test_profiler_report_and_phase_times(tmp_path: Path) -> None:
    # trainer.profiler=simple: Lightning's SimpleProfiler writes the stage's report into RUN_DIR/profile;
    # train() returns this call's wall time per phase, in order
    cfg = load_config(SMOKE, ["stage=1", "trainer.profiler=simple", "train.val_every=0"])
    result = training.train(cfg, tmp_path / "run")
    report = tmp_path / "run" / "profile" / "fit-stage1.txt"
    assert report.is_file()
    assert "run_training_batch" in report.read_text()
    times = result["times_s"]
    assert list(times) == ["checks", "stage1", "evaluation"]
    assert all(v >= 0 for v in times.values()) and times["stage1"] > 0


def test_unknown_profiler_is_refused_with_the_key(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run_dir = tmp_path / "run"
    assert main(["train", "--config", SMOKE, "--run-dir", str(run_dir), "trainer.profiler=cprofile"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "trainer.profiler" in err[0] and "simple" in err[0]
    assert not run_dir.exists()
