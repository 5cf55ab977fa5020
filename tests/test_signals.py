"""SIGINT / SIGTERM stop every command with one line and exit 130 / 143 (issue 25, item 2).

The training runs (signals to the whole process group, DataLoader workers included, mid-step and
mid-checkpoint-save) are in ``test_reliability_train.py``; here: the signal module itself, every subcommand
through the CLI, and ``cinet eval`` inside Lightning's test loop.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import torch

from cinet.cli import SUBCOMMANDS, main
from cinet.utils import signals

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "configs" / "smoke.yaml"


def test_a_signal_inside_a_deferred_section_is_raised_at_its_end() -> None:
    done = []
    with signals.handle_signals(), pytest.raises(signals.Interrupted) as info:
        with signals.deferred():
            with signals.deferred():  # nested: only the outermost raises
                os.kill(os.getpid(), signal.SIGTERM)
                done.append("inner")
            done.append("outer")
        done.append("after")  # not reached
    assert done == ["inner", "outer"]
    assert info.value.signum == signal.SIGTERM and info.value.exit_code == 143
    assert str(info.value) == "interrupted (SIGTERM)"


def test_a_second_signal_does_not_cut_the_clean_up() -> None:
    cleaned = []
    with signals.handle_signals(), pytest.raises(signals.Interrupted) as info:
        try:
            os.kill(os.getpid(), signal.SIGINT)
        finally:
            os.kill(os.getpid(), signal.SIGTERM)  # e.g. a scheduler repeating its signal
            cleaned.append(True)
    assert cleaned == [True] and info.value.exit_code == 130
    assert signals.received() is None  # reset when the block ends (library use afterwards is unaffected)


def test_handlers_are_restored() -> None:
    before = {s: signal.getsignal(s) for s in signals.SIGNALS}
    with signals.handle_signals():
        assert all(signal.getsignal(s) is not before[s] for s in signals.SIGNALS)
    assert {s: signal.getsignal(s) for s in signals.SIGNALS} == before


def test_an_atomic_write_is_finished_before_the_stop(tmp_path: Path) -> None:
    from cinet.utils.io import atomic_open

    target = tmp_path / "out.txt"
    target.write_text("old")
    with signals.handle_signals(), pytest.raises(signals.Interrupted), atomic_open(target, "w") as fh:
        fh.write("new, ")
        os.kill(os.getpid(), signal.SIGTERM)
        fh.write("complete")
    assert target.read_text() == "new, complete"
    assert not list(tmp_path.glob("*.tmp"))


def test_workers_ignore_the_signals() -> None:
    import subprocess
    import sys

    code = (
        "import os, signal, time\n"
        "from cinet.utils.signals import ignore_in_worker\n"
        "ignore_in_worker(0)\n"
        "os.kill(os.getpid(), signal.SIGTERM); os.kill(os.getpid(), signal.SIGINT)\n"
        "print('alive')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "alive", out


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("command", sorted(SUBCOMMANDS))
def test_every_command_stops_with_one_line_and_the_shell_exit_code(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], command: str, sig: int
) -> None:
    import importlib
    import time

    module = importlib.import_module(SUBCOMMANDS[command][0])

    def run(args: object) -> int:
        os.kill(os.getpid(), sig)
        time.sleep(5)  # the handler raises before this ends
        return 0

    monkeypatch.setattr(module, "run", run)
    argv = {
        "train": [],
        "eval": ["--checkpoint", "x.ckpt"],
        "predict": ["--checkpoint", "x.ckpt", "--out", "o", "a.png"],
    }
    argv |= {
        "export": ["--checkpoint", "x.ckpt", "--onnx", "x.onnx"],
        "serve": ["--checkpoint", "x.ckpt"],
        "bench": ["attention"],
    }
    argv |= {"data": ["preview", "synthetic"], "ablate": []}
    assert main([command, *argv.get(command, [])]) == 128 + sig
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"interrupted ({signal.Signals(sig).name})"], err


def test_eval_stopped_inside_lightnings_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Lightning catches the interrupt, shuts down and calls ``sys.exit(1)``: still one line and 143."""
    from cinet.checkpoint import save_model_checkpoint
    from cinet.config import config_to_dict, load_config
    from cinet.data import dataset_info
    from cinet.engine.module import CINetModule
    from inference_fixtures import tiny_model

    cfg = load_config(SMOKE, ["data.num_workers=2"])
    info = dataset_info("synthetic")
    model, kwargs = tiny_model("cinet", num_classes=info.num_classes)
    ckpt = save_model_checkpoint(tmp_path / "m.ckpt", model, kwargs, info, config_to_dict(cfg))
    original = CINetModule.test_step

    def test_step(self: CINetModule, *args: object, **kwargs: object) -> object:
        os.kill(os.getpid(), signal.SIGTERM)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(CINetModule, "test_step", test_step)
    out = tmp_path / "eval"
    assert main(["eval", "--checkpoint", str(ckpt), "--out", str(out)]) == 143
    err = [line for line in capsys.readouterr().err.strip().splitlines() if line.strip()]
    assert err == ["interrupted (SIGTERM)"], err
    assert not (out / "metrics.json").exists()
    assert torch.load(ckpt, map_location="cpu", weights_only=True)  # input untouched


def test_the_demo_stops_with_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``make demo`` (``python -m cinet.commands.demo``) has its own entry point: the same stop."""
    from cinet.commands import demo

    def train(*args: object, **kwargs: object) -> None:
        os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(demo, "train", train)  # the demo's own name for cinet.build.training.train
    assert demo.main(["--run-dir", "unused"]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["interrupted (SIGINT)"], err
