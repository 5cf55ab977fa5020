"""Training under crashes and bad steps: SIGKILL mid-stage + ``--resume`` is exact; non-finite losses.

Rows of ``docs/reliability.md`` (section "Crashes and interruptions" and "Training").
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cinet.checkpoint import STATE_PREFIX, read_checkpoint
from cinet.cli import main
from cinet.engine.callbacks import read_losses
from cinet.losses.total import TotalLoss

ROOT = Path(__file__).resolve().parents[1]
SMOKE = str(ROOT / "configs" / "smoke.yaml")
# one checkpoint per step; one DataLoader worker (worker seeding and prefetching are part of what must resume)
TRAIN = ["train", "--config", SMOKE, "train.checkpoint_every=1", "data.num_workers=1"]


def _cli(args: list[str]) -> subprocess.Popen[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "cinet.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )


def _rows(path: Path) -> int:
    try:
        return max(0, len(path.read_text().splitlines()) - 1)
    except FileNotFoundError:
        return 0


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return {k: v for k, v in read_checkpoint(path)["state_dict"].items() if k.startswith(STATE_PREFIX)}


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_sigkill_mid_stage_then_resume_is_exact(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ref_dir, run_dir = tmp_path / "ref", tmp_path / "run"
    ref = _cli([*TRAIN, "--run-dir", str(ref_dir)])  # uninterrupted, in parallel with the one killed
    victim = _cli([*TRAIN, "--run-dir", str(run_dir)])
    log = run_dir / "stage2" / "losses.csv"
    deadline = time.monotonic() + 120
    while victim.poll() is None and _rows(log) < 2 and time.monotonic() < deadline:
        time.sleep(0.005)
    victim.send_signal(signal.SIGKILL)  # in the middle of stage 2 (4 steps), maybe during a checkpoint save
    out = victim.communicate()[0]
    assert victim.returncode == -signal.SIGKILL, out
    state = json.loads((run_dir / "state.json").read_text())
    assert state["completed"] == [1] and state["current"] == 2, state
    assert not (run_dir / "metrics.json").exists()

    # a resume whose overrides change the model is refused before anything is written
    before = {k: v for k, v in _snapshot(run_dir).items() if not k.endswith(".tmp")}
    assert main(["train", "--resume", str(run_dir), "model.variant=fsm"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        len(err) == 1 and str(run_dir / "stage2" / "last.ckpt") in err[0] and "variant differs" in err[0]
    ), err
    assert _snapshot(run_dir) == before

    resumed = _cli(["train", "--resume", str(run_dir)])
    out = resumed.communicate(timeout=300)[0]
    assert resumed.returncode == 0, out
    out = ref.communicate(timeout=300)[0]
    assert ref.returncode == 0, out

    for n in (1, 2, 3):
        got = (run_dir / f"stage{n}" / "losses.csv").read_text()
        want = (ref_dir / f"stage{n}" / "losses.csv").read_text()
        assert got == want, f"stage {n}:\n{got}\nvs uninterrupted:\n{want}"  # every step, bit for bit
        assert [r["step"] for r in read_losses(run_dir / f"stage{n}" / "losses.csv")] == [1.0, 2.0, 3.0, 4.0]
    a, b = _weights(run_dir / "last.ckpt"), _weights(ref_dir / "last.ckpt")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not list(run_dir.rglob("*.tmp"))  # a temporary file of a killed save is cleaned up on resume
    m1, m2 = (json.loads((d / "metrics.json").read_text()) for d in (run_dir, ref_dir))
    assert {k: m1[k] for k in ("rms", "delta1", "miou")} == {k: m2[k] for k in ("rms", "delta1", "miou")}


# A training run that SIGKILLs its own process group (itself and its DataLoader workers) right after the
# checkpoint of a chosen step: at a batch end ("batch") or at an epoch end ("epoch"); a second run of it on the
# same folder resumes. Deterministic kill points, unlike a kill timed from outside.
_KILLER = """
import os, signal, sys
from pathlib import Path
import lightning as L
from cinet.config import load_config
from cinet.build.training import train

run_dir, hook, step, config, overrides = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5:]

class Kill(L.Callback):  # after RollingCheckpoint in the callback list: the checkpoint of `step` is written
    def on_train_batch_end(self, trainer, *args):
        if hook == "batch" and trainer.global_step == step:
            os.killpg(0, signal.SIGKILL)
    def on_train_epoch_end(self, trainer, module):
        if hook == "epoch" and trainer.global_step == step:
            os.killpg(0, signal.SIGKILL)

resume = (run_dir / "config.yaml").is_file()
cfg = load_config(run_dir / "config.yaml") if resume else load_config(config, overrides)
train(cfg, run_dir, resume=resume, callbacks=[Kill()], evaluate=False)
"""


def _killer(run_dir: Path, hook: str, step: int, overrides: list[str]) -> subprocess.Popen[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-c", _KILLER, str(run_dir), hook, str(step), SMOKE, *overrides],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        start_new_session=True,  # its own process group: the kill reaches its workers, not pytest
    )


def test_sigkill_with_workers_at_epoch_ends_and_mid_epoch_resumes_exactly(tmp_path: Path) -> None:
    """Issue 25: with ``num_workers >= 2`` (persistent workers) a resumed run drew another epoch's data.

    3 steps per epoch, 3 epochs, a checkpoint every 2 steps and at every epoch end. Killed (SIGKILL to the process
    group, workers included) mid-epoch (step 2), at an epoch end (step 3), and at the batch end of an epoch's
    last batch (step 6, before the epoch-end save: step 4's checkpoint is the latest; a checkpoint of the last
    batch's end is never written, Lightning restores it inconsistently); each time resumed. ``losses.csv`` and the
    weights equal the uninterrupted run's byte for byte.
    """
    overrides = [
        "stage=1", "data.length=12", "data.num_workers=2", "train.stages.0.epochs=3",
        "train.checkpoint_every=2", "train.val_every=0",
    ]  # fmt: skip
    ref_dir, run_dir = tmp_path / "ref", tmp_path / "run"
    ref = _killer(ref_dir, "none", 0, overrides)  # uninterrupted, in parallel
    for hook, step, kept in (("batch", 2, 2), ("epoch", 3, 3), ("batch", 6, 4)):
        victim = _killer(run_dir, hook, step, overrides)
        out = victim.communicate(timeout=300)[0]
        assert victim.returncode == -signal.SIGKILL, out
        ckpt = read_checkpoint(run_dir / "stage1" / "last.ckpt")
        assert ckpt["global_step"] == kept, (hook, step, ckpt["global_step"])
    last = _killer(run_dir, "none", 0, overrides)
    out = last.communicate(timeout=300)[0]
    assert last.returncode == 0, out
    out = ref.communicate(timeout=300)[0]
    assert ref.returncode == 0, out
    got = (run_dir / "stage1" / "losses.csv").read_text()
    want = (ref_dir / "stage1" / "losses.csv").read_text()
    assert [r["step"] for r in read_losses(ref_dir / "stage1" / "losses.csv")] == [
        float(i) for i in range(1, 10)
    ]
    assert got == want, f"resumed:\n{got}\nvs uninterrupted:\n{want}"
    a, b = _weights(run_dir / "stage1" / "last.ckpt"), _weights(ref_dir / "stage1" / "last.ckpt")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# `cinet train` (the real CLI: its signal handling) that sends SIGTERM or SIGINT to its own process group (itself
# and its DataLoader workers, as `timeout`, SLURM, systemd and Ctrl-C in a terminal do) at a chosen step: in the
# middle of the step (after the forward, before the backward) or in the middle of writing the step's checkpoint
# (after the first bytes of torch.save).
_SIGNALLER = """
import os, signal, sys
import torch
from cinet.cli import main
from cinet.engine.module import CINetModule

sig, where, step, argv = getattr(signal, sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4:]
step_fn, save_fn = CINetModule.training_step, torch.save

def training_step(self, batch, batch_idx):
    loss = step_fn(self, batch, batch_idx)
    if where == "step" and self.global_step + 1 == step:
        os.killpg(0, sig)
    return loss

class Proxy:  # a file that sends the signal after its second write
    def __init__(self, fh):
        self.fh, self.writes = fh, 0
    def write(self, data):
        self.writes += 1
        if self.writes == 2:
            os.killpg(0, sig)
        return self.fh.write(data)
    def __getattr__(self, name):
        return getattr(self.fh, name)

def save(obj, f, *args, **kwargs):
    if where == "save" and isinstance(obj, dict) and obj.get("global_step") == step and hasattr(f, "write"):
        f = Proxy(f)
    return save_fn(obj, f, *args, **kwargs)

CINetModule.training_step, torch.save = training_step, save
sys.exit(main(argv))
"""


def _signaller(sig: str, where: str, step: int, argv: list[str]) -> subprocess.Popen[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-c", _SIGNALLER, sig, where, str(step), *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,  # its own process group: the signal reaches its workers, not pytest
    )


def test_sigterm_and_sigint_to_the_process_group_mid_step_and_mid_save(tmp_path: Path) -> None:
    """Issue 25: a signal to the whole group ended in "DataLoader worker ... killed by signal" or "unexpected
    pos" (a save cut inside torch.save) and exit 1. Now: one line, exit 143 / 130, no traceback, the checkpoint
    complete, and the run resumes to the uninterrupted run's losses."""
    overrides = [
        "stage=1", "data.length=8", "data.num_workers=2", "train.stages.0.epochs=3",
        "train.checkpoint_every=1", "train.val_every=0",
    ]  # fmt: skip
    ref_dir, run_dir = tmp_path / "ref", tmp_path / "run"
    ref = _cli([*TRAIN[:3], "--run-dir", str(ref_dir), *overrides])
    first = [*TRAIN[:3], "--run-dir", str(run_dir), *overrides]
    # (signal, where, step, the step of the checkpoint that is kept: mid-step keeps the previous one; a save
    # that the signal hits is finished first)
    plan = [
        ("SIGTERM", "step", 2, 1),
        ("SIGINT", "save", 3, 3),
        ("SIGINT", "step", 5, 4),
        ("SIGTERM", "save", 5, 5),
    ]
    for sig, where, step, kept in plan:
        argv = first if not run_dir.exists() else ["train", "--resume", str(run_dir)]
        proc = _signaller(sig, where, step, argv)
        out, err = proc.communicate(timeout=300)
        code = 128 + getattr(signal, sig)
        assert proc.returncode == code, (sig, where, proc.returncode, out, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1, (sig, where, err)
        last = run_dir / "stage1" / "last.ckpt"
        assert lines[0] == (
            f"interrupted ({sig}): {last} is kept; continue with: cinet train --resume {run_dir}"
        ), (sig, where, err)
        assert "Traceback" not in out + err
        assert torch.load(last, map_location="cpu", weights_only=True)["global_step"] == kept, (sig, where)
        assert not list(run_dir.rglob("*.tmp"))
    resumed = _cli(["train", "--resume", str(run_dir)])
    out = resumed.communicate(timeout=300)[0]
    assert resumed.returncode == 0, out
    out = ref.communicate(timeout=300)[0]
    assert ref.returncode == 0, out
    got = (run_dir / "stage1" / "losses.csv").read_text()
    want = (ref_dir / "stage1" / "losses.csv").read_text()
    assert got == want, f"resumed:\n{got}\nvs uninterrupted:\n{want}"


def test_ctrl_c_keeps_last_checkpoint(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    proc = _cli(
        ["train", "--config", SMOKE, "--run-dir", str(run_dir), "stage=1", "train.checkpoint_every=1"]
    )
    log = run_dir / "stage1" / "losses.csv"
    deadline = time.monotonic() + 120
    while proc.poll() is None and _rows(log) < 2 and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGINT)
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 130, out
    assert "interrupted" in out and f"cinet train --resume {run_dir}" in out
    # the signal may land during the save of step 2: then the save is abandoned and step 1's file is kept
    ckpt = torch.load(run_dir / "stage1" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] >= 1
    assert not list(run_dir.rglob("*.tmp"))  # an interrupted save removes its temporary file
    assert json.loads((run_dir / "state.json").read_text())["completed"] == []


# ------------------------------------------------------------------------------------------------ non-finite


@pytest.fixture
def nan_at(monkeypatch: pytest.MonkeyPatch) -> set[int]:
    """Make the total loss NaN at the training steps (1-based calls of TotalLoss) put in the returned set."""
    steps: set[int] = set()
    calls = {"n": 0}
    original = TotalLoss.forward

    def forward(self: TotalLoss, *args: object, **kwargs: object) -> dict[str, torch.Tensor]:
        terms = original(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] in steps:
            terms = {**terms, "total": terms["total"] * float("nan")}
        return terms

    monkeypatch.setattr(TotalLoss, "forward", forward)
    return steps


def _stage1(run_dir: Path, *overrides: str) -> list[str]:
    return [
        "train", "--config", SMOKE, "--run-dir", str(run_dir), "stage=1", "train.checkpoint_every=1",
        "train.val_every=0", *overrides,
    ]  # fmt: skip


def test_nonfinite_step_is_skipped(
    tmp_path: Path, nan_at: set[int], caplog: pytest.LogCaptureFixture
) -> None:
    nan_at.add(2)
    run_dir = tmp_path / "run"
    with caplog.at_level(logging.WARNING):
        assert main(_stage1(run_dir, "train.max_nonfinite=1")) == 0
    assert "non-finite loss/gradients" in caplog.text and "update skipped" in caplog.text
    rows = read_losses(run_dir / "stage1" / "losses.csv")
    assert [r["skipped"] for r in rows] == [0, 1, 0, 0]
    assert np.isnan(rows[1]["total"]) and all(np.isfinite(r["total"]) for r in rows if not r["skipped"])
    ckpt = read_checkpoint(run_dir / "stage1" / "last.ckpt")
    assert ckpt["global_step"] == 4 and ckpt["cinet"]["nonfinite_skipped"] == 1
    assert all(torch.isfinite(v).all() for k, v in ckpt["state_dict"].items() if v.is_floating_point())


def test_too_many_nonfinite_steps_stop_training(
    tmp_path: Path, nan_at: set[int], capsys: pytest.CaptureFixture[str]
) -> None:
    nan_at.update({3, 4})
    run_dir = tmp_path / "run"
    assert main(_stage1(run_dir, "train.max_nonfinite=1")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "train.max_nonfinite" in err[0] and "stage 1" in err[0], err
    # the last good checkpoint (step 2) is kept: not overwritten while the updates were skipped
    ckpt = torch.load(run_dir / "stage1" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 2
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())
    rows = read_losses(run_dir / "stage1" / "losses.csv")
    assert [(r["step"], r["skipped"]) for r in rows] == [(1, 0), (2, 0), (3, 1)]
    assert json.loads((run_dir / "state.json").read_text())["completed"] == []
    assert not (run_dir / "metrics.json").exists()
    # resuming from a truncated checkpoint is refused before anything is written
    last = run_dir / "stage1" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:5000])
    before = _snapshot(run_dir)
    assert main(["train", "--resume", str(run_dir)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {last}: cannot read checkpoint, truncated"), err
    assert _snapshot(run_dir) == before


# ------------------------------------------------------------------------------------------------ data in train


def _folder(root: Path, n: int = 8) -> Path:
    rng = np.random.default_rng(0)
    for sub in ("rgb", "depth", "labels"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(root / "rgb" / f"{i}.png")
        Image.fromarray(rng.integers(500, 5000, (48, 64), dtype=np.uint16)).save(root / "depth" / f"{i}.png")
        labels = rng.integers(0, 3, (48, 64), dtype=np.uint8)
        Image.fromarray(labels, mode="L").save(root / "labels" / f"{i}.png")
    (root / "classes.json").write_text('["wall", "floor", "chair"]')
    for split in ("train", "val", "test"):
        (root / f"{split}.txt").write_text("\n".join(str(i) for i in range(n)) + "\n")
    return root


def _folder_args(root: Path, run_dir: Path) -> list[str]:
    return [
        "train", "--config", SMOKE, "--run-dir", str(run_dir), "stage=1", "data.name=folder",
        f"data.root={root}", "data.options={}", "data.num_workers=1", "train.val_every=0",
    ]  # fmt: skip


@pytest.mark.parametrize("cache", [False, True])
def test_corrupt_image_in_a_worker_during_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], cache: bool
) -> None:
    root = _folder(tmp_path / "data")
    bad = root / "rgb" / "5.png"
    bad.write_bytes(bad.read_bytes()[:100])
    assert main([*_folder_args(root, tmp_path / "run"), f"data.cache={str(cache).lower()}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {bad}: cannot read image"), err
    assert err[0].endswith("[sample 5 of folder/train]")
    # found during training (its header is fine), before any checkpoint: the run directory this call created is
    # removed, so that the same command runs again once the file is fixed (issue 25)
    assert not (tmp_path / "run").exists()


def test_missing_dataset_creates_no_run_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = tmp_path / "run"
    args = _folder_args(tmp_path / "nowhere", run_dir)
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(tmp_path / "nowhere") in err[0] and "not found" in err[0]
    assert not run_dir.exists()


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("model.variant=fsm", "variant differs"),
        ("model.encoder=resnet34", "encoder differs (weights are resnet18, model is resnet34)"),
        ("train.seed=0", None),
    ],
)
def test_init_from_checkpoint_that_does_not_fit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], override: str, needle: str | None
) -> None:
    from inference_fixtures import save_tiny_checkpoint

    ckpt = save_tiny_checkpoint(tmp_path / "tiny.ckpt")  # 5 classes; the smoke dataset has 13
    run_dir = tmp_path / "run"
    assert main(["train", "--config", SMOKE, "--run-dir", str(run_dir), f"init_from={ckpt}", override]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(ckpt) in err[0], err
    assert "class count differs (weights have 5 classes, model has 13)" in err[0]
    if needle:
        assert needle in err[0]
    assert not run_dir.exists()


def test_checkpoint_restores_every_rng(tmp_path: Path) -> None:
    """The RNG states in a checkpoint (torch, numpy, Python, L_pair's own generator) load with weights_only."""
    import random

    from cinet.build.builders import build_module
    from cinet.build.data import dataset_info_from_config
    from cinet.config import StageConfig, load_config

    cfg = load_config(SMOKE)
    module = build_module(cfg, dataset_info_from_config(cfg.data), StageConfig(stage=3))
    module.loss.generator = torch.Generator().manual_seed(3)
    ckpt: dict = {}
    module.on_save_checkpoint(ckpt)
    torch.save(ckpt["rng"], tmp_path / "rng.pt")
    draws = (
        torch.rand(3),
        np.random.rand(3),
        random.random(),
        torch.rand(3, generator=module.loss.generator),
    )
    module.on_load_checkpoint({"rng": torch.load(tmp_path / "rng.pt", weights_only=True)})
    again = (
        torch.rand(3),
        np.random.rand(3),
        random.random(),
        torch.rand(3, generator=module.loss.generator),
    )
    assert torch.equal(draws[0], again[0]) and np.array_equal(draws[1], again[1]) and draws[2] == again[2]
    assert torch.equal(draws[3], again[3])


def test_resume_keeps_the_count_of_skipped_updates() -> None:
    """``nonfinite_skipped`` of a resumed stage counts the updates skipped before the interruption too."""
    from cinet.build.builders import build_module
    from cinet.build.data import dataset_info_from_config
    from cinet.config import StageConfig, load_config

    cfg = load_config(SMOKE)
    module = build_module(cfg, dataset_info_from_config(cfg.data), StageConfig(stage=1))
    module.nonfinite_total = 3
    ckpt: dict = {}
    module.on_save_checkpoint(ckpt)
    assert ckpt["cinet"]["nonfinite_skipped"] == 3
    fresh = build_module(cfg, dataset_info_from_config(cfg.data), StageConfig(stage=1))
    assert fresh.nonfinite_total == 0
    fresh.on_load_checkpoint(ckpt)
    assert fresh.nonfinite_total == 3
